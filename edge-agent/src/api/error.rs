//! `ApiError`: every way a POS request can fail, and the one place that gives each failure
//! its `application/problem+json` answer with a stable `code` (on the skeleton both
//! binaries share, `common::server::failure`). The matches below have no catch-all arm,
//! so a new [`LocalError`] or `DomainError` variant cannot reach a till unmapped.
//! Storage failures are logged here and never shown to the till.

use crate::store::LocalError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use shelfsync_common::server::failure::{Answer, Failure, Rejection};
use shelfsync_common::server::ProblemResponse;
use shelfsync_common::StoreId;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request was refused before it reached the rules or the store (credential,
    /// path or body).
    #[error(transparent)]
    Rejected(#[from] Rejection),
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
    /// A request that needs the hub could not reach it.
    #[error("the hub could not be asked: {0}")]
    HubUnreachable(String),
}

impl Failure for ApiError {
    const CHALLENGE: &'static str = "Bearer realm=\"shelfsync-edge\"";

    fn answer(&self) -> Answer {
        use StatusCode as S;
        match self {
            ApiError::Rejected(rejection) => rejection.answer(),
            ApiError::WrongStore { .. } => Answer::new(S::UNPROCESSABLE_ENTITY, "wrong_store", "Wrong store"),
            ApiError::NotBootstrapped => Answer::new(S::SERVICE_UNAVAILABLE, "not_bootstrapped", "Not synced yet"),
            ApiError::ShuttingDown => Answer::SHUTTING_DOWN,
            ApiError::Local(error) => local_answer(error),
            ApiError::HubUnreachable(_) => Answer::new(S::SERVICE_UNAVAILABLE, "hub_unreachable", "Hub unreachable"),
        }
    }

    /// A storage failure is logged and summarised; a reused key is said in the till's terms.
    fn detail(&self) -> String {
        match self {
            ApiError::Local(LocalError::Storage(_)) => {
                tracing::error!(error = %self, "request failed on the local store");
                "the agent could not write to its disk; nothing was recorded; retry".to_owned()
            }
            // The store's message shows the internal key ("event:<id>"); say what the till did.
            ApiError::Local(LocalError::IdempotencyConflict(_) | LocalError::DuplicateEvent(_)) => {
                "this Idempotency-Key (or event_id) was already used for a different request".to_owned()
            }
            _ => self.to_string(),
        }
    }

    /// Until the catalog arrives, a till should wait longer than a second.
    fn decorate(&self, problem: ProblemResponse) -> ProblemResponse {
        match self {
            ApiError::NotBootstrapped => problem.with_header(header::RETRY_AFTER, HeaderValue::from_static("5")),
            ApiError::Local(LocalError::Domain(domain)) => {
                shelfsync_common::server::problem::name_share(problem, domain)
            }
            _ => problem,
        }
    }
}

fn local_answer(error: &LocalError) -> Answer {
    match error {
        LocalError::Domain(domain) => Answer::refused(domain),
        LocalError::UnknownProduct(_) => Answer::not_found("product"),
        LocalError::UnknownReservation(_) => Answer::not_found("reservation"),
        // An event id already in the outbox names another fact: the same answer as the hub's.
        LocalError::IdempotencyConflict(_) | LocalError::DuplicateEvent(_) => Answer::IDEMPOTENCY_KEY_REUSED,
        LocalError::NotQuarantined(_) => Answer::not_found("quarantined_event"),
        LocalError::Storage(_) => Answer::STORAGE_UNAVAILABLE,
        LocalError::Unavailable => Answer::SHUTTING_DOWN,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
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
            let answer = ApiError::Local(error).answer();
            assert_eq!((answer.status.as_u16(), answer.code.as_ref()), (status, code));
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
