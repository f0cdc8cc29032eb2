//! The fleet page (every store's agent: link, last contact, push stream, lag, outbox,
//! oversells, rejected uploads; the stores that need attention first, sortable, kept
//! current over SSE) and the alerts page (what needs someone, from the same fleet data).

use super::{Admin, Viewer};
use crate::api::stores::fleet_view;
use crate::api::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use maud::{html as markup, Markup};
use serde::Deserialize;
use shelfsync_common::server::failure::Failure;
use shelfsync_common::server::web::live::{self, Frame};
use shelfsync_common::server::web::words::{age, ago, clock};
use shelfsync_common::wire::sync::{FleetResponse, FleetStore};
use std::cmp::Reverse;
use time::OffsetDateTime;

/// A store not heard from for this long is offline (agents send a heartbeat every 15 s
/// by default and pull or hold a push stream in between).
pub const OFFLINE_AFTER_SECS: i64 = 90;
/// An outbox whose oldest event waits longer than this needs attention.
const OUTBOX_ATTENTION_SECS: u64 = 300;
/// A cursor further behind the hub's head than this needs attention.
const LAG_ATTENTION: u64 = 1000;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/fleet", get(page))
        .route("/fleet/live", get(live_table))
        .route("/alerts", get(alerts))
}

/// How the table is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Most problems first, then by name.
    Attention,
    /// By name.
    Name,
    /// Longest silent first.
    LastContact,
    /// Furthest behind first.
    Lag,
    /// Deepest outbox first.
    Outbox,
}

impl Sort {
    const ALL: [(Sort, &'static str); 5] = [
        (Sort::Attention, "attention"),
        (Sort::Name, "name"),
        (Sort::LastContact, "last_contact"),
        (Sort::Lag, "lag"),
        (Sort::Outbox, "outbox"),
    ];

    fn parse(text: Option<&str>) -> Sort {
        Sort::ALL
            .iter()
            .find(|(_, key)| Some(*key) == text)
            .map_or(Sort::Attention, |(sort, _)| *sort)
    }

    fn key(self) -> &'static str {
        Sort::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("attention", |(_, k)| k)
    }
}

/// `?sort=`.
#[derive(Debug, Deserialize)]
pub(super) struct SortQuery {
    #[serde(default)]
    sort: Option<String>,
}

/// One store as the page judges it.
pub struct Assessed<'a> {
    /// The fleet's figures.
    pub store: &'a FleetStore,
    /// The link in words, and its style class.
    pub link: (String, &'static str),
    /// What needs attention, in words.
    pub issues: Vec<String>,
}

/// Judges one store at `now`.
pub fn assess(store: &FleetStore, now: OffsetDateTime) -> Assessed<'_> {
    let mut issues = Vec::new();
    let silent = store.last_seen.map(|at| (now - at).whole_seconds());
    let link = if store.store.revoked {
        ("token revoked".to_owned(), "state-warn")
    } else {
        match silent {
            None => {
                issues.push("never connected".to_owned());
                ("never connected".to_owned(), "state-bad")
            }
            Some(secs) if secs > OFFLINE_AFTER_SECS => {
                let since = store.last_seen.map(|at| clock(at, now)).unwrap_or_default();
                issues.push(format!("offline since {since}"));
                (format!("offline since {since}"), "state-bad")
            }
            Some(_) if !store.push_connected => {
                issues.push("no push stream".to_owned());
                ("online, no push stream".to_owned(), "state-warn")
            }
            Some(_) => ("online".to_owned(), "state-good"),
        }
    };
    if let Some(age_secs) = store
        .heartbeat
        .as_ref()
        .and_then(|h| h.oldest_pending_age_secs)
        .filter(|a| *a > OUTBOX_ATTENTION_SECS)
    {
        issues.push(format!("outbox waiting {}", age(age_secs)));
    }
    if let Some(lag) = store.cursor_lag.filter(|l| *l > LAG_ATTENTION) {
        issues.push(format!("{lag} events behind"));
    }
    if store.oversells > 0 {
        issues.push(format!("{} oversold", store.oversells));
    }
    if store.rejected_uploads > 0 {
        issues.push(format!("{} rejected uploads", store.rejected_uploads));
    }
    Assessed { store, link, issues }
}

