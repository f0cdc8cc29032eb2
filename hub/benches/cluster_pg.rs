//! Several hubs on one PostgreSQL database, measured in one run beside one SQLite hub:
//!
//! - **appends**: `CLIENTS` concurrent single-event `POST /v1/inventory/stock`, client `i`
//!   on hub `i % n`, `APPENDS` answered per side; events/s with n = 1, 2, 3 hubs on
//!   PostgreSQL, and on one SQLite hub (the baseline).
//! - **upload ingest**: the demo stores' agents upload batches of `BATCH` sale facts
//!   (`POST /v1/sync/upload`), store `i` on hub `i % n`, `UPLOADED` events per side;
//!   events/s, same sides.
//! - **push fan-out**: `STREAMS` push streams spread over the three PostgreSQL hubs,
//!   catalog events written one at a time through the first hub (so two thirds of the
//!   deliveries cross hubs: commit, NOTIFY, the other hub's follower reads the log); p99
//!   from `recorded_at`, against the same streams on the SQLite hub.
//!
//! Every side of every round runs on the same hubs (started once: one SQLite hub, three
//! PostgreSQL hubs on a fresh database of the local server); `RUNS` rounds; medians.
//! The cost of one hub's failover (seconds until reads, writes and push work again through
//! HAProxy) is measured by the end-to-end test with real processes (see
//! docs/benchmarks.md).
//!
//! ```sh
//! cargo bench -p shelfsync-hub --bench cluster_pg
//! RUNS=3 CLIENTS=64 APPENDS=20000 BATCH=500 UPLOADED=100000 STREAMS=1000 EVENTS=20 cargo bench -p shelfsync-hub --bench cluster_pg
//! ```
//!
//! Needs PostgreSQL (`SHELFSYNC_TEST_POSTGRES`, default the local server); without one it
//! says so and fails. `SHELFSYNC_BENCH_QUICK=1` runs tiny sizes once.

mod support;

use serde_json::json;
use shelfsync_common::testing::scenario::{knob, Goal, Scenario};
use shelfsync_common::EventPayload;
use shelfsync_hub::config::{HubConfig, Storage};
use shelfsync_hub::testing::storage::TestDatabase;
use shelfsync_hub::testing::{demo_product, fact, ADMIN};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::fanout::{enroll, measure};
use support::{bench_dir, cores, cpu_model, stats, BenchHub};

struct Settings {
    runs: usize,
    clients: usize,
    appends: usize,
    batch: usize,
    uploaded: usize,
    streams: usize,
    events: usize,
}

