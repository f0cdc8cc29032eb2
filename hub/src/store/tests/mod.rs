//! Tests of the event store (the group-committing writer and the read pool) and of the
//! catch-up feed on the bus, one file per concern; this file holds their fixtures.
//!
//! Every test runs twice, on a fresh SQLite file and on a fresh PostgreSQL database
//! (`backends.rs`). A few tests put jobs on the writer's queue themselves and hold the
//! write lock from a second connection (see [`one_batch`]), so that they decide which
//! requests share one group commit instead of hoping the scheduler arranges it.

use super::{writer, Command, CommandRequest, EventStore, InventoryTarget, WriteError};
use crate::bus::EventBus;
use crate::store::EventFeed;
use backends::{new_log, TestLog};
use sha2::{Digest, Sha256};
use shelfsync_common::domain::catalog::CatalogCommand;
use shelfsync_common::wire::api::WriteResult;
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::{
    DomainError, EventEnvelope, EventId, EventMetadata, EventPayload, ExpectedVersion, InventoryCommand, Origin,
    Product, ProductId, ReservationId, StockQuantity, StoreId, StreamId,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::sync::{oneshot, Barrier};

/// A `limit` that reads the whole log in these tests.
const EVERYTHING: usize = 1_000_000;
/// How long a test waits for an answer before it calls the store stuck.
const PATIENCE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

fn metadata() -> EventMetadata {
    EventMetadata {
        origin: Origin::Hub,
        actor: "store-tests".into(),
        correlation_id: uuid::Uuid::now_v7(),
        causation_id: None,
        occurred_at: OffsetDateTime::now_utc(),
        recorded_at: None,
    }
}

/// The first 16 bytes of SHA-256 of the serialized command and its condition: the same
/// request always gives the same fingerprint.
fn fingerprint(command: &Command, expected: ExpectedVersion) -> [u8; 16] {
    let body = match command {
        Command::Catalog(command) => serde_json::json!({ "catalog": command, "expected": expected }),
        Command::Inventory { target, command } => {
            let target = match target {
                InventoryTarget::Stream(product, store) => serde_json::json!({ "product": product, "store": store }),
                InventoryTarget::Reservation(id) => serde_json::json!({ "reservation": id }),
            };
            serde_json::json!({ "target": target, "inventory": command, "expected": expected })
        }
    };
    let digest = Sha256::digest(serde_json::to_vec(&body).expect("serialize the command"));
    let mut fingerprint = [0u8; 16];
    fingerprint.copy_from_slice(&digest[..16]);
    fingerprint
}

fn request_with_id(command: Command, expected: ExpectedVersion, event_id: EventId) -> CommandRequest {
    CommandRequest {
        fingerprint: Fingerprint::from_bytes(fingerprint(&command, expected)),
        legacy_fingerprint: None,
        command,
        expected,
        event_id,
        metadata: metadata(),
    }
}

fn request(command: Command, expected: ExpectedVersion) -> CommandRequest {
    request_with_id(command, expected, EventId::new_v7())
}

fn qty(n: i64) -> StockQuantity {
    StockQuantity::new(n).expect("a valid quantity")
}

fn new_product(sku: &str) -> Product {
    Product {
        id: ProductId::new_v7(),
        sku: sku.into(),
        name: format!("Product {sku}"),
        price_minor: 499,
    }
}

fn register(product: Product) -> Command {
    Command::Catalog(CatalogCommand::RegisterProduct { product })
}

fn update(product: Product) -> Command {
    Command::Catalog(CatalogCommand::UpdateProduct { product })
}

fn inventory(product: ProductId, store: StoreId, command: InventoryCommand) -> Command {
    Command::Inventory {
        target: InventoryTarget::Stream(product, store),
        command,
    }
}

fn add_stock(product: ProductId, store: StoreId, units: i64) -> Command {
    inventory(product, store, InventoryCommand::AddStock { quantity: qty(units) })
}

fn reserve(product: ProductId, store: StoreId, reservation_id: ReservationId, units: i64) -> Command {
    inventory(
        product,
        store,
        InventoryCommand::ReserveStock {
            reservation_id,
            quantity: qty(units),
            expires_at: OffsetDateTime::now_utc() + time::Duration::hours(1),
        },
    )
}

/// Commits a reservation, finding its stream through the reservation index.
fn commit(reservation_id: ReservationId) -> Command {
    Command::Inventory {
        target: InventoryTarget::Reservation(reservation_id),
        command: InventoryCommand::CommitReservation { reservation_id },
    }
}

async fn execute(log: &EventStore, command: Command, expected: ExpectedVersion) -> Result<WriteResult, WriteError> {
    log.execute(request(command, expected)).await
}

async fn register_product(log: &EventStore, sku: &str) -> ProductId {
    let product = new_product(sku);
    let id = product.id;
    let written = execute(log, register(product), ExpectedVersion::NoStream)
        .await
        .expect("register a product");
    assert_eq!(written.stream_version, 1);
    id
}

async fn enroll_store(log: &EventStore) -> StoreId {
    let id = StoreId::new_v7();
    let info = log.add_store(id, "Corner shop".into()).await.expect("enroll a store");
    assert_eq!(info.id, id);
    id
}

/// One product registered as `sku` and `shops` shops enrolled: one inventory stream each.
async fn given_streams(log: &EventStore, sku: &str, shops: usize) -> Vec<(ProductId, StoreId)> {
    let product = register_product(log, sku).await;
    let mut streams = Vec::new();
    for _ in 0..shops {
        streams.push((product, enroll_store(log).await));
    }
    streams
}

async fn all_events(log: &EventStore) -> Vec<EventEnvelope> {
    log.read_after(0, EVERYTHING).await.expect("read the log")
}

/// The committed version of a stream: its last event's version in the log (either
/// backend).
async fn stream_version(log: &EventStore, stream: StreamId) -> u64 {
    all_events(log)
        .await
        .iter()
        .rev()
        .find(|e| e.stream == stream)
        .map_or(0, |e| e.stream_version)
}

/// The position of the last committed event, read from the database.
async fn log_head(log: &EventStore) -> u64 {
    log.stored_head().await.expect("read the head")
}

/// The bus's head once it has caught up with the file. The writer answers a batch's
/// callers just before it publishes the batch, so right after an answer the bus may
/// still be one batch behind.
async fn bus_head(log: &EventStore) -> u64 {
    let committed = log_head(log).await;
    let mut head = log.bus().watch_head();
    tokio::time::timeout(PATIENCE, head.wait_for(|head| *head >= committed))
        .await
        .expect("the bus catches up with the log")
        .expect("the bus is open");
    log.bus().head()
}

/// Checks the invariants of a whole log and returns how many events each stream has:
/// positions are exactly 1..=N in order, each stream's versions are exactly 1..=n in
/// position order, and no event id appears twice.
fn check_log(events: &[EventEnvelope]) -> HashMap<StreamId, u64> {
    let mut versions: HashMap<StreamId, u64> = HashMap::new();
    let mut ids = HashSet::new();
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.position, index as u64 + 1, "gap or disorder at index {index}");
        let version = versions.entry(event.stream).or_insert(0);
        *version += 1;
        assert_eq!(
            event.stream_version, *version,
            "stream {} out of sequence at position {}",
            event.stream, event.position
        );
        assert!(ids.insert(event.event_id), "event id {} stored twice", event.event_id);
    }
    versions
}

