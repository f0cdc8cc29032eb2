//! The event log's batch logic, run by the shared group-commit writer
//! ([`shelfsync_common::sqlite::group_commit`]): one thread owns the only write connection,
//! drains the queue into batches, commits each batch with one fsync, and answers every
//! caller after the commit (or fails every caller after a rollback).
//!
//! What this file adds: every write runs against in-memory stream heads (the state of
//! every stream, the SKU, reservation and store indexes), and the heads move only after
//! the batch committed. Positions are handed out from an in-memory counter that only
//! moves forward with a commit, so the log is gap-free and commit-ordered. After a
//! commit the batch's events are published on the bus *before* its callers are answered,
//! so the bus head is never behind a position a caller was given.

use super::columns::{Columns, RecordedAt};
use super::facts::{self, Prepared};
use super::reader::{StoreStats, TokenRecord};
use super::{
    Command, CommandRequest, InventoryTarget, Prunable, RevokedTokens, StreamState, TokenSelector, WriteError,
};
use crate::bus::EventBus;
use crate::store::{EnrollmentCodeRecord, Redeemed};
use shelfsync_common::domain::catalog::{self, CatalogCommand, CatalogState};
use shelfsync_common::domain::inventory::{self, InventoryCommand, InventoryState};
use shelfsync_common::sqlite::group_commit::{BatchLogic, Reply, WriterMetrics, WriterSettings};
use shelfsync_common::sqlite::{settle, Deferred};
use shelfsync_common::wire::api::{StoreInfo, WriteResult};
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::wire::sync::{UploadOutcome, UploadResult};
use shelfsync_common::{
    DomainError, EventEnvelope, EventId, EventMetadata, EventPayload, Origin, ProductId, ReservationId, StoreId,
    StreamId,
};
use std::collections::{HashMap, HashSet};
use time::OffsetDateTime;

mod admin;
mod commands;
mod enrollment;
mod rows;
mod sqlite;
mod uploads;

pub(super) use rows::{count_revoked, EventRow, LogRows};
pub(super) use sqlite::{start, stream_head_from_row, Started};

/// Most writes committed in one transaction.
pub const MAX_BATCH: usize = 1024;

/// The event log's writer: its thread, queue and limits.
pub(super) const SETTINGS: WriterSettings = WriterSettings {
    thread_name: "event-store-writer",
    queue_depth: 8192,
    max_batch: MAX_BATCH,
    metrics: WriterMetrics {
        queue_seconds: "shelfsync_hub_append_queue_seconds",
        batch_writes: "shelfsync_hub_append_batch_jobs",
        commit_seconds: "shelfsync_hub_append_commit_seconds",
        abandoned: "shelfsync_hub_append_abandoned_total",
    },
};

/// A write that shares a transaction with the others queued beside it.
pub(super) enum WriteOp {
    Command(Box<CommandRequest>, Reply<WriteResult, WriteError>),
    AddStore {
        id: StoreId,
        name: String,
        token: Option<Box<TokenRecord>>,
        allow_duplicate_name: bool,
        reply: Reply<StoreInfo, WriteError>,
    },
    Upload {
        store: StoreId,
        events: Vec<Prepared>,
        reply: Reply<Vec<UploadResult>, WriteError>,
    },
    AddToken(Box<TokenRecord>, Reply<(), WriteError>),
    RevokeTokens(TokenSelector, Reply<RevokedTokens, WriteError>),
    RotateStoreToken {
        store: StoreId,
        token: Box<TokenRecord>,
        reply: Reply<RevokedTokens, WriteError>,
    },
    AddEnrollmentCode(Box<EnrollmentCodeRecord>, Reply<(), WriteError>),
    RedeemEnrollmentCode {
        code_sha256: [u8; 32],
        token_sha256: [u8; 32],
        now: i64,
        reply: Reply<Redeemed, WriteError>,
    },
    /// Removes at most `limit` rows of `what` older than `cutoff` (stored time text).
    Prune {
        what: Prunable,
        cutoff: String,
        limit: usize,
        reply: Reply<usize, WriteError>,
    },
}

impl WriteOp {
    /// The event ids the write names (a command's, an upload's), so that a backend can
    /// look up which were written before in one query for a whole batch.
    pub(super) fn event_ids(&self, out: &mut Vec<EventId>) {
        match self {
            WriteOp::Command(request, _) => out.push(request.event_id),
            WriteOp::Upload { events, .. } => out.extend(events.iter().map(|e| e.event_id)),
            WriteOp::AddStore { .. }
            | WriteOp::AddToken(..)
            | WriteOp::RevokeTokens(..)
            | WriteOp::RotateStoreToken { .. }
            | WriteOp::AddEnrollmentCode(..)
            | WriteOp::RedeemEnrollmentCode { .. } => {}
            WriteOp::Prune { .. } => {}
        }
    }
}

