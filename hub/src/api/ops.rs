//! Operations routes, open without a token: liveness, readiness, Prometheus metrics and
//! the OpenAPI document generated from the handlers' annotations.

use super::error::ApiError;
use super::sync::ProtocolHeader;
use super::AppState;
use crate::read_model::PoisonEvent;
use axum::extract::State;
use axum::{Json, Router};
use serde::Serialize;
use shelfsync_common::server::openapi::LayerAnswers;
use shelfsync_common::server::ops;
use utoipa::OpenApi;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    ops::routes(readyz, openapi)
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "shelfsync hub", description = "The authoritative inventory event store of a shelfsync fleet. See docs/api.md."),
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
        super::allocations::set_allocation,
        super::allocations::request_share,
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
        super::enroll::create_code,
        super::enroll::redeem_code,
        super::enroll::hub_version,
        super::sync::upload,
        super::sync::pull,
        super::sync::heartbeat,
        super::snapshot::snapshot,
        super::push::stream,
        super::analytics::product_analytics,
        super::analytics::store_analytics,
        super::analytics::top_sellers,
        super::analytics::list_alerts,
        super::analytics::sales_csv,
        super::webhooks::register_webhook,
        super::webhooks::list_webhooks,
        super::webhooks::remove_webhook,
        super::webhooks::webhook_deliveries,
        super::webhooks::redeliver,
        super::webhooks::set_reorder_point,
        super::webhooks::set_store_settings,
        super::webhooks::list_jobs,
        ops::healthz,
        readyz,
        ops::metrics,
        openapi,
    ),
    components(schemas(shelfsync_common::wire::problem::Problem, shelfsync_common::wire::api::WriteResult)),
    modifiers(&BearerAuth, &LayerAnswers, &ProtocolHeader)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token (config admin_token or <data_dir>/admin-token), a channel token \
                         (POST /v1/admin/tokens) or a store token (the /v1/sync routes only)",
                    ))
                    .build(),
            ),
        );
        openapi.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    }
}

/// `GET /readyz`: where the log and the read model are.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`.
    pub status: &'static str,
    /// The log's last position.
    pub head: u64,
    /// The position the read model has reached.
    pub projected: u64,
    /// The read model's breaker: closed, open or half_open.
    pub read_model_breaker: &'static str,
    /// Events the projection could not apply and skipped (with an alarm), in all.
    pub poison_events: u64,
    /// The latest of them, newest first (at most 10).
    pub latest_poison_events: Vec<PoisonEvent>,
}

/// The hub can serve: the writer is running, the projector is not stuck and the read
/// model's breaker is not open. Also lists the latest events the projection had to skip.
#[utoipa::path(get, path = "/readyz", tag = "ops", security(()),
    responses((status = 200, body = Readiness),
        (status = 503, description = "read_model_unavailable (the read model's breaker is open) or projection_stalled")))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let head = state.log.bus().head();
    let projected = state.queries.projected_position();
    let breaker = state.queries.breaker_state();
    if breaker == shelfsync_common::breaker::BreakerState::Open {
        return Err(ApiError::ReadModelUnavailable { retry_after_secs: 5 });
    }
    if let Some(reason) = state.projection_stall.borrow().clone() {
        return Err(ApiError::ProjectionStalled { reason });
    }
    let (poison_events, latest_poison_events) = state.read_model.poison_events(10).await?;
    Ok(Json(Readiness {
        status: "ready",
        head,
        projected,
        read_model_breaker: breaker.as_str(),
        poison_events,
        latest_poison_events,
    }))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", security(()),
    responses((status = 200, description = "this OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
