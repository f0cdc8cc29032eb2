//! Bearer-token authentication and the roles a token can have.
//!
//! The admin token comes from configuration (or is generated at first start); every other
//! token is stored in the event store's `tokens` table as the SHA-256 of its secret, so a
//! copy of the database does not leak usable tokens. Lookups are one indexed read per
//! request and never cached, so a revoked token is refused on its very next request.

use super::error::ApiError;
use super::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use shelfsync_common::server::failure::Reject;
use shelfsync_common::server::secret::{bearer, digest, same_digest};
use shelfsync_common::StoreId;

/// What a 401 tells the caller to send.
const CREDENTIAL: &str = "missing or invalid bearer token";

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator: everything.
    Admin,
    /// A channel client (web shop, app, back office): stock commands and all reads.
    Channel {
        /// The token's name.
        name: String,
    },
    /// A store's edge agent: its own store only.
    Store {
        /// The store.
        store_id: StoreId,
        /// The token's name.
        name: String,
        /// The token's id (a push stream opened with it ends when it is revoked).
        token: uuid::Uuid,
    },
}

impl Principal {
    /// The name recorded as the actor of events.
    pub fn actor(&self) -> String {
        match self {
            Principal::Admin => "admin".into(),
            Principal::Channel { name } => format!("channel:{name}"),
            Principal::Store { name, .. } => format!("store:{name}"),
        }
    }

    /// Only the admin token.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Channel { .. } | Principal::Store { .. } => {
                Err(ApiError::forbidden("this route needs the admin token"))
            }
        }
    }

    /// Admin or channel tokens (the hub's own clients), not store tokens.
    pub fn require_channel(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin | Principal::Channel { .. } => Ok(()),
            Principal::Store { .. } => Err(ApiError::forbidden("store tokens may only use the /v1/sync routes")),
        }
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let secret = bearer(parts.headers.get(AUTHORIZATION)).ok_or_else(|| ApiError::unauthorized(CREDENTIAL))?;
        Principal::of_secret(state, secret).await
    }
}

impl Principal {
    /// Who holds `secret` (a bearer token, or the web session's), checked against the live
    /// tokens on every call: a revoked token is refused at once.
    pub async fn of_secret(state: &AppState, secret: &str) -> Result<Principal, ApiError> {
        let presented = digest(secret);
        if same_digest(&presented, &state.admin_digest) {
            return Ok(Principal::Admin);
        }
        let record = state
            .log
            .live_token(presented)
            .await?
            .ok_or_else(|| ApiError::unauthorized(CREDENTIAL))?;
        match (record.role.as_str(), record.store_id) {
            ("channel", _) => Ok(Principal::Channel { name: record.name }),
            ("store", Some(store_id)) => Ok(Principal::Store {
                store_id,
                name: record.name,
                token: record.id,
            }),
            _ => Err(ApiError::unauthorized(CREDENTIAL)),
        }
    }
}

/// The calling agent's store and its token's id (a store token is required), recorded as
/// seen.
pub struct StoreAgent(pub StoreId, pub uuid::Uuid);

impl FromRequestParts<AppState> for StoreAgent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match Principal::from_request_parts(parts, state).await? {
            Principal::Store { store_id, token, .. } => {
                state.fleet.seen(store_id);
                Ok(StoreAgent(store_id, token))
            }
            Principal::Admin | Principal::Channel { .. } => {
                Err(ApiError::forbidden("the sync routes take a store token"))
            }
        }
    }
}
