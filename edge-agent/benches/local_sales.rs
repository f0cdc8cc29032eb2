//! Durable local sales: sales/s recorded by an in-process edge agent from `TILLS` (32)
//! concurrent tills, against a raw one-event-per-transaction rusqlite loop (WAL,
//! synchronous=FULL, outbox-shaped rows) measured in the same run.
//!
//! A sale is what a till does at the counter: `POST /v1/inventory/reservations` (1 unit of a
//! product, terminal key, `X-Till-Id`), then `POST /v1/inventory/reservations/{id}/commit`
//! with the id from the first answer. Both are durable writes (each answer comes after the
//! agent's group commit, i.e. after fsync), so one sale is two recorded events, two outbox
//! rows, two idempotency rows and one `own_reservations` row. Every answer must be 201.
//!
//! The agent: a real one (its own runtime, one worker per core) on 127.0.0.1:0 with a fresh
//! data dir per run, bootstrapped from a synthetic snapshot of `PRODUCTS` products with
//! plenty of stock, its hub URL pointing at a closed port. So it is offline, as a store
//! whose hub link is down: nothing it records is confirmed, and its outbox grows by two
//! events per sale through the run (the report shows the rate in each of `CHUNKS` equal
//! parts of the run, with the outbox depth at its start). Tills pick products round-robin. `WARMUP` untimed sales
//! come first.
//!
//! Baseline: a fresh SQLite file with the agent's pragmas and DDL
//! (`migrations/0001_local_store.sql`), one outbox row (the same columns and JSON shapes as
//! a reservation or its commit) per `BEGIN IMMEDIATE .. COMMIT`, `BASELINE_EVENTS` rows,
//! half before and half after the agent's run; its sales/s is events/s / 2.
//!
//! ```sh
//! cargo bench -p shelfsync-edge --bench local_sales
//! RUNS=5 TILLS=32 SALES=4000 WARMUP=100 PRODUCTS=100 CHUNKS=4 BASELINE_EVENTS=4000 cargo bench -p shelfsync-edge --bench local_sales
//! ```
//!
//! `SHELFSYNC_BENCH_QUICK=1` runs tiny sizes once (`tests/scripts/bench.sh --quick`).
//! `BENCH_DIR` sets where the temp files go (default: the system temp dir).

mod support;

use rusqlite::{params, Connection, TransactionBehavior};
use shelfsync_common::testing::scenario::{knob, Goal, Scenario};
use shelfsync_common::{EventId, EventMetadata, EventPayload, Origin, ProductId, ReservationId, StoreId};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{
    bench_dir, cores, cpu_model, load_average, quantile, stats, this_thread_cpu, thread_cpu, BenchAgent, TERMINAL,
};
use time::OffsetDateTime;

const LOCAL_DDL: &str = include_str!("../migrations/0001_local_store.sql");
const ROLES: [&str; 3] = ["agent", "local-store-wri", "client"];

struct Settings {
    runs: usize,
    tills: usize,
    sales: usize,
    warmup: usize,
    products: usize,
    chunks: usize,
    baseline_events: usize,
}

/// One stretch of the timed sales.
#[derive(Clone, Copy)]
struct Chunk {
    /// Outbox events when it started.
    outbox_at_start: usize,
    rate: f64,
    /// CPU µs per sale: agent runtime threads, writer thread, client runtime.
    cpu_us: [f64; 3],
}

struct AgentResult {
    rate: f64,
    /// Per-sale latency (both requests), ms: p50, p99.
    latency: [f64; 2],
    chunks: Vec<Chunk>,
    cores_busy: f64,
}

