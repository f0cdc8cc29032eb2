//! The sync protocol between a store's edge agent and the hub: the shapes of upload, pull,
//! push (Server-Sent Events), snapshot, heartbeat and fleet status. Both sides build and
//! parse exactly these structs; `docs/sync-protocol.md` explains the rules around them.

use crate::domain::event::Origin;
use crate::domain::event::{EventEnvelope, EventMetadata, StreamId};
use crate::domain::ids::{EventId, ProductId, ReservationId, StoreId};
use crate::wire::api::{ProductView, StockLevel, StoreInfo};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The sync protocol version this build speaks, `MAJOR.MINOR`. Peers must share MAJOR.
pub const PROTOCOL_VERSION: &str = "1.0";
/// The header that carries [`PROTOCOL_VERSION`] on every sync request and response.
pub const PROTOCOL_HEADER: &str = "x-shelfsync-protocol";
/// The problem `code` of a pull or push stream whose cursor is past the hub's head (a hub
/// restored from an older backup); the answer is `409` with the head in [`HEAD_HEADER`].
pub const CURSOR_AHEAD: &str = "cursor_ahead";
/// The header of a [`CURSOR_AHEAD`] answer that carries the hub's head.
pub const HEAD_HEADER: &str = "x-shelfsync-head";
/// The most events one upload may carry.
pub const MAX_UPLOAD_BATCH: usize = 500;
/// The most events one pull may return (a catch-up reads pages this large).
pub const MAX_PULL_LIMIT: usize = 10_000;
/// The most events one pull may return from a hub older than [`MAX_PULL_LIMIT`] (it
/// answers a larger `limit` with 400 `invalid_query`); the agent falls back to it.
pub const LEGACY_PULL_LIMIT: usize = 1000;

/// The SSE event name of a recorded event (`data` is an [`EventEnvelope`]).
pub const SSE_EVENT: &str = "event";
/// The SSE event name sent once replay has reached the head (`data` is [`CaughtUp`]).
pub const SSE_CAUGHT_UP: &str = "caught-up";
/// The SSE event name that advances the cursor past events this store does not see
/// (`data` is [`Progress`]).
pub const SSE_PROGRESS: &str = "progress";

/// The largest position, cursor or count a peer may send. The log keeps positions as
/// SQLite integers (signed 64-bit) and the OpenAPI documents them as `int64`; a larger
/// number would wrap into a negative one (and read the log from its start), so it is
/// refused where it enters.
pub const MAX_POSITION: u64 = i64::MAX as u64;

/// Parses a position sent as text (a `Last-Event-ID`): digits only, at most
/// [`MAX_POSITION`].
pub fn parse_position(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|position| *position <= MAX_POSITION)
        .ok_or_else(|| format!("must be a position: a whole number from 0 to {MAX_POSITION}"))
}

/// Serde for a position, cursor or count a peer sends: a number in 0..=[`MAX_POSITION`].
/// Use as `#[serde(deserialize_with = "bounded::position")]` (or `bounded::optional_position`).
pub mod bounded {
    use super::MAX_POSITION;
    use serde::{Deserialize, Deserializer};

    /// A number in 0..=[`MAX_POSITION`].
    pub fn position<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let value = u64::deserialize(deserializer)?;
        if value > MAX_POSITION {
            return Err(serde::de::Error::custom(format_args!(
                "{value} is larger than the largest position, {MAX_POSITION}"
            )));
        }
        Ok(value)
    }

    /// An optional number in 0..=[`MAX_POSITION`].
    pub fn optional_position<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        struct Bounded(#[serde(deserialize_with = "position")] u64);
        Ok(Option::<Bounded>::deserialize(deserializer)?.map(|Bounded(value)| value))
    }
}

/// The MAJOR part of a version written exactly `MAJOR.MINOR` (two runs of ASCII digits
/// joined by one dot: not `1`, `1.0.0`, `+1.0` or `1.x`), if it is one.
pub fn protocol_major(version: &str) -> Option<u32> {
    let (major, minor) = version.split_once('.')?;
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    if !(digits(major) && digits(minor)) {
        return None;
    }
    minor.parse::<u32>().ok()?;
    major.parse().ok()
}

/// Whether a peer announcing `version` speaks our protocol.
pub fn protocol_compatible(version: &str) -> bool {
    protocol_major(version).is_some() && protocol_major(version) == protocol_major(PROTOCOL_VERSION)
}

