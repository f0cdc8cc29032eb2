//! Operations routes, open without a key: liveness, readiness, Prometheus metrics and the
//! OpenAPI document generated from the handlers' annotations.

use super::error::ApiError;
use super::AppState;
use axum::extract::State;
use axum::{Json, Router};
use serde::Serialize;
use shelfsync_common::server::openapi::LayerAnswers;
use shelfsync_common::server::ops;
use shelfsync_common::StoreId;
use utoipa::OpenApi;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    ops::routes(readyz, openapi)
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
        super::allocations::request_share,
        super::status::status,
        super::outbox::list_outbox,
        super::outbox::list_quarantine,
        super::outbox::retry,
        super::outbox::discard,
        ops::healthz,
        readyz,
        ops::metrics,
        openapi,
    ),
    components(schemas(shelfsync_common::wire::problem::Problem, shelfsync_common::wire::edge::LocalWriteResult)),
    modifiers(&KeySchemes, &LayerAnswers)
)]
pub struct ApiDoc;

/// The document as this agent serves it: a store id in a request must be this agent's
/// store (anything else is `422 wrong_store`), and the agent takes no expected version but
/// `any` (anything else is `422 expected_version_unsupported`), so the schemas say so.
pub fn document(store: StoreId) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
    use utoipa::openapi::RefOr;
    let mut openapi = ApiDoc::openapi();
    let this_store = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .enum_values(Some([store.to_string()]))
            .description(Some("this agent's store"))
    };
    let any_version = || {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["any"]))
            .description(Some(
                "the agent records facts in order and takes no other expected version",
            ))
    };
    if let Some(components) = openapi.components.as_mut() {
        for (name, schema) in components.schemas.iter_mut() {
            let RefOr::T(Schema::Object(object)) = schema else {
                continue;
            };
            if object.properties.contains_key("store_id") && name.ends_with("Request") {
                object.properties.insert("store_id".into(), this_store().into());
            }
            if object.properties.contains_key("expected_version") {
                object
                    .properties
                    .insert("expected_version".into(), any_version().into());
            }
        }
    }
    for item in openapi.paths.paths.values_mut() {
        for operation in shelfsync_common::server::openapi::operations_mut(item) {
            for parameter in operation.parameters.iter_mut().flatten() {
                if parameter.name == "store_id" {
                    parameter.schema = Some(this_store().into());
                }
            }
        }
    }
    openapi
}

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

/// `GET /readyz`: the agent serves its tills.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready`.
    pub status: &'static str,
    /// This store.
    pub store_id: StoreId,
    /// Whether the catalog and stock came from the hub yet.
    pub bootstrapped: bool,
    /// The last hub position applied.
    pub cursor: u64,
    /// Products in the local catalog.
    pub products: usize,
}

/// The agent can serve the tills: its local store is open (it is before the first request
/// is taken) and it is not shutting down. `bootstrapped: false` means it has not yet had
/// its catalog and stock from the hub, so it knows no products.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, body = Readiness), (status = 503, description = "shutting_down")),
    security(()))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    if *state.stopping.borrow() {
        return Err(ApiError::ShuttingDown);
    }
    Ok(Json(state.local.read(|view| Readiness {
        status: "ready",
        store_id: view.store_id,
        bootstrapped: view.sync.bootstrapped,
        cursor: view.sync.cursor,
        products: view.catalog.len(),
    })))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "this OpenAPI 3.1 document", content_type = "application/json")), security(()))]
pub async fn openapi(State(state): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    Json(document(state.local.read(|view| view.store_id)))
}
