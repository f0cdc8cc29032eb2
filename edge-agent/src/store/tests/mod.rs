//! Tests of the agent's local store: the group-committing writer, the outbox, the
//! confirmed + pending view, the sync position and what survives a restart.
//!
//! Every test opens a fresh SQLite file in its own temporary directory and bootstraps it
//! from a synthetic hub snapshot at position [`SNAPSHOT_AT`]:
//!
//! | product | SKU     | confirmed on hand | stream version | open holds                          |
//! |---------|---------|-------------------|----------------|-------------------------------------|
//! | apple   | `APL-1` | 10                | 3              | none                                |
//! | bread   | `BRD-1` | 5                 | 2              | `web_hold`, 2 units, made at the hub |
//! | cheese  | `CHS-1` | no stream yet     | 0              | none                                |
//!
//! Hub events that follow the snapshot take positions from `SNAPSHOT_AT + 1` on and
//! stream versions that continue the table above.
//!
//! A few tests put jobs on the writer's queue themselves and hold SQLite's write lock
//! from a second connection (see [`one_batch`]), so that they decide which commands share
//! one group commit instead of hoping the scheduler arranges it.
//!
//! This file holds the fixtures; the tests are split by concern: [`bootstrap`],
//! [`commands`], [`idempotency`], [`durability`] (and the group commit), [`hub_events`],
//! [`outbox`] and [`retention`].

use super::view::{StreamView, SyncPosition};
use super::{writer, ApplyReport, LocalCommand, LocalError, LocalStore, QuarantineAction, Target};
use shelfsync_common::domain::event::ReleaseReason;
use shelfsync_common::wire::api::{ProductView, StockLevel};
use shelfsync_common::wire::edge::{LocalStockLevel, LocalWriteResult, OutboxEntry, OutboxStatus};
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::wire::sync::{SnapshotReservation, SnapshotResponse, UploadOutcome, UploadResult};
use shelfsync_common::{
    DomainError, EventEnvelope, EventId, EventMetadata, EventPayload, InventoryCommand, InventoryState, Origin,
    Product, ProductId, ReservationId, StockQuantity, StoreId, StreamId,
};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::oneshot;

/// The hub position the bootstrap snapshot was taken at.
const SNAPSHOT_AT: u64 = 40;
/// How long a test waits for an answer before it calls the store stuck.
const PATIENCE: Duration = Duration::from_secs(30);
/// Every outbox status.
const ALL: [OutboxStatus; 5] = [
    OutboxStatus::Pending,
    OutboxStatus::Acked,
    OutboxStatus::Confirmed,
    OutboxStatus::Quarantined,
    OutboxStatus::Discarded,
];

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

struct Shop {
    _dir: tempfile::TempDir,
    path: PathBuf,
    local: LocalStore,
    id: StoreId,
    apple: ProductId,
    bread: ProductId,
    cheese: ProductId,
    /// A hold on 2 bread made at the hub (a web order to collect here), in the snapshot.
    web_hold: ReservationId,
    /// When the fixture was made; the web hold expires an hour later.
    started: OffsetDateTime,
}

fn product(sku: &str, price_minor: u64) -> Product {
    Product {
        id: ProductId::new_v7(),
        sku: sku.into(),
        name: format!("Product {sku}"),
        price_minor,
    }
}

fn stock_row(
    product: ProductId,
    store: StoreId,
    on_hand: i64,
    reserved: i64,
    version: u64,
    position: u64,
) -> StockLevel {
    StockLevel {
        product_id: product,
        store_id: store,
        on_hand,
        reserved,
        available: on_hand - reserved,
        version,
        position,
        allocation: None,
    }
}

fn qty(n: i64) -> StockQuantity {
    StockQuantity::new(n).expect("a valid quantity")
}

/// A fresh store directory with the standard snapshot.
async fn shop() -> Shop {
    shop_with(|_| {}).await
}

