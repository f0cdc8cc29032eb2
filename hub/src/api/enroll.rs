//! One-step enrollment over HTTP: the admin makes a short-lived, single-use code for a
//! store (`POST /v1/admin/stores/{id}/enrollment-codes`); the store's agent exchanges it,
//! without any token, for a new store token (`POST /v1/enroll`), after checking the hub's
//! protocol version (`GET /v1/version`). Codes are stored hashed; refused redemptions are
//! limited per minute ([`crate::enrollment`]).

use super::auth::Principal;
use super::error::ApiError;
use super::AppState;
use crate::store::{EnrollmentCodeRecord, WriteError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use shelfsync_common::server::extract::{ApiJson, ApiPath};
use shelfsync_common::server::failure::Reject;
use shelfsync_common::server::secret::{digest, new_secret};
use shelfsync_common::wire::enrollment::{
    display_code, normalize_code, EnrollRequest, Enrollment, EnrollmentCode, HubVersion,
};
use shelfsync_common::wire::sync::PROTOCOL_VERSION;
use shelfsync_common::StoreId;
use time::OffsetDateTime;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/stores/{id}/enrollment-codes", post(create_code))
        .route("/v1/enroll", post(redeem_code))
        .route("/v1/version", get(hub_version))
}

/// Make an enrollment code for a store (admin token): shown once, works once, for
/// `enrollment.code_ttl_secs`.
#[utoipa::path(post, path = "/v1/admin/stores/{id}/enrollment-codes", tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "store id")),
    responses((status = 201, body = EnrollmentCode), (status = 403, description = "forbidden: needs the admin token"), (status = 404, description = "store_not_found"),
        (status = 503, description = "storage_unavailable or shutting_down: nothing was written; retry")))]
pub async fn create_code(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<StoreId>,
) -> Result<(StatusCode, Json<EnrollmentCode>), ApiError> {
    principal.require_admin()?;
    let store = state
        .log
        .stores()
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .ok_or_else(|| ApiError::not_found("store", id))?;
    let code = crate::enrollment::new_code();
    let now = OffsetDateTime::now_utc();
    let ttl = state.config.enrollment.code_ttl_secs;
    let expires_at = now + time::Duration::seconds(i64::try_from(ttl).unwrap_or(i64::MAX / 2));
    state
        .log
        .add_enrollment_code(EnrollmentCodeRecord {
            code_sha256: digest(&code),
            store_id: id,
            created_at: now.unix_timestamp(),
            expires_at: expires_at.unix_timestamp(),
        })
        .await?;
    let (hub_url, derived) = state.public_url.clone();
    if derived {
        tracing::warn!(%hub_url, "public_url is not set: the enrollment command names the listen address; set public_url to the address stores reach");
    }
    let shown = display_code(&code);
    tracing::info!(store = %id, expires_at = %expires_at, "enrollment code made");
    Ok((
        StatusCode::CREATED,
        Json(EnrollmentCode {
            store_id: id,
            store_name: store.name,
            command: format!("shelfsync-edge enroll --hub {hub_url} --code {shown}").into(),
            code: shown.into(),
            expires_at,
        }),
    ))
}

/// Exchange an enrollment code for the store's new token (no token needed). A used,
/// expired or unknown code is refused and changes nothing; so are more than
/// `enrollment.max_failures_per_minute` refusals a minute.
#[utoipa::path(post, path = "/v1/enroll", tag = "sync", request_body = EnrollRequest, security(()),
    responses((status = 200, body = Enrollment), (status = 404, description = "enrollment_code_unknown"),
        (status = 410, description = "enrollment_code_used or enrollment_code_expired: make a new code at the hub"),
        (status = 422, description = "invalid_enrollment_code: not XXXX-XXXX"),
        (status = 429, description = "enrollment_rate_limited: too many refused codes this minute; Retry-After says when to retry"),
        (status = 503, description = "storage_unavailable or shutting_down: nothing was written; retry")))]
pub async fn redeem_code(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<EnrollRequest>,
) -> Result<Json<Enrollment>, ApiError> {
    let Some(code) = normalize_code(&body.code) else {
        return Err(ApiError::unprocessable(
            "invalid_enrollment_code",
            "an enrollment code is 8 letters and digits, XXXX-XXXX, as `shelfsync-hub store add --enroll` printed it",
        ));
    };
    // Counted before the code is looked up, so concurrent guesses cannot overrun the limit
    // (a malformed code is not a guess and is not counted).
    if let Err(retry_after_secs) = state.enroll_failures.acquire() {
        tracing::warn!("enrollment refused: too many refused codes this minute");
        return Err(ApiError::EnrollmentRateLimited { retry_after_secs });
    }
    let secret = new_secret();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let redeemed = match state
        .log
        .redeem_enrollment_code(digest(&code), digest(&secret), now)
        .await
    {
        Ok(redeemed) => redeemed,
        Err(
            error @ (WriteError::EnrollmentCodeUnknown
            | WriteError::EnrollmentCodeUsed
            | WriteError::EnrollmentCodeExpired),
        ) => {
            tracing::warn!(%error, "enrollment code refused");
            return Err(error.into());
        }
        Err(error) => {
            // Not a refused guess (storage, shutdown): it does not count.
            state.enroll_failures.release();
            return Err(error.into());
        }
    };
    state.enroll_failures.release();
    super::stores::end_push_streams(&state, &redeemed.revoked);
    let store_name = state
        .log
        .stores()
        .await?
        .into_iter()
        .find(|s| s.id == redeemed.store)
        .map(|s| s.name)
        .unwrap_or_default();
    tracing::info!(store = %redeemed.store, name = %store_name, "store enrolled with a code");
    Ok(Json(Enrollment {
        store_id: redeemed.store,
        store_name,
        token: secret.into(),
        protocol_version: PROTOCOL_VERSION.into(),
    }))
}

/// The hub's sync protocol version and build (no token needed): what an agent checks
/// before it enrolls.
#[utoipa::path(get, path = "/v1/version", tag = "ops", security(()),
    responses((status = 200, body = HubVersion)))]
pub async fn hub_version() -> Json<HubVersion> {
    Json(HubVersion {
        protocol_version: PROTOCOL_VERSION.into(),
        hub_version: env!("CARGO_PKG_VERSION").into(),
    })
}
