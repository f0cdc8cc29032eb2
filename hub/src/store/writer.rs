//! The single writer: one thread owns the only write connection and group-commits.
//!
//! It blocks for the first queued job, drains whatever else is queued (up to
//! [`MAX_BATCH`]), runs every job against in-memory stream heads, writes all of their rows
//! in one transaction, fsyncs once on commit, and only then answers the callers and
//! publishes the events. Positions are handed out from an in-memory counter that only
//! moves forward when a commit succeeds, so the log is gap-free and commit-ordered.
//! If SQLite fails anywhere in a batch, the whole batch rolls back and every caller in
//! it gets a retryable storage error: nothing is half-written.

use super::facts;
use super::reader::{envelope_from_row, format_time, StoreStats, TokenRecord, EVENT_COLUMNS};
use super::schema::{self, EVENT_STORE};
use super::{AppendError, Command, CommandRequest, InventoryTarget, StoreError, StreamState, TokenSelector};
use crate::bus::EventBus;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use shelfsync_common::catalog::{self, CatalogCommand, CatalogState};
use shelfsync_common::inventory::{self, InventoryCommand, InventoryState};
use shelfsync_common::sqlite::{settle, Deferred};
use shelfsync_common::sync::{UploadEvent, UploadOutcome, UploadResult};
use shelfsync_common::wire::{StoreInfo, WriteResult};
use shelfsync_common::write_gate::{self, WriteGate};
use shelfsync_common::{
    DomainError, EventEnvelope, EventId, EventMetadata, EventPayload, Origin, ProductId, ReservationId, StoreId,
    StreamId,
};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

/// Most jobs committed in one transaction.
pub const MAX_BATCH: usize = 1024;
/// Jobs that may wait in the queue before senders are slowed down.
const QUEUE_DEPTH: usize = 8192;

type Reply<T> = oneshot::Sender<Result<T, AppendError>>;

/// A queued request to the writer.
pub(super) struct Job {
    op: Op,
    queued_at: Instant,
    gate: Option<WriteGate>,
}

impl Job {
    /// A job for `op`, carrying the gate of the request being served (if any).
    pub(super) fn new(op: Op) -> Self {
        Self {
            op,
            queued_at: Instant::now(),
            gate: write_gate::current(),
        }
    }
}

/// A write taken from the queue, with what it was queued with.
struct Queued {
    op: WriteOp,
    queued_at: Instant,
    gate: Option<WriteGate>,
}

/// What the writer can be asked to do.
pub(super) enum Op {
    /// A write that joins the current group commit.
    Write(WriteOp),
    /// Checkpoint the WAL (runs alone, after what was queued before it).
    Checkpoint(Reply<()>),
    /// Stop after what was queued before it.
    Shutdown(oneshot::Sender<()>),
}

/// A write that shares a transaction with the others queued beside it.
pub(super) enum WriteOp {
    Command(Box<CommandRequest>, Reply<WriteResult>),
    AddStore {
        id: StoreId,
        name: String,
        token: Option<Box<TokenRecord>>,
        reply: Reply<StoreInfo>,
    },
    Upload {
        store: StoreId,
        events: Vec<UploadEvent>,
        reply: Reply<Vec<UploadResult>>,
    },
    AddToken(Box<TokenRecord>, Reply<()>),
    RevokeTokens(TokenSelector, Reply<usize>),
}

/// One stream's committed head.
#[derive(Debug, Clone)]
struct StreamHead {
    state: StreamState,
    last_position: u64,
}

/// Everything the writer keeps in memory, as of the last commit.
#[derive(Debug, Default)]
struct Heads {
    next_position: u64,
    streams: HashMap<StreamId, StreamHead>,
    skus: HashMap<String, ProductId>,
    reservations: HashMap<ReservationId, StreamId>,
    stores: HashSet<StoreId>,
}

