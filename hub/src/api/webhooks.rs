//! `/v1/admin/webhooks`, `/v1/admin/analytics/*` and `/v1/admin/jobs` (admin token only):
//! webhook subscribers, their deliveries and redelivery by hand; the analytics settings
//! (reorder points, a store's time zone); the scheduled jobs' board.

use super::auth::Principal;
use super::error::ApiError;
use super::AppState;
use crate::analytics::parse_time_zone;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use shelfsync_common::server::extract::{ApiJson, ApiPath, ApiQuery};
use shelfsync_common::server::failure::Reject;
use shelfsync_common::wire::analytics::{
    valid_webhook_events, valid_webhook_url, DeliveryList, DeliveryStatus, RegisterWebhook, ReorderPoint,
    StoreSettings, Webhook, WebhookList, MAX_REORDER_POINT,
};
use shelfsync_common::wire::jobs::JobList;
use shelfsync_common::StoreId;
use uuid::Uuid;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/webhooks", post(register_webhook).get(list_webhooks))
        .route("/v1/admin/webhooks/{id}", delete(remove_webhook))
        .route("/v1/admin/webhooks/{id}/deliveries", get(webhook_deliveries))
        .route(
            "/v1/admin/webhooks/{id}/deliveries/{alert_id}/redeliver",
            post(redeliver),
        )
        .route("/v1/admin/analytics/reorder-points", put(set_reorder_point))
        .route("/v1/admin/analytics/stores/{id}/settings", put(set_store_settings))
        .route("/v1/admin/jobs", get(list_jobs))
}

/// Register a webhook: the alerts of the listed kinds raised from now on are POSTed to
/// `url`, signed with `secret` (`Shelfsync-Signature: t=...,v1=...`).
#[utoipa::path(post, path = "/v1/admin/webhooks", tag = "admin", request_body = RegisterWebhook,
    responses((status = 201, body = Webhook), (status = 403, description = "forbidden: needs the admin token"),
        (status = 422, description = "invalid_url, invalid_events or invalid_secret"), (status = 503, description = "storage_unavailable")))]
pub async fn register_webhook(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<RegisterWebhook>,
) -> Result<(StatusCode, Json<Webhook>), ApiError> {
    principal.require_admin()?;
    let parsed = reqwest::Url::parse(&body.url).ok();
    if !valid_webhook_url(&body.url) || parsed.is_none_or(|url| url.host().is_none()) {
        return Err(ApiError::unprocessable(
            "invalid_url",
            "url must be an http:// or https:// URL of at most 2048 bytes",
        ));
    }
    if !valid_webhook_events(&body.events) {
        return Err(ApiError::unprocessable(
            "invalid_events",
            "events must list at least one of low_stock, low_stock_cleared and oversell, each once",
        ));
    }
    if !(16..=256).contains(&body.secret.len()) || body.secret.chars().any(char::is_control) {
        return Err(ApiError::unprocessable(
            "invalid_secret",
            "secret must be 16..=256 bytes without control characters",
        ));
    }
    Ok((StatusCode::CREATED, Json(state.webhooks.register(body).await?)))
}

/// Every webhook, with its cursor, pending attempts and breaker.
#[utoipa::path(get, path = "/v1/admin/webhooks", tag = "admin",
    responses((status = 200, body = WebhookList), (status = 403, description = "forbidden: needs the admin token"), (status = 503, description = "storage_unavailable")))]
pub async fn list_webhooks(State(state): State<AppState>, principal: Principal) -> Result<Json<WebhookList>, ApiError> {
    principal.require_admin()?;
    Ok(Json(WebhookList {
        webhooks: state.webhooks.list().await?,
    }))
}

/// Remove a webhook with its delivery records; its sender stops.
#[utoipa::path(delete, path = "/v1/admin/webhooks/{id}", tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "webhook id")),
    responses((status = 204, description = "removed"), (status = 403, description = "forbidden: needs the admin token"),
        (status = 404, description = "webhook_not_found"), (status = 503, description = "storage_unavailable")))]
pub async fn remove_webhook(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    match state.webhooks.remove(id).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::not_found("webhook", id)),
    }
}

/// `?status=&limit=`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// Only this status (`dead`: the dead-letter list).
    #[param(inline)]
    pub status: Option<DeliveryStatus>,
    /// At most this many, newest first (1..=1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// A webhook's delivery records; `?status=dead` is its dead-letter list.
