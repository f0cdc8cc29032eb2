//! Helpers shared by the projection and query tests: a real event store in a temporary
//! directory with one store and one product enrolled.

use crate::bus::EventBus;
use crate::store::{Command, CommandRequest, EventStore, InventoryTarget};
use shelfsync_common::domain::catalog::CatalogCommand;
use shelfsync_common::domain::product::Product;
use shelfsync_common::wire::api::WriteResult;
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::{
    EventId, EventMetadata, ExpectedVersion, InventoryCommand, Origin, ProductId, ReservationId, StockQuantity, StoreId,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::watch;

pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub log: EventStore,
    pub shop: StoreId,
    pub product: ProductId,
    requests: AtomicU64,
}

impl Fixture {
    pub async fn new() -> Self {
        shelfsync_common::server::telemetry::init_test_logging();
        let dir = tempfile::tempdir().unwrap();
        let log = EventStore::open(&dir.path().join("events.sqlite"), EventBus::new()).unwrap();
        let fixture = Self {
            dir,
            log,
            shop: StoreId::new_v7(),
            product: ProductId::new_v7(),
            requests: AtomicU64::new(0),
        };
        fixture.log.add_store(fixture.shop, "Main street".into()).await.unwrap();
        fixture.register(fixture.product, "SKU-1", "Coffee").await;
        fixture
    }

    pub fn events_path(&self) -> PathBuf {
        self.dir.path().join("events.sqlite")
    }

    pub fn read_model_path(&self) -> PathBuf {
        self.dir.path().join("read_model.sqlite")
    }

    pub async fn run(&self, command: Command) -> WriteResult {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fingerprint = [0u8; 16];
        fingerprint[..8].copy_from_slice(&n.to_be_bytes());
        let request = CommandRequest {
            command,
            expected: ExpectedVersion::Any,
            event_id: EventId::new_v7(),
            fingerprint: Fingerprint::from_bytes(fingerprint),
            legacy_fingerprint: None,
            metadata: EventMetadata {
                origin: Origin::Hub,
                actor: "test".into(),
                correlation_id: uuid::Uuid::now_v7(),
                causation_id: None,
                occurred_at: OffsetDateTime::now_utc(),
                recorded_at: None,
            },
        };
        self.log.execute(request).await.unwrap()
    }

    pub async fn register(&self, id: ProductId, sku: &str, name: &str) -> WriteResult {
        let product = Product {
            id,
            sku: sku.into(),
            name: name.into(),
            price_minor: 499,
        };
        self.run(Command::Catalog(CatalogCommand::RegisterProduct { product }))
            .await
    }

    pub async fn update(&self, id: ProductId, sku: &str, name: &str) -> WriteResult {
        let product = Product {
            id,
            sku: sku.into(),
            name: name.into(),
            price_minor: 599,
        };
        self.run(Command::Catalog(CatalogCommand::UpdateProduct { product }))
            .await
    }

    pub async fn inventory(&self, product: ProductId, store: StoreId, command: InventoryCommand) -> WriteResult {
        self.run(Command::Inventory {
            target: InventoryTarget::Stream(product, store),
            command,
        })
        .await
    }

    pub async fn add(&self, quantity: i64) -> WriteResult {
        self.inventory(
            self.product,
            self.shop,
            InventoryCommand::AddStock {
                quantity: StockQuantity::new(quantity).unwrap(),
            },
        )
        .await
    }

    pub async fn reserve(&self, product: ProductId, store: StoreId, id: ReservationId, quantity: i64) -> WriteResult {
        self.inventory(
            product,
            store,
            InventoryCommand::ReserveStock {
                reservation_id: id,
                quantity: StockQuantity::new(quantity).unwrap(),
                expires_at: OffsetDateTime::now_utc() + time::Duration::minutes(15),
            },
        )
        .await
    }
}

/// Waits (at most 10 s) until the projection has reached `position`.
pub async fn reach(projected: &mut watch::Receiver<u64>, position: u64) {
    tokio::time::timeout(Duration::from_secs(10), projected.wait_for(|p| *p >= position))
        .await
        .expect("the projection did not reach the position in time")
        .expect("the projector stopped");
}
