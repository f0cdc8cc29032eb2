//! The agent's local store: one SQLite file (WAL, `synchronous=FULL`) holding the outbox
//! of events recorded at this store, the hub-confirmed state of its streams, the catalog,
//! the POS idempotency records and the sync cursor; and the in-memory [`view::View`] that
//! tills read. Old confirmed outbox rows and idempotency records are pruned by the
//! retention job ([`retention`]).
//!
//! Every write goes through one writer thread ([`writer`]) that group-commits: a till's
//! write is on disk (one fsync shared with the writes queued beside it) before the till
//! gets its answer, and the view changes only after the commit.

mod outbox;
mod retention;
pub mod view;
mod writer;

use retention::PruneRows;
use shelfsync_common::domain::allocation::OverShare;
use shelfsync_common::server::retention::Step;
use shelfsync_common::wire::edge::{LocalWriteResult, OutboxEntry, OutboxStatus};
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::wire::sync::{SnapshotResponse, UploadEvent, UploadResult};
use shelfsync_common::{
    DomainError, EventEnvelope, EventId, EventMetadata, InventoryCommand, ProductId, ReservationId, StoreId,
};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use time::OffsetDateTime;
use tokio::sync::watch;
use view::View;

/// The local store's migrations, oldest first.
pub const MIGRATIONS: shelfsync_common::sqlite::Migrations = &[
    (
        "0001_local_store",
        include_str!("../../migrations/0001_local_store.sql"),
    ),
    ("0002_secrets", include_str!("../../migrations/0002_secrets.sql")),
    ("0003_resync", include_str!("../../migrations/0003_resync.sql")),
];

/// The condition of the partial index `outbox_unconfirmed` (migration 0001), to repeat in
/// every read of unconfirmed rows so that SQLite uses the index ([`outbox`] says why).
const UNCONFIRMED: &str = "status IN ('pending', 'acked', 'quarantined')";

/// Which stream a till's command is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A product at this store.
    Product(ProductId),
    /// The product that holds this open reservation.
    Reservation(ReservationId),
}

/// A till's command.
#[derive(Debug, Clone)]
pub struct LocalCommand {
    /// The stream.
    pub target: Target,
    /// What to do.
    pub command: InventoryCommand,
    /// The event's id.
    pub event_id: EventId,
    /// The request's idempotency key and a digest of the request, when the till sent one.
    pub idempotency: Option<(String, Fingerprint)>,
    /// Provenance (origin: this store).
    pub metadata: EventMetadata,
    /// What to do when the command needs more than the store's share of an allocation
    /// (the store's policy, `[allocations] over_share`).
    pub over_share: OverShare,
}

/// Why a local write was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalError {
    /// The rules refused the command against the local stock.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The product is not in the catalog this agent has.
    #[error("product {0} is not in this store's catalog")]
    UnknownProduct(ProductId),
    /// No open reservation here has this id.
    #[error("reservation {0} is not open at this store")]
    UnknownReservation(ReservationId),
    /// The idempotency key was used before for a different request.
    #[error("Idempotency-Key {0:?} was already used for a different request")]
    IdempotencyConflict(String),
    /// An event with this id is already in the outbox (a command must bring a new id).
    #[error("event {0} is already recorded at this store")]
    DuplicateEvent(EventId),
    /// No outbox event has this id (or it is not in the state the action needs).
    #[error("no quarantined event {0}")]
    NotQuarantined(EventId),
    /// The disk or database failed; nothing was written. Retry.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The store is shutting down.
    #[error("the local store is shutting down")]
    Unavailable,
}

/// What applying hub events changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Events applied to the confirmed state or the catalog.
    pub applied: usize,
    /// Own events that came back and left the pending set.
    pub confirmed_own: usize,
    /// The cursor after the call.
    pub cursor: u64,
}

/// What to do with a quarantined event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuarantineAction {
    /// Send it to the hub again (after the cause was fixed there).
    Retry,
    /// Give it up: it leaves the local state for good.
    Discard,
}

