//! `/v1/sync`: what the hub offers its edge agents (store tokens only). Every request and
//! response carries the protocol version header; a request whose major version the hub
//! does not speak is refused with `unsupported_protocol` before anything else happens.

use super::auth::StoreAgent;
use super::error::ApiError;
use super::AppState;
use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use shelfsync_common::server::extract::{ApiJson, ApiQuery};
use shelfsync_common::server::failure::Reject;
use shelfsync_common::wire::sync::{
    protocol_compatible, protocol_major, Heartbeat, HeartbeatAck, PullResponse, UploadOutcome, UploadRequest,
    UploadResponse, MAX_PULL_LIMIT, MAX_UPLOAD_BATCH, PROTOCOL_HEADER, PROTOCOL_VERSION,
};

/// Positions one pull scans at most (the store may see few of them).
const PULL_SCAN_WINDOW: u64 = 20_000;

/// Every sync route starts with this.
pub const SYNC_PREFIX: &str = "/v1/sync/";

/// Routes of this resource (the whole API router puts [`protocol`] in front of them).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sync/upload", post(upload))
        .route("/v1/sync/events", get(pull))
        .route("/v1/sync/heartbeat", post(heartbeat))
        .route("/v1/sync/snapshot", get(super::snapshot::snapshot))
        .route("/v1/sync/stream", get(super::push::stream))
}

/// Under [`SYNC_PREFIX`]: refuses a peer of another major version, and stamps our version
/// on every answer, including 404, 405 and timeouts (an agent newer than the hub learns
/// the hub's version from exactly those). It is a layer of the whole router, not a
/// route layer, because route layers do not see the 404/405 fallbacks.
pub async fn protocol(request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with(SYNC_PREFIX) {
        return next.run(request).await;
    }
    let offered = request
        .headers()
        .get(PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut response = match offered {
        Some(version) if protocol_compatible(&version) => next.run(request).await,
        Some(version) if protocol_major(&version).is_none() => ApiError::bad_request(
            "unsupported_protocol",
            format!("{PROTOCOL_HEADER} must be MAJOR.MINOR, e.g. {PROTOCOL_VERSION}; the agent sent {version:?}"),
        )
        .into_response(),
        Some(version) => ApiError::bad_request(
            "unsupported_protocol",
            format!(
                "this hub speaks sync protocol {PROTOCOL_VERSION}; the agent sent {version:?}: upgrade the older side"
            ),
        )
        .into_response(),
        None => ApiError::bad_request(
            "unsupported_protocol",
            format!("send {PROTOCOL_HEADER}: {PROTOCOL_VERSION} (this hub speaks sync protocol {PROTOCOL_VERSION})"),
        )
        .into_response(),
    };
    response
        .headers_mut()
        .insert(PROTOCOL_HEADER, HeaderValue::from_static(PROTOCOL_VERSION));
    response
}

/// Declares the protocol header on every sync route of the OpenAPI document: a required
/// request header, and a header of every answer (what [`protocol`] does). It runs after
/// the layers' answers are added, so that they carry the header too.
pub struct ProtocolHeader;

impl utoipa::Modify for ProtocolHeader {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use shelfsync_common::server::openapi::problem_answer;
        use utoipa::openapi::header::HeaderBuilder;
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::{ObjectBuilder, RefOr, Required, Type};
        let version = || {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(protocol_pattern()))
                .examples([PROTOCOL_VERSION])
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with(SYNC_PREFIX) {
                continue;
            }
            for operation in shelfsync_common::server::openapi::operations_mut(item) {
                let header = ParameterBuilder::new()
                    .name("X-Shelfsync-Protocol")
                    .parameter_in(ParameterIn::Header)
                    .required(Required::True)
                    .description(Some(format!(
                        "The sync protocol version the agent speaks, MAJOR.MINOR; the hub speaks {PROTOCOL_VERSION} and refuses another MAJOR"
                    )))
                    .schema(Some(version()))
                    .build();
                operation.parameters.get_or_insert_with(Vec::new).insert(0, header);
                let refused = "unsupported_protocol: X-Shelfsync-Protocol is missing or names another major version";
                let bad_request = operation
                    .responses
                    .responses
                    .entry("400".to_owned())
                    .or_insert_with(|| RefOr::T(problem_answer(refused)));
                if let RefOr::T(response) = bad_request {
                    if !response.description.contains(refused) {
                        response.description = format!("{refused}; {}", response.description);
                    }
                }
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response.headers.insert(
                            "X-Shelfsync-Protocol".to_owned(),
                            HeaderBuilder::new()
                                .schema(version())
                                .description(Some("the sync protocol version the hub speaks"))
                                .build(),
                        );
                    }
                }
            }
        }
    }
}

