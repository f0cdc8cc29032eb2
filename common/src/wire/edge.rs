//! Wire types of the edge agent's local API (the tills' side): local stock figures that say
//! whether they include events the hub has not confirmed yet, the answer to a local write,
//! the agent's status page, and outbox entries for operators.

use crate::domain::event::{EventPayload, StreamId};
use crate::domain::ids::{EventId, ProductId, StoreId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Stock of one product at this store, as the till should see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LocalStockLevel {
    /// Product.
    pub product_id: ProductId,
    /// This store.
    pub store_id: StoreId,
    /// Units in the store.
    pub on_hand: i64,
    /// Units held by open reservations.
    pub reserved: i64,
    /// on_hand - reserved.
    pub available: i64,
    /// Version of the hub-confirmed state the figures start from.
    pub confirmed_version: u64,
    /// Events recorded here that the hub has not confirmed yet, applied on top.
    pub pending_events: u32,
    /// Whether the figures include such events (`pending_events > 0`).
    pub includes_pending: bool,
    /// The hub's and the store's shares, when the stream has an allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<crate::wire::api::AllocationView>,
}

/// The answer to a write at the till.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LocalWriteResult {
    /// The recorded event's id (also its id at the hub).
    pub event_id: EventId,
    /// Its place in this store's outbox.
    pub seq: u64,
    /// The stream it belongs to.
    pub stream: StreamId,
    /// What was recorded.
    #[serde(flatten)]
    pub payload: EventPayload,
    /// The stock after it.
    pub stock: LocalStockLevel,
    /// True when this answers a retried request (same `Idempotency-Key`): nothing new was recorded.
    pub replayed: bool,
    /// Under the store's `mark` policy: units of this write beyond the store's share of
    /// an allocation, that is units promised to online orders (tell the cashier now).
    /// Absent when the write fitted the store's share.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub used_hub_share: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// `GET /v1/status`: the agent's health, for the store manager and the tills.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentStatus {
    /// This store.
    pub store_id: StoreId,
    /// The agent's version.
    pub agent_version: String,
    /// `online` when the last call to the hub succeeded and the breaker is closed, else `offline`.
    pub link: String,
    /// The hub-link breaker: closed, open or half_open.
    pub breaker: String,
    /// Why the breaker last opened (shown to the manager key only).
    pub breaker_reason: Option<String>,
    /// Whether the push stream from the hub is connected.
    pub push_connected: bool,
    /// Events waiting for the hub (pending or acknowledged but not yet seen back).
    pub outbox_depth: u64,
    /// Age of the oldest of them, in seconds.
    pub oldest_pending_age_secs: Option<u64>,
    /// Events the hub rejected, held for an operator.
    pub quarantined: u64,
    /// The last hub position applied here.
    pub cursor: u64,
    /// The hub's head as last seen.
    pub hub_head: u64,
    /// When the last exchange with the hub succeeded.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_sync_at: Option<OffsetDateTime>,
    /// Whether the agent has its starting snapshot from the hub.
    pub bootstrapped: bool,
    /// The last re-sync from the hub's snapshot (after the hub was restored from an older
    /// backup, or by `shelfsync-edge resync`); absent when there was none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resynced: Option<crate::wire::sync::Resynced>,
}

/// Where an outbox event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutboxStatus {
    /// Not yet accepted by the hub.
    Pending,
    /// Accepted by the hub, not yet seen back in its feed.
    Acked,
    /// Part of the hub-confirmed state.
    Confirmed,
    /// Rejected by the hub; waits for an operator.
    Quarantined,
    /// Given up by an operator.
    Discarded,
}

impl OutboxStatus {
    /// The name stored in SQLite.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Acked => "acked",
            OutboxStatus::Confirmed => "confirmed",
            OutboxStatus::Quarantined => "quarantined",
            OutboxStatus::Discarded => "discarded",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Acked,
            Self::Confirmed,
            Self::Quarantined,
            Self::Discarded,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// One outbox event, for `outbox list` and `quarantine list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutboxEntry {
    /// Place in the outbox.
    pub seq: u64,
    /// The event's id.
    pub event_id: EventId,
    /// Product.
    pub product_id: ProductId,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Status.
    pub status: OutboxStatus,
    /// The hub's position once acknowledged.
    pub hub_position: Option<u64>,
    /// Why the hub rejected it.
    pub reject_reason: Option<String>,
    /// The hub's explanation.
    pub reject_detail: Option<String>,
    /// When it was recorded here.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub recorded_at: OffsetDateTime,
}

/// `GET /v1/inventory/availability` on the agent: can this many units be reserved at this
/// store now, by the local figures?
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LocalAvailability {
    /// Product.
    pub product_id: ProductId,
    /// This store.
    pub store_id: StoreId,
    /// Units asked about.
    pub requested: u32,
    /// Units available now (on hand minus reserved), by the local figures.
    pub available: i64,
    /// Whether `requested` units can be reserved now.
    pub sufficient: bool,
    /// Whether the figures include events the hub has not confirmed yet.
    pub includes_pending: bool,
}

/// The answer to `POST /v1/quarantine/{event_id}/retry` or `/discard`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QuarantineOutcome {
    /// The event.
    pub event_id: EventId,
    /// Where it is now: `pending` (to be uploaded again) or `discarded`.
    pub status: OutboxStatus,
}
