//! The rules for recording a store's facts (design section 7).
//!
//! An event an agent uploads is a fact: the till already sold the goods. So it is never
//! refused for stock reasons; it is only refused when it is not this store's to record
//! (another store's stream, the catalog, another origin) or cannot be read (unknown type
//! or schema version, malformed or out-of-range data, unknown product). These checks are
//! pure, so [`prepare`] runs them on the uploading request's own thread, together with
//! the fingerprint and the encoding of the event's columns: the payload is parsed and
//! encoded once, and the single writer is left with what needs its state (whether the
//! product is registered, the dedupe by event id, the stream's head).

use super::columns::Columns;
use shelfsync_common::domain::allocation::Share;
use shelfsync_common::domain::event::PayloadError;
use shelfsync_common::domain::inventory::{validate_adjustment, validate_reason};
use shelfsync_common::domain::timestamp;
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::wire::sync::UploadEvent;
use shelfsync_common::{EventId, EventMetadata, EventPayload, Origin, ProductId, StockQuantity, StoreId, StreamId};

/// Why an uploaded event is not recorded: a stable reason code and a detail for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Stable code.
    pub reason: &'static str,
    /// What is wrong.
    pub detail: String,
}

fn reject(reason: &'static str, detail: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        detail: detail.into(),
    }
}

/// Whether `store` may record `event` at all: its own stream, its own origin. Checked
/// before anything else, the dedupe by event id included, so that a store never learns
/// about (or is told "duplicate" for) another store's events.
fn authorize(store: StoreId, event: &UploadEvent) -> Result<(), Rejection> {
    match event.stream.store_id {
        Some(owner) if owner == store => {}
        Some(owner) => return Err(reject("wrong_store", format!("the stream belongs to store {owner}"))),
        None => return Err(reject("wrong_store", "catalog streams are written only at the hub")),
    }
    if event.metadata.origin != Origin::Store(store) {
        return Err(reject(
            "wrong_origin",
            "metadata.origin must be the uploading store's id",
        ));
    }
    Ok(())
}

/// An uploaded event made ready for the writer: its identity, its fingerprint, and what
/// the pure rules said of it.
#[derive(Debug)]
pub struct Prepared {
    /// Made by the store.
    pub event_id: EventId,
    /// The stream it is for.
    pub stream: StreamId,
    /// What it says ([`Fingerprint::of_upload`]), to tell a retry from a reused id.
    pub fingerprint: Fingerprint,
    /// What the rules that need no state said.
    pub verdict: Verdict,
}

/// What the rules that need no writer state say of an uploaded event.
#[derive(Debug)]
pub enum Verdict {
    /// Not this store's to record ([`authorize`]): refused before the dedupe by id.
    Unauthorized(Rejection),
    /// Cannot be read: refused, unless its id was recorded before (a retry).
    Refused(Rejection),
    /// Readable; the writer still checks that its product is registered.
    Readable(Box<Fact>),
}

/// An uploaded event that can be read: its typed payload and metadata, every time in
/// them in UTC, and its columns as the log stores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    /// What happened.
    pub payload: EventPayload,
    /// The uploaded metadata, `occurred_at` in UTC and no `recorded_at`.
    pub metadata: EventMetadata,
    /// `data` and `metadata`, encoded.
    pub columns: Columns,
    /// A range the payload is out of: reported only once its product is known to be
    /// registered (an unknown product is the first thing to fix).
    out_of_range: Option<Rejection>,
}

/// Checks, fingerprints and encodes one event `store` uploaded. Pure: it runs on the
/// request's thread, before the writer takes the upload.
pub fn prepare(store: StoreId, event: UploadEvent) -> Prepared {
    let fingerprint = Fingerprint::of_upload(&event);
    let (event_id, stream) = (event.event_id, event.stream);
    let verdict = match authorize(store, &event) {
        Err(rejection) => Verdict::Unauthorized(rejection),
        Ok(()) => match read(event) {
            Ok(fact) => Verdict::Readable(Box::new(fact)),
            Err(rejection) => Verdict::Refused(rejection),
        },
    };
    Prepared {
        event_id,
        stream,
        fingerprint,
        verdict,
    }
}

