//! What every till write shares: turning a request (key, headers, body) into a
//! [`LocalCommand`] for the local store, and its answer into a response.
//!
//! Event id: the body's `event_id`, else one derived from the `Idempotency-Key` header
//! (scoped by this store, the key presented and `X-Till-Id`, so two tills, or two stores,
//! using the same key never collide at the hub, and keyed with this agent's secret
//! [`IdKey`], so that no other party can compute the id and claim it first), else a new
//! UUIDv7.
//!
//! Idempotency: every write is recorded in the store's idempotency table under
//! `event:<event id>`, in the same transaction as its event. So whichever way a request
//! names its event (body `event_id`, `Idempotency-Key`, or the `event_id` of an earlier
//! answer sent back), a repeat is answered from that table (`200`, `replayed: true`) and
//! never reaches the outbox's `UNIQUE(event_id)`, which would fail the whole group commit
//! and every till's write in it. The [`Fingerprint`] covers the route, the path's id and
//! the body without its `event_id` (the rule the hub shares), so a different request
//! reusing an id is refused
//! (`422 idempotency_key_reused`). Only successful writes are remembered: a refused
//! request may be retried and is decided again.

use super::auth::Till;
use super::error::ApiError;
use super::AppState;
use crate::store::{LocalCommand, Target};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use shelfsync_common::domain::allocation::OverShare;
use shelfsync_common::server::extract::WriteHeaders;
use shelfsync_common::server::failure::Reject;
use shelfsync_common::wire::edge::LocalWriteResult;
use shelfsync_common::wire::fingerprint::{Fingerprint, WriteBody};
use shelfsync_common::{EventId, EventMetadata, ExpectedVersion, IdKey, InventoryCommand, Origin, StoreId};
use time::OffsetDateTime;
use uuid::Uuid;

/// The answers of every till write: 201 (new) or 200 (a retry, `replayed: true`) with the
/// [`LocalWriteResult`].
pub struct WriteAnswers;

impl utoipa::IntoResponses for WriteAnswers {
    fn responses() -> std::collections::BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::response::Response>> {
        shelfsync_common::server::openapi::write_answers("LocalWriteResult", &[])
    }
}

/// The caller and the request headers a write needs.
pub struct WriteContext {
    /// Who is writing.
    pub till: Till,
    idempotency_key: Option<String>,
    correlation_id: Uuid,
    if_match: bool,
    id_key: IdKey,
    over_share: OverShare,
}

impl FromRequestParts<AppState> for WriteContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let till = Till::from_request_parts(parts, state).await?;
        let headers = WriteHeaders::parse(&parts.headers).map_err(|bad| ApiError::bad_request(bad.code, bad.detail))?;
        Ok(Self {
            till,
            idempotency_key: headers.idempotency_key,
            correlation_id: headers.correlation_id.unwrap_or_else(Uuid::now_v7),
            if_match: headers.if_match.is_some(),
            id_key: state.local.id_key().clone(),
            over_share: state.config.allocations.over_share,
        })
    }
}

impl WriteContext {
    /// Builds the store's command. `route` and `request` (the body, or the path's id with
    /// the body) identify the request for idempotency.
    pub fn command(
        &self,
        store_id: StoreId,
        target: Target,
        command: InventoryCommand,
        expected: Option<ExpectedVersion>,
        route: &str,
        request: &impl WriteBody,
    ) -> Result<LocalCommand, ApiError> {
        if self.if_match || expected.is_some_and(|e| e != ExpectedVersion::Any) {
            return Err(ApiError::unprocessable(
                "expected_version_unsupported",
                "the store agent records the till's facts in order and takes no If-Match or expected_version; \
                 leave them out (or send \"any\")",
            ));
        }
        let actor = self.till.actor();
        let event_id = request
            .event_id()
            .or_else(|| {
                let scope = idempotency_scope(store_id, &actor);
                self.idempotency_key
                    .as_deref()
                    .map(|key| self.id_key.event_id(&scope, key))
            })
            .unwrap_or_else(EventId::new_v7);
        Ok(LocalCommand {
            target,
            command,
            event_id,
            idempotency: Some((idempotency_record_key(event_id), Fingerprint::of_write(route, request))),
            metadata: EventMetadata {
                origin: Origin::Store(store_id),
                actor,
                correlation_id: self.correlation_id,
                causation_id: None,
                occurred_at: OffsetDateTime::now_utc(),
                recorded_at: None,
            },
            over_share: self.over_share,
        })
    }
}

/// The scope an `Idempotency-Key` is derived in: this store and the caller.
pub fn idempotency_scope(store_id: StoreId, actor: &str) -> String {
    format!("edge:{store_id}:{actor}")
}

/// The key of a write's row in the store's idempotency table.
pub fn idempotency_record_key(event_id: EventId) -> String {
    format!("event:{event_id}")
}

/// 201 with the result for a new write, 200 for a repeated one.
pub fn written(result: LocalWriteResult) -> Response {
    let status = if result.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    metrics::counter!(
        "shelfsync_edge_writes_total",
        "type" => result.payload.event_type(),
        "replayed" => if result.replayed { "true" } else { "false" }
    )
    .increment(1);
    (status, Json(result)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_event_ids_are_scoped_by_store_and_till() {
        let (a, b) = (StoreId::new_v7(), StoreId::new_v7());
        let key = IdKey::from_bytes([3; 32]);
        let id = |store, actor| key.event_id(&idempotency_scope(store, actor), "sale-1");
        assert_eq!(id(a, "terminal"), id(a, "terminal"));
        assert_ne!(
            id(a, "terminal"),
            id(b, "terminal"),
            "two stores' tills must not collide at the hub"
        );
        assert_ne!(id(a, "terminal:t1"), id(a, "terminal:t2"));
    }
}