/// A handle on the local store; cheap to clone.
#[derive(Clone)]
pub struct LocalStore {
    writer: writer::LocalWriter,
    view: Arc<RwLock<View>>,
    reader: Arc<Mutex<rusqlite::Connection>>,
    recorded: watch::Receiver<u64>,
    id_key: Arc<shelfsync_common::IdKey>,
}

impl LocalStore {
    /// Opens (creating and migrating if needed) the store of `store_id` at `path`.
    pub fn open(path: &Path, store_id: StoreId) -> Result<Self, LocalError> {
        let storage = |e: &dyn std::fmt::Display| LocalError::Storage(e.to_string());
        let (writer, view, recorded, id_key) = writer::start(path, store_id).map_err(|e| storage(&e))?;
        let reader = shelfsync_common::sqlite::open_read_only(path).map_err(|e| storage(&e))?;
        Ok(Self {
            writer,
            view,
            reader: Arc::new(Mutex::new(reader)),
            recorded,
            id_key: Arc::new(id_key),
        })
    }

    /// The key that derives event ids from the tills' idempotency keys (kept in this
    /// file, see [`shelfsync_common::IdKey`]).
    pub fn id_key(&self) -> &shelfsync_common::IdKey {
        &self.id_key
    }

    /// Reads the view (never blocks on disk).
    pub fn read<T>(&self, read: impl FnOnce(&View) -> T) -> T {
        let view = self.view.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        read(&view)
    }

    /// Records a till's command, durably, and answers with the new local stock.
    pub async fn execute(&self, command: LocalCommand) -> Result<LocalWriteResult, LocalError> {
        self.writer
            .submit(|reply| writer::WriteOp::Command(Box::new(command), reply))
            .await
    }

    /// Applies events from the hub (in position order) and moves the cursor to `cursor`.
    pub async fn apply_hub(
        &self,
        events: Vec<EventEnvelope>,
        cursor: u64,
        head: u64,
    ) -> Result<ApplyReport, LocalError> {
        self.writer
            .submit(|reply| writer::WriteOp::ApplyHub {
                events,
                cursor,
                head,
                reply,
            })
            .await
    }

    /// Records the hub's answer to an upload.
    pub async fn acknowledge(&self, results: Vec<UploadResult>) -> Result<(), LocalError> {
        self.writer
            .submit(|reply| writer::WriteOp::Acknowledge(results, reply))
            .await
    }

    /// Takes the starting snapshot (only on a store that has none).
    pub async fn bootstrap(&self, snapshot: SnapshotResponse) -> Result<(), LocalError> {
        self.writer
            .submit(|reply| writer::WriteOp::Bootstrap(Box::new(snapshot), reply))
            .await
    }

    /// Retries or discards a quarantined event.
    pub async fn quarantine(&self, event_id: EventId, action: QuarantineAction) -> Result<(), LocalError> {
        self.writer
            .submit(|reply| writer::WriteOp::Quarantine {
                event_id,
                action,
                reply,
            })
            .await
    }

