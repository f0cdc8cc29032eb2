//! The error-answer skeleton both binaries' `ApiError`s share. [`Answer`] names, once, the
//! status, stable code and title of the failures both APIs have (a missing token, a
//! missing resource, a refused rule, a reused idempotency key, storage out of reach,
//! shutting down). [`Failure`] turns an error into its `problem+json` answer the same way
//! on both: the detail a client may see, `WWW-Authenticate` on a 401 and `Retry-After: 1`
//! on a 503 unless the binary says otherwise. Each binary keeps its own error enum and
//! decides, with a `match` without a catch-all arm, which answer each variant gets.
//!
//! [`Rejection`] is the part of those enums both binaries had written alike: a request
//! refused before it reaches the rules or the store (no or a wrong credential, a path
//! naming nothing, a malformed or invalid request). Each `ApiError` wraps it, and
//! [`Reject`] gives every such error the same constructors (`ApiError::bad_request(..)`).

use super::problem::{domain_status, ProblemResponse};
use crate::domain::error::DomainError;
use axum::http::{header, HeaderValue, StatusCode};
use std::borrow::Cow;

/// How a failure is answered: HTTP status, stable `code` and a title for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable, machine-readable code.
    pub code: Cow<'static, str>,
    /// A short summary of the problem type.
    pub title: &'static str,
}

impl Answer {
    /// No or an unknown token or key.
    pub const UNAUTHORIZED: Self = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized");
    /// The token or key may not do this.
    pub const FORBIDDEN: Self = Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden");
    /// An idempotency key (or event id) already used for a different request.
    pub const IDEMPOTENCY_KEY_REUSED: Self = Self::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
        "Idempotency key reused",
    );
    /// The database could not be read or written; nothing was written.
    pub const STORAGE_UNAVAILABLE: Self = Self::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        "Storage unavailable",
    );
    /// The process is stopping.
    pub const SHUTTING_DOWN: Self = Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "Shutting down");

    /// An answer with this status, code and title.
    pub const fn new(status: StatusCode, code: &'static str, title: &'static str) -> Self {
        Self {
            status,
            code: Cow::Borrowed(code),
            title,
        }
    }

    /// 404 `<what>_not_found`.
    pub fn not_found(what: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: Cow::Owned(format!("{what}_not_found")),
            title: "Not found",
        }
    }

    /// A malformed (400) or semantically invalid (422) request.
    pub const fn invalid(status: StatusCode, code: &'static str) -> Self {
        Self::new(status, code, "Invalid request")
    }

    /// A command the inventory rules refused: the rule's own code and status.
    pub fn refused(error: &DomainError) -> Self {
        Self::new(domain_status(error), error.code(), "Refused by the inventory rules")
    }
}

/// A request refused before it reached the rules or the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No or an unknown credential; the message says which credential this API takes.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The credential may not do this.
    #[error("{0}")]
    Forbidden(Cow<'static, str>),
    /// A resource named in the request does not exist.
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
}

impl Rejection {
    /// Status, stable code and title.
    pub fn answer(&self) -> Answer {
        match self {
            Rejection::Unauthorized(_) => Answer::UNAUTHORIZED,
            Rejection::Forbidden(_) => Answer::FORBIDDEN,
            Rejection::NotFound { what, .. } => Answer::not_found(what),
            Rejection::Invalid { status, code, .. } => Answer::invalid(*status, code),
        }
    }
}

/// The constructors of a rejection, on any error that wraps one.
pub trait Reject: From<Rejection> {
    /// 401: no or an unknown credential (`hint` says which one this API takes).
    fn unauthorized(hint: &'static str) -> Self {
        Rejection::Unauthorized(hint).into()
    }

    /// 403: the credential may not do this.
    fn forbidden(why: impl Into<Cow<'static, str>>) -> Self {
        Rejection::Forbidden(why.into()).into()
    }

    /// 404 `<what>_not_found`.
    fn not_found(what: &'static str, id: impl std::fmt::Display) -> Self {
        Rejection::NotFound {
            what,
            id: id.to_string(),
        }
        .into()
    }

    /// A 400 or 422 with this code.
    fn invalid(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Rejection::Invalid {
            status,
            code,
            detail: detail.into(),
        }
        .into()
    }

    /// A 400 with this code.
    fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::invalid(StatusCode::BAD_REQUEST, code, detail)
    }

    /// A 422 with this code.
    fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::invalid(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }
}

impl<E: From<Rejection>> Reject for E {}

/// An error a binary answers with a problem: it names the [`Answer`], and may hide its
/// message or add headers and problem fields; [`Failure::problem`] builds the rest alike
/// on both binaries.
pub trait Failure: std::fmt::Display {
    /// The `WWW-Authenticate` challenge of a 401, e.g. `Bearer realm="shelfsync-hub"`.
    const CHALLENGE: &'static str;

    /// Status, stable code and title.
    fn answer(&self) -> Answer;

    /// What the client is told: the error's message, unless the binary hides it (a
    /// storage failure is logged by the binary and summarised).
    fn detail(&self) -> String {
        self.to_string()
    }

    /// Adds what only this binary's answers carry (an ETag, a problem field, a longer
    /// `Retry-After`, which replaces the default one).
    fn decorate(&self, problem: ProblemResponse) -> ProblemResponse {
        problem
    }

