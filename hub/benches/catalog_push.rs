//! Catalog push and steady fan-out at fleet scale (issue 15): a real hub in this process,
//! the push streams' receivers in a child process (the same binary, started again with
//! `CATALOG_PUSH_RECEIVER=1`), so that 10,000 streams fit in the fd limit of each process.
//!
//! Setup: a hub on 127.0.0.1:0 (its own runtime, one worker per core, demo data), as many
//! stores enrolled as the largest stream count (stream `i` uses store `i`'s token), and
//! `PRODUCTS` (10,000) products registered.
//!
//! Per run and per stream count in `STREAM_COUNTS` (1,000 and 10,000), each beside the same
//! measurement with one stream in the same run (the baseline):
//! - **catalog push**: the receivers open the streams after the head and wait for every
//!   `caught-up`; then the price of every product changes (`PUT /v1/products/{id}`, 16 at a
//!   time). Figures: the time from the first `PUT` until the last stream has the last
//!   change; the p99 of the hub's other requests meanwhile (`GET /v1/products/{id}` every
//!   20 ms); the hub's CPU (its runtime and writer threads) per change, scaled to 10,000
//!   streams; the process's peak RSS (hub and this bench's writers).
//! - **steady fan-out**: `STEADY_RATE` (1,000) store events per second spread over the
//!   streams' stores (`POST /v1/inventory/stock`) plus one price change per second, for
//!   `STEADY_SECS` (20); figure: the p99 over every delivery of receipt time minus the
//!   event's `metadata.recorded_at` (the writer's clock at commit; same machine, same
//!   clock), so it includes the commit itself.
//!
//! The receivers are light: one current-thread runtime, raw sockets, frames counted on raw
//! bytes (and, for the steady scenario, `recorded_at` parsed). Their CPU is reported too.
//!
//! ```sh
//! ulimit -n 20000; cargo bench -p shelfsync-hub --bench catalog_push
//! RUNS=1 STREAM_COUNTS=1000 PRODUCTS=10000 cargo bench -p shelfsync-hub --bench catalog_push
//! SHELFSYNC_BENCH_QUICK=1 cargo test -p shelfsync-hub --bench catalog_push
//! ```

mod support;

use serde_json::json;
use shelfsync_common::testing::scenario::{knob, quick, Goal, Scenario};
use shelfsync_common::wire::sync::EnrolledStore;
use shelfsync_common::{ProductId, StoreId};
use shelfsync_hub::testing::{metric_value, metrics_text, ADMIN};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use support::{bench_dir, cores, cpu_model, hub_head, quantile, thread_cpu, BenchHub};

#[path = "catalog_push/receiver.rs"]
mod receiver;

/// Longest wait for any one step (streams open, deliveries done).
const STEP_TIMEOUT: Duration = Duration::from_secs(900);
/// Concurrent price changes.
const WRITERS: usize = 16;
/// Interval of the other requests probed during a catalog push.
const PROBE_EVERY: Duration = Duration::from_millis(20);

struct Settings {
    runs: usize,
    products: usize,
    counts: Vec<usize>,
    steady_secs: u64,
    steady_rate: usize,
}

/// The fleet the bench writes to.
struct Fleet {
    url: String,
    tokens_file: std::path::PathBuf,
    stores: Vec<StoreId>,
    products: Vec<(ProductId, String)>,
    client: reqwest::Client,
    price: AtomicU64,
}

