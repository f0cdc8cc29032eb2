//! Operations routes, open without a key: liveness, readiness, Prometheus metrics and the
//! OpenAPI document generated from the handlers' annotations.

use super::error::ApiError;
use super::AppState;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use utoipa::OpenApi;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "shelfsync edge agent",
        description = "The store's POS API: catalog and stock reads, and stock commands recorded locally \
                       (they work while the hub is unreachable). See docs/edge-api.md."
    ),
    paths(
        super::products::get_product,
        super::products::find_by_sku,
        super::inventory::add_stock,
        super::inventory::adjust_stock,
        super::inventory::reserve,
        super::inventory::release,
        super::inventory::commit,
        super::inventory::stock_level,
        super::inventory::availability,
        super::status::status,
        super::outbox::list_outbox,
        super::outbox::list_quarantine,
        super::outbox::retry,
        super::outbox::discard,
        healthz,
        readyz,
        metrics,
        openapi,
    ),
    components(schemas(shelfsync_common::problem::Problem)),
    modifiers(&KeySchemes)
)]
pub struct ApiDoc;

struct KeySchemes;

impl utoipa::Modify for KeySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, description) in [
            (
                "terminal",
                "The store's terminal key (config terminal_key or <data_dir>/terminal-key)",
            ),
            (
                "manager",
                "The store manager's key (config manager_key or <data_dir>/manager-key)",
            ),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(description))
                        .build(),
                ),
            );
        }
    }
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200)), security(()))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The agent can serve the tills: its local store is open (it is before the first request
/// is taken) and it is not shutting down. `bootstrapped: false` means it has not yet had
/// its catalog and stock from the hub, so it knows no products.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200), (status = 503, description = "shutting_down")),
    security(()))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if *state.stopping.borrow() {
        return Err(ApiError::ShuttingDown);
    }
    Ok(Json(state.store.read(|view| {
        json!({
            "status": "ready",
            "store_id": view.store_id,
            "bootstrapped": view.sync.bootstrapped,
            "cursor": view.sync.cursor,
            "products": view.catalog.len(),
        })
    })))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, content_type = "text/plain")), security(()))]
pub async fn metrics() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        shelfsync_common::server::telemetry::metrics_handle().render(),
    )
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, content_type = "application/json")),
    security(()))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
