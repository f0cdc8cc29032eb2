//! The hub's HTTP API: one module per resource, each exposing `router()`, merged here
//! under the cross-cutting layers both binaries share (body limit, timeout, request
//! metrics, problem+json fallbacks: `common::server::middleware`) and the hub's sync
//! protocol check.

pub mod admin;
pub mod allocations;
pub mod analytics;
pub mod auth;
pub mod enroll;
pub mod error;
pub mod inventory;
pub mod ops;
pub mod products;
pub mod push;
pub mod snapshot;
pub mod stock;
pub mod stores;
pub mod sync;
pub mod webhooks;
pub mod write;

use crate::config::HubConfig;
use crate::fleet::Fleet;
use crate::read_model::QueryService;
use crate::read_model::ReadModel;
use crate::store::EventStore;
use axum::middleware;
use axum::Router;
use shelfsync_common::server::middleware::with_service_layers;
use std::sync::Arc;
use tokio::sync::watch;

/// What every handler can reach, behind one `Arc`: axum clones the state for every
/// request (the routed service, each `State` extractor), so a clone must cost one atomic
/// add, not one per field (field by field it was ~3% of the runtime's CPU under load).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state of one running hub.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct Shared {
    /// The event store (write side, and the read pool for tokens).
    pub log: EventStore,
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
    /// Why the projector is stuck retrying right now, if it is (`/readyz` fails then).
    pub projection_stall: watch::Receiver<Option<String>>,
    /// The analytics file (figures, alerts, settings).
    pub analytics: Arc<crate::analytics::AnalyticsDb>,
    /// Where the analytics worker is.
    pub analytics_position: watch::Receiver<u64>,
    /// The webhook subscribers and their senders.
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// The scheduled jobs (for `GET /v1/admin/jobs`).
    pub jobs: Arc<shelfsync_common::server::schedule::Jobs>,
    /// The URL stores reach this hub at, and whether it was derived from the listen
    /// address (`public_url` unset).
    pub public_url: (String, bool),
    /// The limit on refused enrollment codes.
    pub enroll_failures: crate::enrollment::FailureLimiter,
}

/// The whole API.
/// The hub's own layer is the sync protocol check: it stamps the protocol version on the
/// 404/405 and timeout answers of the sync routes too.
/// `pages` are the back office's pages (`crate::web::router()`, merged by the caller so that the API
/// imports nothing of the pages that use it), served under the same layers.
pub fn router(state: AppState, pages: Router<AppState>) -> Router {
    let routes = Router::new()
        .merge(products::router())
        .merge(inventory::router())
        .merge(allocations::router())
        .merge(stock::router())
        .merge(admin::router())
        .merge(stores::router())
        .merge(enroll::router())
        .merge(sync::router())
        .merge(analytics::router())
        .merge(webhooks::router())
        .merge(ops::router())
        .merge(pages);
    with_service_layers(routes, &state.config.http, |routes| {
        routes.layer(middleware::from_fn(sync::protocol))
    })
    .with_state(state)
}
