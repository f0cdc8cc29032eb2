//! The read path of the event store: a small pool of read-only SQLite connections and
//! the queries that run on them. WAL lets these read while the writer commits. A pull
//! page is written straight from the rows (see [`visible_events_after`]).

use super::rows::{sql_position, StoredRow};
use super::ReadError;
use rusqlite::{params, Connection};
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

/// Decodes one `events` row selected with [`EVENT_COLUMNS`] (either backend).
pub fn envelope_from_row(row: &impl StoredRow) -> Result<EventEnvelope, ReadError> {
    let position = row.int(0)?;
    let corrupt = |what: String| ReadError::Corrupt(format!("event at position {position}: {what}"));
    let stream = StreamId::from_key(row.bytes(2)?).ok_or_else(|| corrupt("bad stream key".into()))?;
    let data = serde_json::from_str(row.text(6)?).map_err(|e| corrupt(e.to_string()))?;
    let schema_version = u16::try_from(row.int(5)?).map_err(|e| corrupt(e.to_string()))?;
    let payload = EventPayload::decode(row.text(4)?, schema_version, data).map_err(|e| corrupt(e.to_string()))?;
    Ok(EventEnvelope {
        event_id: EventId::from_bytes(row.fixed(1)?),
        stream,
        stream_version: row.int(3)? as u64,
        position: position as u64,
        schema_version,
        payload,
        metadata: serde_json::from_str(row.text(7)?).map_err(|e| corrupt(e.to_string()))?,
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

impl TokenRecord {
    /// A new store token for `store` whose secret has digest `secret_sha256`: every store
    /// token (enrolling, rotating, an enrollment code) is named and made alike.
    pub fn for_store(store: StoreId, secret_sha256: [u8; 32], now: OffsetDateTime) -> Self {
        Self {
            id: uuid::Uuid::now_v7(),
            name: format!("store-{store}"),
            role: "store".into(),
            store_id: Some(store),
            secret_sha256,
            created_at: now,
            revoked_at: None,
        }
    }
}

/// The columns of `tokens` that [`token_from_row`] reads, for a live token.
pub const LIVE_TOKEN_COLUMNS: &str = "id, name, role, store_id, secret_sha256, created_at";

/// Decodes a live token selected with [`LIVE_TOKEN_COLUMNS`] (either backend).
pub fn token_from_row(row: &impl StoredRow) -> Result<TokenRecord, ReadError> {
    Ok(TokenRecord {
        id: uuid::Uuid::from_bytes(row.fixed(0)?),
        name: row.text(1)?.to_owned(),
        role: row.text(2)?.to_owned(),
        store_id: row.opt_fixed(3)?.map(StoreId::from_bytes),
        secret_sha256: row.fixed(4)?,
        created_at: time_text::decode(row.text(5)?)?,
        revoked_at: None,
    })
}

/// The live (unrevoked) token whose secret hashes to `digest`.
pub fn live_token_by_digest(conn: &Connection, digest: &[u8; 32]) -> Result<Option<TokenRecord>, ReadError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {LIVE_TOKEN_COLUMNS} FROM tokens WHERE secret_sha256 = ?1 AND revoked_at IS NULL"
    ))?;
    let mut rows = stmt.query([&digest[..]])?;
    rows.next()?.map(token_from_row).transpose()
}

/// The query of [`stores`], in both dialects (it has no parameters).
pub const STORES_QUERY: &str = "SELECT s.id, s.name, s.created_at,
            NOT EXISTS (SELECT 1 FROM tokens t WHERE t.store_id = s.id AND t.revoked_at IS NULL)
     FROM stores s ORDER BY s.created_at, s.id";

/// Decodes a row of [`STORES_QUERY`]; `revoked` is read by the caller (SQLite answers
/// the `NOT EXISTS` as an integer, PostgreSQL as a boolean).
pub fn store_from_row(row: &impl StoredRow, revoked: bool) -> Result<StoreInfo, ReadError> {
    Ok(StoreInfo {
        id: StoreId::from_bytes(row.fixed(0)?),
        name: row.text(1)?.to_owned(),
        created_at: time_text::decode(row.text(2)?)?,
        revoked,
    })
}

