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
    let store = LocalStore::open(&path, id).expect("open the local store");
    assert!(!store.read(|v| v.sync.bootstrapped), "a new store has no snapshot");
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
    within(store.bootstrap(snapshot)).await.expect("bootstrap");
    Shop {
        _dir: dir,
        path,
        local: store,
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
            v.streams
                .get(&product)
                .map(|s| s.confirmed().clone())
                .unwrap_or_default()
        })
    }

    fn pending(&self, product: ProductId) -> Vec<EventId> {
        self.local.read(|v| {
            v.streams
                .get(&product)
                .map(|s| s.pending().iter().map(|p| p.event_id).collect())
                .unwrap_or_default()
        })
    }

    fn state(&self) -> ViewState {
        self.local.read(|v| ViewState {
            streams: v.streams.iter().map(|(k, s)| (*k, s.clone())).collect(),
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
async fn enqueue(store: &LocalStore, command: LocalCommand) -> Answer {
    store
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

// ---------------------------------------------------------------------------------------
// Bootstrap
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn bootstrap_loads_the_snapshot_into_the_confirmed_state_and_the_catalog() {
    let mut s = shop().await;
    let apple = s.level(s.apple);
    assert_eq!(
        (apple.on_hand, apple.reserved, apple.available, apple.confirmed_version),
        (10, 0, 10, 3)
    );
    assert!(!apple.includes_pending && apple.pending_events == 0);
    let bread = s.level(s.bread);
    assert_eq!(
        (bread.on_hand, bread.reserved, bread.available, bread.confirmed_version),
        (5, 2, 3, 2)
    );
    assert_eq!(s.confirmed(s.bread).reservations[&s.web_hold].quantity, 2);
    assert_eq!(s.local.read(|v| v.stock(s.cheese)), None, "cheese has no stream yet");
    assert_eq!(
        s.local.read(|v| v.product_by_sku("CHS-1").map(|p| p.product.id)),
        Some(s.cheese)
    );
    assert_eq!(s.local.read(|v| v.catalog.len()), 3);
    let sync = s.local.read(|v| v.sync.clone());
    assert_eq!(
        (sync.cursor, sync.hub_head, sync.bootstrapped),
        (SNAPSHOT_AT, SNAPSHOT_AT, true)
    );
    assert!(sync.last_sync_at.is_some());
    assert!(
        s.local.read(|v| v.own_reservations.is_empty()),
        "the web hold is the hub's to expire"
    );

    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before, "the snapshot is on disk");
}

#[tokio::test]
async fn holds_this_store_made_are_its_own_after_a_bootstrap_and_the_hubs_are_not() {
    // A reinstalled agent: the hub's snapshot holds a reservation this store made earlier.
    let mine = ReservationId::new_v7();
    let mut s = shop_with(|snapshot| {
        let store = snapshot.store_id;
        let apple = snapshot.stock[0].product_id;
        snapshot.stock[0].reserved = 4;
        snapshot.stock[0].available = 6;
        snapshot.reservations.push(SnapshotReservation {
            reservation_id: mine,
            product_id: apple,
            quantity: 4,
            expires_at: OffsetDateTime::now_utc() + time::Duration::hours(1),
            origin: Origin::Store(store),
        });
    })
    .await;
    assert_eq!(s.level(s.apple).available, 6);
    assert_eq!(s.local.read(|v| v.own_reservations.clone()), HashSet::from([mine]));
    let later = s.started + time::Duration::hours(2);
    assert_eq!(s.local.read(|v| v.own_expired(later)), vec![(s.apple, mine)]);
    s.reopen().await;
    assert_eq!(
        s.local.read(|v| v.own_reservations.clone()),
        HashSet::from([mine]),
        "on disk too"
    );
    assert_eq!(crate::jobs::expire_reservations(&s.local, later).await, Ok(1));
    assert_eq!(s.level(s.apple).available, 10);
    assert_eq!(s.level(s.bread).reserved, 2, "the web hold is left to the hub");
}

#[tokio::test]
async fn a_second_snapshot_replaces_the_confirmed_state_and_the_catalog_and_keeps_pending_events() {
    let mut s = shop().await;
    let sale = s.ok(s.sell(s.apple, 2)).await;
    let delivery = s.ok(s.deliver(s.cheese, 3)).await;
    s.apply(
        vec![s.hub_event(s.apple, 4, 41, EventPayload::StockAdded { quantity: 5 })],
        41,
        41,
    )
    .await;
    let eggs = product("EGG-1", 30);
    let (apple, bread, cheese) = s.local.read(|v| {
        let mut bread = v.catalog[&s.bread].clone();
        bread.product.sku = "BRD-2".into();
        bread.version = 2;
        (v.catalog[&s.apple].clone(), bread, v.catalog[&s.cheese].clone())
    });
    let snapshot = SnapshotResponse {
        store_id: s.id,
        position: 60,
        stock: vec![stock_row(s.apple, s.id, 20, 0, 7, 58)],
        reservations: Vec::new(),
        catalog: vec![
            apple,
            bread,
            cheese,
            ProductView {
                product: eggs.clone(),
                version: 1,
            },
        ],
    };
    within(s.local.bootstrap(snapshot)).await.expect("bootstrap again");

    assert_eq!(
        s.confirmed(s.apple),
        InventoryState {
            on_hand: 20,
            version: 7,
            ..InventoryState::default()
        }
    );
    assert_eq!(s.pending(s.apple), vec![sale.event_id], "our sale stays on top");
    assert_eq!(s.level(s.apple).on_hand, 18);
    assert_eq!(
        s.local.read(|v| v.stock(s.bread)),
        None,
        "bread has no stock row any more"
    );
    assert_eq!(s.confirmed(s.cheese), InventoryState::default());
    assert_eq!(s.pending(s.cheese), vec![delivery.event_id]);
    let by_sku = |sku: &str| s.local.read(|v| v.product_by_sku(sku).map(|p| p.product.id));
    assert_eq!(
        (by_sku("BRD-1"), by_sku("BRD-2"), by_sku("EGG-1")),
        (None, Some(s.bread), Some(eggs.id))
    );
    assert_eq!(
        s.local.read(|v| (v.catalog.len(), v.skus.len(), v.sync.cursor)),
        (4, 4, 60)
    );

    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before, "the view is what the file holds");
}

// ---------------------------------------------------------------------------------------
// 1. Commands are decided against confirmed + pending
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_refused_command_writes_nothing() {
    let s = shop().await;
    let before = (s.state(), s.counts());
    let outcome = s.run(s.sell(s.apple, 11)).await;
    assert_eq!(
        outcome,
        Err(LocalError::Domain(DomainError::InsufficientStock {
            requested: 11,
            available: 10
        }))
    );
    let held = s.reserve(
        s.bread,
        ReservationId::new_v7(),
        4,
        s.started + time::Duration::hours(1),
    );
    let outcome = s.run(held).await;
    assert_eq!(
        outcome,
        Err(LocalError::Domain(DomainError::InsufficientStock {
            requested: 4,
            available: 3
        })),
        "the web hold counts"
    );
    let zero = s.command(
        Target::Product(s.apple),
        InventoryCommand::AdjustStock {
            delta: 0,
            reason: "x".into(),
        },
    );
    assert_eq!(s.run(zero).await, Err(LocalError::Domain(DomainError::ZeroAdjustment)));
    let stranger = ProductId::new_v7();
    assert_eq!(
        s.run(s.deliver(stranger, 1)).await,
        Err(LocalError::UnknownProduct(stranger))
    );
    assert_eq!(
        s.run(s.sell(s.cheese, 1)).await.unwrap_err().to_string(),
        "insufficient stock: requested 1, available 0"
    );
    assert_eq!((s.state(), s.counts()), before, "nothing in the view, nothing on disk");
    assert!(s.outbox().await.is_empty());
    assert_eq!(*s.local.recorded().borrow(), 0);
}

#[tokio::test]
async fn local_figures_include_pending_events_and_later_commands_are_decided_against_them() {
    let s = shop().await;
    let mut recorded = s.local.recorded();
    let first = s.ok(s.sell(s.apple, 4)).await;
    assert_eq!(first.seq, 1);
    assert_eq!(first.stream, StreamId::inventory(s.apple, s.id));
    assert_eq!(
        first.payload,
        EventPayload::StockAdjusted {
            delta: -4,
            reason: "sale".into()
        }
    );
    let expected = LocalStockLevel {
        product_id: s.apple,
        store_id: s.id,
        on_hand: 6,
        reserved: 0,
        available: 6,
        confirmed_version: 3,
        pending_events: 1,
        includes_pending: true,
    };
    assert_eq!(first.stock, expected, "the answer carries the local figures");
    assert_eq!(s.level(s.apple), expected, "and so does the view");
    assert_eq!(s.confirmed(s.apple).on_hand, 10, "the confirmed state is the hub's");
    assert!(recorded.has_changed().unwrap());
    assert_eq!(*recorded.borrow_and_update(), 1, "the uploader is woken");

    // 6 left locally: a sale of 7 is refused although the hub still says 10.
    let before = (s.state(), s.counts());
    let outcome = s.run(s.sell(s.apple, 7)).await;
    assert_eq!(
        outcome,
        Err(LocalError::Domain(DomainError::InsufficientStock {
            requested: 7,
            available: 6
        }))
    );
    assert_eq!((s.state(), s.counts()), before);
    assert!(!recorded.has_changed().unwrap(), "a refusal records nothing");

    let hold = ReservationId::new_v7();
    let held = s
        .ok(s.reserve(s.apple, hold, 5, s.started + time::Duration::hours(1)))
        .await;
    assert_eq!(
        (held.seq, held.stock.on_hand, held.stock.reserved, held.stock.available),
        (2, 6, 5, 1)
    );
    assert_eq!(held.stock.pending_events, 2);
    let outcome = s.run(s.sell(s.apple, 2)).await;
    assert_eq!(
        outcome,
        Err(LocalError::Domain(DomainError::InsufficientStock {
            requested: 2,
            available: 1
        }))
    );
    let sold = s.ok(s.commit(hold)).await;
    assert_eq!(
        sold.payload,
        EventPayload::ReservationCommitted {
            reservation_id: hold,
            quantity: 5
        }
    );
    assert_eq!(
        (sold.stock.on_hand, sold.stock.reserved, sold.stock.available),
        (1, 0, 1)
    );
    assert_eq!(
        s.pending(s.apple),
        vec![first.event_id, held.event_id, sold.event_id],
        "in outbox order"
    );
    assert_eq!(s.local.read(|v| v.outbox().0), 3);
    assert_eq!(
        s.confirmed(s.apple),
        InventoryState {
            on_hand: 10,
            version: 3,
            ..InventoryState::default()
        }
    );

    // A product with no stream yet gets one from its first local event.
    let delivered = s.ok(s.deliver(s.cheese, 3)).await;
    assert_eq!(
        (
            delivered.stock.on_hand,
            delivered.stock.confirmed_version,
            delivered.stock.pending_events
        ),
        (3, 0, 1)
    );
}

// ---------------------------------------------------------------------------------------
// 2. Durability
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_answered_command_survives_a_restart_and_seqs_keep_growing() {
    let mut s = shop().await;
    let hold = ReservationId::new_v7();
    let mut written = vec![
        s.ok(s.sell(s.apple, 2)).await,
        s.ok(s.reserve(s.bread, hold, 1, s.started + time::Duration::hours(1)))
            .await,
        s.ok(s.deliver(s.cheese, 7)).await,
    ];
    assert_eq!(written.iter().map(|w| w.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    let before = s.state();
    let outbox = s.outbox().await;
    let batch = within(s.local.pending_batch(100)).await.unwrap();

    s.reopen().await;
    assert_eq!(
        s.state(),
        before,
        "confirmed + pending, catalog and sync position are all on disk"
    );
    assert_eq!(s.outbox().await, outbox);
    assert_eq!(within(s.local.pending_batch(100)).await.unwrap(), batch);
    assert_eq!(*s.local.recorded().borrow(), 3);
    assert_eq!(s.level(s.apple).on_hand, 8);
    assert_eq!(s.level(s.bread).available, 2);
    assert!(s.local.read(|v| v.own_reservations.contains(&hold)));

    written.push(s.ok(s.sell(s.apple, 1)).await);
    assert_eq!(written[3].seq, 4, "the seq goes on after a restart");
    assert_eq!(written[3].stock.on_hand, 7);
    s.reopen().await;
    assert_eq!(s.ok(s.commit(hold)).await.seq, 5);
    let seqs: Vec<u64> = s.outbox().await.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![5, 4, 3, 2, 1]);
}

#[tokio::test]
async fn closing_finishes_the_queued_writes_first_then_refuses_new_ones() {
    let mut s = shop().await;
    let mut queued = Vec::new();
    for units in 1..=4 {
        queued.push(enqueue(&s.local, s.sell(s.apple, units)).await);
    }
    within(s.local.close()).await;
    let mut seqs = Vec::new();
    for answer_of in queued {
        seqs.push(
            answer(answer_of)
                .await
                .expect("a queued write is recorded before the writer stops")
                .seq,
        );
    }
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(s.run(s.sell(s.apple, 1)).await, Err(LocalError::Unavailable));
    assert_eq!(
        within(s.local.apply_hub(Vec::new(), 99, 99)).await,
        Err(LocalError::Unavailable)
    );
    let before = s.state();
    s.local = LocalStore::open(&s.path, s.id).expect("reopen the local store");
    assert_eq!(s.state(), before);
    assert_eq!(s.outbox().await.len(), 4);
    assert_eq!(s.level(s.apple).on_hand, 0);
}

#[tokio::test]
async fn a_batch_that_cannot_commit_answers_every_caller_with_an_error_and_changes_nothing() {
    let s = shop().await;
    let before = (s.state(), s.counts());
    let lock = WriteLock::hold(&s.path);
    let first = enqueue(&s.local, s.sell(s.apple, 1)).await;
    let second = enqueue(&s.local, s.deliver(s.bread, 1)).await;
    // The writer gives up after its 5 s busy timeout; the lock is still held.
    let (first, second) = (answer(first).await, answer(second).await);
    lock.release();
    assert!(matches!(first, Err(LocalError::Storage(_))), "{first:?}");
    assert!(matches!(second, Err(LocalError::Storage(_))), "{second:?}");
    assert_eq!(
        (s.state(), s.counts()),
        before,
        "no answer Ok, nothing in the view or on disk"
    );
    assert_eq!(*s.local.recorded().borrow(), 0);
    let retried = s.ok(s.sell(s.apple, 1)).await;
    assert_eq!(retried.seq, 1, "a rolled-back batch uses up no seq");
}

#[tokio::test]
async fn a_failure_in_the_middle_of_a_batch_rolls_all_of_it_back() {
    let s = shop().await;
    let before = (s.state(), s.counts());
    // SQLite refuses any outbox row for cheese, as a full disk would refuse a page.
    let cheese: String = s.cheese.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let conn = rusqlite::Connection::open(&s.path).expect("second connection");
    conn.execute_batch(&format!(
        "CREATE TRIGGER refuse_cheese BEFORE INSERT ON outbox WHEN NEW.product_id = X'{cheese}'
         BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;"
    ))
    .expect("create the trigger");

    let hold = ReservationId::new_v7();
    let hour = s.started + time::Duration::hours(1);
    let results = one_batch(
        &s,
        vec![
            keyed(s.sell(s.apple, 1), "sale-1", 1),
            s.reserve(s.bread, hold, 1, hour),
            s.deliver(s.cheese, 1),
            s.sell(s.apple, 2),
        ],
    )
    .await;
    for result in &results {
        assert!(
            matches!(result, Err(LocalError::Storage(message)) if message.contains("disk on fire")),
            "{result:?}"
        );
    }
    assert_eq!(
        (s.state(), s.counts()),
        before,
        "the writes before the failure are gone too"
    );
    assert_eq!(*s.local.recorded().borrow(), 0);

    conn.execute_batch("DROP TRIGGER refuse_cheese;")
        .expect("drop the trigger");
    let retried = s.ok(keyed(s.sell(s.apple, 1), "sale-1", 1)).await;
    assert_eq!(retried.seq, 1, "the key was not remembered and no seq was used up");
    assert!(!s.local.read(|v| v.own_reservations.contains(&hold)));
    s.ok(s.reserve(s.bread, hold, 1, hour)).await;
    assert_eq!(s.ok(s.deliver(s.cheese, 1)).await.seq, 3);
}

// ---------------------------------------------------------------------------------------
// 3. Own events coming back from the hub
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_acked_event_that_comes_back_leaves_the_pending_set_and_counts_once() {
    let mut s = shop().await;
    let sale = s.ok(s.sell(s.apple, 3)).await;
    let later = s.ok(s.sell(s.apple, 1)).await;
    s.ack(vec![appended(&sale, SNAPSHOT_AT + 1, 4)]).await;
    let entry = s.entry(sale.event_id).await;
    assert_eq!(
        (entry.status, entry.hub_position),
        (OutboxStatus::Acked, Some(SNAPSHOT_AT + 1))
    );
    let level = s.level(s.apple);
    assert_eq!(
        (level.on_hand, level.pending_events),
        (6, 2),
        "acked is still pending until it comes back"
    );
    let batch = within(s.local.pending_batch(10)).await.unwrap();
    assert_eq!(
        batch.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        vec![later.event_id],
        "not uploaded again"
    );

    let report = s
        .apply(
            vec![s.echo(&sale, 4, SNAPSHOT_AT + 1)],
            SNAPSHOT_AT + 1,
            SNAPSHOT_AT + 1,
        )
        .await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 1,
            confirmed_own: 1,
            cursor: SNAPSHOT_AT + 1
        }
    );
    assert_eq!(
        s.confirmed(s.apple),
        InventoryState {
            on_hand: 7,
            version: 4,
            ..InventoryState::default()
        }
    );
    assert_eq!(s.pending(s.apple), vec![later.event_id]);
    let level = s.level(s.apple);
    assert_eq!(
        (level.on_hand, level.confirmed_version, level.pending_events),
        (6, 4, 1),
        "not counted twice"
    );
    let entry = s.entry(sale.event_id).await;
    assert_eq!(
        (entry.status, entry.hub_position),
        (OutboxStatus::Confirmed, Some(SNAPSHOT_AT + 1))
    );

    let report = s
        .apply(
            vec![s.echo(&later, 5, SNAPSHOT_AT + 2)],
            SNAPSHOT_AT + 2,
            SNAPSHOT_AT + 2,
        )
        .await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 1,
            confirmed_own: 1,
            cursor: SNAPSHOT_AT + 2
        }
    );
    let level = s.level(s.apple);
    assert_eq!(
        (
            level.on_hand,
            level.confirmed_version,
            level.pending_events,
            level.includes_pending
        ),
        (6, 5, 0, false)
    );
    assert_eq!(s.local.read(|v| v.outbox()), (0, None));

    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before, "a confirmed event is not loaded as pending again");
    assert_eq!(s.level(s.apple).on_hand, 6);
}

