//! The one rule for telling a retried write from a different write that reuses its event
//! id, shared by the hub (its API's commands and the stores' uploads) and the edge agent
//! (its tills' commands).
//!
//! A write is idempotent by its event id: the id is the key its first answer is found
//! under. The [`Fingerprint`] stored next to that answer says what the key was used for,
//! so a second request under the same id is either the same request (answered again) or
//! a different one (refused). The rule: the first 16 bytes of SHA-256 over the route name,
//! a NUL byte, and the request's content **without its event id**, where content is
//!
//! - for an API write, the JSON of the path's id (if any) and the body, its `event_id`
//!   cleared ([`Fingerprint::of_write`]);
//! - for an uploaded store fact (route `upload`), its stream, type, schema version and
//!   data, but not its metadata, which says who sent it and may differ on a retry
//!   ([`Fingerprint::of_upload`]).
//!
//! The event id is left out because it is the key, not part of what the key identifies:
//! a request that first came with an `Idempotency-Key` and is retried with the `event_id`
//! of its answer in the body is the same request, and must be answered as one.

use crate::domain::ids::EventId;
use crate::wire::sync::UploadEvent;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// What a write asked for, as a 16-byte digest (see the module's rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 16]);

/// A write request's body, which may name the event id it is to be recorded under.
pub trait WriteBody: Serialize + Clone {
    /// The event id the body names, if any.
    fn event_id(&self) -> Option<EventId>;
    /// Forgets the event id the body names (what a fingerprint covers is the rest).
    fn clear_event_id(&mut self);
}

/// A path's id with the body: the body's event id is the request's.
impl<P: Serialize + Clone, B: WriteBody> WriteBody for (P, B) {
    fn event_id(&self) -> Option<EventId> {
        self.1.event_id()
    }

    fn clear_event_id(&mut self) {
        self.1.clear_event_id();
    }
}

impl Fingerprint {
    /// The fingerprint of an API write on `route`: `request` is the body, or a tuple of
    /// the path's id and the body; its event id is left out.
    pub fn of_write(route: &str, request: &impl WriteBody) -> Self {
        let mut content = request.clone();
        content.clear_event_id();
        // Serializing a request body cannot fail: it holds no map with non-string keys.
        Self::digest(route, &[&serde_json::to_vec(&content).unwrap_or_default()])
    }

    /// The fingerprint of an uploaded store fact: its stream, type, schema version and
    /// data (`serde_json`'s maps are ordered by key, so equal data gives equal bytes).
    pub fn of_upload(event: &UploadEvent) -> Self {
        Self::digest(
            "upload",
            &[
                &event.stream.key(),
                event.event_type.as_bytes(),
                &event.schema_version.to_be_bytes(),
                &serde_json::to_vec(&event.data).unwrap_or_default(),
            ],
        )
    }

