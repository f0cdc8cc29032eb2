//! The local store's batch logic, run by the shared group-commit writer
//! ([`shelfsync_common::group_commit`]): one thread, one write connection, one fsync per
//! batch, every caller answered after the commit (or failed after a rollback).
//!
//! What this file adds: each write runs against the committed view plus this batch's
//! changes; after the commit the changes are published to the shared view (and the
//! outbox's new last sequence to the uploader) before the callers are answered. A write
//! the rules refuse writes nothing; if SQLite fails, the batch rolls back and the view is
//! untouched.

use super::view::{level, PendingEvent, StreamView, SyncPosition, View};
use super::{ApplyReport, LocalCommand, LocalError, QuarantineAction, Target, MIGRATIONS};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use shelfsync_common::edge::{LocalWriteResult, OutboxEntry, OutboxStatus};
use shelfsync_common::group_commit::{BatchLogic, Reply as GenericReply, Writer, WriterMetrics, WriterSettings};
use shelfsync_common::inventory::{self, InventoryState, Reservation};
use shelfsync_common::sqlite::{settle, Deferred};
use shelfsync_common::sync::{SnapshotResponse, UploadEvent, UploadOutcome, UploadResult};
use shelfsync_common::wire::ProductView;
use shelfsync_common::{
    EventEnvelope, EventId, EventMetadata, EventPayload, InventoryCommand, Origin, Product, ProductId, ReservationId,
    StoreId, StreamId,
};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::watch;

/// The local store's writer: its thread, queue and limits.
const SETTINGS: WriterSettings = WriterSettings {
    thread_name: "local-store-writer",
    queue_depth: 4096,
    max_batch: 512,
    metrics: WriterMetrics {
        queue_seconds: "shelfsync_edge_write_queue_seconds",
        batch_writes: "shelfsync_edge_write_batch_jobs",
        commit_seconds: "shelfsync_edge_write_commit_seconds",
        abandoned: "shelfsync_edge_writes_abandoned_total",
    },
};

type Reply<T> = GenericReply<T, LocalError>;

/// A handle on the local store's writer.
pub(super) type LocalWriter = Writer<LocalBatches>;

/// A write that shares a transaction with the others queued beside it.
pub(super) enum WriteOp {
    Command(Box<LocalCommand>, Reply<LocalWriteResult>),
    ApplyHub {
        events: Vec<EventEnvelope>,
        cursor: u64,
        head: u64,
        reply: Reply<ApplyReport>,
    },
    Acknowledge(Vec<UploadResult>, Reply<()>),
    Bootstrap(Box<SnapshotResponse>, Reply<()>),
    Quarantine {
        event_id: EventId,
        action: QuarantineAction,
        reply: Reply<()>,
    },
}

type Started = (
    LocalWriter,
    Arc<RwLock<View>>,
    watch::Receiver<u64>,
    shelfsync_common::IdKey,
);

/// Opens and migrates the file, loads the view, and starts the writer thread.
pub(super) fn start(path: &Path, store_id: StoreId) -> Result<Started, Box<dyn std::error::Error + Send + Sync>> {
    let mut conn = shelfsync_common::sqlite::open_durable(path)?;
    shelfsync_common::sqlite::migrate(&mut conn, MIGRATIONS)?;
    let id_key = shelfsync_common::sqlite::id_key(&conn)?;
    let view = load_view(&conn, store_id)?;
    let next_seq = conn.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox", [], |r| {
        r.get::<_, i64>(0)
    })? as u64;
    tracing::info!(
        %store_id,
        cursor = view.sync.cursor,
        products = view.catalog.len(),
        outbox = view.outbox().0,
        quarantined = view.quarantined,
        "local store opened"
    );
    let view = Arc::new(RwLock::new(view));
    let (recorded_tx, recorded) = watch::channel(next_seq - 1);
    let logic = LocalBatches {
        view: view.clone(),
        next_seq,
        recorded: recorded_tx,
    };
    let writer = Writer::start(conn, logic, SETTINGS)?;
    Ok((writer, view, recorded, id_key))
}

fn time_text(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

fn parse_time(text: &str) -> rusqlite::Result<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|e| conversion(e.to_string()))
}

fn conversion(message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, message.into())
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| conversion(e.to_string()))
}

fn to_json(value: &impl serde::Serialize) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))
}

