//! Typed identifiers. Every id is a UUID; new ones are version 7 (time-ordered), so the
//! hub's `event_id` index grows at its right edge instead of dirtying random pages.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Why text or JSON is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Not a UUID.
    #[error("not a UUID: {0}")]
    Malformed(#[from] uuid::Error),
    /// The nil UUID, which this kind of id may not be.
    #[error("the nil UUID (all zeros) is not a valid {0}")]
    Nil(&'static str),
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, nil allowed: $nil_allowed:expr, called: $what:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
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

            /// The id `uuid` names, if this kind of id may be it.
            pub fn checked(uuid: Uuid) -> Result<Self, IdError> {
                if uuid.is_nil() && !$nil_allowed {
                    return Err(IdError::Nil($what));
                }
                Ok(Self(uuid))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::checked(Uuid::parse_str(s)?)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Self::checked(Uuid::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }
    };
}

uuid_id!(
    /// A product in the catalog.
    ProductId, nil allowed: true, called: "product id"
);
uuid_id!(
    /// A store (one edge agent) enrolled at the hub. Never the nil UUID: an inventory
    /// stream's key with the nil store would be its product's catalog stream key.
    StoreId, nil allowed: false, called: "store id"
);
uuid_id!(
    /// The identity of one recorded fact, made by whoever first records it.
    EventId, nil allowed: true, called: "event id"
);
uuid_id!(
    /// One hold on stock, named by the client that placed it.
    ReservationId, nil allowed: true, called: "reservation id"
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
    fn the_nil_uuid_is_never_a_store_id() {
        let nil = "00000000-0000-0000-0000-000000000000";
        assert_eq!(nil.parse::<StoreId>(), Err(IdError::Nil("store id")));
        assert!(serde_json::from_str::<StoreId>(&format!("\"{nil}\"")).is_err());
        assert!(
            serde_json::from_value::<crate::StreamId>(serde_json::json!({
                "product_id": "01939d01-0000-7000-8000-000000000001", "store_id": nil
            }))
            .is_err(),
            "a store stream with the nil store would be the catalog stream"
        );
        let id = StoreId::new_v7();
        assert_eq!(id.to_string().parse::<StoreId>(), Ok(id));
        assert_eq!(serde_json::from_value::<StoreId>(serde_json::json!(id)).unwrap(), id);
        assert!(nil.parse::<ProductId>().is_ok(), "only store ids refuse it");
    }

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