/// The positions of each commit, keyed by its `recorded_at` (the writer stamps every event
/// of a batch with the batch's time). Asserts that each commit is one contiguous run of
/// positions, as one transaction must be.
fn commits(events: &[EventEnvelope]) -> BTreeMap<OffsetDateTime, Vec<u64>> {
    let mut commits: BTreeMap<OffsetDateTime, Vec<u64>> = BTreeMap::new();
    for event in events {
        let at = event.metadata.recorded_at.expect("the writer stamps recorded_at");
        commits.entry(at).or_default().push(event.position);
    }
    for (at, positions) in &commits {
        assert!(
            positions.windows(2).all(|w| w[1] == w[0] + 1),
            "the commit at {at} is not one run of positions: {positions:?}"
        );
    }
    commits
}

/// `total` AddStock commands spread round-robin over `streams`, sent by `writers` tasks
/// that each wait for one answer before sending the next command.
async fn append_concurrently(
    log: &EventStore,
    streams: &[(ProductId, StoreId)],
    total: usize,
    writers: usize,
) -> Vec<WriteResult> {
    let streams: Arc<[(ProductId, StoreId)]> = streams.into();
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let log = log.clone();
            let streams = streams.clone();
            tokio::spawn(async move {
                let mut written = Vec::new();
                for i in (writer..total).step_by(writers) {
                    let (product, shop) = streams[i % streams.len()];
                    let result = execute(&log, add_stock(product, shop, 1), ExpectedVersion::Any).await;
                    written.push(result.expect("AddStock with no condition is accepted"));
                }
                written
            })
        })
        .collect();
    let mut written = Vec::with_capacity(total);
    for task in tasks {
        written.extend(task.await.expect("writer task"));
    }
    written
}