#[tokio::test]
async fn an_event_that_comes_back_before_its_upload_is_acked_stays_confirmed() {
    let mut s = shop().await;
    let sale = s.ok(s.sell(s.apple, 2)).await;
    let other = s.ok(s.sell(s.apple, 1)).await;
    // The upload's answer was lost; the event arrives on the push stream first.
    let report = s
        .apply(
            vec![s.echo(&sale, 4, SNAPSHOT_AT + 1)],
            SNAPSHOT_AT + 1,
            SNAPSHOT_AT + 1,
        )
        .await;
    assert_eq!(report.confirmed_own, 1);
    assert_eq!(s.entry(sale.event_id).await.status, OutboxStatus::Confirmed);
    let batch = within(s.local.pending_batch(10)).await.unwrap();
    assert_eq!(
        batch.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        vec![other.event_id],
        "not uploaded again"
    );

    // The retried upload's answers arrive afterwards: none brings it back.
    let duplicate = UploadResult {
        event_id: sale.event_id,
        outcome: UploadOutcome::Duplicate {
            position: SNAPSHOT_AT + 1,
            stream_version: 4,
        },
    };
    s.ack(vec![appended(&sale, SNAPSHOT_AT + 1, 4), duplicate, rejected(&sale)])
        .await;
    let entry = s.entry(sale.event_id).await;
    assert_eq!((entry.status, entry.reject_reason), (OutboxStatus::Confirmed, None));
    assert_eq!(s.pending(s.apple), vec![other.event_id]);
    assert_eq!(s.local.read(|v| v.quarantined), 0);
    let level = s.level(s.apple);
    assert_eq!(
        (level.on_hand, level.confirmed_version, level.pending_events),
        (7, 4, 1)
    );

    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before);
    assert_eq!(s.pending(s.apple), vec![other.event_id]);
    assert_eq!(s.level(s.apple).on_hand, 7);
}

