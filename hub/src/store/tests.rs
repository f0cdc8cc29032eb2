//! Tests of the event store (the group-committing writer and the read pool) and of the
//! catch-up feed on the bus.
//!
//! Every test opens a fresh SQLite file in its own temporary directory. A few tests put
//! jobs on the writer's queue themselves and hold SQLite's write lock from a second
//! connection (see [`one_batch`]), so that they decide which requests share one group
//! commit instead of hoping the scheduler arranges it.

use super::{writer, Command, CommandRequest, EventStore, InventoryTarget, WriteError};
use crate::bus::EventBus;
use crate::store::EventFeed;
use rusqlite::OptionalExtension;
use sha2::{Digest, Sha256};
use shelfsync_common::domain::catalog::CatalogCommand;
use shelfsync_common::wire::api::WriteResult;
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::{
    DomainError, EventEnvelope, EventId, EventMetadata, EventPayload, ExpectedVersion, InventoryCommand, Origin,
    Product, ProductId, ReservationId, StockQuantity, StoreId, StreamId,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
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

struct TestStore {
    _dir: tempfile::TempDir,
    path: PathBuf,
    log: EventStore,
}

fn new_store() -> TestStore {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("events.sqlite");
    let store = open_store(&path);
    TestStore {
        _dir: dir,
        path,
        log: store,
    }
}

fn open_store(path: &Path) -> EventStore {
    EventStore::open(path, EventBus::new()).expect("open the event store")
}

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

async fn execute(store: &EventStore, command: Command, expected: ExpectedVersion) -> Result<WriteResult, WriteError> {
    store.execute(request(command, expected)).await
}

async fn register_product(store: &EventStore, sku: &str) -> ProductId {
    let product = new_product(sku);
    let id = product.id;
    let written = execute(store, register(product), ExpectedVersion::NoStream)
        .await
        .expect("register a product");
    assert_eq!(written.stream_version, 1);
    id
}

async fn enroll_store(store: &EventStore) -> StoreId {
    let id = StoreId::new_v7();
    let info = store.add_store(id, "Corner shop".into()).await.expect("enroll a store");
    assert_eq!(info.id, id);
    id
}

async fn all_events(store: &EventStore) -> Vec<EventEnvelope> {
    store.read_after(0, EVERYTHING).await.expect("read the log")
}

/// The committed version of a stream, read from the `streams` table on the read pool.
async fn stream_version(store: &EventStore, stream: StreamId) -> u64 {
    let key = stream.key();
    store
        .reads()
        .run(move |conn| {
            let version: Option<i64> = conn
                .query_row("SELECT version FROM streams WHERE stream_key = ?1", [&key[..]], |row| {
                    row.get(0)
                })
                .optional()?;
            Ok(version.unwrap_or(0) as u64)
        })
        .await
        .expect("read a stream version")
}

/// The position of the last committed event, read from the file.
async fn log_head(store: &EventStore) -> u64 {
    store.reads().run(super::reader::head).await.expect("read the head")
}

/// The bus's head once it has caught up with the file. The writer answers a batch's
/// callers just before it publishes the batch, so right after an answer the bus may
/// still be one batch behind.
async fn bus_head(store: &EventStore) -> u64 {
    let committed = log_head(store).await;
    let mut head = store.bus().watch_head();
    tokio::time::timeout(PATIENCE, head.wait_for(|head| *head >= committed))
        .await
        .expect("the bus catches up with the log")
        .expect("the bus is open");
    store.bus().head()
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
    store: &EventStore,
    streams: &[(ProductId, StoreId)],
    total: usize,
    writers: usize,
) -> Vec<WriteResult> {
    let streams: Arc<[(ProductId, StoreId)]> = streams.into();
    let tasks: Vec<_> = (0..writers)
        .map(|writer| {
            let store = store.clone();
            let streams = streams.clone();
            tokio::spawn(async move {
                let mut written = Vec::new();
                for i in (writer..total).step_by(writers) {
                    let (product, shop) = streams[i % streams.len()];
                    let result = execute(&store, add_stock(product, shop, 1), ExpectedVersion::Any).await;
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

type Answer = oneshot::Receiver<Result<WriteResult, WriteError>>;

/// Puts a command on the writer's queue directly: when this returns the job is queued
/// (`EventStore::execute` only tells once it is answered).
async fn enqueue(store: &EventStore, request: CommandRequest) -> Answer {
    store
        .writer()
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
async fn one_batch(t: &TestStore, requests: Vec<CommandRequest>) -> Vec<Result<WriteResult, WriteError>> {
    assert!(requests.len() <= writer::MAX_BATCH);
    let lock = WriteLock::hold(&t.path);
    let stall = ReservationId::new_v7();
    let stalled = enqueue(&t.log, request(commit(stall), ExpectedVersion::Any)).await;
    let checkpointed = t.log.writer().queue_checkpoint().await.expect("the writer is running");
    let mut answers = Vec::with_capacity(requests.len());
    for request in requests {
        answers.push(enqueue(&t.log, request).await);
    }
    lock.release();
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

// ---------------------------------------------------------------------------------------
// 1. Optimistic concurrency on one stream
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_appends_at_one_expected_version_let_exactly_one_through() {
    const START: u64 = 3;
    const RACERS: i64 = 32;
    let t = new_store();
    let store = &t.log;
    let product = register_product(store, "RACE-1").await;
    let shop = enroll_store(store).await;
    let stream = StreamId::inventory(product, shop);
    for _ in 0..START {
        execute(store, add_stock(product, shop, 1), ExpectedVersion::Any)
            .await
            .unwrap();
    }
    assert_eq!(stream_version(store, stream).await, START);

    let start = Arc::new(Barrier::new(RACERS as usize));
    let racers: Vec<_> = (1..=RACERS)
        .map(|units| {
            let store = store.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                execute(&store, add_stock(product, shop, units), ExpectedVersion::Exact(START)).await
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut conflicts = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(written) => winners.push(written),
            Err(WriteError::VersionConflict {
                stream: conflicted,
                expected,
                current,
            }) => {
                assert_eq!(conflicted, stream);
                assert_eq!(expected, ExpectedVersion::Exact(START));
                assert_eq!(current, START + 1, "the conflict reports the version the winner made");
                conflicts += 1;
            }
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one racer wins");
    assert_eq!(conflicts, RACERS - 1);
    assert_eq!(winners[0].stream_version, START + 1);
    assert!(!winners[0].duplicate);
    let stored: Vec<_> = all_events(store)
        .await
        .into_iter()
        .filter(|e| e.stream == stream)
        .collect();
    assert_eq!(stored.len() as u64, START + 1, "the losers wrote nothing");
    assert_eq!(stored.last(), winners[0].events.first());

    // Now 16 tasks read the version, append at it, and retry on conflict, until 200
    // appends succeeded in total. Each task claims one success slot before it tries.
    const SUCCESSES: usize = 200;
    const TASKS: usize = 16;
    let slots = Arc::new(AtomicUsize::new(SUCCESSES));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let store = store.clone();
            let slots = slots.clone();
            tokio::spawn(async move {
                let mut won = Vec::new();
                let mut conflicts = 0usize;
                while slots
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    loop {
                        let current = stream_version(&store, stream).await;
                        match execute(&store, add_stock(product, shop, 1), ExpectedVersion::Exact(current)).await {
                            Ok(written) => {
                                assert_eq!(written.stream_version, current + 1);
                                assert!(!written.duplicate);
                                won.push(written.stream_version);
                                break;
                            }
                            Err(WriteError::VersionConflict { current: now, .. }) => {
                                assert!(
                                    now > current,
                                    "a conflict means the stream moved on: {now} vs {current}"
                                );
                                conflicts += 1;
                            }
                            Err(other) => panic!("unexpected refusal: {other}"),
                        }
                    }
                }
                (won, conflicts)
            })
        })
        .collect();
    let mut won = Vec::new();
    let mut retried = 0;
    for task in tasks {
        let (versions, conflicts) = task.await.unwrap();
        won.extend(versions);
        retried += conflicts;
    }
    assert_eq!(won.len(), SUCCESSES);
    won.sort_unstable();
    let expected: Vec<u64> = (START + 2..=START + 1 + SUCCESSES as u64).collect();
    assert_eq!(won, expected, "no version was handed out twice and none was skipped");
    assert!(retried > 0, "16 tasks on one stream must have collided at least once");

    let events = all_events(store).await;
    let per_stream = check_log(&events);
    let total_successes = START + 1 + SUCCESSES as u64;
    assert_eq!(
        per_stream[&stream], total_successes,
        "one stored event per successful append"
    );
    assert_eq!(stream_version(store, stream).await, total_successes);
    let versions: Vec<u64> = events
        .iter()
        .filter(|e| e.stream == stream)
        .map(|e| e.stream_version)
        .collect();
    assert_eq!(versions, (1..=total_successes).collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------
// 2. Idempotency by event id
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_retry_with_the_same_event_id_and_fingerprint_returns_the_first_answer() {
    let t = new_store();
    let store = &t.log;
    let product = register_product(store, "IDEM-1").await;
    let shop = enroll_store(store).await;
    let stream = StreamId::inventory(product, shop);

    let first = request(add_stock(product, shop, 5), ExpectedVersion::NoStream);
    let original = store.execute(first.clone()).await.unwrap();
    assert!(!original.duplicate);
    assert_eq!(original.stream_version, 1);
    assert_eq!(original.events.len(), 1);
    assert_eq!(original.events[0].event_id, first.event_id);
    // The stream moves on, so the retry's condition (no_stream) no longer holds: a retry
    // must be answered from the log, not decided again.
    execute(store, add_stock(product, shop, 1), ExpectedVersion::Exact(1))
        .await
        .unwrap();
    let head = log_head(store).await;
    let log = all_events(store).await;

    for _ in 0..2 {
        let mut retry = first.clone();
        retry.metadata = metadata(); // a retry is sent again, later
        let again = store.execute(retry).await.unwrap();
        assert!(again.duplicate);
        assert_eq!(again.position, original.position);
        assert_eq!(again.stream_version, original.stream_version);
        assert_eq!(again.events, original.events, "the retry sees the event first written");
    }
    assert_eq!(bus_head(store).await, head, "a retry writes nothing");
    assert_eq!(all_events(store).await, log);
    assert_eq!(stream_version(store, stream).await, 2);
}

#[tokio::test]
async fn reusing_an_event_id_for_another_request_is_an_idempotency_conflict() {
    let t = new_store();
    let store = &t.log;
    let product = register_product(store, "IDEM-2").await;
    let shop = enroll_store(store).await;
    let other_shop = enroll_store(store).await;

    let first = request(add_stock(product, shop, 5), ExpectedVersion::Any);
    store.execute(first.clone()).await.unwrap();
    let head = log_head(store).await;

    // Another command under the same id.
    let other = request_with_id(add_stock(product, shop, 6), ExpectedVersion::Any, first.event_id);
    assert_ne!(other.fingerprint, first.fingerprint);
    assert_eq!(
        store.execute(other).await,
        Err(WriteError::IdempotencyConflict(first.event_id))
    );
    // The same command for another stream.
    let elsewhere = request_with_id(add_stock(product, other_shop, 5), ExpectedVersion::Any, first.event_id);
    assert_eq!(
        store.execute(elsewhere).await,
        Err(WriteError::IdempotencyConflict(first.event_id))
    );
    // The very same command, but a different fingerprint.
    let mut tampered = first.clone();
    let mut bytes = *first.fingerprint.as_bytes();
    bytes[0] ^= 0xff;
    tampered.fingerprint = Fingerprint::from_bytes(bytes);
    assert_eq!(
        store.execute(tampered).await,
        Err(WriteError::IdempotencyConflict(first.event_id))
    );
    assert_eq!(bus_head(store).await, head, "a refused id writes nothing");
    assert_eq!(all_events(store).await.len() as u64, head);
    // The original is still answered as a duplicate.
    assert!(store.execute(first).await.unwrap().duplicate);
}

#[tokio::test]
async fn an_event_fingerprinted_by_the_old_rule_still_answers_its_retry() {
    // Given an event recorded with the digest an earlier hub made of its request,
    let t = new_store();
    let store = &t.log;
    let product = register_product(store, "IDEM-OLD").await;
    let shop = enroll_store(store).await;
    let old_rule = Fingerprint::from_bytes([0xab; 16]);
    let first = CommandRequest {
        fingerprint: old_rule,
        ..request(add_stock(product, shop, 5), ExpectedVersion::Any)
    };
    store.execute(first.clone()).await.unwrap();
    // when the same request comes again with today's digest and the old one beside it,
    let retry = CommandRequest {
        fingerprint: Fingerprint::from_bytes([0xcd; 16]),
        legacy_fingerprint: Some(old_rule),
        ..first.clone()
    };
    // then it is a duplicate,
    assert!(store.execute(retry.clone()).await.unwrap().duplicate);
    // and a request whose old digest differs too is still another request.
    let other = CommandRequest {
        legacy_fingerprint: Some(Fingerprint::from_bytes([0xef; 16])),
        ..retry
    };
    assert_eq!(
        store.execute(other).await,
        Err(WriteError::IdempotencyConflict(first.event_id))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_requests_in_flight_together_write_one_event() {
    const COPIES: usize = 16;
    let t = new_store();
    let store = &t.log;
    let product = register_product(store, "IDEM-3").await;
    let shop = enroll_store(store).await;

    // Copies sent by concurrent tasks (they may share a batch or not).
    let head = log_head(store).await;
    let same = request(add_stock(product, shop, 3), ExpectedVersion::Any);
    let start = Arc::new(Barrier::new(COPIES));
    let tasks: Vec<_> = (0..COPIES)
        .map(|_| {
            let store = store.clone();
            let same = same.clone();
            let start = start.clone();
            tokio::spawn(async move {
                start.wait().await;
                store.execute(same).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap().expect("every copy is answered with the write"));
    }
    let (originals, duplicates): (Vec<_>, Vec<_>) = results.iter().partition(|r| !r.duplicate);
    assert_eq!(originals.len(), 1, "exactly one copy writes");
    assert_eq!(duplicates.len(), COPIES - 1);
    for r in &results {
        assert_eq!(r.position, head + 1);
        assert_eq!(r.stream_version, 1);
        assert_eq!(r.events, originals[0].events);
    }
    assert_eq!(bus_head(store).await, head + 1);

    // Copies queued into one and the same group commit.
    let head = log_head(store).await;
    let same = request(add_stock(product, shop, 4), ExpectedVersion::Exact(1));
    let results = one_batch(&t, vec![same.clone(); COPIES]).await;
    let results: Vec<WriteResult> = results.into_iter().map(|r| r.expect("accepted")).collect();
    assert!(!results[0].duplicate, "the first copy in the queue writes");
    assert!(
        results[1..].iter().all(|r| r.duplicate),
        "later copies in the batch are duplicates"
    );
    assert!(results.iter().all(|r| r.position == head + 1 && r.stream_version == 2));
    assert!(results.iter().all(|r| r.events == results[0].events));

    let events = all_events(store).await;
    check_log(&events);
    assert_eq!(events.len() as u64, head + 1);
    for id in [results[0].events[0].event_id, originals[0].events[0].event_id] {
        assert_eq!(events.iter().filter(|e| e.event_id == id).count(), 1);
    }
}

// ---------------------------------------------------------------------------------------
// 3. Gap-free, commit-ordered positions
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn positions_are_gap_free_and_commit_ordered_under_concurrent_writers() {
    const TASKS: usize = 8;
    const PER_TASK: usize = 100;
    let t = new_store();
    let store = &t.log;
    let mut products = Vec::new();
    for n in 0..4 {
        products.push(register_product(store, &format!("POS-{n}")).await);
    }
    let mut shops = Vec::new();
    for _ in 0..3 {
        shops.push(enroll_store(store).await);
    }
    let streams: Arc<Vec<(ProductId, StoreId)>> = Arc::new(
        products
            .iter()
            .flat_map(|p| shops.iter().map(move |s| (*p, *s)))
            .collect(),
    );

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = store.clone();
            let streams = streams.clone();
            tokio::spawn(async move {
                let mut written = Vec::with_capacity(PER_TASK);
                for i in 0..PER_TASK {
                    let (product, shop) = streams[(task * 7 + i) % streams.len()];
                    let command = if i % 5 == 4 {
                        inventory(
                            product,
                            shop,
                            InventoryCommand::AdjustStock {
                                delta: 2,
                                reason: "found behind the shelf".into(),
                            },
                        )
                    } else {
                        add_stock(product, shop, (i % 9 + 1) as i64)
                    };
                    written.push(execute(&store, command, ExpectedVersion::Any).await.unwrap());
                }
                written
            })
        })
        .collect();
    let mut written = Vec::new();
    for task in tasks {
        let mine = task.await.unwrap();
        assert!(
            mine.windows(2).all(|w| w[0].position < w[1].position),
            "a writer's sequential commands commit in order"
        );
        written.extend(mine);
    }

    let events = all_events(store).await;
    let total = (products.len() + TASKS * PER_TASK) as u64;
    assert_eq!(events.len() as u64, total);
    let per_stream = check_log(&events);
    assert_eq!(bus_head(store).await, total);
    assert_eq!(log_head(store).await, total);
    for written in &written {
        assert_eq!(written.events.len(), 1);
        let stored = &events[written.position as usize - 1];
        assert_eq!(
            stored, &written.events[0],
            "the answer describes exactly what was stored"
        );
    }
    for (product, shop) in streams.iter() {
        let stream = StreamId::inventory(*product, *shop);
        assert_eq!(stream_version(store, stream).await, per_stream[&stream]);
    }
}

// ---------------------------------------------------------------------------------------
// 4. Group commit
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_requests_share_one_commit() {
    const QUEUED: usize = 200;
    let t = new_store();
    let store = &t.log;
    let product = register_product(store, "BATCH-1").await;
    let shop = enroll_store(store).await;
    let head = log_head(store).await;

    // Everything queued while the writer cannot commit goes into at most two batches:
    // what it took before it blocked, and the rest (up to MAX_BATCH) in one drain.
    let lock = WriteLock::hold(&t.path);
    let mut answers = Vec::new();
    for i in 0..QUEUED {
        let expected = if i == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(i as u64)
        };
        answers.push(enqueue(store, request(add_stock(product, shop, 1), expected)).await);
    }
    lock.release();
    let mut written = Vec::new();
    for a in answers {
        written.push(answer(a).await.expect("accepted"));
    }
    // Queue order is commit order, and each request saw the one before it.
    for (i, w) in written.iter().enumerate() {
        assert_eq!(w.position, head + 1 + i as u64);
        assert_eq!(w.stream_version, i as u64 + 1);
    }
    let events = all_events(store).await;
    check_log(&events);
    let batches = commits(&events[head as usize..]);
    assert!(
        batches.len() <= 2,
        "{QUEUED} queued requests took {} commits",
        batches.len()
    );

    // And precisely one batch, arranged with a barrier.
    let head = log_head(store).await;
    let requests = (0..QUEUED).map(|_| request(add_stock(product, shop, 2), ExpectedVersion::Any));
    let results = one_batch(&t, requests.collect()).await;
    let events = all_events(store).await;
    check_log(&events);
    let batch = &events[head as usize..];
    assert_eq!(batch.len(), QUEUED);
    assert_eq!(commits(batch).len(), 1, "one commit time for the whole batch");
    for (i, result) in results.into_iter().enumerate() {
        assert_eq!(result.expect("accepted").events[0], batch[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_are_group_committed() {
    const WRITERS: usize = 16;
    const EVENTS: usize = 640;
    let t = new_store();
    let store = &t.log;
    let product = register_product(store, "BATCH-2").await;
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push((product, enroll_store(store).await));
    }
    let head = log_head(store).await;
    append_concurrently(store, &streams, EVENTS, WRITERS).await;
    let events = all_events(store).await;
    check_log(&events);
    let batches = commits(&events[head as usize..]);
    let largest = batches.values().map(Vec::len).max().unwrap_or(0);
    // Without group commit every event has its own commit time. With 16 writers waiting
    // on every fsync, batches of several requests are all but certain.
    assert!(
        batches.len() < EVENTS,
        "{EVENTS} events from {WRITERS} concurrent writers took {} commits",
        batches.len()
    );
    assert!(largest > 1 && largest <= WRITERS, "largest commit: {largest} events");
}

// ---------------------------------------------------------------------------------------
// 5. Refusals
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn refused_commands_write_nothing() {
    let t = new_store();
    let store = &t.log;
    let product = register_product(store, "REF-1").await;
    let unregistered = ProductId::new_v7();
    let shop = enroll_store(store).await;
    let stranger = StoreId::new_v7();
    execute(store, add_stock(product, shop, 5), ExpectedVersion::Any)
        .await
        .unwrap();
    let head = log_head(store).await;
    let log = all_events(store).await;

    assert_eq!(
        execute(
            store,
            reserve(product, shop, ReservationId::new_v7(), 6),
            ExpectedVersion::Any
        )
        .await,
        Err(WriteError::Domain(DomainError::InsufficientStock {
            requested: 6,
            available: 5
        }))
    );
    assert_eq!(
        execute(store, add_stock(product, stranger, 1), ExpectedVersion::Any).await,
        Err(WriteError::UnknownStore(stranger))
    );
    assert_eq!(
        execute(store, add_stock(unregistered, shop, 1), ExpectedVersion::Any).await,
        Err(WriteError::Domain(DomainError::ProductNotRegistered(unregistered)))
    );
    let nowhere = ReservationId::new_v7();
    assert_eq!(
        execute(store, commit(nowhere), ExpectedVersion::Any).await,
        Err(WriteError::UnknownReservation(nowhere))
    );
    let copycat = new_product("REF-1");
    assert_eq!(
        execute(store, register(copycat), ExpectedVersion::NoStream).await,
        Err(WriteError::SkuTaken {
            sku: "REF-1".into(),
            owner: product
        })
    );
    assert_eq!(bus_head(store).await, head, "no refusal moves the head");
    assert_eq!(all_events(store).await, log);

    // Refusals burn no positions: the next accepted write is the next position.
    let next = execute(
        store,
        reserve(product, shop, ReservationId::new_v7(), 5),
        ExpectedVersion::Any,
    )
    .await
    .unwrap();
    assert_eq!(next.position, head + 1);
    assert_eq!(next.stream_version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_inside_a_group_commit_leave_their_neighbours_intact() {
    let t = new_store();
    let store = &t.log;
    let product = register_product(store, "MIX-1").await;
    let shop = enroll_store(store).await;
    let stranger = StoreId::new_v7();
    let unregistered = ProductId::new_v7();
    execute(store, add_stock(product, shop, 3), ExpectedVersion::Any)
        .await
        .unwrap();
    let head = log_head(store).await;

    let held = ReservationId::new_v7();
    let twin_a = new_product("TWIN");
    let twin_b = new_product("TWIN");
    let requests = vec![
        request(add_stock(product, shop, 2), ExpectedVersion::Exact(1)), // ok: on hand 5
        request(reserve(product, shop, ReservationId::new_v7(), 6), ExpectedVersion::Any), // insufficient
        request(reserve(product, shop, held, 4), ExpectedVersion::Exact(2)), // ok: sees the add above
        request(add_stock(product, stranger, 1), ExpectedVersion::Any),  // unknown store
        request(add_stock(unregistered, shop, 1), ExpectedVersion::Any), // unregistered product
        request(commit(held), ExpectedVersion::Exact(3)),                // ok: finds the hold made in this batch
        request(commit(held), ExpectedVersion::Any),                     // the hold is gone
        request(register(twin_a.clone()), ExpectedVersion::NoStream),    // ok
        request(register(twin_b), ExpectedVersion::NoStream),            // sku taken within the batch
        request(add_stock(product, shop, 1), ExpectedVersion::Exact(3)), // stale: the commit made 4
        request(add_stock(product, shop, 1), ExpectedVersion::Exact(4)), // ok
    ];
    let results = one_batch(&t, requests).await;
    let accepted: Vec<u64> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|w| w.position)
        .collect();
    assert_eq!(
        accepted,
        (head + 1..=head + 5).collect::<Vec<_>>(),
        "accepted commands get consecutive positions: {results:?}"
    );
    let stream = StreamId::inventory(product, shop);
    assert!(matches!(
        results[1],
        Err(WriteError::Domain(DomainError::InsufficientStock {
            requested: 6,
            available: 5
        }))
    ));
    assert_eq!(results[3], Err(WriteError::UnknownStore(stranger)));
    assert_eq!(
        results[4],
        Err(WriteError::Domain(DomainError::ProductNotRegistered(unregistered)))
    );
    match &results[5] {
        Ok(w) => assert_eq!(
            w.events[0].payload,
            EventPayload::ReservationCommitted {
                reservation_id: held,
                quantity: 4
            }
        ),
        other => panic!("commit refused: {other:?}"),
    }
    assert_eq!(results[6], Err(WriteError::UnknownReservation(held)));
    assert_eq!(
        results[8],
        Err(WriteError::SkuTaken {
            sku: "TWIN".into(),
            owner: twin_a.id
        })
    );
    assert_eq!(
        results[9],
        Err(WriteError::VersionConflict {
            stream,
            expected: ExpectedVersion::Exact(3),
            current: 4
        })
    );
    let events = all_events(store).await;
    check_log(&events);
    assert_eq!(events.len() as u64, head + 5);
    assert_eq!(bus_head(store).await, head + 5);
    assert_eq!(stream_version(store, stream).await, 5);
}

#[tokio::test]
async fn a_reservation_id_open_on_one_stream_is_not_opened_on_another() {
    let t = new_store();
    let store = &t.log;
    let product = register_product(store, "HOLD-1").await;
    let north = enroll_store(store).await;
    let south = enroll_store(store).await;
    for shop in [north, south] {
        execute(store, add_stock(product, shop, 10), ExpectedVersion::Any)
            .await
            .unwrap();
    }
    let held = ReservationId::new_v7();
    execute(store, reserve(product, north, held, 2), ExpectedVersion::Any)
        .await
        .unwrap();
    let head = log_head(store).await;
    assert_eq!(
        execute(store, reserve(product, south, held, 3), ExpectedVersion::Any).await,
        Err(WriteError::Domain(DomainError::ReservationExists(held))),
        "reservations are addressed by id alone, so an open id must not be opened twice"
    );
    assert_eq!(bus_head(store).await, head);
    let committed = execute(store, commit(held), ExpectedVersion::Any).await.unwrap();
    assert_eq!(committed.events[0].stream, StreamId::inventory(product, north));
    assert_eq!(
        committed.events[0].payload,
        EventPayload::ReservationCommitted {
            reservation_id: held,
            quantity: 2
        }
    );

    // The same inside one batch.
    let twice = ReservationId::new_v7();
    let results = one_batch(
        &t,
        vec![
            request(reserve(product, north, twice, 1), ExpectedVersion::Any),
            request(reserve(product, south, twice, 1), ExpectedVersion::Any),
        ],
    )
    .await;
    assert!(results[0].is_ok());
    assert_eq!(
        results[1],
        Err(WriteError::Domain(DomainError::ReservationExists(twice)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_commit_rolls_back_the_whole_batch_and_leaves_no_gap() {
    const POISON: i64 = 777;
    let t = new_store();
    let store = &t.log;
    let product = register_product(store, "FAIL-1").await;
    let north = enroll_store(store).await;
    let south = enroll_store(store).await;
    execute(store, add_stock(product, north, 1), ExpectedVersion::Any)
        .await
        .unwrap();
    let head = log_head(store).await;
    let log = all_events(store).await;
    // Make SQLite refuse one particular event, as a full disk or an I/O error would.
    rusqlite::Connection::open(&t.path)
        .unwrap()
        .execute_batch(&format!(
            "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.data LIKE '%\"quantity\":{POISON}%'
             BEGIN SELECT RAISE(ABORT, 'poisoned event'); END;"
        ))
        .unwrap();

    let north_add = request(add_stock(product, north, 1), ExpectedVersion::Exact(1));
    let south_add = request(add_stock(product, south, 1), ExpectedVersion::NoStream);
    let results = one_batch(
        &t,
        vec![
            north_add.clone(),
            request(add_stock(product, north, POISON), ExpectedVersion::Any),
            south_add.clone(),
        ],
    )
    .await;
    for result in &results {
        match result {
            Err(WriteError::Storage(message)) => assert!(message.contains("poisoned event"), "{message}"),
            other => panic!("every job of the failed batch fails: {other:?}"),
        }
    }
    assert_eq!(bus_head(store).await, head);
    assert_eq!(all_events(store).await, log, "nothing of the batch was written");

    // The writer's heads were not moved either: the same requests now succeed, in the
    // positions and versions the failed batch would have used.
    let north_written = store.execute(north_add).await.unwrap();
    let south_written = store.execute(south_add).await.unwrap();
    assert!(!north_written.duplicate && !south_written.duplicate);
    assert_eq!((north_written.position, north_written.stream_version), (head + 1, 2));
    assert_eq!((south_written.position, south_written.stream_version), (head + 2, 1));
    check_log(&all_events(store).await);
}

// ---------------------------------------------------------------------------------------
// 6. Restart
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_reopened_store_keeps_its_heads_and_indexes() {
    let t = new_store();
    let store = &t.log;
    let renamed = new_product("OLD-SKU");
    let kept = register_product(store, "KEPT").await;
    execute(store, register(renamed.clone()), ExpectedVersion::NoStream)
        .await
        .unwrap();
    let renamed = Product {
        sku: "NEW-SKU".into(),
        ..renamed
    };
    execute(store, update(renamed.clone()), ExpectedVersion::Exact(1))
        .await
        .unwrap();
    let shop = enroll_store(store).await;
    let stream = StreamId::inventory(kept, shop);
    let first = request(add_stock(kept, shop, 10), ExpectedVersion::NoStream);
    let first_written = store.execute(first.clone()).await.unwrap();
    let held = ReservationId::new_v7();
    let released = ReservationId::new_v7();
    execute(store, reserve(kept, shop, held, 4), ExpectedVersion::Exact(1))
        .await
        .unwrap();
    execute(store, reserve(kept, shop, released, 1), ExpectedVersion::Exact(2))
        .await
        .unwrap();
    execute(
        store,
        Command::Inventory {
            target: InventoryTarget::Reservation(released),
            command: InventoryCommand::ReleaseStock {
                reservation_id: released,
                reason: shelfsync_common::domain::event::ReleaseReason::Cancelled,
            },
        },
        ExpectedVersion::Exact(3),
    )
    .await
    .unwrap();
    let head = log_head(store).await;
    let log = all_events(store).await;

    store.close().await;
    assert_eq!(
        execute(store, add_stock(kept, shop, 1), ExpectedVersion::Any).await,
        Err(WriteError::Unavailable),
        "a closed store takes no writes"
    );

    let reopened = open_store(&t.path);
    assert_eq!(reopened.bus().head(), head);
    assert_eq!(all_events(&reopened).await, log);
    assert_eq!(stream_version(&reopened, stream).await, 4);
    // Stream heads: the version is known without reading the log.
    assert_eq!(
        execute(&reopened, add_stock(kept, shop, 1), ExpectedVersion::Exact(3)).await,
        Err(WriteError::VersionConflict {
            stream,
            expected: ExpectedVersion::Exact(3),
            current: 4
        })
    );
    // Inventory state: 10 on hand, 4 held.
    assert_eq!(
        execute(
            &reopened,
            reserve(kept, shop, ReservationId::new_v7(), 7),
            ExpectedVersion::Any
        )
        .await,
        Err(WriteError::Domain(DomainError::InsufficientStock {
            requested: 7,
            available: 6
        }))
    );
    // Reservation index: the open hold is found by id, the released one is not.
    assert_eq!(
        execute(&reopened, commit(released), ExpectedVersion::Any).await,
        Err(WriteError::UnknownReservation(released))
    );
    let sold = execute(&reopened, commit(held), ExpectedVersion::Exact(4))
        .await
        .unwrap();
    assert_eq!(sold.position, head + 1, "positions continue where they stopped");
    assert_eq!(sold.stream_version, 5);
    assert_eq!(sold.events[0].stream, stream);
    assert_eq!(
        sold.events[0].payload,
        EventPayload::ReservationCommitted {
            reservation_id: held,
            quantity: 4
        }
    );
    // SKU index: taken SKUs stay taken, a SKU given up is free.
    assert_eq!(
        execute(&reopened, register(new_product("KEPT")), ExpectedVersion::NoStream).await,
        Err(WriteError::SkuTaken {
            sku: "KEPT".into(),
            owner: kept
        })
    );
    assert_eq!(
        execute(&reopened, register(new_product("NEW-SKU")), ExpectedVersion::NoStream).await,
        Err(WriteError::SkuTaken {
            sku: "NEW-SKU".into(),
            owner: renamed.id
        })
    );
    execute(&reopened, register(new_product("OLD-SKU")), ExpectedVersion::NoStream)
        .await
        .expect("the SKU a product gave up is free again");
    // Stores: still enrolled, and an unknown one still unknown.
    let stranger = StoreId::new_v7();
    assert_eq!(
        execute(&reopened, add_stock(kept, stranger, 1), ExpectedVersion::Any).await,
        Err(WriteError::UnknownStore(stranger))
    );
    // Idempotency: a retry of a write from before the restart is still a duplicate.
    let retried = reopened.execute(first).await.unwrap();
    assert!(retried.duplicate);
    assert_eq!(retried.events, first_written.events);
    let head = log_head(&reopened).await;
    reopened.close().await;

    // The commit made after the first restart survives the second.
    let again = open_store(&t.path);
    assert_eq!(again.bus().head(), head);
    assert_eq!(
        execute(&again, commit(held), ExpectedVersion::Any).await,
        Err(WriteError::UnknownReservation(held))
    );
    check_log(&all_events(&again).await);
    again.close().await;
}

// ---------------------------------------------------------------------------------------
// 7. The feed
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_feed_from_zero_returns_the_whole_history_in_order() {
    const HISTORY: usize = 3000;
    let t = new_store();
    let store = &t.log;
    let product = register_product(store, "FEED-1").await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push((product, enroll_store(store).await));
    }
    append_concurrently(store, &streams, HISTORY, 8).await;
    let log = all_events(store).await;
    let head = log_head(store).await;
    assert_eq!(head, HISTORY as u64 + 1);
    check_log(&log);

    let mut feed = store.feed(0);
    assert!(!feed.caught_up());
    assert_eq!(read_feed_until(&mut feed, head).await, log);
    assert!(feed.caught_up());

    let mut from_middle = store.feed(1234);
    assert_eq!(read_feed_until(&mut from_middle, head).await, log[1234..]);

    // A caught-up feed follows the bus: the next commit arrives live.
    let (product, shop) = streams[0];
    let written = execute(store, add_stock(product, shop, 1), ExpectedVersion::Any)
        .await
        .unwrap();
    for feed in [&mut feed, &mut from_middle] {
        let next = read_feed_until(feed, head + 1).await;
        assert_eq!(next, written.events);
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_feed_yields_every_event_once_even_after_the_bus_overflowed() {
    const LIVE: usize = 1000;
    const UNREAD: usize = 4000;
    let t = new_store();
    let store = &t.log;
    let product = register_product(store, "FEED-2").await;
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push((product, enroll_store(store).await));
    }
    let start = log_head(store).await;
    let mut feed = store.feed(start);
    assert!(feed.caught_up());

    // Read while four writers append.
    let writing = {
        let store = store.clone();
        let streams = streams.clone();
        tokio::spawn(async move { append_concurrently(&store, &streams, LIVE, 4).await })
    };
    let mut seen = read_feed_until(&mut feed, start + LIVE as u64).await;
    writing.await.unwrap();

    // Park the caught-up feed inside its bus receiver, then stop polling it while two
    // writers append: each commit holds at most two events, so more batches are
    // published than the bus keeps (1024). The parked receiver wakes up lagged, and the
    // feed must re-read what it missed from the store.
    let mut parked = Box::pin(feed.next());
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut parked)
            .await
            .is_err(),
        "a caught-up feed waits for the bus"
    );
    append_concurrently(store, &streams, UNREAD, 2).await;
    let end = start + (LIVE + UNREAD) as u64;
    assert_eq!(bus_head(store).await, end);
    let page = tokio::time::timeout(PATIENCE, parked)
        .await
        .expect("the lagged feed answers")
        .expect("the bus is open")
        .expect("the store reads");
    assert_eq!(page.first().map(|e| e.position), Some(start + LIVE as u64 + 1));
    seen.extend(page);
    seen.extend(read_feed_until(&mut feed, end).await);
    let log = all_events(store).await;
    let unread_commits = commits(&log[start as usize + LIVE..]).len();
    assert!(
        unread_commits > 1024,
        "only {unread_commits} commits while the feed was not read"
    );
    assert!(feed.caught_up());
    let positions: Vec<u64> = seen.iter().map(|e| e.position).collect();
    assert_eq!(
        positions,
        (start + 1..=end).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(seen, log[start as usize..]);

    // After the overflow the feed still follows the bus.
    let (product, shop) = streams[0];
    let written = execute(store, add_stock(product, shop, 1), ExpectedVersion::Any)
        .await
        .unwrap();
    assert_eq!(read_feed_until(&mut feed, end + 1).await, written.events);
    store.close().await;
}

#[tokio::test]
async fn a_feed_re_reads_from_the_store_when_a_batch_does_not_follow_its_cursor() {
    let t = new_store();
    let store = &t.log;
    let product = register_product(store, "FEED-3").await;
    let shop = enroll_store(store).await;
    for _ in 0..9 {
        execute(store, add_stock(product, shop, 1), ExpectedVersion::Any)
            .await
            .unwrap();
    }
    assert_eq!(all_events(store).await.len(), 10);

    // A bus of its own, at head 10: the feed reads the store once, finds nothing newer,
    // and then waits on this bus.
    let bus = EventBus::new();
    bus.set_head(10);
    let mut feed = EventFeed::new(store.reads().clone(), &bus, 10);
    assert!(feed.caught_up());
    let mut parked = Box::pin(feed.next());
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut parked)
            .await
            .is_err(),
        "a caught-up feed waits for the bus"
    );
    for _ in 0..11 {
        execute(store, add_stock(product, shop, 1), ExpectedVersion::Any)
            .await
            .unwrap();
    }
    let log = all_events(store).await;
    assert_eq!(log.len(), 21);
    // The next batch it hears of starts at 16: 11..=15 went by unheard.
    bus.publish(log[15..].to_vec());
    let page = tokio::time::timeout(PATIENCE, parked)
        .await
        .expect("the feed answers")
        .expect("the bus is open")
        .expect("the store reads");
    assert_eq!(
        page.first().map(|e| e.position),
        Some(11),
        "the gap is read from the store"
    );
    let mut seen = page;
    seen.extend(read_feed_until(&mut feed, 21).await);
    assert_eq!(seen, log[10..]);
}

// ---------------------------------------------------------------------------------------
// 8. Expected versions
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn expected_versions_are_checked_against_the_stream() {
    let t = new_store();
    let store = &t.log;
    let product = register_product(store, "EXP-1").await;
    let north = enroll_store(store).await;
    let south = enroll_store(store).await;
    let north_stream = StreamId::inventory(product, north);
    let south_stream = StreamId::inventory(product, south);

    // no_stream
    let created = execute(store, add_stock(product, north, 1), ExpectedVersion::NoStream)
        .await
        .unwrap();
    assert_eq!(created.stream_version, 1);
    assert_eq!(
        execute(store, add_stock(product, north, 1), ExpectedVersion::NoStream).await,
        Err(WriteError::VersionConflict {
            stream: north_stream,
            expected: ExpectedVersion::NoStream,
            current: 1
        })
    );
    // exists
    let head = log_head(store).await;
    assert_eq!(
        execute(store, add_stock(product, south, 1), ExpectedVersion::Exists).await,
        Err(WriteError::VersionConflict {
            stream: south_stream,
            expected: ExpectedVersion::Exists,
            current: 0
        })
    );
    assert_eq!(bus_head(store).await, head, "a conflict writes nothing");
    assert_eq!(
        stream_version(store, south_stream).await,
        0,
        "the refused stream was not created"
    );
    assert_eq!(
        execute(store, add_stock(product, north, 1), ExpectedVersion::Exists)
            .await
            .unwrap()
            .stream_version,
        2
    );
    // exact
    assert_eq!(
        execute(store, add_stock(product, north, 1), ExpectedVersion::Exact(1)).await,
        Err(WriteError::VersionConflict {
            stream: north_stream,
            expected: ExpectedVersion::Exact(1),
            current: 2
        })
    );
    assert_eq!(
        execute(store, add_stock(product, north, 1), ExpectedVersion::Exact(3)).await,
        Err(WriteError::VersionConflict {
            stream: north_stream,
            expected: ExpectedVersion::Exact(3),
            current: 2
        })
    );
    assert_eq!(
        execute(store, add_stock(product, south, 1), ExpectedVersion::Exact(0))
            .await
            .unwrap()
            .stream_version,
        1,
        "exact 0 is a new stream"
    );
    // any
    assert_eq!(
        execute(store, add_stock(product, north, 1), ExpectedVersion::Any)
            .await
            .unwrap()
            .stream_version,
        3
    );
    // The catalog stream has its own version.
    let catalog = StreamId::catalog(product);
    let renamed = Product {
        id: product,
        sku: "EXP-2".into(),
        name: "Renamed".into(),
        price_minor: 1,
    };
    assert_eq!(
        execute(store, update(renamed.clone()), ExpectedVersion::Exact(3)).await,
        Err(WriteError::VersionConflict {
            stream: catalog,
            expected: ExpectedVersion::Exact(3),
            current: 1
        })
    );
    assert_eq!(
        execute(store, update(renamed), ExpectedVersion::Exact(1))
            .await
            .unwrap()
            .stream_version,
        2
    );
    let fresh = new_product("EXP-3");
    assert_eq!(
        execute(store, register(fresh.clone()), ExpectedVersion::Exists).await,
        Err(WriteError::VersionConflict {
            stream: StreamId::catalog(fresh.id),
            expected: ExpectedVersion::Exists,
            current: 0
        })
    );
    check_log(&all_events(store).await);
}

// ---------------------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------------------

fn token(role: &str, name: &str, store_id: Option<StoreId>) -> super::reader::TokenRecord {
    super::reader::TokenRecord {
        id: uuid::Uuid::now_v7(),
        name: name.into(),
        role: role.into(),
        store_id,
        secret_sha256: Sha256::digest(uuid::Uuid::now_v7().as_bytes()).into(),
        created_at: OffsetDateTime::now_utc(),
        revoked_at: None,
    }
}

#[tokio::test]
async fn token_names_are_per_role_and_revocations_name_the_stores_they_hit() {
    use super::{RevokedTokens, TokenSelector};
    let TestStore { log: store, .. } = new_store();
    let shop = enroll_store(&store).await;
    let name = format!("store-{shop}");
    store
        .add_token(token("store", &name, Some(shop)))
        .await
        .expect("store token");
    store
        .add_token(token("channel", &name, None))
        .await
        .expect("same name, other role");
    assert!(matches!(
        store.add_token(token("channel", &name, None)).await,
        Err(WriteError::TokenNameTaken(_))
    ));

    let by_name = store.revoke_tokens(TokenSelector::Channel(name.clone())).await.unwrap();
    assert_eq!(
        by_name,
        RevokedTokens {
            count: 1,
            stores: vec![]
        },
        "only the channel token"
    );
    let rotated = store
        .rotate_store_token(shop, token("store", &name, Some(shop)))
        .await
        .unwrap();
    assert_eq!(
        rotated,
        RevokedTokens {
            count: 1,
            stores: vec![shop]
        }
    );
    let revoked = store.revoke_tokens(TokenSelector::Store(shop)).await.unwrap();
    assert_eq!(
        revoked,
        RevokedTokens {
            count: 1,
            stores: vec![shop]
        },
        "the rotated token was live"
    );

    let unknown = StoreId::new_v7();
    assert!(matches!(
        store
            .rotate_store_token(unknown, token("store", "store-x", Some(unknown)))
            .await,
        Err(WriteError::UnknownStore(_))
    ));
}
