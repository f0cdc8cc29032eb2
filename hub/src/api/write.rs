//! What every write route shares: turning a request (token, headers, body) into a
//! [`CommandRequest`] for the writer, and a [`WriteResult`] into the answer.
//!
//! Idempotency: the event id is the body's `event_id`, else one derived from the
//! `Idempotency-Key` header and the caller's identity with the hub's secret
//! [`IdKey`] (so no other party can compute it), else a fresh UUIDv7. The
//! [`Fingerprint`] covers the route, the path's id and the body without its `event_id`
//! (the rule both binaries share), so a retry is recognised however it names its event,
//! and a different request reusing the id is refused.

use super::auth::Principal;
use super::error::{etag, ApiError};
use super::AppState;
use crate::store::{Command, CommandRequest};
use axum::extract::FromRequestParts;
use axum::http::header::{HeaderName, LOCATION};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use sha2::{Digest, Sha256};
use shelfsync_common::server::extract::WriteHeaders;
use shelfsync_common::server::failure::Reject;
use shelfsync_common::server::openapi;
use shelfsync_common::wire::api::WriteResult;
use shelfsync_common::wire::fingerprint::{Fingerprint, WriteBody};
use shelfsync_common::{EventId, EventMetadata, ExpectedVersion, IdKey, Origin};
use time::OffsetDateTime;
use uuid::Uuid;

/// Header carrying the position of a write's last event.
pub const POSITION: HeaderName = HeaderName::from_static("x-shelfsync-position");

/// The optional headers of every write, for the OpenAPI document.
pub type WriteHeaderParams = openapi::WriteHeaderParams<HubWriteHeaders>;

/// How the hub describes its write headers: the key is scoped by the caller's token, and
/// `If-Match` carries the expected stream version.
pub struct HubWriteHeaders;

impl openapi::WriteHeaderDocs for HubWriteHeaders {
    const IDEMPOTENCY_KEY: &'static str = "Makes a retry safe: 1..=200 visible ASCII characters, scoped by the \
                                           caller's token.\nA body `event_id` takes precedence.";
    const CORRELATION_ID: &'static str = "A UUID grouping the events of one business operation.";

    fn own_header() -> utoipa::openapi::path::Parameter {
        openapi::optional_header(
            "If-Match",
            "The stream version the write expects (`\"3\"`, `W/\"3\"`, `any`, `no_stream` or\n\
             `exists`); the body's `expected_version` must agree when both are sent.",
            utoipa::openapi::ObjectBuilder::new().pattern(Some(r#"^(W/)?"?(any|no_stream|exists|[0-9]{1,19})"?$"#)),
        )
    }
}

/// The answers of every write: 201 (new) or 200 (a retry) with the [`WriteResult`], the
/// stream version as `ETag` and the position in `X-Shelfsync-Position`.
pub struct WriteAnswers;

impl utoipa::IntoResponses for WriteAnswers {
    fn responses() -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>> {
        shelfsync_common::server::openapi::write_answers(
            "WriteResult",
            &[
                ("ETag", false, "the stream's version after the write, quoted"),
                (
                    "X-Shelfsync-Position",
                    true,
                    "the position of the write's last event: pass it as min_position to read your write",
                ),
            ],
        )
    }
}

/// The caller and the request headers a write needs.
pub struct WriteContext {
    /// Who is writing.
    pub principal: Principal,
    if_match: Option<ExpectedVersion>,
    idempotency_key: Option<String>,
    correlation_id: Uuid,
    id_key: IdKey,
}

impl FromRequestParts<AppState> for WriteContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let principal = Principal::from_request_parts(parts, state).await?;
        let headers = WriteHeaders::parse(&parts.headers).map_err(|bad| ApiError::bad_request(bad.code, bad.detail))?;
        Ok(Self {
            principal,
            if_match: headers.if_match,
            idempotency_key: headers.idempotency_key,
            correlation_id: headers.correlation_id.unwrap_or_else(Uuid::now_v7),
            id_key: state.log.id_key().clone(),
        })
    }
}