#[tokio::test]
async fn own_events_confirmed_in_one_page_with_hub_events_between_them() {
    let s = shop().await;
    let hold = ReservationId::new_v7();
    let a = s
        .ok(s.reserve(s.apple, hold, 3, s.started + time::Duration::hours(1)))
        .await;
    let b = s.ok(s.commit(hold)).await;
    let c = s.ok(s.sell(s.apple, 1)).await;
    s.ack(vec![appended(&a, 41, 4), appended(&b, 43, 6)]).await;
    // The hub put a delivery between our two events; c is not uploaded yet.
    let delivery = s.hub_event(s.apple, 5, 42, EventPayload::StockAdded { quantity: 20 });
    let page = vec![s.echo(&a, 4, 41), delivery, s.echo(&b, 6, 43)];
    let report = s.apply(page, 43, 50).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 3,
            confirmed_own: 2,
            cursor: 43
        }
    );
    assert_eq!(
        s.confirmed(s.apple),
        InventoryState {
            on_hand: 27,
            version: 6,
            ..InventoryState::default()
        }
    );
    assert_eq!(s.pending(s.apple), vec![c.event_id]);
    let level = s.level(s.apple);
    assert_eq!((level.on_hand, level.available, level.pending_events), (26, 26, 1));
    assert_eq!(s.local.read(|v| (v.sync.cursor, v.sync.hub_head)), (43, 50));
}