impl Prepared {
    /// The fact to record, or why not, once the writer says whether the event's product
    /// is registered. The reasons come in the order the rules check them.
    pub fn into_fact(self, product_registered: impl FnOnce(ProductId) -> bool) -> Result<Fact, Rejection> {
        let fact = match self.verdict {
            Verdict::Unauthorized(rejection) | Verdict::Refused(rejection) => return Err(rejection),
            Verdict::Readable(fact) => *fact,
        };
        if !product_registered(self.stream.product_id) {
            return Err(reject(
                "unknown_product",
                format!("product {} is not in the catalog", self.stream.product_id),
            ));
        }
        match fact.out_of_range {
            Some(rejection) => Err(rejection),
            None => Ok(fact),
        }
    }
}

/// The metadata, the payload (parsed once, from the uploaded `data` itself) and the
/// columns of an authorized event.
fn read(event: UploadEvent) -> Result<Fact, Rejection> {
    event
        .metadata
        .check_fields()
        .map_err(|detail| reject("invalid_metadata", detail))?;
    let payload = EventPayload::from_parts(&event.event_type, event.schema_version, event.data)
        .map_err(|e: PayloadError| reject(e.code(), e.to_string()))?;
    let occurred_at = timestamp::to_utc("metadata.occurred_at", event.metadata.occurred_at)
        .map_err(|e| reject("out_of_range", e.to_string()))?;
    let metadata = EventMetadata {
        occurred_at,
        recorded_at: None,
        ..event.metadata
    };
    let columns = Columns::encode(&payload, &metadata).map_err(|e| reject("malformed_event", e.to_string()))?;
    Ok(Fact {
        out_of_range: check_ranges(&payload).err(),
        payload,
        metadata,
        columns,
    })
}