fn main() {
    let settings = Settings {
        runs: knob("RUNS", 5, 1).max(1),
        tills: knob("TILLS", 32, 4).max(1),
        sales: knob("SALES", 4_000, 40).max(1),
        warmup: knob("WARMUP", 100, 4),
        products: knob("PRODUCTS", 100, 10).max(1),
        chunks: knob("CHUNKS", 4, 2).max(1),
        baseline_events: knob("BASELINE_EVENTS", 4_000, 40).max(2),
    };
    println!(
        "local_sales: {} runs; agent: {} tills x {} sales (reserve + commit; after {} warm-up sales), {} products; baseline: {} one-row transactions",
        settings.runs, settings.tills, settings.sales, settings.warmup, settings.products, settings.baseline_events
    );
    println!("machine: {} cores, {}", cores(), cpu_model());
    println!("files in: {}", bench_dir().display());

    let mut agent_rates = Vec::new();
    let mut base_rates = Vec::new();
    let mut ratios = Vec::new();
    let mut scenario = Scenario::new("local_sales", "sales/s", Goal::RatioAtLeast(3.0))
        .baseline("rusqlite, one event per transaction");
    let mut first_ratios = Vec::new();
    let mut results = Vec::new();
    let mut base_cpu = Vec::new();
    for run in 0..settings.runs {
        let mut baseline = Baseline::new();
        let (first, cpu1) = baseline.run(settings.baseline_events / 2);
        let a = agent_run(&settings);
        let (second, cpu2) = baseline.run(settings.baseline_events - settings.baseline_events / 2);
        let events_per_s = settings.baseline_events as f64 / (first + second).as_secs_f64();
        let b = events_per_s / 2.0;
        let cpu_per_event = (cpu1 + cpu2).as_secs_f64() * 1e6 / settings.baseline_events as f64;
        let chunks: Vec<String> = a
            .chunks
            .iter()
            .map(|c| {
                format!(
                    "{:.0} (outbox {}, writer {:.0} us/sale)",
                    c.rate, c.outbox_at_start, c.cpu_us[1]
                )
            })
            .collect();
        println!(
            "run {}: agent {:>6.0} sales/s (sale p50 {:.1} ms, p99 {:.1} ms; {:.2} cores busy; by part: {}) | baseline {:>6.0} sales/s = {:.0} events/s ({:.2} ms per commit, {:.0} us CPU per event) | ratio {:.2}x, first part {:.2}x | load {}",
            run + 1,
            a.rate,
            a.latency[0],
            a.latency[1],
            a.cores_busy,
            chunks.join(", "),
            b,
            events_per_s,
            1e3 / events_per_s,
            cpu_per_event,
            a.rate / b,
            a.chunks[0].rate / b,
            load_average(),
        );
        agent_rates.push(a.rate);
        base_rates.push(b);
        ratios.push(a.rate / b);
        scenario.record_pair(a.rate, b);
        first_ratios.push(a.chunks[0].rate / b);
        base_cpu.push(cpu_per_event);
        results.push(a);
    }

    let cell = |(m, lo, hi): (f64, f64, f64)| format!("{m:.0} ({lo:.0}-{hi:.0})");
    println!();
    println!("| side | sales/s median (min-max) |");
    println!("|---|---:|");
    println!(
        "| agent, {} tills, reserve + commit over HTTP | {} |",
        settings.tills,
        cell(stats(&agent_rates))
    );
    println!(
        "| rusqlite, one outbox row per transaction (2 per sale) | {} |",
        cell(stats(&base_rates))
    );
    let (rm, rmin, rmax) = stats(&ratios);
    let (fm, fmin, fmax) = stats(&first_ratios);
    println!();
    println!(
        "ratio agent/baseline: {:.2}x (of medians); per-run median {rm:.2}x (min {rmin:.2}x, max {rmax:.2}x); first part of each run only: per-run median {fm:.2}x (min {fmin:.2}x, max {fmax:.2}x)",
        stats(&agent_rates).0 / stats(&base_rates).0
    );
    println!("baseline CPU per event: {:.0} us (median)", stats(&base_cpu).0);
    println!();
    println!(
        "| part of the run (1/{}) | outbox events at its start | agent sales/s median (min-max) | writer CPU µs/sale | agent runtime CPU µs/sale | client CPU µs/sale |",
        settings.chunks
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for i in 0..settings.chunks {
        let col = |f: &dyn Fn(&Chunk) -> f64| stats(&results.iter().map(|r| f(&r.chunks[i])).collect::<Vec<_>>());
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} |",
            i + 1,
            results[0].chunks[i].outbox_at_start,
            cell(col(&|c| c.rate)),
            col(&|c| c.cpu_us[1]).0,
            col(&|c| c.cpu_us[0]).0,
            col(&|c| c.cpu_us[2]).0,
        );
    }
    if settings.chunks > 1 {
        let writer = |i: usize| stats(&results.iter().map(|r| r.chunks[i].cpu_us[1]).collect::<Vec<_>>()).0;
        let last = settings.chunks - 1;
        let depth = (results[0].chunks[last].outbox_at_start - results[0].chunks[0].outbox_at_start) as f64;
        println!();
        println!(
            "writer CPU per sale grows by {:.0} us per 1,000 outbox events ({:.0} us in the first part, {:.0} us in the last)",
            (writer(last) - writer(0)) * 1000.0 / depth,
            writer(0),
            writer(last)
        );
    }
    let latency = |i: usize| stats(&results.iter().map(|r| r.latency[i]).collect::<Vec<_>>()).0;
    println!();
    println!(
        "sale latency (reserve + commit), medians over runs: p50 {:.1} ms, p99 {:.1} ms",
        latency(0),
        latency(1)
    );
    scenario.report();
}