// ---------------------------------------------------------------------------------------
// 4. Hub events from other origins; the catalog
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn hub_events_change_the_confirmed_state_under_the_pending_events() {
    let mut s = shop().await;
    let sale = s.ok(s.sell(s.apple, 2)).await;
    // A web order reserves 5 apples at this store at the hub, and the back office books a
    // delivery of bread; another store's apple stream moves too.
    let web = ReservationId::new_v7();
    let reserved = EventPayload::StockReserved {
        reservation_id: web,
        quantity: 5,
        expires_at: s.started + time::Duration::hours(1),
    };
    let elsewhere = envelope(
        StreamId::inventory(s.apple, StoreId::new_v7()),
        1,
        42,
        EventPayload::StockAdded { quantity: 99 },
        Origin::Hub,
    );
    let page = vec![
        s.hub_event(s.apple, 4, 41, reserved),
        elsewhere,
        s.hub_event(s.bread, 3, 43, EventPayload::StockAdded { quantity: 4 }),
    ];
    let report = s.apply(page, 43, 43).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 2,
            confirmed_own: 0,
            cursor: 43
        },
        "another store's event is skipped"
    );

    let confirmed = s.confirmed(s.apple);
    assert_eq!((confirmed.on_hand, confirmed.reserved(), confirmed.version), (10, 5, 4));
    assert_eq!(s.pending(s.apple), vec![sale.event_id], "our sale is still on top");
    let level = s.level(s.apple);
    assert_eq!(
        (level.on_hand, level.reserved, level.available, level.confirmed_version),
        (8, 5, 3, 4)
    );
    assert!(level.includes_pending);
    let bread = s.level(s.bread);
    assert_eq!(
        (
            bread.on_hand,
            bread.available,
            bread.confirmed_version,
            bread.pending_events
        ),
        (9, 7, 3, 0)
    );
    assert!(
        !s.local.read(|v| v.own_reservations.contains(&web)),
        "the hub expires its own holds"
    );

    // Later commands are decided against the new confirmed state plus our sale.
    let outcome = s.run(s.sell(s.apple, 4)).await;
    assert_eq!(
        outcome,
        Err(LocalError::Domain(DomainError::InsufficientStock {
            requested: 4,
            available: 3
        }))
    );
    // The customer collects the web order at the till.
    let collected = s.ok(s.commit(web)).await;
    assert_eq!(collected.stream, StreamId::inventory(s.apple, s.id));
    assert_eq!((collected.stock.on_hand, collected.stock.available), (3, 3));

    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before);
}

#[tokio::test]
async fn catalog_events_update_products_and_the_sku_index() {
    let mut s = shop().await;
    let (apple, bread, cheese) = (s.apple, s.bread, s.cheese);
    let named = |id: ProductId, sku: &str| Product {
        id,
        sku: sku.into(),
        name: format!("Renamed {sku}"),
        price_minor: 99,
    };
    let catalog = |product: Product, version: u64, position: u64, registered: bool| {
        let payload = if registered {
            EventPayload::ProductRegistered(product.clone())
        } else {
            EventPayload::ProductUpdated(product.clone())
        };
        envelope(StreamId::catalog(product.id), version, position, payload, Origin::Hub)
    };

    // A SKU rename and a new product.
    let dates = product("DAT-1", 300);
    let report = s
        .apply(
            vec![
                catalog(named(apple, "APL-2"), 2, 41, false),
                catalog(dates.clone(), 1, 42, true),
            ],
            42,
            42,
        )
        .await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 2,
            confirmed_own: 0,
            cursor: 42
        }
    );
    let by_sku = |s: &Shop, sku: &str| s.local.read(|v| v.product_by_sku(sku).map(|p| p.product.id));
    assert_eq!(by_sku(&s, "APL-2"), Some(apple));
    assert_eq!(by_sku(&s, "APL-1"), None, "the old SKU is gone");
    assert_eq!(by_sku(&s, "DAT-1"), Some(dates.id));
    let view = s.local.read(|v| v.catalog[&apple].clone());
    assert_eq!(
        (view.version, view.product.name.as_str(), view.product.price_minor),
        (2, "Renamed APL-2", 99)
    );
    // The new product can be sold here from now on.
    assert_eq!(s.ok(s.deliver(dates.id, 2)).await.stock.on_hand, 2);

    // Two products swap SKUs through a temporary one, all in one page.
    let page = vec![
        catalog(named(apple, "TMP-1"), 3, 43, false),
        catalog(named(bread, "APL-2"), 2, 44, false),
        catalog(named(apple, "BRD-1"), 4, 45, false),
        catalog(named(cheese, "CHS-1"), 2, 46, false),
    ];
    let report = s.apply(page, 46, 46).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 4,
            confirmed_own: 0,
            cursor: 46
        }
    );
    assert_eq!(by_sku(&s, "APL-2"), Some(bread));
    assert_eq!(by_sku(&s, "BRD-1"), Some(apple));
    assert_eq!(by_sku(&s, "CHS-1"), Some(cheese));
    assert_eq!(by_sku(&s, "TMP-1"), None);
    let skus = s.state().skus;
    assert_eq!(skus.len(), 4, "one SKU per product: {skus:?}");
    assert_eq!(s.local.read(|v| v.catalog[&apple].version), 4);

    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before, "the catalog is on disk");
}

// ---------------------------------------------------------------------------------------
// 5. apply_hub is idempotent and the cursor only moves forward
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn applying_hub_events_again_changes_nothing_and_the_cursor_only_moves_forward() {
    let mut s = shop().await;
    let page = vec![
        s.hub_event(s.apple, 4, 41, EventPayload::StockAdded { quantity: 5 }),
        s.hub_event(
            s.bread,
            3,
            42,
            EventPayload::StockAdjusted {
                delta: -1,
                reason: "damaged".into(),
            },
        ),
        s.hub_event(s.apple, 5, 43, EventPayload::StockAdded { quantity: 1 }),
    ];
    let report = s.apply(page.clone(), 43, 45).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 3,
            confirmed_own: 0,
            cursor: 43
        }
    );
    assert_eq!(s.confirmed(s.apple).on_hand, 16);
    let after_first = s.state();
    assert_eq!((after_first.sync.cursor, after_first.sync.hub_head), (43, 45));

    // A replayed page (a reconnect resumed too early): nothing is applied twice.
    let report = s.apply(page.clone(), 43, 45).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 0,
            confirmed_own: 0,
            cursor: 43
        }
    );
    let mut replayed = s.state();
    assert!(replayed.sync.last_sync_at >= after_first.sync.last_sync_at);
    replayed.sync.last_sync_at = after_first.sync.last_sync_at;
    assert_eq!(replayed, after_first);

    // An overlapping page: only what is new is applied.
    let mut overlapping = page[1..].to_vec();
    overlapping.push(s.hub_event(s.bread, 4, 44, EventPayload::StockAdded { quantity: 10 }));
    let report = s.apply(overlapping, 44, 45).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 1,
            confirmed_own: 0,
            cursor: 44
        }
    );
    assert_eq!((s.confirmed(s.bread).on_hand, s.confirmed(s.bread).version), (14, 4));
    assert_eq!(s.confirmed(s.apple).on_hand, 16);

    // A cursor behind ours never moves it back; a lower head never lowers the head.
    let report = s.apply(Vec::new(), 10, 12).await;
    assert_eq!(report.cursor, 44);
    assert_eq!(s.local.read(|v| (v.sync.cursor, v.sync.hub_head)), (44, 45));

    // Progress past events this store does not see moves the cursor; what it skipped is
    // not applied later (it is not ours to see).
    let report = s.apply(Vec::new(), 60, 70).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 0,
            confirmed_own: 0,
            cursor: 60
        }
    );
    assert_eq!(s.local.read(|v| (v.sync.cursor, v.sync.hub_head)), (60, 70));
    let stale = s.hub_event(s.apple, 6, 55, EventPayload::StockAdded { quantity: 100 });
    let report = s.apply(vec![stale], 55, 70).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 0,
            confirmed_own: 0,
            cursor: 60
        }
    );
    assert_eq!(s.confirmed(s.apple).on_hand, 16);

    // A page's cursor beyond its last event (the hub skipped others' events) is taken.
    let report = s
        .apply(
            vec![s.hub_event(s.apple, 6, 61, EventPayload::StockAdded { quantity: 1 })],
            64,
            70,
        )
        .await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 1,
            confirmed_own: 0,
            cursor: 64
        }
    );
    // The head is at least the cursor.
    let report = s.apply(Vec::new(), 80, 0).await;
    assert_eq!(report.cursor, 80);
    assert_eq!(s.local.read(|v| (v.sync.cursor, v.sync.hub_head)), (80, 80));

    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before, "the cursor and the confirmed state are on disk");
    let report = s.apply(page, 43, 45).await;
    assert_eq!(
        (report.applied, report.cursor),
        (0, 80),
        "still idempotent after a restart"
    );
}

