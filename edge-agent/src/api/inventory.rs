//! `/v1/inventory` at the store: deliveries, count corrections, reservations and sales for
//! this store only, with the same request bodies as the hub, and the local stock figures.
//!
//! Every command is decided against the local state (hub-confirmed state plus this store's
//! unconfirmed events) and written to the local store's outbox before the till gets its
//! answer; nothing here waits for the hub. Short stock is refused with
//! `409 insufficient_stock`, as at the hub: the agent is strict with its tills, and the
//! facts it records are then never refused by the hub for stock reasons.
//!
//! A product that is in the catalog but has no stock here yet reads as zero stock (not
//! 404), so a till can show "0 in store" for anything it can scan; a product the catalog
//! does not know is `404 product_not_found`.

use super::auth::Till;
use super::error::ApiError;
use super::write::{written, WriteAnswers, WriteContext};
use super::AppState;
use crate::store::view::View;
use crate::store::{LocalError, Target};
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use shelfsync_common::server::extract::{ApiJson, ApiPath, ApiQuery, OptionalApiJson};
use shelfsync_common::server::failure::Reject;
use shelfsync_common::wire::api::{
    AddStockRequest, AdjustStockRequest, CommitReservationRequest, ReleaseReservationRequest, ReserveStockRequest,
};
use shelfsync_common::wire::edge::{LocalAvailability, LocalStockLevel, LocalWriteResult};
use shelfsync_common::{ProductId, ReservationId, StockQuantity, StoreId};
use time::OffsetDateTime;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/inventory/stock", post(add_stock))
        .route("/v1/inventory/adjustments", post(adjust_stock))
        .route("/v1/inventory/reservations", post(reserve))
        .route("/v1/inventory/reservations/{id}/release", post(release))
        .route("/v1/inventory/reservations/{id}/commit", post(commit))
        .route("/v1/inventory/products/{id}", get(stock_level))
        .route("/v1/inventory/availability", get(availability))
}

/// Refuses a body that names another store.
fn this_store(state: &AppState, given: StoreId) -> Result<StoreId, ApiError> {
    let this = state.local.read(|view| view.store_id);
    if given == this {
        Ok(this)
    } else {
        Err(ApiError::WrongStore { given, this })
    }
}

/// Records the command; an unknown product on an agent without its catalog is "not synced
/// yet" rather than "no such product".
async fn execute(state: &AppState, command: crate::store::LocalCommand) -> Result<LocalWriteResult, ApiError> {
    match state.local.execute(command).await {
        Ok(result) => Ok(result),
        Err(LocalError::UnknownProduct(_)) if !state.local.read(|view| view.sync.bootstrapped) => {
            Err(ApiError::NotBootstrapped)
        }
        Err(error) => Err(error.into()),
    }
}

/// Book a delivery at this store.
#[utoipa::path(post, path = "/v1/inventory/stock", tag = "inventory", request_body = AddStockRequest,
    params(super::WriteHeaderParams),
    responses(WriteAnswers, (status = 400, description = "invalid_idempotency_key, invalid_till_id or invalid_correlation_id"), (status = 404, description = "product_not_found"),
        (status = 422, description = "wrong_store, expected_version_unsupported or idempotency_key_reused"), (status = 503, description = "not_bootstrapped (the catalog has not come from the hub yet; Retry-After), storage_unavailable or shutting_down: nothing was recorded")),
    security(("terminal" = []), ("manager" = [])))]
pub async fn add_stock(
    State(state): State<AppState>,
    ctx: WriteContext,
    ApiJson(body): ApiJson<AddStockRequest>,
) -> Result<Response, ApiError> {
    let store_id = this_store(&state, body.store_id)?;
    let target = Target::Product(body.product_id);
    let local = ctx.command(
        store_id,
        target,
        body.command(),
        body.expected_version,
        "add_stock",
        &body,
    )?;
    Ok(written(execute(&state, local).await?))
}

