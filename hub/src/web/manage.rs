//! The admin's forms: enroll a store (its token shown once, with a copy button), rotate
//! or revoke a store's token, register or edit a product, add stock, make and release a
//! reservation. Each form calls the JSON route's handler with the signed-in principal
//! (so the same checks and the same refusals apply), carries a fresh idempotency key (a
//! form sent twice is one write), and the destructive ones ask first (`data-confirm`).

use super::{price, stores, write_fields, Admin, Submitted, Viewer};
use crate::api::auth::Principal;
use crate::api::write::WriteContext;
use crate::api::{inventory, products, stores as store_routes, AppState};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use maud::{html as markup, Markup};
use serde::Deserialize;
use shelfsync_common::server::extract::{ApiJson, ApiPath, OptionalApiJson};
use shelfsync_common::server::failure::Failure;
use shelfsync_common::server::web::page::{csrf_field, notice, Notice};
use shelfsync_common::server::web::redirect;
use shelfsync_common::wire::api::{
    AddStockRequest, ProductView, RegisterProductRequest, ReleaseReservationRequest, ReserveStockRequest, StoreInfo,
    UpdateProductRequest,
};
use shelfsync_common::wire::problem::Problem;
use shelfsync_common::wire::sync::{EnrollStoreRequest, EnrolledStore};
use shelfsync_common::{ExpectedVersion, ProductId, ReservationId, StockQuantity, StoreId};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/manage", get(page))
        .route("/manage/stores", post(enroll))
        .route("/manage/stores/{id}/{action}", post(store_token))
        .route("/manage/products", post(register))
        .route("/manage/reservations/release", post(release))
        .route("/stock/{id}/edit", post(edit))
        .route("/stock/{id}/{action}", post(stock_change))
}

/// `?done=`: what the last form did.
#[derive(Debug, Deserialize)]
pub(super) struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
}

async fn page(
    State(state): State<AppState>,
    Admin(viewer): Admin,
    query: Result<Query<DoneQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let stores = match stores(&state).await {
        Ok(stores) => stores,
        Err(problem) => return viewer.refused(&problem, "/manage"),
    };
    let done = match query.ok().and_then(|q| q.0.done).as_deref() {
        Some("revoked") => Some("Token revoked: the store's agent is refused from its next request on."),
        Some("released") => Some("Reservation released."),
        _ => None,
    };
    let csrf = &viewer.csrf.token;
    let body = markup! {
        @if let Some(done) = done { (notice(Notice::Done, done)) }
        div.grid {
            form.card method="post" action="/manage/stores" {
                h2 { "Enroll a store" }
                (csrf_field(csrf))
                label for="store-name" { "Store name" }
                input #store-name name="name" required maxlength="64";
                p.hint { "Letters, digits, spaces, '-', '_' and '.'. Its token is shown once, on the next page." }
                button type="submit" { "Enroll" }
            }
            form.card method="post" action="/manage/products" {
                h2 { "Register a product" }
                (write_fields(&viewer))
                label for="new-sku" { "SKU" }
                input #new-sku name="sku" required maxlength="64";
                label for="new-name" { "Name" }
                input #new-name name="name" required maxlength="200";
                label for="new-price" { "Price (e.g. 12.50)" }
                input #new-price name="price" required inputmode="decimal" pattern="[0-9]+([.][0-9]{1,2})?";
                button type="submit" { "Register" }
            }
            form.card method="post" action="/manage/reservations/release" data-confirm="Release this reservation? Its units become available again." {
                h2 { "Release a reservation" }
                (write_fields(&viewer))
                label for="reservation-id" { "Reservation id" }
                input #reservation-id name="reservation_id" required maxlength="36";
                button.danger type="submit" { "Release" }
            }
        }
        h2 { "Stores and their tokens" }
        div.table-wrap { table #stores {
            thead { tr { th scope="col" { "Store" } th scope="col" { "Token" } th scope="col" { "Actions" } } }
            tbody { @for store in &stores { tr data-store=(store.id) {
                th scope="row" { (store.name) }
                td { @if store.revoked { "revoked" } @else { "live" } }
                td {
                    form.inline method="post" action={ "/manage/stores/" (store.id) "/token" }
                        data-confirm={ "Issue a new token for " (store.name) "? Its current token stops working at once; the agent needs the new one." } {
                        (csrf_field(csrf))
                        button.plain type="submit" { "Rotate token" }
                    }
                    " "
                    @if !store.revoked {
                        form.inline method="post" action={ "/manage/stores/" (store.id) "/revoke" }
                            data-confirm={ "Revoke the token of " (store.name) "? Its agent can no longer sync until it gets a new token." } {
                            (csrf_field(csrf))
                            button.danger type="submit" aria-label={ "Revoke the token of " (store.name) } { "Revoke" }
                        }
                    }
                }
            } } }
        } }
    };
    viewer.page(StatusCode::OK, "Manage", "/manage", body)
}