/// Opens the file, migrates it, loads the heads and starts the writer thread.
pub(super) fn start(path: &Path, bus: EventBus) -> Result<Started, StoreError> {
    let mut conn = schema::open_durable(path)?;
    schema::migrate(&mut conn, EVENT_STORE)?;
    let id_key = shelfsync_common::sqlite::id_key(&conn)?;
    let heads = load_heads(&conn)?;
    let head = heads.next_position - 1;
    let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
    let thread = std::thread::Builder::new()
        .name("event-store-writer".into())
        .spawn(move || run(conn, heads, queue, bus))
        .map_err(|e| StoreError::Join(e.to_string()))?;
    Ok(Started {
        jobs,
        thread,
        head,
        id_key,
    })
}

/// What [`start`] hands back: the job queue, the writer thread, the head position, and
/// the key that derives event ids from idempotency keys.
pub(super) struct Started {
    pub jobs: mpsc::Sender<Job>,
    pub thread: std::thread::JoinHandle<()>,
    pub head: u64,
    pub id_key: shelfsync_common::IdKey,
}

fn load_heads(conn: &Connection) -> Result<Heads, StoreError> {
    let mut heads = Heads::default();
    let max: Option<i64> = conn.query_row("SELECT MAX(position) FROM events", [], |r| r.get(0))?;
    heads.next_position = max.unwrap_or(0) as u64 + 1;
    let mut stmt = conn.prepare("SELECT stream_key, last_position, state FROM streams")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let key: Vec<u8> = row.get(0)?;
        let last_position: i64 = row.get(1)?;
        let state: String = row.get(2)?;
        let stream = StreamId::from_key(&key).ok_or_else(|| StoreError::Corrupt("bad stream key".into()))?;
        let state: StreamState =
            serde_json::from_str(&state).map_err(|e| StoreError::Corrupt(format!("stream {stream}: {e}")))?;
        index_state(&mut heads, stream, &state);
        heads.streams.insert(
            stream,
            StreamHead {
                state,
                last_position: last_position as u64,
            },
        );
    }
    let mut stmt = conn.prepare("SELECT id FROM stores")?;
    let stores = stmt.query_map([], |row| row.get::<_, [u8; 16]>(0))?;
    for id in stores {
        heads.stores.insert(StoreId::from_bytes(id?));
    }
    tracing::info!(
        head = heads.next_position - 1,
        streams = heads.streams.len(),
        stores = heads.stores.len(),
        "event store opened"
    );
    Ok(heads)
}

fn index_state(heads: &mut Heads, stream: StreamId, state: &StreamState) {
    match state {
        StreamState::Catalog(CatalogState {
            product: Some(product), ..
        }) => {
            heads.skus.insert(product.sku.clone(), product.id);
        }
        StreamState::Catalog(_) => {}
        StreamState::Inventory(inv) => {
            for id in inv.reservations.keys() {
                heads.reservations.insert(*id, stream);
            }
        }
    }
}

fn run(mut conn: Connection, mut heads: Heads, mut queue: mpsc::Receiver<Job>, bus: EventBus) {
    while let Some(first) = queue.blocking_recv() {
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job.op {
                Op::Checkpoint(reply) => {
                    let _ = reply.send(checkpoint(&conn));
                }
                Op::Shutdown(reply) => {
                    tracing::info!("event store writer stopped");
                    let _ = reply.send(());
                    return;
                }
                Op::Write(op) => {
                    let mut writes = vec![Queued {
                        op,
                        queued_at: job.queued_at,
                        gate: job.gate,
                    }];
                    while writes.len() < MAX_BATCH {
                        match queue.try_recv() {
                            Ok(Job {
                                op: Op::Write(op),
                                queued_at,
                                gate,
                            }) => writes.push(Queued { op, queued_at, gate }),
                            Ok(barrier) => {
                                next = Some(barrier);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    commit_batch(&mut conn, &mut heads, writes, &bus);
                }
            }
        }
    }
    tracing::info!("event store writer stopped: every handle dropped");
}

fn checkpoint(conn: &Connection) -> Result<(), AppendError> {
    let busy: i64 = conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0))
        .map_err(|e| AppendError::Storage(e.to_string()))?;
    if busy != 0 {
        tracing::debug!("WAL checkpoint could not finish: readers active");
    }
    Ok(())
}

