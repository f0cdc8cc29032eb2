//! Logs and alerts, checked against real processes:
//!
//! - a hub and an agent with `log_format = "json"` write one JSON object a line, with a
//!   line per request naming its route (the template, not the URI), status, latency and
//!   correlation id; and even at TRACE no secret (the admin token, the store's token, the
//!   tills' and the manager's keys) appears in either log;
//! - the Prometheus rules in `installers/prometheus/` pass `promtool check rules` and their
//!   unit tests (`promtool test rules`), and every metric they name (except node_exporter's
//!   `node_*` and Prometheus's `up`) is on a real hub's or agent's `/metrics`.
//!
//! promtool is Debian's `prometheus` package: without it the promtool test skips with a
//! message, and fails under `SHELFSYNC_REQUIRE_SERVICES=1` (as in CI).

use serde_json::Value;
use shelfsync_common::testing::services::programs_present;
use shelfsync_tests::cluster::{demo_products, demo_stores, Cluster};
use shelfsync_tests::process::{ADMIN_TOKEN, MANAGER_KEY, TERMINAL_KEY};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../installers/prometheus")
}

/// Every `shelfsync_*` metric name the rules file uses.
fn metric_names_in_rules() -> BTreeSet<String> {
    let rules = std::fs::read_to_string(rules_dir().join("shelfsync-rules.yml")).expect("rules file");
    let mut names = BTreeSet::new();
    for line in rules.lines().filter(|line| !line.trim_start().starts_with('#')) {
        for (start, _) in line.match_indices("shelfsync_") {
            let name: String = line[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    names
}

/// The metric names (without labels) in a `/metrics` text.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            line.split(['{', ' '])
                .next()
                .unwrap_or_default()
                .trim_end_matches("_bucket")
                .to_owned()
        })
        .collect()
}

/// The JSON objects in a log, failing on any line that is not one.
fn json_lines(log: &str, whose: &str) -> Vec<Value> {
    log.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{whose} wrote a line that is not JSON ({e}): {line}"))
        })
        .collect()
}

