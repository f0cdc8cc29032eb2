//! An event's `data` member as JSON text, written straight from the typed payload.
//!
//! The log has always stored `data` as `serde_json` writes a `Value`: without the
//! `preserve_order` feature a `Value`'s objects are sorted maps, so every object's keys
//! come out in sorted order, not in field order. Going through a `Value` costs a map and
//! a string per field for every event recorded; these views write the same bytes
//! directly, their fields declared in sorted order (a test pins the bytes for every
//! event type against the `Value` route).

use super::{EventPayload, ReleaseReason};
use crate::domain::allocation::{AllocationPolicy, Share};
use crate::domain::ids::{EventId, ProductId, ReservationId};
use crate::domain::product::Product;
use serde::Serialize;
use time::OffsetDateTime;

#[derive(Serialize)]
struct ProductData<'a> {
    id: &'a ProductId,
    name: &'a str,
    price_minor: u64,
    sku: &'a str,
}

#[derive(Serialize)]
struct Quantity {
    quantity: u32,
}

#[derive(Serialize)]
struct Reserved<'a> {
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    quantity: u32,
    reservation_id: &'a ReservationId,
}

#[derive(Serialize)]
struct Released<'a> {
    quantity: u32,
    reason: ReleaseReason,
    reservation_id: &'a ReservationId,
}

#[derive(Serialize)]
struct Committed<'a> {
    quantity: u32,
    reservation_id: &'a ReservationId,
}

#[derive(Serialize)]
struct Adjusted<'a> {
    delta: i64,
    reason: &'a str,
}

#[derive(Serialize)]
struct Oversell<'a> {
    available: i64,
    caused_by: &'a EventId,
    on_hand: i64,
    reserved: i64,
}

#[derive(Serialize)]
struct PolicySet {
    policy: AllocationPolicy,
}

#[derive(Serialize)]
struct Transferred {
    quantity: u32,
    to: Share,
}

impl EventPayload {
    /// The `data` member as the log stores it: byte for byte
    /// `serde_json::to_string(&self.data())`, without the `Value` in between.
    pub fn data_json(&self) -> serde_json::Result<String> {
        let product = |p: &Product| {
            let Product {
                id,
                sku,
                name,
                price_minor,
            } = p;
            serde_json::to_string(&ProductData {
                id,
                name,
                price_minor: *price_minor,
                sku,
            })
        };
        match self {
            EventPayload::ProductRegistered(p) | EventPayload::ProductUpdated(p) => product(p),
            EventPayload::StockAdded { quantity } => serde_json::to_string(&Quantity { quantity: *quantity }),
            EventPayload::StockReserved {
                reservation_id,
                quantity,
                expires_at,
            } => serde_json::to_string(&Reserved {
                expires_at: *expires_at,
                quantity: *quantity,
                reservation_id,
            }),
            EventPayload::StockReleased {
                reservation_id,
                quantity,
                reason,
            } => serde_json::to_string(&Released {
                quantity: *quantity,
                reason: *reason,
                reservation_id,
            }),
            EventPayload::ReservationCommitted {
                reservation_id,
                quantity,
            } => serde_json::to_string(&Committed {
                quantity: *quantity,
                reservation_id,
            }),
            EventPayload::StockAdjusted { delta, reason } => serde_json::to_string(&Adjusted { delta: *delta, reason }),
            EventPayload::OversellDetected {
                caused_by,
                on_hand,
                reserved,
                available,
            } => serde_json::to_string(&Oversell {
                available: *available,
                caused_by,
                on_hand: *on_hand,
                reserved: *reserved,
            }),
            EventPayload::AllocationSet { policy } => serde_json::to_string(&PolicySet { policy: *policy }),
            EventPayload::AllocationTransferred { to, quantity } => serde_json::to_string(&Transferred {
                quantity: *quantity,
                to: *to,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn data_json_is_what_serde_makes_of_the_data_value_for_every_event_type() {
        let product = Product {
            id: ProductId::from_bytes([1; 16]),
            sku: "SKU-\u{e9}\"1\"".into(),
            name: "Tea \\ \u{1F375} <b>".into(),
            price_minor: 1_000_000_000_000,
        };
        let hold = ReservationId::from_bytes([2; 16]);
        let payloads = [
            EventPayload::ProductRegistered(product.clone()),
            EventPayload::ProductUpdated(product),
            EventPayload::StockAdded { quantity: u32::MAX },
            EventPayload::StockReserved {
                reservation_id: hold,
                quantity: 2,
                expires_at: datetime!(2030-01-02 03:04:05.123456789 UTC),
            },
            EventPayload::StockReleased {
                reservation_id: hold,
                quantity: 1,
                reason: ReleaseReason::Expired,
            },
            EventPayload::ReservationCommitted {
                reservation_id: hold,
                quantity: 3,
            },
            EventPayload::StockAdjusted {
                delta: i64::MIN,
                reason: "count \"after\" theft\n".into(),
            },
            EventPayload::OversellDetected {
                caused_by: EventId::from_bytes([3; 16]),
                on_hand: -1,
                reserved: 4,
                available: -5,
            },
            EventPayload::AllocationSet {
                policy: AllocationPolicy::Percent { percent: 20 },
            },
            EventPayload::AllocationTransferred {
                to: Share::Hub,
                quantity: 3,
            },
        ];
        assert_eq!(payloads.len(), super::super::EVENT_TYPES.len());
        for payload in payloads {
            let via_value = serde_json::to_string(&payload.data()).unwrap();
            assert_eq!(payload.data_json().unwrap(), via_value, "{}", payload.event_type());
        }
    }
}