/// Correct the count (signed delta, with a reason).
#[utoipa::path(post, path = "/v1/inventory/adjustments", tag = "inventory", request_body = AdjustStockRequest,
    params(super::WriteHeaderParams),
    responses(WriteAnswers, (status = 400, description = "invalid_idempotency_key, invalid_till_id or invalid_correlation_id"), (status = 404, description = "product_not_found"), (status = 409, description = "insufficient_stock"),
        (status = 422, description = "wrong_store, zero_adjustment, adjustment_out_of_range, invalid_reason, expected_version_unsupported or idempotency_key_reused"), (status = 503, description = "not_bootstrapped (the catalog has not come from the hub yet; Retry-After), storage_unavailable or shutting_down: nothing was recorded")),
    security(("terminal" = []), ("manager" = [])))]
pub async fn adjust_stock(
    State(state): State<AppState>,
    ctx: WriteContext,
    ApiJson(body): ApiJson<AdjustStockRequest>,
) -> Result<Response, ApiError> {
    let store_id = this_store(&state, body.store_id)?;
    let target = Target::Product(body.product_id);
    let local = ctx.command(
        store_id,
        target,
        body.command(),
        body.expected_version,
        "adjust_stock",
        &body,
    )?;
    Ok(written(execute(&state, local).await?))
}

/// Hold units for a customer (default 15 minutes, at most 7 days). This agent releases
/// the hold itself when it lapses.
#[utoipa::path(post, path = "/v1/inventory/reservations", tag = "inventory", request_body = ReserveStockRequest,
    params(super::WriteHeaderParams),
    responses(WriteAnswers, (status = 400, description = "invalid_idempotency_key, invalid_till_id or invalid_correlation_id"), (status = 404, description = "product_not_found"), (status = 409, description = "insufficient_stock or reservation_exists"),
        (status = 422, description = "wrong_store, invalid_ttl, expected_version_unsupported or idempotency_key_reused"), (status = 503, description = "not_bootstrapped (the catalog has not come from the hub yet; Retry-After), storage_unavailable or shutting_down: nothing was recorded")),
    security(("terminal" = []), ("manager" = [])))]
pub async fn reserve(
    State(state): State<AppState>,
    ctx: WriteContext,
    ApiJson(body): ApiJson<ReserveStockRequest>,
) -> Result<Response, ApiError> {
    let store_id = this_store(&state, body.store_id)?;
    let command = body
        .command(OffsetDateTime::now_utc())
        .map_err(|detail| ApiError::unprocessable("invalid_ttl", detail))?;
    let target = Target::Product(body.product_id);
    let local = ctx.command(store_id, target, command, body.expected_version, "reserve", &body)?;
    Ok(written(execute(&state, local).await?))
}

/// Give a hold back (reason `cancelled` unless the body says otherwise).
#[utoipa::path(post, path = "/v1/inventory/reservations/{id}/release", tag = "inventory",
    request_body(content = Option<ReleaseReservationRequest>, description = "optional"),
    params(("id" = uuid::Uuid, Path, description = "reservation id"), super::WriteHeaderParams),
    responses(WriteAnswers, (status = 400, description = "invalid_idempotency_key, invalid_till_id or invalid_correlation_id"), (status = 404, description = "reservation_not_found"),
        (status = 422, description = "expected_version_unsupported or idempotency_key_reused"), (status = 503, description = "not_bootstrapped (the catalog has not come from the hub yet; Retry-After), storage_unavailable or shutting_down: nothing was recorded")),
    security(("terminal" = []), ("manager" = [])))]
pub async fn release(
    State(state): State<AppState>,
    ctx: WriteContext,
    ApiPath(id): ApiPath<ReservationId>,
    OptionalApiJson(body): OptionalApiJson<ReleaseReservationRequest>,
) -> Result<Response, ApiError> {
    let store_id = state.local.read(|view| view.store_id);
    let target = Target::Reservation(id);
    let local = ctx.command(
        store_id,
        target,
        body.command(id),
        body.expected_version,
        "release",
        &(id, body),
    )?;
    Ok(written(execute(&state, local).await?))
}

/// Turn a hold into a sale: on hand and reserved both drop.
#[utoipa::path(post, path = "/v1/inventory/reservations/{id}/commit", tag = "inventory",
    request_body(content = Option<CommitReservationRequest>, description = "optional"),
    params(("id" = uuid::Uuid, Path, description = "reservation id"), super::WriteHeaderParams),
    responses(WriteAnswers, (status = 400, description = "invalid_idempotency_key, invalid_till_id or invalid_correlation_id"), (status = 404, description = "reservation_not_found"),
        (status = 422, description = "expected_version_unsupported or idempotency_key_reused"), (status = 503, description = "not_bootstrapped (the catalog has not come from the hub yet; Retry-After), storage_unavailable or shutting_down: nothing was recorded")),
    security(("terminal" = []), ("manager" = [])))]
