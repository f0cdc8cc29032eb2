//! The small helpers every test and bench of the workspace shares (feature `testing`:
//! dev-dependencies and the e2e harness crate, never the release binaries): one place instead of copies or files included by `#[path]`.
//!
//! - [`proxy`]: the fault-injecting TCP proxy (the e2e suite puts one between every agent
//!   and the hub; the agent's sync tests put one in front of an in-process hub).
//! - [`http`]: one HTTP call as an API test sees it (status, JSON body, content type).
//! - [`openapi`]: the served OpenAPI contract checked against what the server does.
//! - [`measure`]: what every bench binary measures with (env knobs, statistics,
//!   per-thread CPU, the machine).
//! - [`scenario`]: one scenario's verdict (median, min, max, same-run baseline, ratio,
//!   goal, met) as a table row and a JSON line, and the quick mode CI runs.
//! - [`services`]: skip (or, in CI, fail) a test whose outside program is missing.
//! - [`webdriver`]: a small W3C WebDriver client (headless Chromium through
//!   `chromedriver`) for the browser tests of the web pages.
//! - `sqlite` (with feature `sqlite`): the write lock a writer's tests hold to shape a
//!   group commit.
//!
//! These run only in tests and benches, where a broken expectation is a panic with a
//! message: `expect` is their way of failing.

#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod http;
pub mod measure;
pub mod openapi;
pub mod proxy;
pub mod scenario;
pub mod services;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod webdriver;
