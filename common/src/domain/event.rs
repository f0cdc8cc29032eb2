//! The event envelope: what every recorded fact looks like on disk and on the wire.
//!
//! `event_id` is made by whoever first records the fact (the hub for web commands, the
//! store for a till's sale) and never changes; `stream_version` and `position` are
//! assigned by the hub's single writer. `type` + `schema_version` + `data` are the
//! payload; [`EventPayload::from_parts`] is the one place that turns untrusted parts
//! (an agent's upload) into a typed payload with a precise reason when it cannot, and
//! [`EventPayload::decode`] reads what was already recorded.

mod data;

use crate::domain::allocation::{AllocationPolicy, Share};
use crate::domain::ids::{EventId, ProductId, ReservationId, StoreId};
use crate::domain::product::Product;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use time::OffsetDateTime;
use uuid::Uuid;

/// Which stream an event belongs to: the catalog stream of a product (no store), or the
/// inventory stream of a product at one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StreamId {
    /// The product the stream is about.
    pub product_id: ProductId,
    /// The store, or absent for the product's catalog stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_id: Option<StoreId>,
}

impl StreamId {
    /// The catalog stream of a product.
    pub fn catalog(product_id: ProductId) -> Self {
        Self {
            product_id,
            store_id: None,
        }
    }

    /// The inventory stream of a product at a store.
    pub fn inventory(product_id: ProductId, store_id: StoreId) -> Self {
        Self {
            product_id,
            store_id: Some(store_id),
        }
    }

    /// Whether this is a catalog stream.
    pub fn is_catalog(&self) -> bool {
        self.store_id.is_none()
    }

    /// Whether `store` may see this stream's events (sync protocol: a store sees its own
    /// inventory streams and the whole catalog, never another store's stock).
    pub fn visible_to(&self, store: StoreId) -> bool {
        self.store_id.is_none_or(|owner| owner == store)
    }

    /// A 32-byte key (product bytes, then store bytes or zeros) for storage.
    pub fn key(&self) -> [u8; 32] {
        let mut key = [0u8; 32];
        key[..16].copy_from_slice(self.product_id.as_bytes());
        if let Some(store) = self.store_id {
            key[16..].copy_from_slice(store.as_bytes());
        }
        key
    }

    /// Rebuilds a stream id from [`StreamId::key`].
    pub fn from_key(key: &[u8]) -> Option<Self> {
        if key.len() != 32 {
            return None;
        }
        let mut product = [0u8; 16];
        product.copy_from_slice(&key[..16]);
        let mut store = [0u8; 16];
        store.copy_from_slice(&key[16..]);
        let store_id = (store != [0u8; 16]).then(|| StoreId::from_bytes(store));
        Some(Self {
            product_id: ProductId::from_bytes(product),
            store_id,
        })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.store_id {
            Some(store) => write!(f, "inventory-{}-{}", self.product_id, store),
            None => write!(f, "catalog-{}", self.product_id),
        }
    }
}

/// Who first recorded a fact: the hub, or a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Recorded at the hub (web, mobile, back office, or the hub's own rules).
    Hub,
    /// Recorded by a store's edge agent.
    Store(StoreId),
}

impl Serialize for Origin {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Origin::Hub => s.serialize_str("hub"),
            Origin::Store(id) => s.collect_str(id),
        }
    }
}

impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "hub" {
            return Ok(Origin::Hub);
        }
        text.parse::<StoreId>()
            .map(Origin::Store)
            .map_err(|_| serde::de::Error::custom("origin must be \"hub\" or a store id"))
    }
}

impl utoipa::PartialSchema for Origin {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["hub"])),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))),
            )
            .description(Some("\"hub\", or the id of the store that recorded the fact"))
            .into()
    }
}
impl utoipa::ToSchema for Origin {}

/// Where a fact came from and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventMetadata {
    /// Who first recorded the fact.
    pub origin: Origin,
    /// The user, till or token that caused it (1..=128 bytes, no control or format
    /// characters).
    #[schema(min_length = 1, max_length = 128, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub actor: String,
    /// Groups every event of one business operation.
    #[schema(value_type = String, format = Uuid)]
    pub correlation_id: Uuid,
    /// The event or request that directly caused this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Uuid)]
    pub causation_id: Option<Uuid>,
    /// When the fact happened, by the recorder's clock.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: OffsetDateTime,
    /// When the hub committed it (absent until then).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub recorded_at: Option<OffsetDateTime>,
}

/// The longest `actor` accepted in an uploaded event's metadata, in bytes (the actors the
/// hub and the agents make are far shorter: `terminal:<till id of at most 64>`).
pub const MAX_ACTOR_LEN: usize = 128;

