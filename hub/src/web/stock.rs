//! Stock: find a product by SKU or name; a product's page with its stock at every store
//! (on hand, reserved, available, totals; kept current over SSE, so a till's sale shows
//! without a reload) and its recent events (what, where, who, when). For the admin, the
//! product's page also holds its forms (edit, add stock, reserve; `manage` takes them).

use super::{price, stores, Viewer};
use crate::api::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::{html as markup, Markup};
use serde::Deserialize;
use shelfsync_common::domain::product::normalize_sku;
use shelfsync_common::server::failure::Failure;
use shelfsync_common::server::web::live::{self, Frame};
use shelfsync_common::server::web::page::{notice, Notice};
use shelfsync_common::server::web::words::clock;
use shelfsync_common::wire::api::{ProductStock, ProductView, StoreInfo};
use shelfsync_common::{EventEnvelope, ProductId, ReservationId};
use time::OffsetDateTime;

/// Most products a search lists.
const SEARCH_LIMIT: usize = 50;
/// The product page looks for its recent events among this many of the log's last events
/// (the log has no index by product; the page says so).
pub const RECENT_SCAN: usize = 5000;
/// Most recent events a product page lists.
const RECENT_SHOWN: usize = 20;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/stock", get(search))
        .route("/stock/{id}", get(product_page))
        .route("/stock/{id}/live", get(live_stock))
}

/// `?q=`.
#[derive(Debug, Deserialize)]
pub(super) struct SearchQuery {
    #[serde(default)]
    q: Option<String>,
}

async fn search(
    State(state): State<AppState>,
    viewer: Viewer,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let text = query.ok().and_then(|q| q.0.q).unwrap_or_default();
    let text = text.trim();
    let found = if text.is_empty() || text.len() > 200 {
        Ok(Vec::new())
    } else {
        find(&state, text).await
    };
    let found = match found {
        Ok(found) => found,
        Err(problem) => return viewer.refused(&problem, "/stock"),
    };
    let body = markup! {
        form.card method="get" action="/stock" role="search" {
            label for="q" { "SKU or product name" }
            input #q type="search" name="q" value=(text) maxlength="200" autofocus;
            button type="submit" { "Find" }
        }
        @if !text.is_empty() {
            @if found.is_empty() { p role="status" { "No product has the SKU or a name containing “" (text) "”." } }
            @else {
                div.table-wrap { table #results {
                    caption.hint { (found.len()) " found" @if found.len() == SEARCH_LIMIT { " (the first " (SEARCH_LIMIT) ")" } }
                    thead { tr { th scope="col" { "SKU" } th scope="col" { "Name" } th.num scope="col" { "Price" } } }
                    tbody { @for p in &found { tr {
                        td { a href={ "/stock/" (p.product.id) } { (p.product.sku) } }
                        td { a href={ "/stock/" (p.product.id) } { (p.product.name) } }
                        td.num { (price(p.product.price_minor)) }
                    } } }
                } }
            }
        }
    };
    viewer.page(StatusCode::OK, "Stock", "/stock", body)
}

/// The product with this SKU first, then those whose name contains `text` (any case).
async fn find(state: &AppState, text: &str) -> Result<Vec<ProductView>, Box<shelfsync_common::wire::problem::Problem>> {
    let problem = |e: crate::api::error::ApiError| e.problem().problem;
    let mut found = Vec::new();
    if let Some(exact) = state
        .queries
        .product_by_sku(normalize_sku(text), None)
        .await
        .map_err(|e| problem(e.into()))?
        .value
    {
        found.push(exact);
    }
    let needle = text.to_lowercase();
    let catalog = state.read_model.catalog().await.map_err(|e| problem(e.into()))?;
    for product in catalog {
        if found.len() >= SEARCH_LIMIT {
            break;
        }
        if product.product.name.to_lowercase().contains(&needle)
            && found.iter().all(|f| f.product.id != product.product.id)
        {
            found.push(product);
        }
    }
    Ok(found)
}

/// `?done=&reservation=`: what the last form did.
#[derive(Debug, Deserialize)]
pub(super) struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
    #[serde(default)]
    reservation: Option<ReservationId>,
}