/// What a `MAJOR.MINOR` version of the major this hub speaks looks like.
fn protocol_pattern() -> String {
    let major = shelfsync_common::wire::sync::protocol_major(PROTOCOL_VERSION).unwrap_or_default();
    format!(r"^{major}\.[0-9]+$")
}

/// Upload outbox events; one result per event, in order.
#[utoipa::path(post, path = "/v1/sync/upload", tag = "sync", request_body = UploadRequest,
    responses((status = 200, body = UploadResponse), (status = 403, description = "forbidden: the sync routes take a store token"), (status = 422, description = "batch_too_large"), (status = 503, description = "storage_unavailable or shutting_down: nothing was written; retry")))]
pub async fn upload(
    State(state): State<AppState>,
    StoreAgent(store, _): StoreAgent,
    ApiJson(body): ApiJson<UploadRequest>,
) -> Result<Json<UploadResponse>, ApiError> {
    if body.events.len() > MAX_UPLOAD_BATCH {
        return Err(ApiError::unprocessable(
            "batch_too_large",
            format!(
                "at most {MAX_UPLOAD_BATCH} events per upload, got {}",
                body.events.len()
            ),
        ));
    }
    let results = state.log.upload(store, body.events).await?;
    // One metric update per outcome, not per event (each names its labelled series).
    let mut counts = [("appended", 0u64), ("duplicate", 0), ("rejected", 0)];
    for result in &results {
        let slot = match result.outcome {
            UploadOutcome::Appended { .. } => 0,
            UploadOutcome::Duplicate { .. } => 1,
            UploadOutcome::Rejected { .. } => 2,
        };
        counts[slot].1 += 1;
    }
    for (label, count) in counts.into_iter().filter(|(_, count)| *count > 0) {
        metrics::counter!("shelfsync_hub_sync_upload_events_total", "result" => label).increment(count);
    }
    Ok(Json(UploadResponse {
        results,
        head: state.log.bus().head(),
    }))
}

/// `?after=&limit=` for [`pull`].
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PullQuery {
    /// Return events after this position (exclusive; 0 = from the start).
    #[serde(default, deserialize_with = "shelfsync_common::wire::sync::bounded::position")]
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub after: u64,
    /// At most this many events (1..=10000, default 500; hubs before 10,000 took 1..=1000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
}

/// Events after a cursor that this store may see.
#[utoipa::path(get, path = "/v1/sync/events", tag = "sync", params(PullQuery),
    responses((status = 200, body = PullResponse), (status = 403, description = "forbidden: the sync routes take a store token"), (status = 409, description = "cursor_ahead: `after` is past the hub's head (the hub was restored from an older backup); the head is in X-Shelfsync-Head"), (status = 503, description = "storage_unavailable")))]
pub async fn pull(
    State(state): State<AppState>,
    StoreAgent(store, _): StoreAgent,
    ApiQuery(query): ApiQuery<PullQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(500);
    if limit == 0 || limit > MAX_PULL_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1..={MAX_PULL_LIMIT}"),
        ));
    }
    let head = state.log.bus().head();
    let after = query.after;
    super::push::refuse_cursor_ahead(&state, after, head).await?;
    let page = state.log.visible_after(store, after, limit, PULL_SCAN_WINDOW).await?;
    // A `PullResponse`, its events as the store wrote them (no decode and encode again).
    let body = format!(
        r#"{{"events":{},"next_cursor":{},"head":{}}}"#,
        page.events,
        page.scanned_to.max(after),
        head.max(page.scanned_to)
    );
    Ok(([(CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response())
}

/// Report the agent's state for the fleet view.
#[utoipa::path(post, path = "/v1/sync/heartbeat", tag = "sync", request_body = Heartbeat,
    responses((status = 200, body = HeartbeatAck), (status = 403, description = "forbidden: the sync routes take a store token")))]
pub async fn heartbeat(
    State(state): State<AppState>,
    StoreAgent(store, _): StoreAgent,
    ApiJson(body): ApiJson<Heartbeat>,
) -> Result<Json<HeartbeatAck>, ApiError> {
    body.check_fields()
        .map_err(|detail| ApiError::unprocessable("invalid_body", detail))?;
    let head = state.log.bus().head();
    // No store label: /metrics is open without a token and must not list the fleet's
    // store ids. Each store's lag is in the (admin-only) fleet view.
    metrics::histogram!("shelfsync_hub_heartbeat_cursor_lag").record(head.saturating_sub(body.cursor) as f64);
    state.fleet.heartbeat(store, body);
    Ok(Json(HeartbeatAck { head }))
}