impl EventMetadata {
    /// Checks the free-text fields a client supplies (today `actor`: 1..=128 bytes, no
    /// control or format characters), so that nothing unbounded is recorded for good.
    pub fn check_fields(&self) -> Result<(), String> {
        if self.actor.is_empty() || self.actor.len() > MAX_ACTOR_LEN {
            return Err(format!("metadata.actor must be 1..={MAX_ACTOR_LEN} bytes"));
        }
        if self
            .actor
            .chars()
            .any(|c| c.is_control() || crate::domain::product::is_format_char(c))
        {
            return Err("metadata.actor must not contain control or format characters".into());
        }
        Ok(())
    }
}

/// Why a reservation was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    /// The customer or the till gave it up.
    Cancelled,
    /// It passed its expiry without being committed.
    Expired,
}

/// The typed body of an event: `type` and `data` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", content = "data")]
pub enum EventPayload {
    /// A product entered the catalog.
    ProductRegistered(Product),
    /// A product's SKU, name or price changed (the full new product).
    ProductUpdated(Product),
    /// Units arrived (a delivery).
    StockAdded {
        /// Units added.
        quantity: u32,
    },
    /// Units were put on hold.
    StockReserved {
        /// The hold's id.
        reservation_id: ReservationId,
        /// Units held.
        quantity: u32,
        /// When the hold lapses unless committed.
        #[serde(with = "time::serde::rfc3339")]
        #[schema(value_type = String, format = DateTime)]
        expires_at: OffsetDateTime,
    },
    /// A hold was given back.
    StockReleased {
        /// The hold's id.
        reservation_id: ReservationId,
        /// Units given back.
        quantity: u32,
        /// Why.
        reason: ReleaseReason,
    },
    /// A hold became a sale: the units left the shop.
    ReservationCommitted {
        /// The hold's id.
        reservation_id: ReservationId,
        /// Units sold.
        quantity: u32,
    },
    /// A count correction (signed).
    StockAdjusted {
        /// Units added (positive) or removed (negative).
        delta: i64,
        /// Why the count changed.
        reason: String,
    },
    /// The hub recorded a store's fact that left the stream oversold.
    OversellDetected {
        /// The event that broke the invariant.
        caused_by: EventId,
        /// On hand after that event.
        on_hand: i64,
        /// Reserved after that event.
        reserved: i64,
        /// Available (negative) after that event.
        available: i64,
    },
    /// The hub set how its share of the stream is kept (`none` dissolves the allocation).
    AllocationSet {
        /// The policy.
        policy: AllocationPolicy,
    },
    /// A share's owner gave units of it to the other side (the hub to the store, or the
    /// store to the hub).
    AllocationTransferred {
        /// Who received them.
        to: Share,
        /// Units moved.
        quantity: u32,
    },
}

/// Every event type name, in declaration order.
pub const EVENT_TYPES: &[&str] = &[
    "ProductRegistered",
    "ProductUpdated",
    "StockAdded",
    "StockReserved",
    "StockReleased",
    "ReservationCommitted",
    "StockAdjusted",
    "OversellDetected",
    "AllocationSet",
    "AllocationTransferred",
];

/// The schema version every event type is written with today.
pub const CURRENT_SCHEMA_VERSION: u16 = 1;

/// Why untrusted parts do not make an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not one of [`EVENT_TYPES`].
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// A schema version this build does not read.
    #[error("unsupported schema version {version} for {event_type}")]
    UnsupportedSchemaVersion {
        /// The event type.
        event_type: String,
        /// The version given.
        version: u16,
    },
    /// `data` does not have the type's shape.
    #[error("malformed data for {event_type}: {detail}")]
    Malformed {
        /// The event type.
        event_type: String,
        /// What the parser said.
        detail: String,
    },
    /// `data` has the shape but a value no reader of the log could handle.
    #[error("{event_type}: {source}")]
    OutOfRange {
        /// The event type.
        event_type: String,
        /// Which value.
        #[source]
        source: crate::domain::timestamp::TimeOutOfRange,
    },
}

impl PayloadError {
    /// The stable reason code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            PayloadError::UnknownType(_) => "unknown_event_type",
            PayloadError::UnsupportedSchemaVersion { .. } => "unsupported_schema_version",
            PayloadError::Malformed { .. } => "malformed_event",
            PayloadError::OutOfRange { .. } => "out_of_range",
        }
    }
}

