//! The checker must catch what it claims to: each check against a small log with one
//! defect planted.

use super::*;
use crate::workload::{Ack, OpKind};
use shelfsync_common::{EventMetadata, ReservationId};

fn store() -> StoreId {
    StoreId::from_bytes([1; 16])
}

fn product() -> ProductId {
    ProductId::from_bytes([2; 16])
}

fn stream() -> StreamId {
    StreamId::inventory(product(), store())
}

/// A log of `payloads` on one stream, positions and versions 1, 2, 3, ...
fn log(payloads: &[(Origin, EventPayload)]) -> Vec<EventEnvelope> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, (origin, payload))| EventEnvelope {
            event_id: EventId::from_bytes([i as u8 + 10; 16]),
            stream: stream(),
            stream_version: i as u64 + 1,
            position: i as u64 + 1,
            schema_version: 1,
            payload: payload.clone(),
            metadata: EventMetadata {
                origin: *origin,
                actor: "test".into(),
                correlation_id: uuid::Uuid::nil(),
                causation_id: None,
                occurred_at: time::OffsetDateTime::UNIX_EPOCH,
                recorded_at: None,
            },
        })
        .collect()
}

fn added(quantity: u32) -> EventPayload {
    EventPayload::StockAdded { quantity }
}

fn reserved(n: u8, quantity: u32) -> EventPayload {
    EventPayload::StockReserved {
        reservation_id: ReservationId::from_bytes([n; 16]),
        quantity,
        expires_at: time::OffsetDateTime::UNIX_EPOCH,
    }
}

fn ack(event: &EventEnvelope) -> Ack {
    Ack {
        store: store(),
        kind: OpKind::Stock,
        product: product(),
        path: "/v1/inventory/stock".into(),
        body: Value::Null,
        key: event.event_id.to_string(),
        event_id: event.event_id,
        payload: event.payload.clone(),
        attempts: 1,
        replayed: false,
    }
}

fn till(acks: Vec<Ack>) -> TillLog {
    TillLog {
        store: Some(store()),
        acks,
        ..TillLog::default()
    }
}

/// Recorded by the store.
fn by_store() -> Origin {
    Origin::Store(store())
}

#[test]
fn a_sound_log_has_no_problems() {
    let log = log(&[(Origin::Hub, added(2)), (by_store(), added(1))]);
    assert!(log_shape_problems(&log).is_empty());
    assert!(ack_problems(&log, &[till(vec![ack(&log[1])])]).is_empty());
    assert!(oversell_problems(&log).0.is_empty());
}

#[test]
fn gaps_doubles_and_version_jumps_are_found() {
    let mut gap = log(&[(Origin::Hub, added(1)), (Origin::Hub, added(1))]);
    gap[1].position = 3;
    assert_eq!(log_shape_problems(&gap).len(), 1, "a gap");
    let mut double = log(&[(Origin::Hub, added(1)), (Origin::Hub, added(1))]);
    double[1].event_id = double[0].event_id;
    assert_eq!(log_shape_problems(&double).len(), 1, "one event twice");
    let mut jump = log(&[(Origin::Hub, added(1)), (Origin::Hub, added(1))]);
    jump[1].stream_version = 3;
    assert_eq!(log_shape_problems(&jump).len(), 1, "a version jump");
}

#[test]
fn lost_altered_invented_and_shared_writes_are_found() {
    let log = log(&[(by_store(), added(1)), (by_store(), added(2))]);
    // Lost: acknowledged, not in the log (and the second is then a phantom).
    let mut lost = ack(&log[1]);
    lost.event_id = EventId::from_bytes([99; 16]);
    let problems = ack_problems(&log, &[till(vec![ack(&log[0]), lost])]);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    // Altered: in the log with another payload.
    let mut altered = ack(&log[1]);
    altered.payload = added(3);
    assert_eq!(ack_problems(&log, &[till(vec![ack(&log[0]), altered])]).len(), 1);
    // One event answering two requests.
    let mut shared = ack(&log[0]);
    shared.key = "another".into();
    assert_eq!(
        ack_problems(&log, &[till(vec![ack(&log[0]), shared, ack(&log[1])])]).len(),
        1
    );
    // A store's own expiry of a hold is not a phantom.
    let expired = super::tests::log(&[
        (by_store(), reserved(1, 1)),
        (
            by_store(),
            EventPayload::StockReleased {
                reservation_id: ReservationId::from_bytes([1; 16]),
                quantity: 1,
                reason: ReleaseReason::Expired,
            },
        ),
    ]);
    assert!(ack_problems(&expired, &[till(vec![ack(&expired[0])])]).is_empty());
}

#[test]
fn oversells_must_match_real_breaches_one_to_one() {
    let breach = |flag: Option<(u8, i64)>| {
        let mut events = vec![
            (Origin::Hub, added(1)),
            (Origin::Hub, reserved(1, 1)),
            (by_store(), reserved(2, 1)),
        ];
        if let Some((cause, available)) = flag {
            events.push((
                Origin::Hub,
                EventPayload::OversellDetected {
                    caused_by: EventId::from_bytes([cause; 16]),
                    on_hand: 1,
                    reserved: 2,
                    available,
                },
            ));
        }
        log(&events)
    };
    // The store's hold (third event, id [12; 16]) breached: flagged right.
    let (problems, found) = oversell_problems(&breach(Some((12, -1))));
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(found.len(), 1);
    // Not flagged.
    assert_eq!(oversell_problems(&breach(None)).0.len(), 1);
    // Flagged with the wrong figures.
    assert_eq!(oversell_problems(&breach(Some((12, -2)))).0.len(), 1);
    // Naming an event that breached nothing (the hub's own hold), and so missing the real one.
    assert_eq!(oversell_problems(&breach(Some((11, -1)))).0.len(), 2);
}
