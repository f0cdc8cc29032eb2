//! Local stock reads: requests/s and latency of `GET /v1/inventory/products/{id}` (terminal
//! key) at `CONNECTIONS` (64) concurrent connections on an in-process edge agent, against
//! `GET /healthz` (no key, no store work: a fixed JSON body) on the same agent, same
//! client, same run.
//!
//! The agent: a real one (its own runtime, one worker per core, like the binary) on
//! 127.0.0.1:0, bootstrapped from a synthetic snapshot of `PRODUCTS` products with stock at
//! this store, its hub URL pointing at a closed port (no hub; the reads never need one).
//! `PENDING` > 0 first records that many unconfirmed deliveries (`POST
//! /v1/inventory/stock`) on each product, to show what a read costs when the store has
//! not heard back from the hub for a while.
//!
//! Load: `CONNECTIONS` tokio tasks on a second runtime share one keep-alive reqwest client
//! (one request in flight per task, so one connection each) and issue `REQUESTS` GETs per
//! side and run (round-robin over the products), after `WARMUP` untimed ones. Every answer
//! must be 200. The two sides alternate which goes first. Reported per side: requests/s,
//! and p50/p99/max latency (send to whole body received) over all requests of the run;
//! median over `RUNS` runs with min-max; and the ratio stock/healthz.
//!
//! ```sh
//! cargo bench -p shelfsync-edge --bench local_reads
//! RUNS=5 CONNECTIONS=64 REQUESTS=100000 WARMUP=2000 PRODUCTS=100 PENDING=0 cargo bench -p shelfsync-edge --bench local_reads
//! ```
//!
//! `SHELFSYNC_BENCH_QUICK=1` runs tiny sizes once (`tests/scripts/bench.sh --quick`).

mod support;

use shelfsync_common::testing::scenario::{knob, Goal, Scenario};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{cores, cpu_model, load_average, quantile, stats, thread_cpu, BenchAgent, TERMINAL};

const ROLES: [&str; 3] = ["agent", "local-store-wri", "client"];

struct Settings {
    runs: usize,
    connections: usize,
    requests: usize,
    warmup: usize,
    products: usize,
    pending: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Stock,
    Healthz,
}

struct Measured {
    rate: f64,
    /// Latency, µs: p50, p99, max.
    latency: [f64; 3],
    /// CPU µs per request: agent runtime, client runtime.
    cpu_us: [f64; 2],
}

