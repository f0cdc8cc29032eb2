//! Request extractors whose rejections are `problem+json`: bodies, paths and query
//! strings that do not parse get a 400/413/415/422 with a stable code instead of axum's
//! plain-text default. Bodies are read under the router's size limit, and only a JSON
//! object is a body: serde would otherwise fill a struct from an array by field position.
//!
//! [`WriteHeaders`] is the one parser of the headers a write may carry, for both servers:
//! a header that is present but unreadable is refused, never taken as absent.

use super::problem::ProblemResponse;
use crate::domain::event::ExpectedVersion;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{CONTENT_TYPE, IF_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName};
use serde::de::DeserializeOwned;
use uuid::Uuid;

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
            ProblemResponse::body_too_large()
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
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ProblemResponse::unprocessable(
            "invalid_body",
            "the body must be a JSON object",
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
        if bytes.trim_ascii() == b"null" {
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

/// Header naming a client's retry key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// Header grouping the events of one business operation.
pub const CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
/// Longest accepted `Idempotency-Key`.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 200;

/// The headers a write may carry. Each one that is present must be readable: a retry key
/// taken as absent would write twice, an `If-Match` taken as absent would skip the check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteHeaders {
    /// `Idempotency-Key`: 1..=200 ASCII characters, surrounding blanks trimmed.
    pub idempotency_key: Option<String>,
    /// `If-Match`: an expected version (`"7"`, `W/"7"`, `any`, `no_stream`, `exists`).
    pub if_match: Option<ExpectedVersion>,
    /// `X-Correlation-Id`: a UUID.
    pub correlation_id: Option<Uuid>,
}

/// A write header that is present but not acceptable: a stable code and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadHeader {
    /// Stable code (`invalid_idempotency_key`, `invalid_if_match`, `invalid_correlation_id`).
    pub code: &'static str,
    /// For people.
    pub detail: String,
}

impl WriteHeaders {
    /// Reads the write headers from `headers`.
    pub fn parse(headers: &HeaderMap) -> Result<Self, BadHeader> {
        let text = |name: &HeaderName, code: &'static str, what: &str| -> Result<Option<&str>, BadHeader> {
            headers
                .get(name)
                .map(|value| {
                    value.to_str().map(str::trim).map_err(|_| BadHeader {
                        code,
                        detail: format!("{what} must be ASCII text"),
                    })
                })
                .transpose()
        };
        let idempotency_key = text(&IDEMPOTENCY_KEY, "invalid_idempotency_key", "Idempotency-Key")?
            .map(|key| {
                if (1..=MAX_IDEMPOTENCY_KEY_LEN).contains(&key.len()) {
                    Ok(key.to_owned())
                } else {
                    Err(BadHeader {
                        code: "invalid_idempotency_key",
                        detail: format!("Idempotency-Key must be 1..={MAX_IDEMPOTENCY_KEY_LEN} ASCII characters"),
                    })
                }
            })
            .transpose()?;
        let if_match = text(&IF_MATCH, "invalid_if_match", "If-Match")?
            .map(|tag| {
                tag.trim_start_matches("W/")
                    .parse::<ExpectedVersion>()
                    .map_err(|detail| BadHeader {
                        code: "invalid_if_match",
                        detail: format!("If-Match: {detail}"),
                    })
            })
            .transpose()?;
        let correlation_id = text(&CORRELATION_ID, "invalid_correlation_id", "X-Correlation-Id")?
            .map(|id| {
                id.parse::<Uuid>().map_err(|_| BadHeader {
                    code: "invalid_correlation_id",
                    detail: "X-Correlation-Id must be a UUID".into(),
                })
            })
            .transpose()?;
        Ok(Self {
            idempotency_key,
            if_match,
            correlation_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Stock {
        product_id: String,
        quantity: u32,
    }

    #[test]
    fn only_a_json_object_is_a_body() {
        let refused = |body: &str| {
            decode::<Stock>(true, body.as_bytes())
                .err()
                .map(|p| (p.problem.status, p.problem.code))
        };
        assert!(decode::<Stock>(true, br#" {"product_id": "p", "quantity": 2}"#).is_ok());
        assert_eq!(
            refused(r#"["p", 2]"#),
            Some((422, "invalid_body".to_owned())),
            "an array is read by position"
        );
        assert_eq!(refused(" \n[\"p\", 2]"), Some((422, "invalid_body".to_owned())));
        assert_eq!(refused("null"), Some((422, "invalid_body".to_owned())));
        assert_eq!(refused("{"), Some((400, "malformed_json".to_owned())));
    }

    fn headers(pairs: &[(&HeaderName, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert((*name).clone(), HeaderValue::from_bytes(value).expect("header value"));
        }
        map
    }

    #[test]
    fn write_headers_are_read_when_well_formed() {
        let id = Uuid::now_v7();
        let parsed = WriteHeaders::parse(&headers(&[
            (&IDEMPOTENCY_KEY, b" order-1 "),
            (&IF_MATCH, b"W/\"7\""),
            (&CORRELATION_ID, id.to_string().as_bytes()),
        ]));
        assert_eq!(
            parsed,
            Ok(WriteHeaders {
                idempotency_key: Some("order-1".into()),
                if_match: Some(ExpectedVersion::Exact(7)),
                correlation_id: Some(id),
            })
        );
        assert_eq!(WriteHeaders::parse(&HeaderMap::new()), Ok(WriteHeaders::default()));
    }

    #[test]
    fn a_present_but_unreadable_write_header_is_refused_not_ignored() {
        let code =
            |name: &HeaderName, value: &[u8]| WriteHeaders::parse(&headers(&[(name, value)])).map_err(|e| e.code);
        assert_eq!(
            code(&IDEMPOTENCY_KEY, "k\u{e9}y".as_bytes()),
            Err("invalid_idempotency_key")
        );
        assert_eq!(code(&IDEMPOTENCY_KEY, b"  "), Err("invalid_idempotency_key"));
        assert_eq!(code(&IDEMPOTENCY_KEY, &[b'k'; 201]), Err("invalid_idempotency_key"));
        assert_eq!(code(&IF_MATCH, "\"7\u{e9}\"".as_bytes()), Err("invalid_if_match"));
        assert_eq!(code(&IF_MATCH, b"\"seven\""), Err("invalid_if_match"));
        assert_eq!(
            code(&CORRELATION_ID, "\u{e9}".as_bytes()),
            Err("invalid_correlation_id")
        );
        assert_eq!(code(&CORRELATION_ID, b"not-a-uuid"), Err("invalid_correlation_id"));
    }

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
