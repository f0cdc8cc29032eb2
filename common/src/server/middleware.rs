//! Cross-cutting middleware for both binaries: a request time limit that answers
//! `problem+json`, request counting by route and status, and [`with_service_layers`], the
//! one stack of layers (and 404/405 fallbacks) both APIs are served with, request logs
//! ([`super::request_log`]) among them.

use super::problem::ProblemResponse;
use super::settings::{HttpConfig, HttpDefaults};
use crate::write_gate::{self, WriteGate};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::time::{Duration, Instant};

/// Wraps a binary's `routes` in the layers every API has, innermost first: `problem+json`
/// answers for a path no route serves (404 `route_not_found`) and a method a path does not
/// take (405 `method_not_allowed`), the body limit and the request time limit of `http`,
/// then `own` (the binary's own layers: they see the time limit's answers), then request
/// counting and, outermost, the request's span and log line (they see every answer).
pub fn with_service_layers<S, D: HttpDefaults>(
    routes: Router<S>,
    http: &HttpConfig<D>,
    own: impl FnOnce(Router<S>) -> Router<S>,
) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let limited = routes
        .fallback(|| async { ProblemResponse::route_not_found() })
        .method_not_allowed_fallback(|| async { ProblemResponse::method_not_allowed() })
        .layer(DefaultBodyLimit::max(http.body_limit_bytes))
        .layer(middleware::from_fn_with_state(
            http.body_limit_bytes,
            declared_too_large,
        ))
        .layer(middleware::from_fn_with_state(http.request_timeout(), time_limit));
    own(limited)
        .layer(middleware::from_fn(record_request))
        .layer(middleware::from_fn(super::request_log::log_request))
}

/// Bodies declared larger than this are refused without being read (the connection then
/// closes with them unread, and the client may see a reset instead of the answer).
const DRAIN_AT_MOST: u64 = 16 * 1024 * 1024;
/// Longest a refused body is read for.
const DRAIN_FOR: Duration = Duration::from_secs(5);

/// Answers 413 `body_too_large` to a request whose `Content-Length` is over `limit`, after
/// reading (and dropping) its body, up to [`DRAIN_AT_MOST`] bytes for at most [`DRAIN_FOR`].
/// Answering before the body is read would close the connection with the client still
/// sending: its kernel then gets a reset, which can arrive before the answer is read, and
/// the client sees a broken connection instead of the 413.
pub async fn declared_too_large(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => {
            if length <= DRAIN_AT_MOST {
                let mut body = request.into_body().into_data_stream();
                let drained = tokio::time::timeout(DRAIN_FOR, async {
                    while let Some(Ok(_)) = futures_util::StreamExt::next(&mut body).await {}
                });
                let _ = drained.await;
            }
            ProblemResponse::body_too_large().into_response()
        }
        _ => next.run(request).await,
    }
}

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
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    let seconds = started.elapsed().as_secs_f64();
    RequestSeries::record(route, &method, response.status(), seconds);
    response
}

/// One route's request metrics, registered once per thread: naming a labelled series
/// builds its key (three label strings) and looks it up in the recorder, which per request
/// was a measurable part of a small request's cost.
struct RequestSeries {
    seconds: metrics::Histogram,
    /// By method and status; a route sees few of them.
    counts: Vec<(Method, StatusCode, metrics::Counter)>,
}

thread_local! {
    static SERIES: std::cell::RefCell<std::collections::HashMap<String, RequestSeries>> = Default::default();
}

impl RequestSeries {
    fn record(route: &str, method: &Method, status: StatusCode, seconds: f64) {
        if !crate::server::telemetry::metrics_installed() {
            // A handle taken now would record nowhere for good: name the series each time.
            Self::counter(route, method, status).increment(1);
            Self::histogram(route).record(seconds);
            return;
        }
        SERIES.with_borrow_mut(|series| {
            if !series.contains_key(route) {
                let fresh = RequestSeries {
                    seconds: Self::histogram(route),
                    counts: Vec::new(),
                };
                series.insert(route.to_owned(), fresh);
            }
            let Some(route_series) = series.get_mut(route) else {
                return;
            };
            route_series.seconds.record(seconds);
            match route_series.counts.iter().find(|(m, s, _)| m == method && *s == status) {
                Some((_, _, counter)) => counter.increment(1),
                None => {
                    let counter = Self::counter(route, method, status);
                    counter.increment(1);
                    route_series.counts.push((method.clone(), status, counter));
                }
            }
        });
    }

