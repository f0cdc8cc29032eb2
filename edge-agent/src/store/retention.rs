//! Pruning the rows that only serve retries: outbox rows the hub confirmed, and the tills'
//! idempotency records, once older than the cutoff (`retention.keep_days`).
//!
//! What is kept, whatever its age: every outbox row that is not `confirmed` (pending and
//! acked rows are sales the hub has not confirmed yet; quarantined ones wait for an
//! operator; discarded ones are the operator's record of giving a sale up). A confirmed
//! row younger than the cutoff is kept so that the agent can upload its own events again
//! after the hub was restored from a backup. An idempotency record younger than the
//! cutoff is kept so that a till's retry gets its first answer (a till retries within
//! minutes; the cutoff is at least a day).
//!
//! Each step searches on the read connection (the writer is not held while the table is
//! walked) for at most `limit` candidates after where the last step stopped, then the
//! writer deletes them by primary key in one short transaction, checking the condition
//! again: a row is only ever removed if it is old *and* confirmed at the moment of the
//! delete. So the writer's share of a step is `limit` key lookups, and a till's sale
//! waits at most that long (measured: `docs/benchmarks.md`, "Retention").

use rusqlite::{params, Connection, Transaction};
use shelfsync_common::sqlite::time_text;

/// Rows a prune step deletes, found by [`outbox_candidates`] or [`idempotency_candidates`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PruneRows {
    /// Confirmed outbox rows, by `seq`.
    Outbox(Vec<u64>),
    /// Idempotency records, by key.
    Idempotency(Vec<String>),
}

/// Up to `limit` confirmed outbox rows recorded before `cutoff` (stored time text), after
/// `seq` `after`, in `seq` order.
pub(super) fn outbox_candidates(
    conn: &Connection,
    cutoff: &str,
    after: u64,
    limit: usize,
) -> rusqlite::Result<Vec<u64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq FROM outbox WHERE seq > ?1 AND status = 'confirmed' AND recorded_at < ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![after as i64, cutoff, limit as i64], |row| {
        row.get::<_, i64>(0).map(|s| s as u64)
    })?;
    rows.collect()
}

/// Up to `limit` idempotency records created before `cutoff`, after key `after`, in key
/// order.
pub(super) fn idempotency_candidates(
    conn: &Connection,
    cutoff: &str,
    after: &str,
    limit: usize,
) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT key FROM idempotency WHERE key > ?1 AND created_at < ?2 ORDER BY key LIMIT ?3")?;
    let rows = stmt.query_map(params![after, cutoff, limit as i64], |row| row.get(0))?;
    rows.collect()
}

/// Deletes `rows` that are still old (and, for the outbox, still confirmed); how many
/// went. Runs in the writer's transaction.
pub(super) fn delete(tx: &Transaction<'_>, rows: &PruneRows, cutoff: &str) -> rusqlite::Result<usize> {
    let mut deleted = 0;
    match rows {
        PruneRows::Outbox(seqs) => {
            let mut stmt =
                tx.prepare_cached("DELETE FROM outbox WHERE seq = ?1 AND status = 'confirmed' AND recorded_at < ?2")?;
            for seq in seqs {
                deleted += stmt.execute(params![*seq as i64, cutoff])?;
            }
        }
        PruneRows::Idempotency(keys) => {
            let mut stmt = tx.prepare_cached("DELETE FROM idempotency WHERE key = ?1 AND created_at < ?2")?;
            for key in keys {
                deleted += stmt.execute(params![key, cutoff])?;
            }
        }
    }
    Ok(deleted)
}

/// The cutoff as stored time text (text order is time order, see [`time_text`]).
pub(super) fn cutoff_text(cutoff: time::OffsetDateTime) -> rusqlite::Result<String> {
    time_text::encode(cutoff).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))
}