fn main() {
    let settings = Settings {
        runs: knob("RUNS", 3, 1).max(1),
        clients: knob("CLIENTS", 64, 4).max(1),
        appends: knob("APPENDS", 20_000, 200).max(1),
        batch: knob("BATCH", 500, 20).max(1),
        uploaded: knob("UPLOADED", 100_000, 400).max(1),
        streams: knob("STREAMS", 1000, 30).max(3),
        events: knob("EVENTS", 20, 3).max(1),
    };
    println!(
        "cluster_pg: {} runs; appends: {} clients, {} per side; uploads: batches of {}, {} events per side; push: {} streams over 3 hubs, {} events",
        settings.runs, settings.clients, settings.appends, settings.batch, settings.uploaded, settings.streams, settings.events
    );
    println!("machine: {} cores, {}", cores(), cpu_model());
    println!("files in: {}", bench_dir().display());

    let client_rt = support::runtime("client");
    let Some(db) = client_rt.block_on(TestDatabase::create()) else {
        panic!("cluster_pg needs PostgreSQL: start one, or point SHELFSYNC_TEST_POSTGRES at one");
    };
    let connections = settings.streams + 512;
    let sqlite = BenchHub::start(|c| c.http.max_connections = connections);
    let on_postgres = |c: &mut HubConfig| {
        c.http.max_connections = connections;
        c.storage = Storage::Postgres;
        c.postgres.database_url = Some(db.url.clone().into());
    };
    let pg: Vec<BenchHub> = (0..3)
        .map(|i| BenchHub::start_full(false, i == 0, on_postgres))
        .collect();
    let pg_urls: Vec<String> = pg.iter().map(|h| h.url.clone()).collect();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(settings.clients)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    // Demo store tokens: the first hub of each storage seeded them.
    let stores = shelfsync_hub::seed::stores();
    let sqlite_tokens: Vec<String> = stores.iter().map(|s| sqlite.hub.store_token(s.id)).collect();
    let pg_tokens: Vec<String> = stores.iter().map(|s| pg[0].hub.store_token(s.id)).collect();

    let mut appends: [Vec<f64>; 4] = Default::default();
    let mut uploads: [Vec<f64>; 4] = Default::default();
    for run in 0..settings.runs {
        let sides: [(&str, Vec<String>, &[String]); 4] = [
            ("sqlite, 1 hub", vec![sqlite.url.clone()], &sqlite_tokens),
            ("postgres, 1 hub", pg_urls[..1].to_vec(), &pg_tokens),
            ("postgres, 2 hubs", pg_urls[..2].to_vec(), &pg_tokens),
            ("postgres, 3 hubs", pg_urls.clone(), &pg_tokens),
        ];
        for (side, (label, urls, tokens)) in sides.iter().enumerate() {
            let a = client_rt.block_on(append_rate(&client, urls, &settings));
            let u = client_rt.block_on(upload_rate(&client, urls, tokens, &settings));
            println!(
                "run {} {label:>17}: appends {a:>7.0} ev/s | uploads {u:>7.0} ev/s",
                run + 1
            );
            appends[side].push(a);
            uploads[side].push(u);
        }
    }

    // Push: the same streams on the SQLite hub, then spread over the three PostgreSQL hubs.
    let stream_client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(30))
        .build()
        .expect("stream client");
    let sqlite_stores = client_rt.block_on(enroll(&client, &sqlite.url, settings.streams));
    let pg_stores = client_rt.block_on(enroll(&client, &pg_urls[0], settings.streams));
    let mut price = 0u64;
    let mut push_sqlite = Vec::new();
    let mut push_pg = Vec::new();
    for run in 0..settings.runs {
        let s = client_rt.block_on(measure(
            &client,
            &stream_client,
            &sqlite.url,
            std::slice::from_ref(&sqlite.url),
            &sqlite_stores,
            settings.streams,
            settings.events,
            Duration::from_millis(5),
            &mut price,
        ));
        let p = client_rt.block_on(measure(
            &client,
            &stream_client,
            &pg_urls[0],
            &pg_urls,
            &pg_stores,
            settings.streams,
            settings.events,
            Duration::from_millis(5),
            &mut price,
        ));
        println!(
            "run {} push, {} streams: sqlite 1 hub p50 {:.2} ms p99 {:.2} ms | postgres 3 hubs p50 {:.2} ms p99 {:.2} ms (write p50 {:.2} ms)",
            run + 1,
            settings.streams,
            s.recorded[0],
            s.recorded[1],
            p.recorded[0],
            p.recorded[1],
            p.put[0]
        );
        push_sqlite.push(s.recorded[1]);
        push_pg.push(p.recorded[1]);
    }
    drop(stream_client);
    drop(client);
    client_rt.shutdown_timeout(Duration::from_secs(5));
    sqlite.stop();
    for hub in pg {
        hub.stop();
    }
    drop(db);

    println!();
    println!("| side | appends ev/s median (min-max) | uploads ev/s median (min-max) |");
    println!("|---|---:|---:|");
    let labels = [
        "sqlite, 1 hub",
        "postgres, 1 hub",
        "postgres, 2 hubs",
        "postgres, 3 hubs",
    ];
    for (side, label) in labels.iter().enumerate() {
        let (am, alo, ahi) = stats(&appends[side]);
        let (um, ulo, uhi) = stats(&uploads[side]);
        println!("| {label} | {am:.0} ({alo:.0}-{ahi:.0}) | {um:.0} ({ulo:.0}-{uhi:.0}) |");
    }
    let (sm, slo, shi) = stats(&push_sqlite);
    let (pm, plo, phi) = stats(&push_pg);
    println!();
    println!(
        "| push, {} streams | p99 ms from recorded_at, median (min-max) |",
        settings.streams
    );
    println!("|---|---:|");
    println!("| sqlite, 1 hub | {sm:.2} ({slo:.2}-{shi:.2}) |");
    println!("| postgres, 3 hubs | {pm:.2} ({plo:.2}-{phi:.2}) |");

    // One PostgreSQL hub against the SQLite hub: PostgreSQL costs a network round trip per
    // statement; the goal is that it keeps at least half the embedded hub's rate.
    report(
        "cluster_pg_appends_1_hub",
        &appends[1],
        &appends[0],
        "sqlite, 1 hub",
        Goal::RatioAtLeast(0.5),
    );
    report(
        "cluster_pg_uploads_1_hub",
        &uploads[1],
        &uploads[0],
        "sqlite, 1 hub",
        Goal::RatioAtLeast(0.5),
    );
    // More hubs must not slow the cluster's writes down (they still commit one at a time).
    report(
        "cluster_pg_appends_3_hubs",
        &appends[3],
        &appends[1],
        "postgres, 1 hub",
        Goal::RatioAtLeast(0.8),
    );
    report(
        "cluster_pg_uploads_3_hubs",
        &uploads[3],
        &uploads[1],
        "postgres, 1 hub",
        Goal::RatioAtLeast(0.8),
    );
    // Crossing hubs (NOTIFY, the follower's read) may cost, but not more than double.
    let mut push = Scenario::new(
        format!("cluster_pg_push_p99_{}_streams_3_hubs", settings.streams),
        "ms",
        Goal::RatioAtMost(2.0),
    )
    .baseline("the same streams on one SQLite hub");
    for (p, s) in push_pg.iter().zip(&push_sqlite) {
        push.record_pair(*p, *s);
    }
    push.report();
}

