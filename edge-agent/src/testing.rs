//! Starting the agent in-process, for the agent's tests and benches (feature `testing`):
//! the one way to do it, so that they all start what the binary starts.
//!
//! - [`TestAgent`]: the whole agent (POS API, sync worker, jobs) on a 127.0.0.1 port-0
//!   listener and its own data dir, bootstrapped from a synthetic hub snapshot (catalog
//!   and stock), its hub URL pointing at a closed port unless told otherwise, so a test
//!   also shows that the POS API needs no hub. It stops (gracefully) when dropped.
//! - [`SyncWorker`]: the sync worker alone on a local store the test holds, for tests that
//!   look into the store while it syncs with a real hub.
//!
//! Nothing here is built into the binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::config::{EdgeConfig, HubCredentials};
use crate::store::{LocalCommand, LocalError, LocalStore, Target};
use crate::sync::{LinkState, LinkStatus, SyncHandle};
use serde_json::{json, Value};
use shelfsync_common::wire::api::{ProductView, StockLevel};
use shelfsync_common::wire::edge::OutboxStatus;
use shelfsync_common::wire::sync::{SnapshotResponse, UploadOutcome, UploadResult};
use shelfsync_common::{
    EventId, EventMetadata, InventoryCommand, Origin, Product, ProductId, ReservationId, StockQuantity, StoreId,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// The tills' key of every test agent (unless keys are generated).
pub const TERMINAL: &str = "test-terminal-key-0123456789";
/// The manager's key of every test agent (unless keys are generated).
pub const MANAGER: &str = "test-manager-key-0123456789";
/// A hub URL nothing listens on (the discard port).
pub const CLOSED_HUB: &str = "http://127.0.0.1:9";
/// The hub position of the synthetic snapshot.
pub const SNAPSHOT_AT: u64 = 40;
/// How long a sync worker may take to stop.
pub const STOP_WITHIN: Duration = Duration::from_secs(5);

/// The catalog of the synthetic snapshot.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// SKU `APL-1`, 10 on hand.
    pub apple: ProductId,
    /// SKU `BRD-1`, 2 on hand.
    pub bread: ProductId,
    /// SKU `CHS-1`, in the catalog, no stock row at this store.
    pub cheese: ProductId,
    /// SKUs `SKU-00000`... ([`Options::bulk`]), each with its stock.
    pub bulk: Vec<ProductId>,
}

/// Products a bench wants in the snapshot besides the three of the [`Catalog`].
#[derive(Debug, Clone, Copy)]
pub struct Bulk {
    /// How many.
    pub products: usize,
    /// Units on hand of each.
    pub on_hand: i64,
}

/// How to start an agent.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Leave the keys unset so the agent generates them into its data dir.
    pub generated_keys: bool,
    /// Events to record and have "the hub" reject before the agent starts.
    pub quarantined: usize,
    /// Skip the snapshot (an agent that never reached its hub).
    pub not_bootstrapped: bool,
    /// More products in the snapshot (benches).
    pub bulk: Option<Bulk>,
    /// Where to make the data dir (default: the system's temporary directory).
    pub data_parent: Option<PathBuf>,
}