fn check_ranges(payload: &EventPayload) -> Result<(), Rejection> {
    let quantity = |q: u32| {
        StockQuantity::new(i64::from(q))
            .map(|_| ())
            .map_err(|e| reject("out_of_range", e.to_string()))
    };
    match payload {
        EventPayload::StockAdded { quantity: q }
        | EventPayload::StockReserved { quantity: q, .. }
        | EventPayload::StockReleased { quantity: q, .. }
        | EventPayload::ReservationCommitted { quantity: q, .. } => quantity(*q),
        EventPayload::StockAdjusted { delta, reason } => {
            validate_adjustment(*delta).map_err(|e| reject("out_of_range", e.to_string()))?;
            validate_reason(reason).map_err(|e| reject("out_of_range", e.to_string()))
        }
        // A store gives units of its own share to the hub; only the hub gives the hub's.
        EventPayload::AllocationTransferred {
            to: Share::Hub,
            quantity: q,
        } => quantity(*q),
        EventPayload::ProductRegistered(_)
        | EventPayload::ProductUpdated(_)
        | EventPayload::OversellDetected { .. }
        | EventPayload::AllocationSet { .. }
        | EventPayload::AllocationTransferred { to: Share::Store, .. } => Err(reject(
            "event_type_not_allowed",
            format!("{} is recorded only by the hub", payload.event_type()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> StoreId {
        StoreId::from_bytes([7; 16])
    }

    fn event(event_type: &str, data: serde_json::Value) -> UploadEvent {
        UploadEvent {
            event_id: EventId::from_bytes([1; 16]),
            stream: StreamId::inventory(ProductId::from_bytes([2; 16]), store()),
            event_type: event_type.into(),
            schema_version: 1,
            data,
            metadata: EventMetadata {
                origin: Origin::Store(store()),
                actor: "till-1".into(),
                correlation_id: uuid::Uuid::from_bytes([3; 16]),
                causation_id: None,
                occurred_at: time::OffsetDateTime::UNIX_EPOCH,
                recorded_at: None,
            },
        }
    }

    fn check(
        store: StoreId,
        event: &UploadEvent,
        registered: impl FnOnce(ProductId) -> bool,
    ) -> Result<Fact, Rejection> {
        prepare(store, event.clone()).into_fact(registered)
    }

    fn reason(result: Result<Fact, Rejection>) -> &'static str {
        result.err().map_or("accepted", |r| r.reason)
    }

    #[test]
    fn a_valid_sale_is_accepted() {
        let sale = event(
            "ReservationCommitted",
            json!({"reservation_id": uuid::Uuid::nil(), "quantity": 2}),
        );
        assert_eq!(reason(check(store(), &sale, |_| true)), "accepted");
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let added = event("StockAdded", json!({"quantity": 1}));
        let mut other_store = added.clone();
        other_store.stream.store_id = Some(StoreId::from_bytes([8; 16]));
        let mut catalog = added.clone();
        catalog.stream.store_id = None;
        let mut wrong_origin = added.clone();
        wrong_origin.metadata.origin = Origin::Hub;
        let mut future_schema = added.clone();
        future_schema.schema_version = 2;
        let mut occurred_in_10000 = added.clone();
        occurred_in_10000.metadata.occurred_at = year_10000();
        let cases = [
            (other_store, "wrong_store"),
            (catalog, "wrong_store"),
            (wrong_origin, "wrong_origin"),
            (event("Teleported", json!({})), "unknown_event_type"),
            (future_schema, "unsupported_schema_version"),
            (event("StockAdded", json!({"quantity": "two"})), "malformed_event"),
            (event("StockAdded", json!({"quantity": 0})), "out_of_range"),
            (
                event(
                    "StockReserved",
                    json!({"reservation_id": uuid::Uuid::nil(), "quantity": 1, "expires_at": "9999-12-31T23:59:59-23:59"}),
                ),
                "out_of_range",
            ),
            (occurred_in_10000, "out_of_range"),
            (
                event("StockAdjusted", json!({"delta": i64::MIN, "reason": "count"})),
                "out_of_range",
            ),
            (event("StockAdded", json!({"quantity": 2_000_000})), "out_of_range"),
            (
                event("StockAdjusted", json!({"delta": 0, "reason": "count"})),
                "out_of_range",
            ),
            (
                event("StockAdjusted", json!({"delta": 3, "reason": ""})),
                "out_of_range",
            ),
            (
                event(
                    "OversellDetected",
                    json!({"caused_by": uuid::Uuid::nil(), "on_hand": 0, "reserved": 0, "available": -1}),
                ),
                "event_type_not_allowed",
            ),
        ];
        for (case, want) in cases {
            assert_eq!(reason(check(store(), &case, |_| true)), want, "{case:?}");
        }
        assert_eq!(reason(check(store(), &added, |_| false)), "unknown_product");
    }

    fn year_10000() -> time::OffsetDateTime {
        time::OffsetDateTime::parse(
            "9999-12-31T23:59:59-23:59",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    }

    #[test]
    fn recorded_times_are_in_utc() {
        let mut held = event(
            "StockReserved",
            json!({"reservation_id": uuid::Uuid::nil(), "quantity": 1, "expires_at": "2030-01-01T10:00:00+02:00"}),
        );
        held.metadata.occurred_at = time::macros::datetime!(2030-01-01 01:00 +01:00);
        let fact = check(store(), &held, |_| true).unwrap();
        assert_eq!(fact.metadata.occurred_at, time::macros::datetime!(2030-01-01 00:00 UTC));
        assert_eq!(fact.metadata.occurred_at.offset(), time::UtcOffset::UTC);
        let EventPayload::StockReserved { expires_at, .. } = fact.payload else {
            panic!("{:?}", fact.payload)
        };
        assert_eq!(expires_at.offset(), time::UtcOffset::UTC);
        assert_eq!(expires_at, time::macros::datetime!(2030-01-01 08:00 UTC));
    }

    #[test]
    fn metadata_free_text_is_bounded() {
        let mut long_actor = event("StockAdded", json!({"quantity": 1}));
        long_actor.metadata.actor = "a".repeat(900 * 1024);
        let mut empty_actor = long_actor.clone();
        empty_actor.metadata.actor = String::new();
        let mut hidden = long_actor.clone();
        hidden.metadata.actor = "till-1\u{202E}".into();
        for case in [long_actor, empty_actor, hidden] {
            assert_eq!(reason(check(store(), &case, |_| true)), "invalid_metadata");
        }
        let mut longest = event("StockAdded", json!({"quantity": 1}));
        longest.metadata.actor = "a".repeat(shelfsync_common::domain::event::MAX_ACTOR_LEN);
        assert_eq!(reason(check(store(), &longest, |_| true)), "accepted");
    }
}
