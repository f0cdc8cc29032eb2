//! A part of a page kept current without a reload: a Server-Sent Events stream of that
//! part rendered again on the server, sent only when it changed. The page's script
//! (`assets/app.js`) puts each `update` into the element whose `data-live` names the
//! stream; the HTML was escaped when it was rendered, as on the page itself.
//!
//! The stream ends by itself when the render says the viewer may no longer see it (a
//! revoked token: a `signed-out` event tells the page to reload, which leads to the
//! sign-in page) and when the server starts shutting down.

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// How often an open page's live part is rendered again (and sent when it changed).
pub const PERIOD: Duration = Duration::from_secs(1);

/// What one render gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The part, rendered.
    Html(String),
    /// The viewer may no longer see it.
    SignedOut,
}

/// An SSE answer that calls `render` every `period` and sends what changed, until
/// `stopping` turns true or the viewer is signed out.
pub fn stream<F, Fut>(period: Duration, stopping: watch::Receiver<bool>, render: F) -> Response
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Frame> + Send + 'static,
{
    struct Loop<F> {
        render: F,
        last: Option<String>,
        stopping: watch::Receiver<bool>,
        done: bool,
        first: bool,
    }
    let state = Loop {
        render,
        last: None,
        stopping,
        done: false,
        first: true,
    };
    let events = stream::unfold(state, move |mut state| async move {
        loop {
            if state.done || *state.stopping.borrow() {
                return None;
            }
            if !state.first {
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    _ = state.stopping.changed() => return None,
                }
            }
            state.first = false;
            match (state.render)().await {
                Frame::SignedOut => {
                    state.done = true;
                    let event = Event::default().event("signed-out").data("");
                    return Some((Ok::<_, Infallible>(event), state));
                }
                Frame::Html(html) if state.last.as_deref() != Some(html.as_str()) => {
                    // SSE cannot carry a carriage return; the HTML needs none.
                    let event = Event::default().event("update").data(html.replace('\r', ""));
                    state.last = Some(html);
                    return Some((Ok(event), state));
                }
                Frame::Html(_) => {}
            }
        }
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    super::page::secure(response.headers_mut());
    response
}
