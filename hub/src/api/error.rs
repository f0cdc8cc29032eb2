//! `ApiError`: every way a request can fail, and the one place that gives each failure its
//! `application/problem+json` answer with a stable `code` (on the skeleton both binaries
//! share, `common::server::failure`). The matches below have no catch-all arm, so a new
//! error variant cannot reach a client unmapped.

use crate::store::{ReadError, WriteError};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use shelfsync_common::server::failure::{Answer, Failure, Rejection};
use shelfsync_common::server::ProblemResponse;
use shelfsync_common::wire::sync::HEAD_HEADER;
use shelfsync_common::DomainError;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request was refused before it reached the rules or the store (credential,
    /// path or body).
    #[error(transparent)]
    Rejected(#[from] Rejection),
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
    /// An agent asked for events after a position this log has not reached: the hub was
    /// restored from a backup older than the agent's cursor (docs/sync-protocol.md,
    /// "Cursor ahead of the hub").
    #[error(
        "cursor {after} is past this hub's head ({head}): the hub was restored from an older backup; \
         re-upload this store's events the hub no longer has and take a new snapshot"
    )]
    CursorAhead {
        /// The agent's cursor.
        after: u64,
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
    /// Too many enrollment codes were refused this minute.
    #[error("too many refused enrollment codes this minute; retry in {retry_after_secs} s")]
    EnrollmentRateLimited {
        /// Seconds until the minute is over.
        retry_after_secs: u64,
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

impl Failure for ApiError {
    const CHALLENGE: &'static str = "Bearer realm=\"shelfsync-hub\"";

    fn answer(&self) -> Answer {
        use StatusCode as S;
        match self {
            ApiError::Rejected(rejection) => rejection.answer(),
            ApiError::Append(error) => append_answer(error),
            ApiError::Store(_) | ApiError::ReadModel(_) => Answer::STORAGE_UNAVAILABLE,
            ApiError::ReadModelUnavailable { .. } => Answer::new(
                S::SERVICE_UNAVAILABLE,
                "read_model_unavailable",
                "Read model unavailable",
            ),
            ApiError::NotCaughtUp { .. } => {
                Answer::new(S::SERVICE_UNAVAILABLE, "read_model_behind", "Read model behind")
            }
            ApiError::PastHead { .. } => Answer::invalid(S::BAD_REQUEST, "min_position_past_head"),
            ApiError::CursorAhead { .. } => Answer::new(
                S::CONFLICT,
                shelfsync_common::wire::sync::CURSOR_AHEAD,
                "Cursor ahead of the hub",
            ),
            ApiError::TooManyStreams { .. } => {
                Answer::new(S::TOO_MANY_REQUESTS, "too_many_streams", "Too many streams")
            }
            ApiError::EnrollmentRateLimited { .. } => Answer::new(
                S::TOO_MANY_REQUESTS,
                "enrollment_rate_limited",
                "Too many refused enrollment codes",
            ),
            ApiError::ProjectionStalled { .. } => Answer::new(
                S::SERVICE_UNAVAILABLE,
                "projection_stalled",
                "Read model projection stalled",
            ),
        }
    }

    /// A storage failure is logged and summarised: its message names files and SQL.
    fn detail(&self) -> String {
        if matches!(
            self,
            ApiError::Store(_) | ApiError::ReadModel(_) | ApiError::Append(WriteError::Storage(_))
        ) {
            tracing::error!(error = %self, "request failed on storage");
            "the hub could not reach its storage; nothing was written; retry".to_owned()
        } else {
            self.to_string()
        }
    }

    fn decorate(&self, mut problem: ProblemResponse) -> ProblemResponse {
        match self {
            ApiError::Append(WriteError::VersionConflict { current, .. }) => {
                problem.problem.current_version = Some(*current);
                problem.with_header(header::ETAG, etag(*current)).with_header(
                    header::HeaderName::from_static(CURRENT_VERSION_HEADER),
                    HeaderValue::from(*current),
                )
            }
            ApiError::Append(WriteError::StoreNameTaken { existing, .. }) => {
                problem.problem.existing_store_id = Some(existing.0);
                problem
            }
            ApiError::Append(WriteError::Domain(DomainError::InvalidProduct { field, .. })) => {
                problem.problem.field = Some((*field).to_owned());
                problem
            }
            ApiError::Append(WriteError::Domain(domain)) => {
                shelfsync_common::server::problem::name_share(problem, domain)
            }
            ApiError::CursorAhead { head, .. } => {
                problem.with_header(header::HeaderName::from_static(HEAD_HEADER), HeaderValue::from(*head))
            }
            ApiError::TooManyStreams { .. } => problem.with_header(header::RETRY_AFTER, HeaderValue::from_static("5")),
            ApiError::ReadModelUnavailable { retry_after_secs }
            | ApiError::EnrollmentRateLimited { retry_after_secs } => {
                problem.with_header(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs))
            }
            _ => problem,
        }
    }
}

fn append_answer(error: &WriteError) -> Answer {
    use StatusCode as S;
    match error {
        WriteError::Domain(domain) => Answer::refused(domain),
        WriteError::VersionConflict { .. } => Answer::new(S::CONFLICT, "version_conflict", "Version conflict"),
        WriteError::IdempotencyConflict(_) => Answer::IDEMPOTENCY_KEY_REUSED,
        WriteError::UnknownStore(_) => Answer::not_found("store"),
        WriteError::SkuTaken { .. } => Answer::new(S::CONFLICT, "sku_taken", "SKU taken"),
        WriteError::StoreExists(_) => Answer::new(S::CONFLICT, "store_exists", "Store exists"),
        WriteError::StoreNameTaken { .. } => Answer::new(S::CONFLICT, "store_name_taken", "Store name taken"),
        WriteError::TokenNameTaken(_) => Answer::new(S::CONFLICT, "token_name_taken", "Token name taken"),
        WriteError::UnknownReservation(_) => Answer::not_found("reservation"),
        WriteError::EnrollmentCodeUnknown => {
            Answer::new(S::NOT_FOUND, "enrollment_code_unknown", "Unknown enrollment code")
        }
        WriteError::EnrollmentCodeUsed => Answer::new(S::GONE, "enrollment_code_used", "Enrollment code used"),
        WriteError::EnrollmentCodeExpired => Answer::new(S::GONE, "enrollment_code_expired", "Enrollment code expired"),
        WriteError::Storage(_) => Answer::STORAGE_UNAVAILABLE,
        WriteError::Unavailable => Answer::SHUTTING_DOWN,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

/// Header carrying a stream's current version on a conflict.
pub const CURRENT_VERSION_HEADER: &str = "x-shelfsync-current-version";

/// The strong ETag of a stream version.
pub fn etag(version: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}
