//! The back office: the hub's web pages at `/`, for the head office (fleet, alerts), the
//! merchandisers (stock) and the admin (enrolling stores, tokens, products, stock).
//!
//! Why here and not in `api`: the pages are a client of the same rules, not a second API.
//! Each page reads through the same views the JSON routes answer with, and each form
//! calls the JSON route's own handler with the signed-in principal, so a page can neither
//! skip a check nor word an error differently from the API: a refusal is the API's
//! problem, put into words ([`shelfsync_common::server::web::words::refusal`]).
//!
//! Sign-in takes an admin or channel token and keeps it in an HttpOnly, SameSite=Strict
//! session cookie (never in a URL); every request checks it as the API checks a bearer
//! token, so a revoked token is sent back to the sign-in page on its next page or live
//! update. Every form carries the CSRF token; the shared layout, cookies and live updates
//! are `common::server::web`. Files: `fleet` (fleet and alerts), `stock` (search and a
//! product's page), `manage` (the admin's forms).

mod fleet;
mod manage;
mod stock;

use crate::api::auth::Principal;
use crate::api::AppState;
use axum::extract::rejection::FormRejection;
use axum::extract::{FromRequest, FromRequestParts, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::{html as markup, Markup};
use serde::de::DeserializeOwned;
use shelfsync_common::server::failure::Failure;
use shelfsync_common::server::web::page::{csrf_field, notice, sign_in_form, Notice};
use shelfsync_common::server::web::session::{CsrfForm, CsrfToken, SignInForm, SIGN_OUT_REFUSED};
use shelfsync_common::server::web::{assets, html, redirect, words, NavLink, Page, WebCookies};
use shelfsync_common::wire::api::StoreInfo;
use shelfsync_common::wire::problem::Problem;

/// The back office's cookies.
pub const COOKIES: WebCookies = WebCookies {
    session: "shelfsync_hub_session",
    csrf: "shelfsync_hub_csrf",
};

const ADMIN_NAV: &[NavLink<'static>] = &[
    NavLink {
        href: "/fleet",
        label: "Fleet",
    },
    NavLink {
        href: "/stock",
        label: "Stock",
    },
    NavLink {
        href: "/alerts",
        label: "Alerts",
    },
    NavLink {
        href: "/manage",
        label: "Manage",
    },
];
const CHANNEL_NAV: &[NavLink<'static>] = &[NavLink {
    href: "/stock",
    label: "Stock",
}];

/// The pages and their forms.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", post(sign_out))
        .merge(fleet::router())
        .merge(stock::router())
        .merge(manage::router())
        .merge(assets::routes())
}

/// Who looks at a page: the principal of the session's token, and the page's CSRF token.
pub(crate) struct Viewer {
    principal: Principal,
    csrf: CsrfToken,
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        Viewer::of(state, &parts.headers).await
    }
}

/// The viewer of an admin-only page: anyone else gets a page saying so.
pub(crate) struct Admin(Viewer);

impl FromRequestParts<AppState> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let viewer = Viewer::of(state, &parts.headers).await?;
        match viewer.not_admin() {
            Some(refused) => Err(refused),
            None => Ok(Admin(viewer)),
        }
    }
}

impl Viewer {
    /// The viewer of a request, or the answer that sends them to the sign-in page.
    async fn of(state: &AppState, headers: &HeaderMap) -> Result<Viewer, Response> {
        let Some(secret) = COOKIES.session(headers) else {
            return Err(redirect("/sign-in", []));
        };
        match Principal::of_secret(state, secret).await {
            Ok(principal @ (Principal::Admin | Principal::Channel { .. })) => Ok(Viewer {
                principal,
                csrf: COOKIES.csrf(headers),
            }),
            Ok(Principal::Store { .. }) => Err(redirect("/sign-in?ended", [COOKIES.sign_out(headers)])),
            Err(error) => {
                let problem = error.problem();
                if problem.problem.status == 401 {
                    Err(redirect("/sign-in?ended", [COOKIES.sign_out(headers)]))
                } else {
                    Err(bare_refusal(&problem.problem))
                }
            }
        }
    }

    /// The page that refuses anyone but the admin (`None` for the admin).
    fn not_admin(&self) -> Option<Response> {
        match self.principal {
            Principal::Admin => None,
            _ => Some(self.page(
                StatusCode::FORBIDDEN,
                "Admin only",
                "",
                notice(Notice::Error, "This page needs the admin token."),
            )),
        }
    }

    fn is_admin(&self) -> bool {
        self.principal == Principal::Admin
    }

    /// A page in the back office's layout.
    fn page(&self, status: StatusCode, title: &str, current: &str, body: Markup) -> Response {
        let who = match &self.principal {
            Principal::Admin => "admin".to_owned(),
            other => other.actor(),
        };
        let page = Page {
            app: "back office",
            title,
            nav: if self.is_admin() { ADMIN_NAV } else { CHANNEL_NAV },
            current,
            signed_in: Some(&who),
            csrf: &self.csrf.token,
        };
        html(status, page.render(body), self.csrf.cookie.clone())
    }

    /// The page that shows a refusal of the API in words, with a way back.
    fn refused(&self, problem: &Problem, back: &str) -> Response {
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::BAD_REQUEST);
        self.page(
            status,
            "Not done",
            "",
            markup! {
                (notice(Notice::Error, &words::refusal(problem)))
                p { a href=(back) { "Back" } }
            },
        )
    }
}