// ---------------------------------------------------------------------------------------
// 6. Rejected uploads: quarantine, retry, discard
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_rejected_event_is_quarantined_and_can_be_retried_in_order_or_discarded() {
    let mut s = shop().await;
    let e1 = s.ok(s.sell(s.apple, 1)).await;
    let e2 = s.ok(s.sell(s.apple, 2)).await;
    let e3 = s.ok(s.sell(s.apple, 3)).await;
    assert_eq!(s.level(s.apple).on_hand, 4);

    s.ack(vec![appended(&e1, 41, 4), rejected(&e2), appended(&e3, 42, 5)])
        .await;
    assert_eq!(
        s.pending(s.apple),
        vec![e1.event_id, e3.event_id],
        "the rejected event left the pending set"
    );
    let level = s.level(s.apple);
    assert_eq!((level.on_hand, level.pending_events), (6, 2), "and the local figures");
    assert_eq!(s.local.read(|v| v.quarantined), 1);
    let quarantined = within(s.local.outbox(vec![OutboxStatus::Quarantined], 10))
        .await
        .unwrap();
    assert_eq!(quarantined.len(), 1);
    let entry = &quarantined[0];
    assert_eq!(
        (entry.event_id, entry.seq, entry.status),
        (e2.event_id, 2, OutboxStatus::Quarantined)
    );
    assert_eq!(entry.reject_reason.as_deref(), Some("unknown_product"));
    assert_eq!(entry.reject_detail.as_deref(), Some("not in the catalog"));
    assert!(
        within(s.local.pending_batch(10)).await.unwrap().is_empty(),
        "it blocks nothing"
    );

    // The same rejection again (a retried upload) counts once.
    s.ack(vec![rejected(&e2)]).await;
    assert_eq!(s.local.read(|v| v.quarantined), 1);
    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before, "quarantine survives a restart");

    // Retry: back in the pending set at its place in the outbox, and uploaded again.
    within(s.local.quarantine(e2.event_id, QuarantineAction::Retry))
        .await
        .unwrap();
    assert_eq!(s.pending(s.apple), vec![e1.event_id, e2.event_id, e3.event_id]);
    assert_eq!(s.level(s.apple).on_hand, 4);
    assert_eq!(s.local.read(|v| v.quarantined), 0);
    let entry = s.entry(e2.event_id).await;
    assert_eq!((entry.status, entry.reject_reason), (OutboxStatus::Pending, None));
    let batch = within(s.local.pending_batch(10)).await.unwrap();
    assert_eq!(batch.iter().map(|e| e.event_id).collect::<Vec<_>>(), vec![e2.event_id]);
    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before);

    // Rejected again, then given up for good.
    s.ack(vec![rejected(&e2)]).await;
    assert_eq!(s.local.read(|v| v.quarantined), 1);
    within(s.local.quarantine(e2.event_id, QuarantineAction::Discard))
        .await
        .unwrap();
    assert_eq!(s.local.read(|v| v.quarantined), 0);
    assert_eq!(s.pending(s.apple), vec![e1.event_id, e3.event_id]);
    assert_eq!(s.level(s.apple).on_hand, 6);
    assert_eq!(s.entry(e2.event_id).await.status, OutboxStatus::Discarded);
    assert!(within(s.local.pending_batch(10)).await.unwrap().is_empty());

    // Only a quarantined event can be retried or discarded.
    for action in [QuarantineAction::Retry, QuarantineAction::Discard] {
        for id in [e2.event_id, e1.event_id, EventId::new_v7()] {
            assert_eq!(
                within(s.local.quarantine(id, action)).await,
                Err(LocalError::NotQuarantined(id))
            );
        }
    }
    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before, "a discarded event stays out after a restart");
    assert_eq!(s.level(s.apple).on_hand, 6);
    assert_eq!(s.local.read(|v| v.quarantined), 0);
}

#[tokio::test]
async fn a_rejected_first_event_of_a_stream_leaves_the_view_as_a_restart_finds_it() {
    let mut s = shop().await;
    let delivered = s.ok(s.deliver(s.cheese, 4)).await;
    assert_eq!(s.level(s.cheese).on_hand, 4);
    s.ack(vec![rejected(&delivered)]).await;
    assert_eq!(s.local.read(|v| v.quarantined), 1);
    assert_eq!(s.local.read(|v| v.stock(s.cheese).map(|l| l.on_hand).unwrap_or(0)), 0);
    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before);
    within(s.local.quarantine(delivered.event_id, QuarantineAction::Retry))
        .await
        .unwrap();
    assert_eq!(s.level(s.cheese).on_hand, 4);
    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before);
}

// ---------------------------------------------------------------------------------------
// 7. Idempotency keys
// ---------------------------------------------------------------------------------------

fn keyed(mut command: LocalCommand, key: &str, fingerprint: u8) -> LocalCommand {
    command.idempotency = Some((key.into(), Fingerprint::from_bytes([fingerprint; 16])));
    command
}

#[tokio::test]
async fn a_repeated_request_gets_the_first_answer_and_writes_nothing() {
    let mut s = shop().await;
    let first = s.ok(keyed(s.sell(s.apple, 2), "sale-1", 1)).await;
    let state = (s.state(), s.counts());
    assert_eq!(state.1.idempotency, 1);

    // The till retries with a new event id (it lost the answer): the first answer comes back.
    let again = s.run(keyed(s.sell(s.apple, 2), "sale-1", 1)).await.expect("a replay");
    assert_eq!(
        again,
        LocalWriteResult {
            replayed: true,
            ..first.clone()
        }
    );
    assert_eq!((s.state(), s.counts()), state, "nothing new written");

    // The same key for another request is refused.
    let outcome = s.run(keyed(s.sell(s.apple, 3), "sale-1", 2)).await;
    assert_eq!(outcome, Err(LocalError::IdempotencyConflict("sale-1".into())));
    assert_eq!((s.state(), s.counts()), state);

    // Other keys are independent; a request without a key is never a replay.
    let second = s.ok(keyed(s.sell(s.apple, 2), "sale-2", 1)).await;
    assert_eq!((second.seq, second.stock.on_hand), (2, 6));
    assert_eq!(s.ok(s.sell(s.apple, 2)).await.seq, 3);

    s.reopen().await;
    let replayed = s
        .run(keyed(s.sell(s.apple, 2), "sale-1", 1))
        .await
        .expect("a replay after a restart");
    assert_eq!(
        replayed,
        LocalWriteResult {
            replayed: true,
            ..first
        }
    );
    let outcome = s.run(keyed(s.deliver(s.apple, 1), "sale-2", 9)).await;
    assert_eq!(outcome, Err(LocalError::IdempotencyConflict("sale-2".into())));
    assert_eq!(s.outbox().await.len(), 3);
    assert_eq!(s.level(s.apple).on_hand, 4);
}

