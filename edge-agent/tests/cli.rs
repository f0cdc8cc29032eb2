//! The `shelfsync-edge` command line, run as the real binary: the operator commands against
//! an in-process agent, and `run` itself as a process that serves and stops on SIGTERM.

use shelfsync_edge::testing::{Options, TestAgent, CLOSED_HUB, MANAGER};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Runs the binary with only the environment given (nothing leaks in from the caller's).
fn edge(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_shelfsync-edge"))
        .args(args)
        .env_clear()
        .env("RUST_BACKTRACE", "0")
        .envs(env.iter().copied())
        .output()
        .expect("run shelfsync-edge");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs an operator command against `agent` with the manager key in the environment.
async fn against(agent: &TestAgent, args: &[&str]) -> (bool, String, String) {
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    args.extend(["--agent-url".to_owned(), agent.url.clone()]);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        edge(&args, &[("SHELFSYNC_EDGE_MANAGER_KEY", MANAGER)])
    })
    .await
    .expect("command")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_quarantine_from_the_command_line() {
    let agent = TestAgent::spawn_with(Options {
        quarantined: 1,
        ..Options::default()
    })
    .await;
    let event = agent.quarantined[0].to_string();

    let (ok, out, err) = against(&agent, &["status"]).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("store") && l.ends_with(&agent.store_id.to_string())),
        "{out}"
    );
    assert!(out.contains("hub link       offline"), "{out}");
    assert!(
        out.contains("quarantined    1 (see `shelfsync-edge quarantine list`)"),
        "{out}"
    );
    assert!(out.contains("bootstrapped   yes"), "{out}");
    let (ok, out, err) = against(&agent, &["status", "--json"]).await;
    assert!(ok, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("JSON status");
    assert_eq!(
        (status["store_id"].as_str(), status["quarantined"].as_u64()),
        (Some(agent.store_id.to_string().as_str()), Some(1))
    );

    let (ok, out, err) = against(&agent, &["quarantine", "list"]).await;
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("SEQ") && lines[0].contains("REASON"), "{out}");
    assert!(
        lines[1].contains(&event) && lines[1].ends_with("unknown_product: not at the hub"),
        "{out}"
    );
    let (ok, out, _) = against(&agent, &["quarantine", "list", "--json"]).await;
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(&out).expect("JSON list");
    assert_eq!(listed[0]["event_id"].as_str(), Some(event.as_str()));

    let (ok, out, err) = against(&agent, &["quarantine", "retry", &event]).await;
    assert!(ok && out.contains("back in the outbox (pending)"), "{out}{err}");
    let (ok, out, _) = against(&agent, &["quarantine", "list"]).await;
    assert!(ok && out == "no quarantined events\n", "{out}");
    let (ok, out, err) = against(&agent, &["outbox", "list", "--status", "pending"]).await;
    assert!(
        ok && out
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains(&event) && l.contains("pending")),
        "{out}{err}"
    );
    let (ok, _, err) = against(&agent, &["quarantine", "discard", &event]).await;
    assert!(!ok && err.contains("404 quarantined_event_not_found"), "{err}");
    let (ok, _, err) = against(&agent, &["outbox", "list", "--status", "sent"]).await;
    assert!(!ok && err.contains("invalid_query"), "{err}");

    // A wrong key is the agent's 401, said plainly.
    let (ok, _, err) = tokio::task::spawn_blocking({
        let url = agent.url.clone();
        move || {
            edge(
                &["quarantine", "list", "--agent-url", &url],
                &[("SHELFSYNC_EDGE_MANAGER_KEY", "wrong-but-long-enough-key")],
            )
        }
    })
    .await
    .unwrap();
    assert!(!ok && err.contains("401 unauthorized"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_comes_from_the_data_dir_and_the_url_from_listen() {
    let agent = TestAgent::spawn_with(Options {
        generated_keys: true,
        quarantined: 1,
        ..Options::default()
    })
    .await;
    let listen = agent.url.trim_start_matches("http://").to_owned();
    let data_dir = agent.data_dir.display().to_string();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        edge(
            &["quarantine", "list"],
            &[
                ("SHELFSYNC_EDGE_DATA_DIR", &data_dir),
                ("SHELFSYNC_EDGE_LISTEN", &listen),
            ],
        )
    })
    .await
    .unwrap();
    assert!(ok && out.contains(&agent.quarantined[0].to_string()), "{out}{err}");

    // Without a key anywhere, operator commands stop before calling; status needs none.
    let empty = tempfile::tempdir().unwrap();
    let dir = empty.path().display().to_string();
    let url = agent.url.clone();
    let (no_key, status) = tokio::task::spawn_blocking(move || {
        let env = [("SHELFSYNC_EDGE_DATA_DIR", dir.as_str())];
        (
            edge(&["outbox", "list", "--agent-url", &url], &env),
            edge(&["status", "--agent-url", &url], &env),
        )
    })
    .await
    .unwrap();
    assert!(
        !no_key.0 && no_key.2.contains("no manager key") && no_key.2.contains("manager-key"),
        "{}",
        no_key.2
    );
    assert!(
        status.0 && status.1.contains(&agent.store_id.to_string()),
        "{}{}",
        status.1,
        status.2
    );
}

