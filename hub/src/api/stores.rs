//! `/v1/admin/stores` and `/v1/admin/fleet`: enrolling stores, their tokens, and the
//! fleet's health (admin token only).

use super::auth::Principal;
use super::error::ApiError;
use super::AppState;
use crate::store::TokenRecord;
use crate::store::{RevokedTokens, TokenSelector};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use shelfsync_common::server::extract::{ApiJson, ApiPath};
use shelfsync_common::server::failure::Reject;
use shelfsync_common::server::secret::{digest, new_secret};
use shelfsync_common::wire::api::{valid_name, StoreInfo};
use shelfsync_common::wire::sync::{EnrollStoreRequest, EnrolledStore, FleetAllocations, FleetResponse, FleetStore};
use shelfsync_common::StoreId;
use std::collections::HashMap;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/stores", post(enroll).get(list))
        .route("/v1/admin/stores/{id}/revoke", post(revoke))
        .route("/v1/admin/stores/{id}/token", post(rotate_token))
        .route("/v1/admin/fleet", get(fleet))
}

/// A new token for `store`: its secret (to show once) and its record (hash only).
pub(crate) fn store_token(store: StoreId) -> (String, TokenRecord) {
    let secret = new_secret();
    let record = TokenRecord::for_store(store, digest(&secret), time::OffsetDateTime::now_utc());
    (secret, record)
}

/// Enroll a store; the answer holds its token, shown this once.
#[utoipa::path(post, path = "/v1/admin/stores", tag = "admin", request_body = EnrollStoreRequest,
    responses((status = 201, body = EnrolledStore), (status = 403, description = "forbidden: needs the admin token"), (status = 409, description = "store_exists, token_name_taken, or store_name_taken (another store has this name; `existing_store_id` names it; send allow_duplicate_name to enroll a second one)"),
        (status = 422, description = "invalid_name"), (status = 503, description = "storage_unavailable or shutting_down: nothing was written; retry")))]
pub async fn enroll(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<EnrollStoreRequest>,
) -> Result<(StatusCode, Json<EnrolledStore>), ApiError> {
    principal.require_admin()?;
    if !valid_name(&body.name) {
        return Err(ApiError::unprocessable(
            "invalid_name",
            "name must be 1..=64 letters, digits, spaces, '-', '_' or '.'",
        ));
    }
    let id = body.id.unwrap_or_else(StoreId::new_v7);
    let (token, record) = store_token(id);
    let store = state
        .log
        .enroll_store(id, body.name, record, body.allow_duplicate_name)
        .await?;
    tracing::info!(store = %store.id, name = %store.name, "store enrolled");
    Ok((
        StatusCode::CREATED,
        Json(EnrolledStore {
            store,
            token: token.into(),
        }),
    ))
}

/// Every enrolled store.
#[utoipa::path(get, path = "/v1/admin/stores", tag = "admin",
    responses((status = 200, body = Vec<StoreInfo>), (status = 403, description = "forbidden: needs the admin token"), (status = 503, description = "storage_unavailable")))]
pub async fn list(State(state): State<AppState>, principal: Principal) -> Result<Json<Vec<StoreInfo>>, ApiError> {
    principal.require_admin()?;
    Ok(Json(state.log.stores().await?))
}

/// Revoke a store's token: refused from its next request on, and its open push streams end.
#[utoipa::path(post, path = "/v1/admin/stores/{id}/revoke", tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "store id")),
    responses((status = 204, description = "revoked"), (status = 403, description = "forbidden: needs the admin token"), (status = 404, description = "store_not_found"), (status = 503, description = "storage_unavailable or shutting_down: nothing was written; retry")))]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<StoreId>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    let revoked = revoke_tokens(&state, TokenSelector::Store(id)).await?;
    if revoked == 0 && !store_exists(&state, id).await? {
        return Err(ApiError::not_found("store", id));
    }
    tracing::info!(store = %id, revoked, "store token revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// Issue a new token for a store: its old tokens are revoked and the new one stored in one
/// transaction, and its open push streams end.
#[utoipa::path(post, path = "/v1/admin/stores/{id}/token", tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "store id")),
    responses((status = 201, body = EnrolledStore), (status = 403, description = "forbidden: needs the admin token"), (status = 404, description = "store_not_found"),
        (status = 409, description = "token_name_taken"), (status = 503, description = "storage_unavailable or shutting_down: nothing was written; retry")))]