/// The admin's forms on a product's page.
pub(super) fn product_forms(viewer: &Viewer, product: &ProductView, stores: &[StoreInfo]) -> Markup {
    let id = product.product.id;
    let store_select = |field: &str| {
        markup! {
            select id=(field) name="store_id" required {
                @for store in stores.iter().filter(|s| !s.revoked) { option value=(store.id) { (store.name) } }
            }
        }
    };
    markup! {
        h2 { "Change" }
        div.grid {
            form.card method="post" action={ "/stock/" (id) "/add-stock" } {
                h3 { "Add stock (a delivery)" }
                (write_fields(viewer))
                label for="add-store" { "Store" }
                (store_select("add-store"))
                label for="add-quantity" { "Units" }
                input #add-quantity name="quantity" type="number" min="1" max="1000000" required;
                button type="submit" { "Add stock" }
            }
            form.card method="post" action={ "/stock/" (id) "/reserve" } {
                h3 { "Make a reservation" }
                (write_fields(viewer))
                label for="reserve-store" { "Store" }
                (store_select("reserve-store"))
                label for="reserve-quantity" { "Units" }
                input #reserve-quantity name="quantity" type="number" min="1" max="1000000" required;
                label for="reserve-minutes" { "Held for (minutes)" }
                input #reserve-minutes name="minutes" type="number" min="1" max="10080" value="15" required;
                button type="submit" { "Reserve" }
            }
            form.card method="post" action={ "/stock/" (id) "/edit" } {
                h3 { "Edit the product" }
                (write_fields(viewer))
                input type="hidden" name="version" value=(product.version);
                label for="edit-sku" { "SKU" }
                input #edit-sku name="sku" required maxlength="64" value=(product.product.sku);
                label for="edit-name" { "Name" }
                input #edit-name name="name" required maxlength="200" value=(product.product.name);
                label for="edit-price" { "Price" }
                input #edit-price name="price" required inputmode="decimal" value=(price(product.product.price_minor));
                button type="submit" { "Save" }
            }
        }
    }
}