fn load_view(conn: &Connection, store_id: StoreId) -> rusqlite::Result<View> {
    let mut view = View::new(store_id);
    let mut stmt = conn.prepare("SELECT product_id, state FROM confirmed_streams")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let state: InventoryState = from_json(&row.get::<_, String>(1)?)?;
        view.streams
            .insert(ProductId::from_bytes(row.get(0)?), StreamView::new(state));
    }
    let mut stmt = conn.prepare(
        "SELECT seq, event_id, product_id, event_type, schema_version, data, recorded_at FROM outbox
         WHERE status IN ('pending', 'acked') ORDER BY seq",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let payload = EventPayload::decode(
            &row.get::<_, String>(3)?,
            row.get(4)?,
            from_json(&row.get::<_, String>(5)?)?,
        )
        .map_err(|e| conversion(e.to_string()))?;
        let pending = PendingEvent {
            seq: row.get::<_, i64>(0)? as u64,
            event_id: EventId::from_bytes(row.get(1)?),
            payload,
            recorded_at: parse_time(&row.get::<_, String>(6)?)?,
        };
        view.streams
            .entry(ProductId::from_bytes(row.get(2)?))
            .or_default()
            .record(pending);
    }
    let mut stmt = conn.prepare("SELECT product_id, sku, name, price_minor, version FROM catalog")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        view.put_product(ProductView {
            product: Product {
                id: ProductId::from_bytes(row.get(0)?),
                sku: row.get(1)?,
                name: row.get(2)?,
                price_minor: row.get::<_, i64>(3)? as u64,
            },
            version: row.get::<_, i64>(4)? as u64,
        });
    }
    let mut stmt = conn.prepare("SELECT reservation_id FROM own_reservations")?;
    for id in stmt.query_map([], |row| row.get::<_, [u8; 16]>(0))? {
        view.own_reservations.insert(ReservationId::from_bytes(id?));
    }
    view.quarantined = conn.query_row("SELECT COUNT(*) FROM outbox WHERE status = 'quarantined'", [], |r| {
        r.get::<_, i64>(0)
    })? as u64;
    view.sync = conn.query_row(
        "SELECT cursor, hub_head, bootstrapped, last_sync_at FROM sync_state WHERE id = 1",
        [],
        |row| {
            Ok(SyncPosition {
                cursor: row.get::<_, i64>(0)? as u64,
                hub_head: row.get::<_, i64>(1)? as u64,
                bootstrapped: row.get(2)?,
                last_sync_at: row.get::<_, Option<String>>(3)?.map(|t| parse_time(&t)).transpose()?,
            })
        },
    )?;
    Ok(view)
}

/// The local store's side of the group commit: the shared view it publishes to, the
/// next outbox sequence, and where the outbox's last sequence is announced.
pub(super) struct LocalBatches {
    view: Arc<RwLock<View>>,
    next_seq: u64,
    recorded: watch::Sender<u64>,
}

impl BatchLogic for LocalBatches {
    type Write = WriteOp;
    type Error = LocalError;
    type Changes = Changes;

    fn run_batch(
        &mut self,
        tx: &Transaction<'_>,
        writes: &mut dyn Iterator<Item = WriteOp>,
        answers: &mut Vec<Deferred<LocalError>>,
    ) -> rusqlite::Result<Changes> {
        let committed = self.view.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut batch = Batch::new(&committed, self.next_seq);
        for write in writes {
            batch.run(tx, write, answers)?;
        }
        batch.finish(tx)?;
        Ok(batch.changes)
    }

    fn committed(&mut self, changes: Changes) {
        self.next_seq = changes.next_seq;
        let recorded = changes.next_seq - 1;
        changes.apply_to(&mut self.view.write().unwrap_or_else(std::sync::PoisonError::into_inner));
        self.recorded
            .send_if_modified(|last| std::mem::replace(last, recorded) != recorded);
    }

    fn fail(write: WriteOp, error: &LocalError) {
        fn refuse<T>(reply: Reply<T>, error: &LocalError) {
            let _ = reply.send(Err(error.clone()));
        }
        match write {
            WriteOp::Command(_, reply) => refuse(reply, error),
            WriteOp::ApplyHub { reply, .. } => refuse(reply, error),
            WriteOp::Acknowledge(_, reply) | WriteOp::Bootstrap(_, reply) | WriteOp::Quarantine { reply, .. } => {
                refuse(reply, error)
            }
        }
    }

