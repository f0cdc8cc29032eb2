//! `ApiError`: every way a POS request can fail, and the one place that turns a failure
//! into an `application/problem+json` answer with a stable `code`. The matches below have
//! no catch-all arm, so a new [`LocalError`] or [`DomainError`] variant cannot reach a till
//! unmapped. Storage failures are logged here and never shown to the till.

use crate::store::LocalError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use shelfsync_common::server::problem::domain_status;
use shelfsync_common::server::ProblemResponse;
use shelfsync_common::StoreId;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or unknown key.
    #[error("missing or invalid key: send Authorization: Bearer <terminal or manager key>")]
    Unauthorized,
    /// The key may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// A resource named in the request does not exist here.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of resource (becomes `<what>_not_found`).
        what: &'static str,
        /// Which one.
        id: String,
    },
    /// The request is malformed (400) or semantically invalid (422).
    #[error("{detail}")]
    Invalid {
        /// 400 or 422.
        status: StatusCode,
        /// Stable code.
        code: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The body names another store.
    #[error("this agent serves store {this}; the request is for store {given}")]
    WrongStore {
        /// The store the request named.
        given: StoreId,
        /// This agent's store.
        this: StoreId,
    },
    /// The agent has not received its starting snapshot (catalog and stock) from the hub.
    #[error("this agent has not received its catalog from the hub yet; retry once it has synced (see GET /v1/status)")]
    NotBootstrapped,
    /// The agent is stopping.
    #[error("the agent is shutting down")]
    ShuttingDown,
    /// The local store refused or failed.
    #[error(transparent)]
    Local(#[from] LocalError),
}

impl ApiError {
    /// A 400 with this code.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            status: StatusCode::BAD_REQUEST,
            code,
            detail: detail.into(),
        }
    }

    /// A 422 with this code.
    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code,
            detail: detail.into(),
        }
    }

    /// Status, stable code and title.
    pub fn classify(&self) -> (StatusCode, String, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::Unauthorized => (S::UNAUTHORIZED, "unauthorized".into(), "Unauthorized"),
            ApiError::Forbidden(_) => (S::FORBIDDEN, "forbidden".into(), "Forbidden"),
            ApiError::NotFound { what, .. } => (S::NOT_FOUND, format!("{what}_not_found"), "Not found"),
            ApiError::Invalid { status, code, .. } => (*status, (*code).into(), "Invalid request"),
            ApiError::WrongStore { .. } => (S::UNPROCESSABLE_ENTITY, "wrong_store".into(), "Wrong store"),
            ApiError::NotBootstrapped => (S::SERVICE_UNAVAILABLE, "not_bootstrapped".into(), "Not synced yet"),
            ApiError::ShuttingDown => (S::SERVICE_UNAVAILABLE, "shutting_down".into(), "Shutting down"),
            ApiError::Local(error) => classify_local(error),
        }
    }
}

fn classify_local(error: &LocalError) -> (StatusCode, String, &'static str) {
    use StatusCode as S;
    match error {
        LocalError::Domain(domain) => (
            domain_status(domain),
            domain.code().into(),
            "Refused by the inventory rules",
        ),
        LocalError::UnknownProduct(_) => (S::NOT_FOUND, "product_not_found".into(), "Not found"),
        LocalError::UnknownReservation(_) => (S::NOT_FOUND, "reservation_not_found".into(), "Not found"),
        // An event id already in the outbox names another fact: the same answer as the hub's.
        LocalError::IdempotencyConflict(_) | LocalError::DuplicateEvent(_) => (
            S::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused".into(),
            "Idempotency key reused",
        ),
        LocalError::NotQuarantined(_) => (S::NOT_FOUND, "quarantined_event_not_found".into(), "Not found"),
        LocalError::Storage(_) => (
            S::SERVICE_UNAVAILABLE,
            "storage_unavailable".into(),
            "Storage unavailable",
        ),
        LocalError::Unavailable => (S::SERVICE_UNAVAILABLE, "shutting_down".into(), "Shutting down"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.classify();
        let detail = match &self {
            ApiError::Local(LocalError::Storage(_)) => {
                tracing::error!(error = %self, "request failed on the local store");
                "the agent could not write to its disk; nothing was recorded; retry".to_owned()
            }
            // The store's message shows the internal key ("event:<id>"); say what the till did.
            ApiError::Local(LocalError::IdempotencyConflict(_) | LocalError::DuplicateEvent(_)) => {
                "this Idempotency-Key (or event_id) was already used for a different request".to_owned()
            }
            _ => self.to_string(),
        };
        let mut answer = ProblemResponse::new(status, &code, title, detail);
        if matches!(self, ApiError::Unauthorized) {
            answer = answer.with_header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"shelfsync-edge\""),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            let after = if matches!(self, ApiError::NotBootstrapped) {
                "5"
            } else {
                "1"
            };
            answer = answer.with_header(header::RETRY_AFTER, HeaderValue::from_static(after));
        }
        answer.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelfsync_common::{DomainError, EventId, ProductId, ReservationId};

    #[test]
    fn local_errors_map_to_stable_codes() {
        let cases: Vec<(LocalError, u16, &str)> = vec![
            (
                DomainError::InsufficientStock {
                    requested: 3,
                    available: 1,
                }
                .into(),
                409,
                "insufficient_stock",
            ),
            (
                DomainError::ReservationExists(ReservationId::new_v7()).into(),
                409,
                "reservation_exists",
            ),
            (
                DomainError::ReservationNotFound(ReservationId::new_v7()).into(),
                404,
                "reservation_not_found",
            ),
            (DomainError::ZeroAdjustment.into(), 422, "zero_adjustment"),
            (
                LocalError::UnknownProduct(ProductId::new_v7()),
                404,
                "product_not_found",
            ),
            (
                LocalError::UnknownReservation(ReservationId::new_v7()),
                404,
                "reservation_not_found",
            ),
            (
                LocalError::IdempotencyConflict("k".into()),
                422,
                "idempotency_key_reused",
            ),
            (
                LocalError::DuplicateEvent(EventId::new_v7()),
                422,
                "idempotency_key_reused",
            ),
            (
                LocalError::NotQuarantined(EventId::new_v7()),
                404,
                "quarantined_event_not_found",
            ),
            (LocalError::Storage("disk full".into()), 503, "storage_unavailable"),
            (LocalError::Unavailable, 503, "shutting_down"),
        ];
        for (error, status, code) in cases {
            let (s, c, _) = ApiError::Local(error).classify();
            assert_eq!((s.as_u16(), c.as_str()), (status, code));
        }
    }

    #[test]
    fn storage_details_stay_inside() {
        let response = ApiError::Local(LocalError::Storage("SQLITE_FULL at /var/lib/x".into())).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }
}