type Pending = Deferred<AppendError>;

impl WriteOp {
    /// The answer owed to a job the batch never reached.
    fn unanswered(self) -> Pending {
        match self {
            WriteOp::Command(_, reply) => Pending::new(reply, Err(AppendError::Unavailable)),
            WriteOp::AddStore { reply, .. } => Pending::new(reply, Err(AppendError::Unavailable)),
            WriteOp::AddToken(_, reply) => Pending::new(reply, Err(AppendError::Unavailable)),
            WriteOp::RevokeTokens(_, reply) => Pending::new(reply, Err(AppendError::Unavailable)),
            WriteOp::Upload { reply, .. } => Pending::new(reply, Err(AppendError::Unavailable)),
        }
    }
}

fn commit_batch(conn: &mut Connection, heads: &mut Heads, jobs: Vec<Queued>, bus: &EventBus) {
    let started = Instant::now();
    // A job whose request already answered "timed out" must not be written.
    let jobs: Vec<WriteOp> = jobs
        .into_iter()
        .filter_map(|job| {
            metrics::histogram!("shelfsync_hub_append_queue_seconds").record(job.queued_at.elapsed().as_secs_f64());
            if job.gate.as_ref().is_none_or(WriteGate::claim) {
                Some(job.op)
            } else {
                metrics::counter!("shelfsync_hub_append_abandoned_total").increment(1);
                None
            }
        })
        .collect();
    let size = jobs.len();
    if size == 0 {
        return;
    }
    let mut outcomes = Vec::with_capacity(size);
    let mut jobs = jobs.into_iter();
    let result = (|| -> rusqlite::Result<Changes> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut batch = Batch::new(heads);
        for op in jobs.by_ref() {
            batch.run(&tx, op, &mut outcomes)?;
        }
        let changes = batch.finish(&tx)?;
        tx.commit()?;
        Ok(changes)
    })();
    match result {
        Ok(changes) => {
            let events = changes.apply_to(heads);
            metrics::histogram!("shelfsync_hub_append_batch_jobs").record(size as f64);
            metrics::histogram!("shelfsync_hub_append_commit_seconds").record(started.elapsed().as_secs_f64());
            metrics::counter!("shelfsync_hub_events_appended_total").increment(events.len() as u64);
            // Publish before answering, so that the bus head is never behind a position
            // a caller has already been given.
            if !events.is_empty() {
                bus.publish(events);
            }
            outcomes.into_iter().for_each(Deferred::send);
        }
        Err(error) => {
            tracing::error!(%error, jobs = size, "append batch rolled back");
            let error = AppendError::Storage(error.to_string());
            outcomes.into_iter().for_each(|o| o.fail(&error));
            // Jobs the batch never reached (BEGIN failed, or an earlier job did).
            jobs.for_each(|op| op.unanswered().fail(&error));
        }
    }
}

/// What one batch changed, applied to [`Heads`] only after its commit.
#[derive(Default)]
struct Changes {
    next_position: u64,
    streams: HashMap<StreamId, StreamHead>,
    skus: HashMap<String, Option<ProductId>>,
    reservations: HashMap<ReservationId, Option<StreamId>>,
    stores: Vec<StoreId>,
    stats: HashMap<StoreId, StoreStats>,
    events: Vec<EventEnvelope>,
}

impl Changes {
    fn apply_to(self, heads: &mut Heads) -> Vec<EventEnvelope> {
        heads.next_position = self.next_position;
        heads.streams.extend(self.streams);
        for (sku, owner) in self.skus {
            match owner {
                Some(id) => heads.skus.insert(sku, id),
                None => heads.skus.remove(&sku),
            };
        }
        for (id, stream) in self.reservations {
            match stream {
                Some(stream) => heads.reservations.insert(id, stream),
                None => heads.reservations.remove(&id),
            };
        }
        heads.stores.extend(self.stores);
        self.events
    }
}

