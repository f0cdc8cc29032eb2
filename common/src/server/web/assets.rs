//! The one style sheet and the one script of every page, inside the binary (a store's
//! network may be down: no CDN, no build step). Served with the same security headers as
//! the pages, cacheable for an hour.

use axum::http::header::{self, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// Where the style sheet is served.
pub const CSS_PATH: &str = "/assets/app.css";
/// Where the script is served.
pub const JS_PATH: &str = "/assets/app.js";

const CSS: &str = include_str!("assets/app.css");
const JS: &str = include_str!("assets/app.js");

/// The asset routes, for any binary's router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(CSS_PATH, get(|| async { asset("text/css; charset=utf-8", CSS) }))
        .route(JS_PATH, get(|| async { asset("text/javascript; charset=utf-8", JS) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    super::page::secure(headers);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}