pub async fn commit(
    State(state): State<AppState>,
    ctx: WriteContext,
    ApiPath(id): ApiPath<ReservationId>,
    OptionalApiJson(body): OptionalApiJson<CommitReservationRequest>,
) -> Result<Response, ApiError> {
    let store_id = state.local.read(|view| view.store_id);
    let target = Target::Reservation(id);
    let local = ctx.command(
        store_id,
        target,
        body.command(id),
        body.expected_version,
        "commit",
        &(id, body),
    )?;
    Ok(written(execute(&state, local).await?))
}

/// The local figures of a product: zeros for a catalog product without stock here, `None`
/// for a product the catalog does not know.
fn local_level(view: &View, product: ProductId) -> Option<LocalStockLevel> {
    view.stock(product).or_else(|| {
        view.catalog.contains_key(&product).then_some(LocalStockLevel {
            product_id: product,
            store_id: view.store_id,
            on_hand: 0,
            reserved: 0,
            available: 0,
            confirmed_version: 0,
            pending_events: 0,
            allocation: None,
            includes_pending: false,
        })
    })
}

fn unknown_product(view: &View, product: ProductId) -> ApiError {
    if view.sync.bootstrapped {
        ApiError::not_found("product", product)
    } else {
        ApiError::NotBootstrapped
    }
}

/// Stock of a product at this store, as the till should see it (confirmed + pending).
#[utoipa::path(get, path = "/v1/inventory/products/{id}", tag = "inventory",
    params(("id" = uuid::Uuid, Path, description = "product id")),
    responses((status = 200, body = LocalStockLevel), (status = 404, description = "product_not_found"), (status = 503, description = "not_bootstrapped: the catalog has not come from the hub yet (Retry-After)")),
    security(("terminal" = []), ("manager" = [])))]
pub async fn stock_level(
    State(state): State<AppState>,
    _till: Till,
    ApiPath(id): ApiPath<ProductId>,
) -> Result<Json<LocalStockLevel>, ApiError> {
    state
        .local
        .read(|view| local_level(view, id).ok_or_else(|| unknown_product(view, id)))
        .map(Json)
}

/// `?product_id=&quantity=` for [`availability`] (`store_id` is optional; if sent, it
/// must be this store).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityQuery {
    /// Product.
    #[param(value_type = uuid::Uuid)]
    pub product_id: ProductId,
    /// This store (optional, for clients that also talk to the hub).
    #[param(value_type = Option<uuid::Uuid>)]
    pub store_id: Option<StoreId>,
    /// Units wanted (default 1).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1_000_000)]
    pub quantity: Option<StockQuantity>,
}

/// Can this many units be reserved here now?
#[utoipa::path(get, path = "/v1/inventory/availability", tag = "inventory", params(AvailabilityQuery),
    responses((status = 200, body = LocalAvailability), (status = 404, description = "product_not_found"),
        (status = 422, description = "wrong_store"), (status = 503, description = "not_bootstrapped: the catalog has not come from the hub yet (Retry-After)")),
    security(("terminal" = []), ("manager" = [])))]
pub async fn availability(
    State(state): State<AppState>,
    _till: Till,
    ApiQuery(query): ApiQuery<AvailabilityQuery>,
) -> Result<Json<LocalAvailability>, ApiError> {
    if let Some(given) = query.store_id {
        this_store(&state, given)?;
    }
    let requested = query.quantity.map_or(1, StockQuantity::get);
    let product = query.product_id;
    let level = state
        .local
        .read(|view| local_level(view, product).ok_or_else(|| unknown_product(view, product)))?;
    Ok(Json(LocalAvailability {
        product_id: product,
        store_id: level.store_id,
        requested,
        available: level.available,
        sufficient: level.available >= i64::from(requested),
        includes_pending: level.includes_pending,
    }))
}
