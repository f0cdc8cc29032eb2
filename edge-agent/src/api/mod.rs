//! The POS API on the store LAN.
//!
//! NOTE: being built (see the edge agent issue).

use crate::config::EdgeConfig;
use crate::store::LocalStore;
use crate::sync::LinkStatus;
use axum::Router;
use std::sync::Arc;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The local store.
    pub store: LocalStore,
    /// The hub link's state.
    pub link: Arc<LinkStatus>,
    /// Settings.
    pub config: Arc<EdgeConfig>,
    /// SHA-256 of the tills' key.
    pub terminal_digest: [u8; 32],
    /// SHA-256 of the operator's key.
    pub manager_digest: [u8; 32],
}

/// The whole POS API.
pub fn router(state: AppState) -> Router {
    Router::new().with_state(state)
}
