//! The hub's HTTP API: one module per resource, each exposing `router()`, merged here
//! with the cross-cutting layers (body limit, timeout, request metrics, problem+json
//! fallbacks).

pub mod admin;
pub mod auth;
pub mod error;
pub mod extract;
pub mod inventory;
pub mod ops;
pub mod products;
pub mod push;
pub mod snapshot;
pub mod stock;
pub mod stores;
pub mod sync;
mod write;

use crate::config::HubConfig;
use crate::fleet::Fleet;
use crate::projection::ReadModel;
use crate::query::QueryService;
use crate::store::EventStore;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use error::ApiError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The event store (write side, and the read pool for tokens).
    pub store: EventStore,
    /// The read side, through the cache and breaker.
    pub queries: Arc<QueryService>,
    /// The read model itself (for store snapshots, which are never cached).
    pub read_model: Arc<ReadModel>,
    /// SHA-256 of the admin token.
    pub admin_digest: [u8; 32],
    /// Settings.
    pub config: Arc<HubConfig>,
    /// Agents' presence and the revocation signal.
    pub fleet: Arc<Fleet>,
    /// Turns true when the hub starts shutting down (ends push streams).
    pub stopping: watch::Receiver<bool>,
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.config.http.request_timeout_secs);
    let body_limit = state.config.http.body_limit_bytes;
    Router::new()
        .merge(products::router())
        .merge(inventory::router())
        .merge(stock::router())
        .merge(admin::router())
        .merge(stores::router())
        .merge(sync::router())
        .merge(ops::router())
        .fallback(|| async {
            ApiError::NotFound {
                what: "route",
                id: "this path".into(),
            }
        })
        .method_not_allowed_fallback(|| async {
            ApiError::Invalid {
                status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
                code: "method_not_allowed",
                detail: "this path does not take that method".into(),
            }
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(timeout, time_limit))
        .layer(middleware::from_fn(record_request))
        .with_state(state)
}

/// Answers 503 problem+json when a request runs past the configured timeout.
async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// Counts requests and their latency by route and status.
async fn record_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("shelfsync_hub_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("shelfsync_hub_http_request_seconds", "route" => route).record(started.elapsed().as_secs_f64());
    response
}
