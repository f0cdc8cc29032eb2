//! Allocations at the hub (`docs/allocations.md`): the admin sets a stream's policy
//! (`POST /v1/inventory/allocations`), and a store's agent, online, asks for more of the
//! hub's share in one round trip (`POST /v1/sync/allocations/request`). Both are ordinary
//! commands through the writer's `decide`/`apply`, so the escrow rules are the domain's,
//! not this file's: the hub gives only from its own share.

use super::auth::StoreAgent;
use super::error::ApiError;
use super::write::{written, WriteAnswers, WriteContext, WriteHeaderParams};
use super::AppState;
use crate::jobs::hub_command;
use crate::store::{Command, InventoryTarget, WriteError};
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use shelfsync_common::domain::allocation::Share;
use shelfsync_common::server::extract::ApiJson;
use shelfsync_common::wire::api::SetAllocationRequest;
use shelfsync_common::wire::fingerprint::Fingerprint;
use shelfsync_common::wire::sync::{ShareGrant, ShareRequest};
use shelfsync_common::{DomainError, EventPayload, ExpectedVersion, InventoryCommand, StockQuantity, StoreId};
use time::OffsetDateTime;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/inventory/allocations", post(set_allocation))
        .route("/v1/sync/allocations/request", post(request_share))
}

/// Set how the hub's share of a product at a store is kept (admin only). A new policy
/// takes nothing from the store: the store's agent gives the hub its share when it
/// receives the policy, and deliveries booked at the hub fill it.
#[utoipa::path(post, path = "/v1/inventory/allocations", tag = "inventory", request_body = SetAllocationRequest, params(WriteHeaderParams),
    responses(WriteAnswers, (status = 400, description = "invalid_if_match, invalid_idempotency_key, invalid_correlation_id or conflicting_preconditions"), (status = 403, description = "forbidden: only the admin token sets allocations"), (status = 404, description = "product_not_found or store_not_found"),
        (status = 409, description = "version_conflict"), (status = 422, description = "invalid_allocation or idempotency_key_reused"), (status = 503, description = "storage_unavailable or shutting_down: nothing was written; retry")))]
pub async fn set_allocation(
    State(state): State<AppState>,
    ctx: WriteContext,
    ApiJson(body): ApiJson<SetAllocationRequest>,
) -> Result<Response, ApiError> {
    ctx.principal.require_admin()?;
    let command = Command::Inventory {
        target: InventoryTarget::Stream(body.product_id, body.store_id),
        command: body.command(),
    };
    let request = ctx.command(command, body.expected_version, "set_allocation", &body)?;
    Ok(written(state.log.execute(request).await?, None))
}

/// A store asks for more units of the hub's share of one of its products: the hub gives
/// what its share holds, up to the units asked, and answers in the same round trip.
#[utoipa::path(post, path = "/v1/sync/allocations/request", tag = "sync", request_body = ShareRequest,
    responses((status = 200, body = ShareGrant, description = "granted (possibly 0 units); the agent has them once its cursor reaches `position`"),
        (status = 401, description = "unauthorized"), (status = 403, description = "forbidden: only a store token"), (status = 404, description = "product_not_found"),
        (status = 409, description = "no_allocation: the stream has no allocation"), (status = 422, description = "idempotency_key_reused: the event_id was used for another request"), (status = 503, description = "storage_unavailable or shutting_down: nothing was written; retry")))]
pub async fn request_share(
    State(state): State<AppState>,
    StoreAgent(store, _): StoreAgent,
    ApiJson(body): ApiJson<ShareRequest>,
) -> Result<Json<ShareGrant>, ApiError> {
    let mut asked = body.quantity;
    let result = loop {
        match state.log.execute(grant(store, &body, asked)).await {
            Ok(result) => break Some(result),
            // The hub's share holds fewer units than asked: give what it holds.
            Err(WriteError::Domain(DomainError::ShareExhausted { left, .. })) => match StockQuantity::new(left) {
                Ok(fewer) if fewer < asked => asked = fewer,
                _ => break None,
            },
            Err(error) => return Err(error.into()),
        }
    };
    // A retry (same event_id) is answered with the first grant, whatever was asked.
    let granted = result
        .as_ref()
        .and_then(|r| r.events.first())
        .map_or(0, |event| match event.payload {
            EventPayload::AllocationTransferred { quantity, .. } => i64::from(quantity),
            _ => 0,
        });
    let position = result.as_ref().map(|r| r.position);
    let level = state.queries.stock_level(body.product_id, store, position).await?.value;
    let allocation = level
        .and_then(|l| l.allocation)
        .ok_or(ApiError::Append(WriteError::Domain(DomainError::NoAllocation)))?;
    Ok(Json(ShareGrant {
        granted,
        position,
        allocation,
    }))
}

/// The transfer of `quantity` units to the store; under the body's `event_id` when it
/// names one, so that a retried request is answered with its first grant.
fn grant(store: StoreId, body: &ShareRequest, quantity: StockQuantity) -> crate::store::CommandRequest {
    let mut request = hub_command(
        InventoryTarget::Stream(body.product_id, store),
        InventoryCommand::TransferAllocation {
            to: Share::Store,
            quantity,
        },
        ExpectedVersion::Any,
        format!("store:{store}"),
        OffsetDateTime::now_utc(),
    );
    if let Some(event_id) = body.event_id {
        request.event_id = event_id;
        request.fingerprint = Fingerprint::of_write("request_share", &(store, body.clone()));
    }
    request
}