    fn storage_error(error: &rusqlite::Error) -> LocalError {
        LocalError::Storage(error.to_string())
    }

    fn unavailable() -> LocalError {
        LocalError::Unavailable
    }
}

/// What one batch changed, published to the view after its commit.
#[derive(Default)]
pub(super) struct Changes {
    next_seq: u64,
    streams: HashMap<ProductId, StreamView>,
    catalog: Vec<ProductView>,
    replace_all: bool,
    own_reservations: Vec<ReservationId>,
    quarantined: i64,
    sync: Option<SyncPosition>,
}

impl Changes {
    fn apply_to(self, view: &mut View) {
        if self.replace_all {
            // A bootstrap: `streams` holds every stream, `catalog` the whole catalog.
            view.streams.clear();
            view.catalog.clear();
            view.skus.clear();
        }
        for (product, stream) in self.streams {
            // A stream with nothing confirmed and nothing pending has no row on disk either
            // (its only event was rejected): drop it, as a restart would.
            if stream == StreamView::default() {
                view.streams.remove(&product);
            } else {
                view.streams.insert(product, stream);
            }
        }
        for product in self.catalog {
            view.put_product(product);
        }
        view.own_reservations.extend(self.own_reservations);
        view.quarantined = view.quarantined.saturating_add_signed(self.quarantined);
        if let Some(sync) = self.sync {
            view.sync = sync;
        }
    }
}

struct Batch<'v> {
    view: &'v View,
    changes: Changes,
    /// Idempotency keys first answered in this batch.
    answered: HashMap<String, ([u8; 16], LocalWriteResult)>,
    /// Own event ids in the outbox written in this batch.
    recorded_ids: HashSet<EventId>,
    now: OffsetDateTime,
}

impl<'v> Batch<'v> {
    fn new(view: &'v View, next_seq: u64) -> Self {
        Self {
            view,
            changes: Changes {
                next_seq,
                ..Changes::default()
            },
            answered: HashMap::new(),
            recorded_ids: HashSet::new(),
            now: OffsetDateTime::now_utc(),
        }
    }

    fn run(
        &mut self,
        tx: &Transaction<'_>,
        op: WriteOp,
        answers: &mut Vec<Deferred<LocalError>>,
    ) -> rusqlite::Result<()> {
        let storage = |error: &rusqlite::Error| LocalError::Storage(error.to_string());
        match op {
            WriteOp::Command(command, reply) => {
                let result = self.command(tx, *command);
                settle(answers, reply, result, storage)
            }
            WriteOp::ApplyHub {
                events,
                cursor,
                head,
                reply,
            } => {
                let result = self.apply_hub(tx, events, cursor, head).map(Ok);
                settle(answers, reply, result, storage)
            }
            WriteOp::Acknowledge(results, reply) => {
                let result = self.acknowledge(tx, results).map(Ok);
                settle(answers, reply, result, storage)
            }
            WriteOp::Bootstrap(snapshot, reply) => {
                let result = self.bootstrap(tx, *snapshot).map(Ok);
                settle(answers, reply, result, storage)
            }
            WriteOp::Quarantine {
                event_id,
                action,
                reply,
            } => {
                let result = self.quarantine(tx, event_id, action);
                settle(answers, reply, result, storage)
            }
        }
    }

    /// A stream as this batch sees it (its changes, else the committed view).
    fn stream(&self, product: ProductId) -> Option<&StreamView> {
        self.changes
            .streams
            .get(&product)
            .or_else(|| self.view.streams.get(&product))
    }

    /// A stream to change in this batch: copied from the committed view on first touch,
    /// edited in place after that.
    fn stream_mut(&mut self, product: ProductId) -> &mut StreamView {
        let committed = self.view;
        self.changes
            .streams
            .entry(product)
            .or_insert_with(|| committed.streams.get(&product).cloned().unwrap_or_default())
    }

    fn product_known(&self, product: ProductId) -> bool {
        self.view.catalog.contains_key(&product) || self.changes.catalog.iter().any(|p| p.product.id == product)
    }

    fn sync(&self) -> SyncPosition {
        self.changes.sync.clone().unwrap_or_else(|| self.view.sync.clone())
    }

