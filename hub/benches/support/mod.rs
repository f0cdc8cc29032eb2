//! What the hub's bench binaries share: the measurement helpers of
//! `shelfsync_common::testing::measure`, and a [`TestHub`] started in-process on its own
//! runtime (threads named `hub`, like the binary's one worker per core) with a fresh data
//! dir under `BENCH_DIR` and the demo data.

#![allow(dead_code)]

pub mod fanout;
pub mod till;

pub use shelfsync_common::testing::measure::*;
use shelfsync_hub::config::HubConfig;
use shelfsync_hub::testing::{metric_value, metrics_text, TestHub};

/// The hub's event-log DDL, for the raw SQLite baselines.
pub const EVENTS_DDL: &str = include_str!("../../migrations/0001_event_store.sql");

/// A fresh SQLite file for a raw baseline with the hub's pragmas (WAL, synchronous=FULL,
/// foreign keys) and the hub's event-log DDL.
pub fn open_baseline(path: &std::path::Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
    conn.pragma_update(None, "synchronous", "FULL").expect("sync");
    conn.pragma_update(None, "foreign_keys", "ON").expect("fk");
    conn.execute_batch(EVENTS_DDL).expect("ddl");
    conn
}

/// A real hub on 127.0.0.1:0 on its own runtime.
pub struct BenchHub {
    pub url: String,
    pub hub: TestHub,
    pub runtime: tokio::runtime::Runtime,
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
        Self::start_full(nodelay, true, configure)
    }

    /// As [`BenchHub::start`], with the demo data only when `demo` (the second and later
    /// hubs on one database find it there).
    pub fn start_full(nodelay: bool, demo: bool, configure: impl FnOnce(&mut HubConfig)) -> Self {
        let dir = tempfile::tempdir_in(bench_dir()).expect("temp dir");
        let runtime = runtime("hub");
        let data_dir = dir.path().to_owned();
        let hub = runtime.block_on(async move {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            if nodelay {
                socket.set_nodelay(true).expect("TCP_NODELAY");
            }
            socket.bind("127.0.0.1:0".parse().expect("address")).expect("bind");
            let listener = socket.listen(1024).expect("listen");
            let hub = TestHub::spawn_on(listener, data_dir, demo, configure).await;
            hub.wait_ready().await;
            hub
        });
        Self {
            url: hub.url.clone(),
            hub,
            runtime,
            _dir: dir,
        }
    }

    /// The demo store token of demo store `n` (written by the seed into the data dir).
    pub fn demo_store_token(&self, n: usize) -> String {
        self.hub.demo_store_token(n)
    }

    /// Stops the hub gracefully and waits for it.
    pub fn stop(self) {
        let Self { hub, runtime, .. } = self;
        runtime.block_on(hub.stop());
    }
}

/// (sum, count) of a Prometheus histogram or summary in the hub's `/metrics`.
pub async fn metric_sum_count(client: &reqwest::Client, url: &str, name: &str) -> (f64, f64) {
    let text = metrics_text(client, url).await;
    let value = |suffix: &str| metric_value(&text, &format!("{name}_{suffix}"));
    (value("sum"), value("count"))
}

/// The hub's head position, from `/readyz`.
pub async fn hub_head(client: &reqwest::Client, url: &str) -> u64 {
    let ready: serde_json::Value = client
        .get(format!("{url}/readyz"))
        .send()
        .await
        .expect("readyz")
        .json()
        .await
        .expect("readyz body");
    ready["head"].as_u64().expect("head")
}

/// Tokens of `stores` stores to upload as: the demo stores' (from the data dir), then
/// stores enrolled through `/v1/admin/stores`.
pub async fn store_agents(
    hub: &BenchHub,
    client: &reqwest::Client,
    stores: usize,
) -> Vec<(shelfsync_common::StoreId, String)> {
    let mut agents: Vec<_> = (0..stores.min(3))
        .map(|n| (shelfsync_hub::seed::stores()[n].id, hub.demo_store_token(n)))
        .collect();
    for n in agents.len()..stores {
        let response = client
            .post(format!("{}/v1/admin/stores", hub.url))
            .bearer_auth(shelfsync_hub::testing::ADMIN)
            .json(&serde_json::json!({ "name": format!("bench store {n}") }))
            .send()
            .await
            .expect("enroll");
        assert_eq!(response.status().as_u16(), 201);
        let enrolled: shelfsync_common::wire::sync::EnrolledStore = response.json().await.expect("enrolled");
        agents.push((enrolled.store.id, enrolled.token.expose().to_owned()));
    }
    agents
}
