//! The local store's batch logic, run by the shared group-commit writer
//! ([`shelfsync_common::sqlite::group_commit`]): one thread, one write connection, one fsync per
//! batch, every caller answered after the commit (or failed after a rollback).
//!
//! What this file adds: the writer keeps its own copy of the view, and each write runs
//! against it, changing it in place and logging each change ([`StreamOp`], catalog,
//! sync position); after the commit the log is replayed on the shared view (and the
//! outbox's new last sequence announced to the uploader) before the callers are
//! answered. A batch therefore costs what it changes, however many events are pending.
//! A write the rules refuse writes nothing; if SQLite fails, the batch rolls back, the
//! shared view is untouched and the writer's copy is taken from it again.

use super::retention::{self, PruneRows};
use super::view::{level, PendingEvent, StreamOp, StreamView, SyncPosition, View};
use super::{ApplyReport, LocalCommand, LocalError, QuarantineAction, Target, MIGRATIONS};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use shelfsync_common::domain::allocation::{self, Decider, OverShare};
use shelfsync_common::domain::inventory::{self, InventoryState, Reservation};
use shelfsync_common::sqlite::group_commit::{
    BatchLogic, Reply as GenericReply, Writer, WriterMetrics, WriterSettings,
};
use shelfsync_common::sqlite::{settle, time_text, Deferred};
use shelfsync_common::wire::api::ProductView;
use shelfsync_common::wire::edge::LocalWriteResult;
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::wire::sync::{SnapshotResponse, UploadOutcome, UploadResult};
use shelfsync_common::{
    EventEnvelope, EventId, EventMetadata, EventPayload, InventoryCommand, Origin, ProductId, ReservationId, StoreId,
    StreamId,
};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, RwLock};
use time::OffsetDateTime;
use tokio::sync::watch;

mod bootstrap;
mod hub;
mod load;
#[cfg(test)]
mod tests;

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
    Resync {
        snapshot: Box<SnapshotResponse>,
        positions: Vec<(EventId, u64)>,
        reuploaded: u64,
        reason: String,
        reply: Reply<()>,
    },
    Quarantine {
        event_id: EventId,
        action: QuarantineAction,
        reply: Reply<()>,
    },
    /// Deletes rows the retention job found, if still old (`cutoff` as stored text).
    Prune {
        rows: PruneRows,
        cutoff: String,
        reply: Reply<usize>,
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
    let view = load::load_view(&conn, store_id)?;
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
    let mirror = view.clone();
    let view = Arc::new(RwLock::new(view));
    let (recorded_tx, recorded) = watch::channel(next_seq - 1);
    let logic = LocalBatches {
        view: view.clone(),
        mirror,
        stale: false,
        next_seq,
        recorded: recorded_tx,
    };
    let writer = Writer::start(conn, logic, SETTINGS)?;
    Ok((writer, view, recorded, id_key))
}

pub(super) fn conversion(message: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, message.into())
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| conversion(e.to_string()))
}

pub(super) fn to_json(value: &impl serde::Serialize) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))
}

/// The local store's side of the group commit: the shared view it publishes to, its own
/// copy that batches change in place, the next outbox sequence, and where the outbox's
/// last sequence is announced.
pub(super) struct LocalBatches {
    view: Arc<RwLock<View>>,
    /// The shared view plus the running batch's changes.
    mirror: View,
    /// A batch ran and was not published (it rolled back): `mirror` holds its changes.
    stale: bool,
    next_seq: u64,
    recorded: watch::Sender<u64>,
}

impl BatchLogic for LocalBatches {
    type Db = rusqlite::Connection;
    type Write = WriteOp;
    type Error = LocalError;
    type Changes = Changes;

    fn run_batch(
        &mut self,
        tx: &mut Transaction<'_>,
        writes: &mut dyn Iterator<Item = WriteOp>,
        answers: &mut Vec<Deferred<LocalError>>,
    ) -> rusqlite::Result<Changes> {
        if self.stale {
            self.mirror = self
                .view
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
        }
        self.stale = true;
        let mut batch = Batch::new(&mut self.mirror, self.next_seq);
        for write in writes {
            batch.run(tx, write, answers)?;
        }
        batch.finish(tx)?;
        Ok(batch.changes)
    }