pub async fn rotate_token(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<StoreId>,
) -> Result<(StatusCode, Json<EnrolledStore>), ApiError> {
    principal.require_admin()?;
    let stores = state.log.stores().await?;
    let store = stores
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ApiError::not_found("store", id))?;
    let (token, record) = store_token(id);
    let revoked = state.log.rotate_store_token(id, record).await?;
    end_push_streams(&state, &revoked);
    Ok((
        StatusCode::CREATED,
        Json(EnrolledStore {
            store: StoreInfo {
                revoked: false,
                ..store
            },
            token: token.into(),
        }),
    ))
}

/// Revokes the selected tokens and ends the push streams of every store whose token was
/// among them: the one way the API revokes, so no route can leave a revoked store's stream
/// open. Returns how many tokens were revoked.
pub(super) async fn revoke_tokens(state: &AppState, selector: TokenSelector) -> Result<usize, ApiError> {
    let revoked = state.log.revoke_tokens(selector).await?;
    end_push_streams(state, &revoked);
    Ok(revoked.count)
}

pub(super) fn end_push_streams(state: &AppState, revoked: &RevokedTokens) {
    for (store, token) in &revoked.store_tokens {
        state.fleet.revoke(*store, *token);
    }
}

async fn store_exists(state: &AppState, id: StoreId) -> Result<bool, ApiError> {
    let stores = state.log.stores().await?;
    Ok(stores.iter().any(|s| s.id == id))
}

/// Every store's health: last contact, push stream, cursor lag, outbox, oversells, rejects.
#[utoipa::path(get, path = "/v1/admin/fleet", tag = "admin",
    responses((status = 200, body = FleetResponse), (status = 403, description = "forbidden: needs the admin token"), (status = 503, description = "storage_unavailable")))]
pub async fn fleet(State(state): State<AppState>, principal: Principal) -> Result<Json<FleetResponse>, ApiError> {
    principal.require_admin()?;
    Ok(Json(fleet_view(&state).await?))
}

/// Every store's health as the fleet route answers it (the back office's fleet page
/// shows the same).
pub async fn fleet_view(state: &AppState) -> Result<FleetResponse, ApiError> {
    let head = state.log.bus().head();
    let now = time::OffsetDateTime::now_utc();
    let (stores, stats) = state.log.stores_with_stats().await?;
    // With several hubs on one database, an agent may talk to any of them.
    let mut elsewhere: HashMap<_, crate::fleet::Presence> = HashMap::new();
    for (store, presence) in state.log.others_presence().await? {
        elsewhere.entry(store).or_default().merge(presence);
    }
    let mut allocations: HashMap<StoreId, FleetAllocations> = HashMap::new();
    for level in state.read_model.allocated_streams().await? {
        if let Some(shares) = level.allocation {
            let sum = allocations.entry(level.store_id).or_default();
            sum.streams += 1;
            sum.hub_share += shares.hub_share;
            sum.store_share += shares.store_share;
        }
    }
    let stores = stores
        .into_iter()
        .map(|store| {
            let mut presence = state.fleet.presence(store.id);
            if let Some(other) = elsewhere.remove(&store.id) {
                presence.merge(other);
            }
            let counts = stats.get(&store.id).copied().unwrap_or_default();
            FleetStore {
                last_seen: presence.last_seen,
                push_connected: presence.push_streams > 0,
                cursor_lag: presence.heartbeat.as_ref().map(|h| head.saturating_sub(h.cursor)),
                cursor_lag_age_secs: presence
                    .heartbeat_at
                    .map(|at| u64::try_from((now - at).whole_seconds()).unwrap_or(0)),
                heartbeat: presence.heartbeat,
                oversells: counts.oversells,
                rejected_uploads: counts.rejected_uploads,
                allocations: allocations.get(&store.id).copied(),
                store,
            }
        })
        .collect();
    Ok(FleetResponse { head, stores })
}
