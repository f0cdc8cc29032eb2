//! Upload ingest: events/s that the hub records from edge agents' uploads (`POST
//! /v1/sync/upload`, batches of 500, several stores at once), against a raw batched
//! rusqlite insert of the same rows (500 per transaction) measured in the same run.
//!
//! Hub side: a real hub started in-process (its own runtime, one worker per core, demo
//! data) on 127.0.0.1:0. `STORES` agents (the demo stores' tokens from
//! `<data_dir>/store-tokens/`, more stores enrolled through `/v1/admin/stores` when
//! `STORES` > 3) each upload `BATCHES` batches of `BATCH` events one after the other (one
//! upload in flight per store, as an agent does), all stores at once, after `WARMUP`
//! untimed batches each. The events are what a till records: per product, in turn, a
//! delivery (`StockAdded` 2), a hold (`StockReserved` 1) and its sale
//! (`ReservationCommitted` 1), over the 5 demo products, so stock never goes below zero and
//! no `OversellDetected` is added. Request bodies are serialized before the clock starts.
//! Every answer must be 200 with every event `appended`.
//!
//! Baseline: a fresh SQLite file with the hub's pragmas (WAL, synchronous=FULL) and DDL
//! (`migrations/0001_event_store.sql`), and the same rows the hub writes for those
//! uploads (same columns, same `data` and `metadata` JSON, `recorded_at` included), `BATCH`
//! rows per `BEGIN IMMEDIATE .. COMMIT`, half before and half after the hub run (fsync
//! latency drifts on a shared VM).
//!
//! ```sh
//! cargo bench -p shelfsync-hub --bench upload_ingest
//! RUNS=5 STORES=3 BATCH=500 BATCHES=100 WARMUP=1 BASELINE_BATCHES=300 cargo bench -p shelfsync-hub --bench upload_ingest
//! ```
//!
//! `SHELFSYNC_BENCH_QUICK=1` runs tiny sizes once (`tests/scripts/bench.sh --quick`).
//! `BENCH_DIR` sets where the temp files go (default: the system temp dir).

mod support;

use rusqlite::{params, Connection, TransactionBehavior};
use shelfsync_common::testing::scenario::{knob, Goal, Scenario};
use shelfsync_common::wire::sync::{UploadOutcome, UploadRequest, UploadResponse, PROTOCOL_HEADER, PROTOCOL_VERSION};
use shelfsync_common::EventPayload;
use std::time::{Duration, Instant};
use support::till::Till;
use support::{bench_dir, cores, cpu_model, load_average, open_baseline, stats, thread_cpu, BenchHub};
use time::OffsetDateTime;

struct Settings {
    runs: usize,
    stores: usize,
    batch: usize,
    batches: usize,
    warmup: usize,
    baseline_batches: usize,
}