fn report(name: &str, side: &[f64], baseline: &[f64], baseline_name: &str, goal: Goal) {
    let mut scenario = Scenario::new(name, "events/s", goal).baseline(baseline_name);
    for (s, b) in side.iter().zip(baseline) {
        scenario.record_pair(*s, *b);
    }
    scenario.report();
}

/// Single-event appends over `urls` (client `i` on `urls[i % n]`); events/s.
async fn append_rate(client: &reqwest::Client, urls: &[String], settings: &Settings) -> f64 {
    let done = Arc::new(AtomicUsize::new(0));
    let stores = shelfsync_hub::seed::stores();
    let started = Instant::now();
    let tasks: Vec<_> = (0..settings.clients)
        .map(|i| {
            let (client, done) = (client.clone(), done.clone());
            let url = format!("{}/v1/inventory/stock", urls[i % urls.len()]);
            let (total, store) = (settings.appends, stores[i % stores.len()].id);
            tokio::spawn(async move {
                let mut k = i;
                while done.fetch_add(1, Ordering::Relaxed) < total {
                    let body = json!({ "product_id": demo_product(k % 4), "store_id": store, "quantity": 1 });
                    let response = client
                        .post(&url)
                        .bearer_auth(ADMIN)
                        .json(&body)
                        .send()
                        .await
                        .expect("append");
                    assert_eq!(response.status().as_u16(), 201, "append refused");
                    k += 7;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    settings.appends as f64 / started.elapsed().as_secs_f64()
}

/// Batches of sale facts uploaded by the demo stores' agents over `urls`; events/s.
async fn upload_rate(client: &reqwest::Client, urls: &[String], tokens: &[String], settings: &Settings) -> f64 {
    let stores = shelfsync_hub::seed::stores();
    let batches = settings.uploaded.div_ceil(settings.batch);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, store)| {
            let (client, next) = (client.clone(), next.clone());
            let url = format!("{}/v1/sync/upload", urls[i % urls.len()]);
            let (token, store, batch) = (tokens[i].clone(), store.id, settings.batch);
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < batches {
                    let events: Vec<_> = (0..batch)
                        .map(|k| {
                            let sale = EventPayload::StockAdjusted {
                                delta: -1,
                                reason: "sale".into(),
                            };
                            fact(store, demo_product(k % 4), sale)
                        })
                        .collect();
                    let response = client
                        .post(&url)
                        .bearer_auth(&token)
                        .header(
                            shelfsync_common::wire::sync::PROTOCOL_HEADER,
                            shelfsync_common::wire::sync::PROTOCOL_VERSION,
                        )
                        .json(&json!({ "events": events }))
                        .send()
                        .await
                        .expect("upload");
                    assert_eq!(response.status().as_u16(), 200, "upload refused");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("agent task");
    }
    (batches * settings.batch) as f64 / started.elapsed().as_secs_f64()
}
