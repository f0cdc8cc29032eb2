//! What the edge agent's bench binaries share: env knobs, statistics, per-thread CPU
//! accounting, and a real agent started in-process on 127.0.0.1:0, bootstrapped from a
//! synthetic snapshot, its hub URL pointing at a closed port (the POS API needs no hub).

#![allow(dead_code)]

use shelfsync_common::sync::SnapshotResponse;
use shelfsync_common::wire::{ProductView, StockLevel};
use shelfsync_common::{Product, ProductId, StoreId};
use shelfsync_edge::config::EdgeConfig;
use shelfsync_edge::store::LocalStore;
use std::path::PathBuf;
use std::time::Duration;

/// The tills' key of every bench agent.
pub const TERMINAL: &str = "bench-terminal-key-0123456789";
/// The manager's key of every bench agent.
pub const MANAGER: &str = "bench-manager-key-0123456789";
/// A hub URL nothing listens on (the discard port).
pub const CLOSED_HUB: &str = "http://127.0.0.1:9";

/// A numeric knob from the environment, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, got {v:?}")),
        Err(_) => default,
    }
}

/// Where temp files go: `BENCH_DIR`, else the system temp dir.
pub fn bench_dir() -> PathBuf {
    std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

/// (median, min, max); NaN for no values.
pub fn stats(values: &[f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

/// The `q` quantile (0..=1, nearest rank) of sorted values.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Load average (1 min), to print next to each run.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split(' ').next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// CPU seconds used so far by this process's live threads, summed by thread name
/// prefix: one entry per prefix in `roles`, then everything. From `/proc/self/task/*/stat`.
pub fn thread_cpu(roles: &[&str]) -> Vec<f64> {
    let mut cpu = vec![0.0; roles.len() + 1];
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return cpu;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        // utime and stime are fields 14 and 15 of stat(5), in USER_HZ (100) ticks.
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let seconds = (ticks(11) + ticks(12)) / 100.0;
        if let Some(role) = roles.iter().position(|r| comm.starts_with(r)) {
            cpu[role] += seconds;
        }
        cpu[roles.len()] += seconds;
    }
    cpu
}

/// CPU time of the calling thread so far (from `/proc/thread-self/schedstat`, ns).
pub fn this_thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split(' ').next()?.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// A multi-threaded runtime with one worker per core, its threads named `name`.
pub fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores())
        .thread_name(name)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A running agent (its own runtime, threads named `agent`).
pub struct BenchAgent {
    pub url: String,
    pub store_id: StoreId,
    pub products: Vec<ProductId>,
    pub runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl BenchAgent {
    /// An agent on a fresh data dir, bootstrapped from a snapshot with `products`
    /// products, each with `on_hand` units at this store.
    pub fn start(products: usize, on_hand: i64) -> Self {
        let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
        let data_dir = dir.path().to_owned();
        let runtime = runtime("agent");
        let store_id = StoreId::new_v7();
        let catalog: Vec<Product> = (0..products)
            .map(|i| Product {
                id: ProductId::new_v7(),
                sku: format!("SKU-{i:05}"),
                name: format!("Bench product {i}"),
                price_minor: 100 + i as u64,
            })
            .collect();
        let ids: Vec<ProductId> = catalog.iter().map(|p| p.id).collect();
        runtime.block_on(async {
            let store = LocalStore::open(&data_dir.join(shelfsync_edge::STORE_FILE), store_id).expect("open");
            let snapshot = SnapshotResponse {
                store_id,
                position: 1_000,
                stock: ids
                    .iter()
                    .map(|id| StockLevel {
                        product_id: *id,
                        store_id,
                        on_hand,
                        reserved: 0,
                        available: on_hand,
                        version: 1,
                        position: 500,
                    })
                    .collect(),
                reservations: Vec::new(),
                catalog: catalog
                    .into_iter()
                    .map(|product| ProductView { product, version: 1 })
                    .collect(),
            };
            store.bootstrap(snapshot).await.expect("bootstrap");
            store.close().await;
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let address = listener.local_addr().expect("addr");
        let config = EdgeConfig {
            store_id: Some(store_id),
            hub_url: Some(CLOSED_HUB.into()),
            hub_token: Some("bench-hub-token".into()),
            listen: address,
            data_dir,
            terminal_key: Some(TERMINAL.into()),
            manager_key: Some(MANAGER.into()),
            ..EdgeConfig::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(async move {
            shelfsync_edge::run(config, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("agent run");
        });
        let url = format!("http://{address}");
        let agent = Self {
            url: url.clone(),
            store_id,
            products: ids,
            runtime,
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        };
        agent.runtime.block_on(async move {
            let client = reqwest::Client::new();
            for _ in 0..600 {
                if let Ok(r) = client.get(format!("{url}/readyz")).send().await {
                    if r.status().is_success() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the agent did not become ready");
        });
        agent
    }

    /// Stops the agent gracefully and waits for it.
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = self.runtime.block_on(server);
        }
    }
}

impl Drop for BenchAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