/// Every enrolled store, oldest first, with whether all its tokens are revoked.
pub fn stores(conn: &Connection) -> Result<Vec<StoreInfo>, ReadError> {
    let mut stmt = conn.prepare_cached(STORES_QUERY)?;
    let mut rows = stmt.query([])?;
    let mut stores = Vec::new();
    while let Some(row) = rows.next()? {
        stores.push(store_from_row(row, row.int(3)? != 0)?);
    }
    Ok(stores)
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

/// Builds a [`VisiblePage`] from `events` rows selected with [`EVENT_COLUMNS`] in
/// position order (either backend).
pub struct PageBuilder {
    store: StoreId,
    limit: usize,
    count: usize,
    scanned_to: u64,
    events: Vec<u8>,
}

impl PageBuilder {
    /// A page for `store` of at most `limit` events after `after`.
    pub fn new(store: StoreId, after: u64, limit: usize) -> Self {
        Self {
            store,
            limit,
            count: 0,
            scanned_to: after,
            events: Vec::from(*b"["),
        }
    }

    /// Takes the next row; `false` once the page is full (stop reading).
    pub fn push(&mut self, row: &impl StoredRow) -> Result<bool, ReadError> {
        let position = row.int(0)? as u64;
        let stream = StreamId::from_key(row.bytes(2)?)
            .ok_or_else(|| ReadError::Corrupt(format!("bad stream key at {position}")))?;
        if stream.visible_to(self.store) {
            if self.count > 0 {
                self.events.push(b',');
            }
            write_envelope(row, stream, position, &mut self.events)?;
            self.count += 1;
        }
        self.scanned_to = position;
        Ok(self.count < self.limit)
    }

    /// The page.
    pub fn finish(mut self) -> Result<VisiblePage, ReadError> {
        self.events.push(b']');
        let events = String::from_utf8(self.events).map_err(|e| ReadError::Corrupt(e.to_string()))?;
        Ok(VisiblePage {
            events,
            scanned_to: self.scanned_to,
        })
    }
}

/// Appends the wire form of one `events` row selected with [`EVENT_COLUMNS`] to `out`.
fn write_envelope(row: &impl StoredRow, stream: StreamId, position: u64, out: &mut Vec<u8>) -> Result<(), ReadError> {
    let corrupt = |what: String| ReadError::Corrupt(format!("event at position {position}: {what}"));
    let json = |index: usize| -> Result<&RawValue, ReadError> {
        serde_json::from_str(row.text(index)?).map_err(|e| corrupt(format!("column {index}: {e}")))
    };
    let schema_version = u16::try_from(row.int(5)?).map_err(|e| corrupt(e.to_string()))?;
    let envelope = StoredEnvelope {
        event_id: EventId::from_bytes(row.fixed(1)?),
        stream,
        stream_version: row.int(3)? as u64,
        position,
        schema_version,
        event_type: row.text(4)?,
        data: json(6)?,
        metadata: json(7)?,
    };
    serde_json::to_writer(out, &envelope).map_err(|e| corrupt(e.to_string()))
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
    let mut page = PageBuilder::new(store, after, limit);
    while let Some(row) = rows.next()? {
        if !page.push(row)? {
            break;
        }
    }
    page.finish()
}

/// Durable per-store counters kept by the writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Uploaded events rejected.
    pub rejected_uploads: u64,
    /// `OversellDetected` events recorded on the store's streams.
    pub oversells: u64,
}

/// The query of [`store_stats`], in both dialects.
pub const STORE_STATS_QUERY: &str = "SELECT store_id, rejected_uploads, oversells FROM store_stats";

/// Decodes a row of [`STORE_STATS_QUERY`] (either backend).
pub fn stats_from_row(row: &impl StoredRow) -> Result<(StoreId, StoreStats), ReadError> {
    Ok((
        StoreId::from_bytes(row.fixed(0)?),
        StoreStats {
            rejected_uploads: row.int(1)? as u64,
            oversells: row.int(2)? as u64,
        },
    ))
}

/// Every store's counters.
pub fn store_stats(conn: &Connection) -> Result<std::collections::HashMap<StoreId, StoreStats>, ReadError> {
    let mut stmt = conn.prepare_cached(STORE_STATS_QUERY)?;
    let mut rows = stmt.query([])?;
    let mut stats = std::collections::HashMap::new();
    while let Some(row) = rows.next()? {
        let (store, figures) = stats_from_row(row)?;
        stats.insert(store, figures);
    }
    Ok(stats)
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
