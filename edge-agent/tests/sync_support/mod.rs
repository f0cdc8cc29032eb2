//! Support of the sync tests: a real hub in-process (demo data, port 0, its own data dir)
//! and a TCP proxy the test controls (to cut and restore the link, or refuse the push
//! stream). The sync worker comes from the agent's test kit
//! ([`shelfsync_edge::testing::SyncWorker`]). Everything listens on 127.0.0.1.

#![allow(dead_code)]

use serde_json::{json, Value};
use shelfsync_common::wire::api::StockLevel;
use shelfsync_common::wire::sync::{SnapshotResponse, PROTOCOL_HEADER, PROTOCOL_VERSION};
use shelfsync_common::{ProductId, StoreId};
pub use shelfsync_edge::testing::{sync_test_config, SyncWorker};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// The admin token of every test hub.
pub const ADMIN: &str = "sync-test-admin-token-0123456789";
/// The bound of every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(30);

/// Polls `$check` (an expression that may `.await`) until it is true; panics after
/// [`WAIT`] with `$what` and the value of `$context`.
macro_rules! eventually {
    ($what:expr, $check:expr) => {
        eventually!($what, $check, "")
    };
    ($what:expr, $check:expr, $context:expr) => {{
        let deadline = tokio::time::Instant::now() + $crate::sync_support::WAIT;
        loop {
            if $check {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting until {}: {:?}", $what, $context);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }};
}

// ---------------------------------------------------------------------------------------
// The hub.

/// A hub running in-process.
pub struct Hub {
    pub url: String,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A hub on a fresh data dir with the demo data.
pub async fn start_hub() -> Hub {
    start_hub_with(|_| {}).await
}

/// A hub on a fresh data dir with the demo data, its settings changed by `configure`.
pub async fn start_hub_with(configure: impl FnOnce(&mut shelfsync_hub::config::HubConfig)) -> Hub {
    shelfsync_common::server::telemetry::init_test_logging();
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_owned();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut config = shelfsync_hub::config::HubConfig {
        data_dir: data_dir.clone(),
        admin_token: Some(ADMIN.into()),
        ..shelfsync_hub::config::HubConfig::default()
    };
    configure(&mut config);
    let (stop, stopped) = oneshot::channel::<()>();
    let options = shelfsync_hub::RunOptions {
        seed_demo_data: true,
        announce: false,
    };
    let task = tokio::spawn(async move {
        shelfsync_hub::run(config, listener, options, async {
            let _ = stopped.await;
        })
        .await
        .expect("hub run");
    });
    let hub = Hub {
        url: format!("http://{addr}"),
        addr,
        client: reqwest::Client::new(),
        data_dir,
        _dir: dir,
        stop: Some(stop),
        task: Some(task),
    };
    let ready = hub
        .client
        .get(format!("{}/healthz", hub.url))
        .send()
        .await
        .expect("healthz");
    assert!(ready.status().is_success());
    hub
}

/// Demo store `n`.
pub fn demo_store(n: usize) -> StoreId {
    shelfsync_hub::seed::stores()[n].id
}

/// Demo product `n`.
pub fn demo_product(n: usize) -> ProductId {
    shelfsync_hub::seed::products()[n].id
}

/// Every demo product.
pub fn demo_products() -> Vec<ProductId> {
    shelfsync_hub::seed::products().into_iter().map(|p| p.id).collect()
}

impl Hub {
    /// The token the demo wrote for `store`.
    pub fn token(&self, store: StoreId) -> String {
        let path = shelfsync_hub::seed::store_token_path(&self.data_dir, store);
        std::fs::read_to_string(&path)
            .expect("the demo store token")
            .trim()
            .to_owned()
    }

    /// The hub's head.
    pub async fn head(&self) -> u64 {
        let ready: Value = self
            .client
            .get(format!("{}/readyz", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ready["head"].as_u64().expect("head")
    }

    /// Stock of `product` at `store` in the hub's read model, once it has reached the head.
    pub async fn stock(&self, product: ProductId, store: StoreId) -> StockLevel {
        let head = self.head().await;
        let path = format!("/v1/inventory/products/{product}/stores/{store}?min_position={head}");
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.json().await.expect("StockLevel")
    }

    /// A delivery booked at the hub; returns its position.
    pub async fn add_stock(&self, product: ProductId, store: StoreId, quantity: u32) -> u64 {
        let body = json!({ "product_id": product, "store_id": store, "quantity": quantity });
        let response = self
            .client
            .post(format!("{}/v1/inventory/stock", self.url))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let written: Value = response.json().await.unwrap();
        written["position"].as_u64().expect("position")
    }

    /// Revokes `store` (its token stops working at once).
    pub async fn revoke(&self, store: StoreId) {
        let url = format!("{}/v1/admin/stores/{store}/revoke", self.url);
        let response = self.client.post(url).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(response.status(), 204);
    }

    /// The fleet view's entry of `store`.
    pub async fn fleet_entry(&self, store: StoreId) -> Value {
        let url = format!("{}/v1/admin/fleet", self.url);
        let fleet: Value = self
            .client
            .get(url)
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        fleet["stores"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == json!(store))
            .cloned()
            .expect("in the fleet")
    }

    /// `store`'s snapshot, fetched as its agent would.
    pub async fn snapshot(&self, store: StoreId) -> SnapshotResponse {
        let response = self
            .client
            .get(format!("{}/v1/sync/snapshot", self.url))
            .bearer_auth(self.token(store))
            .header(PROTOCOL_HEADER, PROTOCOL_VERSION)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.expect("SnapshotResponse")
    }

    /// Stops the hub and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task)
                .await
                .expect("the hub stops")
                .expect("hub task");
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// ---------------------------------------------------------------------------------------
// A TCP proxy between the agent and the hub.

/// Forwards 127.0.0.1 connections to a target, until told otherwise.
pub struct Proxy {
    pub url: String,
    addr: SocketAddr,
    target: SocketAddr,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

struct ProxyState {
    up: AtomicBool,
    block_streams: AtomicBool,
    requests: AtomicUsize,
    /// Bumped to end every open connection.
    cuts: watch::Sender<u64>,
}

impl Proxy {
    /// Listens first, then forwards each connection to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let state = Arc::new(ProxyState {
            up: AtomicBool::new(true),
            block_streams: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
            cuts: watch::Sender::new(0),
        });
        let task = tokio::spawn(serve(listener, target, state.clone()));
        Self {
            url,
            addr,
            target,
            state,
            task,
        }
    }

    /// Stops listening, as a stopped hub does: connections are refused, open ones end.
    pub async fn stop_listening(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await; // the listener is closed once the task is gone
        self.state.cuts.send_modify(|n| *n += 1);
    }

    /// Listens again on the same address, as a restarted hub does.
    pub async fn listen_again(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("bind the proxy again");
        self.task = tokio::spawn(serve(listener, self.target, self.state.clone()));
    }

    /// Cuts the link: open connections end, new ones are closed at once.
    pub fn cut(&self) {
        self.state.up.store(false, Ordering::SeqCst);
        self.state.cuts.send_modify(|n| *n += 1);
    }

    /// Restores the link.
    pub fn restore(&self) {
        self.state.up.store(true, Ordering::SeqCst);
    }

    /// Refuses (closes) connections that ask for the push stream, and ends the open ones.
    pub fn block_streams(&self, block: bool) {
        self.state.block_streams.store(block, Ordering::SeqCst);
        if block {
            self.state.cuts.send_modify(|n| *n += 1);
        }
    }

    /// HTTP requests forwarded so far (request lines seen).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.state.cuts.send_modify(|n| *n += 1);
    }
}

async fn serve(listener: TcpListener, target: SocketAddr, state: Arc<ProxyState>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if !state.up.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        tokio::spawn(forward(client, target, state.clone()));
    }
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).filter(|w| *w == needle).count()
}

async fn forward(client: TcpStream, target: SocketAddr, state: Arc<ProxyState>) {
    let mut cuts = state.cuts.subscribe();
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = client_read.read(&mut buffer).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            let chunk = &buffer[..n];
            state
                .requests
                .fetch_add(count(chunk, b" HTTP/1.1\r\n"), Ordering::SeqCst);
            if state.block_streams.load(Ordering::SeqCst) && count(chunk, b"GET /v1/sync/stream") > 0 {
                return Ok(());
            }
            server_write.write_all(chunk).await?;
        }
    };
    let downstream = tokio::io::copy(&mut server_read, &mut client_write);
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        _ = cuts.changed() => {}
    }
}