/// One outbox event as the agent uploads it. `type`, `schema_version` and `data` stay
/// untyped in Rust so that the hub can reject an event it cannot read with a precise
/// reason instead of failing the whole batch; the OpenAPI document types them (a `oneOf`
/// per event type, see [`UploadEvent::schema`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadEvent {
    /// Made by the store when the fact was recorded.
    pub event_id: EventId,
    /// Must be an inventory stream of the uploading store.
    pub stream: StreamId,
    /// Event type name.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Schema version of `data`.
    pub schema_version: u16,
    /// The payload.
    pub data: serde_json::Value,
    /// Provenance; `origin` must be the uploading store.
    pub metadata: EventMetadata,
}

/// The document's `UploadEvent`: the envelope's members, and `type` with `data` as in
/// [`EventPayload`] (a `oneOf` per event type), so that tools can make and check uploads.
impl utoipa::PartialSchema for UploadEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, Type};
        use utoipa::openapi::Ref;
        let envelope = ObjectBuilder::new()
            .property("event_id", Ref::from_schema_name("EventId"))
            .required("event_id")
            .property("stream", Ref::from_schema_name("StreamId"))
            .required("stream")
            .property(
                "schema_version",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .enum_values(Some([crate::domain::event::CURRENT_SCHEMA_VERSION]))
                    .description(Some("schema version of `data` (this hub reads version 1)")),
            )
            .required("schema_version")
            .property("metadata", Ref::from_schema_name("EventMetadata"))
            .required("metadata");
        AllOfBuilder::new()
            .item(envelope)
            .item(Ref::from_schema_name("EventPayload"))
            .description(Some(
                "An outbox event: its id, stream and provenance (origin: the uploading store), and `type` with its `data`",
            ))
            .into()
    }
}

impl utoipa::ToSchema for UploadEvent {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        use crate::domain::event::EventPayload;
        use crate::domain::ids::EventId;
        use utoipa::PartialSchema;
        for (name, schema) in [
            ("EventId", EventId::schema()),
            ("StreamId", StreamId::schema()),
            ("EventMetadata", EventMetadata::schema()),
            ("EventPayload", EventPayload::schema()),
        ] {
            schemas.push((name.to_owned(), schema));
        }
        <StreamId as utoipa::ToSchema>::schemas(schemas);
        <EventMetadata as utoipa::ToSchema>::schemas(schemas);
        <EventPayload as utoipa::ToSchema>::schemas(schemas);
    }
}

/// `POST /v1/sync/upload`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    /// Outbox events in the order the store recorded them (at most 500).
    pub events: Vec<UploadEvent>,
}

/// What happened to one uploaded event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum UploadOutcome {
    /// Recorded now.
    Appended {
        /// Its global position.
        position: u64,
        /// Its version in the stream.
        stream_version: u64,
    },
    /// Recorded before (a retried batch): nothing new was written.
    Duplicate {
        /// The original position.
        position: u64,
        /// The original stream version.
        stream_version: u64,
    },
    /// Not recorded; the agent quarantines it and goes on with the next one.
    Rejected {
        /// Stable reason code (see `docs/sync-protocol.md`).
        reason: String,
        /// For people.
        detail: String,
    },
}

/// One event's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadResult {
    /// The uploaded event.
    pub event_id: EventId,
    /// What happened.
    #[serde(flatten)]
    pub outcome: UploadOutcome,
}

/// The answer to an upload: one result per event, in the same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadResponse {
    /// Per-event outcomes.
    pub results: Vec<UploadResult>,
    /// The hub's head after the upload.
    pub head: u64,
}

/// `POST /v1/sync/allocations/request`: a store, online, asks the hub for more units of a
/// stream's shared stock (the hub gives from its own share).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    /// Product (the stream is this product at the asking store).
    pub product_id: ProductId,
    /// Units wanted.
    pub quantity: crate::domain::quantity::StockQuantity,
    /// Makes a retried request idempotent: the same id is answered with the first grant
    /// (the id of the hub's `AllocationTransferred`).
    #[serde(default)]
    pub event_id: Option<EventId>,
}

impl crate::wire::fingerprint::WriteBody for ShareRequest {
    fn event_id(&self) -> Option<EventId> {
        self.event_id
    }

    fn clear_event_id(&mut self) {
        self.event_id = None;
    }
}

/// The answer to a [`ShareRequest`], in the same round trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShareGrant {
    /// Units moved to the store's share (0..=asked; 0 when the hub's share is empty).
    pub granted: i64,
    /// The position of the `AllocationTransferred` event (absent when nothing moved): the
    /// agent has the units once its cursor reaches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// The stream's shares after the grant.
    pub allocation: crate::wire::api::AllocationView,
}

/// `GET /v1/sync/events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PullResponse {
    /// Events after the cursor that this store may see, in position order.
    pub events: Vec<EventEnvelope>,
    /// Pass as `after` next time (it may pass events this store does not see).
    pub next_cursor: u64,
    /// The hub's head: `next_cursor == head` means caught up.
    pub head: u64,
}

