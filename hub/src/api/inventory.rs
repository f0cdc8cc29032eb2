//! `/v1/inventory` commands: deliveries, count corrections, reservations and sales, as
//! strict commands. Short stock is refused with 409 `insufficient_stock`; the stream's
//! version guards concurrent writers (`If-Match` or `expected_version`).

use super::error::ApiError;
use super::write::{written, WriteAnswers, WriteContext, WriteHeaderParams};
use super::AppState;
use crate::store::{Command, InventoryTarget};
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use shelfsync_common::server::extract::{ApiJson, ApiPath, OptionalApiJson};
use shelfsync_common::server::failure::Reject;
use shelfsync_common::wire::api::{
    AddStockRequest, AdjustStockRequest, CommitReservationRequest, ReleaseReservationRequest, ReserveStockRequest,
};
use shelfsync_common::ReservationId;
use time::OffsetDateTime;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/inventory/stock", post(add_stock))
        .route("/v1/inventory/adjustments", post(adjust_stock))
        .route("/v1/inventory/reservations", post(reserve))
        .route("/v1/inventory/reservations/{id}/release", post(release))
        .route("/v1/inventory/reservations/{id}/commit", post(commit))
}

/// Book a delivery.
#[utoipa::path(post, path = "/v1/inventory/stock", tag = "inventory", request_body = AddStockRequest, params(WriteHeaderParams),
    responses(WriteAnswers, (status = 400, description = "invalid_if_match, invalid_idempotency_key, invalid_correlation_id or conflicting_preconditions"), (status = 403, description = "forbidden: store tokens may only use the /v1/sync routes"), (status = 404, description = "product_not_found or store_not_found"),
        (status = 409, description = "version_conflict"), (status = 422, description = "idempotency_key_reused"), (status = 503, description = "storage_unavailable or shutting_down: nothing was written; retry")))]
pub async fn add_stock(
    State(state): State<AppState>,
    ctx: WriteContext,
    ApiJson(body): ApiJson<AddStockRequest>,
) -> Result<Response, ApiError> {
    ctx.principal.require_channel()?;
    let command = Command::Inventory {
        target: InventoryTarget::Stream(body.product_id, body.store_id),
        command: body.command(),
    };
    let request = ctx.command(command, body.expected_version, "add_stock", &body)?;
    Ok(written(state.log.execute(request).await?, None))
}

/// Correct the count (signed delta, with a reason).
#[utoipa::path(post, path = "/v1/inventory/adjustments", tag = "inventory", request_body = AdjustStockRequest, params(WriteHeaderParams),
    responses(WriteAnswers, (status = 400, description = "invalid_if_match, invalid_idempotency_key, invalid_correlation_id or conflicting_preconditions"), (status = 403, description = "forbidden: store tokens may only use the /v1/sync routes"), (status = 404, description = "product_not_found or store_not_found"),
        (status = 409, description = "insufficient_stock or version_conflict"),
        (status = 422, description = "zero_adjustment, adjustment_out_of_range, invalid_reason or idempotency_key_reused"), (status = 503, description = "storage_unavailable or shutting_down: nothing was written; retry")))]
pub async fn adjust_stock(
    State(state): State<AppState>,
    ctx: WriteContext,
    ApiJson(body): ApiJson<AdjustStockRequest>,
) -> Result<Response, ApiError> {
    ctx.principal.require_channel()?;
    let command = Command::Inventory {
        target: InventoryTarget::Stream(body.product_id, body.store_id),
        command: body.command(),
    };
    let request = ctx.command(command, body.expected_version, "adjust_stock", &body)?;
    Ok(written(state.log.execute(request).await?, None))
}