    /// The product whose local state holds this open reservation.
    fn reservation_product(&self, id: ReservationId) -> Option<ProductId> {
        let changed = self.changes.streams.iter();
        let committed = self
            .view
            .streams
            .iter()
            .filter(|(p, _)| !self.changes.streams.contains_key(p));
        changed
            .chain(committed)
            .find(|(_, s)| s.local().reservations.contains_key(&id))
            .map(|(p, _)| *p)
    }

    fn command(
        &mut self,
        tx: &Transaction<'_>,
        command: LocalCommand,
    ) -> rusqlite::Result<Result<LocalWriteResult, LocalError>> {
        if let Some((key, fingerprint)) = &command.idempotency {
            if let Some(earlier) = self.earlier_answer(tx, key)? {
                return Ok(if earlier.0 == *fingerprint {
                    Ok(LocalWriteResult {
                        replayed: true,
                        ..earlier.1
                    })
                } else {
                    Err(LocalError::IdempotencyConflict(key.clone()))
                });
            }
        }
        // The outbox's UNIQUE(event_id) would fail the whole group commit: refuse this one alone.
        if self.recorded_ids.contains(&command.event_id) || self.in_outbox(tx, command.event_id)? {
            return Ok(Err(LocalError::DuplicateEvent(command.event_id)));
        }
        let product = match command.target {
            Target::Product(product) => product,
            Target::Reservation(id) => match self.reservation_product(id) {
                Some(product) => product,
                None => return Ok(Err(LocalError::UnknownReservation(id))),
            },
        };
        if !self.product_known(product) {
            return Ok(Err(LocalError::UnknownProduct(product)));
        }
        if let InventoryCommand::ReserveStock { reservation_id, .. } = &command.command {
            if self.reservation_product(*reservation_id).is_some_and(|p| p != product) {
                return Ok(Err(
                    shelfsync_common::DomainError::ReservationExists(*reservation_id).into()
                ));
            }
        }
        let local = self.stream(product).map(StreamView::local);
        let payload = match inventory::decide(local.unwrap_or(&InventoryState::default()), &command.command) {
            Ok(mut events) if events.len() == 1 => events.remove(0),
            Ok(_) => {
                return Ok(Err(LocalError::Storage(
                    "a local command must record exactly one event".into(),
                )))
            }
            Err(error) => return Ok(Err(error.into())),
        };
        let seq = self.changes.next_seq;
        self.insert_outbox(tx, seq, product, command.event_id, &payload, &command.metadata)?;
        if let EventPayload::StockReserved { reservation_id, .. } = &payload {
            tx.prepare_cached("INSERT OR IGNORE INTO own_reservations (reservation_id, product_id) VALUES (?1, ?2)")?
                .execute(params![&reservation_id.as_bytes()[..], &product.as_bytes()[..]])?;
            self.changes.own_reservations.push(*reservation_id);
        }
        let (store_id, now) = (self.view.store_id, self.now);
        let stream = self.stream_mut(product);
        stream.record(PendingEvent {
            seq,
            event_id: command.event_id,
            payload: payload.clone(),
            recorded_at: now,
        });
        let stock = level(store_id, product, stream);
        let result = LocalWriteResult {
            event_id: command.event_id,
            seq,
            stream: StreamId::inventory(product, self.view.store_id),
            payload,
            stock,
            replayed: false,
        };
        self.changes.next_seq += 1;
        if let Some((key, fingerprint)) = command.idempotency {
            tx.prepare_cached(
                "INSERT INTO idempotency (key, fingerprint, outcome, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![key, &fingerprint[..], to_json(&result)?, time_text(self.now)])?;
            self.answered.insert(key, (fingerprint, result.clone()));
        }
        Ok(Ok(result))
    }

    fn earlier_answer(
        &self,
        tx: &Transaction<'_>,
        key: &str,
    ) -> rusqlite::Result<Option<([u8; 16], LocalWriteResult)>> {
        if let Some(found) = self.answered.get(key) {
            return Ok(Some(found.clone()));
        }
        tx.prepare_cached("SELECT fingerprint, outcome FROM idempotency WHERE key = ?1")?
            .query_row([key], |row| Ok((row.get::<_, [u8; 16]>(0)?, row.get::<_, String>(1)?)))
            .optional()?
            .map(|(fingerprint, outcome)| Ok((fingerprint, from_json(&outcome)?)))
            .transpose()
    }

    fn in_outbox(&self, tx: &Transaction<'_>, event_id: EventId) -> rusqlite::Result<bool> {
        tx.prepare_cached("SELECT 1 FROM outbox WHERE event_id = ?1")?
            .exists([&event_id.as_bytes()[..]])
    }

    fn insert_outbox(
        &mut self,
        tx: &Transaction<'_>,
        seq: u64,
        product: ProductId,
        event_id: EventId,
        payload: &EventPayload,
        metadata: &EventMetadata,
    ) -> rusqlite::Result<()> {
        tx.prepare_cached(
            "INSERT INTO outbox (seq, event_id, product_id, event_type, schema_version, data, metadata, status, recorded_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8)",
        )?
        .execute(params![
            seq as i64,
            &event_id.as_bytes()[..],
            &product.as_bytes()[..],
            payload.event_type(),
            shelfsync_common::event::CURRENT_SCHEMA_VERSION,
            to_json(&payload.data())?,
            to_json(metadata)?,
            time_text(self.now),
        ])?;
        self.recorded_ids.insert(event_id);
        Ok(())
    }

    fn apply_hub(
        &mut self,
        tx: &Transaction<'_>,
        events: Vec<EventEnvelope>,
        cursor: u64,
        head: u64,
    ) -> rusqlite::Result<ApplyReport> {
        let mut sync = self.sync();
        let mut report = ApplyReport::default();
        for event in events {
            if event.position <= sync.cursor {
                continue;
            }
            sync.cursor = event.position;
            match event.stream.store_id {
                Some(store) if store == self.view.store_id => {
                    report.confirmed_own += usize::from(self.confirm(tx, &event)?);
                    report.applied += 1;
                }
                Some(_) => {}
                None => {
                    if let EventPayload::ProductRegistered(product) | EventPayload::ProductUpdated(product) =
                        &event.payload
                    {
                        let view = ProductView {
                            product: product.clone(),
                            version: event.stream_version,
                        };
                        tx.prepare_cached(
                            "INSERT INTO catalog (product_id, sku, name, price_minor, version) VALUES (?1, ?2, ?3, ?4, ?5)
                             ON CONFLICT (product_id) DO UPDATE SET sku = excluded.sku, name = excluded.name,
                               price_minor = excluded.price_minor, version = excluded.version",
                        )?
                        .execute(params![&product.id.as_bytes()[..], product.sku, product.name, product.price_minor as i64, event.stream_version as i64])?;
                        self.changes.catalog.retain(|p| p.product.id != product.id);
                        self.changes.catalog.push(view);
                        report.applied += 1;
                    }
                }
            }
        }
        sync.cursor = sync.cursor.max(cursor);
        sync.hub_head = sync.hub_head.max(head).max(sync.cursor);
        sync.last_sync_at = Some(self.now);
        report.cursor = sync.cursor;
        self.changes.sync = Some(sync);
        Ok(report)
    }

    /// Applies an event of this store's stream to the confirmed state; returns whether it
    /// was one of ours leaving the pending set.
    fn confirm(&mut self, tx: &Transaction<'_>, event: &EventEnvelope) -> rusqlite::Result<bool> {
        let product = event.stream.product_id;
        let have = self.stream(product).map_or(0, |s| s.confirmed().version);
        if event.stream_version <= have {
            return Ok(false);
        }
        if event.stream_version != have + 1 {
            tracing::warn!(stream = %event.stream, have, got = event.stream_version, "stream version gap in the hub feed");
        }
        let stream = self.stream_mut(product);
        let own = stream.confirm(event.event_id, &event.payload, event.stream_version);
        let confirmed = to_json(stream.confirmed())?;
        if own || self.recorded_ids.contains(&event.event_id) {
            tx.prepare_cached("UPDATE outbox SET status = 'confirmed', hub_position = ?2 WHERE event_id = ?1")?
                .execute(params![&event.event_id.as_bytes()[..], event.position as i64])?;
        }
        tx.prepare_cached(
            "INSERT INTO confirmed_streams (product_id, state) VALUES (?1, ?2)
             ON CONFLICT (product_id) DO UPDATE SET state = excluded.state",
        )?
        .execute(params![&product.as_bytes()[..], confirmed])?;
        Ok(own)
    }

    fn acknowledge(&mut self, tx: &Transaction<'_>, results: Vec<UploadResult>) -> rusqlite::Result<()> {
        for result in results {
            let id = &result.event_id.as_bytes()[..];
            match result.outcome {
                UploadOutcome::Appended { position, .. } | UploadOutcome::Duplicate { position, .. } => {
                    tx.prepare_cached("UPDATE outbox SET status = 'acked', hub_position = ?2 WHERE event_id = ?1 AND status = 'pending'")?
                        .execute(params![id, position as i64])?;
                }
                UploadOutcome::Rejected { reason, detail } => {
                    let changed = tx
                        .prepare_cached(
                            "UPDATE outbox SET status = 'quarantined', reject_reason = ?2, reject_detail = ?3
                             WHERE event_id = ?1 AND status IN ('pending', 'acked')",
                        )?
                        .execute(params![id, reason, detail])?;
                    if changed > 0 {
                        tracing::warn!(event_id = %result.event_id, %reason, %detail, "the hub rejected an event; quarantined");
                        self.drop_pending(tx, result.event_id)?;
                        self.changes.quarantined += 1;
                    }
                }
            }
        }
        let mut sync = self.sync();
        sync.last_sync_at = Some(self.now);
        self.changes.sync = Some(sync);
        Ok(())
    }

    /// Removes an event from the pending set of whichever stream holds it.
    fn drop_pending(&mut self, tx: &Transaction<'_>, event_id: EventId) -> rusqlite::Result<()> {
        let product: Option<[u8; 16]> = tx
            .prepare_cached("SELECT product_id FROM outbox WHERE event_id = ?1")?
            .query_row([&event_id.as_bytes()[..]], |row| row.get(0))
            .optional()?;
        if let Some(product) = product.map(ProductId::from_bytes) {
            self.stream_mut(product).remove_pending(event_id);
        }
        Ok(())
    }

    fn bootstrap(&mut self, tx: &Transaction<'_>, snapshot: SnapshotResponse) -> rusqlite::Result<()> {
        tx.execute_batch("DELETE FROM confirmed_streams; DELETE FROM catalog;")?;
        let mut streams: HashMap<ProductId, InventoryState> = HashMap::new();
        for row in &snapshot.stock {
            let state = streams.entry(row.product_id).or_default();
            state.on_hand = row.on_hand;
            state.version = row.version;
        }
        for hold in &snapshot.reservations {
            // The side that made a hold expires it: this store's own holds stay its to expire.
            if hold.origin == Origin::Store(self.view.store_id) {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO own_reservations (reservation_id, product_id) VALUES (?1, ?2)",
                )?
                .execute(params![
                    &hold.reservation_id.as_bytes()[..],
                    &hold.product_id.as_bytes()[..]
                ])?;
                self.changes.own_reservations.push(hold.reservation_id);
            }
            let reservation = Reservation {
                quantity: hold.quantity,
                expires_at: hold.expires_at,
            };
            streams
                .entry(hold.product_id)
                .or_default()
                .reservations
                .insert(hold.reservation_id, reservation);
        }
        // The snapshot replaces the confirmed state and the catalog wholesale; events
        // recorded here stay pending on top of it.
        let known: HashSet<ProductId> = self
            .view
            .streams
            .keys()
            .chain(self.changes.streams.keys())
            .chain(streams.keys())
            .copied()
            .collect();
        for product in known {
            let confirmed = streams.remove(&product).unwrap_or_default();
            if confirmed != InventoryState::default() {
                tx.prepare_cached("INSERT INTO confirmed_streams (product_id, state) VALUES (?1, ?2)")?
                    .execute(params![&product.as_bytes()[..], to_json(&confirmed)?])?;
            }
            self.stream_mut(product).replace_confirmed(confirmed);
        }
        self.changes.replace_all = true;
        for product in &snapshot.catalog {
            let p = &product.product;
            tx.prepare_cached(
                "INSERT INTO catalog (product_id, sku, name, price_minor, version) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                &p.id.as_bytes()[..],
                p.sku,
                p.name,
                p.price_minor as i64,
                product.version as i64
            ])?;
        }
        self.changes.catalog = snapshot.catalog;
        let mut sync = self.sync();
        sync.cursor = snapshot.position;
        sync.hub_head = sync.hub_head.max(snapshot.position);
        sync.bootstrapped = true;
        sync.last_sync_at = Some(self.now);
        self.changes.sync = Some(sync);
        tracing::info!(position = snapshot.position, "bootstrapped from the hub's snapshot");
        Ok(())
    }

    fn quarantine(
        &mut self,
        tx: &Transaction<'_>,
        event_id: EventId,
        action: QuarantineAction,
    ) -> rusqlite::Result<Result<(), LocalError>> {
        let status = match action {
            QuarantineAction::Retry => "pending",
            QuarantineAction::Discard => "discarded",
        };
        let changed = tx
            .prepare_cached("UPDATE outbox SET status = ?2, reject_reason = NULL, reject_detail = NULL WHERE event_id = ?1 AND status = 'quarantined'")?
            .execute(params![&event_id.as_bytes()[..], status])?;
        if changed == 0 {
            return Ok(Err(LocalError::NotQuarantined(event_id)));
        }
        self.changes.quarantined -= 1;
        if action == QuarantineAction::Retry {
            let row = tx
                .prepare_cached("SELECT seq, product_id, event_type, schema_version, data, recorded_at FROM outbox WHERE event_id = ?1")?
                .query_row([&event_id.as_bytes()[..]], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, [u8; 16]>(1)?, row.get::<_, String>(2)?, row.get::<_, u16>(3)?, row.get::<_, String>(4)?, row.get::<_, String>(5)?))
                })?;
            let (seq, product, event_type, schema_version, data, recorded_at) = row;
            let payload = EventPayload::decode(&event_type, schema_version, from_json(&data)?)
                .map_err(|e| conversion(e.to_string()))?;
            let product = ProductId::from_bytes(product);
            let pending = PendingEvent {
                seq: seq as u64,
                event_id,
                payload,
                recorded_at: parse_time(&recorded_at)?,
            };
            self.stream_mut(product).restore_pending(pending);
        }
        Ok(Ok(()))
    }

    fn finish(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        if let Some(sync) = &self.changes.sync {
            tx.prepare_cached(
                "UPDATE sync_state SET cursor = ?1, hub_head = ?2, bootstrapped = ?3, last_sync_at = ?4 WHERE id = 1",
            )?
            .execute(params![
                sync.cursor as i64,
                sync.hub_head as i64,
                sync.bootstrapped,
                sync.last_sync_at.map(time_text)
            ])?;
        }
        Ok(())
    }
}

