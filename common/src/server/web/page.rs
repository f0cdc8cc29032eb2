//! The layout every page shares and the answers that carry it: the security headers (CSP
//! with no inline script, no framing, no sniffing, no caching of pages that may show a
//! secret once), the skip link, the navigation and the sign-out form.

use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html as markup, Markup, DOCTYPE};

/// The Content-Security-Policy of every page: scripts, styles and live updates from this
/// server only, no inline script or style, no plugins, no framing, forms post here only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A link in the page's navigation.
#[derive(Debug, Clone, Copy)]
pub struct NavLink<'a> {
    /// Where it goes.
    pub href: &'a str,
    /// What it says.
    pub label: &'a str,
}

/// What the layout needs to know about the page and who looks at it.
#[derive(Debug, Clone, Copy)]
pub struct Page<'a> {
    /// The binary's name in the header ("back office", "store").
    pub app: &'a str,
    /// The page's title.
    pub title: &'a str,
    /// The navigation; the link whose `href` is `current` is marked as the current page.
    pub nav: &'a [NavLink<'a>],
    /// The current page's path.
    pub current: &'a str,
    /// Who is signed in, in words; `None` shows no sign-out form.
    pub signed_in: Option<&'a str>,
    /// The CSRF token the page's forms carry.
    pub csrf: &'a str,
}

impl Page<'_> {
    /// The whole document around `body`.
    pub fn render(&self, body: Markup) -> Markup {
        markup! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (self.title) " · shelfsync " (self.app) }
                    link rel="stylesheet" href=(super::assets::CSS_PATH);
                    script src=(super::assets::JS_PATH) defer {}
                }
                body {
                    a.skip href="#main" { "Skip to the content" }
                    header.top {
                        span.brand { "shelfsync " (self.app) }
                        @if !self.nav.is_empty() {
                            nav aria-label="Main" {
                                ul {
                                    @for link in self.nav {
                                        li {
                                            @if link.href == self.current {
                                                a href=(link.href) aria-current="page" { (link.label) }
                                            } @else {
                                                a href=(link.href) { (link.label) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        @if let Some(who) = self.signed_in {
                            form.signout method="post" action="/sign-out" {
                                (csrf_field(self.csrf))
                                span.who { (who) }
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                    main #main tabindex="-1" {
                        h1 { (self.title) }
                        (body)
                    }
                }
            }
        }
    }
}

/// The hidden field that carries the CSRF token in every form.
pub fn csrf_field(token: &str) -> Markup {
    markup! { input type="hidden" name="csrf" value=(token); }
}

/// A message box: `role=alert` for errors (read out by screen readers), `status` otherwise.
pub fn notice(kind: Notice, text: &str) -> Markup {
    match kind {
        Notice::Error => markup! { p.notice.error role="alert" { (text) } },
        Notice::Done => markup! { p.notice.done role="status" { (text) } },
    }
}

/// The kind of a [`notice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Something was refused or failed.
    Error,
    /// Something was done.
    Done,
}

/// The sign-in form both binaries show: one secret field, posted to `/sign-in`.
pub fn sign_in_form(label: &str, hint: &str, csrf: &str, error: Option<&str>) -> Markup {
    markup! {
        @if let Some(error) = error { (notice(Notice::Error, error)) }
        form.card method="post" action="/sign-in" {
            (csrf_field(csrf))
            label for="token" { (label) }
            input #token type="password" name="token" required autocomplete="current-password" maxlength="200";
            p.hint { (hint) }
            button type="submit" { "Sign in" }
        }
    }
}

/// A page answer with the security headers and the given cookies.
pub fn html(status: StatusCode, page: Markup, cookies: impl IntoIterator<Item = HeaderValue>) -> Response {
    let mut response = (status, page.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure(headers);
    for cookie in cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

/// `303 See Other` to `to` (a path on this server), with the given cookies.
pub fn redirect(to: &str, cookies: impl IntoIterator<Item = HeaderValue>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(to) {
        headers.insert(header::LOCATION, location);
    }
    secure(headers);
    for cookie in cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
    response
}

/// The headers every page and asset carries. The referrer policy is `same-origin`, not
/// `no-referrer`: under `no-referrer` browsers send `Origin: null` with a form, which the
/// CSRF check must refuse.
pub fn secure(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_is_escaped_and_the_page_carries_its_policy() {
        let page = Page {
            app: "test",
            title: "<script>alert(1)</script>",
            nav: &[NavLink {
                href: "/a",
                label: "\"><b>",
            }],
            current: "/a",
            signed_in: Some("<i>admin</i>"),
            csrf: "\"x",
        };
        let text = page
            .render(markup! { p { ("<img src=x onerror=alert(1)>") } })
            .into_string();
        assert!(!text.contains("<script>alert"), "{text}");
        assert!(text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{text}");
        assert!(!text.contains("<img src=x"), "{text}");
        assert!(!text.contains("<i>admin"), "{text}");
        assert!(text.contains("value=\"&quot;x\""), "{text}");
        assert!(text.contains("aria-current=\"page\""), "{text}");
        let response = html(StatusCode::OK, markup! {}, []);
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    }
}
