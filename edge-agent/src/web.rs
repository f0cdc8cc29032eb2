//! The store page at `/`, for the store manager: is the hub link up, and if not since
//! when and how much is waiting ("Offline since 10:42 UTC, 37 sales and stock changes
//! waiting; they will be sent when the hub is back"), the outbox, and, with the manager
//! key, the events the hub rejected (retry or discard) and the store's stock.
//!
//! The status part needs no key, like `GET /v1/status`, and stays current over SSE (a
//! till's "offline" is explained without a reload). Signing in takes the manager key,
//! kept in an HttpOnly, SameSite=Strict session cookie; the quarantine forms carry the
//! CSRF token and call the operator routes' own handlers, so they check and refuse
//! exactly as the API does. The layout, cookies and live updates are the ones the hub's
//! back office uses (`common::server::web`).

use crate::api::auth::Manager;
use crate::api::outbox::{self, LimitQuery};
use crate::api::status::current;
use crate::api::AppState;
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html as markup, Markup};
use shelfsync_common::server::extract::{ApiPath, ApiQuery};
use shelfsync_common::server::failure::Failure;
use shelfsync_common::server::secret::{digest, same_digest};
use shelfsync_common::server::web::live::{self, Frame};
use shelfsync_common::server::web::page::{csrf_field, notice, sign_in_form, Notice};
use shelfsync_common::server::web::session::{CsrfForm, CsrfToken, SignInForm, SIGN_OUT_REFUSED};
use shelfsync_common::server::web::words::{age, clock, refusal};
use shelfsync_common::server::web::{assets, html, redirect, Page, WebCookies};
use shelfsync_common::wire::edge::{AgentStatus, OutboxEntry};
use shelfsync_common::EventId;
use time::OffsetDateTime;

/// The store page's cookies.
pub const COOKIES: WebCookies = WebCookies {
    session: "shelfsync_edge_session",
    csrf: "shelfsync_edge_csrf",
};

/// Quarantined events the page lists.
const QUARANTINE_SHOWN: usize = 100;

/// The page, its live part and its forms.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/live", get(live_status))
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/quarantine/{event_id}/{action}", post(quarantine))
        .merge(assets::routes())
}

/// Whether the session holds the manager key.
fn is_manager(state: &AppState, headers: &HeaderMap) -> bool {
    COOKIES
        .session(headers)
        .is_some_and(|key| same_digest(&digest(key), &state.manager_digest))
}

fn layout(title: &str, manager: bool, csrf: &CsrfToken, status: StatusCode, body: Markup) -> Response {
    let page = Page {
        app: "store",
        title,
        nav: &[],
        current: "/",
        signed_in: manager.then_some("store manager"),
        csrf: &csrf.token,
    };
    html(status, page.render(body), csrf.cookie.clone())
}

/// The link in one sentence, and its style class.
pub fn link_words(status: &AgentStatus, now: OffsetDateTime) -> (String, &'static str) {
    let waiting = match status.outbox_depth {
        0 => "nothing waiting".to_owned(),
        1 => "1 sale or stock change waiting".to_owned(),
        n => format!("{n} sales and stock changes waiting"),
    };
    if !status.bootstrapped {
        return (
            "Waiting for the first copy of the catalog and stock from the hub; the tills can sell once it has arrived."
                .to_owned(),
            "state-warn",
        );
    }
    if status.link == "online" {
        let text = match status.outbox_depth {
            0 => "Online: the hub has every sale.".to_owned(),
            _ => format!("Online, {waiting}: being sent to the hub now."),
        };
        return (text, "state-good");
    }
    let since = match status.last_sync_at {
        Some(at) => format!("Offline since {}", clock(at, now)),
        None => "Offline (the hub has not answered since the agent started)".to_owned(),
    };
    let tail = if status.outbox_depth == 0 {
        "the tills keep selling and their sales will be sent when the hub is back.".to_owned()
    } else {
        format!("{waiting}; they will be sent when the hub is back. The tills keep selling.")
    };
    (format!("{since}, {tail}"), "state-bad")
}

fn breaker_words(breaker: &str) -> &'static str {
    match breaker {
        "closed" => "in use",
        "open" => "resting after failures: the agent waits a moment before it tries the hub again",
        "half_open" => "trying the hub again",
        _ => "unknown",
    }
}

