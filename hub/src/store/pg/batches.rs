//! The event log's batches on PostgreSQL: the same batch logic as on SQLite, framed by
//! the cluster-wide write lock.
//!
//! A batch starts with `SELECT head, stores FROM log_head FOR UPDATE`. Whoever holds that
//! row lock is the only writer of the whole cluster until it commits, so:
//! - positions are handed out from the locked head and a batch commits before the next
//!   one can even read the head: gap-free, and in commit order across hubs;
//! - the heads this hub keeps in memory are brought up to date under the lock (the streams
//!   other hubs wrote since this hub's last batch are reloaded from `streams`, and the
//!   stores when their count moved), so every decision is taken against the database's
//!   current state;
//! - an event id is looked up, or its insert conflicts, against every committed event of
//!   every hub.
//!
//! The batch ends by moving the head and `NOTIFY`ing the other hubs (delivered at commit).

use super::rows::PgRows;
use super::{PgDb, CHANNEL};
use crate::bus::EventBus;
use crate::store::reader::{envelope_from_row, EVENT_COLUMNS};
use crate::store::rows::{sql_position, StoredRow};
use crate::store::writer::{committed, fail, run_batch, stream_head_from_row, Changes, Heads, Pending, WriteOp};
use crate::store::{ReadError, WriteError};
use postgres::{GenericClient, Transaction};
use shelfsync_common::sqlite::group_commit::BatchLogic;
use shelfsync_common::{EventEnvelope, StoreId};

/// Events other hubs committed since this hub's last batch that the batch reads and
/// publishes ahead of its own, so that the bus stays contiguous. Past this, the
/// [`super::Follower`] publishes them and the feeds read the log for what they missed.
const PUBLISH_OTHERS_LIMIT: u64 = 1000;

/// The event log's side of the group commit on PostgreSQL.
pub(in crate::store) struct PgBatches {
    heads: Heads,
    bus: EventBus,
    /// Events of other hubs read by the running batch, published before its own.
    others: Vec<EventEnvelope>,
}

impl PgBatches {
    /// The batches of a hub whose heads are loaded.
    pub fn new(heads: Heads, bus: EventBus) -> Self {
        Self {
            heads,
            bus,
            others: Vec::new(),
        }
    }

    /// Brings the heads up to what the database holds, under the write lock (taken when the
    /// transaction began: `PgDb::begin`).
    fn lock_and_refresh(&mut self, tx: &mut Transaction<'_>) -> Result<(), ReadError> {
        let row = tx.query_one("SELECT head, stores FROM log_head FOR UPDATE", &[])?;
        let (head, stores) = (row.int(0)? as u64, row.int(1)? as usize);
        let known = self.heads.next_position - 1;
        self.others.clear();
        if head != known {
            reload_streams(tx, &mut self.heads, known)?;
            if head - known <= PUBLISH_OTHERS_LIMIT {
                self.others = events_between(tx, known, head)?;
            }
            self.heads.next_position = head + 1;
        }
        if stores != self.heads.store_count() {
            reload_stores(tx, &mut self.heads)?;
        }
        Ok(())
    }
}

/// Loads every stream head written after position `after` (by other hubs; 0 = all).
pub(super) fn reload_streams(db: &mut impl GenericClient, heads: &mut Heads, after: u64) -> Result<(), ReadError> {
    let rows = db.query(
        "SELECT stream_key, last_position, state FROM streams WHERE last_position > $1",
        &[&sql_position(after)],
    )?;
    for row in rows {
        let (stream, head) = stream_head_from_row(&row)?;
        heads.load_stream(stream, head);
    }
    Ok(())
}

/// Loads every enrolled store.
pub(super) fn reload_stores(db: &mut impl GenericClient, heads: &mut Heads) -> Result<(), ReadError> {
    for row in db.query("SELECT id FROM stores", &[])? {
        heads.load_store(StoreId::from_bytes(row.fixed(0)?));
    }
    Ok(())
}

fn events_between(tx: &mut Transaction<'_>, after: u64, upto: u64) -> Result<Vec<EventEnvelope>, ReadError> {
    tx.query(
        &format!("SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 AND position <= $2 ORDER BY position"),
        &[&sql_position(after), &sql_position(upto)],
    )?
    .iter()
    .map(envelope_from_row)
    .collect()
}

impl BatchLogic for PgBatches {
    type Db = PgDb;
    type Write = WriteOp;
    type Error = WriteError;
    type Changes = Changes;

    fn run_batch(
        &mut self,
        tx: &mut Transaction<'_>,
        writes: &mut dyn Iterator<Item = WriteOp>,
        answers: &mut Vec<Pending>,
    ) -> Result<Changes, ReadError> {
        self.lock_and_refresh(tx)?;
        // The ids the batch names, looked up at once (one round trip, not one per write);
        // a failure from here on fails the writes not run yet, as the writer would.
        let writes: Vec<WriteOp> = writes.collect();
        let mut ids = Vec::new();
        writes.iter().for_each(|write| write.event_ids(&mut ids));
        let mut rest = writes.into_iter();
        let ran = PgRows::new(tx, &ids).and_then(|rows| run_batch(&self.heads, rows, &mut rest, answers));
        let changes = match ran {
            Ok(changes) => changes,
            Err(error) => {
                let refused = WriteError::Storage(error.to_string());
                rest.for_each(|write| fail(write, &refused));
                return Err(error);
            }
        };
        let head = changes.next_position() - 1;
        if head != self.heads.next_position - 1 {
            // One statement: move the head, and wake the other hubs at commit.
            tx.execute(
                "WITH moved AS (UPDATE log_head SET head = $1 RETURNING head)
                 SELECT pg_notify($2, head::text) FROM moved",
                &[&sql_position(head), &CHANNEL],
            )?;
        }
        Ok(changes)
    }

    fn committed(&mut self, changes: Changes) {
        committed(&mut self.heads, &self.bus, changes, std::mem::take(&mut self.others));
    }

    fn fail(write: WriteOp, error: &WriteError) {
        fail(write, error)
    }

    fn storage_error(error: &ReadError) -> WriteError {
        WriteError::Storage(error.to_string())
    }

    fn unavailable() -> WriteError {
        WriteError::Unavailable
    }
}