/// The request line of `route` with `correlation_id`, if the log has one.
fn request_line<'a>(lines: &'a [Value], route: &str, correlation_id: &str) -> Option<&'a Value> {
    lines.iter().find(|line| {
        line["message"] == "answered"
            && line["span"]["route"] == route
            && line["span"]["correlation_id"] == correlation_id
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_a_line_per_request_and_no_secret_even_at_trace() {
    // Given a hub and an agent logging JSON at TRACE (RUST_LOG, which the harness sets to
    // info otherwise, wins over `log`),
    let json_trace = [("SHELFSYNC_HUB_LOG_FORMAT", "json"), ("RUST_LOG", "trace")];
    let mut cluster = Cluster::start("json-logs", 1, &json_trace).await;
    cluster.set_agent_env(&[("SHELFSYNC_EDGE_LOG_FORMAT", "json"), ("RUST_LOG", "trace")]);
    let berlin = cluster.add_demo_store(0).await;
    cluster.wait_bootstrapped(Duration::from_secs(30)).await;
    let (store, product) = (demo_stores()[0], demo_products()[0]);
    let store_token = cluster.hub.store_token(store);
    // when a client asks each for a product, one with its own correlation id,
    let hub_answer = cluster
        .http
        .get(format!("{}/v1/inventory/products/{product}", cluster.hub_url()))
        .bearer_auth(ADMIN_TOKEN)
        .header("X-Correlation-Id", "shop-order-4711")
        .send()
        .await
        .expect("hub answers");
    assert_eq!(hub_answer.status(), 200);
    assert_eq!(hub_answer.headers()["x-correlation-id"], "shop-order-4711");
    let agent_url = cluster.stores[berlin].agent.process.url();
    let agent_answer = cluster
        .http
        .get(format!("{agent_url}/v1/inventory/products/{product}"))
        .bearer_auth(TERMINAL_KEY)
        .send()
        .await
        .expect("agent answers");
    assert_eq!(agent_answer.status(), 200);
    let agent_id = agent_answer.headers()["x-correlation-id"]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert!(
        uuid::Uuid::parse_str(&agent_id).is_ok(),
        "a new id is a UUID: {agent_id}"
    );
    // and the operator lists the quarantine with the manager key,
    let status = cluster
        .http
        .get(format!("{agent_url}/v1/quarantine"))
        .bearer_auth(MANAGER_KEY)
        .send()
        .await
        .expect("agent answers");
    assert!(status.status().is_success(), "{}", status.status());
    // then each log is JSON lines with the request's route template, status, latency and id,
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hub_log = cluster.hub.process.all_stderr();
    let agent_log = cluster.stores[berlin].agent.process.all_stderr();
    let hub_lines = json_lines(&hub_log, "the hub");
    let agent_lines = json_lines(&agent_log, "the agent");
    let route = "/v1/inventory/products/{id}";
    let hub_line = request_line(&hub_lines, route, "shop-order-4711")
        .unwrap_or_else(|| panic!("no request line for {route} in the hub's log:\n{}", cluster.logs()));
    assert!(
        !hub_line.to_string().contains(&product.to_string()),
        "the request line names the route template, not the product: {hub_line}"
    );
    assert_eq!(hub_line["level"], "INFO");
    assert_eq!(hub_line["status"], 200);
    assert_eq!(hub_line["span"]["method"], "GET");
    assert!(
        hub_line["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{hub_line}"
    );
    let agent_line = request_line(&agent_lines, route, &agent_id)
        .unwrap_or_else(|| panic!("no request line for {route} in the agent's log:\n{}", cluster.logs()));
    assert_eq!(agent_line["status"], 200);
    // and TRACE showed more than the request lines (DEBUG and TRACE ones too),
    for (lines, whose) in [(&hub_lines, "hub"), (&agent_lines, "agent")] {
        assert!(
            lines
                .iter()
                .any(|line| line["level"] == "DEBUG" || line["level"] == "TRACE"),
            "the {whose} logged nothing below INFO"
        );
    }
    // and no secret is anywhere in either log.
    for (secret, what) in [
        (ADMIN_TOKEN, "the admin token"),
        (store_token.as_str(), "the store token"),
        (TERMINAL_KEY, "the terminal key"),
        (MANAGER_KEY, "the manager key"),
    ] {
        assert!(!hub_log.contains(secret), "{what} is in the hub's log");
        assert!(!agent_log.contains(secret), "{what} is in the agent's log");
    }
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    if !programs_present(
        &["promtool"],
        "the alert rules' checks",
        "install Debian's prometheus package (apt-get install prometheus)",
    ) {
        return;
    }
    for args in [
        ["check", "rules", "shelfsync-rules.yml"],
        ["test", "rules", "shelfsync-rules.test.yml"],
    ] {
        let output = Command::new("promtool")
            .args(args)
            .current_dir(rules_dir())
            .output()
            .expect("promtool runs");
        assert!(
            output.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_use_is_on_a_real_hub_or_agent() {
    // Given a hub and one store's agent, bootstrapped,
    let mut cluster = Cluster::start("alert-metrics", 1, &[]).await;
    let berlin = cluster.add_demo_store(0).await;
    cluster.wait_bootstrapped(Duration::from_secs(30)).await;
    // when both are scraped,
    let mut exposed = BTreeSet::new();
    for url in [cluster.hub_url(), cluster.stores[berlin].agent.process.url()] {
        let text = cluster
            .http
            .get(format!("{url}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        exposed.extend(metric_names(&text));
    }
    // then every shelfsync metric the rules name is among them.
    let used = metric_names_in_rules();
    assert!(used.len() >= 8, "the rules name too few metrics: {used:?}");
    let missing: Vec<_> = used.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "the rules use metrics neither process exposes: {missing:?}"
    );
}
