//! A small W3C WebDriver client for the browser tests: Debian's `chromedriver` driving a
//! headless `chromium`, spoken to over HTTP with the workspace's `reqwest` (no browser
//! automation crate: the handful of commands the tests need is a few JSON calls).
//!
//! [`Browser::start`] finds both programs; without them it says how to install them and
//! returns `None` (the test skips), unless `SHELFSYNC_REQUIRE_SERVICES=1` (CI), where it
//! fails. The driver listens on 127.0.0.1 only; the session and the driver end when the
//! [`Browser`] drops. Every wait is bounded and polls a condition, never a fixed sleep.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The W3C key of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Longest wait for the driver to start.
const DRIVER_START: Duration = Duration::from_secs(20);

/// A headless Chromium session.
pub struct Browser {
    http: reqwest::Client,
    driver: Child,
    port: u16,
    session: String,
    _profile: tempfile::TempDir,
}

/// An element on the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// Starts `chromedriver` and a headless `chromium` window of `width` x `height`, or
    /// `None` (after saying why) when they are not installed and services are optional.
    pub async fn start(width: u32, height: u32) -> Option<Browser> {
        if !super::services::programs_present(
            &["chromium", "chromedriver"],
            "the browser tests",
            "Debian: apt-get install -y chromium chromium-driver",
        ) {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new("chromedriver")
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".to_owned()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().expect("a browser profile directory");
        let mut browser = Browser {
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            driver,
            port,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + DRIVER_START;
        loop {
            let ready = browser
                .http
                .get(format!("{}/status", browser.base()))
                .send()
                .await
                .ok()
                .map(|r| r.json::<Value>());
            if let Some(body) = ready {
                if body.await.is_ok_and(|b| b["value"]["ready"] == true) {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start within {DRIVER_START:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let args = json!([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--hide-scrollbars",
            format!("--user-data-dir={}", browser._profile.path().display()),
            format!("--window-size={width},{height}"),
        ]);
        let answer = browser
            .call(
                reqwest::Method::POST,
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "unhandledPromptBehavior": "ignore",
                    "goog:chromeOptions": {"binary": chromium_binary(), "args": args},
                }}})),
            )
            .await
            .expect("a new browser session");
        browser.session = answer["sessionId"].as_str().expect("sessionId").to_owned();
        Some(browser)
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = if path == "/session" {
            format!("{}/session", self.base())
        } else {
            format!("{}/session/{}{path}", self.base(), self.session)
        };
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(body["value"].clone())
        } else {
            Err(format!("{status}: {}", body["value"]))
        }
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The current page's URL.
    pub async fn url(&self) -> String {
        let value = self.call(reqwest::Method::GET, "/url", None).await.expect("url");
        value.as_str().unwrap_or_default().to_owned()
    }

    /// The page's HTML as the browser holds it now.
    pub async fn source(&self) -> String {
        let value = self.call(reqwest::Method::GET, "/source", None).await.expect("source");
        value.as_str().unwrap_or_default().to_owned()
    }

    /// The first element matching `css`, if any.
    pub async fn find(&self, css: &str) -> Option<Element> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .ok()?;
        found[ELEMENT].as_str().map(|id| Element(id.to_owned()))
    }

    /// Waits (bounded) for an element matching `css` whose text contains `text`.
    pub async fn wait_text(&self, css: &str, text: &str, within: Duration) -> Element {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        loop {
            if let Some(element) = self.find(css).await {
                last = self.text(&element).await;
                if last.contains(text) {
                    return element;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {css:?} with text {text:?} within {within:?}; last text {last:?}; page at {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The element's visible text ("" when it went stale).
    pub async fn text(&self, element: &Element) -> String {
        let path = format!("/element/{}/text", element.0);
        match self.call(reqwest::Method::GET, &path, None).await {
            Ok(value) => value.as_str().unwrap_or_default().to_owned(),
            Err(_) => String::new(),
        }
    }

    /// An attribute of the element.
    pub async fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        let path = format!("/element/{}/attribute/{name}", element.0);
        let value = self.call(reqwest::Method::GET, &path, None).await.ok()?;
        value.as_str().map(str::to_owned)
    }

    /// Clicks the element.
    pub async fn click(&self, element: &Element) {
        let path = format!("/element/{}/click", element.0);
        self.call(reqwest::Method::POST, &path, Some(json!({})))
            .await
            .unwrap_or_else(|e| panic!("click: {e}"));
    }

    /// Clicks the first element matching `css` (which must be there).
    pub async fn click_on(&self, css: &str) {
        let element = self.find(css).await.unwrap_or_else(|| panic!("no {css:?} to click"));
        self.click(&element).await;
    }

    /// Types `text` into the first element matching `css` (which must be there).
    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self
            .find(css)
            .await
            .unwrap_or_else(|| panic!("no {css:?} to type into"));
        let path = format!("/element/{}/value", element.0);
        self.call(reqwest::Method::POST, &path, Some(json!({ "text": text })))
            .await
            .unwrap_or_else(|e| panic!("type into {css:?}: {e}"));
    }

    /// The text of the open dialog (`confirm`, `alert`), if one is open.
    pub async fn dialog_text(&self) -> Option<String> {
        let value = self.call(reqwest::Method::GET, "/alert/text", None).await.ok()?;
        value.as_str().map(str::to_owned)
    }

    /// Accepts the open dialog, waiting (bounded) for it to open.
    pub async fn accept_dialog(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(text) = self.dialog_text().await {
                self.call(reqwest::Method::POST, "/alert/accept", Some(json!({})))
                    .await
                    .expect("accept the dialog");
                return text;
            }
            assert!(Instant::now() < deadline, "no dialog opened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resizes the window.
    pub async fn resize(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        )
        .await
        .expect("resize the window");
    }

    /// Saves a PNG of the viewport at `path`.
    pub async fn screenshot(&self, path: &Path) {
        let value = self
            .call(reqwest::Method::GET, "/screenshot", None)
            .await
            .expect("screenshot");
        let png = decode_base64(value.as_str().unwrap_or_default()).expect("a base64 PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

impl Drop for Browser {
    /// Ends the session (so Chromium exits), then the driver.
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                self.session, self.port
            );
            if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = stream.write_all(request.as_bytes());
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Debian installs the browser as `/usr/bin/chromium`.
fn chromium_binary() -> String {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("chromium")
        .to_owned()
}

/// Standard base64 (with padding), as WebDriver sends screenshots.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().filter(|b| **b == b'=').count();
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            let v = if *c == b'=' { 0 } else { value(*c)? };
            n |= v << (18 - 6 * i);
        }
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad.min(2)]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_as_webdriver_encodes() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("YWJj").unwrap(), b"abc");
        assert!(decode_base64("a$==").is_none());
    }
}
