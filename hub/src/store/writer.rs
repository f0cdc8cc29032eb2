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
use super::reader::{envelope_from_row, StoreStats, TokenRecord, EVENT_COLUMNS};
use super::schema::{self, EVENT_STORE};
use super::{
    Command, CommandRequest, InventoryTarget, ReadError, RevokedTokens, StreamState, TokenSelector, WriteError,
};
use crate::bus::EventBus;
use rusqlite::{params, CachedStatement, Connection, OptionalExtension, Transaction};
use shelfsync_common::domain::catalog::{self, CatalogCommand, CatalogState};
use shelfsync_common::domain::inventory::{self, InventoryCommand, InventoryState};
use shelfsync_common::sqlite::group_commit::{BatchLogic, Reply, Writer, WriterMetrics, WriterSettings};
use shelfsync_common::sqlite::{settle, Deferred};
use shelfsync_common::wire::api::{StoreInfo, WriteResult};
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::wire::sync::{UploadOutcome, UploadResult};
use shelfsync_common::{
    DomainError, EventEnvelope, EventId, EventMetadata, EventPayload, Origin, ProductId, ReservationId, StoreId,
    StreamId,
};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use time::OffsetDateTime;

mod admin;
mod commands;
mod uploads;

/// Most writes committed in one transaction.
pub const MAX_BATCH: usize = 1024;