    fn committed(&mut self, changes: Changes) {
        self.stale = false;
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
            WriteOp::Prune { reply, .. } => refuse(reply, error),
            WriteOp::Acknowledge(_, reply)
            | WriteOp::Bootstrap(_, reply)
            | WriteOp::Resync { reply, .. }
            | WriteOp::Quarantine { reply, .. } => refuse(reply, error),
        }
    }

    fn storage_error(error: &rusqlite::Error) -> LocalError {
        LocalError::Storage(error.to_string())
    }

    fn unavailable() -> LocalError {
        LocalError::Unavailable
    }
}

/// What one batch changed, in order, replayed on the shared view after its commit.
#[derive(Default)]
pub(super) struct Changes {
    next_seq: u64,
    streams: Vec<(ProductId, StreamOp)>,
    catalog: Vec<ProductView>,
    replace_catalog: bool,
    own_reservations: Vec<ReservationId>,
    quarantined: i64,
    sync: Option<SyncPosition>,
}

impl Changes {
    fn apply_to(self, view: &mut View) {
        if self.replace_catalog {
            // A bootstrap: `catalog` holds the whole catalog.
            view.catalog.clear();
            view.skus.clear();
        }
        for (product, op) in &self.streams {
            view.apply(*product, op);
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
    /// The writer's copy of the view, changed in place.
    view: &'v mut View,
    changes: Changes,
    /// Streams whose confirmed state changed in this batch (written once, at the end).
    confirmed: HashSet<ProductId>,
    /// Idempotency keys first answered in this batch.
    answered: HashMap<String, (Fingerprint, LocalWriteResult)>,
    /// Own event ids in the outbox written in this batch.
    recorded_ids: HashSet<EventId>,
    now: OffsetDateTime,
}

impl<'v> Batch<'v> {
    fn new(view: &'v mut View, next_seq: u64) -> Self {
        Self {
            view,
            changes: Changes {
                next_seq,
                ..Changes::default()
            },
            answered: HashMap::new(),
            confirmed: HashSet::new(),
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
            WriteOp::Resync {
                snapshot,
                positions,
                reuploaded,
                reason,
                reply,
            } => {
                let result = self.resync(tx, *snapshot, (positions, reuploaded), reason).map(Ok);
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
            WriteOp::Prune { rows, cutoff, reply } => {
                let result = retention::delete(tx, &rows, &cutoff).map(Ok);
                settle(answers, reply, result, storage)
            }
        }
    }

    /// A stream as this batch sees it.
    fn stream(&self, product: ProductId) -> Option<&StreamView> {
        self.view.streams().get(&product)
    }

    /// Changes a stream (in the writer's copy now, in the shared view after the commit);
    /// returns whether one of ours left the pending set.
    fn edit(&mut self, product: ProductId, op: StreamOp) -> bool {
        let own = self.view.apply(product, &op);
        self.changes.streams.push((product, op));
        own
    }

    /// Puts a product into the catalog.
    fn put_product(&mut self, product: ProductView) {
        self.view.put_product(product.clone());
        self.changes.catalog.push(product);
    }

    fn sync(&self) -> SyncPosition {
        self.view.sync.clone()
    }

    fn set_sync(&mut self, sync: SyncPosition) {
        self.view.sync = sync.clone();
        self.changes.sync = Some(sync);
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
            Target::Reservation(id) => match self.view.reservation_product(id) {
                Some(product) => product,
                None => return Ok(Err(LocalError::UnknownReservation(id))),
            },
        };
        if !self.view.catalog.contains_key(&product) {
            return Ok(Err(LocalError::UnknownProduct(product)));
        }
        if let InventoryCommand::ReserveStock { reservation_id, .. } = &command.command {
            if self
                .view
                .reservation_product(*reservation_id)
                .is_some_and(|p| p != product)
            {
                return Ok(Err(
                    shelfsync_common::DomainError::ReservationExists(*reservation_id).into()
                ));
            }
        }
        let empty = InventoryState::default();
        let local = self.stream(product).map_or(&empty, StreamView::local);
        let used_hub_share = match command.over_share {
            OverShare::Mark => allocation::store_overdraw(local, &command.command),
            OverShare::Refuse | OverShare::Silent => 0,
        };
        let by = Decider::Store(command.over_share);
        let payload = match inventory::decide(local, &command.command, by) {
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
            self.own_reservation(*reservation_id);
        }
        let recorded = PendingEvent {
            seq,
            event_id: command.event_id,
            payload: payload.clone(),
            recorded_at: self.now,
        };
        self.edit(product, StreamOp::Record(recorded));
        let stream = self
            .stream(product)
            .ok_or_else(|| conversion("a recorded stream vanished".into()))?;
        let stock = level(self.view.store_id, product, stream);
        let result = LocalWriteResult {
            event_id: command.event_id,
            seq,
            stream: StreamId::inventory(product, self.view.store_id),
            payload,
            stock,
            replayed: false,
            used_hub_share,
        };
        self.changes.next_seq += 1;
        if let Some((key, fingerprint)) = command.idempotency {
            tx.prepare_cached(
                "INSERT INTO idempotency (key, fingerprint, outcome, created_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                key,
                &fingerprint.as_bytes()[..],
                to_json(&result)?,
                time_text::encode(self.now)?
            ])?;
            self.answered.insert(key, (fingerprint, result.clone()));
        }
        Ok(Ok(result))
    }

    fn earlier_answer(
        &self,
        tx: &Transaction<'_>,
        key: &str,
    ) -> rusqlite::Result<Option<(Fingerprint, LocalWriteResult)>> {
        if let Some(found) = self.answered.get(key) {
            return Ok(Some(found.clone()));
        }
        tx.prepare_cached("SELECT fingerprint, outcome FROM idempotency WHERE key = ?1")?
            .query_row([key], |row| Ok((row.get::<_, [u8; 16]>(0)?, row.get::<_, String>(1)?)))
            .optional()?
            .map(|(fingerprint, outcome)| Ok((Fingerprint::from_bytes(fingerprint), from_json(&outcome)?)))
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
            shelfsync_common::domain::event::CURRENT_SCHEMA_VERSION,
            payload
                .data_json()
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))?,
            to_json(metadata)?,
            time_text::encode(self.now)?,
        ])?;
        self.recorded_ids.insert(event_id);
        Ok(())
    }

    /// A reservation made here (this store expires it).
    fn own_reservation(&mut self, id: ReservationId) {
        self.view.own_reservations.insert(id);
        self.changes.own_reservations.push(id);
    }

    /// Writes what the batch kept for its end: the confirmed state of each stream it
    /// changed (once per stream, however many of its events came) and the sync position.
    fn finish(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        for product in std::mem::take(&mut self.confirmed) {
            let Some(stream) = self.view.streams().get(&product) else {
                continue;
            };
            tx.prepare_cached(
                "INSERT INTO confirmed_streams (product_id, state) VALUES (?1, ?2)
                 ON CONFLICT (product_id) DO UPDATE SET state = excluded.state",
            )?
            .execute(params![&product.as_bytes()[..], to_json(stream.confirmed())?])?;
        }
        if let Some(sync) = &self.changes.sync {
            let resynced = sync.resynced.as_ref();
            tx.prepare_cached(
                "UPDATE sync_state SET cursor = ?1, hub_head = ?2, bootstrapped = ?3, last_sync_at = ?4,
                   anchor_position = ?5, anchor_event = ?6, resynced_at = ?7, resynced_reuploaded = ?8,
                   resynced_position = ?9, resynced_reason = ?10 WHERE id = 1",
            )?
            .execute(params![
                sync.cursor as i64,
                sync.hub_head as i64,
                sync.bootstrapped,
                sync.last_sync_at.map(time_text::encode).transpose()?,
                sync.anchor.map(|(position, _)| position as i64),
                sync.anchor.map(|(_, id)| id.as_bytes().to_vec()),
                resynced.map(|r| time_text::encode(r.at)).transpose()?,
                resynced.map(|r| r.reuploaded as i64),
                resynced.map(|r| r.position as i64),
                resynced.map(|r| r.reason.clone()),
            ])?;
        }
        Ok(())
    }
}
