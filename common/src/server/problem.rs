//! `ProblemResponse`: an `application/problem+json` answer with optional extra headers.
//! Each binary's own error type decides status and code; this builds the answer.

use crate::domain::error::DomainError;
use crate::wire::problem::{Problem, PROBLEM_CONTENT_TYPE};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// A problem answer ready to send.
#[derive(Debug, Clone)]
pub struct ProblemResponse {
    /// The body (boxed: rejections travel in `Result`s and should stay small).
    pub problem: Box<Problem>,
    /// Headers to add (ETag, Retry-After, ...).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl ProblemResponse {
    /// A problem with this status, code, title and detail.
    pub fn new(status: StatusCode, code: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            problem: Box::new(Problem::new(status.as_u16(), code, title, detail)),
            headers: Vec::new(),
        }
    }

    /// 400 with `code`.
    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, "Invalid request", detail)
    }

    /// 422 with `code`.
    pub fn unprocessable(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, "Invalid request", detail)
    }

    /// 404 for a path no route serves.
    pub fn route_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "route_not_found",
            "Not found",
            "no route serves this path",
        )
    }

    /// 413 for a body over the size limit.
    pub fn body_too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            "Body too large",
            "the request body is larger than the limit",
        )
    }

    /// 405 for a method a path does not take.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method not allowed",
            "this path does not take that method",
        )
    }

    /// Sets a header (replacing one of the same name set before).
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.retain(|(set, _)| *set != name);
        self.headers.push((name, value));
        self
    }
}

/// The HTTP status of a rule the domain refused, the same on the hub and at the till:
/// a conflict with the current stock is 409, something missing is 404, bad values are 422.
pub fn domain_status(error: &DomainError) -> StatusCode {
    match error {
        DomainError::InsufficientStock { .. }
        | DomainError::ReservationExists(_)
        | DomainError::ProductAlreadyRegistered(_)
        | DomainError::ShareExhausted { .. }
        | DomainError::NotYourShare
        | DomainError::NoAllocation => StatusCode::CONFLICT,
        DomainError::ReservationNotFound(_) | DomainError::ProductNotRegistered(_) => StatusCode::NOT_FOUND,
        DomainError::ZeroAdjustment
        | DomainError::AdjustmentOutOfRange
        | DomainError::InvalidReason
        | DomainError::InvalidProduct { .. }
        | DomainError::ProductIdMismatch
        | DomainError::InvalidAllocation => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// Names the share and the units left in it on a refusal by an allocation (the other
/// refusals are left as they are).
pub fn name_share(mut problem: ProblemResponse, error: &DomainError) -> ProblemResponse {
    if let DomainError::ShareExhausted { share, left, .. } = error {
        problem.problem.share = Some(*share);
        problem.problem.units_left = Some(*left);
    }
    problem
}

impl IntoResponse for ProblemResponse {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        metrics::counter!("shelfsync_http_errors_total", "code" => self.problem.code.clone()).increment(1);
        let body = serde_json::to_vec(&self.problem).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE));
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}