    /// A fingerprint as stored (a 16-byte BLOB), or one a writer makes up for requests
    /// that never come from a client (seed data, scheduled jobs, tests).
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The bytes to store.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The rule: SHA-256 over the route, a NUL byte and the content, cut to 16 bytes.
    fn digest(route: &str, content: &[&[u8]]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(route.as_bytes());
        hasher.update([0u8]);
        for part in content {
            hasher.update(part);
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&hasher.finalize()[..16]);
        Self(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{EventMetadata, Origin, StreamId};
    use crate::domain::ids::{ProductId, ReservationId, StoreId};
    use crate::wire::api::{AddStockRequest, ReleaseReservationRequest};
    use serde_json::json;
    use time::macros::datetime;

    const PINNED_DELIVERY_JSON: &str = r#"{"product_id":"01010101-0101-0101-0101-010101010101","store_id":"02020202-0202-0202-0202-020202020202","quantity":3,"expected_version":null,"event_id":null}"#;

    fn delivery(quantity: u32, event_id: Option<EventId>) -> AddStockRequest {
        serde_json::from_value(json!({
            "product_id": ProductId::from_bytes([1; 16]),
            "store_id": StoreId::from_bytes([2; 16]),
            "quantity": quantity,
            "event_id": event_id,
        }))
        .unwrap()
    }

    /// SHA-256 of `text`, cut to 16 bytes: the rule spelt out by hand.
    fn sha16(parts: &[&[u8]]) -> [u8; 16] {
        let mut hasher = Sha256::new();
        parts.iter().for_each(|part| hasher.update(part));
        hasher.finalize()[..16].try_into().unwrap()
    }

    #[test]
    fn a_write_fingerprint_covers_route_and_body_but_not_the_event_id() {
        // Given one delivery sent without an event id, then again naming one.
        let keyed = delivery(3, None);
        let named = delivery(3, Some(EventId::from_bytes([9; 16])));
        // When both are fingerprinted, then they are the same request,
        assert_eq!(
            Fingerprint::of_write("add_stock", &keyed),
            Fingerprint::of_write("add_stock", &named)
        );
        // and another quantity or another route is not.
        assert_ne!(
            Fingerprint::of_write("add_stock", &keyed),
            Fingerprint::of_write("add_stock", &delivery(4, None))
        );
        assert_ne!(
            Fingerprint::of_write("add_stock", &keyed),
            Fingerprint::of_write("reserve", &keyed)
        );
    }

    #[test]
    fn a_write_fingerprint_keeps_the_bytes_the_agent_has_stored() {
        // Given a body without an event id (as the agent fingerprinted it until now),
        let body = delivery(3, None);
        // when fingerprinted, then the digest is route, NUL, the body's JSON.
        let json = serde_json::to_vec(&body).unwrap();
        assert_eq!(
            Fingerprint::of_write("add_stock", &body).as_bytes(),
            &sha16(&[b"add_stock", b"\0", &json])
        );
    }

    #[test]
    fn the_path_id_is_part_of_the_request() {
        // Given the same body released on two reservations,
        let body = ReleaseReservationRequest::default();
        let (a, b) = (ReservationId::from_bytes([1; 16]), ReservationId::from_bytes([2; 16]));
        // then their fingerprints differ, and the body's event id still does not count.
        assert_ne!(
            Fingerprint::of_write("release", &(a, body.clone())),
            Fingerprint::of_write("release", &(b, body.clone()))
        );
        let named = ReleaseReservationRequest {
            event_id: Some(EventId::from_bytes([9; 16])),
            ..body.clone()
        };
        assert_eq!(
            Fingerprint::of_write("release", &(a, body)),
            Fingerprint::of_write("release", &(a, named))
        );
    }

    fn upload(data: serde_json::Value, actor: &str) -> UploadEvent {
        UploadEvent {
            event_id: EventId::from_bytes([1; 16]),
            stream: StreamId::inventory(ProductId::from_bytes([2; 16]), StoreId::from_bytes([3; 16])),
            event_type: "StockAdded".into(),
            schema_version: 1,
            data,
            metadata: EventMetadata {
                origin: Origin::Store(StoreId::from_bytes([3; 16])),
                actor: actor.into(),
                correlation_id: uuid::Uuid::nil(),
                causation_id: None,
                occurred_at: datetime!(2030-01-01 00:00 UTC),
                recorded_at: None,
            },
        }
    }

    #[test]
    fn an_upload_fingerprint_ignores_metadata_but_not_data() {
        // Given one fact, the same fact sent by another actor, and another fact,
        let first = upload(json!({"quantity": 1}), "terminal");
        let retried = upload(json!({"quantity": 1}), "manager");
        let other = upload(json!({"quantity": 2}), "terminal");
        // then the retry is the same fact and the other one is not.
        assert_eq!(Fingerprint::of_upload(&first), Fingerprint::of_upload(&retried));
        assert_ne!(Fingerprint::of_upload(&first), Fingerprint::of_upload(&other));
    }

    #[test]
    fn an_upload_fingerprint_keeps_the_bytes_the_hub_has_stored() {
        // Given a fact, when fingerprinted, then the digest is the hub log's: "upload",
        // NUL, stream key, type, schema version, data.
        let event = upload(json!({"quantity": 1}), "terminal");
        let want = sha16(&[
            b"upload\0",
            &event.stream.key(),
            b"StockAdded",
            &1u16.to_be_bytes(),
            br#"{"quantity":1}"#,
        ]);
        assert_eq!(Fingerprint::of_upload(&event).as_bytes(), &want);
    }

    #[test]
    fn stored_fingerprints_are_pinned() {
        // Given a delivery and a release as a till sends them,
        let body = delivery(3, None);
        let release = (ReservationId::from_bytes([7; 16]), ReleaseReservationRequest::default());
        // then the JSON they are fingerprinted over is exactly what versions before this
        // rule stored a digest of (a serde change here would orphan every stored row),
        assert_eq!(
            String::from_utf8(serde_json::to_vec(&body).unwrap()).unwrap(),
            PINNED_DELIVERY_JSON
        );
        // and the digests are the ones recorded when the rule was written.
        let hex = |f: Fingerprint| f.as_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            String::from_utf8(serde_json::to_vec(&release).unwrap()).unwrap(),
            r#"["07070707-0707-0707-0707-070707070707",{"reason":null,"expected_version":null,"event_id":null}]"#
        );
        assert_eq!(
            hex(Fingerprint::of_write("add_stock", &body)),
            "fe2290c186f040e68219780a8323a885"
        );
        assert_eq!(
            hex(Fingerprint::of_write("release", &release)),
            "1d2b2bf61135be8888fee743a95893da"
        );
    }
}