/// One stream's committed head.
#[derive(Debug, Clone)]
pub(super) struct StreamHead {
    pub(super) state: StreamState,
    pub(super) last_position: u64,
}

/// Everything the writer keeps in memory, as of the last commit it knows of.
#[derive(Debug, Default)]
pub(super) struct Heads {
    pub(super) next_position: u64,
    streams: HashMap<StreamId, StreamHead>,
    skus: HashMap<String, ProductId>,
    reservations: HashMap<ReservationId, StreamId>,
    stores: HashSet<StoreId>,
}

impl Heads {
    /// Heads with nothing in them, the next event going to `next_position`.
    pub(super) fn starting_at(next_position: u64) -> Self {
        Self {
            next_position,
            ..Self::default()
        }
    }

    /// Sets a stream's head as read from the database (at start-up, or after another
    /// hub wrote it), keeping the SKU and reservation indexes in step.
    pub(super) fn load_stream(&mut self, stream: StreamId, head: StreamHead) {
        if let Some(old) = self.streams.remove(&stream) {
            unindex_state(self, stream, &old.state);
        }
        index_state(self, stream, &head.state);
        self.streams.insert(stream, head);
    }

    /// Records an enrolled store.
    pub(super) fn load_store(&mut self, store: StoreId) {
        self.stores.insert(store);
    }

    /// How many stores the heads know.
    pub(super) fn store_count(&self) -> usize {
        self.stores.len()
    }

    /// Logs what was loaded.
    pub(super) fn log_opened(&self) {
        tracing::info!(
            head = self.next_position - 1,
            streams = self.streams.len(),
            stores = self.stores.len(),
            "event store opened"
        );
    }
}

