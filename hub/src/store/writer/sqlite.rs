//! The event log's batches on SQLite: opening the file and loading the heads at start-up,
//! and [`LogRows`] on a SQLite transaction (statements from the connection's cache; the
//! event insert taken once per batch).

use super::rows::{count_revoked, EventRow, LogRows};
use super::{Heads, LogBatches, StreamHead, SETTINGS};
use crate::bus::EventBus;
use crate::store::reader::{self, envelope_from_row, StoreStats, TokenRecord, EVENT_COLUMNS};
use crate::store::schema::{self, EVENT_STORE};
use crate::store::{EnrollmentCodeRecord, Prunable, ReadError, RevokedTokens, StoredCode, StreamState, TokenSelector};
use rusqlite::{params, CachedStatement, Connection, OptionalExtension, Transaction};
use shelfsync_common::sqlite::group_commit::Writer;
use shelfsync_common::sqlite::time_text;
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::{EventEnvelope, EventId, StoreId, StreamId};
use std::collections::HashMap;
use std::fmt::Display;
use std::path::Path;
use time::OffsetDateTime;

/// Opens the file, migrates it, loads the heads and starts the writer thread.
pub fn start(path: &Path, bus: EventBus) -> Result<Started<Writer<LogBatches>>, ReadError> {
    let mut conn = schema::open_durable(path)?;
    schema::migrate(&mut conn, EVENT_STORE)?;
    let id_key = shelfsync_common::sqlite::id_key(&conn)?;
    let heads = load_heads(&conn)?;
    let head = heads.next_position - 1;
    let writer =
        Writer::start(conn, LogBatches { heads, bus }, SETTINGS).map_err(|e| ReadError::Join(e.to_string()))?;
    Ok(Started { writer, head, id_key })
}

/// What a storage's `start` hands back: the writer, the head position, and the key that
/// derives event ids from idempotency keys.
pub struct Started<W> {
    pub writer: W,
    pub head: u64,
    pub id_key: shelfsync_common::IdKey,
}

fn load_heads(conn: &Connection) -> Result<Heads, ReadError> {
    let max: Option<i64> = conn.query_row("SELECT MAX(position) FROM events", [], |r| r.get(0))?;
    let mut heads = Heads::starting_at(max.unwrap_or(0) as u64 + 1);
    let mut stmt = conn.prepare("SELECT stream_key, last_position, state FROM streams")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let (stream, head) = stream_head_from_row(row)?;
        heads.load_stream(stream, head);
    }
    let mut stmt = conn.prepare("SELECT id FROM stores")?;
    let stores = stmt.query_map([], |row| row.get::<_, [u8; 16]>(0))?;
    for id in stores {
        heads.load_store(StoreId::from_bytes(id?));
    }
    heads.log_opened();
    Ok(heads)
}

/// Decodes a `streams` row (`stream_key, last_position, state`) of either backend.
pub(in crate::store) fn stream_head_from_row(
    row: &impl crate::store::rows::StoredRow,
) -> Result<(StreamId, StreamHead), ReadError> {
    let stream = StreamId::from_key(row.bytes(0)?).ok_or_else(|| ReadError::Corrupt("bad stream key".into()))?;
    let state: StreamState =
        serde_json::from_str(row.text(2)?).map_err(|e| ReadError::Corrupt(format!("stream {stream}: {e}")))?;
    let last_position = row.int(1)? as u64;
    Ok((stream, StreamHead { state, last_position }))
}

/// [`LogRows`] in a SQLite transaction.
pub struct SqliteRows<'t> {
    tx: &'t Transaction<'t>,
    /// The event insert, taken from the statement cache once per batch rather than
    /// looked up (its SQL hashed) for every event.
    insert: CachedStatement<'t>,
    /// The event insert that skips a known id, likewise.
    insert_new: CachedStatement<'t>,
}

impl<'t> SqliteRows<'t> {
    /// The statements of one batch in `tx`.
    pub fn new(tx: &'t Transaction<'t>) -> rusqlite::Result<Self> {
        macro_rules! insert {
            () => {
                "INSERT INTO events (position, event_id, stream_key, stream_version, event_type, schema_version, data, metadata, fingerprint)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            };
        }
        Ok(Self {
            tx,
            insert: tx.prepare_cached(insert!())?,
            insert_new: tx.prepare_cached(concat!(insert!(), " ON CONFLICT (event_id) DO NOTHING"))?,
        })
    }
}

/// Carries a read-path error through rusqlite's error type (it fails the batch).
fn into_sqlite(error: ReadError) -> rusqlite::Error {
    match error {
        ReadError::Sqlite(inner) => inner,
        other => rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(other)),
    }
}

