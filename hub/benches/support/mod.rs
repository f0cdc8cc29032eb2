//! What the hub's newer bench binaries share (`append_http` and `ingest_schema` predate
//! it and keep their own copies): env knobs, statistics, per-thread CPU accounting, and a
//! real hub started in-process on a 127.0.0.1:0 listener with its own runtime.

#![allow(dead_code)]

use shelfsync_hub::config::HubConfig;
use std::path::PathBuf;
use std::time::Duration;

/// The admin token of every bench hub.
pub const ADMIN: &str = "bench-admin-token-0123456789";

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

/// A real hub on 127.0.0.1:0 with a fresh temp data dir and the demo data, on its own
/// runtime (threads named `hub`, like the binary's one worker per core).
pub struct BenchHub {
    pub url: String,
    pub data_dir: PathBuf,
    pub runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl BenchHub {
    pub fn start(configure: impl FnOnce(&mut HubConfig)) -> Self {
        Self::start_with(false, configure)
    }

    /// As [`BenchHub::start`]; `nodelay` sets `TCP_NODELAY` on the listening socket, which
    /// Linux copies to every accepted connection (a diagnostic: the hub itself does not
    /// set it).
    pub fn start_with(nodelay: bool, configure: impl FnOnce(&mut HubConfig)) -> Self {
        let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
        let runtime = runtime("hub");
        let listener = runtime
            .block_on(async {
                let socket = tokio::net::TcpSocket::new_v4()?;
                if nodelay {
                    socket.set_nodelay(true)?;
                }
                socket.bind("127.0.0.1:0".parse().expect("address"))?;
                socket.listen(1024)
            })
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let mut config = HubConfig {
            data_dir: dir.path().to_owned(),
            admin_token: Some(ADMIN.into()),
            ..HubConfig::default()
        };
        configure(&mut config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = shelfsync_hub::RunOptions {
            seed_demo_data: true,
            announce: false,
        };
        let server = runtime.spawn(async move {
            shelfsync_hub::run(config, listener, options, async {
                let _ = stopped.await;
            })
            .await
            .expect("hub run");
        });
        let hub = Self {
            url,
            data_dir: dir.path().to_owned(),
            runtime,
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        };
        // The listener is bound before run() starts serving; wait until it answers.
        let url = hub.url.clone();
        hub.runtime.block_on(async move {
            let client = reqwest::Client::new();
            for _ in 0..600 {
                if let Ok(r) = client.get(format!("{url}/readyz")).send().await {
                    if r.status().is_success() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("the hub did not become ready");
        });
        hub
    }

    /// The demo store token of demo store `n` (written by the seed into the data dir).
    pub fn demo_store_token(&self, n: usize) -> String {
        let store = shelfsync_hub::seed::stores()[n].id;
        std::fs::read_to_string(shelfsync_hub::seed::store_token_path(&self.data_dir, store))
            .expect("demo store token")
            .trim()
            .to_owned()
    }

    /// Stops the hub gracefully and waits for it.
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = self.runtime.block_on(server);
        }
    }
}

impl Drop for BenchHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// (sum, count) of a Prometheus histogram or summary in the hub's `/metrics`.
pub async fn metric_sum_count(client: &reqwest::Client, url: &str, name: &str) -> (f64, f64) {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let value = |metric: &str| {
        text.lines()
            .filter(|l| l.split([' ', '{']).next() == Some(metric))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    (value(&format!("{name}_sum")), value(&format!("{name}_count")))
}
