//! Request and response bodies of the HTTP APIs, shared by the hub, the edge agent and
//! the tests so that both sides (de)serialize the same structs. Request bodies refuse
//! unknown fields: a misspelt field is an error, not a silently ignored value. The
//! inventory bodies turn into the domain's [`InventoryCommand`] here, once, for both the
//! hub's and the agent's routes.

use crate::domain::allocation::{Allocation, AllocationPolicy};
use crate::domain::event::{EventEnvelope, ExpectedVersion, ReleaseReason};
use crate::domain::ids::{EventId, ProductId, ReservationId, StoreId};
use crate::domain::inventory::{InventoryCommand, InventoryState};
use crate::domain::product::Product;
use crate::domain::quantity::StockQuantity;
use crate::wire::fingerprint::WriteBody;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Default lifetime of a reservation when the request names none (15 minutes).
pub const DEFAULT_RESERVATION_TTL_SECONDS: u32 = 900;
/// Longest lifetime a reservation may ask for (7 days).
pub const MAX_RESERVATION_TTL_SECONDS: u32 = 7 * 24 * 3600;

/// `POST /v1/products`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterProductRequest {
    /// The product's id; a new one is made when absent.
    #[serde(default)]
    pub id: Option<ProductId>,
    /// Unique SKU: 1..=64 bytes, no whitespace or control characters.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\s\x00-\x1f\x7f-\x9f]+$")]
    pub sku: String,
    /// Name: 1..=200 bytes, not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// Price in minor units, at most 10^12.
    #[schema(maximum = 1_000_000_000_000_u64)]
    pub price_minor: u64,
    /// Makes a retried request idempotent.
    #[serde(default)]
    pub event_id: Option<EventId>,
}

/// `PUT /v1/products/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProductRequest {
    /// New SKU: 1..=64 bytes, no whitespace or control characters.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[^\s\x00-\x1f\x7f-\x9f]+$")]
    pub sku: String,
    /// New name: 1..=200 bytes, not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// New price in minor units, at most 10^12.
    #[schema(maximum = 1_000_000_000_000_u64)]
    pub price_minor: u64,
    /// Optimistic concurrency (or send `If-Match`).
    #[serde(default)]
    pub expected_version: Option<ExpectedVersion>,
    /// Makes a retried request idempotent.
    #[serde(default)]
    pub event_id: Option<EventId>,
}

/// A product with its catalog stream version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProductView {
    /// The product.
    #[serde(flatten)]
    pub product: Product,
    /// Version of its catalog stream (send it as `If-Match` to update).
    pub version: u64,
}

/// `POST /v1/inventory/stock`: a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddStockRequest {
    /// Product.
    pub product_id: ProductId,
    /// Store.
    pub store_id: StoreId,
    /// Units delivered.
    pub quantity: StockQuantity,
    /// Optimistic concurrency (or send `If-Match`).
    #[serde(default)]
    pub expected_version: Option<ExpectedVersion>,
    /// Makes a retried request idempotent.
    #[serde(default)]
    pub event_id: Option<EventId>,
}

impl AddStockRequest {
    /// The delivery as a command.
    pub fn command(&self) -> InventoryCommand {
        InventoryCommand::AddStock {
            quantity: self.quantity,
        }
    }
}

/// `POST /v1/inventory/adjustments`: a count correction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustStockRequest {
    /// Product.
    pub product_id: ProductId,
    /// Store.
    pub store_id: StoreId,
    /// Signed change in units: not zero, at most 1,000,000 either way.
    #[schema(schema_with = crate::domain::inventory::adjustment_schema)]
    pub delta: i64,
    /// Why (stock take, damage, ...): 1..=200 characters, not blank, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub reason: String,
    /// Optimistic concurrency (or send `If-Match`).
    #[serde(default)]
    pub expected_version: Option<ExpectedVersion>,
    /// Makes a retried request idempotent.
    #[serde(default)]
    pub event_id: Option<EventId>,
}

impl AdjustStockRequest {
    /// The correction as a command.
    pub fn command(&self) -> InventoryCommand {
        InventoryCommand::AdjustStock {
            delta: self.delta,
            reason: self.reason.clone(),
        }
    }
}