/// The stores in the asked order.
pub fn ordered(fleet: &FleetResponse, sort: Sort, now: OffsetDateTime) -> Vec<Assessed<'_>> {
    let mut rows: Vec<Assessed<'_>> = fleet.stores.iter().map(|s| assess(s, now)).collect();
    let depth = |a: &Assessed<'_>| a.store.heartbeat.as_ref().map_or(0, |h| h.outbox_depth);
    match sort {
        Sort::Attention => rows.sort_by(|a, b| {
            (Reverse(a.issues.len()), &a.store.store.name).cmp(&(Reverse(b.issues.len()), &b.store.store.name))
        }),
        Sort::Name => rows.sort_by(|a, b| a.store.store.name.cmp(&b.store.store.name)),
        Sort::LastContact => rows.sort_by_key(|a| a.store.last_seen),
        Sort::Lag => rows.sort_by_key(|a| Reverse(a.store.cursor_lag)),
        Sort::Outbox => rows.sort_by_key(|a| Reverse(depth(a))),
    }
    rows
}

/// The table (and its summary) for `sort`: the part the live stream sends again.
pub fn table(fleet: &FleetResponse, sort: Sort, now: OffsetDateTime) -> Markup {
    let rows = ordered(fleet, sort, now);
    let attention = rows.iter().filter(|r| !r.issues.is_empty()).count();
    let header = |label: &str, by: Sort, class: &str| {
        let current = (by == sort).then_some("descending");
        markup! {
            th.(class) scope="col" aria-sort=[current] {
                a href={ "/fleet?sort=" (by.key()) } { (label) }
            }
        }
    };
    markup! {
        p.summary role="status" {
            (rows.len()) " stores; "
            @if attention == 0 { "none needs attention." } @else { strong { (attention) " need attention." } }
            " Hub head: position " (fleet.head) "."
        }
        div.table-wrap {
            table #fleet {
                caption.hint { "Stores, " (match sort { Sort::Attention => "those that need attention first", Sort::Name => "by name", Sort::LastContact => "longest silent first", Sort::Lag => "furthest behind first", Sort::Outbox => "deepest outbox first" }) }
                thead { tr {
                    (header("Store", Sort::Name, ""))
                    th scope="col" { "Link" }
                    (header("Last contact", Sort::LastContact, ""))
                    th scope="col" { "Push stream" }
                    (header("Cursor lag", Sort::Lag, "num"))
                    (header("Outbox", Sort::Outbox, "num"))
                    th.num scope="col" { "Oversells" }
                    th.num scope="col" { "Rejected uploads" }
                    (header("Needs attention", Sort::Attention, ""))
                } }
                tbody {
                    @for row in &rows {
                        @let s = row.store;
                        tr.attention[!row.issues.is_empty()] data-store=(s.store.id) {
                            th scope="row" { (s.store.name) }
                            td.(row.link.1) { (row.link.0) }
                            td { (ago(s.last_seen, now)) }
                            td { @if s.push_connected { "open" } @else { "closed" } }
                            td.num { @match s.cursor_lag { Some(lag) => (lag), None => "–" } }
                            td.num {
                                @match &s.heartbeat {
                                    Some(h) => {
                                        (h.outbox_depth)
                                        @if let Some(a) = h.oldest_pending_age_secs { " (oldest " (age(a)) ")" }
                                    }
                                    None => "–",
                                }
                            }
                            td.num { (s.oversells) }
                            td.num { (s.rejected_uploads) }
                            td { (row.issues.join("; ")) }
                        }
                    }
                }
            }
        }
    }
}

async fn page(
    State(state): State<AppState>,
    Admin(viewer): Admin,
    query: Result<Query<SortQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let sort = Sort::parse(query.as_ref().ok().and_then(|q| q.sort.as_deref()));
    let fleet = match fleet_view(&state).await {
        Ok(fleet) => fleet,
        Err(error) => return viewer.refused(&error.problem().problem, "/fleet"),
    };
    let body = markup! {
        div data-live={ "/fleet/live?sort=" (sort.key()) } {
            (table(&fleet, sort, OffsetDateTime::now_utc()))
        }
    };
    viewer.page(StatusCode::OK, "Fleet", "/fleet", body)
}

