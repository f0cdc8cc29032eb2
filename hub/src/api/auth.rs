//! Bearer-token authentication and the roles a token can have.
//!
//! The admin token comes from configuration (or is generated at first start); every other
//! token is stored in the event store's `tokens` table as the SHA-256 of its secret, so a
//! copy of the database does not leak usable tokens. Lookups are one indexed read per
//! request and never cached, so a revoked token is refused on its very next request.

use super::error::ApiError;
use super::AppState;
use crate::store::reader;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};
use shelfsync_common::StoreId;

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
                Err(ApiError::Forbidden("this route needs the admin token".into()))
            }
        }
    }

    /// Admin or channel tokens (the hub's own clients), not store tokens.
    pub fn require_channel(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin | Principal::Channel { .. } => Ok(()),
            Principal::Store { .. } => Err(ApiError::Forbidden(
                "store tokens may only use the /v1/sync routes".into(),
            )),
        }
    }
}

/// SHA-256 of a token secret.
pub fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new random token secret: `ss_` and 64 hex digits.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("ss_{}", hex::encode(bytes))
}

/// Compares digests without an early exit.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let secret = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let presented = digest(secret);
        if same_digest(&presented, &state.admin_digest) {
            return Ok(Principal::Admin);
        }
        let record = state
            .store
            .reads()
            .run(move |conn| reader::live_token_by_digest(conn, &presented))
            .await?
            .ok_or(ApiError::Unauthorized)?;
        match (record.role.as_str(), record.store_id) {
            ("channel", _) => Ok(Principal::Channel { name: record.name }),
            ("store", Some(store_id)) => Ok(Principal::Store {
                store_id,
                name: record.name,
            }),
            _ => Err(ApiError::Unauthorized),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_digests_compare_exactly() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("ss_") && a.len() == 67);
        assert!(same_digest(&digest(&a), &digest(&a)));
        assert!(!same_digest(&digest(&a), &digest(&b)));
    }
}
