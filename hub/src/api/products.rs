//! `/v1/products`: the catalog. Writes need the admin token (back office); reads are open
//! to every hub client and come from the read model.

use super::auth::Principal;
use super::error::ApiError;
use super::stock::{answer, MinPosition};
use super::write::{written, WriteAnswers, WriteContext, WriteHeaderParams};
use super::AppState;
use crate::store::Command;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use shelfsync_common::domain::catalog::CatalogCommand;
use shelfsync_common::domain::product::normalize_sku;
use shelfsync_common::server::extract::{ApiJson, ApiPath, ApiQuery};
use shelfsync_common::server::failure::Reject;
use shelfsync_common::wire::api::{ProductView, RegisterProductRequest, UpdateProductRequest};
use shelfsync_common::{Product, ProductId};

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/products", post(register).get(find_by_sku))
        .route("/v1/products/{id}", get(get_product).put(update))
}

/// Register a product (admin token). `Location` names the new product.
#[utoipa::path(post, path = "/v1/products", tag = "catalog", request_body = RegisterProductRequest, params(WriteHeaderParams),
    responses(WriteAnswers, (status = 400, description = "invalid_if_match, invalid_idempotency_key, invalid_correlation_id or conflicting_preconditions"), (status = 403, description = "forbidden: needs the admin token"),
        (status = 409, description = "product_exists or sku_taken"),
        (status = 422, description = "invalid_product (`field` names the field) or idempotency_key_reused"), (status = 503, description = "storage_unavailable or shutting_down: nothing was written; retry")))]
pub async fn register(
    State(state): State<AppState>,
    ctx: WriteContext,
    ApiJson(body): ApiJson<RegisterProductRequest>,
) -> Result<Response, ApiError> {
    ctx.principal.require_admin()?;
    let product = Product {
        id: body.id.unwrap_or_else(ProductId::new_v7),
        sku: body.sku.clone(),
        name: body.name.clone(),
        price_minor: body.price_minor,
    }
    .normalized();
    let location = format!("/v1/products/{}", product.id);
    let command = Command::Catalog(CatalogCommand::RegisterProduct { product });
    let request = ctx.command(command, None, "register_product", &body)?;
    Ok(written(state.log.execute(request).await?, Some(location)))
}

/// Replace a product's SKU, name and price (`If-Match` with its version to guard).
#[utoipa::path(put, path = "/v1/products/{id}", tag = "catalog", request_body = UpdateProductRequest,
    params(("id" = uuid::Uuid, Path, description = "product id"), WriteHeaderParams),
    responses(WriteAnswers, (status = 400, description = "invalid_if_match, invalid_idempotency_key, invalid_correlation_id or conflicting_preconditions"), (status = 403, description = "forbidden: needs the admin token"), (status = 404, description = "product_not_found"),
        (status = 409, description = "version_conflict (`current_version`, `X-Shelfsync-Current-Version`) or sku_taken"),
        (status = 422, description = "invalid_product, product_id_mismatch or idempotency_key_reused"), (status = 503, description = "storage_unavailable or shutting_down: nothing was written; retry")))]
pub async fn update(
    State(state): State<AppState>,
    ctx: WriteContext,
    ApiPath(id): ApiPath<ProductId>,
    ApiJson(body): ApiJson<UpdateProductRequest>,
) -> Result<Response, ApiError> {
    ctx.principal.require_admin()?;
    let product = Product {
        id,
        sku: body.sku.clone(),
        name: body.name.clone(),
        price_minor: body.price_minor,
    }
    .normalized();
    let command = Command::Catalog(CatalogCommand::UpdateProduct { product });
    let request = ctx.command(command, body.expected_version, "update_product", &(id, body))?;
    Ok(written(state.log.execute(request).await?, None))
}

/// One product.
#[utoipa::path(get, path = "/v1/products/{id}", tag = "catalog",
    params(("id" = uuid::Uuid, Path, description = "product id"), MinPosition),
    responses((status = 200, body = ProductView), (status = 403, description = "forbidden: store tokens may only use the /v1/sync routes"), (status = 404, description = "product_not_found"), (status = 400, description = "min_position_past_head: no write has that position yet"), (status = 503, description = "read_model_unavailable (Retry-After), read_model_behind (min_position not reached in time) or storage_unavailable")))]
pub async fn get_product(
    State(state): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<ProductId>,
    ApiQuery(at): ApiQuery<MinPosition>,
) -> Result<Response, ApiError> {
    principal.require_channel()?;
    let found = state.queries.product(id, at.min_position).await?;
    answer(found, || ApiError::not_found("product", id))
}

/// `?sku=` for [`find_by_sku`].
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SkuQuery {
    /// The SKU to look up.
    pub sku: String,
    /// Wait (bounded) until the read model has reached this position (from a write's answer).
    #[serde(
        default,
        deserialize_with = "shelfsync_common::wire::sync::bounded::optional_position"
    )]
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub min_position: Option<u64>,
}

/// Find a product by SKU.
#[utoipa::path(get, path = "/v1/products", tag = "catalog", params(SkuQuery),
    responses((status = 200, body = ProductView), (status = 403, description = "forbidden: store tokens may only use the /v1/sync routes"), (status = 404, description = "product_not_found"), (status = 400, description = "min_position_past_head: no write has that position yet"), (status = 503, description = "read_model_unavailable (Retry-After), read_model_behind (min_position not reached in time) or storage_unavailable")))]
pub async fn find_by_sku(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(query): ApiQuery<SkuQuery>,
) -> Result<Response, ApiError> {
    principal.require_channel()?;
    let found = state
        .queries
        .product_by_sku(normalize_sku(&query.sku), query.min_position)
        .await?;
    answer(found, || {
        ApiError::not_found("product", format!("with sku {:?}", query.sku))
    })
}