#[tokio::test]
async fn a_refused_keyed_request_can_be_retried() {
    let s = shop().await;
    let outcome = s.run(keyed(s.sell(s.apple, 11), "big-sale", 1)).await;
    assert!(matches!(
        outcome,
        Err(LocalError::Domain(DomainError::InsufficientStock { .. }))
    ));
    assert_eq!(s.counts().idempotency, 0, "a refusal is not remembered");
    s.ok(s.deliver(s.apple, 1)).await;
    let sold = s.ok(keyed(s.sell(s.apple, 11), "big-sale", 1)).await;
    assert_eq!(sold.stock.on_hand, 0);
}

#[tokio::test]
async fn repeated_requests_in_one_group_commit_are_answered_once() {
    let s = shop().await;
    let first = keyed(s.sell(s.apple, 2), "sale-9", 7);
    let results = one_batch(
        &s,
        vec![
            first.clone(),
            keyed(s.sell(s.apple, 2), "sale-9", 7),
            keyed(s.sell(s.apple, 5), "sale-9", 8),
            keyed(s.sell(s.apple, 1), "sale-10", 7),
        ],
    )
    .await;
    let recorded = results[0].clone().expect("the first is recorded");
    assert_eq!(
        (recorded.seq, recorded.event_id, recorded.replayed),
        (1, first.event_id, false)
    );
    assert_eq!(
        results[1],
        Ok(LocalWriteResult {
            replayed: true,
            ..recorded.clone()
        })
    );
    assert_eq!(results[2], Err(LocalError::IdempotencyConflict("sale-9".into())));
    let other = results[3].clone().expect("another key");
    assert_eq!((other.seq, other.stock.on_hand), (2, 7));
    let outbox = s.outbox().await;
    assert_eq!(outbox.len(), 2);
    assert_eq!(
        outbox[0].recorded_at, outbox[1].recorded_at,
        "both were recorded in one commit"
    );
    assert_eq!(s.counts().idempotency, 2);
    assert_eq!(s.level(s.apple).on_hand, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_of_one_request_record_it_once() {
    let s = Arc::new(shop().await);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.run(keyed(s.sell(s.apple, 3), "till-2:sale-77", 3)).await })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task").expect("recorded or replayed"));
    }
    let originals: Vec<_> = results.iter().filter(|r| !r.replayed).collect();
    assert_eq!(originals.len(), 1, "exactly one is recorded");
    let original = originals[0].clone();
    for result in &results {
        assert_eq!(
            LocalWriteResult {
                replayed: false,
                ..result.clone()
            },
            original
        );
    }
    assert_eq!(s.outbox().await.len(), 1);
    assert_eq!(s.level(s.apple).on_hand, 7);
}

// ---------------------------------------------------------------------------------------
// Event ids
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_reused_event_id_is_refused_alone_and_the_rest_of_its_batch_is_recorded() {
    let s = shop().await;
    let first = s.ok(s.sell(s.apple, 1)).await;
    let before = (s.state(), s.counts());
    let mut reused = s.deliver(s.bread, 1);
    reused.event_id = first.event_id;
    assert_eq!(
        s.run(reused.clone()).await,
        Err(LocalError::DuplicateEvent(first.event_id))
    );
    assert_eq!((s.state(), s.counts()), before, "nothing written");

    // In one group commit with other tills' sales, twice within the batch too.
    let fresh = s.sell(s.bread, 1);
    let fresh_id = fresh.event_id;
    let mut reused_in_batch = s.deliver(s.cheese, 1);
    reused_in_batch.event_id = fresh.event_id;
    let results = one_batch(
        &s,
        vec![
            s.sell(s.apple, 1),
            reused,
            fresh,
            reused_in_batch,
            s.deliver(s.cheese, 2),
        ],
    )
    .await;
    assert_eq!(results[0].as_ref().map(|r| r.seq), Ok(2));
    assert_eq!(results[1], Err(LocalError::DuplicateEvent(first.event_id)));
    assert_eq!(results[2].as_ref().map(|r| r.seq), Ok(3));
    assert_eq!(results[3], Err(LocalError::DuplicateEvent(fresh_id)));
    assert_eq!(results[4].as_ref().map(|r| r.seq), Ok(4));
    assert_eq!(s.outbox().await.len(), 4);
    assert_eq!(s.level(s.cheese).on_hand, 2);
}

// ---------------------------------------------------------------------------------------
// 8. Reservations
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn commands_on_a_reservation_find_its_product() {
    let s = shop().await;
    let hour = s.started + time::Duration::hours(1);
    let mine = ReservationId::new_v7();
    let held = s.ok(s.reserve(s.apple, mine, 3, hour)).await;
    assert_eq!(held.stock.available, 7);
    assert!(s.local.read(|v| v.own_reservations.contains(&mine)));
    assert!(!s.local.read(|v| v.own_reservations.contains(&s.web_hold)));

    // The web hold from the hub's snapshot: collected at the till.
    let collected = s.ok(s.commit(s.web_hold)).await;
    assert_eq!(collected.stream, StreamId::inventory(s.bread, s.id));
    assert_eq!(
        collected.payload,
        EventPayload::ReservationCommitted {
            reservation_id: s.web_hold,
            quantity: 2
        }
    );
    assert_eq!(
        (
            collected.stock.on_hand,
            collected.stock.reserved,
            collected.stock.available
        ),
        (3, 0, 3)
    );
    // Our own hold (still pending): released.
    let released = s.ok(s.release(mine)).await;
    assert_eq!(released.stream, StreamId::inventory(s.apple, s.id));
    assert_eq!(
        released.payload,
        EventPayload::StockReleased {
            reservation_id: mine,
            quantity: 3,
            reason: ReleaseReason::Cancelled
        }
    );
    assert_eq!(released.stock.available, 10);

    // Neither is open any more; an id never seen is unknown too.
    let before = (s.state(), s.counts());
    for id in [s.web_hold, mine, ReservationId::new_v7()] {
        assert_eq!(s.run(s.commit(id)).await, Err(LocalError::UnknownReservation(id)));
        assert_eq!(s.run(s.release(id)).await, Err(LocalError::UnknownReservation(id)));
    }
    assert_eq!((s.state(), s.counts()), before);
}

#[tokio::test]
async fn a_reservation_id_open_on_any_product_cannot_be_reserved_again() {
    let s = shop().await;
    let hour = s.started + time::Duration::hours(1);
    let mine = ReservationId::new_v7();
    s.ok(s.reserve(s.apple, mine, 1, hour)).await;
    let before = (s.state(), s.counts());
    for (product, id) in [
        (s.apple, mine),
        (s.bread, mine),
        (s.cheese, mine),
        (s.apple, s.web_hold),
    ] {
        let outcome = s.run(s.reserve(product, id, 1, hour)).await;
        assert_eq!(outcome, Err(LocalError::Domain(DomainError::ReservationExists(id))));
    }
    assert_eq!((s.state(), s.counts()), before);

    // Within one group commit the first reservation wins.
    let again = ReservationId::new_v7();
    let results = one_batch(
        &s,
        vec![s.reserve(s.bread, again, 1, hour), s.reserve(s.apple, again, 1, hour)],
    )
    .await;
    assert!(results[0].is_ok());
    assert_eq!(
        results[1],
        Err(LocalError::Domain(DomainError::ReservationExists(again)))
    );
    // Once released, the id may be used again.
    s.ok(s.release(mine)).await;
    s.ok(s.reserve(s.bread, mine, 1, hour)).await;
}

