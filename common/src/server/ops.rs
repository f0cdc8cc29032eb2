//! The operations routes both binaries answer the same way: liveness and Prometheus
//! metrics, open without a token. Readiness and the OpenAPI document differ per binary
//! and stay with each.

use crate::wire::api::Liveness;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::Json;

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