/// Hold units for a customer (default 15 minutes). `Location` names the reservation.
#[utoipa::path(post, path = "/v1/inventory/reservations", tag = "inventory", request_body = ReserveStockRequest, params(WriteHeaderParams),
    responses(WriteAnswers, (status = 400, description = "invalid_if_match, invalid_idempotency_key, invalid_correlation_id or conflicting_preconditions"), (status = 403, description = "forbidden: store tokens may only use the /v1/sync routes"), (status = 404, description = "product_not_found or store_not_found"),
        (status = 409, description = "insufficient_stock, reservation_exists or version_conflict"),
        (status = 422, description = "invalid_ttl or idempotency_key_reused"), (status = 503, description = "storage_unavailable or shutting_down: nothing was written; retry")))]
pub async fn reserve(
    State(state): State<AppState>,
    ctx: WriteContext,
    ApiJson(body): ApiJson<ReserveStockRequest>,
) -> Result<Response, ApiError> {
    ctx.principal.require_channel()?;
    let command = Command::Inventory {
        target: InventoryTarget::Stream(body.product_id, body.store_id),
        command: body
            .command(OffsetDateTime::now_utc())
            .map_err(|detail| ApiError::unprocessable("invalid_ttl", detail))?,
    };
    let request = ctx.command(command, body.expected_version, "reserve", &body)?;
    let result = state.log.execute(request).await?;
    let location = result.events.first().and_then(|e| match &e.payload {
        shelfsync_common::EventPayload::StockReserved { reservation_id, .. } => {
            Some(format!("/v1/inventory/reservations/{reservation_id}"))
        }
        _ => None,
    });
    Ok(written(result, location))
}

/// Give a hold back (reason `cancelled` unless the body says otherwise).
#[utoipa::path(post, path = "/v1/inventory/reservations/{id}/release", tag = "inventory",
    request_body(content = Option<ReleaseReservationRequest>, description = "optional"),
    params(("id" = uuid::Uuid, Path, description = "reservation id"), WriteHeaderParams),
    responses(WriteAnswers, (status = 400, description = "invalid_if_match, invalid_idempotency_key, invalid_correlation_id or conflicting_preconditions"), (status = 403, description = "forbidden: store tokens may only use the /v1/sync routes"), (status = 404, description = "reservation_not_found"),
        (status = 409, description = "version_conflict"), (status = 422, description = "idempotency_key_reused"), (status = 503, description = "storage_unavailable or shutting_down: nothing was written; retry")))]
pub async fn release(
    State(state): State<AppState>,
    ctx: WriteContext,
    ApiPath(id): ApiPath<ReservationId>,
    OptionalApiJson(body): OptionalApiJson<ReleaseReservationRequest>,
) -> Result<Response, ApiError> {
    ctx.principal.require_channel()?;
    let command = Command::Inventory {
        target: InventoryTarget::Reservation(id),
        command: body.command(id),
    };
    let request = ctx.command(command, body.expected_version, "release", &(id, body))?;
    Ok(written(state.log.execute(request).await?, None))
}

/// Turn a hold into a sale.
#[utoipa::path(post, path = "/v1/inventory/reservations/{id}/commit", tag = "inventory",
    request_body(content = Option<CommitReservationRequest>, description = "optional"),
    params(("id" = uuid::Uuid, Path, description = "reservation id"), WriteHeaderParams),
    responses(WriteAnswers, (status = 400, description = "invalid_if_match, invalid_idempotency_key, invalid_correlation_id or conflicting_preconditions"), (status = 403, description = "forbidden: store tokens may only use the /v1/sync routes"), (status = 404, description = "reservation_not_found"),
        (status = 409, description = "version_conflict"), (status = 422, description = "idempotency_key_reused"), (status = 503, description = "storage_unavailable or shutting_down: nothing was written; retry")))]
pub async fn commit(
    State(state): State<AppState>,
    ctx: WriteContext,
    ApiPath(id): ApiPath<ReservationId>,
    OptionalApiJson(body): OptionalApiJson<CommitReservationRequest>,
) -> Result<Response, ApiError> {
    ctx.principal.require_channel()?;
    let command = Command::Inventory {
        target: InventoryTarget::Reservation(id),
        command: body.command(id),
    };
    let request = ctx.command(command, body.expected_version, "commit", &(id, body))?;
    Ok(written(state.log.execute(request).await?, None))
}
