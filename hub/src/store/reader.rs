//! The read path of the event store: a small pool of read-only SQLite connections and
//! the queries that run on them. WAL lets these read while the writer commits. A pull
//! page is written straight from the rows (see [`visible_events_after`]).

use super::ReadError;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use serde_json::value::RawValue;
use shelfsync_common::sqlite::time_text;
use shelfsync_common::wire::api::StoreInfo;
use shelfsync_common::{EventEnvelope, EventId, EventPayload, StoreId, StreamId};
use std::path::PathBuf;
use std::sync::Mutex;
use time::OffsetDateTime;

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 16;

/// A pool of read-only connections to one SQLite file.
pub struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    /// A pool for the file at `path` (connections open lazily).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Closes the idle connections (at shutdown, so that the writer's is the last one
    /// open and SQLite removes the WAL files when it closes).
    pub fn close_idle(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    /// Runs `query` on a pooled connection in tokio's blocking pool.
    pub async fn run<T, F>(self: &std::sync::Arc<Self>, query: F) -> Result<T, ReadError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, ReadError> + Send + 'static,
    {
        let pool = self.clone();
        tokio::task::spawn_blocking(move || pool.run_blocking(query))
            .await
            .map_err(|e| ReadError::Join(e.to_string()))?
    }

    /// Runs `query` on a pooled connection on this thread.
    pub fn run_blocking<T>(&self, query: impl FnOnce(&Connection) -> Result<T, ReadError>) -> Result<T, ReadError> {
        let pooled = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match pooled {
            Some(conn) => conn,
            None => super::schema::open_read_only(&self.path)?,
        };
        let result = query(&conn);
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        result
    }
}

/// The columns of `events` in the order [`envelope_from_row`] reads them.
pub const EVENT_COLUMNS: &str =
    "position, event_id, stream_key, stream_version, event_type, schema_version, data, metadata";

/// Decodes one `events` row selected with [`EVENT_COLUMNS`].
pub fn envelope_from_row(row: &Row<'_>) -> Result<EventEnvelope, ReadError> {
    let position: i64 = row.get(0)?;
    let event_id: [u8; 16] = row.get(1)?;
    let stream_key: Vec<u8> = row.get(2)?;
    let stream_version: i64 = row.get(3)?;
    let event_type: String = row.get(4)?;
    let schema_version: i64 = row.get(5)?;
    let data: String = row.get(6)?;
    let metadata: String = row.get(7)?;
    let corrupt = |what: String| ReadError::Corrupt(format!("event at position {position}: {what}"));
    let stream = StreamId::from_key(&stream_key).ok_or_else(|| corrupt("bad stream key".into()))?;
    let data = serde_json::from_str(&data).map_err(|e| corrupt(e.to_string()))?;
    let schema_version = u16::try_from(schema_version).map_err(|e| corrupt(e.to_string()))?;
    let payload = EventPayload::decode(&event_type, schema_version, data).map_err(|e| corrupt(e.to_string()))?;
    Ok(EventEnvelope {
        event_id: EventId::from_bytes(event_id),
        stream,
        stream_version: stream_version as u64,
        position: position as u64,
        schema_version,
        payload,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt(e.to_string()))?,
    })
}

/// Events with position greater than `after`, in order, at most `limit`.
pub fn events_after(conn: &Connection, after: u64, limit: usize) -> Result<Vec<EventEnvelope>, ReadError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE position > ?1 ORDER BY position LIMIT ?2"
    ))?;
    let mut rows = stmt.query(params![sql_position(after), limit as i64])?;
    let mut events = Vec::new();
    while let Some(row) = rows.next()? {
        events.push(envelope_from_row(row)?);
    }
    Ok(events)
}

/// The position of the last committed event (0 for an empty log).
pub fn head(conn: &Connection) -> Result<u64, ReadError> {
    let head: Option<i64> = conn.query_row("SELECT MAX(position) FROM events", [], |row| row.get(0))?;
    Ok(head.unwrap_or(0) as u64)
}

/// A bearer token as stored (the secret only as its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Token id.
    pub id: uuid::Uuid,
    /// Operator-chosen name.
    pub name: String,
    /// admin, channel or store.
    pub role: String,
    /// For a store token: its store.
    pub store_id: Option<StoreId>,
    /// SHA-256 of the secret.
    pub secret_sha256: [u8; 32],
    /// When it was made.
    pub created_at: OffsetDateTime,
    /// When it was revoked, if it was.
    pub revoked_at: Option<OffsetDateTime>,
}