type Answer = oneshot::Receiver<Result<WriteResult, WriteError>>;

/// Puts a command on the writer's queue directly: when this returns the job is queued
/// (`EventStore::execute` only tells once it is answered).
async fn enqueue(log: &EventStore, request: CommandRequest) -> Answer {
    log.writer()
        .queue(|reply| writer::WriteOp::Command(Box::new(request), reply))
        .await
        .expect("the writer is running")
}

async fn answer(answer: Answer) -> Result<WriteResult, WriteError> {
    tokio::time::timeout(PATIENCE, answer)
        .await
        .expect("the writer answers")
        .expect("the writer keeps its reply")
}

/// Runs `requests` as exactly one group commit, in this order.
///
/// With the write lock held, a refused command (it writes nothing) goes first: the
/// writer takes it, maybe with a checkpoint barrier queued behind it, and then waits for
/// the lock. The barrier ends that first batch. Everything queued behind the barrier is
/// still queued when the lock is released, and the writer drains it into one batch
/// (it drains up to `MAX_BATCH` jobs, stopping early only at a barrier or an empty queue).
async fn one_batch(t: &TestLog, requests: Vec<CommandRequest>) -> Vec<Result<WriteResult, WriteError>> {
    assert!(requests.len() <= writer::MAX_BATCH);
    let lock = t.hold_writes().await;
    let stall = ReservationId::new_v7();
    let stalled = enqueue(&t.log, request(commit(stall), ExpectedVersion::Any)).await;
    let checkpointed = t.log.writer().queue_checkpoint().await.expect("the writer is running");
    let mut answers = Vec::with_capacity(requests.len());
    for request in requests {
        answers.push(enqueue(&t.log, request).await);
    }
    lock.release().await;
    assert_eq!(answer(stalled).await, Err(WriteError::UnknownReservation(stall)));
    tokio::time::timeout(PATIENCE, checkpointed)
        .await
        .expect("the checkpoint ran")
        .expect("the writer keeps its reply")
        .expect("checkpoint");
    let mut results = Vec::with_capacity(answers.len());
    for a in answers {
        results.push(answer(a).await);
    }
    results
}

/// Reads a feed until its cursor reaches `until`; every page must be non-empty and end
/// at the cursor.
async fn read_feed_until(feed: &mut EventFeed, until: u64) -> Vec<EventEnvelope> {
    let mut events = Vec::new();
    while feed.cursor() < until {
        let page = tokio::time::timeout(PATIENCE, feed.next())
            .await
            .unwrap_or_else(|_| panic!("feed stalled at {} waiting for {until}", feed.cursor()))
            .expect("the bus is open")
            .expect("the store reads");
        assert!(!page.is_empty(), "a feed page is never empty");
        assert_eq!(page.last().map(|e| e.position), Some(feed.cursor()));
        events.extend(page);
    }
    events
}

mod backends;
mod cluster;
mod concurrency;
mod enrollment;
mod expected_versions;
mod feed;
mod group_commit;
mod idempotency;
mod pull_page;
mod refusals;
mod restart;
mod tokens;
