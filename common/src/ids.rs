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
    /// A deterministic id for a client's idempotency key: the same (scope, key) always
    /// gives the same id, so a retried request dedupes on the event store's `event_id`.
    /// The id is a UUIDv8 built from SHA-256 of the scope and the key.
    pub fn from_idempotency_key(scope: &str, key: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(scope.as_bytes());
        hasher.update([0u8]);
        hasher.update(key.as_bytes());
        let digest = hasher.finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_ids_are_stable_and_scoped() {
        let a = EventId::from_idempotency_key("till-1", "sale-42");
        assert_eq!(a, EventId::from_idempotency_key("till-1", "sale-42"));
        assert_ne!(a, EventId::from_idempotency_key("till-2", "sale-42"));
        assert_ne!(a, EventId::from_idempotency_key("till-1", "sale-43"));
        assert_eq!(a.0.get_version_num(), 8);
    }

    #[test]
    fn ids_round_trip_through_text_and_bytes() {
        let id = ProductId::new_v7();
        assert_eq!(id, id.to_string().parse().unwrap());
        assert_eq!(id, ProductId::from_bytes(*id.as_bytes()));
    }
}