fn main() {
    let settings = Settings {
        runs: knob("RUNS", 5, 1).max(1),
        stores: knob("STORES", 3, 2).max(1),
        batch: knob("BATCH", 500, 50).clamp(1, shelfsync_common::wire::sync::MAX_UPLOAD_BATCH),
        batches: knob("BATCHES", 100, 3).max(1),
        warmup: knob("WARMUP", 1, 1),
        baseline_batches: knob("BASELINE_BATCHES", 0, 0),
    };
    let hub_events = settings.stores * settings.batches * settings.batch;
    let baseline_batches = if settings.baseline_batches == 0 {
        settings.stores * settings.batches
    } else {
        settings.baseline_batches
    }
    .max(2);
    println!(
        "upload_ingest: {} runs; hub: {} stores x {} uploads of {} events ({} events, after {} warm-up uploads per store); baseline: {} transactions of {} rows",
        settings.runs, settings.stores, settings.batches, settings.batch, hub_events, settings.warmup, baseline_batches, settings.batch
    );
    println!("machine: {} cores, {}", cores(), cpu_model());
    println!("files in: {}", bench_dir().display());

    let mut hub = Vec::new();
    let mut base = Vec::new();
    let mut ratios = Vec::new();
    let mut scenario = Scenario::new("upload_ingest", "events/s", Goal::RatioAtLeast(0.8))
        .baseline("rusqlite, same rows, one upload batch per transaction");
    let mut details = Vec::new();
    for run in 0..settings.runs {
        let mut baseline = Baseline::new(settings.batch);
        let (first, cpu1) = baseline.run(baseline_batches / 2);
        let h = hub_run(&settings);
        let (second, cpu2) = baseline.run(baseline_batches - baseline_batches / 2);
        let b = (baseline_batches * settings.batch) as f64 / (first + second).as_secs_f64();
        let base_cpu_us = (cpu1 + cpu2).as_secs_f64() * 1e6 / (baseline_batches * settings.batch) as f64;
        let ms_per_commit = (first + second).as_secs_f64() * 1e3 / baseline_batches as f64;
        println!(
            "run {}: hub {:>7.0} ev/s (upload p50 {:>5.1} ms, max {:>5.1} ms; {:.2} uploads per group commit; CPU/event: hub {:>4.1} us + writer {:>4.1} us, load generator {:>4.1} us; {:.2} cores busy) | baseline {:>7.0} ev/s ({:.1} ms per {}-row commit, {:.1} us CPU/event) | ratio hub/baseline {:.2} | load {}",
            run + 1,
            h.rate,
            h.upload_p50_ms,
            h.upload_max_ms,
            h.mean_batch,
            h.cpu_hub_us,
            h.cpu_writer_us,
            h.cpu_client_us,
            h.cores_busy,
            b,
            ms_per_commit,
            settings.batch,
            base_cpu_us,
            h.rate / b,
            load_average(),
        );
        ratios.push(h.rate / b);
        scenario.record_pair(h.rate, b);
        hub.push(h.rate);
        base.push(b);
        details.push([
            h.cpu_hub_us,
            h.cpu_writer_us,
            h.cpu_client_us,
            h.cores_busy,
            h.mean_batch,
            h.upload_p50_ms,
            ms_per_commit,
            base_cpu_us,
        ]);
    }
    let (hm, hmin, hmax) = stats(&hub);
    let (bm, bmin, bmax) = stats(&base);
    let (rm, rmin, rmax) = stats(&ratios);
    let col = |i: usize| stats(&details.iter().map(|c| c[i]).collect::<Vec<_>>()).0;
    println!();
    println!("| side | events/s median | min | max |");
    println!("|---|---:|---:|---:|");
    println!(
        "| hub, {} stores uploading {}-event batches | {hm:.0} | {hmin:.0} | {hmax:.0} |",
        settings.stores, settings.batch
    );
    println!(
        "| rusqlite, {} rows per transaction | {bm:.0} | {bmin:.0} | {bmax:.0} |",
        settings.batch
    );
    println!();
    println!(
        "ratio hub/baseline: {:.2} (of medians); per-run ratio median {rm:.2}, min {rmin:.2}, max {rmax:.2}",
        hm / bm
    );
    println!(
        "hub side, medians: upload p50 {:.1} ms; {:.2} uploads per group commit; CPU per event {:.1} us in hub runtime threads + {:.1} us in the writer thread, {:.1} us in the load generator; {:.2} of {} cores busy; baseline {:.1} ms per commit and {:.1} us CPU per event",
        col(5),
        col(4),
        col(0),
        col(1),
        col(2),
        col(3),
        cores(),
        col(6),
        col(7),
    );
    scenario.report();
}

// ---------------------------------------------------------------------------------------
// Baseline: the same rows, BATCH per transaction.

struct Baseline {
    conn: Connection,
    position: usize,
    batch: usize,
    till: Till,
    _dir: tempfile::TempDir,
}

/// One `events` row, ready to bind.
struct Row {
    event_id: [u8; 16],
    stream_key: [u8; 32],
    event_type: &'static str,
    data: String,
    metadata: String,
    fingerprint: [u8; 16],
}

impl Baseline {
    fn new(batch: usize) -> Self {
        let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
        let mut baseline = Self {
            conn: open_baseline(&dir.path().join("baseline.sqlite")),
            position: 0,
            batch,
            till: Till::new(shelfsync_hub::seed::stores()[0].id),
            _dir: dir,
        };
        // One untimed batch so that the file, WAL and statement cache exist.
        baseline.run(1);
        baseline
    }

    /// Rows as the hub's writer stores an uploaded event.
    fn rows(&mut self) -> Vec<Row> {
        let now = OffsetDateTime::now_utc();
        self.till
            .batch(self.batch)
            .into_iter()
            .map(|event| {
                let payload = EventPayload::from_parts(&event.event_type, event.schema_version, event.data.clone())
                    .expect("payload");
                let mut metadata = event.metadata.clone();
                metadata.recorded_at = Some(now);
                Row {
                    event_id: *event.event_id.as_bytes(),
                    stream_key: event.stream.key(),
                    event_type: payload.event_type(),
                    data: serde_json::to_string(&payload.data()).expect("data"),
                    metadata: serde_json::to_string(&metadata).expect("metadata"),
                    fingerprint: [7; 16],
                }
            })
            .collect()
    }

    /// Writes `batches` transactions of `batch` rows; returns the time spent in SQLite and
    /// this thread's CPU time meanwhile. The rows are built first, outside both clocks.
    fn run(&mut self, batches: usize) -> (Duration, Duration) {
        let all: Vec<Vec<Row>> = (0..batches).map(|_| self.rows()).collect();
        let cpu_before = support::this_thread_cpu();
        let started = Instant::now();
        for rows in all {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .expect("begin");
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO events (position, event_id, stream_key, stream_version, event_type, schema_version, data, metadata, fingerprint)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )
                    .expect("prepare");
                for row in &rows {
                    self.position += 1;
                    insert
                        .execute(params![
                            self.position as i64,
                            &row.event_id[..],
                            &row.stream_key[..],
                            (self.position / 5 + 1) as i64,
                            row.event_type,
                            1,
                            row.data,
                            row.metadata,
                            &row.fingerprint[..],
                        ])
                        .expect("insert");
                }
            }
            tx.commit().expect("commit");
        }
        (started.elapsed(), support::this_thread_cpu().saturating_sub(cpu_before))
    }
}

