//! Enrollment codes in the event store: the short-lived, single-use codes that a store's
//! agent exchanges for a new store token (`shelfsync-edge enroll`). Only a code's SHA-256
//! is kept. Every write goes through the log's writer, so issuing a code, redeeming it
//! (checking it, marking it used and rotating the store's token, in one transaction) and
//! pruning old codes are serialized with everything else: two agents racing with one code
//! cannot both win, and a failed redemption leaves the code as it was.

use super::{writer, EventStore, RevokedTokens, WriteError};
use shelfsync_common::StoreId;

/// An enrollment code as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentCodeRecord {
    /// SHA-256 of the normalized code.
    pub code_sha256: [u8; 32],
    /// The store it enrolls.
    pub store_id: StoreId,
    /// When it was made (Unix seconds).
    pub created_at: i64,
    /// When it stops working (Unix seconds).
    pub expires_at: i64,
}

/// A stored code's state, as a batch reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredCode {
    /// Its store.
    pub store_id: StoreId,
    /// When it stops working (Unix seconds).
    pub expires_at: i64,
    /// When it was used, if it was.
    pub used_at: Option<i64>,
}

/// A code exchanged for a token.
#[derive(Debug, Clone)]
pub struct Redeemed {
    /// The store the code enrolled.
    pub store: StoreId,
    /// The store's tokens the new one replaced.
    pub revoked: RevokedTokens,
}

impl EventStore {
    /// Stores a new enrollment code for an enrolled store.
    pub async fn add_enrollment_code(&self, code: EnrollmentCodeRecord) -> Result<(), WriteError> {
        self.writer
            .submit(|reply| writer::WriteOp::AddEnrollmentCode(Box::new(code), reply))
            .await
    }

    /// Exchanges the code with this digest for a new store token (its secret's digest):
    /// the code must exist, be unused and unexpired at `now` (Unix seconds). In one
    /// transaction the code is marked used, the store's old tokens are revoked and the new
    /// one is stored; refused, nothing changes.
    pub async fn redeem_enrollment_code(
        &self,
        code_sha256: [u8; 32],
        token_sha256: [u8; 32],
        now: i64,
    ) -> Result<Redeemed, WriteError> {
        self.writer
            .submit(|reply| writer::WriteOp::RedeemEnrollmentCode {
                code_sha256,
                token_sha256,
                now,
                reply,
            })
            .await
    }
}