    fn counter(route: &str, method: &Method, status: StatusCode) -> metrics::Counter {
        metrics::counter!(
            "shelfsync_http_requests_total",
            "route" => route.to_owned(),
            "method" => method.as_str().to_owned(),
            "status" => status.as_str().to_owned()
        )
    }

    fn histogram(route: &str) -> metrics::Histogram {
        metrics::histogram!("shelfsync_http_request_seconds", "route" => route.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{to_bytes, Body};
    use axum::routing::{get, post};
    use tower::ServiceExt;

    struct Tiny;

    impl HttpDefaults for Tiny {
        const BODY_LIMIT_BYTES: usize = 16;
        const REQUEST_TIMEOUT_SECS: u64 = 1;
        const MAX_CONNECTIONS: usize = 4;
    }

    /// A 16-byte body limit and a 1 s time limit; the binary's own layer marks answers.
    fn app() -> Router {
        let http = HttpConfig::<Tiny>::default();
        let routes = Router::new()
            .route("/echo", post(|body: axum::body::Bytes| async move { body }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            );
        with_service_layers(routes, &http, |router| {
            router.layer(middleware::from_fn(|request: Request, next: Next| async move {
                let mut response = next.run(request).await;
                response
                    .headers_mut()
                    .insert("x-own", axum::http::HeaderValue::from_static("1"));
                response
            }))
        })
    }

    async fn call(method: &str, path: &str, body: &'static str) -> (StatusCode, String, bool) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body))
            .unwrap();
        let response = app().oneshot(request).await.unwrap();
        let status = response.status();
        let own = response.headers().contains_key("x-own");
        let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
        (status, String::from_utf8_lossy(&body).into_owned(), own)
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_answer_problems() {
        // Given the layered routes, when a path or a method has no route, then a problem says so.
        let (status, body, own) = call("GET", "/nowhere", "").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("route_not_found"), "{body}");
        assert!(own, "the binary's layers see the fallbacks");
        let (status, body, _) = call("GET", "/echo", "").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(body.contains("method_not_allowed"), "{body}");
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused() {
        // Given a 16-byte limit, a body within it passes and a longer one is refused.
        assert_eq!(call("POST", "/echo", "short").await.0, StatusCode::OK);
        let (status, _, _) = call("POST", "/echo", "a body of more than sixteen bytes").await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn every_request_is_counted_by_route_method_and_status() {
        // Given the process's recorder, and a route of its own in this test,
        let metrics = crate::server::telemetry::metrics_handle();
        let http = HttpConfig::<Tiny>::default();
        let routes = Router::new().route("/counted", get(|| async { "ok" }));
        let app = with_service_layers(routes, &http, |router| router);
        // when it is called three times and misses once,
        for path in ["/counted", "/counted", "/counted?again", "/counted/not"] {
            let request = Request::builder().uri(path).body(Body::empty()).unwrap();
            app.clone().oneshot(request).await.unwrap();
        }
        // then each answer is counted once, under its own series.
        let text = metrics.render();
        let count = |labels: &str| {
            text.lines()
                .find(|line| line.starts_with(&format!("shelfsync_http_requests_total{{{labels}}}")))
                .and_then(|line| line.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(
            count(r#"route="/counted",method="GET",status="200""#).as_deref(),
            Some("3"),
            "{text}"
        );
        assert!(
            count(r#"route="unmatched",method="GET",status="404""#).is_some(),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_time_limit_answers_timeout_through_the_binarys_layers() {
        // Given a 1 s limit, when a handler takes 5 s, then the answer is a 503 timeout
        // problem that passed through the binary's own layers.
        let (status, body, own) = call("GET", "/slow", "").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("\"timeout\""), "{body}");
        assert!(own);
    }
}