/// A running agent.
pub struct TestAgent {
    /// `http://127.0.0.1:port`.
    pub url: String,
    /// A client for the agent's API.
    pub client: reqwest::Client,
    /// This store.
    pub store_id: StoreId,
    /// The agent's data dir (removed when this drops).
    pub data_dir: PathBuf,
    /// The products of the snapshot.
    pub catalog: Catalog,
    /// Events quarantined before start, oldest first.
    pub quarantined: Vec<EventId>,
    dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn product(sku: String, price_minor: u64) -> Product {
    Product {
        id: ProductId::new_v7(),
        name: format!("Product {sku}"),
        sku,
        price_minor,
    }
}

fn stock(product: ProductId, store: StoreId, on_hand: i64, version: u64) -> StockLevel {
    StockLevel {
        product_id: product,
        store_id: store,
        on_hand,
        reserved: 0,
        available: on_hand,
        version,
        position: 7,
        allocation: None,
    }
}

/// The metadata of a command this store's till `actor` makes now.
fn till(store_id: StoreId, actor: &str) -> EventMetadata {
    EventMetadata {
        origin: Origin::Store(store_id),
        actor: actor.into(),
        correlation_id: uuid::Uuid::now_v7(),
        causation_id: None,
        occurred_at: time::OffsetDateTime::now_utc(),
        recorded_at: None,
    }
}

impl TestAgent {
    /// An agent with the standard snapshot and configured keys.
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    /// An agent started as `options` say.
    pub async fn spawn_with(options: Options) -> Self {
        shelfsync_common::server::telemetry::init_test_logging();
        let dir = match &options.data_parent {
            Some(parent) => tempfile::tempdir_in(parent),
            None => tempfile::tempdir(),
        }
        .expect("temp dir");
        let data_dir = dir.path().to_owned();
        let store_id = StoreId::new_v7();
        let (quarantined, catalog) = prepare(&data_dir, store_id, &options).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let (terminal_key, manager_key) = if options.generated_keys {
            (None, None)
        } else {
            (Some(TERMINAL.into()), Some(MANAGER.into()))
        };
        let config = EdgeConfig {
            store_id: Some(store_id),
            hub_url: Some(CLOSED_HUB.into()),
            hub_token: Some("test-hub-token".into()),
            // Tests reach their hub over plain HTTP on 127.0.0.1.
            allow_insecure_hub: true,
            listen: address,
            data_dir: data_dir.clone(),
            terminal_key,
            manager_key,
            ..EdgeConfig::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            crate::run(config, listener, async {
                let _ = stopped.await;
            })
            .await
            .expect("agent run");
        });
        let agent = Self {
            url: format!("http://{address}"),
            client: reqwest::Client::new(),
            store_id,
            data_dir,
            catalog,
            quarantined,
            dir,
            stop: Some(stop),
            task: Some(task),
        };
        // The listener is bound before run() starts, so requests queue until it serves.
        let ready = agent.client.get(agent.path("/healthz")).send().await.expect("healthz");
        assert!(ready.status().is_success());
        agent
    }