async fn product_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    query: Result<Query<DoneQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(id) = id.parse::<ProductId>() else {
        return no_product(&viewer);
    };
    let product = match state.queries.product(id, None).await {
        Ok(found) => found.value,
        Err(error) => return viewer.refused(&crate::api::error::ApiError::from(error).problem().problem, "/stock"),
    };
    let Some(product) = product else {
        return no_product(&viewer);
    };
    let (stock, stores, events) =
        match tokio::try_join!(stock_table(&state, id), stores(&state), recent_events(&state, id)) {
            Ok(found) => found,
            Err(problem) => return viewer.refused(&problem, "/stock"),
        };
    let done = query
        .ok()
        .map(|q| q.0)
        .and_then(|q| done_words(q.done.as_deref(), q.reservation));
    let now = OffsetDateTime::now_utc();
    let body = markup! {
        @if let Some(done) = done { (notice(Notice::Done, &done)) }
        dl.facts.card {
            dt { "SKU" } dd #sku { (product.product.sku) }
            dt { "Name" } dd #name { (product.product.name) }
            dt { "Price" } dd { (price(product.product.price_minor)) }
            dt { "Version" } dd { (product.version) }
            dt { "Id" } dd { code { (id) } }
        }
        h2 { "Stock at every store" }
        div data-live={ "/stock/" (id) "/live" } { (stock) }
        h2 { "Recent events" }
        p.hint { "Among the log's last " (RECENT_SCAN) " events, newest first." }
        @if events.is_empty() { p { "None." } } @else {
            div.table-wrap { table #events {
                thead { tr { th scope="col" { "When" } th scope="col" { "What" } th scope="col" { "Where" } th scope="col" { "Who" } th.num scope="col" { "Position" } } }
                tbody { @for e in &events { tr {
                    td { (clock(e.metadata.occurred_at, now)) }
                    td { (e.payload.event_type()) }
                    td { (e.stream.store_id.map_or("catalog".to_owned(), |s| store_name(&stores, s))) }
                    td { (e.metadata.actor) }
                    td.num { (e.position) }
                } } }
            } }
        }
        @if viewer.is_admin() { (super::manage::product_forms(&viewer, &product, &stores)) }
    };
    viewer.page(StatusCode::OK, &product.product.name, "/stock", body)
}

fn done_words(done: Option<&str>, reservation: Option<ReservationId>) -> Option<String> {
    Some(match (done?, reservation) {
        ("registered", _) => "Product registered.".to_owned(),
        ("saved", _) => "Product saved.".to_owned(),
        ("stock-added", _) => "Stock added.".to_owned(),
        ("reserved", Some(r)) => format!("Reserved. The reservation's id (to release it): {r}"),
        _ => return None,
    })
}

async fn live_stock(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<ProductId>() else {
        return no_product(&viewer);
    };
    let stopping = state.stopping.clone();
    live::stream(live::PERIOD, stopping, move || {
        let state = state.clone();
        let headers = headers.clone();
        async move {
            if Viewer::of(&state, &headers).await.is_err() {
                return Frame::SignedOut;
            }
            match stock_table(&state, id).await {
                Ok(table) => Frame::Html(table.into_string()),
                Err(problem) => Frame::Html(
                    markup! { p.notice.error role="alert" { "Stock could not be read just now: " (problem.detail) } }
                        .into_string(),
                ),
            }
        }
    })
}

/// The stock table of a product: every store's figures and the totals.
async fn stock_table(state: &AppState, id: ProductId) -> Result<Markup, Box<shelfsync_common::wire::problem::Problem>> {
    let stock = state
        .queries
        .product_stock(id, None)
        .await
        .map_err(|e| crate::api::error::ApiError::from(e).problem().problem)?;
    let stores = stores(state).await?;
    Ok(render_stock(&stock.value, &stores, stock.stale))
}

fn render_stock(stock: &ProductStock, stores: &[StoreInfo], stale: bool) -> Markup {
    let total_reserved: i64 = stock.stores.iter().map(|s| s.reserved).sum();
    markup! {
        @if stale { p.notice.error role="alert" { "The read model is unavailable; these figures are from the cache and may be out of date." } }
        @if stock.stores.is_empty() { p { "No store has stock of this product yet." } } @else {
            div.table-wrap { table #stock {
                thead { tr { th scope="col" { "Store" } th.num scope="col" { "On hand" } th.num scope="col" { "Reserved" } th.num scope="col" { "Available" } } }
                tbody { @for level in &stock.stores { tr data-store=(level.store_id) {
                    th scope="row" { (store_name(stores, level.store_id)) }
                    td.num.on-hand { (level.on_hand) }
                    td.num { (level.reserved) }
                    td.num.available { (level.available) }
                } } }
                tfoot { tr {
                    th scope="row" { "All stores" }
                    td.num #total-on-hand { (stock.total_on_hand) }
                    td.num { (total_reserved) }
                    td.num #total-available { (stock.total_available) }
                } }
            } }
        }
    }
}

fn store_name(stores: &[StoreInfo], id: shelfsync_common::StoreId) -> String {
    stores
        .iter()
        .find(|s| s.id == id)
        .map_or_else(|| id.to_string(), |s| s.name.clone())
}

/// The product's events among the log's last [`RECENT_SCAN`], newest first.
async fn recent_events(
    state: &AppState,
    id: ProductId,
) -> Result<Vec<EventEnvelope>, Box<shelfsync_common::wire::problem::Problem>> {
    let head = state.log.bus().head();
    let after = head.saturating_sub(RECENT_SCAN as u64);
    let events = state
        .log
        .read_after(after, RECENT_SCAN)
        .await
        .map_err(|e| crate::api::error::ApiError::from(e).problem().problem)?;
    Ok(events
        .into_iter()
        .rev()
        .filter(|e| e.stream.product_id == id)
        .take(RECENT_SHOWN)
        .collect())
}

fn no_product(viewer: &Viewer) -> Response {
    viewer.page(
        StatusCode::NOT_FOUND,
        "No such product",
        "/stock",
        notice(Notice::Error, "No product has that id."),
    )
}