/// `data` of the SSE `caught-up` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CaughtUp {
    /// The head when replay ended.
    pub head: u64,
}

/// `data` of the SSE `progress` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    /// Everything up to here has been sent (or is not visible to this store).
    pub position: u64,
}

/// An open reservation in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SnapshotReservation {
    /// The hold.
    pub reservation_id: ReservationId,
    /// Product.
    pub product_id: ProductId,
    /// Units held.
    pub quantity: u32,
    /// When it lapses.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    /// Who made it (and so must expire it).
    pub origin: Origin,
    /// Taken from the hub's share of an allocation (released, it goes back there).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hub_share: bool,
}

/// `GET /v1/sync/snapshot`: a store's state as of one position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SnapshotResponse {
    /// The store.
    pub store_id: StoreId,
    /// Everything below reflects exactly the events up to this position: follow from here.
    pub position: u64,
    /// Stock rows of the store.
    pub stock: Vec<StockLevel>,
    /// Open reservations of the store.
    pub reservations: Vec<SnapshotReservation>,
    /// The whole catalog.
    pub catalog: Vec<ProductView>,
}

/// `POST /v1/sync/heartbeat`: what the agent reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The agent's version (1..=64 visible ASCII characters).
    #[schema(min_length = 1, max_length = 64, pattern = "^[!-~]+$")]
    pub agent_version: String,
    /// The last position the agent has applied.
    #[serde(deserialize_with = "bounded::position")]
    #[schema(maximum = 9_223_372_036_854_775_807_i64)]
    pub cursor: u64,
    /// Events waiting to be uploaded.
    #[serde(deserialize_with = "bounded::position")]
    #[schema(maximum = 9_223_372_036_854_775_807_i64)]
    pub outbox_depth: u64,
    /// Age of the oldest of them, in seconds.
    #[serde(default, deserialize_with = "bounded::optional_position")]
    #[schema(maximum = 9_223_372_036_854_775_807_i64)]
    pub oldest_pending_age_secs: Option<u64>,
    /// The agent's hub-link breaker: closed, open or half_open.
    #[schema(pattern = "^(closed|open|half_open)$")]
    pub breaker_state: String,
    /// Events the hub rejected, held for an operator.
    #[serde(deserialize_with = "bounded::position")]
    #[schema(maximum = 9_223_372_036_854_775_807_i64)]
    pub quarantined: u64,
    /// The agent's last re-sync (absent when it never had one). A hub older than this field
    /// refuses it (`422 invalid_body`); the agent then stops sending it to that hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resynced: Option<Resynced>,
}

/// The last time an agent re-synced because the hub's log no longer held what the store had
/// seen (the hub was restored from an older backup), or because an operator ran
/// `shelfsync-edge resync`. Shown in the agent's status and, through its heartbeat, in the
/// hub's fleet view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resynced {
    /// When the agent took the new snapshot.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// The store's own events the hub no longer had, sent again (appended anew).
    #[serde(deserialize_with = "bounded::position")]
    #[schema(maximum = 9_223_372_036_854_775_807_i64)]
    pub reuploaded: u64,
    /// The position of the snapshot the store re-seeded its confirmed state from.
    #[serde(deserialize_with = "bounded::position")]
    #[schema(maximum = 9_223_372_036_854_775_807_i64)]
    pub position: u64,
    /// Why: `hub_restored` (the agent noticed) or `operator` (`shelfsync-edge resync`).
    #[schema(pattern = "^(hub_restored|operator)$")]
    pub reason: String,
}

/// The longest `agent_version` a heartbeat may carry.
pub const MAX_AGENT_VERSION_LEN: usize = 64;

impl Heartbeat {
    /// Checks the free-text fields (the hub keeps and shows them): `agent_version` 1..=64
    /// visible ASCII characters, `breaker_state` one of `closed`, `open`, `half_open`.
    pub fn check_fields(&self) -> Result<(), String> {
        let version = &self.agent_version;
        if version.is_empty() || version.len() > MAX_AGENT_VERSION_LEN || !version.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(format!(
                "agent_version must be 1..={MAX_AGENT_VERSION_LEN} visible ASCII characters"
            ));
        }
        if !matches!(self.breaker_state.as_str(), "closed" | "open" | "half_open") {
            return Err("breaker_state must be closed, open or half_open".into());
        }
        if let Some(resynced) = &self.resynced {
            if !matches!(resynced.reason.as_str(), "hub_restored" | "operator") {
                return Err("resynced.reason must be hub_restored or operator".into());
            }
        }
        Ok(())
    }
}

/// The hub's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeartbeatAck {
    /// The hub's head.
    pub head: u64,
}

