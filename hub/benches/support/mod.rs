//! What the hub's newer bench binaries share (`append_http` and `ingest_schema` predate
//! it and keep their own copies): env knobs, statistics, per-thread CPU accounting, and a
//! real hub started in-process on a 127.0.0.1:0 listener with its own runtime.

#![allow(dead_code)]

use shelfsync_hub::config::HubConfig;
use std::path::PathBuf;
use std::time::Duration;

/// The admin token of every bench hub.
pub const ADMIN: &str = "bench-admin-token-0123456789";

mod measure;
pub use measure::*;

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
