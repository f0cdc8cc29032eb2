//! Test support: a real edge agent in-process on a port-0 listener, with its own data dir
//! bootstrapped from a synthetic hub snapshot (catalog and stock), and its hub URL pointing
//! at a closed port, so every test also shows that the POS API needs no hub. The agent
//! stops (gracefully) when the handle drops.

#![allow(dead_code)]

use serde_json::{json, Value};
use shelfsync_common::wire::api::{ProductView, StockLevel};
use shelfsync_common::wire::edge::OutboxStatus;
use shelfsync_common::wire::sync::{SnapshotResponse, UploadOutcome, UploadResult};
use shelfsync_common::{EventId, EventMetadata, InventoryCommand, Origin, Product, ProductId, StockQuantity, StoreId};
use shelfsync_edge::config::EdgeConfig;
use shelfsync_edge::store::{LocalCommand, LocalStore, Target};
use std::path::PathBuf;
use tokio::sync::oneshot;

/// The tills' key of every test agent (unless keys are generated).
pub const TERMINAL: &str = "test-terminal-key-0123456789";
/// The manager's key of every test agent (unless keys are generated).
pub const MANAGER: &str = "test-manager-key-0123456789";
/// A hub URL nothing listens on (the discard port).
pub const CLOSED_HUB: &str = "http://127.0.0.1:9";
/// The hub position of the synthetic snapshot.
pub const SNAPSHOT_AT: u64 = 40;

/// The catalog of the synthetic snapshot.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// SKU `APL-1`, 10 on hand.
    pub apple: ProductId,
    /// SKU `BRD-1`, 2 on hand.
    pub bread: ProductId,
    /// SKU `CHS-1`, in the catalog, no stock row at this store.
    pub cheese: ProductId,
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
}

/// A running agent.
pub struct TestAgent {
    pub url: String,
    pub client: reqwest::Client,
    pub store_id: StoreId,
    pub data_dir: PathBuf,
    pub catalog: Catalog,
    /// Events quarantined before start, oldest first.
    pub quarantined: Vec<EventId>,
    _dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// An agent with the standard snapshot and configured keys.
pub async fn spawn_agent() -> TestAgent {
    spawn_agent_with(Options::default()).await
}

fn product(sku: &str) -> Product {
    Product {
        id: ProductId::new_v7(),
        sku: sku.into(),
        name: format!("Product {sku}"),
        price_minor: 199,
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
    }
}

/// An agent started as `options` say.
pub async fn spawn_agent_with(options: Options) -> TestAgent {
    shelfsync_common::server::telemetry::init_test_logging();
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_owned();
    let store_id = StoreId::new_v7();
    let (apple, bread, cheese) = (product("APL-1"), product("BRD-1"), product("CHS-1"));
    let catalog = Catalog {
        apple: apple.id,
        bread: bread.id,
        cheese: cheese.id,
    };
    let mut quarantined = Vec::new();
    {
        let store =
            LocalStore::open(&data_dir.join(shelfsync_edge::STORE_FILE), store_id).expect("open the local store");
        if !options.not_bootstrapped {
            let snapshot = SnapshotResponse {
                store_id,
                position: SNAPSHOT_AT,
                stock: vec![stock(apple.id, store_id, 10, 3), stock(bread.id, store_id, 2, 1)],
                reservations: Vec::new(),
                catalog: [apple, bread, cheese]
                    .into_iter()
                    .map(|product| ProductView { product, version: 1 })
                    .collect(),
            };
            store.bootstrap(snapshot).await.expect("bootstrap");
        }
        for _ in 0..options.quarantined {
            let event_id = EventId::new_v7();
            let command = LocalCommand {
                target: Target::Product(catalog.bread),
                command: InventoryCommand::AddStock {
                    quantity: StockQuantity::new(1).expect("quantity"),
                },
                event_id,
                idempotency: None,
                metadata: EventMetadata {
                    origin: Origin::Store(store_id),
                    actor: "test".into(),
                    correlation_id: uuid::Uuid::now_v7(),
                    causation_id: None,
                    occurred_at: time::OffsetDateTime::now_utc(),
                    recorded_at: None,
                },
            };
            store.execute(command).await.expect("record an event");
            let rejected = UploadOutcome::Rejected {
                reason: "unknown_product".into(),
                detail: "not at the hub".into(),
            };
            store
                .acknowledge(vec![UploadResult {
                    event_id,
                    outcome: rejected,
                }])
                .await
                .expect("quarantine it");
            quarantined.push(event_id);
        }
        store.close().await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let (terminal_key, manager_key) = if options.generated_keys {
        (None, None)
    } else {
        (Some(TERMINAL.to_owned()), Some(MANAGER.to_owned()))
    };
    let config = EdgeConfig {
        store_id: Some(store_id),
        hub_url: Some(CLOSED_HUB.into()),
        hub_token: Some("test-hub-token".into()),
        listen: listener.local_addr().expect("addr"),
        data_dir: data_dir.clone(),
        terminal_key: terminal_key.map(Into::into),
        manager_key: manager_key.map(Into::into),
        ..EdgeConfig::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        shelfsync_edge::run(config, listener, async {
            let _ = stopped.await;
        })
        .await
        .expect("agent run");
    });
    let agent = TestAgent {
        url,
        client: reqwest::Client::new(),
        store_id,
        data_dir,
        catalog,
        quarantined,
        _dir: dir,
        stop: Some(stop),
        task: Some(task),
    };
    // The listener is bound before run() starts, so requests queue until it serves.
    let ready = agent.client.get(agent.path("/healthz")).send().await.expect("healthz");
    assert!(ready.status().is_success());
    agent
}

impl TestAgent {
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
        let (status, body, _) = call(self.manager_get(&format!("/v1/outbox?status={all}&limit=1000"))).await;
        assert_eq!(status, 200, "{body}");
        body.as_array().expect("an array").clone()
    }

    /// The local stock figures of a product.
    pub async fn stock(&self, product: ProductId) -> Value {
        let (status, body, _) = call(self.get(&format!("/v1/inventory/products/{product}"))).await;
        assert_eq!(status, 200, "{body}");
        body
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
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("agent task");
        }
    }
}

/// A stopped agent's store, opened again (its directory lives as long as this).
pub struct Reopened {
    pub local: LocalStore,
    _dir: tempfile::TempDir,
}

impl TestAgent {
    /// Stops the agent and opens its local store again, to look at what it recorded.
    pub async fn stop_and_reopen(mut self) -> Reopened {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("agent task");
        }
        let store = LocalStore::open(&self.data_dir.join(shelfsync_edge::STORE_FILE), self.store_id).expect("reopen");
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().expect("temp dir"));
        Reopened {
            local: store,
            _dir: dir,
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

pub use shelfsync_common::testing::http::call;
// Only the API tests check the contract; the other test binaries leave it unused.
#[allow(unused_imports)]
pub use shelfsync_common::testing::openapi;

/// Asserts a problem+json answer with this status and code.
#[track_caller]
pub fn assert_problem(answer: &(u16, Value, String), status: u16, code: &str) {
    let (got, body, content_type) = answer;
    assert_eq!((*got, body["code"].as_str()), (status, Some(code)), "{body}");
    assert_eq!(content_type, "application/problem+json", "{body}");
    assert_eq!(body["status"].as_u64(), Some(u64::from(status)), "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
}
