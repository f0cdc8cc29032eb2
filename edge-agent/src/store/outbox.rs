//! The outbox reads the uploader and the operator commands make, on the store's read
//! connection (they never wait for the writer).
//!
//! A read of unconfirmed rows repeats the partial index's condition ([`UNCONFIRMED`]):
//! SQLite uses a partial index only when the query's WHERE names its condition, and
//! without it `status = 'pending' ORDER BY seq` walks the whole table in seq order,
//! every confirmed row ever recorded included (the uploader's read grew with the store's
//! history: most of the agent's CPU late in a drain, issue 15).

use super::writer::{conversion, from_json};
use super::UNCONFIRMED;
use rusqlite::Connection;
use shelfsync_common::sqlite::time_text;
use shelfsync_common::wire::edge::{OutboxEntry, OutboxStatus};
use shelfsync_common::wire::sync::UploadEvent;
use shelfsync_common::{EventId, ProductId, StoreId, StreamId};

/// The oldest pending events, ready to upload.
pub(super) fn pending_batch(conn: &Connection, store: StoreId, limit: usize) -> rusqlite::Result<Vec<UploadEvent>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT event_id, product_id, event_type, schema_version, data, metadata, seq FROM outbox
         WHERE {UNCONFIRMED} AND status = 'pending' ORDER BY seq LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit as i64], |row| upload_event(row, store))?;
    rows.map(|row| row.map(|(event, _)| event)).collect()
}

/// The events the hub has answered for (acknowledged or confirmed), in outbox order after
/// `after_seq`, with their seq: what a re-sync sends again after the hub was restored.
pub(super) fn answered_batch(
    conn: &Connection,
    store: StoreId,
    after_seq: u64,
    limit: usize,
) -> rusqlite::Result<Vec<(UploadEvent, u64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT event_id, product_id, event_type, schema_version, data, metadata, seq FROM outbox
         WHERE seq > ?1 AND status IN ('acked', 'confirmed') ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map([after_seq as i64, limit as i64], |row| upload_event(row, store))?;
    rows.collect()
}

/// The own event the hub acknowledged at the highest position and has not sent back yet
/// (its position and id), if any.
pub(super) fn latest_ack(conn: &Connection) -> rusqlite::Result<Option<(u64, EventId)>> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached(&format!(
        "SELECT hub_position, event_id FROM outbox WHERE {UNCONFIRMED} AND status = 'acked'
         ORDER BY hub_position DESC LIMIT 1"
    ))?
    .query_row([], |row| {
        Ok((row.get::<_, i64>(0)? as u64, EventId::from_bytes(row.get(1)?)))
    })
    .optional()
}

/// One outbox row (`event_id, product_id, event_type, schema_version, data, metadata, seq`)
/// as an upload, with its seq.
fn upload_event(row: &rusqlite::Row<'_>, store: StoreId) -> rusqlite::Result<(UploadEvent, u64)> {
    Ok((
        UploadEvent {
            event_id: EventId::from_bytes(row.get(0)?),
            stream: StreamId::inventory(ProductId::from_bytes(row.get(1)?), store),
            event_type: row.get(2)?,
            schema_version: row.get(3)?,
            data: from_json(&row.get::<_, String>(4)?)?,
            metadata: from_json(&row.get::<_, String>(5)?)?,
        },
        row.get::<_, i64>(6)? as u64,
    ))
}

/// Outbox entries with one of `statuses`, newest first.
pub(super) fn outbox_entries(
    conn: &Connection,
    statuses: &[OutboxStatus],
    limit: usize,
) -> rusqlite::Result<Vec<OutboxEntry>> {
    // One statement per status, merged newest first. The status is written into the SQL
    // (it comes from the enum, never from input), with the partial index's condition for
    // the unconfirmed ones so that SQLite uses the index on (status, seq).
    let mut entries = Vec::new();
    for status in statuses {
        let indexed = match status {
            OutboxStatus::Pending | OutboxStatus::Acked | OutboxStatus::Quarantined => UNCONFIRMED,
            OutboxStatus::Confirmed | OutboxStatus::Discarded => "1",
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT seq, event_id, product_id, event_type, status, hub_position, reject_reason, reject_detail, recorded_at
             FROM outbox WHERE {indexed} AND status = '{}' ORDER BY seq DESC LIMIT ?1",
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
                recorded_at: time_text::decode(&row.get::<_, String>(8)?)?,
            });
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.seq));
    entries.dedup_by_key(|e| e.seq);
    entries.truncate(limit);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelfsync_common::sqlite::migrate;
    use time::macros::datetime;

    /// SQLite's plan of `sql`, one line per step.
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let steps = stmt.query_map([10], |row| row.get::<_, String>(3)).unwrap();
        steps.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    #[test]
    fn the_reads_of_unconfirmed_rows_use_the_partial_index_not_a_table_scan() {
        // Given the local store's schema,
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, super::super::MIGRATIONS).unwrap();
        // the uploader's read and the operator's list of unconfirmed rows search the index
        // (their cost does not grow with the confirmed rows behind them).
        pending_batch(&conn, StoreId::from_bytes([1; 16]), 10).unwrap();
        outbox_entries(&conn, &[OutboxStatus::Pending, OutboxStatus::Quarantined], 10).unwrap();
        let reads = [
            format!("SELECT seq FROM outbox WHERE {UNCONFIRMED} AND status = 'pending' ORDER BY seq LIMIT ?1"),
            format!("SELECT seq FROM outbox WHERE {UNCONFIRMED} AND status = 'quarantined' ORDER BY seq DESC LIMIT ?1"),
        ];
        for sql in reads {
            let plan = plan(&conn, &sql);
            assert!(
                plan.contains("USING") && plan.contains("outbox_unconfirmed"),
                "{sql}: {plan}"
            );
        }
        // (Without the index's condition, SQLite scans the table.)
        let bare = plan(
            &conn,
            "SELECT seq FROM outbox WHERE status = 'pending' ORDER BY seq LIMIT ?1",
        );
        assert!(bare.contains("SCAN outbox"), "{bare}");
    }

    #[test]
    fn an_outbox_row_recorded_by_an_older_version_still_reads() {
        // Given an outbox row whose recorded_at an older agent wrote as RFC 3339 text,
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, super::super::MIGRATIONS).unwrap();
        conn.execute(
            "INSERT INTO outbox (seq, event_id, product_id, event_type, schema_version, data, metadata, status, recorded_at)
             VALUES (1, ?1, ?2, 'StockAdded', 1, '{}', '{}', 'pending', '2026-11-25T08:00:00.5Z')",
            [&[1u8; 16][..], &[2u8; 16][..]],
        )
        .unwrap();
        // when the operator lists the outbox,
        let entries = outbox_entries(&conn, &[OutboxStatus::Pending], 10).unwrap();
        // then the row reads, at the instant written.
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].recorded_at, datetime!(2026-11-25 08:00:00.5 UTC));
    }
}