/// The oldest pending events, ready to upload.
pub(super) fn pending_batch(conn: &Connection, store: StoreId, limit: usize) -> rusqlite::Result<Vec<UploadEvent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT event_id, product_id, event_type, schema_version, data, metadata FROM outbox
         WHERE status = 'pending' ORDER BY seq LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit as i64], |row| {
        Ok(UploadEvent {
            event_id: EventId::from_bytes(row.get(0)?),
            stream: StreamId::inventory(ProductId::from_bytes(row.get(1)?), store),
            event_type: row.get(2)?,
            schema_version: row.get(3)?,
            data: from_json(&row.get::<_, String>(4)?)?,
            metadata: from_json(&row.get::<_, String>(5)?)?,
        })
    })?;
    rows.collect()
}

/// Outbox entries with one of `statuses`, newest first.
pub(super) fn outbox_entries(
    conn: &Connection,
    statuses: &[OutboxStatus],
    limit: usize,
) -> rusqlite::Result<Vec<OutboxEntry>> {
    // One statement per status, merged newest first. The status is written into the SQL
    // (it comes from the enum, never from input) so SQLite can use the partial index on
    // (status, seq) for the unconfirmed ones.
    let mut entries = Vec::new();
    for status in statuses {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT seq, event_id, product_id, event_type, status, hub_position, reject_reason, reject_detail, recorded_at
             FROM outbox WHERE status = '{}' ORDER BY seq DESC LIMIT ?1",
            status.as_str()
        ))?;
        let mut rows = stmt.query([limit as i64])?;
        while let Some(row) = rows.next()? {
            let status: String = row.get(4)?;
            entries.push(OutboxEntry {
                seq: row.get::<_, i64>(0)? as u64,
                event_id: EventId::from_bytes(row.get(1)?),
                product_id: ProductId::from_bytes(row.get(2)?),
                event_type: row.get(3)?,
                status: OutboxStatus::parse(&status).ok_or_else(|| conversion(format!("bad status {status}")))?,
                hub_position: row.get::<_, Option<i64>>(5)?.map(|p| p as u64),
                reject_reason: row.get(6)?,
                reject_detail: row.get(7)?,
                recorded_at: parse_time(&row.get::<_, String>(8)?)?,
            });
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.seq));
    entries.dedup_by_key(|e| e.seq);
    entries.truncate(limit);
    Ok(entries)
}
