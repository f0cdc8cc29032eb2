//! The back office's fleet page of `STORES` stores: how long `GET /fleet` takes to answer
//! the whole HTML page, against the JSON the page is made from (`GET /v1/admin/fleet`),
//! measured in the same runs on the same hub. The goal (issue 13): under 200 ms for 1,000
//! stores.
//!
//! A real hub is started in-process (its own runtime, the demo data), `STORES` stores are
//! enrolled through the API, then each of `RUNS` rounds times `REQUESTS` page loads and
//! as many JSON loads, one at a time on one keep-alive connection, and records their
//! medians. Every store has never connected, so every row carries its "needs attention"
//! words: the page's largest form.
//!
//! ```sh
//! cargo bench -p shelfsync-hub --bench fleet_page
//! RUNS=5 STORES=3000 REQUESTS=21 cargo bench -p shelfsync-hub --bench fleet_page
//! ```
//!
//! `SHELFSYNC_BENCH_QUICK=1` runs tiny sizes once (`tests/scripts/bench.sh --quick`).

mod support;

use serde_json::json;
use shelfsync_common::testing::scenario::{knob, Goal, Scenario};
use shelfsync_hub::testing::ADMIN;
use std::time::Instant;
use support::{cores, cpu_model, stats, BenchHub};

fn main() {
    let runs = knob("RUNS", 5, 1).max(1);
    let stores = knob("STORES", 1000, 20);
    let requests = knob("REQUESTS", 21, 3).max(1);
    println!("fleet_page: {runs} runs of {requests} page loads and {requests} JSON loads; {stores} stores (+3 demo)");
    println!("machine: {} cores, {}", cores(), cpu_model());
    let bench = BenchHub::start(|_| {});
    let client = reqwest::Client::new();
    let driver = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    driver.block_on(enroll(&client, &bench.url, stores));
    let mut scenario = Scenario::new("fleet_page", "ms", Goal::AtMost(200.0)).baseline("GET /v1/admin/fleet (JSON)");
    for run in 0..runs {
        let (page, json) = driver.block_on(round(&client, &bench.url, requests));
        println!(
            "run {}: page {page:.1} ms | JSON {json:.1} ms (medians of {requests})",
            run + 1
        );
        scenario.record_pair(page, json);
    }
    scenario.report();
    bench.stop();
}

async fn enroll(client: &reqwest::Client, url: &str, stores: usize) {
    for n in 0..stores {
        let status = client
            .post(format!("{url}/v1/admin/stores"))
            .bearer_auth(ADMIN)
            .json(&json!({ "name": format!("Store {n:05}") }))
            .send()
            .await
            .expect("enroll")
            .status();
        assert_eq!(status, 201);
    }
}

/// The medians (ms) of `requests` page loads and `requests` JSON loads, interleaved.
async fn round(client: &reqwest::Client, url: &str, requests: usize) -> (f64, f64) {
    let mut page = Vec::with_capacity(requests);
    let mut json = Vec::with_capacity(requests);
    for _ in 0..requests {
        let started = Instant::now();
        let body = client
            .get(format!("{url}/fleet"))
            .header("cookie", format!("shelfsync_hub_session={ADMIN}"))
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("page body");
        page.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(body.contains("id=\"fleet\""), "the fleet page");
        let started = Instant::now();
        let body = client
            .get(format!("{url}/v1/admin/fleet"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("json")
            .bytes()
            .await
            .expect("json body");
        json.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(!body.is_empty());
    }
    (stats(&page).0, stats(&json).0)
}