    /// The URL of `path` at this agent.
    pub fn path(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A GET with the terminal key.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.path(path)).bearer_auth(TERMINAL)
    }

    /// A POST of `body` with the terminal key.
    pub fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client.post(self.path(path)).bearer_auth(TERMINAL).json(body)
    }

    /// A GET with the manager key.
    pub fn manager_get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.path(path)).bearer_auth(MANAGER)
    }

    /// A POST without a body with the manager key.
    pub fn manager_post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.path(path)).bearer_auth(MANAGER)
    }

    /// Every outbox entry, newest first.
    pub async fn outbox(&self) -> Vec<Value> {
        let all = [
            OutboxStatus::Pending,
            OutboxStatus::Acked,
            OutboxStatus::Confirmed,
            OutboxStatus::Quarantined,
            OutboxStatus::Discarded,
        ]
        .map(|s| s.as_str())
        .join(",");
        let body = ok_json(self.manager_get(&format!("/v1/outbox?status={all}&limit=1000"))).await;
        body.as_array().expect("an array").clone()
    }

    /// The local stock figures of a product.
    pub async fn stock(&self, product: ProductId) -> Value {
        ok_json(self.get(&format!("/v1/inventory/products/{product}"))).await
    }

    /// A reservation body for this store.
    pub fn reserve_body(&self, product: ProductId, quantity: i64) -> Value {
        json!({ "product_id": product, "store_id": self.store_id, "quantity": quantity })
    }

    /// A delivery body for this store.
    pub fn stock_body(&self, product: ProductId, quantity: i64) -> Value {
        json!({ "product_id": product, "store_id": self.store_id, "quantity": quantity })
    }

    /// Stops the agent and waits for it to finish.
    pub async fn stop(mut self) {
        self.finish().await;
    }

    /// Stops the agent and opens its local store again, to look at what it recorded.
    pub async fn stop_and_reopen(mut self) -> Reopened {
        self.finish().await;
        let local = LocalStore::open(&self.data_dir.join(crate::STORE_FILE), self.store_id).expect("reopen");
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        Reopened { local, _dir: dir }
    }

    async fn finish(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("agent task");
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A stopped agent's store, opened again (its directory lives as long as this).
pub struct Reopened {
    /// The store.
    pub local: LocalStore,
    _dir: tempfile::TempDir,
}

/// The body of a success answer to `request`.
async fn ok_json(request: reqwest::RequestBuilder) -> Value {
    let response = request.send().await.expect("the agent answers");
    let status = response.status();
    let body: Value = response.json().await.expect("a JSON body");
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// Writes the store the agent will find in `data_dir`: the snapshot (unless
/// `not_bootstrapped`) and the quarantined events. Returns those and the catalog.
async fn prepare(data_dir: &Path, store_id: StoreId, options: &Options) -> (Vec<EventId>, Catalog) {
    let local = LocalStore::open(&data_dir.join(crate::STORE_FILE), store_id).expect("open the local store");
    let named = ["APL-1", "BRD-1", "CHS-1"].map(|sku| product(sku.into(), 199));
    let bulk = options.bulk.unwrap_or(Bulk {
        products: 0,
        on_hand: 0,
    });
    let more: Vec<Product> = (0..bulk.products)
        .map(|i| product(format!("SKU-{i:05}"), 100 + i as u64))
        .collect();
    let catalog = Catalog {
        apple: named[0].id,
        bread: named[1].id,
        cheese: named[2].id,
        bulk: more.iter().map(|p| p.id).collect(),
    };
    if !options.not_bootstrapped {
        let mut levels = vec![
            stock(catalog.apple, store_id, 10, 3),
            stock(catalog.bread, store_id, 2, 1),
        ];
        levels.extend(catalog.bulk.iter().map(|id| stock(*id, store_id, bulk.on_hand, 1)));
        let snapshot = SnapshotResponse {
            store_id,
            position: SNAPSHOT_AT,
            stock: levels,
            reservations: Vec::new(),
            catalog: named
                .into_iter()
                .chain(more)
                .map(|product| ProductView { product, version: 1 })
                .collect(),
        };
        local.bootstrap(snapshot).await.expect("bootstrap");
    }
    let mut quarantined = Vec::new();
    for _ in 0..options.quarantined {
        let event_id = EventId::new_v7();
        let command = LocalCommand {
            target: Target::Product(catalog.bread),
            command: InventoryCommand::AddStock {
                quantity: StockQuantity::new(1).expect("quantity"),
            },
            event_id,
            idempotency: None,
            metadata: till(store_id, "test"),
            over_share: Default::default(),
        };
        local.execute(command).await.expect("record an event");
        let rejected = UploadOutcome::Rejected {
            reason: "unknown_product".into(),
            detail: "not at the hub".into(),
        };
        local
            .acknowledge(vec![UploadResult {
                event_id,
                outcome: rejected,
            }])
            .await
            .expect("quarantine it");
        quarantined.push(event_id);
    }
    local.close().await;
    (quarantined, catalog)
}

/// Records `events` deliveries (`AddStock` of 1 unit) at this store's tills, spread over
/// `products` round-robin, from 64 concurrent writers: an outbox backlog, as a store has
/// after a long outage (tests and benches of the drain).
pub async fn record_backlog(local: &LocalStore, store: StoreId, products: &[ProductId], events: usize) {
    const WRITERS: usize = 64;
    let writers = (0..WRITERS).map(|writer| {
        let (local, products) = (local.clone(), products.to_vec());
        tokio::spawn(async move {
            for n in (writer..events).step_by(WRITERS) {
                let command = LocalCommand {
                    target: Target::Product(products[n % products.len()]),
                    command: InventoryCommand::AddStock {
                        quantity: StockQuantity::new(1).expect("quantity"),
                    },
                    event_id: EventId::new_v7(),
                    idempotency: None,
                    metadata: till(store, "till-backlog"),
                    over_share: Default::default(),
                };
                local.execute(command).await.expect("a backlog write");
            }
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.expect("a backlog writer");
    }
}

/// Sync settings fast enough for tests (the breaker keeps its 5 failures in 10 s).
pub fn sync_test_config(dir: &Path, store: StoreId, hub_url: &str, token: &str) -> EdgeConfig {
    let mut config = EdgeConfig {
        store_id: Some(store),
        hub_url: Some(hub_url.to_owned()),
        hub_token: Some(token.into()),
        // Tests reach their hub over plain HTTP on 127.0.0.1.
        allow_insecure_hub: true,
        data_dir: dir.to_owned(),
        ..EdgeConfig::default()
    };
    config.sync.pull_interval_secs = 1;
    config.sync.heartbeat_interval_secs = 1;
    config.sync.request_timeout_secs = 5;
    config.sync.retry_min_ms = 50;
    config.sync.retry_max_ms = 1000;
    config.sync.breaker_open_secs = 2;
    config.validate().expect("a valid test config");
    config
}

/// The sync worker running on a local store the test holds.
pub struct SyncWorker {
    /// The store it syncs.
    pub local: LocalStore,
    /// This store.
    pub store_id: StoreId,
    /// The link state the worker keeps.
    pub status: Arc<LinkStatus>,
    handle: Option<SyncHandle>,
    stop: watch::Sender<bool>,
    _dir: Option<tempfile::TempDir>,
}

impl SyncWorker {
    /// A worker for `store` on a fresh local store, syncing with the hub at `hub_url`;
    /// `configure` adjusts [`sync_test_config`].
    pub async fn spawn(hub_url: &str, store: StoreId, token: &str, configure: impl FnOnce(&mut EdgeConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let local = LocalStore::open(&dir.path().join(crate::STORE_FILE), store).expect("open the local store");
        let mut worker = Self::spawn_on(local, dir.path(), hub_url, store, token, configure);
        worker._dir = Some(dir);
        worker
    }

    /// A worker on `local` (already open, its files in `dir`).
    pub fn spawn_on(
        local: LocalStore,
        dir: &Path,
        hub_url: &str,
        store: StoreId,
        token: &str,
        configure: impl FnOnce(&mut EdgeConfig),
    ) -> Self {
        shelfsync_common::server::telemetry::init_test_logging();
        let mut config = sync_test_config(dir, store, hub_url, token);
        configure(&mut config);
        let credentials: HubCredentials = config.hub_credentials().expect("hub credentials");
        let (stop, stopping) = watch::channel(false);
        let handle = crate::sync::spawn(local.clone(), credentials, Arc::new(config), stopping);
        Self {
            local,
            store_id: store,
            status: handle.status(),
            handle: Some(handle),
            stop,
            _dir: None,
        }
    }

    /// The link state now.
    pub fn link(&self) -> LinkState {
        self.status.get()
    }

    /// Local on-hand of `product` (confirmed + pending).
    pub fn on_hand(&self, product: ProductId) -> i64 {
        self.local.read(|view| view.stock(product).map_or(0, |s| s.on_hand))
    }

    /// Unconfirmed local events.
    pub fn outbox_depth(&self) -> u64 {
        self.local.read(|view| view.outbox().0)
    }

    /// (cursor, hub head, bootstrapped, quarantined).
    pub fn sync(&self) -> (u64, u64, bool, u64) {
        self.local.read(|view| {
            (
                view.sync.cursor,
                view.sync.hub_head,
                view.sync.bootstrapped,
                view.quarantined,
            )
        })
    }

    /// A sale at the till: reserve `quantity`, then commit; returns the two event ids.
    pub async fn sell(&self, product: ProductId, quantity: i64) -> [EventId; 2] {
        self.try_sell(product, quantity).await.expect("the local sale")
    }

    /// [`SyncWorker::sell`], or why the rules refused it (the till's policy: refuse).
    pub async fn try_sell(&self, product: ProductId, quantity: i64) -> Result<[EventId; 2], LocalError> {
        let reservation_id = ReservationId::new_v7();
        let reserve = InventoryCommand::ReserveStock {
            reservation_id,
            quantity: StockQuantity::new(quantity).expect("quantity"),
            expires_at: time::OffsetDateTime::now_utc() + time::Duration::minutes(15),
        };
        let first = self.execute(Target::Product(product), reserve).await?;
        let commit = InventoryCommand::CommitReservation { reservation_id };
        let second = self.execute(Target::Reservation(reservation_id), commit).await?;
        Ok([first, second])
    }

    async fn execute(&self, target: Target, command: InventoryCommand) -> Result<EventId, LocalError> {
        let event_id = EventId::new_v7();
        let command = LocalCommand {
            target,
            command,
            event_id,
            idempotency: None,
            metadata: till(self.store_id, "till-1"),
            over_share: Default::default(),
        };
        self.local.execute(command).await.map(|_| event_id)
    }

    /// Stops the worker (it must stop within [`STOP_WITHIN`]) and closes the store.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(handle) = self.handle.take() {
            tokio::time::timeout(STOP_WITHIN, handle.join())
                .await
                .expect("the sync worker stops promptly");
        }
        self.local.close().await;
    }
}

impl Drop for SyncWorker {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
