//! `POST /v1/inventory/allocations/request`: a till whose sale was refused with
//! `allocation_exhausted` asks, while the store is online, for more of the units the hub
//! keeps for online orders (`docs/allocations.md`). It is the one till route that needs
//! the hub: one round trip (`POST /v1/sync/allocations/request`), then a short wait until
//! the hub's transfer event has reached this store's confirmed state, so that the till's
//! next sale finds the units. Offline, it answers `503 hub_unreachable` at once (the
//! breaker is open): the store then sells only from its own share.

use super::error::ApiError;
use super::AppState;
use crate::store::LocalError;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use shelfsync_common::server::extract::ApiJson;
use shelfsync_common::wire::edge::LocalStockLevel;
use shelfsync_common::wire::sync::ShareRequest;
use shelfsync_common::DomainError;
use std::time::{Duration, Instant};

/// How long the answer waits for the granted units to arrive by push.
const ARRIVAL_WAIT: Duration = Duration::from_secs(5);

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/inventory/allocations/request", post(request_share))
}

/// The answer: how many units the hub gave, and the local figures with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShareAnswer {
    /// Units moved from the hub's share to this store's (0 when the hub's share is empty).
    pub granted: i64,
    /// The local figures after the grant arrived (both shares included).
    pub stock: Option<LocalStockLevel>,
}

/// Ask the hub for more of a product's shared units (online only).
#[utoipa::path(post, path = "/v1/inventory/allocations/request", tag = "inventory", request_body = ShareRequest,
    responses((status = 200, body = ShareAnswer), (status = 404, description = "product_not_found"),
        (status = 409, description = "no_allocation: the product has no allocation here"),
        (status = 503, description = "hub_unreachable: the hub could not be asked (offline); sell from the store's share")),
    security(("terminal" = []), ("manager" = [])))]
pub async fn request_share(
    State(state): State<AppState>,
    _till: super::auth::Till,
    ApiJson(body): ApiJson<ShareRequest>,
) -> Result<Json<ShareAnswer>, ApiError> {
    let product = body.product_id;
    if !state.local.read(|view| view.catalog.contains_key(&product)) {
        return Err(LocalError::UnknownProduct(product).into());
    }
    let grant = match state.hub.request_share(&body).await {
        Ok(Ok(grant)) => grant,
        Ok(Err(code)) if code == "no_allocation" => return Err(LocalError::Domain(DomainError::NoAllocation).into()),
        // The hub does not know a product this store's catalog has: not synced yet.
        Ok(Err(_)) => return Err(LocalError::UnknownProduct(product).into()),
        Err(error) => return Err(ApiError::HubUnreachable(error.to_string())),
    };
    if let Some(position) = grant.position {
        let deadline = Instant::now() + ARRIVAL_WAIT;
        while state.local.read(|view| view.sync.cursor) < position && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let stock = state.local.read(|view| view.stock(product));
    Ok(Json(ShareAnswer {
        granted: grant.granted,
        stock,
    }))
}
