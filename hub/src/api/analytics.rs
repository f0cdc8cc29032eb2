//! `/v1/analytics`: sales figures, top sellers, alerts and the sales CSV, read from the
//! analytics file ([`crate::analytics`]) for admin and channel tokens. Every answer names
//! the analytics checkpoint it reflects (`position`). The CSV is streamed page by page, so
//! its size does not depend on memory.

use super::auth::Principal;
use super::error::ApiError;
use super::AppState;
use crate::analytics::queries::{self, AlertFilter, SalesKey, SalesRow};
use crate::analytics::{day_text, parse_day, AnalyticsDb, Day};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use shelfsync_common::server::extract::{ApiPath, ApiQuery};
use shelfsync_common::server::failure::Reject;
use shelfsync_common::wire::analytics::{AlertKind, AlertList, ProductAnalytics, StoreAnalytics, TopSellers};
use shelfsync_common::{ProductId, StoreId};
use std::sync::Arc;
use time::OffsetDateTime;

/// Rows per page of the CSV stream.
const CSV_PAGE: usize = 1_000;
/// The longest range of days a CSV may cover (about ten years).
const MAX_CSV_DAYS: i64 = 3_660;
/// The CSV's header row.
pub const CSV_HEADER: &str = "date,store_id,product_id,sku,units,revenue_minor\r\n";

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/analytics/products/{id}", get(product_analytics))
        .route("/v1/analytics/stores/{id}", get(store_analytics))
        .route("/v1/analytics/top-sellers", get(top_sellers))
        .route("/v1/analytics/alerts", get(list_alerts))
        .route("/v1/analytics/sales.csv", get(sales_csv))
}

/// A product's figures per store and in total: units per day window, 7- and 28-day
/// velocity, days of cover (`null` when nothing sold), expired holds, oversells.
#[utoipa::path(get, path = "/v1/analytics/products/{id}", tag = "analytics",
    params(("id" = uuid::Uuid, Path, description = "product id")),
    responses((status = 200, body = ProductAnalytics), (status = 403, description = "forbidden: admin or channel token"),
        (status = 404, description = "product_not_found: no stock and no catalog entry in the analytics"),
        (status = 503, description = "storage_unavailable")))]
pub async fn product_analytics(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<ProductId>,
) -> Result<Json<ProductAnalytics>, ApiError> {
    principal.require_channel()?;
    let now = OffsetDateTime::now_utc();
    match state
        .analytics
        .read(move |conn| queries::product(conn, id, now))
        .await?
    {
        Some(figures) => Ok(Json(figures)),
        None => Err(ApiError::not_found("product", id)),
    }
}

/// `?days=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DaysQuery {
    /// Store days to show, today included (1..=366, default 28).
    #[param(minimum = 1, maximum = 366)]
    pub days: Option<u32>,
}

fn days(days: Option<u32>, default: u32) -> Result<u32, ApiError> {
    match days.unwrap_or(default) {
        days @ 1..=366 => Ok(days),
        _ => Err(ApiError::bad_request("invalid_days", "days must be 1..=366")),
    }
}

/// A store's units and revenue per local day (its time zone, default UTC).
#[utoipa::path(get, path = "/v1/analytics/stores/{id}", tag = "analytics",
    params(("id" = uuid::Uuid, Path, description = "store id"), DaysQuery),
    responses((status = 200, body = StoreAnalytics), (status = 400, description = "invalid_days"), (status = 403, description = "forbidden: admin or channel token"),
        (status = 404, description = "store_not_found"), (status = 503, description = "storage_unavailable")))]
pub async fn store_analytics(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<StoreId>,
    ApiQuery(query): ApiQuery<DaysQuery>,
) -> Result<Json<StoreAnalytics>, ApiError> {
    principal.require_channel()?;
    let days = days(query.days, 28)?;
    if !state.log.store_enrolled(id).await? {
        return Err(ApiError::not_found("store", id));
    }
    let now = OffsetDateTime::now_utc();
    Ok(Json(
        state
            .analytics
            .read(move |conn| queries::store(conn, id, days, now))
            .await?,
    ))
}

/// `?store_id=&days=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TopSellersQuery {
    /// One store, or every store when absent.
    #[param(value_type = Option<uuid::Uuid>)]
    pub store_id: Option<StoreId>,
    /// Full store days before today (1..=366, default 7).
    #[param(minimum = 1, maximum = 366)]
    pub days: Option<u32>,
    /// Products to list (1..=100, default 10).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// The best-selling products by units over each store's last `days` full days.
#[utoipa::path(get, path = "/v1/analytics/top-sellers", tag = "analytics", params(TopSellersQuery),
    responses((status = 200, body = TopSellers), (status = 400, description = "invalid_days or invalid_limit"),
        (status = 403, description = "forbidden: admin or channel token"), (status = 503, description = "storage_unavailable")))]
pub async fn top_sellers(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<TopSellersQuery>,
) -> Result<Json<TopSellers>, ApiError> {
    principal.require_channel()?;
    let days = days(query.days, 7)?;
    let limit = match query.limit.unwrap_or(10) {
        limit @ 1..=100 => limit as usize,
        _ => return Err(ApiError::bad_request("invalid_limit", "limit must be 1..=100")),
    };
    let now = OffsetDateTime::now_utc();
    let store = query.store_id;
    Ok(Json(
        state
            .analytics
            .read(move |conn| queries::top_sellers(conn, store, days, limit, now))
            .await?,
    ))
}