// ---------------------------------------------------------------------------------------
// Baseline: one outbox row per transaction.

struct Baseline {
    conn: Connection,
    seq: usize,
    store: StoreId,
    product: ProductId,
    open: Option<ReservationId>,
    _dir: tempfile::TempDir,
}

impl Baseline {
    fn new() -> Self {
        let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
        let mut baseline = Self {
            conn: open_baseline(&dir.path().join("baseline.sqlite")),
            seq: 0,
            store: StoreId::new_v7(),
            product: ProductId::new_v7(),
            open: None,
            _dir: dir,
        };
        baseline.run(20);
        baseline
    }

    /// The next event of a sale: a hold, then its commit.
    fn payload(&mut self) -> EventPayload {
        match self.open.take() {
            None => {
                let reservation_id = ReservationId::new_v7();
                self.open = Some(reservation_id);
                EventPayload::StockReserved {
                    reservation_id,
                    quantity: 1,
                    expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(15),
                }
            }
            Some(reservation_id) => EventPayload::ReservationCommitted {
                reservation_id,
                quantity: 1,
            },
        }
    }

    /// Inserts `events` rows, one per transaction; returns (wall time, this thread's CPU).
    fn run(&mut self, events: usize) -> (Duration, Duration) {
        let cpu = this_thread_cpu();
        let started = Instant::now();
        for _ in 0..events {
            self.seq += 1;
            let payload = self.payload();
            let now = OffsetDateTime::now_utc();
            let metadata = EventMetadata {
                origin: Origin::Store(self.store),
                actor: "terminal:till-1".into(),
                correlation_id: uuid::Uuid::now_v7(),
                causation_id: None,
                occurred_at: now,
                recorded_at: None,
            };
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .expect("begin");
            tx.prepare_cached(
                "INSERT INTO outbox (seq, event_id, product_id, event_type, schema_version, data, metadata, status, recorded_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8)",
            )
            .expect("prepare")
            .execute(params![
                self.seq as i64,
                &EventId::new_v7().as_bytes()[..],
                &self.product.as_bytes()[..],
                payload.event_type(),
                1,
                serde_json::to_string(&payload.data()).expect("data"),
                serde_json::to_string(&metadata).expect("metadata"),
                now.format(&time::format_description::well_known::Rfc3339).expect("time"),
            ])
            .expect("insert");
            tx.commit().expect("commit");
        }
        (started.elapsed(), this_thread_cpu().saturating_sub(cpu))
    }
}

fn open_baseline(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
    conn.pragma_update(None, "synchronous", "FULL").expect("sync");
    conn.pragma_update(None, "foreign_keys", "ON").expect("fk");
    conn.execute_batch(LOCAL_DDL).expect("ddl");
    conn
}

// ---------------------------------------------------------------------------------------
// Agent: concurrent tills.