/// `POST /v1/inventory/reservations`: hold units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveStockRequest {
    /// Product.
    pub product_id: ProductId,
    /// Store.
    pub store_id: StoreId,
    /// The hold's id; a new one is made when absent.
    #[serde(default)]
    pub reservation_id: Option<ReservationId>,
    /// Units to hold.
    pub quantity: StockQuantity,
    /// Lifetime in seconds (default 900, at most 604800).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 604_800)]
    pub ttl_seconds: Option<u32>,
    /// Optimistic concurrency (or send `If-Match`).
    #[serde(default)]
    pub expected_version: Option<ExpectedVersion>,
    /// Makes a retried request idempotent.
    #[serde(default)]
    pub event_id: Option<EventId>,
}

impl ReserveStockRequest {
    /// When the hold lapses if made at `now`, or why `ttl_seconds` is out of range.
    fn expires_at(&self, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
        let ttl = self.ttl_seconds.unwrap_or(DEFAULT_RESERVATION_TTL_SECONDS);
        if ttl == 0 || ttl > MAX_RESERVATION_TTL_SECONDS {
            return Err(format!(
                "ttl_seconds must be 1..={MAX_RESERVATION_TTL_SECONDS}, got {ttl}"
            ));
        }
        crate::domain::timestamp::after("expires_at", now, i64::from(ttl)).map_err(|e| e.to_string())
    }

    /// The hold asked for at `now` (under a new reservation id when the body names none),
    /// or why `ttl_seconds` is out of range.
    pub fn command(&self, now: OffsetDateTime) -> Result<InventoryCommand, String> {
        Ok(InventoryCommand::ReserveStock {
            reservation_id: self.reservation_id.unwrap_or_else(ReservationId::new_v7),
            quantity: self.quantity,
            expires_at: self.expires_at(now)?,
        })
    }
}

/// `POST /v1/inventory/reservations/{id}/release` (the body is optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseReservationRequest {
    /// Why (default `cancelled`).
    #[serde(default)]
    pub reason: Option<ReleaseReason>,
    /// Optimistic concurrency (or send `If-Match`).
    #[serde(default)]
    pub expected_version: Option<ExpectedVersion>,
    /// Makes a retried request idempotent.
    #[serde(default)]
    pub event_id: Option<EventId>,
}

impl ReleaseReservationRequest {
    /// The release of the hold `reservation_id` (the path's), `cancelled` unless the body
    /// gives another reason.
    pub fn command(&self, reservation_id: ReservationId) -> InventoryCommand {
        InventoryCommand::ReleaseStock {
            reservation_id,
            reason: self.reason.unwrap_or(ReleaseReason::Cancelled),
        }
    }
}

/// `POST /v1/inventory/reservations/{id}/commit` (the body is optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitReservationRequest {
    /// Optimistic concurrency (or send `If-Match`).
    #[serde(default)]
    pub expected_version: Option<ExpectedVersion>,
    /// Makes a retried request idempotent.
    #[serde(default)]
    pub event_id: Option<EventId>,
}

impl CommitReservationRequest {
    /// The sale of the hold `reservation_id` (the path's).
    pub fn command(&self, reservation_id: ReservationId) -> InventoryCommand {
        InventoryCommand::CommitReservation { reservation_id }
    }
}

/// `POST /v1/inventory/allocations`: how the hub's share of one stream is kept (admin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAllocationRequest {
    /// Product.
    pub product_id: ProductId,
    /// Store.
    pub store_id: StoreId,
    /// `{"mode":"none"}`, `{"mode":"fixed","units":N}` or `{"mode":"percent","percent":P}`.
    pub policy: AllocationPolicy,
    /// Optimistic concurrency (or send `If-Match`).
    #[serde(default)]
    pub expected_version: Option<ExpectedVersion>,
    /// Makes a retried request idempotent.
    #[serde(default)]
    pub event_id: Option<EventId>,
}

impl SetAllocationRequest {
    /// The policy as a command.
    pub fn command(&self) -> InventoryCommand {
        InventoryCommand::SetAllocation { policy: self.policy }
    }
}