/// The live part: the link, the breaker and the outbox in words.
pub fn status_part(status: &AgentStatus, now: OffsetDateTime) -> Markup {
    let (line, class) = link_words(status, now);
    markup! {
        p.status-line.(class) #link role="status" { (line) }
        dl.facts.card {
            dt { "Store" } dd { code { (status.store_id) } }
            dt { "Hub link" } dd { (status.link) ", breaker " (breaker_words(&status.breaker)) }
            @if let Some(reason) = &status.breaker_reason { dt { "Last failure" } dd { (reason) } }
            dt { "Push stream" } dd { @if status.push_connected { "open" } @else { "closed" } }
            dt { "Outbox" } dd #outbox {
                (status.outbox_depth) " waiting"
                @if let Some(a) = status.oldest_pending_age_secs { ", the oldest for " (age(a)) }
            }
            dt { "Rejected by the hub" } dd { (status.quarantined) }
            dt { "Sync position" } dd { (status.cursor) " of the hub's " (status.hub_head) }
            dt { "Last exchange with the hub" } dd { @match status.last_sync_at { Some(at) => (clock(at, now)), None => "none yet" } }
        }
    }
}

async fn page(State(state): State<AppState>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let manager = is_manager(&state, &headers);
    let csrf = COOKIES.csrf(&headers);
    let now = OffsetDateTime::now_utc();
    let status = current(&state, manager);
    let done = match query.as_deref() {
        Some("done=retried") => Some("The event is back in the outbox and will be sent again."),
        Some("done=discarded") => Some("The event was discarded for good."),
        _ => None,
    };
    let manager_part = if manager {
        match outbox::list_quarantine(
            State(state.clone()),
            Manager,
            ApiQuery(LimitQuery {
                limit: Some(QUARANTINE_SHOWN),
            }),
        )
        .await
        {
            Ok(axum::Json(entries)) => manager_sections(&state, &entries, &csrf.token, now),
            Err(error) => notice(Notice::Error, &refusal(&error.problem().problem)),
        }
    } else {
        markup! {
            p { a href="/sign-in" { "Sign in with the manager key" } " to see the store's stock and the events the hub rejected." }
        }
    };
    let body = markup! {
        @if let Some(done) = done { (notice(Notice::Done, done)) }
        div data-live="/live" { (status_part(&status, now)) }
        (manager_part)
    };
    layout("Store status", manager, &csrf, StatusCode::OK, body)
}

fn manager_sections(state: &AppState, quarantined: &[OutboxEntry], csrf: &str, now: OffsetDateTime) -> Markup {
    let (catalog, stock) = state.local.read(|view| {
        let mut products: Vec<_> = view.catalog.values().cloned().collect();
        products.sort_by(|a, b| a.product.sku.cmp(&b.product.sku));
        let stock: Vec<_> = products.iter().map(|p| view.stock(p.product.id)).collect();
        (products, stock)
    });
    let sku = |id| {
        catalog
            .iter()
            .find(|p| p.product.id == id)
            .map_or_else(|| "unknown product".to_owned(), |p| p.product.sku.clone())
    };
    markup! {
        h2 { "Rejected by the hub (" (quarantined.len()) ")" }
        @if quarantined.is_empty() { p { "None: the hub accepted every event." } } @else {
            div.table-wrap { table #quarantine {
                thead { tr { th scope="col" { "Recorded" } th scope="col" { "What" } th scope="col" { "Product" } th scope="col" { "Why" } th scope="col" { "Actions" } } }
                tbody { @for e in quarantined { tr {
                    td { (clock(e.recorded_at, now)) }
                    td { (e.event_type) }
                    td { (sku(e.product_id)) }
                    td { (e.reject_detail.as_deref().or(e.reject_reason.as_deref()).unwrap_or("")) }
                    td {
                        form.inline method="post" action={ "/quarantine/" (e.event_id) "/retry" } {
                            (csrf_field(csrf))
                            button.plain type="submit" { "Retry" }
                        }
                        " "
                        form.inline method="post" action={ "/quarantine/" (e.event_id) "/discard" }
                            data-confirm="Discard this event for good? It will never reach the hub." {
                            (csrf_field(csrf))
                            button.danger type="submit" { "Discard" }
                        }
                    }
                } } }
            } }
        }
        h2 { "Stock in this store" }
        p.hint { "As the tills see it: the hub's confirmed figures plus this store's changes not yet confirmed." }
        div.table-wrap { table #stock {
            thead { tr { th scope="col" { "SKU" } th scope="col" { "Product" } th.num scope="col" { "On hand" } th.num scope="col" { "Reserved" } th.num scope="col" { "Available" } th scope="col" { "Confirmed by the hub" } } }
            tbody { @for (product, level) in catalog.iter().zip(&stock) { tr {
                td { (product.product.sku) }
                td { (product.product.name) }
                @match level {
                    Some(level) => {
                        td.num { (level.on_hand) } td.num { (level.reserved) } td.num { (level.available) }
                        td { @if level.includes_pending { (level.pending_events) " changes not yet" } @else { "yes" } }
                    }
                    None => { td.num { "0" } td.num { "0" } td.num { "0" } td { "no stock yet" } }
                }
            } } }
        } }
    }
}

