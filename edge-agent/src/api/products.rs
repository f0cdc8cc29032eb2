//! `/v1/products` at the store: the catalog as the hub last sent it, read from memory.
//! The catalog is written only at the hub; this agent has no catalog writes.

use super::auth::Till;
use super::error::ApiError;
use super::AppState;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use shelfsync_common::domain::product::normalize_sku;
use shelfsync_common::server::extract::{ApiPath, ApiQuery};
use shelfsync_common::server::failure::Reject;
use shelfsync_common::wire::api::ProductView;
use shelfsync_common::ProductId;

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/products", get(find_by_sku))
        .route("/v1/products/{id}", get(get_product))
}

fn not_found(bootstrapped: bool, id: String) -> ApiError {
    if bootstrapped {
        ApiError::not_found("product", id)
    } else {
        ApiError::NotBootstrapped
    }
}

/// One product.
#[utoipa::path(get, path = "/v1/products/{id}", tag = "catalog",
    params(("id" = uuid::Uuid, Path, description = "product id")),
    responses((status = 200, body = ProductView), (status = 404, description = "product_not_found"), (status = 503, description = "not_bootstrapped: the catalog has not come from the hub yet (Retry-After)")),
    security(("terminal" = []), ("manager" = [])))]
pub async fn get_product(
    State(state): State<AppState>,
    _till: Till,
    ApiPath(id): ApiPath<ProductId>,
) -> Result<Json<ProductView>, ApiError> {
    state
        .local
        .read(|view| {
            view.catalog
                .get(&id)
                .cloned()
                .ok_or_else(|| not_found(view.sync.bootstrapped, id.to_string()))
        })
        .map(Json)
}

/// `?sku=` for [`find_by_sku`].
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SkuQuery {
    /// The SKU (e.g. a scanned barcode).
    pub sku: String,
}

/// Find a product by SKU.
#[utoipa::path(get, path = "/v1/products", tag = "catalog", params(SkuQuery),
    responses((status = 200, body = ProductView), (status = 404, description = "product_not_found"), (status = 503, description = "not_bootstrapped: the catalog has not come from the hub yet (Retry-After)")),
    security(("terminal" = []), ("manager" = [])))]
pub async fn find_by_sku(
    State(state): State<AppState>,
    _till: Till,
    ApiQuery(query): ApiQuery<SkuQuery>,
) -> Result<Json<ProductView>, ApiError> {
    state
        .local
        .read(|view| {
            view.product_by_sku(&normalize_sku(&query.sku))
                .cloned()
                .ok_or_else(|| not_found(view.sync.bootstrapped, format!("with sku {:?}", query.sku)))
        })
        .map(Json)
}