impl LogRows for SqliteRows<'_> {
    type Error = rusqlite::Error;

    fn fault(error: impl Display) -> rusqlite::Error {
        rusqlite::Error::ToSqlConversionFailure(error.to_string().into())
    }

    fn insert_event(&mut self, row: &EventRow<'_>, skip_known_id: bool) -> rusqlite::Result<bool> {
        let e = row.envelope;
        let stmt = if skip_known_id {
            &mut self.insert_new
        } else {
            &mut self.insert
        };
        let written = stmt.execute(params![
            e.position as i64,
            &e.event_id.as_bytes()[..],
            &e.stream.key()[..],
            e.stream_version as i64,
            e.payload.event_type(),
            e.schema_version,
            row.data,
            row.metadata,
            &row.fingerprint.as_bytes()[..],
        ])?;
        Ok(written == 1)
    }

    fn earlier_write(&mut self, event_id: EventId) -> rusqlite::Result<Option<(Fingerprint, EventEnvelope)>> {
        let mut stmt = self.tx.prepare_cached(&format!(
            "SELECT {EVENT_COLUMNS}, fingerprint FROM events WHERE event_id = ?1"
        ))?;
        let mut rows = stmt.query([&event_id.as_bytes()[..]])?;
        let Some(row) = rows.next()? else {
            return Ok(None);
        };
        let envelope = envelope_from_row(row).map_err(into_sqlite)?;
        Ok(Some((Fingerprint::from_bytes(row.get::<_, [u8; 16]>(8)?), envelope)))
    }

    fn write_heads(&mut self, streams: &HashMap<StreamId, StreamHead>) -> rusqlite::Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO streams (stream_key, version, last_position, state) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (stream_key) DO UPDATE
             SET version = excluded.version, last_position = excluded.last_position, state = excluded.state",
        )?;
        for (stream, head) in streams {
            let state = serde_json::to_string(&head.state).map_err(Self::fault)?;
            stmt.execute(params![
                &stream.key()[..],
                head.state.version() as i64,
                head.last_position as i64,
                state
            ])?;
        }
        Ok(())
    }

    fn add_stats(&mut self, stats: &HashMap<StoreId, StoreStats>) -> rusqlite::Result<()> {
        let mut stmt = self.tx.prepare_cached(
            "INSERT INTO store_stats (store_id, rejected_uploads, oversells) VALUES (?1, ?2, ?3)
             ON CONFLICT (store_id) DO UPDATE SET rejected_uploads = rejected_uploads + excluded.rejected_uploads,
                                                  oversells = oversells + excluded.oversells",
        )?;
        for (store, stats) in stats {
            stmt.execute(params![
                &store.as_bytes()[..],
                stats.rejected_uploads as i64,
                stats.oversells as i64
            ])?;
        }
        Ok(())
    }

    fn live_token_named(&mut self, role: &str, name: &str, except_store: Option<StoreId>) -> rusqlite::Result<bool> {
        reader::live_token_named(self.tx, role, name, except_store).map_err(into_sqlite)
    }

    fn insert_token(&mut self, token: &TokenRecord) -> rusqlite::Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO tokens (id, name, role, store_id, secret_sha256, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                &token.id.as_bytes()[..],
                token.name,
                token.role,
                token.store_id.map(|s| s.as_bytes().to_vec()),
                &token.secret_sha256[..],
                time_text::encode(token.created_at).map_err(Self::fault)?,
            ])?;
        Ok(())
    }

    fn revoke_tokens(&mut self, selector: &TokenSelector, now: OffsetDateTime) -> rusqlite::Result<RevokedTokens> {
        let now = time_text::encode(now).map_err(Self::fault)?;
        let mut stmt;
        let mut rows = match selector {
            TokenSelector::Store(store) => {
                stmt = self.tx.prepare_cached(
                    "UPDATE tokens SET revoked_at = ?1 WHERE store_id = ?2 AND revoked_at IS NULL RETURNING id, store_id",
                )?;
                stmt.query(params![now, &store.as_bytes()[..]])?
            }
            TokenSelector::Channel(name) => {
                stmt = self.tx.prepare_cached(
                    "UPDATE tokens SET revoked_at = ?1 WHERE role = 'channel' AND name = ?2 AND revoked_at IS NULL
                     RETURNING id, store_id",
                )?;
                stmt.query(params![now, name])?
            }
        };
        let mut revoked = RevokedTokens::default();
        while let Some(row) = rows.next()? {
            let token = uuid::Uuid::from_bytes(row.get::<_, [u8; 16]>(0)?);
            count_revoked(
                &mut revoked,
                token,
                row.get::<_, Option<[u8; 16]>>(1)?.map(StoreId::from_bytes),
            );
        }
        Ok(revoked)
    }

    fn store_named(&mut self, name: &str) -> rusqlite::Result<Option<StoreId>> {
        reader::store_named(self.tx, name).map_err(into_sqlite)
    }

    fn insert_store(&mut self, id: StoreId, name: &str, now: OffsetDateTime) -> rusqlite::Result<()> {
        self.tx
            .prepare_cached("INSERT INTO stores (id, name, created_at) VALUES (?1, ?2, ?3)")?
            .execute(params![
                &id.as_bytes()[..],
                name,
                time_text::encode(now).map_err(Self::fault)?
            ])?;
        Ok(())
    }

    fn insert_enrollment_code(&mut self, code: &EnrollmentCodeRecord) -> rusqlite::Result<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO enrollment_codes (code_sha256, store_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                &code.code_sha256[..],
                &code.store_id.as_bytes()[..],
                code.created_at,
                code.expires_at
            ])?;
        Ok(())
    }

    fn enrollment_code(&mut self, code_sha256: &[u8; 32]) -> rusqlite::Result<Option<StoredCode>> {
        self.tx
            .prepare_cached("SELECT store_id, expires_at, used_at FROM enrollment_codes WHERE code_sha256 = ?1")?
            .query_row(params![&code_sha256[..]], |row| {
                Ok(StoredCode {
                    store_id: StoreId::from_bytes(row.get::<_, [u8; 16]>(0)?),
                    expires_at: row.get(1)?,
                    used_at: row.get(2)?,
                })
            })
            .optional()
    }

    fn use_enrollment_code(&mut self, code_sha256: &[u8; 32], now: i64) -> rusqlite::Result<()> {
        self.tx
            .prepare_cached("UPDATE enrollment_codes SET used_at = ?2 WHERE code_sha256 = ?1")?
            .execute(params![&code_sha256[..], now])?;
        Ok(())
    }

    fn prune(&mut self, what: Prunable, cutoff: &str, limit: usize) -> rusqlite::Result<usize> {
        self.tx
            .prepare_cached(what.sqlite())?
            .execute(params![cutoff, limit as i64])
    }
}