/// `12.5` or `12.50` or `12` as minor units.
fn parse_price(text: &str) -> Option<u64> {
    let text = text.trim();
    let (whole, cents) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || whole.len() > 12
        || cents.len() > 2
        || !(whole.bytes().chain(cents.bytes()).all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let cents = format!("{cents:0<2}");
    Some(whole.parse::<u64>().ok()? * 100 + cents.parse::<u64>().ok()?)
}

/// The write context of a page's form: the viewer's token, the form's idempotency key.
fn context(state: &AppState, viewer: &Viewer, idem: &str) -> WriteContext {
    WriteContext::for_page(state, viewer.principal.clone(), key(idem))
}

/// After a form's write: on to `done`, or the refusal in words with a way `back`.
fn after_write<T>(viewer: &Viewer, result: Result<T, crate::api::error::ApiError>, done: &str, back: &str) -> Response {
    match result {
        Ok(_) => redirect(done, []),
        Err(error) => viewer.refused(&error.problem().problem, back),
    }
}

/// A form's idempotency key, if it is a usable one.
fn key(idem: &str) -> Option<String> {
    let idem = idem.trim();
    ((1..=200).contains(&idem.len()) && idem.bytes().all(|b| b.is_ascii_graphic())).then(|| idem.to_owned())
}

fn invalid(viewer: &Viewer, detail: &str, back: &str) -> Response {
    viewer.refused(&Problem::new(422, "invalid_form", "Invalid form", detail), back)
}

#[derive(Debug, Deserialize)]
struct EnrollForm {
    csrf: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct CsrfOnly {
    csrf: String,
}

#[derive(Debug, Deserialize)]
struct ProductForm {
    csrf: String,
    idem: String,
    sku: String,
    name: String,
    price: String,
    #[serde(default)]
    version: Option<u64>,
}

#[derive(Debug, Deserialize)]
struct StockForm {
    csrf: String,
    idem: String,
    store_id: StoreId,
    quantity: i64,
    #[serde(default)]
    minutes: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct ReleaseForm {
    csrf: String,
    idem: String,
    reservation_id: String,
}

super::posted!(EnrollForm, CsrfOnly, ProductForm, StockForm, ReleaseForm);

/// The page that shows a new token, once.
fn token_page(viewer: &Viewer, what: &str, enrolled: &EnrolledStore) -> Response {
    let body = markup! {
        (notice(Notice::Done, what))
        div.card {
            p { "The token of " strong { (enrolled.store.name) } " (store id " code { (enrolled.store.id) } "). "
                strong { "It is shown this once" } ": give it to the store's agent (" code { "hub_token" } " in its settings) now." }
            p #new-token.secret { (enrolled.token.expose()) }
            button.plain type="button" data-copy="new-token" hidden { "Copy the token" }
        }
        p { a href="/manage" { "Back to Manage" } }
    };
    viewer.page(StatusCode::CREATED, "New store token", "/manage", body)
}

async fn enroll(State(state): State<AppState>, Submitted { viewer, form }: Submitted<EnrollForm>) -> Response {
    if let Some(refused) = viewer.not_admin() {
        return refused;
    }
    let body = EnrollStoreRequest {
        name: form.name.trim().to_owned(),
        id: None,
        allow_duplicate_name: false,
    };
    match store_routes::enroll(State(state), Principal::Admin, ApiJson(body)).await {
        Ok((_, axum::Json(enrolled))) => token_page(&viewer, "Store enrolled.", &enrolled),
        Err(error) => viewer.refused(&error.problem().problem, "/manage"),
    }
}

/// `POST /manage/stores/{id}/token` (a new token, shown once) or `.../revoke`.
async fn store_token(
    State(state): State<AppState>,
    Path((id, action)): Path<(StoreId, String)>,
    Submitted { viewer, form: _ }: Submitted<CsrfOnly>,
) -> Response {
    if let Some(refused) = viewer.not_admin() {
        return refused;
    }
    let refused = |error: crate::api::error::ApiError| viewer.refused(&error.problem().problem, "/manage");
    match action.as_str() {
        "token" => match store_routes::rotate_token(State(state), Principal::Admin, ApiPath(id)).await {
            Ok((_, axum::Json(enrolled))) => {
                token_page(&viewer, "New token issued; the old one no longer works.", &enrolled)
            }
            Err(error) => refused(error),
        },
        "revoke" => match store_routes::revoke(State(state), Principal::Admin, ApiPath(id)).await {
            Ok(_) => redirect("/manage?done=revoked", []),
            Err(error) => refused(error),
        },
        _ => invalid(&viewer, "a store's token can be rotated or revoked", "/manage"),
    }
}

async fn register(State(state): State<AppState>, Submitted { viewer, form }: Submitted<ProductForm>) -> Response {
    if let Some(refused) = viewer.not_admin() {
        return refused;
    }
    let Some(price_minor) = parse_price(&form.price) else {
        return invalid(&viewer, "the price must be a number like 12.50", "/manage");
    };
    let id = ProductId::new_v7();
    let body = RegisterProductRequest {
        id: Some(id),
        sku: form.sku,
        name: form.name,
        price_minor,
        event_id: None,
    };
    let ctx = context(&state, &viewer, &form.idem);
    after_write(
        &viewer,
        products::register(State(state), ctx, ApiJson(body)).await,
        &format!("/stock/{id}?done=registered"),
        "/manage",
    )
}

async fn edit(
    State(state): State<AppState>,
    Path(id): Path<ProductId>,
    Submitted { viewer, form }: Submitted<ProductForm>,
) -> Response {
    let back = format!("/stock/{id}");
    if let Some(refused) = viewer.not_admin() {
        return refused;
    }
    let Some(price_minor) = parse_price(&form.price) else {
        return invalid(&viewer, "the price must be a number like 12.50", &back);
    };
    let body = UpdateProductRequest {
        sku: form.sku,
        name: form.name,
        price_minor,
        expected_version: form.version.map(ExpectedVersion::Exact),
        event_id: None,
    };
    let ctx = context(&state, &viewer, &form.idem);
    after_write(
        &viewer,
        products::update(State(state), ctx, ApiPath(id), ApiJson(body)).await,
        &format!("{back}?done=saved"),
        &back,
    )
}

/// `POST /stock/{id}/add-stock` (a delivery) or `.../reserve` (a hold).
async fn stock_change(
    State(state): State<AppState>,
    Path((id, action)): Path<(ProductId, String)>,
    Submitted { viewer, form }: Submitted<StockForm>,
) -> Response {
    let back = format!("/stock/{id}");
    let Ok(quantity) = StockQuantity::new(form.quantity) else {
        return invalid(&viewer, "units must be 1 to 1,000,000", &back);
    };
    if action == "add-stock" {
        let body = AddStockRequest {
            product_id: id,
            store_id: form.store_id,
            quantity,
            expected_version: None,
            event_id: None,
        };
        let ctx = context(&state, &viewer, &form.idem);
        return after_write(
            &viewer,
            inventory::add_stock(State(state), ctx, ApiJson(body)).await,
            &format!("{back}?done=stock-added"),
            &back,
        );
    }
    if action != "reserve" {
        return invalid(&viewer, "stock can be added or reserved", &back);
    }
    let minutes = form.minutes.unwrap_or(15);
    if !(1..=10_080).contains(&minutes) {
        return invalid(&viewer, "a reservation is held for 1 minute to 7 days", &back);
    }
    let reservation = ReservationId::new_v7();
    let body = ReserveStockRequest {
        product_id: id,
        store_id: form.store_id,
        reservation_id: Some(reservation),
        quantity,
        ttl_seconds: Some(minutes * 60),
        expected_version: None,
        event_id: None,
    };
    let ctx = context(&state, &viewer, &form.idem);
    after_write(
        &viewer,
        inventory::reserve(State(state), ctx, ApiJson(body)).await,
        &format!("{back}?done=reserved&reservation={reservation}"),
        &back,
    )
}

async fn release(State(state): State<AppState>, Submitted { viewer, form }: Submitted<ReleaseForm>) -> Response {
    let Ok(reservation) = form.reservation_id.trim().parse::<ReservationId>() else {
        return invalid(
            &viewer,
            "that is not a reservation id (a UUID, as the reservation page showed it)",
            "/manage",
        );
    };
    let body = ReleaseReservationRequest {
        reason: None,
        expected_version: None,
        event_id: None,
    };
    let ctx = context(&state, &viewer, &form.idem);
    after_write(
        &viewer,
        inventory::release(State(state), ctx, ApiPath(reservation), OptionalApiJson(body)).await,
        "/manage?done=released",
        "/manage",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_read_as_people_write_them() {
        assert_eq!(parse_price("12.50"), Some(1250));
        assert_eq!(parse_price("12.5"), Some(1250));
        assert_eq!(parse_price(" 7 "), Some(700));
        assert_eq!(parse_price("0.05"), Some(5));
        for bad in ["", ".5", "1.234", "-1", "1e3", "12,50", "9999999999999"] {
            assert_eq!(parse_price(bad), None, "{bad}");
        }
    }
}
