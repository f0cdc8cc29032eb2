//! One log line per answered request, and the span its handler's own lines run in.
//!
//! The span (`request`) carries `method`, `route` (the matched path template such as
//! `/v1/inventory/products/{product_id}`, never the raw URI with its ids and query, so
//! no token or customer value in a query string reaches the logs) and `correlation_id`;
//! the line, written when the answer's head is ready, adds `status` and `latency_ms`.
//! The correlation id is the client's `X-Correlation-Id`, else its `X-Request-Id`, when
//! it is a short token (see [`CorrelationId::from_headers`]); otherwise a new UUID. Every
//! answer carries it back in `X-Correlation-Id`, so a till's or a shop's report of a
//! failed request can be found in the hub's or the agent's logs.
//!
//! Polling routes (`/healthz`, `/readyz`, `/metrics`, and the agents' heartbeats) log at
//! DEBUG so a scraper or a fleet does not drown the log; 5xx answers log at WARN.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::fmt;
use std::time::Instant;
use tracing::Instrument;

/// The header a correlation id is read from first, and echoed in.
pub const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");
/// The header a correlation id is read from when `X-Correlation-Id` is absent or unusable.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Routes polled often enough that their lines are DEBUG, not INFO.
const QUIET_ROUTES: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/v1/sync/heartbeat"];

/// Longest correlation id taken from a client.
const MAX_ID_LEN: usize = 64;

/// The id that ties a request's log lines to what its client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorrelationId(HeaderValue);

impl CorrelationId {
    /// The client's `X-Correlation-Id`, else its `X-Request-Id`, when one is 1 to 64
    /// characters of ASCII letters, digits, `-`, `_`, `.` and `:` (anything else could
    /// forge log lines or carry a secret into them); else a new UUID (v7).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        [X_CORRELATION_ID, X_REQUEST_ID]
            .iter()
            .filter_map(|name| headers.get(name))
            .find(|value| usable(value.as_bytes()))
            .map_or_else(Self::new, |value| Self(value.clone()))
    }

    fn new() -> Self {
        let id = uuid::Uuid::now_v7().to_string();
        Self(HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("unknown")))
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `usable` and UUIDs admit ASCII only, so the value is always text.
        f.write_str(self.0.to_str().unwrap_or("unknown"))
    }
}

fn usable(id: &[u8]) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Runs the request in its span, logs its answer, and echoes the correlation id.
pub async fn log_request(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str).to_owned();
    let id = CorrelationId::from_headers(request.headers());
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        route = %route,
        correlation_id = %id,
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    // Milliseconds with three decimals: a cache hit takes well under one.
    let latency_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let status = response.status().as_u16();
    span.in_scope(|| {
        if response.status().is_server_error() {
            tracing::warn!(status, latency_ms, "answered");
        } else if QUIET_ROUTES.contains(&route.as_str()) {
            tracing::debug!(status, latency_ms, "answered");
        } else {
            tracing::info!(status, latency_ms, "answered");
        }
    });
    response.headers_mut().insert(X_CORRELATION_ID, id.0);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&HeaderName, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| ((*name).clone(), HeaderValue::from_static(value)))
            .collect()
    }

    #[test]
    fn a_clients_short_token_is_kept_and_anything_else_replaced() {
        // Given a usable X-Correlation-Id, it wins over X-Request-Id.
        let both = headers(&[(&X_CORRELATION_ID, "till-7:sale-42"), (&X_REQUEST_ID, "req-1")]);
        assert_eq!(CorrelationId::from_headers(&both).to_string(), "till-7:sale-42");
        // Given only X-Request-Id, it is taken.
        let request_id = headers(&[(&X_REQUEST_ID, "0193a-req")]);
        assert_eq!(CorrelationId::from_headers(&request_id).to_string(), "0193a-req");
        // Given an unusable X-Correlation-Id, a usable X-Request-Id is taken instead.
        let spaced = headers(&[(&X_CORRELATION_ID, "a b"), (&X_REQUEST_ID, "req-2")]);
        assert_eq!(CorrelationId::from_headers(&spaced).to_string(), "req-2");
        // Given nothing usable (spaces, quotes, too long, empty), a new UUID.
        let long: &'static str = Box::leak("x".repeat(MAX_ID_LEN + 1).into_boxed_str());
        for bad in ["", "a b", "x\"}", long] {
            let id = CorrelationId::from_headers(&headers(&[(&X_CORRELATION_ID, bad)])).to_string();
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{bad:?} gave {id}");
        }
        let made = CorrelationId::from_headers(&HeaderMap::new()).to_string();
        assert_ne!(made, CorrelationId::from_headers(&HeaderMap::new()).to_string());
        assert!(usable(&[b'x'; MAX_ID_LEN]));
    }

    #[tokio::test]
    async fn every_answer_carries_the_correlation_id_back() {
        use axum::body::Body;
        use tower::ServiceExt;
        let app = axum::Router::new()
            .route("/items/{id}", axum::routing::get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(log_request));
        // Given a request with an id, the answer echoes it; without one, it names a new one.
        let sent = Request::builder()
            .uri("/items/7")
            .header(X_REQUEST_ID, "shop-order-9")
            .body(Body::empty())
            .unwrap();
        let answer = app.clone().oneshot(sent).await.unwrap();
        assert_eq!(answer.headers()[X_CORRELATION_ID], "shop-order-9");
        let bare = Request::builder().uri("/nowhere").body(Body::empty()).unwrap();
        let answer = app.oneshot(bare).await.unwrap();
        let id = answer.headers()[X_CORRELATION_ID].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
}