#[tokio::test]
async fn only_own_expired_reservations_are_released_and_only_once() {
    let mut s = shop().await;
    let (hour, three_hours) = (
        s.started + time::Duration::hours(1),
        s.started + time::Duration::hours(3),
    );
    let (due, not_due, collected) = (
        ReservationId::new_v7(),
        ReservationId::new_v7(),
        ReservationId::new_v7(),
    );
    s.ok(s.reserve(s.apple, due, 2, hour)).await;
    s.ok(s.reserve(s.apple, not_due, 1, three_hours)).await;
    s.ok(s.reserve(s.bread, collected, 1, hour)).await;
    s.ok(s.commit(collected)).await;
    // A web order at the hub for this store, due at the same time as ours.
    let web = ReservationId::new_v7();
    let reserved = EventPayload::StockReserved {
        reservation_id: web,
        quantity: 4,
        expires_at: hour,
    };
    s.apply(vec![s.hub_event(s.apple, 4, 41, reserved)], 41, 41).await;
    assert_eq!(s.level(s.apple).reserved, 7);

    let later = s.started + time::Duration::hours(2);
    assert_eq!(s.local.read(|v| v.own_expired(later)), vec![(s.apple, due)]);
    s.reopen().await;
    assert_eq!(
        s.local.read(|v| v.own_expired(later)),
        vec![(s.apple, due)],
        "tracked across restarts"
    );

    let outbox = s.outbox().await.len();
    assert_eq!(crate::jobs::expire_reservations(&s.local, later).await, Ok(1));
    assert_eq!(
        crate::jobs::expire_reservations(&s.local, later).await,
        Ok(0),
        "a second run releases nothing"
    );
    let entries = s.outbox().await;
    assert_eq!(entries.len(), outbox + 1);
    assert_eq!(entries[0].event_type, "StockReleased");
    assert_eq!(
        entries[0].event_id.0.get_version_num(),
        7,
        "a fresh id: a reservation id may be reused later"
    );
    let batch = within(s.local.pending_batch(100)).await.unwrap();
    let release = batch.last().expect("the release is pending");
    assert_eq!(release.data["reason"], "expired");
    assert_eq!(release.metadata.origin, Origin::Store(s.id));

    let apple = s.confirmed(s.apple);
    assert!(
        apple.reservations.contains_key(&web),
        "the hub's hold is the hub's to expire"
    );
    let level = s.level(s.apple);
    assert_eq!(
        (level.on_hand, level.reserved),
        (10, 5),
        "the web hold and our later hold remain"
    );
    assert_eq!(s.level(s.bread).reserved, 2, "the snapshot's web hold remains");
    assert!(s.local.read(|v| v.own_expired(s.started + time::Duration::hours(4))) == vec![(s.apple, not_due)]);
}

// ---------------------------------------------------------------------------------------
// 9. Group commit under load
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_commands_are_decided_one_after_another() {
    const TASKS: usize = 20;
    const PER_TASK: usize = 10;
    let s = shop().await;
    // Apple: 10 + 90 = 100 available; bread: 5 - 2 + 47 = 50 available.
    s.ok(s.deliver(s.apple, 90)).await;
    s.ok(s.deliver(s.bread, 47)).await;
    let s = Arc::new(s);
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                for i in 0..PER_TASK {
                    let product = if (task + i) % 2 == 0 { s.apple } else { s.bread };
                    let command = s.sell(product, 1);
                    let event_id = command.event_id;
                    results.push((product, event_id, s.run(command).await));
                }
                results
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.extend(task.await.expect("task"));
    }
    assert_eq!(results.len(), TASKS * PER_TASK);

    let mut successes = Vec::new();
    for (product, event_id, result) in &results {
        match result {
            Ok(written) => {
                assert_eq!(written.event_id, *event_id);
                successes.push((*product, written.clone()));
            }
            Err(error) => {
                assert_eq!(*product, s.bread, "only bread runs out");
                assert_eq!(
                    *error,
                    LocalError::Domain(DomainError::InsufficientStock {
                        requested: 1,
                        available: 0
                    })
                );
            }
        }
    }
    assert_eq!(successes.len(), 150, "100 apples and 50 bread");
    let mut seqs: Vec<u64> = successes.iter().map(|(_, w)| w.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (3..=152).collect::<Vec<_>>(), "unique and contiguous");
    for product in [s.apple, s.bread] {
        let mut left: Vec<i64> = successes
            .iter()
            .filter(|(p, _)| *p == product)
            .map(|(_, w)| w.stock.available)
            .collect();
        left.sort_unstable();
        let sold = left.len() as i64;
        assert_eq!(left, (0..sold).collect::<Vec<_>>(), "each sale saw the ones before it");
    }
    let apple = s.level(s.apple);
    assert_eq!((apple.on_hand, apple.available, apple.pending_events), (0, 0, 101));
    let bread = s.level(s.bread);
    assert_eq!((bread.on_hand, bread.available, bread.pending_events), (2, 0, 51));

    let outbox = s.outbox().await;
    assert_eq!(outbox.len(), 152);
    let recorded: HashSet<EventId> = outbox.iter().map(|e| e.event_id).collect();
    let answered: HashSet<EventId> = successes.iter().map(|(_, w)| w.event_id).collect();
    assert!(
        answered.is_subset(&recorded) && recorded.len() == answered.len() + 2,
        "exactly the successes"
    );
    assert!(outbox.iter().all(|e| e.status == OutboxStatus::Pending));
    // Outbox order is seq order and the view's pending sets follow it.
    let by_seq: BTreeMap<u64, EventId> = outbox.iter().map(|e| (e.seq, e.event_id)).collect();
    for product in [s.apple, s.bread] {
        let pending = s.pending(product);
        let ordered: Vec<EventId> = by_seq.values().copied().filter(|id| pending.contains(id)).collect();
        assert_eq!(pending, ordered);
    }
    let batch = within(s.local.pending_batch(usize::MAX >> 1)).await.unwrap();
    assert_eq!(
        batch.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        by_seq.values().copied().collect::<Vec<_>>()
    );

    let before = s.state();
    let mut s = Arc::try_unwrap(s).ok().expect("the tasks are done");
    s.reopen().await;
    assert_eq!(s.state(), before);
}

