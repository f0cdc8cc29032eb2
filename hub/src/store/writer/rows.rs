//! What a batch writes and reads in its transaction, as one trait with an implementation
//! per backend (`sqlite.rs` here, `store/pg/rows.rs`): the batch logic (commands,
//! store facts, admin writes) is written once against it.

use super::{StreamHead, TokenRecord};
use crate::store::{EnrollmentCodeRecord, StoredCode};
use crate::store::{Prunable, RevokedTokens, StoreStats, TokenSelector};
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::{EventEnvelope, EventId, StoreId, StreamId};
use std::collections::HashMap;
use std::fmt::Display;
use time::OffsetDateTime;

/// One event as it is inserted: the envelope and its encoded columns.
pub struct EventRow<'a> {
    /// The event (position, ids, stream, version, type).
    pub envelope: &'a EventEnvelope,
    /// The payload's JSON.
    pub data: &'a str,
    /// The metadata's JSON, `recorded_at` included.
    pub metadata: &'a str,
    /// The request's digest (zero for events the hub derived).
    pub fingerprint: Fingerprint,
}

/// The statements a batch runs, in its transaction.
pub trait LogRows {
    /// What the database fails with (it fails the whole batch).
    type Error: Display;

    /// A value the batch could not encode, as a batch failure.
    fn fault(error: impl Display) -> Self::Error;

    /// Inserts an event; whether it was written. With `skip_known_id`, an id already in
    /// the log writes nothing (`false`); without, it is an error.
    fn insert_event(&mut self, row: &EventRow<'_>, skip_known_id: bool) -> Result<bool, Self::Error>;

    /// The fingerprint and event of an id already written (committed, or earlier in this
    /// transaction).
    fn earlier_write(&mut self, event_id: EventId) -> Result<Option<(Fingerprint, EventEnvelope)>, Self::Error>;

    /// Upserts the stream heads the batch changed.
    fn write_heads(&mut self, streams: &HashMap<StreamId, StreamHead>) -> Result<(), Self::Error>;

    /// Adds the batch's per-store counters.
    fn add_stats(&mut self, stats: &HashMap<StoreId, StoreStats>) -> Result<(), Self::Error>;

    /// Whether a live token of `role` has this name, not counting `except_store`'s.
    fn live_token_named(&mut self, role: &str, name: &str, except_store: Option<StoreId>) -> Result<bool, Self::Error>;

    /// Stores a token.
    fn insert_token(&mut self, token: &TokenRecord) -> Result<(), Self::Error>;

    /// Revokes the selected live tokens at `now`.
    fn revoke_tokens(&mut self, selector: &TokenSelector, now: OffsetDateTime) -> Result<RevokedTokens, Self::Error>;

    /// The oldest store enrolled under this name.
    fn store_named(&mut self, name: &str) -> Result<Option<StoreId>, Self::Error>;

    /// Enrolls a store.
    fn insert_store(&mut self, id: StoreId, name: &str, now: OffsetDateTime) -> Result<(), Self::Error>;

    /// Stores an enrollment code.
    fn insert_enrollment_code(&mut self, code: &EnrollmentCodeRecord) -> Result<(), Self::Error>;

    /// The enrollment code with this digest.
    fn enrollment_code(&mut self, code_sha256: &[u8; 32]) -> Result<Option<StoredCode>, Self::Error>;

    /// Marks an enrollment code used at `now` (Unix seconds).
    fn use_enrollment_code(&mut self, code_sha256: &[u8; 32], now: i64) -> Result<(), Self::Error>;

    /// Removes at most `limit` rows of `what` older than `cutoff` (stored time text); how many.
    fn prune(&mut self, what: Prunable, cutoff: &str, limit: usize) -> Result<usize, Self::Error>;
}

/// Adds one revoked token to `revoked` (each store once).
pub fn count_revoked(revoked: &mut RevokedTokens, token: uuid::Uuid, store: Option<StoreId>) {
    revoked.count += 1;
    if let Some(store) = store {
        revoked.store_tokens.push((store, token));
        if !revoked.stores.contains(&store) {
            revoked.stores.push(store);
        }
    }
}
