//! Concurrent single-event appends per second over HTTP, against a raw
//! one-event-per-transaction rusqlite loop measured in the same run.
//!
//! Hub side: a real hub started in-process (its own tokio runtime with one worker per
//! core, like the binary) on a 127.0.0.1:0 listener with a fresh temp data dir and the
//! demo data; `CLIENTS` concurrent tasks on a second runtime share one keep-alive reqwest
//! client and POST `/v1/inventory/stock` (one `StockAdded` event each) round-robin over
//! the demo product/store pairs until `HUB_EVENTS` requests have been answered 201.
//!
//! Baseline: a fresh SQLite file with the hub's pragmas (WAL, synchronous=FULL) and the
//! hub's DDL (`migrations/0001_event_store.sql`), one event row of the same size per
//! `BEGIN IMMEDIATE .. COMMIT`, `BASELINE_EVENTS` rows.
//!
//! Each of `RUNS` rounds measures both, the baseline in two halves on either side of the
//! hub run (fsync latency on a shared VM drifts a lot); the report gives
//! median, min and max events/s and the ratio hub/baseline (of the medians, and the
//! median of the per-round ratios).
//!
//! ```sh
//! cargo bench -p shelfsync-hub --bench append_http
//! RUNS=7 CLIENTS=64 HUB_EVENTS=50000 BASELINE_EVENTS=10000 WARMUP=1000 cargo bench -p shelfsync-hub --bench append_http
//! ```
//!
//! `SHELFSYNC_BENCH_QUICK=1` runs tiny sizes once (`tests/scripts/bench.sh --quick`).
//! `BENCH_DIR` sets where the temp files go (default: the system temp dir).

mod support;

use rusqlite::{params, Connection, TransactionBehavior};
use serde_json::json;
use shelfsync_common::testing::scenario::{knob, Goal, Scenario};
use shelfsync_hub::testing::ADMIN;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{bench_dir, cores, cpu_model, metric_sum_count, open_baseline, runtime, stats, thread_cpu, BenchHub};

struct Settings {
    runs: usize,
    clients: usize,
    hub_events: usize,
    warmup: usize,
    baseline_events: usize,
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let settings = Settings {
        runs: knob("RUNS", 5, 1).max(1),
        clients: knob("CLIENTS", 64, 4).max(1),
        hub_events: knob("HUB_EVENTS", 50_000, 200).max(1),
        warmup: knob("WARMUP", 1_000, 10),
        baseline_events: knob("BASELINE_EVENTS", 10_000, 50).max(1),
    };
    println!(
        "append_http: {} runs; hub: {} clients x {} single-event POSTs (after {} warm-up); baseline: {} one-row transactions",
        settings.runs, settings.clients, settings.hub_events, settings.warmup, settings.baseline_events
    );
    println!("machine: {} cores, {}", cores(), cpu_model());
    println!("files in: {}", bench_dir().display());

    let mut hub = Vec::new();
    let mut base = Vec::new();
    let mut ratios = Vec::new();
    let mut scenario = Scenario::new("append_http", "events/s", Goal::RatioAtLeast(5.0))
        .baseline("rusqlite, one event per transaction");
    let mut cpu = Vec::new();
    for run in 0..settings.runs {
        // The baseline brackets the hub run (half before, half after, same file), so
        // both see the same disk: fsync latency on a shared VM drifts by 10x and more.
        let mut baseline = Baseline::new();
        let first = baseline.run(settings.baseline_events / 2);
        let h = hub_run(&settings);
        let second = baseline.run(settings.baseline_events - settings.baseline_events / 2);
        let b = settings.baseline_events as f64 / (first + second).as_secs_f64();
        println!(
            "run {}: hub {:>6.0} ev/s (batch avg {:>4.1} jobs; CPU/event: hub {:>3.0} us + writer {:>3.0} us, load generator {:>3.0} us; {:.2} cores busy) | baseline {:>6.0} ev/s ({:.2} ms/commit) | ratio {:.1}x",
            run + 1,
            h.rate,
            h.mean_batch,
            h.cpu_hub_us,
            h.cpu_writer_us,
            h.cpu_client_us,
            h.cores_busy,
            b,
            1e3 / b,
            h.rate / b
        );
        ratios.push(h.rate / b);
        scenario.record_pair(h.rate, b);
        hub.push(h.rate);
        base.push(b);
        cpu.push([
            h.cpu_hub_us,
            h.cpu_writer_us,
            h.cpu_client_us,
            h.cores_busy,
            h.mean_batch,
        ]);
    }
    let (hm, hmin, hmax) = stats(&hub);
    let (bm, bmin, bmax) = stats(&base);
    let (rm, rmin, rmax) = stats(&ratios);
    println!();
    println!("| side | events/s median | min | max |");
    println!("|---|---:|---:|---:|");
    println!(
        "| hub, {} HTTP clients, single-event POST | {hm:.0} | {hmin:.0} | {hmax:.0} |",
        settings.clients
    );
    println!("| rusqlite loop, one event per transaction | {bm:.0} | {bmin:.0} | {bmax:.0} |");
    println!();
    println!(
        "ratio hub/baseline: {:.1}x (of medians); per-run ratio median {rm:.1}x, min {rmin:.1}x, max {rmax:.1}x",
        hm / bm
    );
    let col = |i: usize| stats(&cpu.iter().map(|c: &[f64; 5]| c[i]).collect::<Vec<_>>()).0;
    println!(
        "hub side, medians: {:.1} jobs per group commit; CPU per event {:.0} us in hub runtime threads + {:.0} us in the writer thread, {:.0} us in the load generator; {:.2} of {} cores busy",
        col(4),
        col(0),
        col(1),
        col(2),
        col(3),
        cores()
    );
    scenario.report();
}