fn main() {
    if std::env::var("CATALOG_PUSH_RECEIVER").is_ok_and(|v| v == "1") {
        receiver::main();
        return;
    }
    let counts = std::env::var("STREAM_COUNTS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| if quick() { vec![20] } else { vec![1000, 10_000] });
    let settings = Settings {
        runs: knob("RUNS", 3, 1).max(1),
        products: knob("PRODUCTS", 10_000, 40).max(1),
        counts,
        steady_secs: knob("STEADY_SECS", 20, 2).max(1) as u64,
        steady_rate: knob("STEADY_RATE", 1000, 50).max(1),
    };
    let most = settings.counts.iter().copied().max().unwrap_or(1);
    println!(
        "catalog_push: {} runs; streams {:?} against 1 stream; {} products; steady {} events/s + 1 price change/s for {} s",
        settings.runs, settings.counts, settings.products, settings.steady_rate, settings.steady_secs
    );
    println!("machine: {} cores, {}", cores(), cpu_model());
    let hub = BenchHub::start(|c| c.http.max_connections = most + 256);
    let client_rt = support::runtime("client");
    let fleet = client_rt.block_on(Fleet::set_up(&hub.url, most, settings.products));

    let mut time = Vec::new();
    let mut probes = Vec::new();
    let mut cpu = Vec::new();
    let mut rss = Vec::new();
    let mut steady = Vec::new();
    for &n in &settings.counts {
        let goal = if n <= 1000 { 30.0 } else { 180.0 };
        time.push(Scenario::new(format!("catalog_push_{n}_streams"), "s", Goal::AtMost(goal)).baseline("1 stream"));
        probes.push(
            Scenario::new(
                format!("catalog_push_{n}_streams_other_requests_p99"),
                "ms",
                Goal::AtMost(50.0),
            )
            .baseline("1 stream"),
        );
        cpu.push(
            Scenario::new(
                format!("catalog_push_{n}_streams_hub_cpu"),
                "ms per change per 10k streams",
                Goal::AtMost(20.0),
            )
            .baseline("1 stream, ms per change"),
        );
        rss.push(
            Scenario::new(format!("catalog_push_{n}_streams_rss"), "MB", Goal::AtMost(1024.0)).baseline("1 stream"),
        );
        let goal = if n <= 1000 { 50.0 } else { 200.0 };
        steady.push(
            Scenario::new(format!("steady_fanout_{n}_streams_p99"), "ms", Goal::AtMost(goal)).baseline("1 stream"),
        );
    }
    for run in 0..settings.runs {
        let one = client_rt.block_on(catalog(&fleet, 1));
        let one_steady = client_rt.block_on(steady_fanout(&fleet, 1, &settings));
        for (i, &n) in settings.counts.iter().enumerate() {
            let many = client_rt.block_on(catalog(&fleet, n));
            let many_steady = client_rt.block_on(steady_fanout(&fleet, n, &settings));
            println!("run {}: 1 stream {one:?}; steady {one_steady:?}", run + 1);
            println!("run {}: {n} streams {many:?}; steady {many_steady:?}", run + 1);
            time[i].record_pair(many.seconds, one.seconds);
            probes[i].record_pair(many.probe_p99_ms, one.probe_p99_ms);
            cpu[i].record_pair(many.hub_ms_per_change * 10_000.0 / n as f64, one.hub_ms_per_change);
            rss[i].record_pair(many.rss_mb, one.rss_mb);
            steady[i].record_pair(many_steady.p99_ms, one_steady.p99_ms);
        }
    }
    drop(fleet);
    client_rt.shutdown_timeout(Duration::from_secs(5));
    hub.stop();
    for scenario in time.iter().chain(&probes).chain(&cpu).chain(&rss).chain(&steady) {
        scenario.report();
    }
}

impl Fleet {
    /// Enrolls `stores` stores and registers `products` products (32 requests at a time).
    async fn set_up(url: &str, stores: usize, products: usize) -> Self {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let started = Instant::now();
        let enrolled = parallel(stores, |i| {
            let request = client
                .post(format!("{url}/v1/admin/stores"))
                .bearer_auth(ADMIN)
                .json(&json!({ "name": format!("bench store {i}") }));
            async move {
                let response = request.send().await.expect("enroll");
                assert_eq!(response.status().as_u16(), 201);
                response.json::<EnrolledStore>().await.expect("EnrolledStore")
            }
        })
        .await;
        let registered = parallel(products, |i| {
            let id = ProductId::new_v7();
            let sku = format!("BENCH-{i}");
            let request = client
                .post(format!("{url}/v1/products"))
                .bearer_auth(ADMIN)
                .json(&json!({ "id": id, "sku": sku, "name": format!("bench product {i}"), "price_minor": 100 }));
            async move {
                let response = request.send().await.expect("register");
                assert_eq!(response.status().as_u16(), 201, "register refused");
                (id, sku)
            }
        })
        .await;
        println!(
            "enrolled {stores} stores and registered {products} products in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let dir = bench_dir();
        let tokens_file = dir.join(format!("catalog_push_tokens_{}", std::process::id()));
        let tokens: Vec<&str> = enrolled.iter().map(|e| e.token.expose()).collect();
        std::fs::write(&tokens_file, tokens.join("\n")).expect("tokens file");
        Self {
            url: url.to_owned(),
            tokens_file,
            stores: enrolled.iter().map(|e| e.store.id).collect(),
            products: registered,
            client,
            price: AtomicU64::new(100),
        }
    }

    /// A price change of product `i`; panics unless it is recorded.
    async fn change_price(&self, i: usize) {
        let (id, sku) = &self.products[i % self.products.len()];
        let price = self.price.fetch_add(1, Ordering::Relaxed) % 100_000 + 1;
        let response = self
            .client
            .put(format!("{}/v1/products/{id}", self.url))
            .bearer_auth(ADMIN)
            .json(&json!({ "sku": sku, "name": format!("bench product {}", i % self.products.len()), "price_minor": price }))
            .send()
            .await
            .expect("price change");
        assert_eq!(response.status().as_u16(), 201, "price change refused");
    }

    async fn head(&self) -> u64 {
        hub_head(&self.client, &self.url).await
    }

    /// Waits until the hub has let go of every push stream.
    async fn streams_closed(&self) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        while metric_value(
            &metrics_text(&self.client, &self.url).await,
            "shelfsync_hub_sse_connections",
        ) > 0.0
        {
            assert!(Instant::now() < deadline, "the hub kept closed streams open");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.tokens_file);
    }
}

/// Runs `make(i)` for every `i < n`, 32 at a time, and returns the answers in order.
async fn parallel<T: Send + 'static, F: std::future::Future<Output = T> + Send + 'static>(
    n: usize,
    make: impl Fn(usize) -> F,
) -> Vec<T> {
    let slots = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let slot = slots.clone().acquire_owned().await.expect("semaphore");
        let work = make(i);
        tasks.push(tokio::spawn(async move {
            let out = work.await;
            drop(slot);
            out
        }));
    }
    let mut out = Vec::with_capacity(n);
    for task in tasks {
        out.push(task.await.expect("task"));
    }
    out
}

