//! Operations routes, open without a token: liveness, readiness, Prometheus metrics and
//! the OpenAPI document generated from the handlers' annotations.

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
    info(title = "shelfsync hub", description = "The authoritative inventory event store of a shelfsync fleet."),
    paths(
        super::products::register,
        super::products::update,
        super::products::get_product,
        super::products::find_by_sku,
        super::inventory::add_stock,
        super::inventory::adjust_stock,
        super::inventory::reserve,
        super::inventory::release,
        super::inventory::commit,
        super::stock::product_stock,
        super::stock::stock_level,
        super::stock::availability,
        super::admin::create_token,
        super::admin::revoke_token,
        super::stores::enroll,
        super::stores::list,
        super::stores::revoke,
        super::stores::rotate_token,
        super::stores::fleet,
        super::sync::upload,
        super::sync::pull,
        super::sync::heartbeat,
        super::snapshot::snapshot,
        super::push::stream,
        healthz,
        readyz,
    ),
    components(schemas(shelfsync_common::problem::Problem)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    }
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// The hub can serve: the writer is running, the projector is not stuck and the read
/// model's breaker is not open. Also lists the latest events the projection had to skip.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200), (status = 503)))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let head = state.store.bus().head();
    let projected = state.queries.projected_position();
    let breaker = state.queries.breaker_state();
    if breaker == shelfsync_common::breaker::BreakerState::Open {
        return Err(ApiError::ReadModelUnavailable { retry_after_secs: 5 });
    }
    if let Some(reason) = state.projection_stall.borrow().clone() {
        return Err(ApiError::ProjectionStalled { reason });
    }
    let (poison_count, latest_poison) = state.read_model.poison_events(10).await?;
    Ok(Json(json!({
        "status": "ready",
        "head": head,
        "projected": projected,
        "read_model_breaker": breaker.as_str(),
        "poison_events": poison_count,
        "latest_poison_events": latest_poison,
    })))
}

async fn metrics() -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        shelfsync_common::server::telemetry::metrics_handle().render(),
    )
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
