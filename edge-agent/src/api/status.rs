//! `GET /v1/status`: the agent's health for the store manager and the tills (is the hub
//! link up, how much is waiting to be uploaded and for how long, how far behind the hub
//! the agent is). Open without a key: it holds no stock figures and no secrets, and a
//! till that cannot authenticate still needs to be able to show why. Why the hub link
//! failed (`breaker_reason`: raw connection errors, which name the hub's address) is
//! shown to the manager key only: anyone on the store LAN can read this page.

use super::auth::is_manager;
use super::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use axum::{Json, Router};
use shelfsync_common::wire::edge::AgentStatus;
use time::OffsetDateTime;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new().route("/v1/status", get(status))
}

/// The agent's link, outbox and sync position.
#[utoipa::path(get, path = "/v1/status", tag = "status", responses((status = 200, body = AgentStatus)), security(()))]
pub async fn status(State(state): State<AppState>, headers: HeaderMap) -> Json<AgentStatus> {
    Json(current(&state, is_manager(&headers, &state)))
}

/// The agent's status now; why the link failed only for the manager (the store page shows
/// the same).
pub fn current(state: &AppState, manager: bool) -> AgentStatus {
    let link = state.link.get();
    let breaker_reason = if manager { link.breaker_reason.clone() } else { None };
    let now = OffsetDateTime::now_utc();
    state.local.read(|view| {
        let (outbox_depth, oldest) = view.outbox();
        AgentStatus {
            store_id: view.store_id,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            link: if link.online { "online" } else { "offline" }.to_owned(),
            breaker: link.breaker.to_owned(),
            breaker_reason,
            push_connected: link.push_connected,
            outbox_depth,
            oldest_pending_age_secs: oldest.map(|at| (now - at).whole_seconds().max(0) as u64),
            quarantined: view.quarantined,
            cursor: view.sync.cursor,
            hub_head: view.sync.hub_head,
            last_sync_at: view.sync.last_sync_at,
            bootstrapped: view.sync.bootstrapped,
            resynced: view.sync.resynced.clone(),
        }
    })
}