async fn live_table(
    State(state): State<AppState>,
    Admin(_viewer): Admin,
    headers: HeaderMap,
    query: Result<Query<SortQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let sort = Sort::parse(query.as_ref().ok().and_then(|q| q.sort.as_deref()));
    let stopping = state.stopping.clone();
    live::stream(live::PERIOD, stopping, move || {
        let state = state.clone();
        let headers = headers.clone();
        async move {
            if Viewer::of(&state, &headers).await.is_err() {
                return Frame::SignedOut;
            }
            match fleet_view(&state).await {
                Ok(fleet) => Frame::Html(table(&fleet, sort, OffsetDateTime::now_utc()).into_string()),
                Err(error) => Frame::Html(
                    markup! { p.notice.error role="alert" { "The fleet could not be read just now: " (error.problem().problem.detail) } }
                        .into_string(),
                ),
            }
        }
    })
}

async fn alerts(State(state): State<AppState>, Admin(viewer): Admin) -> Response {
    let fleet = match fleet_view(&state).await {
        Ok(fleet) => fleet,
        Err(error) => return viewer.refused(&error.problem().problem, "/alerts"),
    };
    let now = OffsetDateTime::now_utc();
    let rows = ordered(&fleet, Sort::Attention, now);
    let oversold: Vec<_> = rows.iter().filter(|r| r.store.oversells > 0).collect();
    let rejected: Vec<_> = rows.iter().filter(|r| r.store.rejected_uploads > 0).collect();
    let offline: Vec<_> = rows.iter().filter(|r| r.link.1 == "state-bad").collect();
    let body = markup! {
        p.hint { "From the fleet's figures. Low-stock alerts come with the analytics feature, which this hub does not have yet." }
        h2 { "Oversells (" (oversold.len()) ")" }
        @if oversold.is_empty() { p { "No store has sold more than it had." } } @else {
            ul { @for r in &oversold { li { strong { (r.store.store.name) } ": " (r.store.oversells) " sales left stock below zero (recorded as OversellDetected; count the shelf and correct)." } } }
        }
        h2 { "Rejected uploads (" (rejected.len()) ")" }
        @if rejected.is_empty() { p { "The hub rejected no store's events." } } @else {
            ul { @for r in &rejected { li { strong { (r.store.store.name) } ": " (r.store.rejected_uploads) " events rejected; they wait in the store's quarantine (store page) for retry or discard." } } }
        }
        h2 { "Stores out of touch (" (offline.len()) ")" }
        @if offline.is_empty() { p { "Every store's agent is in touch." } } @else {
            ul { @for r in &offline { li { strong { (r.store.store.name) } ": " (r.link.0) } } }
        }
    };
    viewer.page(StatusCode::OK, "Alerts", "/alerts", body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelfsync_common::wire::api::StoreInfo;
    use shelfsync_common::StoreId;

    fn store(name: &str, seen_secs_ago: Option<i64>, push: bool, oversells: u64) -> FleetStore {
        let now = OffsetDateTime::now_utc();
        FleetStore {
            store: StoreInfo {
                id: StoreId::new_v7(),
                name: name.into(),
                created_at: now,
                revoked: false,
            },
            last_seen: seen_secs_ago.map(|s| now - time::Duration::seconds(s)),
            push_connected: push,
            heartbeat: None,
            cursor_lag: Some(0),
            cursor_lag_age_secs: None,
            oversells,
            rejected_uploads: 0,
            allocations: None,
        }
    }

    #[test]
    fn stores_that_need_attention_come_first_and_names_are_text() {
        let fleet = FleetResponse {
            head: 7,
            stores: vec![
                store("Aachen", Some(1), true, 0),
                store("<script>alert(1)</script>", Some(1), true, 2),
                store("Bonn", Some(600), false, 0),
                store("Celle", None, false, 0),
            ],
        };
        let now = OffsetDateTime::now_utc();
        let names: Vec<&str> = ordered(&fleet, Sort::Attention, now)
            .iter()
            .map(|r| r.store.store.name.as_str())
            .collect();
        assert_eq!(names[3], "Aachen", "the healthy store last: {names:?}");
        let by_name: Vec<&str> = ordered(&fleet, Sort::Name, now)
            .iter()
            .map(|r| r.store.store.name.as_str())
            .collect();
        assert_eq!(by_name, ["<script>alert(1)</script>", "Aachen", "Bonn", "Celle"]);
        let html = table(&fleet, Sort::Attention, now).into_string();
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("offline since") && html.contains("never connected") && html.contains("2 oversold"));
    }
}
