//! The POS API on the store LAN: the tills' catalog and stock reads, their stock commands
//! for this store, the status page, and the manager's outbox and quarantine routes. One
//! module per resource, each exposing `router()`, merged here under the cross-cutting
//! layers both binaries share (body limit, time limit, request metrics, problem+json
//! fallbacks: `common::server::middleware`).
//!
//! Every handler touches only the local store (reads from its in-memory view, writes
//! through its group-committing writer), never the hub, so the tills keep selling while
//! the hub is out of reach. `docs/edge-api.md` is the guide; `GET /openapi.json` the
//! generated reference.

pub mod allocations;
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
use crate::sync::{Hub, LinkStatus};
use axum::Router;
use shelfsync_common::server::middleware::with_service_layers;
use shelfsync_common::server::openapi;
use std::sync::Arc;
use tokio::sync::watch;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The local store.
    pub local: LocalStore,
    /// The hub link's state.
    pub link: Arc<LinkStatus>,
    /// The hub, for the one till request that needs it (asking for more of an allocation).
    pub hub: Arc<Hub>,
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
pub type WriteHeaderParams = openapi::WriteHeaderParams<TillWriteHeaders>;

/// How the agent describes its write headers: the key is scoped by the key and the till,
/// and `X-Till-Id` names the till.
pub struct TillWriteHeaders;

impl openapi::WriteHeaderDocs for TillWriteHeaders {
    const IDEMPOTENCY_KEY: &'static str = "Makes a retry safe: 1..=200 characters, scoped by the key and \
                                           `X-Till-Id`. A body\n`event_id` takes precedence.";
    const CORRELATION_ID: &'static str = "A UUID grouping the events of one business operation (e.g. one basket).";

    fn own_header() -> utoipa::openapi::path::Parameter {
        openapi::optional_header(
            "X-Till-Id",
            "Names the till (1..=64 of letters, digits, `-`, `_`, `.`); recorded as the actor.",
            utoipa::openapi::ObjectBuilder::new().pattern(Some(r"^[A-Za-z0-9._-]{1,64}$")),
        )
    }
}

/// The whole POS API.
/// `pages` are the store page (`crate::web::router()`, merged by the caller so that the API
/// imports nothing of the pages that use it), served under the same layers.
pub fn router(state: AppState, pages: Router<AppState>) -> Router {
    let routes = Router::new()
        .merge(products::router())
        .merge(inventory::router())
        .merge(allocations::router())
        .merge(status::router())
        .merge(outbox::router())
        .merge(ops::router())
        .merge(pages);
    with_service_layers(routes, &state.config.http, |routes| routes).with_state(state)
}
