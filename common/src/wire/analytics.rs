//! The JSON shapes of the hub's analytics, alert and webhook routes
//! (`/v1/analytics/*`, `/v1/admin/webhooks`, the settings behind them),
//! shared with the tests that read them. Request bodies refuse unknown fields. Pure data
//! and validation, no I/O.

use crate::domain::ids::{ProductId, StoreId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// An alert's kind, which is also the event name a webhook subscribes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Available fell below the reorder point.
    LowStock,
    /// Available is back at or above the reorder point.
    LowStockCleared,
    /// The hub recorded an oversell.
    Oversell,
}

impl AlertKind {
    /// The kind's name, as stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::LowStock => "low_stock",
            AlertKind::LowStockCleared => "low_stock_cleared",
            AlertKind::Oversell => "oversell",
        }
    }
}

/// A delivery record's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Answered 2xx.
    Delivered,
    /// Given up after the attempts: the dead-letter list.
    Dead,
    /// Queued again by hand.
    Redeliver,
}

impl DeliveryStatus {
    /// The status's name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Redeliver => "redeliver",
        }
    }
}

/// Figures of one product at one store, as of `as_of` (the store's day `today`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoreProductFigures {
    /// Store.
    pub store_id: StoreId,
    /// Units in the store (at the analytics checkpoint).
    pub on_hand: i64,
    /// Units held by open reservations.
    pub reserved: i64,
    /// on_hand - reserved.
    pub available: i64,
    /// Units sold on the store's current day so far.
    pub units_today: i64,
    /// Units sold in the 7 full store days before today.
    pub units_7d: i64,
    /// Units sold in the 28 full store days before today.
    pub units_28d: i64,
    /// units_7d / 7.
    pub velocity_7d: f64,
    /// units_28d / 28.
    pub velocity_28d: f64,
    /// available / velocity_7d in days (0 when nothing is available); `null` when nothing
    /// sold in the last 7 full days (no finite figure).
    pub days_of_cover: Option<f64>,
    /// Units sold since the first event.
    pub units_total: i64,
    /// Revenue since the first event, in minor units, each sale at its day's catalog price.
    pub revenue_minor_total: i64,
    /// Reservations released because they expired, since the first event.
    pub expired_reservations: i64,
    /// Oversells the hub detected, since the first event.
    pub oversells: i64,
    /// The reorder point in force (the store's own, else the product's), if any.
    pub reorder_point: Option<i64>,
    /// Whether a low-stock alert is open.
    pub low_stock: bool,
}

/// `GET /v1/analytics/products/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProductAnalytics {
    /// Product.
    pub product_id: ProductId,
    /// When the figures were computed.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub as_of: OffsetDateTime,
    /// The analytics checkpoint: the figures include every event up to this position.
    pub position: u64,
    /// One entry per store that has this product's stock.
    pub stores: Vec<StoreProductFigures>,
    /// Sums over the stores (days of cover from the summed available and velocity).
    pub total: ProductTotal,
}

/// The product's figures summed over every store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProductTotal {
    /// Sum of available.
    pub available: i64,
    /// Sum of units sold in each store's last 7 full days.
    pub units_7d: i64,
    /// Sum of units sold in each store's last 28 full days.
    pub units_28d: i64,
    /// units_7d / 7.
    pub velocity_7d: f64,
    /// units_28d / 28.
    pub velocity_28d: f64,
    /// available / velocity_7d, `null` when nothing sold.
    pub days_of_cover: Option<f64>,
    /// Units sold since the first event.
    pub units_total: i64,
    /// Revenue since the first event, in minor units.
    pub revenue_minor_total: i64,
    /// Expired reservations.
    pub expired_reservations: i64,
    /// Oversells.
    pub oversells: i64,
}

/// One store day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoreDay {
    /// The store's local date, `YYYY-MM-DD`.
    pub date: String,
    /// Units sold.
    pub units: i64,
    /// Revenue in minor units, each sale at its day's catalog price.
    pub revenue_minor: i64,
}

/// `GET /v1/analytics/stores/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoreAnalytics {
    /// Store.
    pub store_id: StoreId,
    /// The store's IANA time zone (days are its local days).
    pub time_zone: String,
    /// The store's local date now.
    pub today: String,
    /// The analytics checkpoint.
    pub position: u64,
    /// The last `days` local days, oldest first, today included (days without sales are 0).
    pub days: Vec<StoreDay>,
}

/// One line of `GET /v1/analytics/top-sellers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopSeller {
    /// Product.
    pub product_id: ProductId,
    /// Its SKU (empty if the catalog has not named it).
    pub sku: String,
    /// Units sold in the window.
    pub units: i64,
    /// Revenue in the window, minor units.
    pub revenue_minor: i64,
}

/// `GET /v1/analytics/top-sellers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopSellers {
    /// The store asked for, or every store.
    pub store_id: Option<StoreId>,
    /// Full store days before today counted.
    pub days: u32,
    /// The analytics checkpoint.
    pub position: u64,
    /// Best first (units, then revenue, then product id).
    pub products: Vec<TopSeller>,
}

