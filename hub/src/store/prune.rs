//! The log database's rows that the retention job removes once older than its cutoff
//! (`hub/src/retention.rs` runs them): one [`Prunable`] per kind of row, each with its
//! delete statement for both storages. Each statement removes at most `limit` rows
//! (`$2`) whose time is before the cutoff (`$1`, stored time text: text order is time
//! order), so one step is one short writer transaction.

/// A kind of row the retention job removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prunable {
    /// Tokens revoked before the cutoff. Nothing reads a revoked token: requests look up
    /// live tokens only, a store with no live token reads as revoked either way, and the
    /// push streams opened with a token ended when it was revoked (the revocation is a
    /// message at that moment, `NOTIFY` on PostgreSQL, not a list kept for later).
    RevokedTokens,
    /// Enrollment codes used (or, unused, expired) before the cutoff. Until then a late
    /// attempt with one hears "used" or "expired" rather than "unknown". Their times are
    /// Unix seconds, so the cutoff text is converted in SQL.
    EnrollmentCodes,
}

impl Prunable {
    /// The table, as the logs and metrics name it.
    pub fn table(self) -> &'static str {
        match self {
            Prunable::RevokedTokens => "revoked_tokens",
            Prunable::EnrollmentCodes => "enrollment_codes",
        }
    }

    /// The delete statement on SQLite (`?1` cutoff, `?2` limit).
    pub(super) fn sqlite(self) -> &'static str {
        match self {
            Prunable::RevokedTokens => {
                "DELETE FROM tokens WHERE id IN
                   (SELECT id FROM tokens WHERE revoked_at IS NOT NULL AND revoked_at < ?1 LIMIT ?2)"
            }
            Prunable::EnrollmentCodes => {
                "DELETE FROM enrollment_codes WHERE code_sha256 IN
                   (SELECT code_sha256 FROM enrollment_codes
                     WHERE coalesce(used_at, expires_at) < CAST(strftime('%s', ?1) AS INTEGER) LIMIT ?2)"
            }
        }
    }

    /// The delete statement on PostgreSQL (`$1` cutoff, `$2` limit). Times compare as
    /// bytes (`COLLATE "C"`), whatever the database's collation.
    pub(super) fn postgres(self) -> &'static str {
        match self {
            Prunable::RevokedTokens => {
                r#"DELETE FROM tokens WHERE id IN
                   (SELECT id FROM tokens WHERE revoked_at IS NOT NULL AND revoked_at COLLATE "C" < $1 LIMIT $2)"#
            }
            Prunable::EnrollmentCodes => {
                "DELETE FROM enrollment_codes WHERE code_sha256 IN
                   (SELECT code_sha256 FROM enrollment_codes
                     WHERE coalesce(used_at, expires_at) < extract(epoch FROM $1::text::timestamptz) LIMIT $2)"
            }
        }
    }
}
