//! Keys on the store LAN. Tills send the per-store terminal key as
//! `Authorization: Bearer <key>`; the store manager's key opens the operator routes
//! (outbox, quarantine) and works on every till route too. Only SHA-256 digests of the
//! keys are held, compared in constant time.
//!
//! A till may name itself with `X-Till-Id` (1..=64 of letters, digits, `-`, `_`, `.`); the
//! name goes into the events' `actor` and scopes its idempotency keys.

use super::error::ApiError;
use super::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use shelfsync_common::server::failure::Reject;
use shelfsync_common::server::secret::{bearer, digest, same_digest};

/// What a 401 tells the till to send.
const CREDENTIAL: &str = "missing or invalid key: send Authorization: Bearer <terminal or manager key>";

/// Header a till names itself with.
pub const TILL_ID: HeaderName = HeaderName::from_static("x-till-id");

/// Which key the caller presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The tills' key.
    Terminal,
    /// The store manager's key.
    Manager,
}

impl Role {
    /// The name used in actors and idempotency scopes.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Terminal => "terminal",
            Role::Manager => "manager",
        }
    }
}

/// A caller of the till routes: the terminal key or the manager key, and the till's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Till {
    /// The key presented.
    pub role: Role,
    /// `X-Till-Id`, when sent.
    pub till_id: Option<String>,
}

impl Till {
    /// The `actor` recorded in event metadata: `terminal`, `terminal:<till>`, `manager`, ...
    pub fn actor(&self) -> String {
        match &self.till_id {
            Some(till) => format!("{}:{till}", self.role.as_str()),
            None => self.role.as_str().to_owned(),
        }
    }
}

/// A caller of the operator routes: only the manager key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manager;

fn role(headers: &HeaderMap, state: &AppState) -> Result<Role, ApiError> {
    let secret = bearer(headers.get(AUTHORIZATION)).ok_or_else(|| ApiError::unauthorized(CREDENTIAL))?;
    let presented = digest(secret);
    // Compare with both keys every time, so timing says nothing about which one matched.
    let manager = same_digest(&presented, &state.manager_digest);
    let terminal = same_digest(&presented, &state.terminal_digest);
    match (manager, terminal) {
        (true, _) => Ok(Role::Manager),
        (false, true) => Ok(Role::Terminal),
        (false, false) => Err(ApiError::unauthorized(CREDENTIAL)),
    }
}

/// Whether the request presents the manager key (for routes open to everyone that show
/// the manager more).
pub fn is_manager(headers: &HeaderMap, state: &AppState) -> bool {
    matches!(role(headers, state), Ok(Role::Manager))
}

/// Whether `id` is an acceptable till name.
pub fn valid_till_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl FromRequestParts<AppState> for Till {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let role = role(&parts.headers, state)?;
        let till_id = match parts.headers.get(TILL_ID) {
            None => None,
            Some(value) => match value.to_str().map(str::trim) {
                Ok(id) if valid_till_id(id) => Some(id.to_owned()),
                _ => {
                    return Err(ApiError::bad_request(
                        "invalid_till_id",
                        "X-Till-Id must be 1..=64 characters of letters, digits, '-', '_' and '.'",
                    ))
                }
            },
        };
        Ok(Till { role, till_id })
    }
}

impl FromRequestParts<AppState> for Manager {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        match role(&parts.headers, state)? {
            Role::Manager => Ok(Manager),
            Role::Terminal => Err(ApiError::forbidden("this route needs the manager key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn till_ids_are_short_plain_names() {
        assert!(valid_till_id("till-3") && valid_till_id("POS_1.a"));
        assert!(!valid_till_id("") && !valid_till_id("till 3") && !valid_till_id(&"x".repeat(65)));
        assert!(!valid_till_id("till:3"), "':' separates role and till in actors");
    }

    #[test]
    fn actors_name_the_key_and_the_till() {
        assert_eq!(
            Till {
                role: Role::Terminal,
                till_id: None
            }
            .actor(),
            "terminal"
        );
        assert_eq!(
            Till {
                role: Role::Manager,
                till_id: Some("t1".into())
            }
            .actor(),
            "manager:t1"
        );
    }
}