    /// One retention step on the outbox: deletes up to `limit` confirmed rows recorded
    /// before `cutoff`, searching after `after` (see [`retention`]).
    pub async fn prune_outbox(
        &self,
        cutoff: OffsetDateTime,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Step<u64>, LocalError> {
        let text = retention::cutoff_text(cutoff).map_err(|e| LocalError::Storage(e.to_string()))?;
        let search = text.clone();
        let found = self
            .query(move |conn| retention::outbox_candidates(conn, &search, after.unwrap_or(0), limit))
            .await?;
        let resume = (found.len() == limit).then(|| found.last().copied()).flatten();
        self.prune(PruneRows::Outbox(found), text, resume).await
    }

    /// One retention step on the idempotency records: deletes up to `limit` created
    /// before `cutoff`, searching after key `after`.
    pub async fn prune_idempotency(
        &self,
        cutoff: OffsetDateTime,
        after: Option<String>,
        limit: usize,
    ) -> Result<Step<String>, LocalError> {
        let text = retention::cutoff_text(cutoff).map_err(|e| LocalError::Storage(e.to_string()))?;
        let search = text.clone();
        let found = self
            .query(move |conn| retention::idempotency_candidates(conn, &search, after.as_deref().unwrap_or(""), limit))
            .await?;
        let resume = (found.len() == limit).then(|| found.last().cloned()).flatten();
        self.prune(PruneRows::Idempotency(found), text, resume).await
    }

    async fn prune<C>(&self, rows: PruneRows, cutoff: String, resume: Option<C>) -> Result<Step<C>, LocalError> {
        let empty = match &rows {
            PruneRows::Outbox(seqs) => seqs.is_empty(),
            PruneRows::Idempotency(keys) => keys.is_empty(),
        };
        let pruned = if empty {
            0
        } else {
            self.writer
                .submit(|reply| writer::WriteOp::Prune { rows, cutoff, reply })
                .await?
        };
        Ok(Step { pruned, resume })
    }

    /// Checkpoints the WAL (scheduled maintenance).
    pub async fn checkpoint(&self) -> Result<(), LocalError> {
        self.writer.checkpoint().await
    }

    /// The writer itself (tests queue work on it without waiting for the answer).
    #[cfg(test)]
    fn writer(&self) -> &writer::LocalWriter {
        &self.writer
    }

    /// Changes whenever a new event is recorded (its outbox seq): wakes the uploader.
    pub fn recorded(&self) -> watch::Receiver<u64> {
        self.recorded.clone()
    }

    /// The oldest pending events, in outbox order, ready to upload.
    pub async fn pending_batch(&self, limit: usize) -> Result<Vec<UploadEvent>, LocalError> {
        let store_id = self.read(|v| v.store_id);
        self.query(move |conn| outbox::pending_batch(conn, store_id, limit))
            .await
    }

    /// Events the hub answered for (acknowledged or confirmed) after outbox seq
    /// `after_seq`, oldest first, with their seq: what a re-sync sends again.
    pub async fn answered_batch(&self, after_seq: u64, limit: usize) -> Result<Vec<(UploadEvent, u64)>, LocalError> {
        let store_id = self.read(|v| v.store_id);
        self.query(move |conn| outbox::answered_batch(conn, store_id, after_seq, limit))
            .await
    }

    /// The acknowledged, not yet confirmed own event at the highest hub position.
    pub async fn latest_ack(&self) -> Result<Option<(u64, EventId)>, LocalError> {
        self.query(outbox::latest_ack).await
    }

    /// Re-seeds the confirmed state and the catalog from `snapshot`, keeping every event
    /// the hub has not confirmed; `positions` are the hub's answers to events sent again
    /// (recorded first), and own events the hub acknowledged at or below the snapshot's
    /// position are confirmed by it. `reuploaded` and `reason` are reported in the status
    /// ([`shelfsync_common::wire::sync::Resynced`]).
    pub async fn resync(
        &self,
        snapshot: SnapshotResponse,
        positions: Vec<(EventId, u64)>,
        reuploaded: u64,
        reason: &str,
    ) -> Result<(), LocalError> {
        let reason = reason.to_owned();
        self.writer
            .submit(|reply| writer::WriteOp::Resync {
                snapshot: Box::new(snapshot),
                positions,
                reuploaded,
                reason,
                reply,
            })
            .await
    }

    /// Outbox entries with one of `statuses`, newest first, at most `limit`.
    pub async fn outbox(&self, statuses: Vec<OutboxStatus>, limit: usize) -> Result<Vec<OutboxEntry>, LocalError> {
        self.query(move |conn| outbox::outbox_entries(conn, &statuses, limit))
            .await
    }

    async fn query<T: Send + 'static>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LocalError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            read(&conn).map_err(|e| LocalError::Storage(e.to_string()))
        })
        .await
        .map_err(|e| LocalError::Storage(e.to_string()))?
    }

    /// Lets the writer finish what is queued, checkpoints, stops it, and waits for it.
    pub async fn close(&self) {
        self.writer.close().await;
    }
}

#[cfg(test)]
mod tests;