/// Removes what `state` put into the indexes (the stream is being replaced).
fn unindex_state(heads: &mut Heads, stream: StreamId, state: &StreamState) {
    match state {
        StreamState::Catalog(CatalogState {
            product: Some(product), ..
        }) => {
            if heads.skus.get(&product.sku) == Some(&product.id) {
                heads.skus.remove(&product.sku);
            }
        }
        StreamState::Catalog(_) => {}
        StreamState::Inventory(inv) => {
            for id in inv.reservations.keys() {
                if heads.reservations.get(id) == Some(&stream) {
                    heads.reservations.remove(id);
                }
            }
        }
    }
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

/// The event log's side of the group commit on SQLite: the heads as of the last commit,
/// and the bus that committed events are published on.
pub(super) struct LogBatches {
    heads: Heads,
    bus: EventBus,
}

pub(super) type Pending = Deferred<WriteError>;

impl BatchLogic for LogBatches {
    type Db = rusqlite::Connection;
    type Write = WriteOp;
    type Error = WriteError;
    type Changes = Changes;

    fn run_batch(
        &mut self,
        tx: &mut rusqlite::Transaction<'_>,
        writes: &mut dyn Iterator<Item = WriteOp>,
        answers: &mut Vec<Pending>,
    ) -> rusqlite::Result<Changes> {
        let rows = sqlite::SqliteRows::new(tx)?;
        run_batch(&self.heads, rows, writes, answers)
    }

    fn committed(&mut self, changes: Changes) {
        committed(&mut self.heads, &self.bus, changes, Vec::new());
    }

    fn fail(write: WriteOp, error: &WriteError) {
        fail(write, error)
    }

    fn storage_error(error: &rusqlite::Error) -> WriteError {
        WriteError::Storage(error.to_string())
    }

    fn unavailable() -> WriteError {
        WriteError::Unavailable
    }
}

/// Runs one batch of writes against `heads` through `rows` (either backend).
pub(super) fn run_batch<R: LogRows>(
    heads: &Heads,
    rows: R,
    writes: &mut dyn Iterator<Item = WriteOp>,
    answers: &mut Vec<Pending>,
) -> Result<Changes, R::Error> {
    let mut batch = Batch::new(heads, rows)?;
    for write in writes {
        batch.run(write, answers)?;
    }
    batch.finish()
}

/// A batch committed: its changes move the heads, and its events are published (after
/// `earlier`, events other hubs committed before it that this hub had not published).
/// Publish before answering, so that the bus head is never behind a position a caller
/// has already been given.
pub(super) fn committed(heads: &mut Heads, bus: &EventBus, changes: Changes, mut earlier: Vec<EventEnvelope>) {
    let events = changes.apply_to(heads);
    metrics::counter!("shelfsync_hub_events_appended_total").increment(events.len() as u64);
    earlier.extend(events);
    if !earlier.is_empty() {
        bus.publish(earlier);
    }
}

/// Answers a write its batch never ran.
pub(super) fn fail(write: WriteOp, error: &WriteError) {
    fn refuse<T>(reply: Reply<T, WriteError>, error: &WriteError) {
        let _ = reply.send(Err(error.clone()));
    }
    match write {
        WriteOp::Command(_, reply) => refuse(reply, error),
        WriteOp::AddStore { reply, .. } => refuse(reply, error),
        WriteOp::AddToken(_, reply) => refuse(reply, error),
        WriteOp::RevokeTokens(_, reply) | WriteOp::RotateStoreToken { reply, .. } => refuse(reply, error),
        WriteOp::Upload { reply, .. } => refuse(reply, error),
        WriteOp::AddEnrollmentCode(_, reply) => refuse(reply, error),
        WriteOp::RedeemEnrollmentCode { reply, .. } => refuse(reply, error),
        WriteOp::Prune { reply, .. } => refuse(reply, error),
    }
}

/// What one batch changed, applied to [`Heads`] only after its commit.
#[derive(Default)]
pub(super) struct Changes {
    next_position: u64,
    streams: HashMap<StreamId, StreamHead>,
    skus: HashMap<String, Option<ProductId>>,
    reservations: HashMap<ReservationId, Option<StreamId>>,
    stores: Vec<StoreId>,
    stats: HashMap<StoreId, StoreStats>,
    events: Vec<EventEnvelope>,
}

impl Changes {
    /// Where the next batch's first event goes.
    pub(super) fn next_position(&self) -> u64 {
        self.next_position
    }

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

/// A batch in progress: the committed heads plus this batch's changes on top, written
/// through the backend's [`LogRows`].
struct Batch<'b, R: LogRows> {
    heads: &'b Heads,
    changes: Changes,
    /// The batch's `recorded_at`.
    now: OffsetDateTime,
    /// `now` as the end of a stamped metadata column.
    stamp: RecordedAt,
    /// The backend's statements, in the batch's transaction.
    rows: R,
}

/// How an event's id is known to be new when its row is inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdCheck {
    /// The caller looked it up first ([`Batch::earlier_write`]).
    LookedUp,
    /// The insert finds out: an id already in the log (committed, or earlier in this
    /// batch) writes nothing, and [`Batch::append_event`] says so.
    OnInsert,
}

/// Where an appended event landed.
#[derive(Debug, Clone, Copy)]
struct Landed {
    position: u64,
    stream_version: u64,
}

impl<'b, R: LogRows> Batch<'b, R> {
    fn new(heads: &'b Heads, rows: R) -> Result<Self, R::Error> {
        let now = OffsetDateTime::now_utc();
        Ok(Self {
            heads,
            changes: Changes {
                next_position: heads.next_position,
                ..Changes::default()
            },
            now,
            stamp: RecordedAt::new(now).map_err(R::fault)?,
            rows,
        })
    }

