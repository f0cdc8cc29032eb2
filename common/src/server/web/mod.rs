//! The web pages both binaries serve (the hub's back office, the agent's store page): the
//! pieces they share, so that neither writes its own copy.
//!
//! Pages are rendered on the server with `maud` (every value escaped unless a template
//! says otherwise, which none does) and sent with a Content-Security-Policy that allows
//! no inline script: the one script and the one style sheet are files inside the binary
//! ([`assets`]), because a store's network may be down and a page must never need a CDN.
//! [`page`] is the layout and the small parts every page uses; [`session`] the cookies
//! (HttpOnly, SameSite=Strict, Secure behind TLS) and the CSRF check every form passes;
//! [`live`] the Server-Sent Events stream that keeps a part of a page current without a
//! reload; [`words`] turns times, ages and API problems into sentences.

pub mod assets;
pub mod live;
pub mod page;
pub mod session;
pub mod words;

pub use page::{html, redirect, NavLink, Page};
pub use session::WebCookies;
