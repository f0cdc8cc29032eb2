//! [`LogRows`] in a PostgreSQL transaction: the same statements as on SQLite, in
//! PostgreSQL's dialect, prepared once per batch.

use super::REVOKED_CHANNEL;
use crate::store::reader::{envelope_from_row, store_from_row, StoreStats, TokenRecord, EVENT_COLUMNS};
use crate::store::rows::StoredRow;
use crate::store::writer::{count_revoked, EventRow, LogRows, StreamHead};
use crate::store::{ReadError, RevokedTokens, TokenSelector};
use postgres::{Statement, Transaction};
use shelfsync_common::sqlite::time_text;
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::{EventEnvelope, EventId, StoreId, StreamId};
use std::collections::HashMap;
use std::fmt::Display;
use time::OffsetDateTime;

/// The statements of one batch, in its transaction.
pub struct PgRows<'a, 't> {
    tx: &'a mut Transaction<'t>,
    insert: Statement,
    insert_new: Statement,
}

const INSERT: &str = "INSERT INTO events (position, event_id, stream_key, stream_version, event_type, schema_version, data, metadata, fingerprint)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

impl<'a, 't> PgRows<'a, 't> {
    /// Prepares the batch's statements in `tx`.
    pub fn new(tx: &'a mut Transaction<'t>) -> Result<Self, ReadError> {
        let insert = tx.prepare(INSERT)?;
        let insert_new = tx.prepare(&format!("{INSERT} ON CONFLICT (event_id) DO NOTHING"))?;
        Ok(Self { tx, insert, insert_new })
    }
}

fn text(at: OffsetDateTime) -> Result<String, ReadError> {
    Ok(time_text::encode(at)?)
}

impl LogRows for PgRows<'_, '_> {
    type Error = ReadError;

    fn fault(error: impl Display) -> ReadError {
        ReadError::Corrupt(error.to_string())
    }

    fn insert_event(&mut self, row: &EventRow<'_>, skip_known_id: bool) -> Result<bool, ReadError> {
        let e = row.envelope;
        let stmt = if skip_known_id { &self.insert_new } else { &self.insert };
        let written = self.tx.execute(
            stmt,
            &[
                &(e.position as i64),
                &&e.event_id.as_bytes()[..],
                &&e.stream.key()[..],
                &(e.stream_version as i64),
                &e.payload.event_type(),
                &i64::from(e.schema_version),
                &row.data,
                &row.metadata,
                &&row.fingerprint.as_bytes()[..],
            ],
        )?;
        Ok(written == 1)
    }

    fn earlier_write(&mut self, event_id: EventId) -> Result<Option<(Fingerprint, EventEnvelope)>, ReadError> {
        let row = self.tx.query_opt(
            &format!("SELECT {EVENT_COLUMNS}, fingerprint FROM events WHERE event_id = $1"),
            &[&&event_id.as_bytes()[..]],
        )?;
        row.map(|row| Ok((Fingerprint::from_bytes(row.fixed(8)?), envelope_from_row(&row)?)))
            .transpose()
    }

    fn write_heads(&mut self, streams: &HashMap<StreamId, StreamHead>) -> Result<(), ReadError> {
        if streams.is_empty() {
            return Ok(());
        }
        // One statement for the whole batch: the heads as arrays, unnested into rows.
        let mut keys = Vec::with_capacity(streams.len());
        let mut versions = Vec::with_capacity(streams.len());
        let mut positions = Vec::with_capacity(streams.len());
        let mut states = Vec::with_capacity(streams.len());
        for (stream, head) in streams {
            keys.push(stream.key().to_vec());
            versions.push(head.state.version() as i64);
            positions.push(head.last_position as i64);
            states.push(serde_json::to_string(&head.state).map_err(Self::fault)?);
        }
        self.tx.execute(
            "INSERT INTO streams (stream_key, version, last_position, state)
             SELECT * FROM UNNEST($1::bytea[], $2::bigint[], $3::bigint[], $4::text[])
             ON CONFLICT (stream_key) DO UPDATE
             SET version = excluded.version, last_position = excluded.last_position, state = excluded.state",
            &[&keys, &versions, &positions, &states],
        )?;
        Ok(())
    }

