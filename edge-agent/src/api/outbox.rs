//! Operator routes (manager key): the outbox, and the events the hub rejected. A rejected
//! event is quarantined: it left the local stock figures and waits here until the manager
//! retries it (after the cause was fixed at the hub: e.g. the product was registered) or
//! discards it for good. Quarantine never blocks the events behind it.

use super::auth::Manager;
use super::error::ApiError;
use super::AppState;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use shelfsync_common::server::extract::{ApiPath, ApiQuery};
use shelfsync_common::server::failure::Reject;
use shelfsync_common::wire::edge::{OutboxEntry, OutboxStatus, QuarantineOutcome};
use shelfsync_common::EventId;

use crate::store::QuarantineAction;

/// Entries listed when the request names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Most entries one request may list.
pub const MAX_LIMIT: usize = 1000;
/// Statuses listed when the request names none: everything not yet confirmed by the hub.
pub const DEFAULT_STATUSES: [OutboxStatus; 3] = [OutboxStatus::Pending, OutboxStatus::Acked, OutboxStatus::Quarantined];

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/outbox", get(list_outbox))
        .route("/v1/quarantine", get(list_quarantine))
        .route("/v1/quarantine/{event_id}/retry", post(retry))
        .route("/v1/quarantine/{event_id}/discard", post(discard))
}

/// `?status=&limit=` for [`list_outbox`].
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OutboxQuery {
    /// Comma-separated statuses: pending, acked, confirmed, quarantined, discarded
    /// (default: pending,acked,quarantined).
    #[param(
        pattern = r"^ *(pending|acked|confirmed|quarantined|discarded) *(, *(pending|acked|confirmed|quarantined|discarded) *)*,? *$"
    )]
    pub status: Option<String>,
    /// Most entries to list, newest first (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// `?limit=` for [`list_quarantine`].
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    /// Most entries to list, newest first (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

fn limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        n => Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1..={MAX_LIMIT}, got {n}"),
        )),
    }
}

/// Parses `pending,acked` into statuses.
pub fn parse_statuses(text: Option<&str>) -> Result<Vec<OutboxStatus>, ApiError> {
    let Some(text) = text else {
        return Ok(DEFAULT_STATUSES.to_vec());
    };
    let mut statuses = Vec::new();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let status = OutboxStatus::parse(name).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                format!("unknown status {name:?}; use pending, acked, confirmed, quarantined or discarded"),
            )
        })?;
        if !statuses.contains(&status) {
            statuses.push(status);
        }
    }
    if statuses.is_empty() {
        return Err(ApiError::bad_request("invalid_query", "status names no status"));
    }
    Ok(statuses)
}

/// Outbox events, newest first.
#[utoipa::path(get, path = "/v1/outbox", tag = "operator", params(OutboxQuery),
    responses((status = 200, body = Vec<OutboxEntry>), (status = 403, description = "forbidden: needs the manager key"), (status = 503, description = "storage_unavailable")),
    security(("manager" = [])))]
pub async fn list_outbox(
    State(state): State<AppState>,
    _manager: Manager,
    ApiQuery(query): ApiQuery<OutboxQuery>,
) -> Result<Json<Vec<OutboxEntry>>, ApiError> {
    let statuses = parse_statuses(query.status.as_deref())?;
    let limit = limit(query.limit)?;
    Ok(Json(state.local.outbox(statuses, limit).await?))
}

/// Events the hub rejected, newest first, with its reason.
#[utoipa::path(get, path = "/v1/quarantine", tag = "operator", params(LimitQuery),
    responses((status = 200, body = Vec<OutboxEntry>), (status = 403, description = "forbidden: needs the manager key"), (status = 503, description = "storage_unavailable")),
    security(("manager" = [])))]
pub async fn list_quarantine(
    State(state): State<AppState>,
    _manager: Manager,
    ApiQuery(query): ApiQuery<LimitQuery>,
) -> Result<Json<Vec<OutboxEntry>>, ApiError> {
    let limit = limit(query.limit)?;
    Ok(Json(state.local.outbox(vec![OutboxStatus::Quarantined], limit).await?))
}

/// Put a quarantined event back in the outbox (and in the local figures) to be uploaded again.
#[utoipa::path(post, path = "/v1/quarantine/{event_id}/retry", tag = "operator",
    params(("event_id" = uuid::Uuid, Path, description = "event id")),
    responses((status = 200, body = QuarantineOutcome), (status = 403, description = "forbidden: needs the manager key"), (status = 404, description = "quarantined_event_not_found"),
        (status = 503, description = "storage_unavailable or shutting_down")),
    security(("manager" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    _manager: Manager,
    ApiPath(event_id): ApiPath<EventId>,
) -> Result<Json<QuarantineOutcome>, ApiError> {
    state.local.quarantine(event_id, QuarantineAction::Retry).await?;
    tracing::info!(%event_id, "quarantined event retried by the manager");
    Ok(Json(QuarantineOutcome {
        event_id,
        status: OutboxStatus::Pending,
    }))
}

/// Give a quarantined event up for good.
#[utoipa::path(post, path = "/v1/quarantine/{event_id}/discard", tag = "operator",
    params(("event_id" = uuid::Uuid, Path, description = "event id")),
    responses((status = 200, body = QuarantineOutcome), (status = 403, description = "forbidden: needs the manager key"), (status = 404, description = "quarantined_event_not_found"),
        (status = 503, description = "storage_unavailable or shutting_down")),
    security(("manager" = [])))]
pub async fn discard(
    State(state): State<AppState>,
    _manager: Manager,
    ApiPath(event_id): ApiPath<EventId>,
) -> Result<Json<QuarantineOutcome>, ApiError> {
    state.local.quarantine(event_id, QuarantineAction::Discard).await?;
    tracing::warn!(%event_id, "quarantined event discarded by the manager");
    Ok(Json(QuarantineOutcome {
        event_id,
        status: OutboxStatus::Discarded,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_from_a_comma_list() {
        assert_eq!(parse_statuses(None).unwrap(), DEFAULT_STATUSES.to_vec());
        assert_eq!(
            parse_statuses(Some("acked, pending,acked")).unwrap(),
            vec![OutboxStatus::Acked, OutboxStatus::Pending]
        );
        assert!(parse_statuses(Some("pending,sent")).is_err());
        assert!(parse_statuses(Some(",")).is_err());
    }
}
