//! `GET /v1/sync/snapshot`: a new agent's starting point. The store's stock rows, its open
//! reservations and the whole catalog, all read in one read transaction of the read model,
//! so they reflect exactly the events up to one position P; the agent then follows from P.

use super::auth::StoreAgent;
use super::error::ApiError;
use super::AppState;
use axum::extract::State;
use axum::Json;
use shelfsync_common::wire::sync::SnapshotResponse;

/// The store's state as of one position.
#[utoipa::path(get, path = "/v1/sync/snapshot", tag = "sync",
    responses((status = 200, body = SnapshotResponse), (status = 403, description = "forbidden: the sync routes take a store token"), (status = 503, description = "read_model_unavailable (Retry-After), read_model_behind (min_position not reached in time) or storage_unavailable")))]
pub async fn snapshot(
    State(state): State<AppState>,
    StoreAgent(store, _): StoreAgent,
) -> Result<Json<SnapshotResponse>, ApiError> {
    let snapshot = state.read_model.store_snapshot(store).await?;
    Ok(Json(snapshot))
}