// ---------------------------------------------------------------------------------------
// Baseline: one event row per transaction.

/// A `data` and `metadata` pair shaped like the hub's `StockAdded` rows.
fn event_json(i: usize) -> (String, String) {
    let data = json!({ "quantity": 1 + (i % 5) }).to_string();
    let metadata = json!({
        "origin": "hub",
        "actor": "admin",
        "correlation_id": uuid::Uuid::now_v7(),
        "occurred_at": "2025-01-01T12:00:00.123456789Z",
        "recorded_at": "2025-01-01T12:00:00.123456789Z",
    })
    .to_string();
    (data, metadata)
}

/// The raw loop on a fresh file.
struct Baseline {
    conn: Connection,
    position: usize,
    _dir: tempfile::TempDir,
}

impl Baseline {
    fn new() -> Self {
        let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
        let mut baseline = Self {
            conn: open_baseline(&dir.path().join("baseline.sqlite")),
            position: 0,
            _dir: dir,
        };
        // A few untimed rows so the file, WAL and statement cache exist.
        baseline.run(20);
        baseline
    }

    /// Inserts `events` rows, one per transaction; returns the time taken.
    fn run(&mut self, events: usize) -> Duration {
        let started = Instant::now();
        for _ in 0..events {
            self.position += 1;
            insert_one(&mut self.conn, self.position);
        }
        started.elapsed()
    }
}

fn insert_one(conn: &mut Connection, position: usize) {
    let (data, metadata) = event_json(position);
    let stream = [(position % 15) as u8; 32];
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .expect("begin");
    tx.prepare_cached(
        "INSERT INTO events (position, event_id, stream_key, stream_version, event_type, schema_version, data, metadata, fingerprint)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .expect("prepare")
    .execute(params![
        position as i64,
        &uuid::Uuid::now_v7().as_bytes()[..],
        &stream[..],
        (position / 15 + 1) as i64,
        "stock_added",
        1,
        data,
        metadata,
        &[7u8; 16][..],
    ])
    .expect("insert");
    tx.commit().expect("commit");
}

// ---------------------------------------------------------------------------------------
// Hub: concurrent single-event POSTs.

struct HubResult {
    rate: f64,
    mean_batch: f64,
    /// CPU time per event (µs) during the timed window: hub runtime threads (HTTP,
    /// handlers, projector), the writer thread, and the load generator.
    cpu_hub_us: f64,
    cpu_writer_us: f64,
    cpu_client_us: f64,
    /// CPU seconds of the whole process per wall second.
    cores_busy: f64,
}

/// The thread roles CPU time is reported for: hub runtime, writer thread, load generator
/// ([`thread_cpu`] adds everything as a fourth figure).
const ROLES: [&str; 3] = ["hub", "event-store-wri", "client"];

fn hub_run(settings: &Settings) -> HubResult {
    let hub = BenchHub::start(|_| {});
    let client_rt = runtime("client");
    let url = hub.url.clone();

    let targets: Arc<Vec<String>> = Arc::new(
        shelfsync_hub::seed::products()
            .iter()
            .flat_map(|p| {
                shelfsync_hub::seed::stores()
                    .into_iter()
                    .map(move |s| json!({ "product_id": p.id, "store_id": s.id, "quantity": 1 }).to_string())
            })
            .collect(),
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(settings.clients * 2)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");

    let result = client_rt.block_on(async {
        // Warm-up: opens the keep-alive connections and warms the caches (not timed).
        blast(&client, &url, &targets, settings.clients, settings.warmup).await;
        let before = batch_metrics(&client, &url).await;
        let cpu_before = thread_cpu(&ROLES);
        let started = Instant::now();
        blast(&client, &url, &targets, settings.clients, settings.hub_events).await;
        let elapsed = started.elapsed();
        let cpu_after = thread_cpu(&ROLES);
        let after = batch_metrics(&client, &url).await;
        let batches = after.1 - before.1;
        let jobs = after.0 - before.0;
        let per_event = |i: usize| (cpu_after[i] - cpu_before[i]) * 1e6 / settings.hub_events as f64;
        HubResult {
            rate: settings.hub_events as f64 / elapsed.as_secs_f64(),
            mean_batch: if batches > 0.0 { jobs / batches } else { f64::NAN },
            cpu_hub_us: per_event(0),
            cpu_writer_us: per_event(1),
            cpu_client_us: per_event(2),
            cores_busy: (cpu_after[3] - cpu_before[3]) / elapsed.as_secs_f64(),
        }
    });

    hub.stop();
    drop(client);
    client_rt.shutdown_timeout(Duration::from_secs(5));
    result
}

/// Sends `total` POSTs from `clients` concurrent tasks; panics on any non-201 answer.
async fn blast(client: &reqwest::Client, url: &str, targets: &Arc<Vec<String>>, clients: usize, total: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let endpoint: Arc<str> = format!("{url}/v1/inventory/stock").into();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let client = client.clone();
            let next = next.clone();
            let targets = targets.clone();
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        break;
                    }
                    let response = client
                        .post(&*endpoint)
                        .bearer_auth(ADMIN)
                        .header("content-type", "application/json")
                        .body(targets[i % targets.len()].clone())
                        .send()
                        .await
                        .expect("request");
                    let status = response.status();
                    let body = response.bytes().await.expect("body");
                    assert_eq!(
                        status.as_u16(),
                        201,
                        "unexpected answer: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
}

/// (sum of jobs, count of batches) from the hub's `shelfsync_hub_append_batch_jobs`
/// histogram, to report the mean group-commit size.
async fn batch_metrics(client: &reqwest::Client, url: &str) -> (f64, f64) {
    metric_sum_count(client, url, "shelfsync_hub_append_batch_jobs").await
}