    fn add_stats(&mut self, stats: &HashMap<StoreId, StoreStats>) -> Result<(), ReadError> {
        for (store, stats) in stats {
            self.tx.execute(
                "INSERT INTO store_stats (store_id, rejected_uploads, oversells) VALUES ($1, $2, $3)
                 ON CONFLICT (store_id) DO UPDATE
                 SET rejected_uploads = store_stats.rejected_uploads + excluded.rejected_uploads,
                     oversells = store_stats.oversells + excluded.oversells",
                &[
                    &&store.as_bytes()[..],
                    &(stats.rejected_uploads as i64),
                    &(stats.oversells as i64),
                ],
            )?;
        }
        Ok(())
    }

    fn live_token_named(&mut self, role: &str, name: &str, except_store: Option<StoreId>) -> Result<bool, ReadError> {
        let except = except_store.map(|s| s.as_bytes().to_vec());
        let row = self.tx.query_one(
            "SELECT EXISTS (SELECT 1 FROM tokens WHERE role = $1 AND name = $2 AND revoked_at IS NULL
                            AND ($3::bytea IS NULL OR store_id IS DISTINCT FROM $3))",
            &[&role, &name, &except],
        )?;
        Ok(row.try_get(0)?)
    }

    fn insert_token(&mut self, token: &TokenRecord) -> Result<(), ReadError> {
        self.tx.execute(
            "INSERT INTO tokens (id, name, role, store_id, secret_sha256, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &&token.id.as_bytes()[..],
                &token.name,
                &token.role,
                &token.store_id.map(|s| s.as_bytes().to_vec()),
                &&token.secret_sha256[..],
                &text(token.created_at)?,
            ],
        )?;
        Ok(())
    }

    fn revoke_tokens(&mut self, selector: &TokenSelector, now: OffsetDateTime) -> Result<RevokedTokens, ReadError> {
        let now = text(now)?;
        let rows = match selector {
            TokenSelector::Store(store) => self.tx.query(
                "UPDATE tokens SET revoked_at = $1 WHERE store_id = $2 AND revoked_at IS NULL RETURNING id, store_id",
                &[&now, &&store.as_bytes()[..]],
            )?,
            TokenSelector::Channel(name) => self.tx.query(
                "UPDATE tokens SET revoked_at = $1 WHERE role = 'channel' AND name = $2 AND revoked_at IS NULL
                 RETURNING id, store_id",
                &[&now, name],
            )?,
        };
        let mut revoked = RevokedTokens::default();
        for row in rows {
            let token = uuid::Uuid::from_bytes(row.fixed(0)?);
            count_revoked(&mut revoked, token, row.opt_fixed(1)?.map(StoreId::from_bytes));
        }
        for (store, token) in &revoked.store_tokens {
            // Delivered at commit, to every hub (this one included).
            self.tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&REVOKED_CHANNEL, &format!("{store} {token}")],
            )?;
        }
        Ok(revoked)
    }

    fn store_named(&mut self, name: &str) -> Result<Option<StoreId>, ReadError> {
        let row = self.tx.query_opt(
            "SELECT id, name, created_at FROM stores WHERE name = $1 ORDER BY created_at, id LIMIT 1",
            &[&name],
        )?;
        row.map(|row| Ok(store_from_row(&row, false)?.id)).transpose()
    }

    fn insert_store(&mut self, id: StoreId, name: &str, now: OffsetDateTime) -> Result<(), ReadError> {
        self.tx.execute(
            "INSERT INTO stores (id, name, created_at) VALUES ($1, $2, $3)",
            &[&&id.as_bytes()[..], &name, &text(now)?],
        )?;
        self.tx.execute("UPDATE log_head SET stores = stores + 1", &[])?;
        Ok(())
    }
}