#[utoipa::path(get, path = "/v1/admin/webhooks/{id}/deliveries", tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "webhook id"), DeliveriesQuery),
    responses((status = 200, body = DeliveryList), (status = 400, description = "invalid_query (an unknown status) or invalid_limit"),
        (status = 403, description = "forbidden: needs the admin token"), (status = 404, description = "webhook_not_found"), (status = 503, description = "storage_unavailable")))]
pub async fn webhook_deliveries(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    principal.require_admin()?;
    let limit = match query.limit.unwrap_or(100) {
        limit @ 1..=1000 => limit as usize,
        _ => return Err(ApiError::bad_request("invalid_limit", "limit must be 1..=1000")),
    };
    let status = query.status.map(|s| s.as_str().to_owned());
    match state.webhooks.deliveries(id, status, limit).await? {
        Some(deliveries) => Ok(Json(DeliveryList { deliveries })),
        None => Err(ApiError::not_found("webhook", id)),
    }
}

/// Queue an alert this webhook has a record of (dead or delivered) to be sent again,
/// ahead of new alerts.
#[utoipa::path(post, path = "/v1/admin/webhooks/{id}/deliveries/{alert_id}/redeliver", tag = "admin",
    params(("id" = uuid::Uuid, Path, description = "webhook id"), ("alert_id" = u64, Path, description = "alert id")),
    responses((status = 202, description = "queued"), (status = 403, description = "forbidden: needs the admin token"),
        (status = 404, description = "delivery_not_found"), (status = 503, description = "storage_unavailable")))]
pub async fn redeliver(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath((id, alert)): ApiPath<(Uuid, u64)>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    if alert > i64::MAX as u64 || !state.webhooks.redeliver(id, alert).await? {
        return Err(ApiError::not_found("delivery", format!("{id}/{alert}")));
    }
    Ok(StatusCode::ACCEPTED)
}

/// Set (or with `reorder_point: null` remove) a product's reorder point, for every store
/// or one store. It applies from the stream's next event.
#[utoipa::path(put, path = "/v1/admin/analytics/reorder-points", tag = "admin", request_body = ReorderPoint,
    responses((status = 204, description = "set"), (status = 403, description = "forbidden: needs the admin token"),
        (status = 404, description = "store_not_found"), (status = 422, description = "invalid_reorder_point"), (status = 503, description = "storage_unavailable")))]
pub async fn set_reorder_point(
    State(state): State<AppState>,
    principal: Principal,
    ApiJson(body): ApiJson<ReorderPoint>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    if body
        .reorder_point
        .is_some_and(|p| !(0..=MAX_REORDER_POINT).contains(&p))
    {
        return Err(ApiError::unprocessable(
            "invalid_reorder_point",
            "reorder_point must be 0..=1000000000 or null",
        ));
    }
    if let Some(store) = body.store_id {
        require_store(&state, store).await?;
    }
    state
        .analytics
        .set_reorder_point(body.product_id, body.store_id, body.reorder_point)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set a store's time zone (an IANA name such as `Europe/Berlin`): its days are local days
/// from the next event on (a rebuild re-books the past).
#[utoipa::path(put, path = "/v1/admin/analytics/stores/{id}/settings", tag = "admin", request_body = StoreSettings,
    params(("id" = uuid::Uuid, Path, description = "store id")),
    responses((status = 204, description = "set"), (status = 403, description = "forbidden: needs the admin token"),
        (status = 404, description = "store_not_found"), (status = 422, description = "invalid_time_zone"), (status = 503, description = "storage_unavailable")))]
pub async fn set_store_settings(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<StoreId>,
    ApiJson(body): ApiJson<StoreSettings>,
) -> Result<StatusCode, ApiError> {
    principal.require_admin()?;
    let Some(tz) = parse_time_zone(&body.time_zone) else {
        return Err(ApiError::unprocessable(
            "invalid_time_zone",
            "time_zone must be an IANA name such as Europe/Berlin",
        ));
    };
    require_store(&state, id).await?;
    state.analytics.set_time_zone(id, tz.name().to_owned()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn require_store(state: &AppState, store: StoreId) -> Result<(), ApiError> {
    match state.log.store_enrolled(store).await? {
        true => Ok(()),
        false => Err(ApiError::not_found("store", store)),
    }
}

/// The scheduled jobs: schedule, last run, result, duration, next run.
#[utoipa::path(get, path = "/v1/admin/jobs", tag = "admin",
    responses((status = 200, body = JobList), (status = 403, description = "forbidden: needs the admin token")))]
pub async fn list_jobs(State(state): State<AppState>, principal: Principal) -> Result<Json<JobList>, ApiError> {
    principal.require_admin()?;
    Ok(Json(JobList {
        jobs: state.jobs.statuses().await,
    }))
}