/// The event log's writer: its thread, queue and limits.
const SETTINGS: WriterSettings = WriterSettings {
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

/// A handle on the event log's writer.
pub(super) type LogWriter = Writer<LogBatches>;

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
pub(super) fn start(path: &Path, bus: EventBus) -> Result<Started, ReadError> {
    let mut conn = schema::open_durable(path)?;
    schema::migrate(&mut conn, EVENT_STORE)?;
    let id_key = shelfsync_common::sqlite::id_key(&conn)?;
    let heads = load_heads(&conn)?;
    let head = heads.next_position - 1;
    let writer =
        Writer::start(conn, LogBatches { heads, bus }, SETTINGS).map_err(|e| ReadError::Join(e.to_string()))?;
    Ok(Started { writer, head, id_key })
}

/// What [`start`] hands back: the writer, the head position, and the key that derives
/// event ids from idempotency keys.
pub(super) struct Started {
    pub writer: LogWriter,
    pub head: u64,
    pub id_key: shelfsync_common::IdKey,
}

fn load_heads(conn: &Connection) -> Result<Heads, ReadError> {
    let mut heads = Heads::default();
    let max: Option<i64> = conn.query_row("SELECT MAX(position) FROM events", [], |r| r.get(0))?;
    heads.next_position = max.unwrap_or(0) as u64 + 1;
    let mut stmt = conn.prepare("SELECT stream_key, last_position, state FROM streams")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let key: Vec<u8> = row.get(0)?;
        let last_position: i64 = row.get(1)?;
        let state: String = row.get(2)?;
        let stream = StreamId::from_key(&key).ok_or_else(|| ReadError::Corrupt("bad stream key".into()))?;
        let state: StreamState =
            serde_json::from_str(&state).map_err(|e| ReadError::Corrupt(format!("stream {stream}: {e}")))?;
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

/// The event log's side of the group commit: the heads as of the last commit, and the
/// bus that committed events are published on.
pub(super) struct LogBatches {
    heads: Heads,
    bus: EventBus,
}

type Pending = Deferred<WriteError>;

impl BatchLogic for LogBatches {
    type Write = WriteOp;
    type Error = WriteError;
    type Changes = Changes;

    fn run_batch(
        &mut self,
        tx: &Transaction<'_>,
        writes: &mut dyn Iterator<Item = WriteOp>,
        answers: &mut Vec<Pending>,
    ) -> rusqlite::Result<Changes> {
        let mut batch = Batch::new(&self.heads, tx)?;
        for write in writes {
            batch.run(tx, write, answers)?;
        }
        batch.finish(tx)
    }

    fn committed(&mut self, changes: Changes) {
        let events = changes.apply_to(&mut self.heads);
        metrics::counter!("shelfsync_hub_events_appended_total").increment(events.len() as u64);
        // Publish before answering, so that the bus head is never behind a position a
        // caller has already been given.
        if !events.is_empty() {
            self.bus.publish(events);
        }
    }

    fn fail(write: WriteOp, error: &WriteError) {
        fn refuse<T>(reply: Reply<T, WriteError>, error: &WriteError) {
            let _ = reply.send(Err(error.clone()));
        }
        match write {
            WriteOp::Command(_, reply) => refuse(reply, error),
            WriteOp::AddStore { reply, .. } => refuse(reply, error),
            WriteOp::AddToken(_, reply) => refuse(reply, error),
            WriteOp::RevokeTokens(_, reply) | WriteOp::RotateStoreToken { reply, .. } => refuse(reply, error),
            WriteOp::Upload { reply, .. } => refuse(reply, error),
        }
    }

    fn storage_error(error: &rusqlite::Error) -> WriteError {
        WriteError::Storage(error.to_string())
    }

    fn unavailable() -> WriteError {
        WriteError::Unavailable
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
struct Batch<'b> {
    heads: &'b Heads,
    changes: Changes,
    /// The batch's `recorded_at`.
    now: OffsetDateTime,
    /// `now` as the end of a stamped metadata column.
    stamp: RecordedAt,
    /// The event insert for [`IdCheck::LookedUp`], taken from the statement cache once
    /// per batch rather than looked up (its SQL hashed) for every event.
    insert: CachedStatement<'b>,
    /// The event insert for [`IdCheck::OnInsert`], likewise.
    insert_new: CachedStatement<'b>,
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

impl<'b> Batch<'b> {
    fn new(heads: &'b Heads, tx: &'b Transaction<'_>) -> rusqlite::Result<Self> {
        macro_rules! insert {
            () => {
                "INSERT INTO events (position, event_id, stream_key, stream_version, event_type, schema_version, data, metadata, fingerprint)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            };
        }
        let now = OffsetDateTime::now_utc();
        Ok(Self {
            heads,
            changes: Changes {
                next_position: heads.next_position,
                ..Changes::default()
            },
            now,
            stamp: RecordedAt::new(now).map_err(|err| rusqlite::Error::ToSqlConversionFailure(err.into()))?,
            insert: tx.prepare_cached(insert!())?,
            insert_new: tx.prepare_cached(concat!(insert!(), " ON CONFLICT (event_id) DO NOTHING"))?,
        })
    }

    /// Runs one job and records its outcome. On a SQLite error the job's reply is still
    /// recorded, so that its caller too hears that the batch failed.
    fn run(&mut self, tx: &Transaction<'_>, op: WriteOp, outcomes: &mut Vec<Pending>) -> rusqlite::Result<()> {
        let storage = |error: &rusqlite::Error| WriteError::Storage(error.to_string());
        match op {
            WriteOp::Command(request, reply) => {
                let result = self.command(tx, *request);
                settle(outcomes, reply, result, storage)
            }
            WriteOp::AddStore {
                id,
                name,
                token,
                allow_duplicate_name,
                reply,
            } => {
                let result = self.add_store(tx, id, name, token.map(|t| *t), allow_duplicate_name);
                settle(outcomes, reply, result, storage)
            }
            WriteOp::AddToken(token, reply) => {
                let result = self.add_token(tx, *token);
                settle(outcomes, reply, result, storage)
            }
            WriteOp::RevokeTokens(selector, reply) => {
                let result = self.revoke_tokens(tx, selector).map(Ok);
                settle(outcomes, reply, result, storage)
            }
            WriteOp::RotateStoreToken { store, token, reply } => {
                let result = self.rotate_store_token(tx, store, *token);
                settle(outcomes, reply, result, storage)
            }
            WriteOp::Upload { store, events, reply } => {
                let result = self.upload(tx, store, events).map(Ok);
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

    /// The original answer when `event_id` was already written: committed, or earlier in
    /// this batch (the transaction reads its own rows).
    fn earlier_write(
        &self,
        tx: &Transaction<'_>,
        event_id: EventId,
    ) -> rusqlite::Result<Option<(Fingerprint, EventEnvelope)>> {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS}, fingerprint FROM events WHERE event_id = ?1"
        ))?;
        stmt.query_row([&event_id.as_bytes()[..]], |row| {
            let envelope = envelope_from_row(row).map_err(into_sqlite)?;
            Ok((Fingerprint::from_bytes(row.get::<_, [u8; 16]>(8)?), envelope))
        })
        .optional()
    }

    /// Writes the decided events and records the stream's new head.
    fn append(
        &mut self,
        stream: StreamId,
        (mut state, payloads): (StreamState, Vec<EventPayload>),
        request: &CommandRequest,
    ) -> rusqlite::Result<WriteResult> {
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
    ) -> rusqlite::Result<Option<Landed>> {
        let columns = match columns {
            Some(columns) => columns,
            None => Columns::encode(&payload, &metadata)
                .map_err(|err| rusqlite::Error::ToSqlConversionFailure(err.into()))?,
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
    ) -> rusqlite::Result<bool> {
        let metadata = columns.metadata(&self.stamp);
        let stmt = match check {
            IdCheck::LookedUp => &mut self.insert,
            IdCheck::OnInsert => &mut self.insert_new,
        };
        let written = stmt.execute(params![
            e.position as i64,
            &e.event_id.as_bytes()[..],
            &e.stream.key()[..],
            e.stream_version as i64,
            e.payload.event_type(),
            e.schema_version,
            columns.data(),
            metadata,
            &fingerprint.as_bytes()[..],
        ])?;
        Ok(written == 1)
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
fn into_sqlite(error: ReadError) -> rusqlite::Error {
    match error {
        ReadError::Sqlite(inner) => inner,
        other => rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(other)),
    }
}