#[test]
fn commands_say_when_the_agent_is_not_running() {
    let (ok, out, err) = edge(&["status", "--agent-url", "http://127.0.0.1:9"], &[]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.contains("cannot reach the edge agent at http://127.0.0.1:9") && err.contains("is it running?"),
        "{err}"
    );
}

#[test]
fn a_failed_command_is_one_line_and_an_exit_code_even_with_rust_backtrace() {
    let output = Command::new(env!("CARGO_BIN_EXE_shelfsync-edge"))
        .args(["status", "--agent-url", "http://127.0.0.1:9"])
        .env_clear()
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run shelfsync-edge");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line, no backtrace:\n{err}");
    assert!(err.starts_with("error: cannot reach the edge agent"), "{err}");
}

#[test]
fn print_config_prints_the_annotated_example() {
    let (ok, out, _) = edge(&["print-config"], &[]);
    assert!(ok);
    assert_eq!(out, shelfsync_edge::config::EXAMPLE);
}

#[test]
fn run_names_a_missing_setting() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = edge(
        &["run"],
        &[("SHELFSYNC_EDGE_DATA_DIR", &dir.path().display().to_string())],
    );
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.contains("store_id is not set") && err.contains("SHELFSYNC_EDGE_STORE_ID"),
        "{err}"
    );
}

#[test]
fn run_serves_announces_its_address_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let store = shelfsync_common::StoreId::new_v7().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_shelfsync-edge"))
        .env_clear()
        .envs([
            ("SHELFSYNC_EDGE_STORE_ID", store.as_str()),
            ("SHELFSYNC_EDGE_HUB_URL", CLOSED_HUB),
            ("SHELFSYNC_EDGE_ALLOW_INSECURE_HUB", "true"),
            ("SHELFSYNC_EDGE_HUB_TOKEN", "test-hub-token"),
            ("SHELFSYNC_EDGE_LISTEN", "127.0.0.1:0"),
            ("SHELFSYNC_EDGE_DATA_DIR", &dir.path().display().to_string()),
            ("SHELFSYNC_EDGE_LOG", "info"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the agent");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("first line");
    let url = first
        .trim()
        .strip_prefix("shelfsync edge agent listening on ")
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:") && !url.ends_with(":0"), "{url}");

    let (ok, out, err) = edge(&["status", "--agent-url", &url], &[]);
    assert!(
        ok && out.contains(&store) && out.contains("bootstrapped   no"),
        "{out}{err}"
    );
    let manager_key =
        std::fs::read_to_string(dir.path().join(shelfsync_edge::MANAGER_KEY_FILE)).expect("generated key");
    let (ok, out, err) = edge(
        &["outbox", "list", "--agent-url", &url],
        &[("SHELFSYNC_EDGE_MANAGER_KEY", manager_key.trim())],
    );
    assert!(ok && out == "no events\n", "{out}{err}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "a SIGTERM is a clean stop: {exit:?}");
    let wal = std::fs::metadata(dir.path().join("edge.sqlite-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "a clean stop checkpoints and truncates the WAL");

    // Its log went to a pipe, not a terminal: plain text, no colour codes.
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut log).expect("read the log");
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\u{1b}'), "no ANSI escape codes in a log file:\n{log}");
}