/// A batch in progress: the committed heads plus this batch's changes on top.
struct Batch<'h> {
    heads: &'h Heads,
    changes: Changes,
    /// Event ids first written in this batch, with their fingerprint and envelope.
    written: HashMap<EventId, ([u8; 16], EventEnvelope)>,
    now: OffsetDateTime,
}

impl<'h> Batch<'h> {
    fn new(heads: &'h Heads) -> Self {
        Self {
            heads,
            changes: Changes {
                next_position: heads.next_position,
                ..Changes::default()
            },
            written: HashMap::new(),
            now: OffsetDateTime::now_utc(),
        }
    }

    /// Runs one job and records its outcome. On a SQLite error the job's reply is still
    /// recorded, so that its caller too hears that the batch failed.
    fn run(&mut self, tx: &Transaction<'_>, op: WriteOp, outcomes: &mut Vec<Pending>) -> rusqlite::Result<()> {
        let storage = |error: &rusqlite::Error| AppendError::Storage(error.to_string());
        match op {
            WriteOp::Command(request, reply) => {
                let result = self.command(tx, *request);
                settle(outcomes, reply, result, storage)
            }
            WriteOp::AddStore { id, name, token, reply } => {
                let result = self.add_store(tx, id, name, token.map(|t| *t));
                settle(outcomes, reply, result, storage)
            }
            WriteOp::AddToken(token, reply) => {
                let result = self.add_token(tx, *token);
                settle(outcomes, reply, result, storage)
            }
            WriteOp::RevokeTokens(selector, reply) => {
                let result = self.revoke_tokens(tx, selector);
                settle(outcomes, reply, result, storage)
            }
            WriteOp::Upload { store, events, reply } => {
                let result = self.upload(tx, store, events).map(Ok);
                settle(outcomes, reply, result, storage)
            }
        }
    }