// ---------------------------------------------------------------------------------------
// Hub: concurrent uploads.

struct HubResult {
    rate: f64,
    upload_p50_ms: f64,
    upload_max_ms: f64,
    mean_batch: f64,
    cpu_hub_us: f64,
    cpu_writer_us: f64,
    cpu_client_us: f64,
    cores_busy: f64,
}

const ROLES: [&str; 3] = ["hub", "event-store-wri", "client"];

fn hub_run(settings: &Settings) -> HubResult {
    let hub = BenchHub::start(|_| {});
    let client_rt = support::runtime("client");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(settings.stores * 2)
        .timeout(Duration::from_secs(120))
        .build()
        .expect("client");
    let url = hub.url.clone();

    // Store tokens: the demo stores', then enrolled ones.
    let agents = client_rt.block_on(support::store_agents(&hub, &client, settings.stores));

    // Every body, serialized before the clock starts.
    // (token, warm-up bodies, timed bodies) per store.
    type Bodies = (String, Vec<Vec<u8>>, Vec<Vec<u8>>);
    let bodies: Vec<Bodies> = agents
        .iter()
        .map(|(store, token)| {
            let mut till = Till::new(*store);
            let mut body = |_| {
                serde_json::to_vec(&UploadRequest {
                    events: till.batch(settings.batch),
                })
                .expect("body")
            };
            let warmup: Vec<Vec<u8>> = (0..settings.warmup).map(&mut body).collect();
            let timed: Vec<Vec<u8>> = (0..settings.batches).map(&mut body).collect();
            (token.clone(), warmup, timed)
        })
        .collect();

    let (warmups, timed): (Vec<_>, Vec<_>) = bodies
        .into_iter()
        .map(|(token, warmup, timed)| ((token.clone(), warmup), (token, timed)))
        .unzip();

    let result = client_rt.block_on(async {
        let endpoint = format!("{url}/v1/sync/upload");
        let upload_all = |uploads: Vec<(String, Vec<Vec<u8>>)>| {
            let tasks: Vec<_> = uploads
                .into_iter()
                .map(|(token, batches)| {
                    let client = client.clone();
                    let endpoint = endpoint.clone();
                    let expected = settings.batch;
                    tokio::spawn(async move {
                        let mut latencies = Vec::with_capacity(batches.len());
                        for body in batches {
                            let started = Instant::now();
                            let response = client
                                .post(&endpoint)
                                .bearer_auth(&token)
                                .header(PROTOCOL_HEADER, PROTOCOL_VERSION)
                                .header("content-type", "application/json")
                                .body(body)
                                .send()
                                .await
                                .expect("upload");
                            let status = response.status().as_u16();
                            let bytes = response.bytes().await.expect("body");
                            latencies.push(started.elapsed().as_secs_f64() * 1e3);
                            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
                            let answer: UploadResponse = serde_json::from_slice(&bytes).expect("UploadResponse");
                            let appended = answer
                                .results
                                .iter()
                                .filter(|r| matches!(r.outcome, UploadOutcome::Appended { .. }))
                                .count();
                            assert_eq!(
                                (answer.results.len(), appended),
                                (expected, expected),
                                "not every event was appended: {:?}",
                                answer
                                    .results
                                    .iter()
                                    .find(|r| !matches!(r.outcome, UploadOutcome::Appended { .. }))
                            );
                        }
                        latencies
                    })
                })
                .collect();
            async move {
                let mut all = Vec::new();
                for task in tasks {
                    all.extend(task.await.expect("upload task"));
                }
                all
            }
        };
        upload_all(warmups).await;
        let before = support::metric_sum_count(&client, &url, "shelfsync_hub_append_batch_jobs").await;
        let cpu_before = thread_cpu(&ROLES);
        let started = Instant::now();
        let mut latencies = upload_all(timed).await;
        let elapsed = started.elapsed();
        let cpu_after = thread_cpu(&ROLES);
        let after = support::metric_sum_count(&client, &url, "shelfsync_hub_append_batch_jobs").await;
        latencies.sort_by(f64::total_cmp);
        let events = (settings.stores * settings.batches * settings.batch) as f64;
        let per_event = |i: usize| (cpu_after[i] - cpu_before[i]) * 1e6 / events;
        let batches = after.1 - before.1;
        HubResult {
            rate: events / elapsed.as_secs_f64(),
            upload_p50_ms: support::quantile(&latencies, 0.5),
            upload_max_ms: latencies.last().copied().unwrap_or(f64::NAN),
            mean_batch: if batches > 0.0 {
                (after.0 - before.0) / batches
            } else {
                f64::NAN
            },
            cpu_hub_us: per_event(0),
            cpu_writer_us: per_event(1),
            cpu_client_us: per_event(2),
            cores_busy: (cpu_after[3] - cpu_before[3]) / elapsed.as_secs_f64(),
        }
    });
    drop(client);
    client_rt.shutdown_timeout(Duration::from_secs(5));
    hub.stop();
    result
}
