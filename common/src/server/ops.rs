//! The operations routes of both binaries, open without a token, under the same paths:
//! liveness and Prometheus metrics are answered here; readiness and the OpenAPI document
//! differ per binary, which hands its handlers to [`routes`].

use crate::wire::api::Liveness;
use axum::handler::Handler;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

/// `GET /healthz`, `/readyz`, `/metrics` and `/openapi.json`, with the binary's `readyz`
/// and `openapi` handlers.
pub fn routes<S, R, RT, O, OT>(readyz: R, openapi: O) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    R: Handler<RT, S>,
    O: Handler<OT, S>,
    RT: 'static,
    OT: 'static,
{
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Liveness)), security(()))]
pub async fn healthz() -> Json<Liveness> {
    Json(Liveness::ok())
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        super::telemetry::metrics_handle().render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    #[tokio::test]
    async fn the_four_paths_are_served_with_the_binarys_readiness_and_document() {
        // Given the routes with a binary's own readiness and document handlers,
        let app: Router = routes(|| async { "ready" }, || async { "document" });
        for (path, body) in [
            ("/healthz", None),
            ("/readyz", Some("ready")),
            ("/metrics", None),
            ("/openapi.json", Some("document")),
        ] {
            // when each path is asked for, then it answers 200 (with the binary's body where it gave one).
            let request = Request::builder().uri(path).body(Body::empty()).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
            if let Some(body) = body {
                assert_eq!(bytes, body.as_bytes(), "{path}");
            }
        }
    }
}