fn agent_run(settings: &Settings) -> AgentResult {
    let agent = BenchAgent::start(settings.products, 100_000_000);
    let client_rt = support::runtime("client");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(settings.tills * 2)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let products = Arc::new(agent.products.clone());
    let url: Arc<str> = agent.url.clone().into();
    let store = agent.store_id;

    let result = client_rt.block_on(async {
        sell(&client, &url, store, &products, settings.tills, settings.warmup, None).await;
        let completed = Arc::new(AtomicUsize::new(0));
        // Snapshots (time, CPU by role) each time another 1/CHUNKS of the sales is done.
        type Marks = Arc<Mutex<Vec<(Instant, Vec<f64>)>>>;
        let marks: Marks = Arc::new(Mutex::new(Vec::new()));
        let monitor = {
            let (completed, marks) = (completed.clone(), marks.clone());
            let (sales, chunks) = (settings.sales, settings.chunks);
            tokio::spawn(async move {
                marks.lock().expect("marks").push((Instant::now(), thread_cpu(&ROLES)));
                for k in 1..=chunks {
                    let threshold = sales * k / chunks;
                    while completed.load(Ordering::Acquire) < threshold {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    marks.lock().expect("marks").push((Instant::now(), thread_cpu(&ROLES)));
                }
            })
        };
        // Let the monitor take its first mark.
        while marks.lock().expect("marks").is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = Instant::now();
        let mut latencies = sell(
            &client,
            &url,
            store,
            &products,
            settings.tills,
            settings.sales,
            Some(completed.clone()),
        )
        .await;
        let elapsed = started.elapsed();
        monitor.await.expect("monitor");
        latencies.sort_by(f64::total_cmp);
        let marks = marks.lock().expect("marks").clone();
        let chunks = marks
            .windows(2)
            .enumerate()
            .map(|(k, pair)| {
                let (t0, c0) = &pair[0];
                let (t1, c1) = &pair[1];
                let sales = (settings.sales * (k + 1) / settings.chunks - settings.sales * k / settings.chunks) as f64;
                Chunk {
                    outbox_at_start: 2 * (settings.warmup + settings.sales * k / settings.chunks),
                    rate: sales / (*t1 - *t0).as_secs_f64(),
                    cpu_us: [
                        (c1[0] - c0[0]) * 1e6 / sales,
                        (c1[1] - c0[1]) * 1e6 / sales,
                        (c1[2] - c0[2]) * 1e6 / sales,
                    ],
                }
            })
            .collect();
        let cores_busy = (marks.last().expect("mark").1[3] - marks[0].1[3])
            / (marks.last().expect("mark").0 - marks[0].0).as_secs_f64();
        AgentResult {
            rate: settings.sales as f64 / elapsed.as_secs_f64(),
            latency: [quantile(&latencies, 0.5), quantile(&latencies, 0.99)],
            chunks,
            cores_busy,
        }
    });
    drop(client);
    client_rt.shutdown_timeout(Duration::from_secs(5));
    agent.stop();
    result
}

/// `total` sales from `tills` concurrent tills; returns each sale's latency in ms.
async fn sell(
    client: &reqwest::Client,
    url: &Arc<str>,
    store: StoreId,
    products: &Arc<Vec<ProductId>>,
    tills: usize,
    total: usize,
    completed: Option<Arc<AtomicUsize>>,
) -> Vec<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..tills)
        .map(|till| {
            let (client, next, url, products, completed) = (
                client.clone(),
                next.clone(),
                url.clone(),
                products.clone(),
                completed.clone(),
            );
            tokio::spawn(async move {
                let till_id = format!("till-{till}");
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return latencies;
                    }
                    let product = products[i % products.len()];
                    let body =
                        serde_json::json!({ "product_id": product, "store_id": store, "quantity": 1 }).to_string();
                    let started = Instant::now();
                    let response = client
                        .post(format!("{url}/v1/inventory/reservations"))
                        .bearer_auth(TERMINAL)
                        .header("x-till-id", &till_id)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .expect("reserve");
                    let status = response.status().as_u16();
                    let bytes = response.bytes().await.expect("body");
                    assert_eq!(status, 201, "reserve: {}", String::from_utf8_lossy(&bytes));
                    let reserved: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
                    let reservation = reserved["data"]["reservation_id"]
                        .as_str()
                        .expect("reservation_id")
                        .to_owned();
                    let response = client
                        .post(format!("{url}/v1/inventory/reservations/{reservation}/commit"))
                        .bearer_auth(TERMINAL)
                        .header("x-till-id", &till_id)
                        .header("content-type", "application/json")
                        .body("{}")
                        .send()
                        .await
                        .expect("commit");
                    let status = response.status().as_u16();
                    let bytes = response.bytes().await.expect("body");
                    assert_eq!(status, 201, "commit: {}", String::from_utf8_lossy(&bytes));
                    latencies.push(started.elapsed().as_secs_f64() * 1e3);
                    if let Some(completed) = &completed {
                        completed.fetch_add(1, Ordering::Release);
                    }
                }
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for task in tasks {
        all.extend(task.await.expect("till task"));
    }
    all
}