/// A fresh store directory bootstrapped from the standard snapshot after `edit`.
async fn shop_with(edit: impl FnOnce(&mut SnapshotResponse)) -> Shop {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("edge.sqlite");
    let id = StoreId::new_v7();
    let local = LocalStore::open(&path, id).expect("open the local store");
    assert!(!local.read(|v| v.sync.bootstrapped), "a new store has no snapshot");
    let started = OffsetDateTime::now_utc();
    let (apple, bread, cheese) = (product("APL-1", 120), product("BRD-1", 250), product("CHS-1", 700));
    let web_hold = ReservationId::new_v7();
    let mut snapshot = SnapshotResponse {
        store_id: id,
        position: SNAPSHOT_AT,
        stock: vec![
            stock_row(apple.id, id, 10, 0, 3, 17),
            stock_row(bread.id, id, 5, 2, 2, 31),
        ],
        reservations: vec![SnapshotReservation {
            reservation_id: web_hold,
            product_id: bread.id,
            quantity: 2,
            expires_at: started + time::Duration::hours(1),
            origin: Origin::Hub,
            hub_share: false,
        }],
        catalog: [&apple, &bread, &cheese]
            .into_iter()
            .map(|p| ProductView {
                product: p.clone(),
                version: 1,
            })
            .collect(),
    };
    edit(&mut snapshot);
    within(local.bootstrap(snapshot)).await.expect("bootstrap");
    Shop {
        _dir: dir,
        path,
        local,
        id,
        apple: apple.id,
        bread: bread.id,
        cheese: cheese.id,
        web_hold,
        started,
    }
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("the local store answers in time")
}

impl Shop {
    /// Closes the store (after its queued writes) and opens the file again.
    async fn reopen(&mut self) {
        within(self.local.close()).await;
        self.local = LocalStore::open(&self.path, self.id).expect("reopen the local store");
    }

    fn metadata(&self) -> EventMetadata {
        EventMetadata {
            origin: Origin::Store(self.id),
            actor: "till-1".into(),
            correlation_id: uuid::Uuid::now_v7(),
            causation_id: None,
            occurred_at: OffsetDateTime::now_utc(),
            recorded_at: None,
        }
    }

    fn command(&self, target: Target, command: InventoryCommand) -> LocalCommand {
        LocalCommand {
            target,
            command,
            event_id: EventId::new_v7(),
            idempotency: None,
            metadata: self.metadata(),
            over_share: Default::default(),
        }
    }

    /// A sale at the till that takes `units` off the shelf.
    fn sell(&self, product: ProductId, units: i64) -> LocalCommand {
        let command = InventoryCommand::AdjustStock {
            delta: -units,
            reason: "sale".into(),
        };
        self.command(Target::Product(product), command)
    }

    fn deliver(&self, product: ProductId, units: i64) -> LocalCommand {
        self.command(
            Target::Product(product),
            InventoryCommand::AddStock { quantity: qty(units) },
        )
    }

    fn reserve(&self, product: ProductId, id: ReservationId, units: i64, expires_at: OffsetDateTime) -> LocalCommand {
        let command = InventoryCommand::ReserveStock {
            reservation_id: id,
            quantity: qty(units),
            expires_at,
        };
        self.command(Target::Product(product), command)
    }

    fn commit(&self, id: ReservationId) -> LocalCommand {
        self.command(
            Target::Reservation(id),
            InventoryCommand::CommitReservation { reservation_id: id },
        )
    }

    fn release(&self, id: ReservationId) -> LocalCommand {
        let command = InventoryCommand::ReleaseStock {
            reservation_id: id,
            reason: ReleaseReason::Cancelled,
        };
        self.command(Target::Reservation(id), command)
    }

    async fn run(&self, command: LocalCommand) -> Result<LocalWriteResult, LocalError> {
        within(self.local.execute(command)).await
    }