    /// Runs one job and records its outcome. On a database error the job's reply is
    /// still recorded, so that its caller too hears that the batch failed.
    fn run(&mut self, op: WriteOp, outcomes: &mut Vec<Pending>) -> Result<(), R::Error> {
        let storage = |error: &R::Error| WriteError::Storage(error.to_string());
        match op {
            WriteOp::Command(request, reply) => {
                let result = self.command(*request);
                settle(outcomes, reply, result, storage)
            }
            WriteOp::AddStore {
                id,
                name,
                token,
                allow_duplicate_name,
                reply,
            } => {
                let result = self.add_store(id, name, token.map(|t| *t), allow_duplicate_name);
                settle(outcomes, reply, result, storage)
            }
            WriteOp::AddToken(token, reply) => {
                let result = self.add_token(*token);
                settle(outcomes, reply, result, storage)
            }
            WriteOp::RevokeTokens(selector, reply) => {
                let result = self.revoke_tokens(selector).map(Ok);
                settle(outcomes, reply, result, storage)
            }
            WriteOp::RotateStoreToken { store, token, reply } => {
                let result = self.rotate_store_token(store, *token);
                settle(outcomes, reply, result, storage)
            }
            WriteOp::Upload { store, events, reply } => {
                let result = self.upload(store, events).map(Ok);
                settle(outcomes, reply, result, storage)
            }
            WriteOp::AddEnrollmentCode(code, reply) => {
                let result = self.add_enrollment_code(*code);
                settle(outcomes, reply, result, storage)
            }
            WriteOp::RedeemEnrollmentCode {
                code_sha256,
                token_sha256,
                now,
                reply,
            } => {
                let result = self.redeem_enrollment_code(code_sha256, token_sha256, now);
                settle(outcomes, reply, result, storage)
            }
            WriteOp::Prune {
                what,
                cutoff,
                limit,
                reply,
            } => {
                let result = self.rows.prune(what, &cutoff, limit).map(Ok);
                settle(outcomes, reply, result, storage)
            }
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

    /// Writes the decided events and records the stream's new head.
    fn append(
        &mut self,
        stream: StreamId,
        (mut state, payloads): (StreamState, Vec<EventPayload>),
        request: &CommandRequest,
    ) -> Result<WriteResult, R::Error> {
        let first = self.changes.events.len();
        for (index, payload) in payloads.into_iter().enumerate() {
            let identity = if index == 0 {
                (request.event_id, request.fingerprint)
            } else {
                (EventId::new_v7(), Fingerprint::from_bytes([0; 16]))
            };
            let metadata = request.metadata.clone();
            self.append_event(
                stream,
                &mut state,
                (payload, metadata, None),
                identity,
                IdCheck::LookedUp,
            )?;
        }
        let stream_version = state.version();
        self.set_head(stream, state);
        Ok(WriteResult {
            events: self.changes.events[first..].to_vec(),
            stream_version,
            position: self.changes.next_position - 1,
            duplicate: false,
        })
    }

    /// Inserts one event's row at the next position (its columns encoded here unless
    /// given), then applies it to `state` and keeps it for the bus. `None` when `check`
    /// is [`IdCheck::OnInsert`] and the id was in the log: then nothing changed.
    fn append_event(
        &mut self,
        stream: StreamId,
        state: &mut StreamState,
        (payload, mut metadata, columns): (EventPayload, EventMetadata, Option<Columns>),
        (event_id, fingerprint): (EventId, Fingerprint),
        check: IdCheck,
    ) -> Result<Option<Landed>, R::Error> {
        let columns = match columns {
            Some(columns) => columns,
            None => Columns::encode(&payload, &metadata).map_err(R::fault)?,
        };
        metadata.recorded_at = Some(self.now);
        let envelope = EventEnvelope {
            event_id,
            stream,
            // Applying an event moves the stream's version by one.
            stream_version: state.version().saturating_add(1),
            position: self.changes.next_position,
            schema_version: shelfsync_common::domain::event::CURRENT_SCHEMA_VERSION,
            payload,
            metadata,
        };
        if !self.insert_event(&envelope, fingerprint, &columns, check)? {
            return Ok(None);
        }
        self.track_indexes(stream, state, &envelope.payload);
        match state {
            StreamState::Catalog(s) => catalog::apply(s, &envelope.payload),
            StreamState::Inventory(s) => inventory::apply(s, &envelope.payload, envelope.metadata.origin.into()),
        }
        debug_assert_eq!(state.version(), envelope.stream_version);
        self.changes.next_position += 1;
        let landed = Landed {
            position: envelope.position,
            stream_version: envelope.stream_version,
        };
        self.changes.events.push(envelope);
        Ok(Some(landed))
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
            | EventPayload::OversellDetected { .. }
            | EventPayload::AllocationSet { .. }
            | EventPayload::AllocationTransferred { .. } => {}
        }
    }

    /// Inserts `e`'s row; whether it was written (always, unless `check` is
    /// [`IdCheck::OnInsert`] and the id is in the log).
    fn insert_event(
        &mut self,
        e: &EventEnvelope,
        fingerprint: Fingerprint,
        columns: &Columns,
        check: IdCheck,
    ) -> Result<bool, R::Error> {
        let metadata = columns.metadata(&self.stamp);
        let row = EventRow {
            envelope: e,
            data: columns.data(),
            metadata: &metadata,
            fingerprint,
        };
        self.rows.insert_event(&row, check == IdCheck::OnInsert)
    }

    /// Writes the changed stream heads and counters; the batch's last step before commit.
    fn finish(mut self) -> Result<Changes, R::Error> {
        self.rows.write_heads(&self.changes.streams)?;
        if !self.changes.stats.is_empty() {
            self.rows.add_stats(&self.changes.stats)?;
        }
        Ok(self.changes)
    }
}