impl WriteContext {
    /// The context of a write the back office's pages make for `principal`, with the
    /// idempotency key their form carried (a resent form is one write).
    pub fn for_page(state: &AppState, principal: Principal, idempotency_key: Option<String>) -> Self {
        Self {
            principal,
            if_match: None,
            idempotency_key,
            correlation_id: Uuid::now_v7(),
            id_key: state.log.id_key().clone(),
        }
    }

    /// Builds the writer's request. `route` and `request` (the body, or the path's id
    /// with the body) identify the request for idempotency.
    pub fn command(
        &self,
        command: Command,
        body_expected: Option<ExpectedVersion>,
        route: &str,
        request: &impl WriteBody,
    ) -> Result<CommandRequest, ApiError> {
        let expected = match (self.if_match, body_expected) {
            (Some(header), Some(body)) if header != body => {
                return Err(ApiError::bad_request(
                    "conflicting_preconditions",
                    format!("If-Match says {header} but expected_version says {body}"),
                ));
            }
            (header, body) => header.or(body).unwrap_or_default(),
        };
        let actor = self.principal.actor();
        let event_id = request
            .event_id()
            .or_else(|| {
                self.idempotency_key
                    .as_deref()
                    .map(|key| self.id_key.event_id(&actor, key))
            })
            .unwrap_or_else(EventId::new_v7);
        Ok(CommandRequest {
            command,
            expected,
            event_id,
            fingerprint: Fingerprint::of_write(route, request),
            legacy_fingerprint: Some(legacy_fingerprint(route, request)),
            metadata: EventMetadata {
                origin: Origin::Hub,
                actor,
                correlation_id: self.correlation_id,
                causation_id: None,
                occurred_at: OffsetDateTime::now_utc(),
                recorded_at: None,
            },
        })
    }
}

/// The digest this hub made of a request before [`Fingerprint`]'s rule: SHA-256 over the
/// route and the request's JSON as sent (its `event_id` included, no NUL), cut to 16
/// bytes. Events written by earlier versions carry it; see
/// [`CommandRequest::legacy_fingerprint`].
fn legacy_fingerprint(route: &str, request: &impl Serialize) -> Fingerprint {
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update(serde_json::to_vec(request).unwrap_or_default());
    let mut fingerprint = [0u8; 16];
    fingerprint.copy_from_slice(&hasher.finalize()[..16]);
    Fingerprint::from_bytes(fingerprint)
}

/// 201 for a new write (200 for a repeated one), with the stream version as `ETag`, the
/// position in `X-Shelfsync-Position`, and `Location` when given.
pub fn written(result: WriteResult, location: Option<String>) -> Response {
    let status = if result.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let tag = etag(result.stream_version);
    let position = HeaderValue::from(result.position);
    let mut response = (status, Json(result)).into_response();
    let headers = response.headers_mut();
    headers.insert(axum::http::header::ETAG, tag);
    headers.insert(POSITION, position);
    if let Some(location) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        headers.insert(LOCATION, location);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelfsync_common::wire::api::AddStockRequest;

    #[test]
    fn the_legacy_digest_is_the_one_earlier_hubs_stored() {
        // Given a body that names its event id,
        let body: AddStockRequest = serde_json::from_value(serde_json::json!({
            "product_id": uuid::Uuid::from_bytes([1; 16]),
            "store_id": uuid::Uuid::from_bytes([2; 16]),
            "quantity": 3,
            "event_id": uuid::Uuid::from_bytes([9; 16]),
        }))
        .unwrap();
        // when fingerprinted by the legacy rule, then it is SHA-256 of the route and the
        // body's JSON as sent, cut to 16 bytes: the digest an earlier hub stored for this
        // very body (pinned: a serde change would orphan every stored row),
        let hex: String = legacy_fingerprint("add_stock", &body)
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "37bfbd9bd2442638efeb97983f057d27");
        // and differs from today's rule, which is why the writer accepts both.
        assert_ne!(
            legacy_fingerprint("add_stock", &body),
            Fingerprint::of_write("add_stock", &body)
        );
    }
}