/// Every write body may name its event id (see [`crate::wire::fingerprint`]).
macro_rules! write_bodies {
    ($($body:ty),*) => {$(
        impl WriteBody for $body {
            fn event_id(&self) -> Option<EventId> {
                self.event_id
            }

            fn clear_event_id(&mut self) {
                self.event_id = None;
            }
        }
    )*};
}

write_bodies!(
    RegisterProductRequest,
    UpdateProductRequest,
    AddStockRequest,
    SetAllocationRequest,
    AdjustStockRequest,
    ReserveStockRequest,
    ReleaseReservationRequest,
    CommitReservationRequest
);

/// The answer to every write: what was recorded and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WriteResult {
    /// The events written (or, for a retry, the events first written).
    pub events: Vec<EventEnvelope>,
    /// The stream's version after the write.
    pub stream_version: u64,
    /// The global position of the last event (pass it as `min_position` to read your write).
    pub position: u64,
    /// True when this request repeated an earlier one and nothing new was written.
    pub duplicate: bool,
}

/// Stock of one product at one store, from the read model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockLevel {
    /// Product.
    pub product_id: ProductId,
    /// Store.
    pub store_id: StoreId,
    /// Units in the store.
    pub on_hand: i64,
    /// Units held by open reservations.
    pub reserved: i64,
    /// on_hand - reserved.
    pub available: i64,
    /// Stream version the figures are at.
    pub version: u64,
    /// Global position of the stream's last event.
    pub position: u64,
    /// The split between the hub's and the store's shares, when the stream has an
    /// allocation (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<AllocationView>,
}

/// A stream's allocation as the stock views show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AllocationView {
    /// How the hub's share is kept.
    pub policy: AllocationPolicy,
    /// Units web shops and other channels may still reserve at the hub.
    pub hub_share: i64,
    /// Units the store's tills may sell without the hub (`available - hub_share`).
    pub store_share: i64,
}

impl AllocationView {
    /// The view of `allocation` on a stream with `available` units available.
    pub fn new(allocation: Allocation, available: i64) -> Self {
        Self {
            policy: allocation.policy,
            hub_share: allocation.hub_share,
            store_share: available.saturating_sub(allocation.hub_share),
        }
    }

    /// The view of a stream's allocation, if it has one.
    pub fn of(state: &InventoryState) -> Option<Self> {
        state.allocation.map(|a| Self::new(a, state.available()))
    }
}

/// Stock of one product at every store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProductStock {
    /// Product.
    pub product_id: ProductId,
    /// One row per store that has a stream for the product.
    pub stores: Vec<StockLevel>,
    /// Sum of on_hand.
    pub total_on_hand: i64,
    /// Sum of available.
    pub total_available: i64,
}

/// `GET /v1/inventory/availability`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Availability {
    /// Product.
    pub product_id: ProductId,
    /// Store.
    pub store_id: StoreId,
    /// Units asked about.
    pub requested: u32,
    /// Units available now.
    pub available: i64,
    /// Whether `requested` units can be reserved now.
    pub sufficient: bool,
}

/// A store enrolled at the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoreInfo {
    /// The store's id.
    pub id: StoreId,
    /// Display name.
    pub name: String,
    /// When it was enrolled.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Whether its token was revoked.
    pub revoked: bool,
}

/// `POST /v1/admin/tokens`: a token for a channel client (web shop, app, back office).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Unique name, shown as the actor of the events the token writes (1..=64 bytes:
    /// letters, digits, spaces, `-`, `_`, `.`; not blank).
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
}

/// A newly made token. The secret is shown this once and stored only as a hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// The token's name.
    pub name: String,
    /// The bearer secret.
    #[schema(value_type = String)]
    pub secret: crate::wire::secret::Secret,
}

/// `GET /healthz`: the process is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Liveness {
    /// Always `ok`.
    pub status: String,
}

impl Liveness {
    /// The one answer.
    pub fn ok() -> Self {
        Self { status: "ok".into() }
    }
}

/// Whether a name is fit for a token or store: 1..=64 of letters, digits, `-`, `_`, `.`, space.
pub fn valid_name(name: &str) -> bool {
    !name.trim().is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
}