/// The receivers' child process and what it reports.
struct Receivers {
    child: Child,
    stdin: Option<ChildStdin>,
    caught_up: Arc<AtomicU64>,
    events: Arc<AtomicU64>,
    ended: Arc<AtomicU64>,
    answers: mpsc::Receiver<String>,
}

impl Receivers {
    fn start(fleet: &Fleet, streams: usize, head: u64, latency: bool) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("this binary"))
            .env("CATALOG_PUSH_RECEIVER", "1")
            .env("RECEIVER_ADDRESS", fleet.url.trim_start_matches("http://"))
            .env("RECEIVER_TOKENS", &fleet.tokens_file)
            .env("RECEIVER_STREAMS", streams.to_string())
            .env("RECEIVER_HEAD", head.to_string())
            .env("RECEIVER_LATENCY", if latency { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the receivers");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("receiver stdout");
        let (caught_up, events, ended) = (Arc::default(), Arc::default(), Arc::default());
        let (answer, answers) = mpsc::channel();
        let counters: [Arc<AtomicU64>; 3] = [Arc::clone(&caught_up), Arc::clone(&events), Arc::clone(&ended)];
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(counts) = line.strip_prefix("c ") {
                    for (counter, value) in counters.iter().zip(counts.split(' ')) {
                        counter.store(value.parse().unwrap_or(0), Ordering::Release);
                    }
                } else if answer.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            caught_up,
            events,
            ended,
            answers,
        }
    }

    /// Waits (bounded) until `done` holds; panics if a stream ended.
    async fn wait(&self, what: &str, rss: &mut f64, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut sampled = Instant::now();
        while !done(self) {
            assert_eq!(
                self.ended.load(Ordering::Acquire),
                0,
                "a stream ended while waiting for {what}"
            );
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            if sampled.elapsed() > Duration::from_millis(100) {
                *rss = rss.max(rss_mb());
                sampled = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        *rss = rss.max(rss_mb());
    }

    /// Asks the child for a figure (`what`), returns its answer line.
    fn ask(&mut self, what: &str) -> String {
        let stdin = self.stdin.as_mut().expect("receiver stdin");
        writeln!(stdin, "{what}").expect("ask the receivers");
        stdin.flush().expect("flush");
        self.answers
            .recv_timeout(Duration::from_secs(60))
            .expect("receivers' answer")
    }

    /// Stops the child; returns its CPU seconds.
    fn stop(mut self) -> f64 {
        let cpu = self.ask("cpu").parse().expect("cpu seconds");
        drop(self.stdin.take());
        let _ = self.child.wait();
        cpu
    }
}

/// This process's resident set, MB.
fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds of the hub's threads (runtime workers and blocking pool, writer).
fn hub_cpu() -> f64 {
    let cpu = thread_cpu(&["hub", "event-store"]);
    cpu[0] + cpu[1]
}

#[derive(Debug)]
#[allow(dead_code)] // Printed with {:?}.
struct Push {
    seconds: f64,
    probe_p99_ms: f64,
    probes: usize,
    put_p99_ms: f64,
    hub_ms_per_change: f64,
    receivers_cpu_s: f64,
    rss_mb: f64,
}

/// One catalog push to `n` streams.
async fn catalog(fleet: &Fleet, n: usize) -> Push {
    let products = fleet.products.len();
    let receivers = Receivers::start(fleet, n, fleet.head().await, false);
    let mut rss = 0.0;
    receivers
        .wait("every stream to catch up", &mut rss, |r| {
            r.caught_up.load(Ordering::Acquire) >= n as u64
        })
        .await;
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let (client, url, stop) = (fleet.client.clone(), fleet.url.clone(), stop.clone());
        let product = fleet.products[0].0;
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut tick = tokio::time::interval(PROBE_EVERY);
            while !stop.load(Ordering::Acquire) {
                tick.tick().await;
                let sent = Instant::now();
                let response = client
                    .get(format!("{url}/v1/products/{product}"))
                    .bearer_auth(ADMIN)
                    .send()
                    .await
                    .expect("probe");
                assert_eq!(response.status().as_u16(), 200);
                let _ = response.bytes().await;
                latencies.push(sent.elapsed().as_secs_f64() * 1e3);
            }
            latencies
        })
    };
    let cpu_before = hub_cpu();
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let puts = Arc::new(Mutex::new(Vec::with_capacity(products)));
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (next, puts) = (next.clone(), puts.clone());
            async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= products {
                        return;
                    }
                    let sent = Instant::now();
                    fleet.change_price(i).await;
                    puts.lock().expect("puts").push(sent.elapsed().as_secs_f64() * 1e3);
                }
            }
        })
        .collect();
    futures_util::future::join_all(writers).await;
    let target = (n * products) as u64;
    receivers
        .wait("every stream to have every change", &mut rss, |r| {
            r.events.load(Ordering::Acquire) >= target
        })
        .await;
    let seconds = started.elapsed().as_secs_f64();
    let hub_ms_per_change = (hub_cpu() - cpu_before) * 1e3 / products as f64;
    stop.store(true, Ordering::Release);
    let mut latencies = probe.await.expect("probe task");
    latencies.sort_by(f64::total_cmp);
    let mut puts = std::mem::take(&mut *puts.lock().expect("puts"));
    puts.sort_by(f64::total_cmp);
    let receivers_cpu_s = receivers.stop();
    fleet.streams_closed().await;
    Push {
        seconds,
        probe_p99_ms: quantile(&latencies, 0.99),
        probes: latencies.len(),
        put_p99_ms: quantile(&puts, 0.99),
        hub_ms_per_change,
        receivers_cpu_s,
        rss_mb: rss,
    }
}

