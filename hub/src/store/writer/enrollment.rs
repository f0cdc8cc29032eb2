//! Enrollment codes in the event log's batches: issued, redeemed and pruned in the
//! writer's transaction (on PostgreSQL under the cluster-wide write lock), so a code is
//! used at most once and a refused redemption changes nothing.

use super::*;
use crate::store::{EnrollmentCodeRecord, Redeemed};

impl<R: LogRows> Batch<'_, R> {
    pub(super) fn add_enrollment_code(
        &mut self,
        code: EnrollmentCodeRecord,
    ) -> Result<Result<(), WriteError>, R::Error> {
        if !self.store_known(code.store_id) {
            return Ok(Err(WriteError::UnknownStore(code.store_id)));
        }
        self.rows.insert_enrollment_code(&code)?;
        Ok(Ok(()))
    }

    /// Checks the code, marks it used and gives its store the new token, replacing its
    /// old ones. The checks come first, so a refusal writes nothing.
    pub(super) fn redeem_enrollment_code(
        &mut self,
        code_sha256: [u8; 32],
        token_sha256: [u8; 32],
        now: i64,
    ) -> Result<Result<Redeemed, WriteError>, R::Error> {
        let Some(code) = self.rows.enrollment_code(&code_sha256)? else {
            return Ok(Err(WriteError::EnrollmentCodeUnknown));
        };
        if code.used_at.is_some() {
            return Ok(Err(WriteError::EnrollmentCodeUsed));
        }
        if code.expires_at <= now {
            return Ok(Err(WriteError::EnrollmentCodeExpired));
        }
        let token = TokenRecord::for_store(code.store_id, token_sha256, self.now);
        let revoked = match self.rotate_store_token(code.store_id, token)? {
            Ok(revoked) => revoked,
            Err(refused) => return Ok(Err(refused)),
        };
        self.rows.use_enrollment_code(&code_sha256, now)?;
        Ok(Ok(Redeemed {
            store: code.store_id,
            revoked,
        }))
    }
}