impl EventPayload {
    /// The `type` name on the wire.
    pub fn event_type(&self) -> &'static str {
        match self {
            EventPayload::ProductRegistered(_) => "ProductRegistered",
            EventPayload::ProductUpdated(_) => "ProductUpdated",
            EventPayload::StockAdded { .. } => "StockAdded",
            EventPayload::StockReserved { .. } => "StockReserved",
            EventPayload::StockReleased { .. } => "StockReleased",
            EventPayload::ReservationCommitted { .. } => "ReservationCommitted",
            EventPayload::StockAdjusted { .. } => "StockAdjusted",
            EventPayload::OversellDetected { .. } => "OversellDetected",
            EventPayload::AllocationSet { .. } => "AllocationSet",
            EventPayload::AllocationTransferred { .. } => "AllocationTransferred",
        }
    }

    /// Whether this event belongs on a catalog stream (else an inventory stream).
    pub fn is_catalog_event(&self) -> bool {
        matches!(
            self,
            EventPayload::ProductRegistered(_) | EventPayload::ProductUpdated(_)
        )
    }

    /// The `data` member as JSON (as text: [`EventPayload::data_json`]).
    pub fn data(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut map)) => map.remove("data").unwrap_or(serde_json::Value::Null),
            _ => serde_json::Value::Null,
        }
    }

    /// Builds a typed payload from untrusted `type`, `schema_version` and `data` (an
    /// upload): [`EventPayload::decode`], then every time checked and put in UTC
    /// ([`crate::domain::timestamp`]), so that nothing a reader of the log cannot handle is
    /// recorded.
    pub fn from_parts(event_type: &str, schema_version: u16, data: serde_json::Value) -> Result<Self, PayloadError> {
        Self::decode(event_type, schema_version, data)?
            .in_utc()
            .map_err(|source| PayloadError::OutOfRange {
                event_type: event_type.to_owned(),
                source,
            })
    }

    /// Reads a payload's shape from its parts, as recorded: the log's readers use this,
    /// so that an event recorded before a rule existed can still be read (and, if it
    /// cannot be applied, skipped as poison) instead of making the log unreadable.
    pub fn decode(event_type: &str, schema_version: u16, data: serde_json::Value) -> Result<Self, PayloadError> {
        if !EVENT_TYPES.contains(&event_type) {
            return Err(PayloadError::UnknownType(event_type.chars().take(64).collect()));
        }
        if schema_version != CURRENT_SCHEMA_VERSION {
            return Err(PayloadError::UnsupportedSchemaVersion {
                event_type: event_type.to_owned(),
                version: schema_version,
            });
        }
        let tagged = serde_json::json!({ "type": event_type, "data": data });
        serde_json::from_value(tagged).map_err(|e| PayloadError::Malformed {
            event_type: event_type.to_owned(),
            detail: e.to_string(),
        })
    }

    /// The same payload with every time in UTC, or why a time cannot be recorded
    /// (see [`crate::domain::timestamp`]).
    pub fn in_utc(self) -> Result<Self, crate::domain::timestamp::TimeOutOfRange> {
        Ok(match self {
            EventPayload::StockReserved {
                reservation_id,
                quantity,
                expires_at,
            } => EventPayload::StockReserved {
                reservation_id,
                quantity,
                expires_at: crate::domain::timestamp::to_utc("expires_at", expires_at)?,
            },
            other @ (EventPayload::ProductRegistered(_)
            | EventPayload::ProductUpdated(_)
            | EventPayload::StockAdded { .. }
            | EventPayload::StockReleased { .. }
            | EventPayload::ReservationCommitted { .. }
            | EventPayload::StockAdjusted { .. }
            | EventPayload::OversellDetected { .. }
            | EventPayload::AllocationSet { .. }
            | EventPayload::AllocationTransferred { .. }) => other,
        })
    }
}

/// A recorded event, as stored by the hub and sent to agents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventEnvelope {
    /// Identity of the fact.
    pub event_id: EventId,
    /// The stream it belongs to.
    pub stream: StreamId,
    /// 1-based version within the stream, assigned by the hub.
    pub stream_version: u64,
    /// The hub's gap-free global position (the sync cursor).
    pub position: u64,
    /// Version of the payload's schema.
    pub schema_version: u16,
    /// The payload: `type` and `data`.
    #[serde(flatten)]
    pub payload: EventPayload,
    /// Provenance.
    pub metadata: EventMetadata,
}

/// The optimistic-concurrency condition of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpectedVersion {
    /// No condition.
    #[default]
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must exist.
    Exists,
    /// The stream must be exactly at this version.
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `current` (0 = no stream) satisfies this condition.
    pub fn admits(self, current: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::Exists => current > 0,
            ExpectedVersion::Exact(v) => current == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no_stream"),
            ExpectedVersion::Exists => f.write_str("exists"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

impl std::str::FromStr for ExpectedVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().trim_matches('"') {
            "any" => Ok(ExpectedVersion::Any),
            "no_stream" => Ok(ExpectedVersion::NoStream),
            "exists" => Ok(ExpectedVersion::Exists),
            other => other
                .parse::<u64>()
                .map(ExpectedVersion::Exact)
                .map_err(|_| format!("expected version must be any, no_stream, exists or a number, got {other:?}")),
        }
    }
}

