//! What the edge agent's bench binaries share: env knobs, statistics, per-thread CPU
//! accounting, and a real agent started in-process on 127.0.0.1:0, bootstrapped from a
//! synthetic snapshot, its hub URL pointing at a closed port (the POS API needs no hub).

#![allow(dead_code)]

use shelfsync_common::wire::api::{ProductView, StockLevel};
use shelfsync_common::wire::sync::SnapshotResponse;
use shelfsync_common::{Product, ProductId, StoreId};
use shelfsync_edge::config::EdgeConfig;
use shelfsync_edge::store::LocalStore;
use std::time::Duration;

/// The tills' key of every bench agent.
pub const TERMINAL: &str = "bench-terminal-key-0123456789";
/// The manager's key of every bench agent.
pub const MANAGER: &str = "bench-manager-key-0123456789";
/// A hub URL nothing listens on (the discard port).
pub const CLOSED_HUB: &str = "http://127.0.0.1:9";

pub use shelfsync_common::testing::measure::*;

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