async fn live_status(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let manager = is_manager(&state, &headers);
    let stopping = state.stopping.clone();
    live::stream(live::PERIOD, stopping, move || {
        let state = state.clone();
        async move { Frame::Html(status_part(&current(&state, manager), OffsetDateTime::now_utc()).into_string()) }
    })
}

async fn sign_in_page(headers: HeaderMap) -> Response {
    sign_in_answer(&headers, StatusCode::OK, None)
}

fn sign_in_answer(headers: &HeaderMap, status: StatusCode, error: Option<&str>) -> Response {
    let csrf = COOKIES.csrf(headers);
    let body = markup! {
        (sign_in_form("Manager key", "The store manager's key (manager-key in the agent's data directory). It stays in this browser until you sign out or close it.", &csrf.token, error))
        p { a href="/" { "Back to the store's status" } }
    };
    layout("Sign in", false, &csrf, status, body)
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let key = match COOKIES.signing_in(&headers, form) {
        Ok(key) => key,
        Err((status, words)) => return sign_in_answer(&headers, status, Some(words)),
    };
    let presented = digest(&key);
    if same_digest(&presented, &state.manager_digest) {
        if let Some(cookie) = COOKIES.sign_in(&key, &headers) {
            return redirect("/", [cookie]);
        }
    }
    let why = if same_digest(&presented, &state.terminal_digest) {
        "That is the tills' key; the store page needs the manager key."
    } else {
        "That key was not accepted."
    };
    sign_in_answer(&headers, StatusCode::UNAUTHORIZED, Some(why))
}

async fn sign_out(headers: HeaderMap, form: Result<Form<CsrfForm>, FormRejection>) -> Response {
    match COOKIES.signing_out(&headers, form) {
        Some(cookie) => redirect("/", [cookie]),
        None => sign_in_answer(&headers, StatusCode::FORBIDDEN, Some(SIGN_OUT_REFUSED)),
    }
}

/// `POST /quarantine/{event_id}/retry` or `.../discard`: the manager's buttons.
async fn quarantine(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let csrf = COOKIES.csrf(&headers);
    if !is_manager(&state, &headers) {
        return redirect("/sign-in", []);
    }
    let fail = |status: StatusCode, text: &str| {
        let body = markup! { (notice(Notice::Error, text)) p { a href="/" { "Back" } } };
        layout("Not done", true, &csrf, status, body)
    };
    match form {
        Ok(Form(form)) if COOKIES.form_is_ours(&headers, &form.csrf) => {}
        _ => {
            return fail(
                StatusCode::FORBIDDEN,
                "This form did not come from this page (or it expired); nothing was changed. Reload the page and try again.",
            )
        }
    }
    let Ok(event_id) = id.parse::<EventId>() else {
        return fail(StatusCode::NOT_FOUND, "That is not an event id.");
    };
    let done = match action.as_str() {
        "retry" => outbox::retry(State(state), Manager, ApiPath(event_id))
            .await
            .map(|_| "retried"),
        "discard" => outbox::discard(State(state), Manager, ApiPath(event_id))
            .await
            .map(|_| "discarded"),
        _ => {
            return fail(
                StatusCode::NOT_FOUND,
                "A quarantined event can be retried or discarded.",
            )
        }
    };
    match done {
        Ok(done) => redirect(&format!("/?done={done}"), []),
        Err(error) => {
            let problem = error.problem().problem;
            fail(
                StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST),
                &refusal(&problem),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn status(link: &str, depth: u64) -> AgentStatus {
        AgentStatus {
            store_id: shelfsync_common::StoreId::new_v7(),
            agent_version: "0".into(),
            link: link.into(),
            breaker: "open".into(),
            breaker_reason: None,
            push_connected: false,
            outbox_depth: depth,
            oldest_pending_age_secs: Some(120),
            quarantined: 0,
            cursor: 5,
            hub_head: 5,
            last_sync_at: Some(datetime!(2026-11-26 10:42:05 UTC)),
            bootstrapped: true,
            resynced: None,
        }
    }

    #[test]
    fn the_link_reads_as_a_sentence() {
        let now = datetime!(2026-11-26 11:00 UTC);
        let (text, class) = link_words(&status("offline", 37), now);
        assert_eq!(
            text,
            "Offline since 10:42 UTC, 37 sales and stock changes waiting; they will be sent when the hub is back. The tills keep selling."
        );
        assert_eq!(class, "state-bad");
        assert_eq!(
            link_words(&status("online", 0), now).0,
            "Online: the hub has every sale."
        );
        let html = status_part(&status("offline", 1), now).into_string();
        assert!(
            html.contains("1 sale or stock change waiting") && html.contains("the oldest for 2 min"),
            "{html}"
        );
    }
}