    async fn ok(&self, command: LocalCommand) -> LocalWriteResult {
        let result = self.run(command).await.expect("the command is recorded");
        assert!(!result.replayed);
        result
    }

    async fn apply(&self, events: Vec<EventEnvelope>, cursor: u64, head: u64) -> ApplyReport {
        within(self.local.apply_hub(events, cursor, head))
            .await
            .expect("apply hub events")
    }

    async fn ack(&self, results: Vec<UploadResult>) {
        within(self.local.acknowledge(results)).await.expect("acknowledge")
    }

    async fn outbox(&self) -> Vec<OutboxEntry> {
        within(self.local.outbox(ALL.to_vec(), usize::MAX))
            .await
            .expect("read the outbox")
    }

    async fn entry(&self, event_id: EventId) -> OutboxEntry {
        let entries = self.outbox().await;
        entries
            .into_iter()
            .find(|e| e.event_id == event_id)
            .expect("the event is in the outbox")
    }

    fn level(&self, product: ProductId) -> LocalStockLevel {
        self.local
            .read(|v| v.stock(product))
            .expect("the product has a stream here")
    }

    fn confirmed(&self, product: ProductId) -> InventoryState {
        self.local.read(|v| {
            v.streams()
                .get(&product)
                .map(|s| s.confirmed().clone())
                .unwrap_or_default()
        })
    }

    fn pending(&self, product: ProductId) -> Vec<EventId> {
        self.local.read(|v| {
            v.streams()
                .get(&product)
                .map(|s| s.pending().iter().map(|p| p.event_id).collect())
                .unwrap_or_default()
        })
    }

    fn state(&self) -> ViewState {
        self.local.read(|v| ViewState {
            streams: v.streams().iter().map(|(k, s)| (*k, s.clone())).collect(),
            catalog: v.catalog.iter().map(|(k, p)| (*k, p.clone())).collect(),
            skus: v.skus.iter().map(|(k, p)| (k.clone(), *p)).collect(),
            own_reservations: v.own_reservations.iter().copied().collect(),
            quarantined: v.quarantined,
            sync: v.sync.clone(),
        })
    }

    fn counts(&self) -> RowCounts {
        row_counts(&self.path)
    }

    /// An event of one of this store's streams, recorded at the hub.
    fn hub_event(&self, product: ProductId, version: u64, position: u64, payload: EventPayload) -> EventEnvelope {
        envelope(
            StreamId::inventory(product, self.id),
            version,
            position,
            payload,
            Origin::Hub,
        )
    }

    /// One of our own events as it comes back in the hub's feed.
    fn echo(&self, written: &LocalWriteResult, version: u64, position: u64) -> EventEnvelope {
        EventEnvelope {
            event_id: written.event_id,
            ..envelope(
                written.stream,
                version,
                position,
                written.payload.clone(),
                Origin::Store(self.id),
            )
        }
    }
}

fn envelope(stream: StreamId, version: u64, position: u64, payload: EventPayload, origin: Origin) -> EventEnvelope {
    EventEnvelope {
        event_id: EventId::new_v7(),
        stream,
        stream_version: version,
        position,
        schema_version: shelfsync_common::domain::event::CURRENT_SCHEMA_VERSION,
        payload,
        metadata: EventMetadata {
            origin,
            actor: "hub".into(),
            correlation_id: uuid::Uuid::now_v7(),
            causation_id: None,
            occurred_at: OffsetDateTime::now_utc(),
            recorded_at: Some(OffsetDateTime::now_utc()),
        },
    }
}

fn appended(written: &LocalWriteResult, position: u64, stream_version: u64) -> UploadResult {
    UploadResult {
        event_id: written.event_id,
        outcome: UploadOutcome::Appended {
            position,
            stream_version,
        },
    }
}

fn rejected(written: &LocalWriteResult) -> UploadResult {
    UploadResult {
        event_id: written.event_id,
        outcome: UploadOutcome::Rejected {
            reason: "unknown_product".into(),
            detail: "not in the catalog".into(),
        },
    }
}