// ---------------------------------------------------------------------------------------
// 10. What the uploader and operators read
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn pending_batch_is_the_oldest_pending_events_in_upload_shape() {
    let s = shop().await;
    let hold = ReservationId::new_v7();
    let expires_at = s.started + time::Duration::hours(1);
    let commands = vec![
        s.sell(s.apple, 1),
        s.reserve(s.bread, hold, 1, expires_at),
        s.deliver(s.cheese, 5),
        s.sell(s.apple, 2),
    ];
    let mut written = Vec::new();
    for command in &commands {
        written.push(s.ok(command.clone()).await);
    }

    let batch = within(s.local.pending_batch(10)).await.unwrap();
    assert_eq!(batch.len(), 4);
    for ((event, command), result) in batch.iter().zip(&commands).zip(&written) {
        assert_eq!(event.event_id, command.event_id);
        let product = match command.target {
            Target::Product(p) => p,
            Target::Reservation(_) => unreachable!(),
        };
        assert_eq!(event.stream, StreamId::inventory(product, s.id));
        assert_eq!(event.event_type, result.payload.event_type());
        assert_eq!(
            event.schema_version,
            shelfsync_common::domain::event::CURRENT_SCHEMA_VERSION
        );
        assert_eq!(event.data, result.payload.data());
        assert_eq!(
            EventPayload::from_parts(&event.event_type, event.schema_version, event.data.clone()),
            Ok(result.payload.clone())
        );
        assert_eq!(
            event.metadata, command.metadata,
            "the till's provenance, origin this store"
        );
        assert_eq!(event.metadata.origin, Origin::Store(s.id));
    }
    let json = serde_json::to_value(&batch[1]).unwrap();
    assert_eq!(json["type"], "StockReserved");
    assert_eq!(json["data"]["quantity"], 1);

    let first_two = within(s.local.pending_batch(2)).await.unwrap();
    assert_eq!(first_two, batch[..2].to_vec());

    // Acked and quarantined events are not uploaded again.
    s.ack(vec![appended(&written[0], 41, 4), rejected(&written[2])]).await;
    let batch = within(s.local.pending_batch(10)).await.unwrap();
    let ids: Vec<EventId> = batch.iter().map(|e| e.event_id).collect();
    assert_eq!(ids, vec![written[1].event_id, written[3].event_id]);
}

#[tokio::test]
async fn outbox_lists_entries_by_status_newest_first() {
    let s = shop().await;
    let mut written = Vec::new();
    for units in 1..=5 {
        written.push(s.ok(s.sell(s.apple, units.min(2))).await);
    }
    let [w1, w2, w3] = [0, 1, 2].map(|i| written[i].clone());
    s.ack(vec![appended(&w1, 41, 4), appended(&w2, 42, 5), rejected(&w3)])
        .await;
    s.apply(vec![s.echo(&w1, 4, 41)], 41, 42).await;

    let seqs = |entries: &[OutboxEntry]| entries.iter().map(|e| e.seq).collect::<Vec<_>>();
    let all = s.outbox().await;
    assert_eq!(seqs(&all), vec![5, 4, 3, 2, 1]);
    let statuses: Vec<OutboxStatus> = all.iter().map(|e| e.status).collect();
    use OutboxStatus::*;
    assert_eq!(statuses, vec![Pending, Pending, Quarantined, Acked, Confirmed]);
    let first = &all[4];
    assert_eq!(
        (first.event_id, first.product_id, first.event_type.as_str()),
        (w1.event_id, s.apple, "StockAdjusted")
    );
    assert_eq!(first.hub_position, Some(41));
    assert_eq!(all[1].hub_position, None);

    assert_eq!(seqs(&listed(&s.local, vec![Pending], 10).await), vec![5, 4]);
    assert_eq!(seqs(&listed(&s.local, vec![Pending], 1).await), vec![5]);
    assert_eq!(seqs(&listed(&s.local, vec![Acked, Quarantined], 10).await), vec![3, 2]);
    assert_eq!(seqs(&listed(&s.local, vec![Confirmed, Pending], 2).await), vec![5, 4]);
    assert_eq!(
        seqs(&listed(&s.local, vec![Confirmed, Pending], 3).await),
        vec![5, 4, 1]
    );
    assert!(listed(&s.local, vec![Discarded], 10).await.is_empty());
    assert!(listed(&s.local, Vec::new(), 10).await.is_empty());
    assert!(
        listed(&s.local, ALL.to_vec(), 0).await.is_empty(),
        "a limit of 0 lists nothing"
    );
}

async fn listed(store: &LocalStore, statuses: Vec<OutboxStatus>, limit: usize) -> Vec<OutboxEntry> {
    within(store.outbox(statuses, limit)).await.expect("read the outbox")
}

// ---------------------------------------------------------------------------------------
// 11. Restart in the middle of syncing
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_restart_mid_sync_finds_the_same_view() {
    let mut s = shop().await;
    let hour = s.started + time::Duration::hours(1);
    let hold = ReservationId::new_v7();
    let a = s.ok(s.reserve(s.apple, hold, 2, hour)).await; // confirmed
    let b = s.ok(s.sell(s.apple, 1)).await; // acked
    let c = s.ok(s.commit(s.web_hold)).await; // rejected
    let d = s.ok(s.deliver(s.cheese, 4)).await; // pending
    let e = s.ok(s.commit(hold)).await; // acked, then confirmed before the ack
    let f = s.ok(keyed(s.sell(s.bread, 1), "sale-f", 6)).await; // pending
    let g = s.ok(s.sell(s.apple, 1)).await; // acked, not seen back yet
    s.ack(vec![appended(&a, 41, 4), appended(&b, 43, 5), rejected(&c)])
        .await;
    let web = ReservationId::new_v7();
    let page = vec![
        s.echo(&a, 4, 41),
        s.hub_event(
            s.bread,
            3,
            42,
            EventPayload::StockReserved {
                reservation_id: web,
                quantity: 1,
                expires_at: hour,
            },
        ),
        s.echo(&b, 5, 43),
        s.echo(&e, 6, 45),
    ];
    let report = s.apply(page, 45, 47).await;
    assert_eq!(
        report,
        ApplyReport {
            applied: 4,
            confirmed_own: 3,
            cursor: 45
        }
    );
    s.ack(vec![appended(&e, 45, 6), appended(&g, 46, 7)]).await;
    assert_eq!(s.pending(s.apple), vec![g.event_id]);
    let level = s.level(s.apple);
    assert_eq!(
        (
            level.on_hand,
            level.reserved,
            level.pending_events,
            level.confirmed_version
        ),
        (6, 0, 1, 6)
    );
    let bread = s.level(s.bread);
    assert_eq!(
        (
            bread.on_hand,
            bread.reserved,
            bread.pending_events,
            bread.confirmed_version
        ),
        (4, 3, 1, 3)
    );
    assert_eq!(s.pending(s.cheese), vec![d.event_id]);
    assert_eq!(s.local.read(|v| (v.quarantined, v.outbox().0)), (1, 3));

    let before = s.state();
    let outbox = s.outbox().await;
    let batch = within(s.local.pending_batch(100)).await.unwrap();
    s.reopen().await;
    assert_eq!(s.state(), before);
    assert_eq!(s.outbox().await, outbox);
    assert_eq!(within(s.local.pending_batch(100)).await.unwrap(), batch);
    assert_eq!(
        batch.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        vec![d.event_id, f.event_id]
    );
    let replayed = s.run(keyed(s.sell(s.bread, 1), "sale-f", 6)).await.unwrap();
    assert_eq!(replayed, LocalWriteResult { replayed: true, ..f });

    // The acked event and the next ones come back on top of the reloaded state.
    s.ack(vec![appended(&d, 48, 1)]).await;
    let report = s.apply(vec![s.echo(&g, 7, 46), s.echo(&d, 1, 48)], 48, 48).await;
    assert_eq!(report.confirmed_own, 2);
    let apple = s.level(s.apple);
    assert_eq!(
        (apple.on_hand, apple.confirmed_version, apple.pending_events),
        (6, 7, 0)
    );
    let cheese = s.level(s.cheese);
    assert_eq!(
        (cheese.on_hand, cheese.confirmed_version, cheese.pending_events),
        (4, 1, 0)
    );
    let before = s.state();
    s.reopen().await;
    assert_eq!(s.state(), before);
}