fn main() {
    let settings = Settings {
        runs: knob("RUNS", 5, 1).max(1),
        connections: knob("CONNECTIONS", 64, 4).max(1),
        requests: knob("REQUESTS", 100_000, 200).max(1),
        warmup: knob("WARMUP", 2_000, 10),
        products: knob("PRODUCTS", 100, 10).max(1),
        pending: knob("PENDING", 0, 0),
    };
    println!(
        "local_reads: {} runs; {} connections x {} GETs per side and run (after {} warm-up); {} products, {} pending events each",
        settings.runs, settings.connections, settings.requests, settings.warmup, settings.products, settings.pending
    );
    println!("machine: {} cores, {}", cores(), cpu_model());

    let agent = BenchAgent::start(settings.products, 1_000_000);
    let client_rt = support::runtime("client");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(settings.connections * 2)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let stock_urls: Arc<Vec<String>> = Arc::new(
        agent
            .products
            .iter()
            .map(|p| format!("{}/v1/inventory/products/{p}", agent.url))
            .collect(),
    );
    let healthz_url: Arc<Vec<String>> = Arc::new(vec![format!("{}/healthz", agent.url)]);

    if settings.pending > 0 {
        let started = Instant::now();
        client_rt.block_on(record_pending(&client, &agent, settings.pending));
        println!(
            "recorded {} pending deliveries in {:.1} s",
            settings.pending * settings.products,
            started.elapsed().as_secs_f64()
        );
    }

    let mut stock = Vec::new();
    let mut health = Vec::new();
    for run in 0..settings.runs {
        let order = if run % 2 == 0 {
            [Side::Stock, Side::Healthz]
        } else {
            [Side::Healthz, Side::Stock]
        };
        for side in order {
            let urls = if side == Side::Stock { &stock_urls } else { &healthz_url };
            let auth = side == Side::Stock;
            client_rt.block_on(blast(&client, urls, auth, settings.connections, settings.warmup));
            let cpu_before = thread_cpu(&ROLES);
            let started = Instant::now();
            let mut latencies = client_rt.block_on(blast(&client, urls, auth, settings.connections, settings.requests));
            let elapsed = started.elapsed();
            let cpu_after = thread_cpu(&ROLES);
            latencies.sort_by(f64::total_cmp);
            let per_request = |i: usize| (cpu_after[i] - cpu_before[i]) * 1e6 / settings.requests as f64;
            let measured = Measured {
                rate: settings.requests as f64 / elapsed.as_secs_f64(),
                latency: [
                    quantile(&latencies, 0.5),
                    quantile(&latencies, 0.99),
                    latencies[latencies.len() - 1],
                ],
                cpu_us: [per_request(0), per_request(2)],
            };
            println!(
                "run {} {:>7}: {:>7.0} req/s | latency p50 {:>6.0} us, p99 {:>6.0} us, max {:>6.0} us | CPU/request: agent {:>5.1} us, client {:>5.1} us | load {}",
                run + 1,
                if side == Side::Stock { "stock" } else { "healthz" },
                measured.rate,
                measured.latency[0],
                measured.latency[1],
                measured.latency[2],
                measured.cpu_us[0],
                measured.cpu_us[1],
                load_average(),
            );
            if side == Side::Stock {
                stock.push(measured);
            } else {
                health.push(measured);
            }
        }
    }
    drop(client);
    client_rt.shutdown_timeout(Duration::from_secs(5));
    agent.stop();

    let col = |side: &[Measured], f: &dyn Fn(&Measured) -> f64| stats(&side.iter().map(f).collect::<Vec<_>>());
    let cell = |(m, lo, hi): (f64, f64, f64)| format!("{m:.0} ({lo:.0}-{hi:.0})");
    println!();
    println!("| route | requests/s median (min-max) | p50 µs | p99 µs | max µs | agent CPU µs/request | client CPU µs/request |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, side) in [
        ("GET /v1/inventory/products/{id} (terminal key)", &stock),
        ("GET /healthz", &health),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} | {:.1} | {:.1} |",
            cell(col(side, &|x| x.rate)),
            cell(col(side, &|x| x.latency[0])),
            cell(col(side, &|x| x.latency[1])),
            cell(col(side, &|x| x.latency[2])),
            col(side, &|x| x.cpu_us[0]).0,
            col(side, &|x| x.cpu_us[1]).0,
        );
    }
    let ratios: Vec<f64> = stock.iter().zip(&health).map(|(s, h)| s.rate / h.rate).collect();
    let (rm, rmin, rmax) = stats(&ratios);
    println!();
    println!(
        "ratio stock/healthz requests/s: {:.2} (of medians); per-run median {rm:.2}, min {rmin:.2}, max {rmax:.2}; p99 stock/healthz {:.2}",
        col(&stock, &|x| x.rate).0 / col(&health, &|x| x.rate).0,
        col(&stock, &|x| x.latency[1]).0 / col(&health, &|x| x.latency[1]).0,
    );
    let mut rate =
        Scenario::new("local_reads", "requests/s", Goal::RatioAtLeast(0.8)).baseline("GET /healthz, same process");
    let mut p99 = Scenario::new("local_reads_p99", "µs", Goal::AtMost(2_000.0)).baseline("GET /healthz p99");
    for (stock, health) in stock.iter().zip(&health) {
        rate.record_pair(stock.rate, health.rate);
        p99.record_pair(stock.latency[1], health.latency[1]);
    }
    rate.report();
    p99.report();
}

/// `total` GETs from `connections` tasks; returns each request's latency in µs.
async fn blast(
    client: &reqwest::Client,
    urls: &Arc<Vec<String>>,
    auth: bool,
    connections: usize,
    total: usize,
) -> Vec<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, next, urls) = (client.clone(), next.clone(), urls.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(total / connections + 1);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return latencies;
                    }
                    let mut request = client.get(&urls[i % urls.len()]);
                    if auth {
                        request = request.bearer_auth(TERMINAL);
                    }
                    let started = Instant::now();
                    let response = request.send().await.expect("request");
                    let status = response.status().as_u16();
                    let body = response.bytes().await.expect("body");
                    latencies.push(started.elapsed().as_secs_f64() * 1e6);
                    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
                }
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total);
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    all
}

/// Records `per_product` unconfirmed deliveries on every product (64 at a time).
async fn record_pending(client: &reqwest::Client, agent: &BenchAgent, per_product: usize) {
    let bodies: Arc<Vec<String>> = Arc::new(
        agent
            .products
            .iter()
            .map(|p| serde_json::json!({ "product_id": p, "store_id": agent.store_id, "quantity": 1 }).to_string())
            .collect(),
    );
    let total = per_product * bodies.len();
    let next = Arc::new(AtomicUsize::new(0));
    let endpoint: Arc<str> = format!("{}/v1/inventory/stock", agent.url).into();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (client, next, bodies, endpoint) = (client.clone(), next.clone(), bodies.clone(), endpoint.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    let response = client
                        .post(&*endpoint)
                        .bearer_auth(TERMINAL)
                        .header("content-type", "application/json")
                        .body(bodies[i % bodies.len()].clone())
                        .send()
                        .await
                        .expect("delivery");
                    let status = response.status().as_u16();
                    let body = response.bytes().await.expect("body");
                    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("delivery task");
    }
}