/// An alert event: a low-stock crossing, its clearing, or an oversell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Alert {
    /// The log position of the event that raised (or cleared) it: its id.
    pub id: u64,
    /// `low_stock`, `low_stock_cleared` or `oversell`.
    pub kind: String,
    /// Product.
    pub product_id: ProductId,
    /// Store.
    pub store_id: StoreId,
    /// Available after the event.
    pub available: i64,
    /// The reorder point crossed (low-stock kinds).
    pub reorder_point: Option<i64>,
    /// When the event happened (the recorder's clock).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub occurred_at: OffsetDateTime,
    /// For a `low_stock` alert: whether it is still open (not cleared by a restock).
    pub open: bool,
}

/// `GET /v1/analytics/alerts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertList {
    /// Newest first.
    pub alerts: Vec<Alert>,
    /// The analytics checkpoint.
    pub position: u64,
}

/// `PUT /v1/admin/analytics/reorder-points`: a product's reorder point, for every store or
/// one store (a store's own point wins over the product's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReorderPoint {
    /// Product.
    pub product_id: ProductId,
    /// The store, or absent for every store without its own.
    #[serde(default)]
    pub store_id: Option<StoreId>,
    /// Available below this raises a low-stock alert; `null` removes the point.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub reorder_point: Option<i64>,
}

/// The largest reorder point accepted.
pub const MAX_REORDER_POINT: i64 = 1_000_000_000;

/// `PUT /v1/admin/analytics/stores/{id}/settings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// IANA time zone name (`Europe/Berlin`); the store's days are its local days.
    #[schema(min_length = 1, max_length = 64)]
    pub time_zone: String,
}

/// `POST /v1/admin/webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterWebhook {
    /// An absolute `http://` or `https://` URL with a host, at most 2,048 bytes.
    #[schema(
        min_length = 8,
        max_length = 2048,
        pattern = r"^https?://[^\s/?#\x00-\x1f\x7f-\x9f][^\s\x00-\x1f\x7f-\x9f]*$"
    )]
    pub url: String,
    /// Which alert kinds to send, each at most once.
    #[schema(min_items = 1, max_items = 3)]
    pub events: Vec<AlertKind>,
    /// The signing secret: 16..=256 bytes, no control characters.
    #[schema(value_type = String, min_length = 16, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$")]
    pub secret: crate::wire::secret::Secret,
}

/// A registered webhook (its secret is never shown again).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Webhook {
    /// Its id.
    #[schema(value_type = String, format = Uuid)]
    pub id: Uuid,
    /// Where deliveries go.
    pub url: String,
    /// The alert kinds it receives.
    pub events: Vec<String>,
    /// The last alert id handed over (delivered or dead-lettered), in order.
    pub cursor: u64,
    /// Attempts made so far at the alert after the cursor.
    pub attempts: u32,
    /// The subscriber's breaker: `closed`, `open` or `half_open`.
    pub breaker: String,
    /// When it was registered.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

/// `GET /v1/admin/webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookList {
    /// Every webhook, oldest first.
    pub webhooks: Vec<Webhook>,
}

/// One delivery record: a delivered alert, a dead letter, or a redelivery waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    /// The alert's id.
    pub alert_id: u64,
    /// The alert kind.
    pub kind: String,
    /// `delivered`, `dead` (gave up after the attempts) or `redeliver` (queued by hand).
    pub status: String,
    /// Attempts made.
    pub attempts: u32,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// When the record last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

/// `GET /v1/admin/webhooks/{id}/deliveries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryList {
    /// Newest first.
    pub deliveries: Vec<Delivery>,
}

/// Whether `events` is a non-empty list of alert kinds without repeats.
pub fn valid_webhook_events(events: &[AlertKind]) -> bool {
    !events.is_empty() && events.iter().enumerate().all(|(i, e)| !events[..i].contains(e))
}

/// Whether `url` is an absolute `http`/`https` URL of at most 2,048 bytes with a host and
/// no whitespace or control characters.
pub fn valid_webhook_url(url: &str) -> bool {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    url.len() <= 2048
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
        && rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_events_and_urls_are_checked() {
        use AlertKind::*;
        assert!(valid_webhook_events(&[LowStock, Oversell]));
        assert!(!valid_webhook_events(&[]));
        assert!(!valid_webhook_events(&[LowStock, LowStock]));
        assert_eq!(
            serde_json::from_str::<AlertKind>("\"low_stock_cleared\"").unwrap(),
            LowStockCleared
        );
        assert!(serde_json::from_str::<AlertKind>("\"sold\"").is_err());
        assert!(valid_webhook_url("http://127.0.0.1:9000/hook"));
        assert!(valid_webhook_url("https://example.com"));
        assert!(!valid_webhook_url("ftp://example.com"));
        assert!(!valid_webhook_url("http://"));
        assert!(!valid_webhook_url("http:///path"));
        assert!(!valid_webhook_url("http://a b"));
    }
}
