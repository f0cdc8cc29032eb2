//! An event's `data` and `metadata` as the log stores them (JSON text), encoded once.
//!
//! The single writer bounds how fast the hub records events, so nothing that does not
//! need its state should run on it. An uploaded event's columns are encoded on the
//! request's own thread ([`super::facts::prepare`]); the writer only stamps
//! `recorded_at`, which it learns when the batch starts. `recorded_at` is the last member
//! of [`EventMetadata`], so stamping is appending it to the text: the bytes are exactly
//! what `serde_json` makes of the stamped metadata (a test pins this).

use serde::Serialize;
use shelfsync_common::{EventMetadata, EventPayload};
use time::OffsetDateTime;

/// The `data` and unstamped `metadata` columns of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    data: String,
    /// The metadata's JSON without `recorded_at`: an object, so it ends with `}`.
    metadata: String,
}

impl Columns {
    /// Encodes `payload`'s data and `metadata` (its `recorded_at` left out: the writer
    /// stamps it).
    pub fn encode(payload: &EventPayload, metadata: &EventMetadata) -> serde_json::Result<Self> {
        let data = payload.data_json()?;
        let metadata = if metadata.recorded_at.is_some() {
            serde_json::to_string(&EventMetadata {
                recorded_at: None,
                ..metadata.clone()
            })?
        } else {
            serde_json::to_string(metadata)?
        };
        Ok(Self { data, metadata })
    }

    /// The `data` column.
    pub fn data(&self) -> &str {
        &self.data
    }

    /// The `metadata` column, stamped with the batch's `recorded_at`.
    pub fn metadata(&self, stamp: &RecordedAt) -> String {
        let open = self.metadata.strip_suffix('}').unwrap_or(&self.metadata);
        let mut text = String::with_capacity(open.len() + stamp.0.len());
        text.push_str(open);
        text.push_str(&stamp.0);
        text
    }
}

/// A batch's `recorded_at` as the JSON that ends a stamped metadata column:
/// `,"recorded_at":"<RFC 3339>"}`. Made once per batch.
#[derive(Debug, Clone)]
pub struct RecordedAt(String);

impl RecordedAt {
    /// The stamp for `at`.
    pub fn new(at: OffsetDateTime) -> serde_json::Result<Self> {
        #[derive(Serialize)]
        struct Stamp {
            #[serde(with = "time::serde::rfc3339")]
            recorded_at: OffsetDateTime,
        }
        let member = serde_json::to_string(&Stamp { recorded_at: at })?;
        // `{"recorded_at":"…"}` becomes `,"recorded_at":"…"}`.
        Ok(Self(format!(",{}", member.strip_prefix('{').unwrap_or(&member))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelfsync_common::{Origin, ReservationId, StoreId};
    use time::macros::datetime;

    fn metadata(causation: bool) -> EventMetadata {
        EventMetadata {
            origin: Origin::Store(StoreId::from_bytes([3; 16])),
            actor: "till \"1\"".into(),
            correlation_id: uuid::Uuid::from_bytes([4; 16]),
            causation_id: causation.then(|| uuid::Uuid::from_bytes([5; 16])),
            occurred_at: datetime!(2030-01-01 10:00:00.123456 UTC),
            recorded_at: None,
        }
    }

    #[test]
    fn stamped_columns_are_what_serde_makes_of_the_stamped_event() {
        // Given events with and without optional metadata, encoded before the batch,
        let payload = EventPayload::StockReserved {
            reservation_id: ReservationId::from_bytes([6; 16]),
            quantity: 2,
            expires_at: datetime!(2030-01-02 00:00 UTC),
        };
        let at = datetime!(2030-01-01 10:00:01.5 UTC);
        let stamp = RecordedAt::new(at).unwrap();
        for causation in [false, true] {
            let columns = Columns::encode(&payload, &metadata(causation)).unwrap();
            // when stamped, then the columns are byte for byte what the writer used to
            // encode from the stamped envelope.
            let stamped = EventMetadata {
                recorded_at: Some(at),
                ..metadata(causation)
            };
            assert_eq!(columns.metadata(&stamp), serde_json::to_string(&stamped).unwrap());
            assert_eq!(columns.data(), serde_json::to_string(&payload.data()).unwrap());
            // and a recorded_at already set is replaced, not repeated.
            assert_eq!(Columns::encode(&payload, &stamped).unwrap(), columns);
        }
    }
}
