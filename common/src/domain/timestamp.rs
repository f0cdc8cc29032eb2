//! The one rule for times inside recorded events: in UTC, between 1970 and 9999.
//!
//! RFC 3339 admits offsets up to ±23:59, so `9999-12-31T23:59:59-23:59` is valid text
//! whose UTC instant lies in the year 10000: outside what the `time` crate, SQLite's
//! text columns and every reader of the log can represent. A time like that reached the
//! log once and stopped the hub's read side (converting it to UTC panicked on every
//! retry). So every time that enters an event (an upload's `data` and `occurred_at`, a
//! command's expiry) passes [`to_utc`] before it is recorded, and code that converts a
//! recorded time uses [`to_utc`] too instead of a conversion that can panic.

use time::macros::datetime;
use time::{OffsetDateTime, UtcOffset};

/// The earliest time an event may carry.
pub const EARLIEST: OffsetDateTime = datetime!(1970-01-01 00:00:00 UTC);
/// The latest time an event may carry.
pub const LATEST: OffsetDateTime = datetime!(9999-12-31 23:59:59 UTC);

/// A time outside [`EARLIEST`]..=[`LATEST`] once converted to UTC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must lie between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59Z once converted to UTC")]
pub struct TimeOutOfRange {
    /// The field that held it.
    pub field: &'static str,
}

/// `at` in UTC, or why it cannot be recorded. Never panics, whatever the offset.
pub fn to_utc(field: &'static str, at: OffsetDateTime) -> Result<OffsetDateTime, TimeOutOfRange> {
    at.checked_to_offset(UtcOffset::UTC)
        .filter(|utc| (EARLIEST..=LATEST).contains(utc))
        .ok_or(TimeOutOfRange { field })
}

/// `now` plus `seconds`, or why that is not a time an event may carry.
pub fn after(field: &'static str, now: OffsetDateTime, seconds: i64) -> Result<OffsetDateTime, TimeOutOfRange> {
    now.checked_add(time::Duration::seconds(seconds))
        .ok_or(TimeOutOfRange { field })
        .and_then(|at| to_utc(field, at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::format_description::well_known::Rfc3339;

    fn parse(text: &str) -> OffsetDateTime {
        OffsetDateTime::parse(text, &Rfc3339).unwrap()
    }

    #[test]
    fn the_year_ten_thousand_in_disguise_is_refused() {
        // Valid RFC 3339, but 9999-12-31T23:59:59-23:59 is 10000-01-01T23:58:59Z.
        let at = parse("9999-12-31T23:59:59-23:59");
        assert_eq!(to_utc("expires_at", at), Err(TimeOutOfRange { field: "expires_at" }));
        assert!(to_utc("t", parse("0001-01-01T00:00:00+23:59")).is_err());
        assert!(to_utc("t", parse("1969-12-31T23:59:59Z")).is_err());
    }

    #[test]
    fn times_in_range_come_back_in_utc() {
        let at = to_utc("t", parse("2026-11-26T10:00:00+02:00")).unwrap();
        assert_eq!(at.offset(), UtcOffset::UTC);
        assert_eq!(at, parse("2026-11-26T08:00:00Z"));
        assert_eq!(to_utc("t", LATEST), Ok(LATEST));
        assert_eq!(to_utc("t", EARLIEST), Ok(EARLIEST));
    }

    #[test]
    fn adding_past_the_end_is_an_error_not_a_panic() {
        assert!(after("t", LATEST, 1).is_err());
        assert!(after("t", OffsetDateTime::UNIX_EPOCH, i64::MAX).is_err());
        assert_eq!(
            after("t", parse("2026-01-01T00:00:00Z"), 60),
            Ok(parse("2026-01-01T00:01:00Z"))
        );
    }
}
