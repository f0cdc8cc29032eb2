//! Analytics: does the worker keep up, and what does it cost the writes? In each run two
//! real hubs (in-process, demo data, a reorder point on every demo product so the alert
//! check runs on every event) take the same uploads: `STORES` agents each upload
//! `BATCHES` batches of `BATCH` till events (deliveries, holds and sales; see
//! `support/till.rs`), all stores at once, one upload in flight per store.
//!
//! - `analytics_ingest`: events/s ingested with the analytics worker running, against
//!   the same uploads to a hub with `analytics.worker = false`, measured in the same run
//!   (goal: at least 0.8x).
//! - `analytics_lag`: seconds from the last upload's answer until the analytics
//!   checkpoint reaches the log's head, i.e. until the figures include every event (goal:
//!   at most 5 s). The lag in events at that moment is printed too.
//!
//! ```sh
//! cargo bench -p shelfsync-hub --bench analytics_lag                 # 1,000,000 events per hub
//! RUNS=3 STORES=4 BATCH=500 BATCHES=500 cargo bench -p shelfsync-hub --bench analytics_lag
//! ```
//!
//! `SHELFSYNC_BENCH_QUICK=1` runs tiny sizes once (`tests/scripts/bench.sh --quick`).

mod support;

use shelfsync_common::testing::scenario::{knob, Goal, Scenario};
use shelfsync_common::wire::sync::{UploadOutcome, UploadRequest, UploadResponse, PROTOCOL_HEADER, PROTOCOL_VERSION};
use shelfsync_hub::testing::ADMIN;
use std::time::{Duration, Instant};
use support::till::Till;
use support::{cores, cpu_model, hub_head, BenchHub};

struct Settings {
    runs: usize,
    stores: usize,
    batch: usize,
    batches: usize,
}

struct Run {
    rate: f64,
    lag_events: u64,
    catch_up: Duration,
}

fn main() {
    let settings = Settings {
        runs: knob("RUNS", 3, 1).max(1),
        stores: knob("STORES", 4, 2).max(1),
        batch: knob("BATCH", 500, 50).clamp(1, shelfsync_common::wire::sync::MAX_UPLOAD_BATCH),
        batches: knob("BATCHES", 500, 3).max(1),
    };
    let events = settings.stores * settings.batches * settings.batch;
    println!(
        "analytics_lag: {} runs; per hub {} stores x {} uploads of {} events = {} events",
        settings.runs, settings.stores, settings.batches, settings.batch, events
    );
    println!("machine: {} cores, {}", cores(), cpu_model());
    let mut ingest = Scenario::new("analytics_ingest", "events/s", Goal::RatioAtLeast(0.8))
        .baseline("the same uploads with analytics.worker = false");
    let mut lag = Scenario::new("analytics_lag", "s", Goal::AtMost(5.0));
    for run in 0..settings.runs {
        // Alternate which hub goes first: the disk's state drifts over a run.
        let (with, without) = if run % 2 == 0 {
            let without = hub_run(&settings, false);
            (hub_run(&settings, true), without)
        } else {
            let with = hub_run(&settings, true);
            (with, hub_run(&settings, false))
        };
        println!(
            "run {}: with the worker {:>7.0} ev/s, without {:>7.0} ev/s (ratio {:.2}); at the last answer the figures were {} events behind, caught up {:.3} s later",
            run + 1,
            with.rate,
            without.rate,
            with.rate / without.rate,
            with.lag_events,
            with.catch_up.as_secs_f64()
        );
        ingest.record_pair(with.rate, without.rate);
        lag.record(with.catch_up.as_secs_f64());
    }
    ingest.report();
    lag.report();
}

fn hub_run(settings: &Settings, worker: bool) -> Run {
    let hub = BenchHub::start(|config| config.analytics.worker = worker);
    let client_rt = support::runtime("client");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(settings.stores * 2)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let url = hub.url.clone();
    let result = client_rt.block_on(async {
        // Reorder points on every demo product, and the stores' tokens.
        for product in shelfsync_hub::seed::products() {
            let response = client
                .put(format!("{url}/v1/admin/analytics/reorder-points"))
                .bearer_auth(ADMIN)
                .json(&serde_json::json!({ "product_id": product.id, "reorder_point": 10 }))
                .send()
                .await
                .expect("reorder point");
            assert_eq!(response.status().as_u16(), 204);
        }
        let agents = support::store_agents(&hub, &client, settings.stores).await;
        // Every body, serialized before the clock starts.
        let uploads: Vec<(String, Vec<Vec<u8>>)> = agents
            .iter()
            .map(|(store, token)| {
                let mut till = Till::new(*store);
                let bodies = (0..settings.batches)
                    .map(|_| {
                        serde_json::to_vec(&UploadRequest {
                            events: till.batch(settings.batch),
                        })
                        .expect("body")
                    })
                    .collect();
                (token.clone(), bodies)
            })
            .collect();
        let endpoint = format!("{url}/v1/sync/upload");
        let started = Instant::now();
        let tasks: Vec<_> = uploads
            .into_iter()
            .map(|(token, bodies)| {
                let (client, endpoint, expected) = (client.clone(), endpoint.clone(), settings.batch);
                tokio::spawn(async move {
                    for body in bodies {
                        let response = client
                            .post(&endpoint)
                            .bearer_auth(&token)
                            .header(PROTOCOL_HEADER, PROTOCOL_VERSION)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await
                            .expect("upload");
                        assert_eq!(response.status().as_u16(), 200);
                        let answer: UploadResponse = response.json().await.expect("UploadResponse");
                        let appended = answer
                            .results
                            .iter()
                            .filter(|r| matches!(r.outcome, UploadOutcome::Appended { .. }))
                            .count();
                        assert_eq!(appended, expected, "every event appended");
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("upload task");
        }
        let elapsed = started.elapsed();
        let ended = Instant::now();
        let head = hub_head(&client, &url).await;
        let position = analytics_position(&client, &url).await;
        let mut caught_up = position;
        if worker {
            // Bounded: a worker that never catches up fails the bench after 10 minutes.
            while caught_up < head {
                assert!(
                    ended.elapsed() < Duration::from_secs(600),
                    "the analytics worker did not catch up"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
                caught_up = analytics_position(&client, &url).await;
            }
        }
        Run {
            rate: (settings.stores * settings.batches * settings.batch) as f64 / elapsed.as_secs_f64(),
            lag_events: head - position.min(head),
            catch_up: ended.elapsed(),
        }
    });
    drop(client);
    client_rt.shutdown_timeout(Duration::from_secs(5));
    hub.stop();
    result
}

/// The analytics checkpoint, as `/v1/analytics/alerts` answers it.
async fn analytics_position(client: &reqwest::Client, url: &str) -> u64 {
    let body: serde_json::Value = client
        .get(format!("{url}/v1/analytics/alerts?limit=1"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("alerts")
        .json()
        .await
        .expect("alerts body");
    body["position"].as_u64().expect("position")
}