/// One store in the fleet view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FleetStore {
    /// The store.
    #[serde(flatten)]
    pub store: StoreInfo,
    /// Last request from its agent (any sync route), if any since the hub started.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen: Option<OffsetDateTime>,
    /// Whether a push stream to it is open now.
    pub push_connected: bool,
    /// The last heartbeat, if any since the hub started.
    pub heartbeat: Option<Heartbeat>,
    /// head - reported cursor.
    pub cursor_lag: Option<u64>,
    /// Seconds since the heartbeat that reported that cursor (the lag may have shrunk
    /// since: agents send one every `sync.heartbeat_interval_secs`).
    pub cursor_lag_age_secs: Option<u64>,
    /// `OversellDetected` events on its streams.
    pub oversells: u64,
    /// Uploaded events the hub rejected.
    pub rejected_uploads: u64,
    /// Its streams with an allocation, and both shares summed over them (absent when it
    /// has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocations: Option<FleetAllocations>,
}

/// A store's allocations in the fleet view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FleetAllocations {
    /// Streams (products) with an allocation.
    pub streams: u64,
    /// Units channels may still reserve at the hub, over those streams.
    pub hub_share: i64,
    /// Units the store's tills may sell without the hub, over those streams.
    pub store_share: i64,
}

/// `GET /v1/admin/fleet`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FleetResponse {
    /// The hub's head.
    pub head: u64,
    /// Every enrolled store.
    pub stores: Vec<FleetStore>,
}

/// `POST /v1/admin/stores`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollStoreRequest {
    /// Display name (1..=64 bytes: letters, digits, spaces, `-`, `_`, `.`; not blank).
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// The store's id (a new one is made when absent).
    #[serde(default)]
    pub id: Option<StoreId>,
    /// Enroll even when another store has this name (else `409 store_name_taken`).
    #[serde(default)]
    pub allow_duplicate_name: bool,
}

/// A store and its token, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrolledStore {
    /// The store.
    pub store: StoreInfo,
    /// The store token's secret: configure the agent with it; it is not shown again.
    #[schema(value_type = String)]
    pub token: crate::wire::secret::Secret,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_past_int64_are_refused_not_wrapped() {
        assert_eq!(parse_position("9223372036854775807"), Ok(MAX_POSITION));
        assert!(parse_position("9223372036854775808").is_err());
        assert!(parse_position("-1").is_err());
        assert!(parse_position("1e3").is_err());
        let heartbeat = |cursor: &str| {
            serde_json::from_str::<Heartbeat>(&format!(
                r#"{{"agent_version":"1","cursor":{cursor},"outbox_depth":0,"breaker_state":"closed","quarantined":0}}"#
            ))
        };
        assert_eq!(heartbeat("9223372036854775807").unwrap().cursor, MAX_POSITION);
        assert!(heartbeat("9223372036854775808").is_err());
        assert!(heartbeat("18446744073709551615").is_err());
        #[derive(Deserialize)]
        struct Query {
            #[serde(default, deserialize_with = "bounded::optional_position")]
            after: Option<u64>,
        }
        assert_eq!(serde_json::from_str::<Query>("{}").unwrap().after, None);
        assert_eq!(serde_json::from_str::<Query>(r#"{"after":5}"#).unwrap().after, Some(5));
        assert!(serde_json::from_str::<Query>(r#"{"after":9223372036854775808}"#).is_err());
    }

    #[test]
    fn protocol_versions_are_compatible_by_major() {
        assert!(protocol_compatible("1.0"));
        assert!(protocol_compatible("1.7"));
        assert!(!protocol_compatible("2.0"));
        assert!(!protocol_compatible("one"));
        assert!(!protocol_compatible(""));
    }

    #[test]
    fn a_protocol_version_is_exactly_major_dot_minor() {
        assert_eq!(protocol_major("1.0"), Some(1));
        assert_eq!(protocol_major("12.34"), Some(12));
        for malformed in ["1", "1.0.0", "1.", ".0", "+1.0", "1.+0", " 1.0", "1.x", "1..0", "1,0"] {
            assert_eq!(protocol_major(malformed), None, "{malformed:?}");
            assert!(!protocol_compatible(malformed), "{malformed:?}");
        }
    }

    #[test]
    fn upload_outcomes_have_a_status_tag() {
        let result = UploadResult {
            event_id: EventId::from_bytes([1; 16]),
            outcome: UploadOutcome::Rejected {
                reason: "wrong_store".into(),
                detail: "x".into(),
            },
        };
        let json = serde_json::to_value(&result).unwrap();
        assert_eq!(json["status"], "rejected");
        assert_eq!(json["reason"], "wrong_store");
        assert_eq!(serde_json::from_value::<UploadResult>(json).unwrap(), result);
    }
}