/// Everything tills read, in a comparable form.
#[derive(Debug, Clone, PartialEq)]
struct ViewState {
    streams: BTreeMap<ProductId, StreamView>,
    catalog: BTreeMap<ProductId, ProductView>,
    skus: BTreeMap<String, ProductId>,
    own_reservations: BTreeSet<ReservationId>,
    quarantined: u64,
    sync: SyncPosition,
}

/// `command` sent with idempotency key `key` and a request fingerprint of `fingerprint`.
fn keyed(mut command: LocalCommand, key: &str, fingerprint: u8) -> LocalCommand {
    command.idempotency = Some((key.into(), Fingerprint::from_bytes([fingerprint; 16])));
    command
}

/// Rows in the tables a command writes, read from the file with a connection of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowCounts {
    outbox: i64,
    idempotency: i64,
    own_reservations: i64,
}

fn row_counts(path: &Path) -> RowCounts {
    let conn = rusqlite::Connection::open(path).expect("second connection");
    let count = |table: &str| -> i64 {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .expect("count rows")
    };
    RowCounts {
        outbox: count("outbox"),
        idempotency: count("idempotency"),
        own_reservations: count("own_reservations"),
    }
}

/// Holds SQLite's write lock from a second connection. The writer thread can still take
/// jobs off its queue, but it waits in `BEGIN IMMEDIATE` (busy timeout 5 s) until the
/// lock is released, so it cannot commit meanwhile.
struct WriteLock(rusqlite::Connection);

impl WriteLock {
    fn hold(path: &Path) -> Self {
        let conn = rusqlite::Connection::open(path).expect("second connection");
        conn.execute_batch("BEGIN IMMEDIATE").expect("take the write lock");
        Self(conn)
    }

    fn release(self) {
        self.0.execute_batch("ROLLBACK").expect("release the write lock");
    }
}

type Answer = oneshot::Receiver<Result<LocalWriteResult, LocalError>>;

/// Puts a command on the writer's queue directly: when this returns the job is queued
/// (`LocalStore::execute` only tells once it is answered).
async fn enqueue(local: &LocalStore, command: LocalCommand) -> Answer {
    local
        .writer()
        .queue(|reply| writer::WriteOp::Command(Box::new(command), reply))
        .await
        .expect("the writer is running")
}

async fn answer(answer: Answer) -> Result<LocalWriteResult, LocalError> {
    within(answer).await.expect("the writer keeps its reply")
}

/// Runs `commands` as exactly one group commit, in this order.
///
/// With the write lock held, a refused command (it writes nothing) goes first: the
/// writer takes it, maybe with a checkpoint barrier queued behind it, and then waits for
/// the lock. The barrier ends that first batch. Everything queued behind the barrier is
/// still queued when the lock is released, and the writer drains it into one batch.
async fn one_batch(shop: &Shop, commands: Vec<LocalCommand>) -> Vec<Result<LocalWriteResult, LocalError>> {
    let lock = WriteLock::hold(&shop.path);
    let stall = ReservationId::new_v7();
    let stalled = enqueue(&shop.local, shop.commit(stall)).await;
    let checkpointed = shop
        .local
        .writer()
        .queue_checkpoint()
        .await
        .expect("the writer is running");
    let mut answers = Vec::with_capacity(commands.len());
    for command in commands {
        answers.push(enqueue(&shop.local, command).await);
    }
    lock.release();
    assert_eq!(answer(stalled).await, Err(LocalError::UnknownReservation(stall)));
    within(checkpointed)
        .await
        .expect("the writer keeps its reply")
        .expect("checkpoint");
    let mut results = Vec::with_capacity(answers.len());
    for a in answers {
        results.push(answer(a).await);
    }
    results
}

mod bootstrap;
mod commands;
mod durability;
mod hub_events;
mod idempotency;
mod outbox;
mod retention;