impl Serialize for ExpectedVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ExpectedVersion::Exact(v) => s.serialize_u64(*v),
            other => s.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for ExpectedVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(v) => Ok(ExpectedVersion::Exact(v)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl utoipa::PartialSchema for ExpectedVersion {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["any", "no_stream", "exists"])),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                    .minimum(Some(0)),
            )
            .description(Some(
                "\"any\", \"no_stream\", \"exists\", or the exact current stream version",
            ))
            .into()
    }
}
impl utoipa::ToSchema for ExpectedVersion {}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn envelope() -> EventEnvelope {
        EventEnvelope {
            event_id: EventId::new_v7(),
            stream: StreamId::inventory(ProductId::new_v7(), StoreId::new_v7()),
            stream_version: 3,
            position: 17,
            schema_version: 1,
            payload: EventPayload::StockReserved {
                reservation_id: ReservationId::new_v7(),
                quantity: 2,
                expires_at: datetime!(2026-11-25 10:00 UTC),
            },
            metadata: EventMetadata {
                origin: Origin::Store(StoreId::new_v7()),
                actor: "till-1".into(),
                correlation_id: Uuid::now_v7(),
                causation_id: None,
                occurred_at: datetime!(2026-11-25 09:45 UTC),
                recorded_at: Some(datetime!(2026-11-25 09:46 UTC)),
            },
        }
    }

    #[test]
    fn a_store_sees_its_own_streams_and_the_catalog_only() {
        let (mine, theirs) = (StoreId::from_bytes([1; 16]), StoreId::from_bytes([2; 16]));
        let product = ProductId::from_bytes([3; 16]);
        assert!(StreamId::inventory(product, mine).visible_to(mine));
        assert!(StreamId::catalog(product).visible_to(mine));
        assert!(!StreamId::inventory(product, theirs).visible_to(mine));
    }

    #[test]
    fn envelope_has_type_and_data_at_top_level_and_round_trips() {
        let e = envelope();
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["type"], "StockReserved");
        assert_eq!(json["data"]["quantity"], 2);
        assert_eq!(json["stream_version"], 3);
        let back: EventEnvelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn from_parts_gives_precise_reasons() {
        assert_eq!(
            EventPayload::from_parts("Teleported", 1, serde_json::json!({}))
                .unwrap_err()
                .code(),
            "unknown_event_type"
        );
        assert_eq!(
            EventPayload::from_parts("StockAdded", 9, serde_json::json!({"quantity": 1}))
                .unwrap_err()
                .code(),
            "unsupported_schema_version"
        );
        assert_eq!(
            EventPayload::from_parts("StockAdded", 1, serde_json::json!({"quantity": "many"}))
                .unwrap_err()
                .code(),
            "malformed_event"
        );
        let year_10000 = serde_json::json!({
            "reservation_id": uuid::Uuid::nil(), "quantity": 1, "expires_at": "9999-12-31T23:59:59-23:59"
        });
        assert_eq!(
            EventPayload::from_parts("StockReserved", 1, year_10000.clone())
                .unwrap_err()
                .code(),
            "out_of_range",
            "an upload may not record a time no reader can convert to UTC"
        );
        assert!(
            EventPayload::decode("StockReserved", 1, year_10000).is_ok(),
            "but a recorded one can still be read"
        );
        let ok = EventPayload::from_parts("StockAdded", 1, serde_json::json!({"quantity": 4})).unwrap();
        assert_eq!(ok, EventPayload::StockAdded { quantity: 4 });
        assert_eq!(ok.data(), serde_json::json!({"quantity": 4}));
    }

    #[test]
    fn stream_keys_round_trip() {
        let inv = StreamId::inventory(ProductId::new_v7(), StoreId::new_v7());
        let cat = StreamId::catalog(ProductId::new_v7());
        assert_eq!(StreamId::from_key(&inv.key()), Some(inv));
        assert_eq!(StreamId::from_key(&cat.key()), Some(cat));
    }

    #[test]
    fn expected_version_parses_every_form() {
        for (text, want) in [
            ("\"any\"", ExpectedVersion::Any),
            ("\"no_stream\"", ExpectedVersion::NoStream),
            ("\"exists\"", ExpectedVersion::Exists),
            ("4", ExpectedVersion::Exact(4)),
        ] {
            assert_eq!(serde_json::from_str::<ExpectedVersion>(text).unwrap(), want);
        }
        assert!(serde_json::from_str::<ExpectedVersion>("\"sometimes\"").is_err());
        assert_eq!("\"5\"".parse::<ExpectedVersion>(), Ok(ExpectedVersion::Exact(5)));
        assert!(ExpectedVersion::NoStream.admits(0) && !ExpectedVersion::NoStream.admits(1));
        assert!(ExpectedVersion::Exists.admits(2) && !ExpectedVersion::Exists.admits(0));
    }
}
