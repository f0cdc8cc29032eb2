//! Support of the API tests: the shared HTTP and OpenAPI helpers
//! ([`shelfsync_common::testing`]) and the problem check. The agent itself comes from
//! its test kit ([`shelfsync_edge::testing`]).

#![allow(dead_code)]

use serde_json::Value;

pub use shelfsync_common::testing::http::call;
pub use shelfsync_common::testing::openapi;

/// Asserts a problem+json answer with this status and code.
#[track_caller]
pub fn assert_problem(answer: &(u16, Value, String), status: u16, code: &str) {
    let (got, body, content_type) = answer;
    assert_eq!((*got, body["code"].as_str()), (status, Some(code)), "{body}");
    assert_eq!(content_type, "application/problem+json", "{body}");
    assert_eq!(body["status"].as_u64(), Some(u64::from(status)), "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()), "{body}");
}
