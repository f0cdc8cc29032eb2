//! The POS API on the store LAN: the tills' catalog and stock reads, their stock commands
//! for this store, the status page, and the manager's outbox and quarantine routes. One
//! module per resource, each exposing `router()`, merged here with the cross-cutting
//! layers (body limit, time limit, request metrics, problem+json fallbacks).
//!
//! Every handler touches only the local store (reads from its in-memory view, writes
//! through its group-committing writer), never the hub, so the tills keep selling while
//! the hub is out of reach. `docs/edge-api.md` is the guide; `GET /openapi.json` the
//! generated reference.

pub mod auth;
pub mod error;
pub mod inventory;
pub mod ops;
pub mod outbox;
pub mod products;
pub mod status;
pub mod write;

use crate::config::EdgeConfig;
use crate::store::LocalStore;
use crate::sync::LinkStatus;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::Router;
use shelfsync_common::server::middleware::{record_request, time_limit};
use shelfsync_common::server::ProblemResponse;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The local store.
    pub local: LocalStore,
    /// The hub link's state.
    pub link: Arc<LinkStatus>,
    /// Settings.
    pub config: Arc<EdgeConfig>,
    /// SHA-256 of the tills' key.
    pub terminal_digest: [u8; 32],
    /// SHA-256 of the operator's key.
    pub manager_digest: [u8; 32],
    /// Turns true when the agent starts shutting down (`/readyz` then answers 503).
    pub stopping: watch::Receiver<bool>,
}

/// The optional headers of every write, for the OpenAPI document.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct WriteHeaderParams {
    /// Makes a retry safe: 1..=200 characters, scoped by the key and `X-Till-Id`. A body
    /// `event_id` takes precedence.
    #[param(
        rename = "Idempotency-Key",
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = r"^[!-~]([ -~]*[!-~])?$"
    )]
    pub idempotency_key: Option<String>,
    /// Names the till (1..=64 of letters, digits, `-`, `_`, `.`); recorded as the actor.
    #[param(rename = "X-Till-Id", nullable = false, pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub till_id: Option<String>,
    /// A UUID grouping the events of one business operation (e.g. one basket).
    #[param(rename = "X-Correlation-Id", nullable = false, format = Uuid)]
    pub correlation_id: Option<String>,
}

/// The whole POS API.
pub fn router(state: AppState) -> Router {
    let timeout = Duration::from_secs(state.config.http.request_timeout_secs);
    let body_limit = state.config.http.body_limit_bytes;
    Router::new()
        .merge(products::router())
        .merge(inventory::router())
        .merge(status::router())
        .merge(outbox::router())
        .merge(ops::router())
        .fallback(|| async { ProblemResponse::route_not_found() })
        .method_not_allowed_fallback(|| async { ProblemResponse::method_not_allowed() })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(timeout, time_limit))
        .layer(middleware::from_fn(record_request))
        .with_state(state)
}
