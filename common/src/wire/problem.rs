//! `Problem`: the RFC 9457 `application/problem+json` body every error answer carries,
//! on the hub and on the edge agent alike. `code` is the stable, machine-readable part;
//! `title` and `detail` are for people and may change.

use serde::{Deserialize, Serialize};

/// The media type of a problem answer.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type (`urn:shelfsync:problem:<code>`).
    #[serde(rename = "type")]
    pub type_uri: String,
    /// A short summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, for a person.
    pub detail: String,
    /// The stable machine-readable code.
    pub code: String,
    /// On a version conflict: the stream's current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
    /// On a validation error: the offending field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// On `store_name_taken`: the id of the store that already has the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existing_store_id: Option<uuid::Uuid>,
    /// On a refusal by an allocation (`insufficient_stock` at the hub,
    /// `allocation_exhausted` at the till): whose share ran short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<crate::domain::allocation::Share>,
    /// With `share`: the units left in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units_left: Option<i64>,
}

impl Problem {
    /// A problem with the given status, code, title and detail.
    pub fn new(status: u16, code: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("urn:shelfsync:problem:{code}"),
            title: title.to_owned(),
            status,
            detail: detail.into(),
            code: code.to_owned(),
            current_version: None,
            field: None,
            existing_store_id: None,
            share: None,
            units_left: None,
        }
    }
    /// The `code` and `detail` of an error answer's `body`, as a client reports a refusal:
    /// the problem's when the body is one, else no code and the body as text (a proxy's
    /// error page, say).
    pub fn code_and_detail(body: &[u8]) -> (String, String) {
        match serde_json::from_slice::<Problem>(body) {
            Ok(problem) => (problem.code, problem.detail),
            Err(_) => (String::new(), String::from_utf8_lossy(body).into_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reads_as_the_problems_code_and_detail_or_as_the_bodys_text() {
        // Given a problem body, its code and detail are reported.
        let body = serde_json::to_vec(&Problem::new(409, "sku_taken", "SKU taken", "SKU A-1 is taken")).unwrap();
        assert_eq!(
            Problem::code_and_detail(&body),
            ("sku_taken".to_owned(), "SKU A-1 is taken".to_owned())
        );
        // Given any other body, there is no code and the text is the detail.
        assert_eq!(
            Problem::code_and_detail(b"502 Bad Gateway"),
            (String::new(), "502 Bad Gateway".to_owned())
        );
    }
}