#[derive(Debug)]
#[allow(dead_code)] // Printed with {:?}.
struct Steady {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    deliveries: u64,
    receivers_cpu_s: f64,
    rss_mb: f64,
}

/// Steady fan-out to `n` streams: store events at `steady_rate` per second over the
/// streams' stores, plus one price change per second.
async fn steady_fanout(fleet: &Fleet, n: usize, settings: &Settings) -> Steady {
    let mut receivers = Receivers::start(fleet, n, fleet.head().await, true);
    let mut rss = 0.0;
    receivers
        .wait("every stream to catch up", &mut rss, |r| {
            r.caught_up.load(Ordering::Acquire) >= n as u64
        })
        .await;
    let _ = receivers.ask("reset");
    let base = receivers.events.load(Ordering::Acquire);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let started = Instant::now();
    let slots = Arc::new(tokio::sync::Semaphore::new(64));
    let mut sent = 0usize;
    let mut changes = 0usize;
    let until = Instant::now() + Duration::from_secs(settings.steady_secs);
    let mut next_change = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < until {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * settings.steady_rate as f64) as usize;
        while sent < due {
            let slot = slots.clone().acquire_owned().await.expect("semaphore");
            let store = fleet.stores[sent % n];
            let product = fleet.products[sent % fleet.products.len()].0;
            let request = fleet
                .client
                .post(format!("{}/v1/inventory/stock", fleet.url))
                .bearer_auth(ADMIN)
                .json(&json!({ "product_id": product, "store_id": store, "quantity": 1 }));
            tasks.spawn(async move {
                let response = request.send().await.expect("add stock");
                assert_eq!(response.status().as_u16(), 201, "add stock refused");
                drop(slot);
            });
            sent += 1;
        }
        if Instant::now() >= next_change {
            fleet.change_price(changes).await;
            changes += 1;
            next_change += Duration::from_secs(1);
        }
    }
    while tasks.join_next().await.is_some() {}
    let target = base + (sent + changes * n) as u64;
    receivers
        .wait("every steady delivery", &mut rss, |r| {
            r.events.load(Ordering::Acquire) >= target
        })
        .await;
    let answer = receivers.ask("latency");
    let figures: Vec<f64> = answer.split(' ').filter_map(|v| v.parse().ok()).collect();
    let receivers_cpu_s = receivers.stop();
    fleet.streams_closed().await;
    Steady {
        deliveries: figures.first().copied().unwrap_or(0.0) as u64,
        p50_ms: figures.get(1).copied().unwrap_or(f64::NAN),
        p99_ms: figures.get(2).copied().unwrap_or(f64::NAN),
        max_ms: figures.get(3).copied().unwrap_or(f64::NAN),
        receivers_cpu_s,
        rss_mb: rss,
    }
}