/// A refusal page for someone not signed in (e.g. storage down while checking a token).
fn bare_refusal(problem: &Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let page = Page {
        app: "back office",
        title: "Not available",
        nav: &[],
        current: "",
        signed_in: None,
        csrf: "",
    };
    html(status, page.render(notice(Notice::Error, &words::refusal(problem))), [])
}

/// Every form's CSRF field.
pub(crate) trait Posted {
    /// The form's `csrf` field.
    fn csrf(&self) -> &str;
}

/// `Posted` for forms whose CSRF token is their `csrf` field.
macro_rules! posted {
    ($($form:ty),+) => {
        $(impl crate::web::Posted for $form {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        })+
    };
}
pub(crate) use posted;

/// A posted form whose CSRF token checked out, from a signed-in viewer.
pub(crate) struct Submitted<T> {
    viewer: Viewer,
    form: T,
}

impl<T> FromRequest<AppState> for Submitted<T>
where
    T: DeserializeOwned + Posted + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let headers = request.headers().clone();
        let viewer = Viewer::of(state, &headers).await?;
        let form = match Form::<T>::from_request(request, state).await {
            Ok(Form(form)) => form,
            Err(rejection) => {
                let problem = Problem::new(
                    rejection.status().as_u16(),
                    "invalid_form",
                    "Invalid form",
                    rejection.body_text(),
                );
                return Err(viewer.refused(&problem, "/"));
            }
        };
        if !COOKIES.form_is_ours(&headers, form.csrf()) {
            return Err(expired_form(&viewer));
        }
        Ok(Submitted { viewer, form })
    }
}

fn expired_form(viewer: &Viewer) -> Response {
    viewer.page(
        StatusCode::FORBIDDEN,
        "Form expired",
        "",
        notice(
            Notice::Error,
            "This form did not come from this page (or it expired); nothing was changed. Reload the page and try again.",
        ),
    )
}

/// `/`: the fleet for the admin, stock for a channel token, else the sign-in page.
async fn home(viewer: Result<Viewer, Response>) -> Response {
    match viewer {
        Ok(viewer) if viewer.is_admin() => redirect("/fleet", []),
        Ok(_) => redirect("/stock", []),
        Err(to_sign_in) => to_sign_in,
    }
}

/// `GET /sign-in` (`?ended`: the last sign-in was revoked or signed out elsewhere).
async fn sign_in_page(headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let ended = query.as_deref() == Some("ended");
    let error = ended.then_some("Your sign-in is no longer valid (the token was revoked or rotated). Sign in again.");
    sign_in_answer(&headers, StatusCode::OK, error)
}

fn sign_in_answer(headers: &HeaderMap, status: StatusCode, error: Option<&str>) -> Response {
    let csrf = COOKIES.csrf(headers);
    let page = Page {
        app: "back office",
        title: "Sign in",
        nav: &[],
        current: "/sign-in",
        signed_in: None,
        csrf: &csrf.token,
    };
    let body = sign_in_form(
        "Admin or channel token",
        "The token stays in this browser until you sign out or close it; it never appears in a link.",
        &csrf.token,
        error,
    );
    html(status, page.render(body), csrf.cookie)
}

/// `POST /sign-in`: an admin or channel token starts a session.
async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let token = match COOKIES.signing_in(&headers, form) {
        Ok(token) => token,
        Err((status, words)) => return sign_in_answer(&headers, status, Some(words)),
    };
    let token = token.as_str();
    match Principal::of_secret(&state, token).await {
        Ok(Principal::Admin | Principal::Channel { .. }) => match COOKIES.sign_in(token, &headers) {
            Some(cookie) => redirect("/", [cookie]),
            None => sign_in_answer(&headers, StatusCode::UNAUTHORIZED, Some("That token was not accepted.")),
        },
        Ok(Principal::Store { .. }) => sign_in_answer(
            &headers,
            StatusCode::FORBIDDEN,
            Some("That is a store's token, for its agent only; sign in with an admin or channel token."),
        ),
        Err(error) => {
            let problem = error.problem();
            let words = words::refusal(&problem.problem);
            let status = StatusCode::from_u16(problem.problem.status).unwrap_or(StatusCode::UNAUTHORIZED);
            sign_in_answer(&headers, status, Some(&words))
        }
    }
}

/// `POST /sign-out`: ends the session (with the form's CSRF token, so no other site can).
async fn sign_out(headers: HeaderMap, form: Result<Form<CsrfForm>, FormRejection>) -> Response {
    match COOKIES.signing_out(&headers, form) {
        Some(cookie) => redirect("/sign-in", [cookie]),
        None => sign_in_answer(&headers, StatusCode::FORBIDDEN, Some(SIGN_OUT_REFUSED)),
    }
}

/// Every enrolled store.
async fn stores(state: &AppState) -> Result<Vec<StoreInfo>, Box<shelfsync_common::wire::problem::Problem>> {
    state
        .log
        .stores()
        .await
        .map_err(|e| crate::api::error::ApiError::from(e).problem().problem)
}

/// `12.50` from 1250 minor units.
fn price(minor: u64) -> String {
    format!("{}.{:02}", minor / 100, minor % 100)
}

/// The hidden fields of a write form: the CSRF token and a fresh idempotency key, so a
/// form sent twice is one write.
fn write_fields(viewer: &Viewer) -> Markup {
    markup! {
        (csrf_field(&viewer.csrf.token))
        input type="hidden" name="idem" value=(uuid::Uuid::now_v7());
    }
}
