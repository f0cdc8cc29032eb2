//! The browser session's cookies and the CSRF check.
//!
//! The session cookie holds the credential the person signed in with (a hub token, the
//! store's manager key) for the browser session only: no `Max-Age`, `HttpOnly` (no script
//! can read it), `SameSite=Strict` (no other site's page can make the browser send it),
//! `Path=/`, and `Secure` when the page came over TLS (a proxy in front says so with
//! `X-Forwarded-Proto: https`). The binary checks it on every request as it checks a
//! bearer token, so a revoked token is refused on its next page.
//!
//! CSRF: every form carries a random token that must equal the one in a second cookie
//! (double submit, the cookie again HttpOnly and SameSite=Strict), and a request whose
//! `Origin` names another host than the one it was sent to is refused. The hub and the
//! agent may share a host on different ports, and browsers share cookies across ports, so
//! each binary names its own cookies.

use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use rand::RngCore;

/// The two cookie names of one binary.
#[derive(Debug, Clone, Copy)]
pub struct WebCookies {
    /// The session cookie's name.
    pub session: &'static str,
    /// The CSRF cookie's name.
    pub csrf: &'static str,
}

/// The CSRF token of a page, and the cookie to set when the browser had none.
#[derive(Debug, Clone)]
pub struct CsrfToken {
    /// The value every form on the page carries.
    pub token: String,
    /// `Set-Cookie` for a new token.
    pub cookie: Option<HeaderValue>,
}

