//! Request extractors whose rejections are `problem+json`: bodies, paths and query
//! strings that do not parse get a 400/413/415/422 with a stable code instead of axum's
//! plain-text default. Bodies are read under the router's size limit.

use super::problem::ProblemResponse;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// A required JSON body.
pub struct ApiJson<T>(pub T);

/// A JSON body that may be empty (then `T::default()`).
pub struct OptionalApiJson<T>(pub T);

/// Path parameters.
pub struct ApiPath<T>(pub T);

/// Query-string parameters.
pub struct ApiQuery<T>(pub T);

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<(bool, Bytes), ProblemResponse> {
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .unwrap_or(false);
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ProblemResponse::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "Body too large",
                "the request body is larger than the limit",
            )
        } else {
            ProblemResponse::bad_request("unreadable_body", rejection.body_text())
        }
    })?;
    Ok((is_json, bytes))
}

fn decode<T: DeserializeOwned>(is_json: bool, bytes: &[u8]) -> Result<T, ProblemResponse> {
    if !is_json {
        return Err(ProblemResponse::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
            "send the body as Content-Type: application/json",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ProblemResponse::unprocessable("invalid_body", e.to_string()),
        _ => ProblemResponse::bad_request("malformed_json", e.to_string()),
    })
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ProblemResponse;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (is_json, bytes) = body_bytes(req, state).await?;
        if bytes.is_empty() {
            return Err(ProblemResponse::bad_request(
                "missing_body",
                "this request needs a JSON body",
            ));
        }
        decode(is_json, &bytes).map(ApiJson)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalApiJson<T> {
    type Rejection = ProblemResponse;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (is_json, bytes) = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalApiJson(T::default()));
        }
        decode(is_json, &bytes).map(OptionalApiJson)
    }
}

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ProblemResponse;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| ProblemResponse::bad_request("invalid_path", rejection.body_text()))
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ProblemResponse;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| ProblemResponse::bad_request("invalid_query", rejection.body_text()))
    }
}