/// The live (unrevoked) token whose secret hashes to `digest`.
pub fn live_token_by_digest(conn: &Connection, digest: &[u8; 32]) -> Result<Option<TokenRecord>, ReadError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, role, store_id, secret_sha256, created_at, revoked_at FROM tokens
         WHERE secret_sha256 = ?1 AND revoked_at IS NULL",
    )?;
    let row = stmt
        .query_row([&digest[..]], |row| {
            Ok((
                row.get::<_, [u8; 16]>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<[u8; 16]>>(3)?,
                row.get::<_, [u8; 32]>(4)?,
                row.get::<_, String>(5)?,
            ))
        })
        .optional()?;
    row.map(|(id, name, role, store, secret, created)| {
        Ok(TokenRecord {
            id: uuid::Uuid::from_bytes(id),
            name,
            role,
            store_id: store.map(StoreId::from_bytes),
            secret_sha256: secret,
            created_at: time_text::decode(&created)?,
            revoked_at: None,
        })
    })
    .transpose()
}

/// Every enrolled store, oldest first, with whether all its tokens are revoked.
pub fn stores(conn: &Connection) -> Result<Vec<StoreInfo>, ReadError> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.id, s.name, s.created_at,
                NOT EXISTS (SELECT 1 FROM tokens t WHERE t.store_id = s.id AND t.revoked_at IS NULL)
         FROM stores s ORDER BY s.created_at, s.id",
    )?;
    let rows = stmt.query_map([], |row| {
        Ok((
            row.get::<_, [u8; 16]>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, bool>(3)?,
        ))
    })?;
    rows.map(|row| {
        let (id, name, created, revoked) = row?;
        Ok(StoreInfo {
            id: StoreId::from_bytes(id),
            name,
            created_at: time_text::decode(&created)?,
            revoked,
        })
    })
    .collect()
}

/// Whether a store with this id is enrolled (revoked or not).
pub fn store_enrolled(conn: &Connection, id: StoreId) -> Result<bool, ReadError> {
    let mut stmt = conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM stores WHERE id = ?1)")?;
    Ok(stmt.query_row([&id.as_bytes()[..]], |row| row.get(0))?)
}

/// The store enrolled under this name, if any (the oldest one).
pub fn store_named(conn: &Connection, name: &str) -> Result<Option<StoreId>, ReadError> {
    let mut stmt = conn.prepare_cached("SELECT id FROM stores WHERE name = ?1 ORDER BY created_at, id LIMIT 1")?;
    let mut rows = stmt.query([name])?;
    Ok(match rows.next()? {
        Some(row) => Some(StoreId::from_bytes(row.get::<_, [u8; 16]>(0)?)),
        None => None,
    })
}

/// Whether a live token of `role` has this name (each role is its own namespace), not
/// counting `except_store`'s tokens.
pub fn live_token_named(
    conn: &Connection,
    role: &str,
    name: &str,
    except_store: Option<StoreId>,
) -> Result<bool, ReadError> {
    let mut stmt = conn.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM tokens WHERE role = ?1 AND name = ?2 AND revoked_at IS NULL
                        AND (?3 IS NULL OR store_id IS NOT ?3))",
    )?;
    let except = except_store.map(|s| s.as_bytes().to_vec());
    Ok(stmt.query_row(rusqlite::params![role, name, except], |row| row.get(0))?)
}

/// A page of the events a store may see: its own streams and the catalog, already in
/// their wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisiblePage {
    /// Visible events after the cursor, in order: the text of a JSON array of
    /// `EventEnvelope`s.
    pub events: String,
    /// The position up to which the log was scanned (pass as the next cursor).
    pub scanned_to: u64,
}

/// An `events` row in the wire form of an `EventEnvelope`, its `data` and `metadata`
/// copied as stored (the writer stored them as the JSON of exactly these members), so a
/// page is written without decoding and encoding every payload again.
#[derive(Serialize)]
struct StoredEnvelope<'a> {
    event_id: EventId,
    stream: StreamId,
    stream_version: u64,
    position: u64,
    schema_version: u16,
    #[serde(rename = "type")]
    event_type: &'a str,
    data: &'a RawValue,
    metadata: &'a RawValue,
}