    fn add_token(&mut self, tx: &Transaction<'_>, token: TokenRecord) -> rusqlite::Result<Result<(), AppendError>> {
        if super::reader::live_token_named(tx, &token.name).map_err(into_sqlite)? {
            return Ok(Err(AppendError::TokenNameTaken(token.name)));
        }
        tx.prepare_cached(
            "INSERT INTO tokens (id, name, role, store_id, secret_sha256, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            &token.id.as_bytes()[..],
            token.name,
            token.role,
            token.store_id.map(|s| s.as_bytes().to_vec()),
            &token.secret_sha256[..],
            format_time(token.created_at),
        ])?;
        Ok(Ok(()))
    }

    fn revoke_tokens(
        &mut self,
        tx: &Transaction<'_>,
        selector: TokenSelector,
    ) -> rusqlite::Result<Result<usize, AppendError>> {
        let now = format_time(self.now);
        let revoked = match selector {
            TokenSelector::Store(store) => tx.execute(
                "UPDATE tokens SET revoked_at = ?1 WHERE store_id = ?2 AND revoked_at IS NULL",
                params![now, &store.as_bytes()[..]],
            )?,
            TokenSelector::Name(name) => tx.execute(
                "UPDATE tokens SET revoked_at = ?1 WHERE name = ?2 AND revoked_at IS NULL",
                params![now, name],
            )?,
        };
        Ok(Ok(revoked))
    }

    fn add_store(
        &mut self,
        tx: &Transaction<'_>,
        id: StoreId,
        name: String,
        token: Option<TokenRecord>,
    ) -> rusqlite::Result<Result<StoreInfo, AppendError>> {
        if self.store_known(id) {
            return Ok(Err(AppendError::StoreExists(id)));
        }
        if let Some(token) = &token {
            if super::reader::live_token_named(tx, &token.name).map_err(into_sqlite)? {
                return Ok(Err(AppendError::TokenNameTaken(token.name.clone())));
            }
        }
        // The store row first: the token references it.
        tx.prepare_cached("INSERT INTO stores (id, name, created_at) VALUES (?1, ?2, ?3)")?
            .execute(params![&id.as_bytes()[..], name, format_time(self.now)])?;
        self.changes.stores.push(id);
        if let Some(token) = token {
            // Cannot be refused: its name was checked above, in this transaction.
            if let Err(error) = self.add_token(tx, token)? {
                return Ok(Err(error));
            }
        }
        Ok(Ok(StoreInfo {
            id,
            name,
            created_at: self.now,
            revoked: false,
        }))
    }

    /// Records every uploaded event of `store` that may be recorded; one result each.
    fn upload(
        &mut self,
        tx: &Transaction<'_>,
        store: StoreId,
        events: Vec<UploadEvent>,
    ) -> rusqlite::Result<Vec<UploadResult>> {
        let mut results = Vec::with_capacity(events.len());
        for event in events {
            let event_id = event.event_id;
            let outcome = self.record_fact(tx, store, event)?;
            results.push(UploadResult { event_id, outcome });
        }
        Ok(results)
    }

    /// Records one store fact after whatever its stream holds (never refused for stock),
    /// and `OversellDetected` after it when it left the stream oversold.
    fn record_fact(
        &mut self,
        tx: &Transaction<'_>,
        store: StoreId,
        event: UploadEvent,
    ) -> rusqlite::Result<UploadOutcome> {
        if let Err(rejection) = facts::authorize(store, &event) {
            return Ok(self.rejected(store, rejection.reason, rejection.detail));
        }
        let fingerprint = facts::fingerprint(&event);
        if let Some((earlier, original)) = self.earlier_write(tx, event.event_id)? {
            if earlier == fingerprint {
                return Ok(UploadOutcome::Duplicate {
                    position: original.position,
                    stream_version: original.stream_version,
                });
            }
            return Ok(self.rejected(
                store,
                "event_id_reused",
                "this event id was recorded with other content".into(),
            ));
        }
        let facts::Fact { payload, metadata } =
            match facts::check(store, &event, |product| self.product_registered(product)) {
                Ok(fact) => fact,
                Err(rejection) => return Ok(self.rejected(store, rejection.reason, rejection.detail)),
            };
        let stream = event.stream;
        if let EventPayload::StockReserved { reservation_id, .. } = &payload {
            // Open anywhere, this stream included: a second hold under one id would
            // silently replace the first (`apply` keys holds by id).
            if self.reservation_stream(reservation_id).is_some() {
                let detail = format!("reservation {reservation_id} is already open");
                return Ok(self.rejected(store, "reservation_id_in_use", detail));
            }
        }
        let mut state = self
            .stream(&stream)
            .map_or(StreamState::Inventory(InventoryState::default()), |h| h.state.clone());
        let StreamState::Inventory(before) = state.clone() else {
            return Ok(self.rejected(store, "wrong_store", "not an inventory stream".into()));
        };
        let recorded = self.append_event(
            tx,
            stream,
            &mut state,
            payload,
            (event.event_id, fingerprint),
            &metadata,
        )?;
        if let StreamState::Inventory(after) = &state {
            if let Some(oversell) = inventory::oversell_after(&before, after, event.event_id) {
                let metadata = EventMetadata {
                    origin: Origin::Hub,
                    actor: "hub:oversell-rule".into(),
                    correlation_id: metadata.correlation_id,
                    causation_id: Some(event.event_id.0),
                    occurred_at: self.now,
                    recorded_at: None,
                };
                self.append_event(
                    tx,
                    stream,
                    &mut state,
                    oversell,
                    (EventId::new_v7(), [0; 16]),
                    &metadata,
                )?;
                self.changes.stats.entry(store).or_default().oversells += 1;
                tracing::warn!(%stream, caused_by = %event.event_id, "oversell detected");
            }
        }
        self.set_head(stream, state);
        Ok(UploadOutcome::Appended {
            position: recorded.position,
            stream_version: recorded.stream_version,
        })
    }

    fn rejected(&mut self, store: StoreId, reason: &'static str, detail: String) -> UploadOutcome {
        self.changes.stats.entry(store).or_default().rejected_uploads += 1;
        UploadOutcome::Rejected {
            reason: reason.into(),
            detail,
        }
    }

    fn store_known(&self, id: StoreId) -> bool {
        self.heads.stores.contains(&id) || self.changes.stores.contains(&id)
    }

    fn stream(&self, id: &StreamId) -> Option<&StreamHead> {
        self.changes.streams.get(id).or_else(|| self.heads.streams.get(id))
    }

    fn sku_owner(&self, sku: &str) -> Option<ProductId> {
        match self.changes.skus.get(sku) {
            Some(owner) => *owner,
            None => self.heads.skus.get(sku).copied(),
        }
    }

    fn reservation_stream(&self, id: &ReservationId) -> Option<StreamId> {
        match self.changes.reservations.get(id) {
            Some(stream) => *stream,
            None => self.heads.reservations.get(id).copied(),
        }
    }

    fn product_registered(&self, product: ProductId) -> bool {
        matches!(
            self.stream(&StreamId::catalog(product)).map(|h| &h.state),
            Some(StreamState::Catalog(CatalogState { product: Some(_), .. }))
        )
    }

    /// The original answer when `event_id` was already written.
    fn earlier_write(
        &self,
        tx: &Transaction<'_>,
        event_id: EventId,
    ) -> rusqlite::Result<Option<([u8; 16], EventEnvelope)>> {
        if let Some(found) = self.written.get(&event_id) {
            return Ok(Some(found.clone()));
        }
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS}, fingerprint FROM events WHERE event_id = ?1"
        ))?;
        stmt.query_row([&event_id.as_bytes()[..]], |row| {
            let envelope = envelope_from_row(row).map_err(into_sqlite)?;
            Ok((row.get::<_, [u8; 16]>(8)?, envelope))
        })
        .optional()
    }

    fn command(
        &mut self,
        tx: &Transaction<'_>,
        request: CommandRequest,
    ) -> rusqlite::Result<Result<WriteResult, AppendError>> {
        if let Some((fingerprint, original)) = self.earlier_write(tx, request.event_id)? {
            if fingerprint != request.fingerprint {
                return Ok(Err(AppendError::IdempotencyConflict(request.event_id)));
            }
            return Ok(Ok(WriteResult {
                stream_version: original.stream_version,
                position: original.position,
                events: vec![original],
                duplicate: true,
            }));
        }
        let (stream, decided) = match self.decide(&request) {
            Ok(decided) => decided,
            Err(error) => return Ok(Err(error)),
        };
        self.append(tx, stream, decided, &request).map(Ok)
    }

    /// Checks references and the expected version, then runs the domain's `decide`.
    fn decide(&self, request: &CommandRequest) -> Result<(StreamId, (StreamState, Vec<EventPayload>)), AppendError> {
        let (stream, state) = match &request.command {
            Command::Catalog(command) => {
                let product = match command {
                    CatalogCommand::RegisterProduct { product } | CatalogCommand::UpdateProduct { product } => product,
                };
                if let Some(owner) = self.sku_owner(&product.sku).filter(|owner| *owner != product.id) {
                    return Err(AppendError::SkuTaken {
                        sku: product.sku.clone(),
                        owner,
                    });
                }
                let stream = StreamId::catalog(product.id);
                let state = self
                    .stream(&stream)
                    .map_or(StreamState::Catalog(CatalogState::default()), |h| h.state.clone());
                (stream, state)
            }
            Command::Inventory { target, .. } => {
                let stream = match *target {
                    InventoryTarget::Stream(product, store) => StreamId::inventory(product, store),
                    InventoryTarget::Reservation(id) => self
                        .reservation_stream(&id)
                        .ok_or(AppendError::UnknownReservation(id))?,
                };
                let store = stream.store_id.unwrap_or(StoreId::from_bytes([0; 16]));
                if !self.store_known(store) {
                    return Err(AppendError::UnknownStore(store));
                }
                if !self.product_registered(stream.product_id) {
                    return Err(DomainError::ProductNotRegistered(stream.product_id).into());
                }
                let state = self
                    .stream(&stream)
                    .map_or(StreamState::Inventory(InventoryState::default()), |h| h.state.clone());
                (stream, state)
            }
        };
        if !request.expected.admits(state.version()) {
            return Err(AppendError::VersionConflict {
                stream,
                expected: request.expected,
                current: state.version(),
            });
        }
        let events = match (&request.command, &state) {
            (Command::Catalog(command), StreamState::Catalog(s)) => catalog::decide(s, command)?,
            (Command::Inventory { command, .. }, StreamState::Inventory(s)) => {
                // Reservations are addressed by id alone (the index maps an id to one
                // stream), so an id open on another stream must not be opened here too.
                if let InventoryCommand::ReserveStock { reservation_id, .. } = command {
                    if self
                        .reservation_stream(reservation_id)
                        .is_some_and(|open| open != stream)
                    {
                        return Err(DomainError::ReservationExists(*reservation_id).into());
                    }
                }
                inventory::decide(s, command)?
            }
            _ => {
                return Err(AppendError::Storage(format!(
                    "stream {stream} holds another kind of state"
                )))
            }
        };
        Ok((stream, (state, events)))
    }

    /// Writes the decided events and records the stream's new head.
    fn append(
        &mut self,
        tx: &Transaction<'_>,
        stream: StreamId,
        (mut state, payloads): (StreamState, Vec<EventPayload>),
        request: &CommandRequest,
    ) -> rusqlite::Result<WriteResult> {
        let mut events = Vec::with_capacity(payloads.len());
        for (index, payload) in payloads.into_iter().enumerate() {
            let identity = if index == 0 {
                (request.event_id, request.fingerprint)
            } else {
                (EventId::new_v7(), [0; 16])
            };
            events.push(self.append_event(tx, stream, &mut state, payload, identity, &request.metadata)?);
        }
        let stream_version = state.version();
        self.set_head(stream, state);
        Ok(WriteResult {
            events,
            stream_version,
            position: self.changes.next_position - 1,
            duplicate: false,
        })
    }

    /// Applies one event to `state`, inserts its row at the next position, and remembers
    /// its id (with `fingerprint`) for dedupe within the batch.
    fn append_event(
        &mut self,
        tx: &Transaction<'_>,
        stream: StreamId,
        state: &mut StreamState,
        payload: EventPayload,
        (event_id, fingerprint): (EventId, [u8; 16]),
        metadata: &EventMetadata,
    ) -> rusqlite::Result<EventEnvelope> {
        self.track_indexes(stream, state, &payload);
        match state {
            StreamState::Catalog(s) => catalog::apply(s, &payload),
            StreamState::Inventory(s) => inventory::apply(s, &payload),
        }
        let mut metadata = metadata.clone();
        metadata.recorded_at = Some(self.now);
        let envelope = EventEnvelope {
            event_id,
            stream,
            stream_version: state.version(),
            position: self.changes.next_position,
            schema_version: shelfsync_common::event::CURRENT_SCHEMA_VERSION,
            payload,
            metadata,
        };
        self.insert_event(tx, &envelope, fingerprint)?;
        self.changes.next_position += 1;
        self.written.insert(event_id, (fingerprint, envelope.clone()));
        self.changes.events.push(envelope.clone());
        Ok(envelope)
    }

    /// Records `state` as the stream's head after this batch's latest event on it.
    fn set_head(&mut self, stream: StreamId, state: StreamState) {
        let last_position = self.changes.next_position - 1;
        self.changes.streams.insert(stream, StreamHead { state, last_position });
    }

    fn track_indexes(&mut self, stream: StreamId, before: &StreamState, payload: &EventPayload) {
        match payload {
            EventPayload::ProductRegistered(product) | EventPayload::ProductUpdated(product) => {
                if let StreamState::Catalog(CatalogState { product: Some(old), .. }) = before {
                    if old.sku != product.sku {
                        self.changes.skus.insert(old.sku.clone(), None);
                    }
                }
                self.changes.skus.insert(product.sku.clone(), Some(product.id));
            }
            EventPayload::StockReserved { reservation_id, .. } => {
                self.changes.reservations.insert(*reservation_id, Some(stream));
            }
            EventPayload::StockReleased { reservation_id, .. }
            | EventPayload::ReservationCommitted { reservation_id, .. } => {
                // Only this stream's own hold leaves the index: a store's fact naming an
                // id that is open on another stream (another store's, or a web order's)
                // must not strand that hold where nothing can commit, release or expire it.
                if self.reservation_stream(reservation_id) == Some(stream) {
                    self.changes.reservations.insert(*reservation_id, None);
                }
            }
            EventPayload::StockAdded { .. }
            | EventPayload::StockAdjusted { .. }
            | EventPayload::OversellDetected { .. } => {}
        }
    }

    fn insert_event(&self, tx: &Transaction<'_>, e: &EventEnvelope, fingerprint: [u8; 16]) -> rusqlite::Result<()> {
        let data = serde_json::to_string(&e.payload.data())
            .map_err(|err| rusqlite::Error::ToSqlConversionFailure(err.into()))?;
        let metadata =
            serde_json::to_string(&e.metadata).map_err(|err| rusqlite::Error::ToSqlConversionFailure(err.into()))?;
        tx.prepare_cached(
            "INSERT INTO events (position, event_id, stream_key, stream_version, event_type, schema_version, data, metadata, fingerprint)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            e.position as i64,
            &e.event_id.as_bytes()[..],
            &e.stream.key()[..],
            e.stream_version as i64,
            e.payload.event_type(),
            e.schema_version,
            data,
            metadata,
            &fingerprint[..],
        ])?;
        Ok(())
    }

    /// Writes the changed stream heads; the batch's last step before commit.
    fn finish(self, tx: &Transaction<'_>) -> rusqlite::Result<Changes> {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO streams (stream_key, version, last_position, state) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (stream_key) DO UPDATE
             SET version = excluded.version, last_position = excluded.last_position, state = excluded.state",
        )?;
        for (stream, head) in &self.changes.streams {
            let state = serde_json::to_string(&head.state)
                .map_err(|err| rusqlite::Error::ToSqlConversionFailure(err.into()))?;
            stmt.execute(params![
                &stream.key()[..],
                head.state.version() as i64,
                head.last_position as i64,
                state
            ])?;
        }
        if self.changes.stats.is_empty() {
            return Ok(self.changes);
        }
        let mut stmt = tx.prepare_cached(
            "INSERT INTO store_stats (store_id, rejected_uploads, oversells) VALUES (?1, ?2, ?3)
             ON CONFLICT (store_id) DO UPDATE SET rejected_uploads = rejected_uploads + excluded.rejected_uploads,
                                                  oversells = oversells + excluded.oversells",
        )?;
        for (store, stats) in &self.changes.stats {
            stmt.execute(params![
                &store.as_bytes()[..],
                stats.rejected_uploads as i64,
                stats.oversells as i64
            ])?;
        }
        Ok(self.changes)
    }
}

/// Carries a read-path error through rusqlite's error type (it fails the batch).
fn into_sqlite(error: StoreError) -> rusqlite::Error {
    match error {
        StoreError::Sqlite(inner) => inner,
        other => rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(other)),
    }
}
