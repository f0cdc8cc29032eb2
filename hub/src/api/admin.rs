//! `/v1/admin`: operator routes (admin token only): channel tokens for the hub's clients.

use super::auth::Principal;
use super::error::ApiError;
use super::AppState;
use crate::store::TokenRecord;
use crate::store::TokenSelector;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use shelfsync_common::server::extract::{ApiJson, ApiPath};
use shelfsync_common::server::failure::Reject;
use shelfsync_common::server::secret::{digest, new_secret};
use shelfsync_common::wire::api::{valid_name, CreateTokenRequest, CreatedToken};

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/tokens", post(create_token))
        .route("/v1/admin/tokens/{name}/revoke", post(revoke_token))
}

/// Make a channel token; its secret is in this answer only.
#[utoipa::path(post, path = "/v1/admin/tokens", tag = "admin", request_body = CreateTokenRequest,
    responses((status = 201, body = CreatedToken), (status = 403, description = "forbidden: needs the admin token"), (status = 409, description = "token_name_taken"),
        (status = 422, description = "invalid_name"), (status = 503, description = "storage_unavailable or shutting_down: nothing was written; retry")))]
pub async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    principal.require_admin()?;
    let created = issue_channel_token(&state.log, &body.name).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Stores a new channel token named `name` and returns its secret.
pub async fn issue_channel_token(log: &crate::store::EventStore, name: &str) -> Result<CreatedToken, ApiError> {
    if !valid_name(name) {
        return Err(ApiError::unprocessable(
            "invalid_name",
            "name must be 1..=64 letters, digits, spaces, '-', '_' or '.'",
        ));
    }
    let secret = new_secret();
    let record = TokenRecord {
        id: uuid::Uuid::now_v7(),
        name: name.to_owned(),
        role: "channel".into(),
        store_id: None,
        secret_sha256: digest(&secret),
        created_at: time::OffsetDateTime::now_utc(),
        revoked_at: None,
    };
    log.add_token(record).await?;
    Ok(CreatedToken {
        name: name.to_owned(),
        secret: secret.into(),
    })
}

/// Revoke the live channel token with this name (refused from the next request on). Store
/// tokens are not named here: they are revoked through their store.
#[utoipa::path(post, path = "/v1/admin/tokens/{name}/revoke", tag = "admin",
    params(("name" = String, Path, description = "token name")),
    responses((status = 204, description = "revoked"), (status = 403, description = "forbidden: needs the admin token"), (status = 404, description = "token_not_found"), (status = 503, description = "storage_unavailable or shutting_down: nothing was written; retry")))]
pub async fn revoke_token(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    match super::stores::revoke_tokens(&state, TokenSelector::Channel(name.clone())).await? {
        0 => Err(ApiError::not_found("token", name)),
        _ => Ok(StatusCode::NO_CONTENT),
    }
}