/// `?kind=&store_id=&open=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    /// Only this kind.
    #[param(inline)]
    pub kind: Option<AlertKind>,
    /// One store.
    #[param(value_type = Option<uuid::Uuid>)]
    pub store_id: Option<StoreId>,
    /// Only low-stock alerts not yet cleared.
    pub open: Option<bool>,
    /// At most this many, newest first (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Alerts, newest first: low-stock crossings (open until a restock clears them), their
/// clearings, and oversells.
#[utoipa::path(get, path = "/v1/analytics/alerts", tag = "analytics", params(AlertsQuery),
    responses((status = 200, body = AlertList), (status = 400, description = "invalid_query (an unknown kind) or invalid_limit"),
        (status = 403, description = "forbidden: admin or channel token"), (status = 503, description = "storage_unavailable")))]
pub async fn list_alerts(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<AlertsQuery>,
) -> Result<Json<AlertList>, ApiError> {
    principal.require_channel()?;
    let limit = match query.limit.unwrap_or(100) {
        limit @ 1..=1000 => limit as usize,
        _ => return Err(ApiError::bad_request("invalid_limit", "limit must be 1..=1000")),
    };
    let filter = AlertFilter {
        kind: query.kind.map(|k| k.as_str().to_owned()),
        store: query.store_id,
        open_only: query.open.unwrap_or(false),
        limit,
    };
    let (alerts, position) = state.analytics.read(move |conn| queries::alerts(conn, &filter)).await?;
    Ok(Json(AlertList { alerts, position }))
}

/// `?from=&to=&store_id=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SalesQuery {
    /// First store-local date, `YYYY-MM-DD`.
    #[param(format = Date)]
    pub from: String,
    /// Last store-local date (inclusive), `YYYY-MM-DD`; at most 3,660 days after `from`.
    #[param(format = Date)]
    pub to: String,
    /// One store, or every store.
    #[param(value_type = Option<uuid::Uuid>)]
    pub store_id: Option<StoreId>,
}

/// Units and revenue per store, local date and product as RFC 4180 CSV (a header row,
/// CRLF line ends), streamed; ordered by store, date, product.
#[utoipa::path(get, path = "/v1/analytics/sales.csv", tag = "analytics", params(SalesQuery),
    responses((status = 200, description = "the CSV: date,store_id,product_id,sku,units,revenue_minor", content_type = "text/csv"),
        (status = 400, description = "invalid_date or invalid_range"), (status = 403, description = "forbidden: admin or channel token")))]
pub async fn sales_csv(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<SalesQuery>,
) -> Result<Response, ApiError> {
    principal.require_channel()?;
    let date = |text: &str| {
        parse_day(text).ok_or_else(|| ApiError::bad_request("invalid_date", "from and to are dates: YYYY-MM-DD"))
    };
    let (from, to) = (date(&query.from)?, date(&query.to)?);
    if from > to || to - from > MAX_CSV_DAYS {
        return Err(ApiError::bad_request(
            "invalid_range",
            "from must not be after to, and the range at most 3660 days",
        ));
    }
    let stream = csv_stream(state.analytics.clone(), from, to, query.store_id);
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"sales.csv\""),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The header row, then one chunk per page of rows.
fn csv_stream(
    db: Arc<AnalyticsDb>,
    from: Day,
    to: Day,
    store: Option<StoreId>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let start = Some(Bytes::from_static(CSV_HEADER.as_bytes()));
    futures_util::stream::unfold((start, None::<SalesKey>, false), move |(header, after, done)| {
        let db = db.clone();
        async move {
            if let Some(header) = header {
                return Some((Ok(header), (None, after, done)));
            }
            if done {
                return None;
            }
            let cursor = after.clone();
            let page = db
                .read(move |conn| queries::sales_page(conn, from, to, store, cursor.as_ref(), CSV_PAGE))
                .await;
            match page {
                Err(error) => {
                    tracing::warn!(%error, "sales.csv: reading a page failed; the stream ends early");
                    Some((Err(std::io::Error::other("analytics read failed")), (None, after, true)))
                }
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let last = rows
                        .last()
                        .map(|r| (r.store.as_bytes().to_vec(), r.day, r.product.as_bytes().to_vec()));
                    let full = rows.len() == CSV_PAGE;
                    let mut chunk = String::with_capacity(rows.len() * 110);
                    for row in &rows {
                        csv_line(&mut chunk, row);
                    }
                    Some((Ok(Bytes::from(chunk)), (None, last, !full)))
                }
            }
        }
    })
}

fn csv_line(out: &mut String, row: &SalesRow) {
    use std::fmt::Write;
    let _ = write!(out, "{},{},{},", day_text(row.day), row.store, row.product);
    csv_field(out, &row.sku);
    let _ = write!(out, ",{},{}\r\n", row.units, row.revenue_minor);
}

/// One field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(out: &mut String, value: &str) {
    if value.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        let mut out = String::new();
        csv_field(&mut out, "COFFEE-250");
        out.push('|');
        csv_field(&mut out, "A,\"B\"");
        assert_eq!(out, "COFFEE-250|\"A,\"\"B\"\"\"");
    }
}