/// Appends the wire form of one `events` row selected with [`EVENT_COLUMNS`] to `out`.
fn write_envelope(row: &Row<'_>, stream: StreamId, position: u64, out: &mut Vec<u8>) -> Result<(), ReadError> {
    let corrupt = |what: String| ReadError::Corrupt(format!("event at position {position}: {what}"));
    let text = |index: usize| -> Result<&str, ReadError> {
        row.get_ref(index)?
            .as_str()
            .map_err(|e| corrupt(format!("column {index}: {e}")))
    };
    let json = |index: usize| -> Result<&RawValue, ReadError> {
        serde_json::from_str(text(index)?).map_err(|e| corrupt(format!("column {index}: {e}")))
    };
    let event_id: [u8; 16] = row.get(1)?;
    let schema_version = u16::try_from(row.get::<_, i64>(5)?).map_err(|e| corrupt(e.to_string()))?;
    let envelope = StoredEnvelope {
        event_id: EventId::from_bytes(event_id),
        stream,
        stream_version: row.get::<_, i64>(3)? as u64,
        position,
        schema_version,
        event_type: text(4)?,
        data: json(6)?,
        metadata: json(7)?,
    };
    serde_json::to_writer(out, &envelope).map_err(|e| corrupt(e.to_string()))
}

/// A position as SQLite stores it. Positions past `i64::MAX` do not exist; one asked for
/// (a cursor from outside) reads as the largest, after which there is nothing, instead
/// of wrapping to a negative number that would read the log from its start.
fn sql_position(position: u64) -> i64 {
    i64::try_from(position).unwrap_or(i64::MAX)
}

/// Scans at most `scan_window` positions after `after` and returns up to `limit` events
/// that `store` may see. Positions are gap-free, so the scan is a bounded range read on
/// the primary key whatever the other stores wrote.
pub fn visible_events_after(
    conn: &Connection,
    store: StoreId,
    after: u64,
    limit: usize,
    scan_window: u64,
) -> Result<VisiblePage, ReadError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE position > ?1 AND position <= ?2 ORDER BY position"
    ))?;
    let upper = after.saturating_add(scan_window);
    let mut rows = stmt.query(params![sql_position(after), sql_position(upper)])?;
    let mut events = Vec::from(*b"[");
    let (mut count, mut scanned_to) = (0, after);
    while let Some(row) = rows.next()? {
        let key: Vec<u8> = row.get(2)?;
        let position = row.get::<_, i64>(0)? as u64;
        let stream =
            StreamId::from_key(&key).ok_or_else(|| ReadError::Corrupt(format!("bad stream key at {position}")))?;
        if stream.visible_to(store) {
            if count > 0 {
                events.push(b',');
            }
            write_envelope(row, stream, position, &mut events)?;
            count += 1;
        }
        scanned_to = position;
        if count >= limit {
            break;
        }
    }
    events.push(b']');
    let events = String::from_utf8(events).map_err(|e| ReadError::Corrupt(e.to_string()))?;
    Ok(VisiblePage { events, scanned_to })
}

/// Durable per-store counters kept by the writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Uploaded events rejected.
    pub rejected_uploads: u64,
    /// `OversellDetected` events recorded on the store's streams.
    pub oversells: u64,
}

/// Every store's counters.
pub fn store_stats(conn: &Connection) -> Result<std::collections::HashMap<StoreId, StoreStats>, ReadError> {
    let mut stmt = conn.prepare_cached("SELECT store_id, rejected_uploads, oversells FROM store_stats")?;
    let rows = stmt.query_map([], |row| {
        Ok((row.get::<_, [u8; 16]>(0)?, row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
    })?;
    rows.map(|row| {
        let (id, rejected, oversells) = row?;
        Ok((
            StoreId::from_bytes(id),
            StoreStats {
                rejected_uploads: rejected as u64,
                oversells: oversells as u64,
            },
        ))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::schema::{migrate, EVENT_STORE};
    use time::macros::datetime;

    #[test]
    fn stores_enrolled_by_an_older_version_still_read_and_list_first() {
        // Given a log with a store enrolled by an older version (RFC 3339 text, as few
        // fraction digits as needed) and one enrolled now (the fixed-width form),
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, EVENT_STORE).unwrap();
        let (old, new) = (StoreId::from_bytes([2; 16]), StoreId::from_bytes([1; 16]));
        let new_text = time_text::encode(datetime!(2026-11-26 17:30:00 UTC)).unwrap();
        for (id, name, created) in [(old, "old", "2026-11-25T08:00:00.5Z"), (new, "new", new_text.as_str())] {
            conn.execute(
                "INSERT INTO stores (id, name, created_at) VALUES (?1, ?2, ?3)",
                params![&id.as_bytes()[..], name, created],
            )
            .unwrap();
        }
        // when the stores are listed,
        let listed = stores(&conn).unwrap();
        // then both read, oldest first, at the instants written.
        let seen: Vec<_> = listed.iter().map(|s| (s.id, s.created_at)).collect();
        assert_eq!(
            seen,
            vec![
                (old, datetime!(2026-11-25 08:00:00.5 UTC)),
                (new, datetime!(2026-11-26 17:30:00 UTC))
            ]
        );
    }
}
