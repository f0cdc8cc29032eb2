//! [`LogRows`] in a PostgreSQL transaction: the same rows as on SQLite, written with as
//! few round trips to the server as the batch allows. The ids the batch names are looked
//! up in one query at its start; its events are kept here and inserted in one statement
//! (arrays unnested into rows) when the batch finishes, so a batch of a thousand events
//! costs a handful of round trips, not a thousand.

use super::REVOKED_CHANNEL;
use crate::store::reader::{envelope_from_row, store_from_row, StoreStats, TokenRecord, EVENT_COLUMNS};
use crate::store::rows::StoredRow;
use crate::store::writer::{count_revoked, EventRow, LogRows, StreamHead};
use crate::store::{EnrollmentCodeRecord, Prunable, ReadError, RevokedTokens, StoredCode, TokenSelector};
use postgres::Transaction;
use shelfsync_common::sqlite::time_text;
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::{EventEnvelope, EventId, StoreId, StreamId};
use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use time::OffsetDateTime;

/// The rows of one batch, in its transaction.
pub struct PgRows<'a, 't> {
    tx: &'a mut Transaction<'t>,
    /// The ids the batch names that were committed before it, with what they recorded.
    committed: HashMap<EventId, (Fingerprint, EventEnvelope)>,
    /// The ids looked up at the start (the others are looked up one by one).
    looked_up: HashSet<EventId>,
    /// The batch's events, inserted when it finishes.
    pending: Vec<Pending>,
    /// Where each pending event is in `pending`.
    pending_ids: HashMap<EventId, usize>,
}

/// An event waiting for the batch's insert.
struct Pending {
    envelope: EventEnvelope,
    data: String,
    metadata: String,
    fingerprint: Fingerprint,
}

impl<'a, 't> PgRows<'a, 't> {
    /// The rows of a batch in `tx`, knowing which of `ids` were written before.
    pub fn new(tx: &'a mut Transaction<'t>, ids: &[EventId]) -> Result<Self, ReadError> {
        let keys: Vec<&[u8]> = ids.iter().map(|id| &id.as_bytes()[..]).collect();
        let mut committed = HashMap::new();
        if !keys.is_empty() {
            let rows = tx.query(
                &format!("SELECT {EVENT_COLUMNS}, fingerprint FROM events WHERE event_id = ANY($1::bytea[])"),
                &[&keys],
            )?;
            for row in &rows {
                let envelope = envelope_from_row(row)?;
                committed.insert(envelope.event_id, (Fingerprint::from_bytes(row.fixed(8)?), envelope));
            }
        }
        Ok(Self {
            tx,
            committed,
            looked_up: ids.iter().copied().collect(),
            pending: Vec::new(),
            pending_ids: HashMap::new(),
        })
    }

    /// Inserts the batch's events, one statement for all.
    fn flush(&mut self) -> Result<(), ReadError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let n = self.pending.len();
        let (mut positions, mut ids, mut keys, mut versions) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut types, mut schemas, mut data, mut metadata, mut fingerprints) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for p in &self.pending {
            let e = &p.envelope;
            positions.push(e.position as i64);
            ids.push(&e.event_id.as_bytes()[..]);
            keys.push(e.stream.key().to_vec());
            versions.push(e.stream_version as i64);
            types.push(e.payload.event_type());
            schemas.push(i64::from(e.schema_version));
            data.push(p.data.as_str());
            metadata.push(p.metadata.as_str());
            fingerprints.push(&p.fingerprint.as_bytes()[..]);
        }
        self.tx.execute(
            "INSERT INTO events (position, event_id, stream_key, stream_version, event_type, schema_version, data, metadata, fingerprint)
             SELECT * FROM UNNEST($1::bigint[], $2::bytea[], $3::bytea[], $4::bigint[], $5::text[], $6::bigint[],
                                  $7::text[], $8::text[], $9::bytea[])",
            &[&positions, &ids, &keys, &versions, &types, &schemas, &data, &metadata, &fingerprints],
        )?;
        self.pending.clear();
        self.pending_ids.clear();
        Ok(())
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
        let id = row.envelope.event_id;
        if skip_known_id && self.earlier_write(id)?.is_some() {
            return Ok(false);
        }
        // An id written before that the caller did not look up fails the batch's insert
        // (unique), as on SQLite.
        self.pending_ids.insert(id, self.pending.len());
        self.pending.push(Pending {
            envelope: row.envelope.clone(),
            data: row.data.to_owned(),
            metadata: row.metadata.to_owned(),
            fingerprint: row.fingerprint,
        });
        Ok(true)
    }

    fn earlier_write(&mut self, event_id: EventId) -> Result<Option<(Fingerprint, EventEnvelope)>, ReadError> {
        if let Some(&index) = self.pending_ids.get(&event_id) {
            let pending = &self.pending[index];
            return Ok(Some((pending.fingerprint, pending.envelope.clone())));
        }
        if self.looked_up.contains(&event_id) {
            return Ok(self.committed.get(&event_id).cloned());
        }
        let row = self.tx.query_opt(
            &format!("SELECT {EVENT_COLUMNS}, fingerprint FROM events WHERE event_id = $1"),
            &[&&event_id.as_bytes()[..]],
        )?;
        row.map(|row| Ok((Fingerprint::from_bytes(row.fixed(8)?), envelope_from_row(&row)?)))
            .transpose()
    }

    fn write_heads(&mut self, streams: &HashMap<StreamId, StreamHead>) -> Result<(), ReadError> {
        // The batch's last steps: its events first (the heads follow them).
        self.flush()?;
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

    fn insert_enrollment_code(&mut self, code: &EnrollmentCodeRecord) -> Result<(), ReadError> {
        self.tx.execute(
            "INSERT INTO enrollment_codes (code_sha256, store_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            &[
                &&code.code_sha256[..],
                &&code.store_id.as_bytes()[..],
                &code.created_at,
                &code.expires_at,
            ],
        )?;
        Ok(())
    }

    fn enrollment_code(&mut self, code_sha256: &[u8; 32]) -> Result<Option<StoredCode>, ReadError> {
        let row = self.tx.query_opt(
            "SELECT store_id, expires_at, used_at FROM enrollment_codes WHERE code_sha256 = $1",
            &[&&code_sha256[..]],
        )?;
        row.map(|row| {
            Ok(StoredCode {
                store_id: StoreId::from_bytes(row.fixed(0)?),
                expires_at: row.try_get(1)?,
                used_at: row.try_get(2)?,
            })
        })
        .transpose()
    }

    fn use_enrollment_code(&mut self, code_sha256: &[u8; 32], now: i64) -> Result<(), ReadError> {
        self.tx.execute(
            "UPDATE enrollment_codes SET used_at = $2 WHERE code_sha256 = $1",
            &[&&code_sha256[..], &now],
        )?;
        Ok(())
    }

    fn prune(&mut self, what: Prunable, cutoff: &str, limit: usize) -> Result<usize, ReadError> {
        Ok(self.tx.execute(what.postgres(), &[&cutoff, &(limit as i64)])? as usize)
    }
}
