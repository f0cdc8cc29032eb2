//! Cross-cutting middleware for both binaries: a request time limit that answers
//! `problem+json`, and request counting by route and status.

use super::problem::ProblemResponse;
use crate::write_gate::{self, WriteGate};
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::{Duration, Instant};

/// Answers 503 `timeout` when a request runs past `limit` (use with
/// `axum::middleware::from_fn_with_state(limit, time_limit)`), but only when none of its
/// writes was taken up by a writer: then nothing of it will be written. When one was, the
/// answer waits for the writer's (see [`crate::write_gate`]).
pub async fn time_limit(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    let gate = WriteGate::new();
    let response = write_gate::scope(gate.clone(), next.run(request));
    tokio::pin!(response);
    match tokio::time::timeout(limit, &mut response).await {
        Ok(response) => response,
        Err(_) if gate.close() => ProblemResponse::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "Request timed out",
            "the request timed out; nothing was written, so it is safe to retry",
        )
        .with_header(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        )
        .into_response(),
        Err(_) => {
            tracing::warn!(
                limit_ms = limit.as_millis() as u64,
                "request over its time limit while its write commits; answering with the write's outcome"
            );
            response.await
        }
    }
}

/// Counts requests (`shelfsync_http_requests_total`) and their latency
/// (`shelfsync_http_request_seconds`) by route, method and status.
pub async fn record_request(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("shelfsync_http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("shelfsync_http_request_seconds", "route" => route).record(started.elapsed().as_secs_f64());
    response
}
