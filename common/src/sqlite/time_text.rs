//! The one way both binaries keep a time as text in SQLite: the hub's log (stores and
//! tokens), its read model (reservation expiries, skipped events) and the agent's store
//! (outbox, idempotency rows, sync state).
//!
//! Written as fixed-width UTC with nine fraction digits, `2026-11-26T17:30:00.250000000Z`,
//! so that text order is time order: the read model finds due reservations with
//! `expires_at <= ?` on an index, and the hub lists stores `ORDER BY created_at`. It is
//! still RFC 3339, so people and SQLite's date functions read it as such.
//!
//! Read as any RFC 3339 time, converted to UTC: files written before this codec hold
//! RFC 3339 with as few fraction digits as the time needs (`…T17:30:00.25Z`) in the hub's
//! log and the agent's store, and those rows still read. In a table that holds both, the
//! two sort alike except within one second (an old whole-second `…:00Z` sorts after a new
//! `…:00.000000000Z`), and the old rows were all written before the new ones.

use crate::domain::timestamp::{to_utc, TimeOutOfRange};
use time::format_description::well_known::Rfc3339;
use time::format_description::StaticFormatDescription;
use time::{OffsetDateTime, PrimitiveDateTime};

/// The stored form: fixed-width UTC.
const STORED: StaticFormatDescription =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// A stored time that does not read as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored time {text:?}: {reason}")]
pub struct BadTimeText {
    /// The text found.
    pub text: String,
    /// Why it does not read.
    pub reason: String,
}

/// `at` as stored: fixed-width UTC. Times outside 1970..=9999 (once in UTC) have no
/// stored form.
pub fn encode(at: OffsetDateTime) -> Result<String, TimeOutOfRange> {
    let utc = to_utc("time", at)?;
    // Within 1970..=9999 the year has four digits, so the format cannot fail.
    PrimitiveDateTime::new(utc.date(), utc.time())
        .format(STORED)
        .map_err(|_| TimeOutOfRange { field: "time" })
}

/// A stored time, in UTC: the fixed-width form, or any RFC 3339 text older files hold.
pub fn decode(text: &str) -> Result<OffsetDateTime, BadTimeText> {
    let bad = |reason: String| BadTimeText {
        text: text.to_owned(),
        reason,
    };
    let at = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| bad(e.to_string()))?;
    to_utc("time", at).map_err(|e| bad(e.to_string()))
}

impl From<BadTimeText> for rusqlite::Error {
    fn from(error: BadTimeText) -> Self {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(error))
    }
}

impl From<TimeOutOfRange> for rusqlite::Error {
    fn from(error: TimeOutOfRange) -> Self {
        rusqlite::Error::ToSqlConversionFailure(Box::new(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_time_is_stored_as_fixed_width_utc() {
        // Given a time with an offset and a fraction, when stored, then it is in UTC
        // with nine fraction digits.
        let at = datetime!(2026-11-26 19:30:00.25 +02:00);
        assert_eq!(encode(at).unwrap(), "2026-11-26T17:30:00.250000000Z");
        assert_eq!(
            encode(datetime!(2026-11-26 17:30 UTC)).unwrap(),
            "2026-11-26T17:30:00.000000000Z"
        );
    }

    #[test]
    fn a_stored_time_reads_back_as_the_same_instant() {
        // Given times across the range, when stored and read, then they are the same.
        for at in [
            datetime!(1970-01-01 00:00 UTC),
            datetime!(2026-11-26 17:30:00.123456789 UTC),
            datetime!(2026-11-26 19:30:00.5 +02:00),
            datetime!(9999-12-31 23:59:59 UTC),
        ] {
            let read = decode(&encode(at).unwrap()).unwrap();
            assert_eq!(read, at);
            assert_eq!(read.offset(), time::UtcOffset::UTC);
        }
    }

    #[test]
    fn text_order_is_time_order() {
        // Given times a fraction, a second and years apart, when stored, then the texts
        // sort as the times do.
        let times = [
            datetime!(2026-11-26 17:30:00 UTC),
            datetime!(2026-11-26 17:30:00.05 UTC),
            datetime!(2026-11-26 17:30:00.5 UTC),
            datetime!(2026-11-26 17:30:01 UTC),
            datetime!(2127-01-01 00:00 UTC),
        ];
        let texts: Vec<String> = times.iter().map(|at| encode(*at).unwrap()).collect();
        assert!(texts.windows(2).all(|pair| pair[0] < pair[1]), "{texts:?}");
    }

    #[test]
    fn rows_written_by_older_versions_still_read() {
        // Given RFC 3339 text as the hub's log and the agent's store held it (as few
        // fraction digits as needed, or an offset), when read, then it is the instant.
        assert_eq!(
            decode("2026-11-26T17:30:00.25Z").unwrap(),
            datetime!(2026-11-26 17:30:00.25 UTC)
        );
        assert_eq!(decode("2026-11-26T17:30:00Z").unwrap(), datetime!(2026-11-26 17:30 UTC));
        assert_eq!(
            decode("2026-11-26T19:30:00+02:00").unwrap(),
            datetime!(2026-11-26 17:30 UTC)
        );
    }

    #[test]
    fn text_that_is_no_time_or_out_of_range_is_refused() {
        // Given text that is not a time, or a time past what may be stored,
        // then reading it fails (it is a corrupt row), and so does storing such a time.
        assert!(decode("yesterday").is_err());
        assert!(decode("9999-12-31T23:59:59-23:59").is_err());
        assert!(encode(datetime!(1969-12-31 23:59:59 UTC)).is_err());
    }
}