impl WebCookies {
    /// The session cookie's value, if the browser sent one.
    pub fn session<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        cookie(headers, self.session).filter(|v| !v.is_empty())
    }

    /// The CSRF token the browser holds, or a new one with its cookie.
    pub fn csrf(&self, headers: &HeaderMap) -> CsrfToken {
        match cookie(headers, self.csrf).filter(|v| v.len() == 64) {
            Some(token) => CsrfToken {
                token: token.to_owned(),
                cookie: None,
            },
            None => {
                let mut bytes = [0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                let token = hex::encode(bytes);
                CsrfToken {
                    cookie: set_cookie(self.csrf, &token, headers),
                    token,
                }
            }
        }
    }

    /// Whether a form post is this site's own: its `csrf` field equals the CSRF cookie,
    /// and its `Origin`, when sent, names the host it was sent to.
    pub fn form_is_ours(&self, headers: &HeaderMap, form_token: &str) -> bool {
        let Some(expected) = cookie(headers, self.csrf).filter(|v| v.len() == 64) else {
            return false;
        };
        same_origin(headers) && same_text(expected.as_bytes(), form_token.as_bytes())
    }

    /// `Set-Cookie` that keeps `value` as the session for this browser session.
    pub fn sign_in(&self, value: &str, headers: &HeaderMap) -> Option<HeaderValue> {
        set_cookie(self.session, value, headers)
    }

    /// `Set-Cookie` that ends the session.
    pub fn sign_out(&self, headers: &HeaderMap) -> HeaderValue {
        let secure = if over_tls(headers) { "; Secure" } else { "" };
        HeaderValue::from_str(&format!(
            "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}",
            self.session
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("x=; Max-Age=0"))
    }
}

/// The sign-in form both binaries take.
#[derive(Debug, serde::Deserialize)]
pub struct SignInForm {
    /// The page's CSRF token.
    pub csrf: String,
    /// The token or key.
    pub token: super::super::secret::Secret,
}

/// A form that carries only the page's CSRF token (sign-out, a button).
#[derive(Debug, serde::Deserialize)]
pub struct CsrfForm {
    /// The page's CSRF token.
    pub csrf: String,
}

/// The longest token or key a sign-in takes.
pub const MAX_SECRET_LEN: usize = 200;

impl WebCookies {
    /// The secret a sign-in form posted, when the form is this site's own; otherwise the
    /// status and the words for the sign-in page.
    pub fn signing_in(
        &self,
        headers: &HeaderMap,
        form: Result<axum::Form<SignInForm>, axum::extract::rejection::FormRejection>,
    ) -> Result<String, (StatusCode, &'static str)> {
        let Ok(axum::Form(form)) = form else {
            return Err((StatusCode::BAD_REQUEST, "The sign-in form was incomplete."));
        };
        if !self.form_is_ours(headers, &form.csrf) {
            return Err((StatusCode::FORBIDDEN, "This form expired; try again."));
        }
        let secret = form.token.trim();
        if secret.is_empty() || secret.len() > MAX_SECRET_LEN {
            return Err((StatusCode::UNPROCESSABLE_ENTITY, "Enter a token or key."));
        }
        Ok(secret.to_owned())
    }

    /// The cookie that ends the session, when the sign-out form is this site's own.
    pub fn signing_out(
        &self,
        headers: &HeaderMap,
        form: Result<axum::Form<CsrfForm>, axum::extract::rejection::FormRejection>,
    ) -> Option<HeaderValue> {
        match form {
            Ok(axum::Form(form)) if self.form_is_ours(headers, &form.csrf) => Some(self.sign_out(headers)),
            _ => None,
        }
    }
}

/// What a refused sign-out says.
pub const SIGN_OUT_REFUSED: &str = "Sign-out needs the page's form; reload and try again.";

/// Whether the request came over TLS (through a proxy that terminates it).
pub fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

/// A session cookie (no expiry) named `name`; `None` when `value` cannot be a cookie value
/// (then nothing is stored and the sign-in fails visibly).
fn set_cookie(name: &str, value: &str, headers: &HeaderMap) -> Option<HeaderValue> {
    if value.is_empty()
        || !value
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'))
    {
        return None;
    }
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict{secure}")).ok()
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// False when the request's `Origin` names another host than its `Host`.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    !host.is_empty() && origin_host == host
}

/// Compares without an early exit.
fn same_text(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOKIES: WebCookies = WebCookies {
        session: "t_session",
        csrf: "t_csrf",
    };

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_behind_tls() {
        let plain = COOKIES.sign_in("ss_abc", &HeaderMap::new()).unwrap();
        let plain = plain.to_str().unwrap();
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict") && !plain.contains("Secure"));
        assert!(!plain.contains("Max-Age"), "a browser-session cookie: {plain}");
        let tls = COOKIES
            .sign_in("ss_abc", &headers(&[("x-forwarded-proto", "https")]))
            .unwrap();
        assert!(tls.to_str().unwrap().ends_with("; Secure"));
        assert!(
            COOKIES.sign_in("a;b", &HeaderMap::new()).is_none(),
            "no cookie injection"
        );
        let new = COOKIES.csrf(&HeaderMap::new());
        let set = new.cookie.unwrap();
        assert!(set.to_str().unwrap().contains("HttpOnly; SameSite=Strict"));
    }

    #[test]
    fn a_form_passes_only_with_the_cookies_token_from_this_host() {
        let token = "ab".repeat(32);
        let cookie = format!("other=1; t_csrf={token}");
        let ours = headers(&[
            ("cookie", &cookie),
            ("host", "127.0.0.1:7070"),
            ("origin", "http://127.0.0.1:7070"),
        ]);
        assert!(COOKIES.form_is_ours(&ours, &token));
        assert!(!COOKIES.form_is_ours(&ours, &"cd".repeat(32)), "another token");
        assert!(!COOKIES.form_is_ours(&headers(&[("host", "h")]), &token), "no cookie");
        let foreign = headers(&[
            ("cookie", &cookie),
            ("host", "127.0.0.1:7070"),
            ("origin", "http://evil.example"),
        ]);
        assert!(!COOKIES.form_is_ours(&foreign, &token), "another origin");
        assert_eq!(COOKIES.csrf(&ours).token, token);
        assert!(COOKIES.csrf(&ours).cookie.is_none());
    }
}
