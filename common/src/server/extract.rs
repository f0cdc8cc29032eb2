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
    let refused = |e: serde_json::Error| match e.classify() {
        serde_json::error::Category::Data => ProblemResponse::unprocessable("invalid_body", e.to_string()),
        _ => ProblemResponse::bad_request("malformed_json", e.to_string()),
    };
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(value),
        // JSON has one number type: `5.0` is the integer 5 (as in JSON Schema, and so in the
        // OpenAPI documents). Only a body refused for its data takes this second, slower look.
        Err(e) if e.classify() == serde_json::error::Category::Data => {
            let mut value: serde_json::Value = serde_json::from_slice(bytes).map_err(refused)?;
            if !integral_floats_to_integers(&mut value) {
                return Err(refused(e));
            }
            serde_json::from_value(value).map_err(refused)
        }
        Err(e) => Err(refused(e)),
    }
}

/// Rewrites every float with no fractional part that fits an `i64` or `u64` as an integer;
/// whether it rewrote any.
fn integral_floats_to_integers(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(f64::NAN);
            let integer = if f.fract() != 0.0 {
                None
            } else if (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&f) {
                Some(serde_json::Number::from(f as i64))
            } else if (0.0..1.844_674_407_370_955_2e19).contains(&f) {
                Some(serde_json::Number::from(f as u64))
            } else {
                None
            };
            integer.map(|n| *value = Value::Number(n)).is_some()
        }
        // Every member is visited (no short circuit): all of them may need rewriting.
        Value::Array(items) => items.iter_mut().map(integral_floats_to_integers).filter(|&r| r).count() > 0,
        Value::Object(map) => map.values_mut().map(integral_floats_to_integers).filter(|&r| r).count() > 0,
        _ => false,
    }
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
        // `null` says "no body" as well as an empty body does.
        decode::<Option<T>>(is_json, &bytes).map(|body| OptionalApiJson(body.unwrap_or_default()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    struct Body {
        quantity: u32,
        #[serde(default)]
        delta: Option<i64>,
    }

    #[test]
    fn integral_floats_are_integers_and_fractions_are_not() {
        let body: Body = decode(true, br#"{"quantity": 5.0, "delta": -2.0}"#).unwrap();
        assert_eq!(
            body,
            Body {
                quantity: 5,
                delta: Some(-2)
            }
        );
        let refused = decode::<Body>(true, br#"{"quantity": 5.5}"#).unwrap_err();
        assert_eq!(refused.problem.code, "invalid_body");
        let refused = decode::<Body>(true, br#"{"quantity": 1e300}"#).unwrap_err();
        assert_eq!(refused.problem.code, "invalid_body");
    }

    #[tokio::test]
    async fn an_optional_body_may_be_empty_or_null() {
        for text in ["", "  ", "null"] {
            let request = Request::builder()
                .header(CONTENT_TYPE, "application/json")
                .body(axum::body::Body::from(text))
                .unwrap();
            let OptionalApiJson(body) = OptionalApiJson::<Body>::from_request(request, &()).await.unwrap();
            assert_eq!(body, Body::default(), "{text:?}");
        }
    }
}
