//! `/v1/inventory` queries: stock per product and store, and availability, served from
//! the read model through the query service (cache, breaker, read-your-writes). An answer
//! served from the cache while the read model is failing carries `X-Shelfsync-Stale: true`.
//!
//! An unknown product or store is `404 product_not_found` / `store_not_found`, never an
//! answer of zeros that would read as "out of stock". The check runs only when the read
//! model found no stock row (a row exists only for a known product at an enrolled store),
//! so the hot path costs nothing extra.

use super::auth::Principal;
use super::error::ApiError;
use super::AppState;
use crate::read_model::{Answer, QueryError};
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shelfsync_common::server::extract::{ApiPath, ApiQuery};
use shelfsync_common::server::failure::Reject;
use shelfsync_common::wire::api::{Availability, ProductStock, StockLevel};
use shelfsync_common::{ProductId, StockQuantity, StoreId};

/// Header marking an answer served from the cache while the read model is unavailable.
pub const STALE: HeaderName = HeaderName::from_static("x-shelfsync-stale");

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/inventory/products/{id}", get(product_stock))
        .route("/v1/inventory/products/{id}/stores/{store_id}", get(stock_level))
        .route("/v1/inventory/availability", get(availability))
}

/// `?min_position=`: read your own write.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MinPosition {
    /// Wait (bounded) until the read model has reached this position (from a write's answer).
    #[serde(
        default,
        deserialize_with = "shelfsync_common::wire::sync::bounded::optional_position"
    )]
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub min_position: Option<u64>,
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        match error {
            QueryError::Unavailable { retry_after } => ApiError::ReadModelUnavailable {
                retry_after_secs: retry_after.as_secs().max(1),
            },
            QueryError::NotCaughtUp { wanted, reached } => ApiError::NotCaughtUp { wanted, reached },
            QueryError::Storage(detail) => ApiError::ReadModel(detail),
            QueryError::PastHead { wanted, head } => ApiError::PastHead { wanted, head },
        }
    }
}

/// 200 with the value (and the stale marker), or the given not-found error.
pub fn answer<T: Serialize>(
    found: Answer<Option<T>>,
    not_found: impl FnOnce() -> ApiError,
) -> Result<Response, ApiError> {
    let value = found.value.ok_or_else(not_found)?;
    Ok(with_stale(Json(value).into_response(), found.stale))
}

fn with_stale(mut response: Response, stale: bool) -> Response {
    if stale {
        response.headers_mut().insert(STALE, HeaderValue::from_static("true"));
    }
    response
}

/// Stock of a product at every store (no rows for a product without stock).
#[utoipa::path(get, path = "/v1/inventory/products/{id}", tag = "inventory",
    params(("id" = uuid::Uuid, Path, description = "product id"), MinPosition),
    responses((status = 200, body = ProductStock), (status = 403, description = "forbidden: store tokens may only use the /v1/sync routes"), (status = 404, description = "product_not_found"), (status = 400, description = "min_position_past_head: no write has that position yet"), (status = 503, description = "read_model_unavailable (Retry-After), read_model_behind (min_position not reached in time) or storage_unavailable")))]
pub async fn product_stock(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<ProductId>,
    ApiQuery(at): ApiQuery<MinPosition>,
) -> Result<Response, ApiError> {
    principal.require_channel()?;
    let found = state.queries.product_stock(id, at.min_position).await?;
    if found.value.stores.is_empty() {
        unknown(&state, id, None, at.min_position).await?;
    }
    Ok(with_stale(Json(found.value).into_response(), found.stale))
}

/// Fails with `product_not_found` or `store_not_found` when the product (or the store,
/// when given) is unknown. For reads that found no stock row.
async fn unknown(
    state: &AppState,
    product: ProductId,
    store: Option<StoreId>,
    min_position: Option<u64>,
) -> Result<(), ApiError> {
    if state.queries.product(product, min_position).await?.value.is_none() {
        return Err(ApiError::not_found("product", product));
    }
    if let Some(store) = store {
        if !state.log.store_enrolled(store).await? {
            return Err(ApiError::not_found("store", store));
        }
    }
    Ok(())
}

/// Stock of a product at one store.
#[utoipa::path(get, path = "/v1/inventory/products/{id}/stores/{store_id}", tag = "inventory",
    params(("id" = uuid::Uuid, Path, description = "product id"), ("store_id" = uuid::Uuid, Path, description = "store id"), MinPosition),
    responses((status = 200, body = StockLevel), (status = 403, description = "forbidden: store tokens may only use the /v1/sync routes"), (status = 404, description = "product_not_found, store_not_found, or stock_not_found (both known, no stock row yet)"), (status = 400, description = "min_position_past_head: no write has that position yet"), (status = 503, description = "read_model_unavailable (Retry-After), read_model_behind (min_position not reached in time) or storage_unavailable")))]
pub async fn stock_level(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id, store_id)): ApiPath<(ProductId, StoreId)>,
    ApiQuery(at): ApiQuery<MinPosition>,
) -> Result<Response, ApiError> {
    principal.require_channel()?;
    let found = state.queries.stock_level(id, store_id, at.min_position).await?;
    if found.value.is_none() {
        unknown(&state, id, Some(store_id), at.min_position).await?;
    }
    answer(found, || {
        ApiError::not_found("stock", format!("of product {id} at store {store_id}"))
    })
}

/// `?product_id=&store_id=&quantity=` for [`availability`].
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityQuery {
    /// Product.
    #[param(value_type = uuid::Uuid)]
    pub product_id: ProductId,
    /// Store.
    #[param(value_type = uuid::Uuid)]
    pub store_id: StoreId,
    /// Units wanted (default 1).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1_000_000)]
    pub quantity: Option<StockQuantity>,
    /// Wait (bounded) until the read model has reached this position (from a write's answer).
    #[serde(
        default,
        deserialize_with = "shelfsync_common::wire::sync::bounded::optional_position"
    )]
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub min_position: Option<u64>,
}

/// Can this many units be reserved now? (zero available for a stream without stock)
#[utoipa::path(get, path = "/v1/inventory/availability", tag = "inventory", params(AvailabilityQuery),
    responses((status = 200, body = Availability), (status = 403, description = "forbidden: store tokens may only use the /v1/sync routes"), (status = 404, description = "product_not_found or store_not_found"), (status = 400, description = "min_position_past_head: no write has that position yet"), (status = 503, description = "read_model_unavailable (Retry-After), read_model_behind (min_position not reached in time) or storage_unavailable")))]
pub async fn availability(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<AvailabilityQuery>,
) -> Result<Response, ApiError> {
    principal.require_channel()?;
    let requested = query.quantity.map_or(1, StockQuantity::get);
    let found = state
        .queries
        .stock_level(query.product_id, query.store_id, query.min_position)
        .await?;
    if found.value.is_none() {
        unknown(&state, query.product_id, Some(query.store_id), query.min_position).await?;
    }
    let available = found.value.as_ref().map_or(0, |level| level.available);
    let body = Availability {
        product_id: query.product_id,
        store_id: query.store_id,
        requested,
        available,
        sufficient: available >= i64::from(requested),
    };
    Ok(with_stale(Json(body).into_response(), found.stale))
}