    /// The whole answer.
    fn problem(&self) -> ProblemResponse {
        let Answer { status, code, title } = self.answer();
        let mut problem = ProblemResponse::new(status, &code, title, self.detail());
        if status == StatusCode::UNAUTHORIZED {
            problem = problem.with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static(Self::CHALLENGE));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            problem = problem.with_header(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        self.decorate(problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary's error, reduced to what the skeleton sees.
    #[derive(Debug)]
    enum TestError {
        Unauthorized,
        Missing(&'static str),
        Refused(DomainError),
        Disk,
        Busy,
    }

    impl std::fmt::Display for TestError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }

    impl Failure for TestError {
        const CHALLENGE: &'static str = "Bearer realm=\"test\"";

        fn answer(&self) -> Answer {
            match self {
                TestError::Unauthorized => Answer::UNAUTHORIZED,
                TestError::Missing(what) => Answer::not_found(what),
                TestError::Refused(error) => Answer::refused(error),
                TestError::Disk => Answer::STORAGE_UNAVAILABLE,
                TestError::Busy => Answer::SHUTTING_DOWN,
            }
        }

        fn detail(&self) -> String {
            match self {
                TestError::Disk => "hidden".into(),
                _ => self.to_string(),
            }
        }

        fn decorate(&self, problem: ProblemResponse) -> ProblemResponse {
            match self {
                TestError::Busy => problem.with_header(header::RETRY_AFTER, HeaderValue::from_static("5")),
                _ => problem,
            }
        }
    }

    fn header_of<'a>(problem: &'a ProblemResponse, name: &header::HeaderName) -> Vec<&'a [u8]> {
        problem
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_bytes())
            .collect()
    }

    #[test]
    fn shared_answers_have_their_stable_codes() {
        // Given each kind of failure, when it is answered, then status and code are the shared ones.
        let cases = [
            (TestError::Unauthorized, 401, "unauthorized"),
            (TestError::Missing("product"), 404, "product_not_found"),
            (
                TestError::Refused(DomainError::InsufficientStock {
                    requested: 2,
                    available: 1,
                }),
                409,
                "insufficient_stock",
            ),
            (TestError::Refused(DomainError::ZeroAdjustment), 422, "zero_adjustment"),
            (TestError::Disk, 503, "storage_unavailable"),
            (TestError::Busy, 503, "shutting_down"),
        ];
        for (error, status, code) in cases {
            let problem = error.problem();
            assert_eq!((problem.problem.status, problem.problem.code.as_str()), (status, code));
        }
        assert_eq!(Answer::FORBIDDEN.status, StatusCode::FORBIDDEN);
        assert_eq!(Answer::IDEMPOTENCY_KEY_REUSED.code, "idempotency_key_reused");
        assert_eq!(
            Answer::invalid(StatusCode::BAD_REQUEST, "bad_sku"),
            Answer::new(StatusCode::BAD_REQUEST, "bad_sku", "Invalid request")
        );
    }

    #[test]
    fn a_401_names_the_realm_and_a_503_says_when_to_retry() {
        // Given a 401, the answer carries the binary's challenge.
        let unauthorized = TestError::Unauthorized.problem();
        assert_eq!(
            header_of(&unauthorized, &header::WWW_AUTHENTICATE),
            [&b"Bearer realm=\"test\""[..]]
        );
        // Given a 503, Retry-After is 1 s, and the message stays inside when the binary hides it.
        let disk = TestError::Disk.problem();
        assert_eq!(header_of(&disk, &header::RETRY_AFTER), [&b"1"[..]]);
        assert_eq!(disk.problem.detail, "hidden");
        // Given a binary's own Retry-After, it replaces the default one.
        assert_eq!(header_of(&TestError::Busy.problem(), &header::RETRY_AFTER), [&b"5"[..]]);
        // Given a 404, neither header is added.
        assert!(TestError::Missing("store").problem().headers.is_empty());
    }

    /// An error that wraps a rejection, as both binaries' `ApiError`s do.
    #[derive(Debug, PartialEq)]
    struct Wrapping(Rejection);

    impl From<Rejection> for Wrapping {
        fn from(rejection: Rejection) -> Self {
            Wrapping(rejection)
        }
    }

    #[test]
    fn rejections_have_their_stable_codes_and_say_what_is_wrong() {
        // Given each constructor, when its rejection is answered, then status, code and message fit.
        let cases = [
            (
                Wrapping::unauthorized("send a token"),
                401,
                "unauthorized",
                "send a token",
            ),
            (Wrapping::forbidden("admins only"), 403, "forbidden", "admins only"),
            (
                Wrapping::not_found("product", 42),
                404,
                "product_not_found",
                "product 42 not found",
            ),
            (
                Wrapping::bad_request("bad_sku", "no spaces"),
                400,
                "bad_sku",
                "no spaces",
            ),
            (
                Wrapping::unprocessable("invalid_ttl", "too long"),
                422,
                "invalid_ttl",
                "too long",
            ),
        ];
        for (Wrapping(rejection), status, code, message) in cases {
            let answer = rejection.answer();
            assert_eq!(
                (
                    answer.status.as_u16(),
                    answer.code.as_ref(),
                    rejection.to_string().as_str()
                ),
                (status, code, message)
            );
        }
    }
}
