//! `ApiError`: every way a request can fail, and the one place that turns a failure into
//! an `application/problem+json` answer with a stable `code`. The matches below have no
//! catch-all arm, so a new error variant cannot reach a client unmapped.

use crate::store::{ReadError, WriteError};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use shelfsync_common::server::problem::domain_status;
use shelfsync_common::server::ProblemResponse;
use shelfsync_common::DomainError;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or unknown bearer token.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The token may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// A resource named in the path does not exist.
    #[error("{what} {id} not found")]
    NotFound {
        /// Kind of resource (becomes `<what>_not_found`).
        what: &'static str,
        /// Its id.
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
    /// The write side refused or failed.
    #[error(transparent)]
    Append(#[from] WriteError),
    /// The read path failed.
    #[error(transparent)]
    Store(#[from] ReadError),
    /// The read model failed on this query.
    #[error("read model: {0}")]
    ReadModel(String),
    /// The read model is unavailable (breaker open, nothing cached).
    #[error("the read model is unavailable; retry in {retry_after_secs} s")]
    ReadModelUnavailable {
        /// Seconds until the next attempt is worth making.
        retry_after_secs: u64,
    },
    /// `min_position` names a position the log has not reached: no write answered it.
    #[error(
        "min_position {wanted} is past the log's head ({head}): no write has that position, so waiting \
         cannot help; pass the position a write answered"
    )]
    PastHead {
        /// Requested `min_position`.
        wanted: u64,
        /// The log's head.
        head: u64,
    },
    /// The store already has as many push streams open as it may.
    #[error("this store already has {open} push streams open, the most it may have is {limit}; close one first")]
    TooManyStreams {
        /// Streams open now.
        open: u32,
        /// `sync.max_push_streams_per_store`.
        limit: u32,
    },
    /// The projector is retrying a batch it cannot write: reads are going stale.
    #[error("the read model is not keeping up with the log: {reason}")]
    ProjectionStalled {
        /// What the projector last hit.
        reason: String,
    },
    /// The read model did not reach the requested position in time.
    #[error("the read model reached position {reached}, not yet {wanted}; retry shortly")]
    NotCaughtUp {
        /// Requested `min_position`.
        wanted: u64,
        /// Where the read model is.
        reached: u64,
    },
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

    /// Status, code and title for this error.
    fn classify(&self) -> (StatusCode, String, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::Unauthorized => (S::UNAUTHORIZED, "unauthorized".into(), "Unauthorized"),
            ApiError::Forbidden(_) => (S::FORBIDDEN, "forbidden".into(), "Forbidden"),
            ApiError::NotFound { what, .. } => (S::NOT_FOUND, format!("{what}_not_found"), "Not found"),
            ApiError::Invalid { status, code, .. } => (*status, (*code).into(), "Invalid request"),
            ApiError::Append(error) => classify_append(error),
            ApiError::Store(_) | ApiError::ReadModel(_) => (
                S::SERVICE_UNAVAILABLE,
                "storage_unavailable".into(),
                "Storage unavailable",
            ),
            ApiError::ReadModelUnavailable { .. } => (
                S::SERVICE_UNAVAILABLE,
                "read_model_unavailable".into(),
                "Read model unavailable",
            ),
            ApiError::NotCaughtUp { .. } => (S::SERVICE_UNAVAILABLE, "read_model_behind".into(), "Read model behind"),
            ApiError::PastHead { .. } => (S::BAD_REQUEST, "min_position_past_head".into(), "Invalid request"),
            ApiError::TooManyStreams { .. } => (S::TOO_MANY_REQUESTS, "too_many_streams".into(), "Too many streams"),
            ApiError::ProjectionStalled { .. } => (
                S::SERVICE_UNAVAILABLE,
                "projection_stalled".into(),
                "Read model projection stalled",
            ),
        }
    }
}

fn classify_append(error: &WriteError) -> (StatusCode, String, &'static str) {
    use StatusCode as S;
    match error {
        WriteError::Domain(domain) => (
            domain_status(domain),
            domain.code().into(),
            "Refused by the inventory rules",
        ),
        WriteError::VersionConflict { .. } => (S::CONFLICT, "version_conflict".into(), "Version conflict"),
        WriteError::IdempotencyConflict(_) => (
            S::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused".into(),
            "Idempotency key reused",
        ),
        WriteError::UnknownStore(_) => (S::NOT_FOUND, "store_not_found".into(), "Not found"),
        WriteError::SkuTaken { .. } => (S::CONFLICT, "sku_taken".into(), "SKU taken"),
        WriteError::StoreExists(_) => (S::CONFLICT, "store_exists".into(), "Store exists"),
        WriteError::StoreNameTaken { .. } => (S::CONFLICT, "store_name_taken".into(), "Store name taken"),
        WriteError::TokenNameTaken(_) => (S::CONFLICT, "token_name_taken".into(), "Token name taken"),
        WriteError::UnknownReservation(_) => (S::NOT_FOUND, "reservation_not_found".into(), "Not found"),
        WriteError::Storage(_) => (
            S::SERVICE_UNAVAILABLE,
            "storage_unavailable".into(),
            "Storage unavailable",
        ),
        WriteError::Unavailable => (S::SERVICE_UNAVAILABLE, "shutting_down".into(), "Shutting down"),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.classify();
        let internal = matches!(
            self,
            ApiError::Store(_) | ApiError::ReadModel(_) | ApiError::Append(WriteError::Storage(_))
        );
        let detail = if internal {
            tracing::error!(error = %self, "request failed on storage");
            "the hub could not reach its storage; nothing was written; retry".to_owned()
        } else {
            self.to_string()
        };
        let mut answer = ProblemResponse::new(status, &code, title, detail);
        match &self {
            ApiError::Unauthorized => {
                answer = answer.with_header(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"shelfsync-hub\""),
                );
            }
            ApiError::Append(WriteError::VersionConflict { current, .. }) => {
                answer.problem.current_version = Some(*current);
                answer = answer.with_header(header::ETAG, etag(*current)).with_header(
                    header::HeaderName::from_static(CURRENT_VERSION_HEADER),
                    HeaderValue::from(*current),
                );
            }
            ApiError::Append(WriteError::StoreNameTaken { existing, .. }) => {
                answer.problem.existing_store_id = Some(existing.0);
            }
            ApiError::Append(WriteError::Domain(DomainError::InvalidProduct { field, .. })) => {
                answer.problem.field = Some((*field).to_owned());
            }
            ApiError::TooManyStreams { .. } => {
                answer = answer.with_header(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::ReadModelUnavailable { retry_after_secs } => {
                answer = answer.with_header(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                answer = answer.with_header(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        answer.into_response()
    }
}

/// Header carrying a stream's current version on a conflict.
pub const CURRENT_VERSION_HEADER: &str = "x-shelfsync-current-version";

/// The strong ETag of a stream version.
pub fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}
