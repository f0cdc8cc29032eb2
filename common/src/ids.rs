//! Typed identifiers. Every id is a UUID; new ones are version 7 (time-ordered), so the
//! hub's `event_id` index grows at its right edge instead of dirtying random pages.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered (UUIDv7) id.
            pub fn new_v7() -> Self {
                Self(Uuid::now_v7())
            }

            /// The 16 raw bytes, as stored in SQLite blobs.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }

            /// Rebuilds an id from its 16 raw bytes.
            pub fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(Uuid::from_bytes(bytes))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// A product in the catalog.
    ProductId
);
uuid_id!(
    /// A store (one edge agent) enrolled at the hub.
    StoreId
);
uuid_id!(
    /// The identity of one recorded fact, made by whoever first records it.
    EventId
);
uuid_id!(
    /// One hold on stock, named by the client that placed it.
    ReservationId
);

impl EventId {
    /// A fixed id for an event of the hub's own making (the demo seed): the same name
    /// always gives the same id. Anyone who knows the name can compute it, so never use
    /// it for a key a client chose: [`IdKey::event_id`] is for those.
    pub fn from_name(scope: &str, name: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(scope.as_bytes());
        hasher.update([0u8]);
        hasher.update(name.as_bytes());
        Self::from_digest(&hasher.finalize())
    }

    /// A UUIDv8 from the first 16 bytes of a digest.
    fn from_digest(digest: &[u8]) -> Self {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }
}

/// The secret with which a side (the hub, or one store's agent) turns a client's
/// `Idempotency-Key` into an event id.
///
/// The same (scope, key) always gives the same id, so a retried request dedupes on the
/// event log's `event_id`. Keyed (HMAC-SHA256) because the log dedupes by event id across
/// every party: with a plain hash, anyone who could guess a web shop's or another store's
/// scope and key could compute their future event ids, record something else under them
/// first, and so have the real write refused. Without the key nobody can. Each side keeps
/// its key in its own database, next to the records it protects, so a backup restores
/// both together.
#[derive(Clone, PartialEq, Eq)]
pub struct IdKey([u8; 32]);

impl IdKey {
    /// A key from its 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The secret bytes, for storing the key.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The event id for idempotency key `key` sent by the caller `scope`.
    pub fn event_id(&self, scope: &str, key: &str) -> EventId {
        use hmac::digest::KeyInit;
        use hmac::{Hmac, Mac};
        // HMAC pads a key shorter than the hash's block (64 bytes) with zeros; doing it
        // here takes the infallible constructor.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.0);
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
        mac.update(scope.as_bytes());
        mac.update(&[0u8]);
        mac.update(key.as_bytes());
        EventId::from_digest(&mac.finalize().into_bytes())
    }
}

impl fmt::Debug for IdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_ids_are_stable_scoped_and_keyed() {
        let key = IdKey::from_bytes([7; 32]);
        let a = key.event_id("till-1", "sale-42");
        assert_eq!(a, key.event_id("till-1", "sale-42"));
        assert_ne!(a, key.event_id("till-2", "sale-42"));
        assert_ne!(a, key.event_id("till-1", "sale-43"));
        assert_ne!(
            a,
            key.event_id("till-1\0sale", "42"),
            "scope and key cannot be shifted into each other"
        );
        assert_eq!(a.0.get_version_num(), 8);
        // Whoever lacks the key cannot compute the id, not even knowing scope and key.
        assert_ne!(a, IdKey::from_bytes([8; 32]).event_id("till-1", "sale-42"));
        assert_ne!(a, EventId::from_name("till-1", "sale-42"));
        assert_eq!(format!("{key:?}"), "IdKey(<redacted>)");
        // The padded-block constructor is HMAC with the 32-byte key itself.
        use hmac::{Hmac, Mac};
        let mut reference = <Hmac<Sha256> as Mac>::new_from_slice(&[7; 32]).unwrap();
        reference.update(b"till-1\0sale-42");
        assert_eq!(a, EventId::from_digest(&reference.finalize().into_bytes()));
    }

    #[test]
    fn named_ids_are_stable() {
        assert_eq!(
            EventId::from_name("demo-seed", "1"),
            EventId::from_name("demo-seed", "1")
        );
        assert_ne!(
            EventId::from_name("demo-seed", "1"),
            EventId::from_name("demo-seed", "2")
        );
    }

    #[test]
    fn ids_round_trip_through_text_and_bytes() {
        let id = ProductId::new_v7();
        assert_eq!(id, id.to_string().parse().unwrap());
        assert_eq!(id, ProductId::from_bytes(*id.as_bytes()));
    }
}
