//! `GET /v1/sync/stream`: the push channel to an agent, as Server-Sent Events.
//!
//! The stream resumes after `Last-Event-ID` (or `?after=`), exclusive: it replays from
//! the store, sends `caught-up`, then goes live. Each `event` has the event's position as
//! its SSE id; a `progress` event (at most one a second) moves the id past events this
//! store does not see, so an idle store's cursor still reaches the head. A pump task feeds
//! each connection through a bounded buffer and waits for room in it: memory per
//! connection is the buffer plus one page of the feed (a pump that waits stops reading
//! the bus, and its feed re-reads the store when it resumes), and an agent that leaves
//! the buffer full for [`SLOW_AGENT_STALL`] is dropped (it resumes by reconnecting). A
//! burst or a replay longer than the buffer therefore never drops an agent that reads.
//! The stream ends when the store's token is revoked and when the hub shuts down. A store
//! may have at most `sync.max_push_streams_per_store` open at once (an agent needs one);
//! one more is `429 too_many_streams`.

use super::auth::StoreAgent;
use super::error::ApiError;
use super::AppState;
use crate::fleet::PushGuard;
use crate::store::EventFeed;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use shelfsync_common::server::extract::ApiQuery;
use shelfsync_common::server::failure::Reject;
use shelfsync_common::wire::sync::{CaughtUp, Progress, SSE_CAUGHT_UP, SSE_EVENT, SSE_PROGRESS};
use shelfsync_common::StoreId;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

/// Most time between a cursor move past invisible events and the `progress` that says so.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// An agent whose buffer stays full this long (it takes no message) is dropped as too slow.
pub const SLOW_AGENT_STALL: Duration = Duration::from_secs(5);

/// `?after=` for [`stream`] (the `Last-Event-ID` header wins).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Resume after this position (exclusive).
    #[serde(
        default,
        deserialize_with = "shelfsync_common::wire::sync::bounded::optional_position"
    )]
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_i64)]
    pub after: Option<u64>,
}

/// The SSE resume header, for the OpenAPI document.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct LastEventId {
    /// Resume after this position (exclusive); wins over `?after=`.
    #[param(rename = "Last-Event-ID", nullable = false, pattern = "^[0-9]{1,19}$")]
    pub last_event_id: Option<String>,
}

/// Follow the events this store may see, live (`Last-Event-ID` or `?after=` to resume).
#[utoipa::path(get, path = "/v1/sync/stream", tag = "sync", params(StreamQuery, LastEventId),
    responses((status = 200, description = "an endless text/event-stream of `event` (an EventEnvelope), `caught-up` and `progress` events, with keep-alive comments",
        content_type = "text/event-stream"),
        (status = 400, description = "invalid_last_event_id"), (status = 403, description = "forbidden: the sync routes take a store token"),
        (status = 429, description = "too_many_streams: this store has as many push streams open as it may")))]
pub async fn stream(
    State(state): State<AppState>,
    StoreAgent(store): StoreAgent,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = match headers.get("last-event-id").map(|v| v.to_str().map(str::trim)) {
        Some(Ok(text)) => shelfsync_common::wire::sync::parse_position(text)
            .map_err(|detail| ApiError::bad_request("invalid_last_event_id", format!("Last-Event-ID {detail}")))?,
        Some(Err(_)) => {
            return Err(ApiError::bad_request(
                "invalid_last_event_id",
                "Last-Event-ID is not text",
            ))
        }
        None => query.after.unwrap_or(0),
    };
    let limit = state.config.sync.max_push_streams_per_store;
    let presence = state
        .fleet
        .push_opened(store, limit)
        .map_err(|open| ApiError::TooManyStreams { open, limit })?;
    let (events, received) = mpsc::channel(state.config.sync.push_buffer_events.max(1));
    let pump = Pump {
        store,
        feed: state.log.feed(after),
        events,
        revocations: state.fleet.revocations(),
        stopping: state.stopping.clone(),
        _presence: presence,
    };
    tracing::info!(%store, after, "push stream opened");
    tokio::spawn(pump.run());
    let keep_alive = Duration::from_secs(state.config.sync.keep_alive_secs.max(1));
    Ok(Sse::new(ReceiverStream::new(received).map(Ok)).keep_alive(KeepAlive::new().interval(keep_alive)))
}

/// Moves one connection's events from the feed into its bounded buffer.
struct Pump {
    store: StoreId,
    feed: EventFeed,
    events: mpsc::Sender<Event>,
    revocations: broadcast::Receiver<StoreId>,
    stopping: watch::Receiver<bool>,
    _presence: PushGuard,
}

/// Why a pump stopped.
#[derive(Debug)]
enum End {
    ClientGone,
    TooSlow,
    Revoked,
    ShuttingDown,
    StoreFailed(String),
}

impl Pump {
    async fn run(mut self) {
        let end = self.pump().await;
        match &end {
            End::TooSlow => {
                metrics::counter!("shelfsync_hub_sse_dropped_slow_total").increment(1);
                tracing::warn!(store = %self.store, cursor = self.feed.cursor(), "push stream dropped: the agent is not keeping up");
            }
            End::StoreFailed(error) => tracing::warn!(store = %self.store, %error, "push stream ended on a read error"),
            End::ClientGone | End::Revoked | End::ShuttingDown => {
                tracing::info!(store = %self.store, reason = ?end, "push stream closed");
            }
        }
    }

    async fn pump(&mut self) -> End {
        let Pump {
            store,
            feed,
            events,
            revocations,
            stopping,
            ..
        } = self;
        let mut caught_up = false;
        let mut sent_to = feed.cursor();
        let mut progress_due: Option<Instant> = None;
        loop {
            if !caught_up && feed.caught_up() {
                caught_up = true;
                let head = feed.cursor();
                let marker = encode(SSE_CAUGHT_UP, head, &CaughtUp { head });
                if let Err(end) = queue(events, revocations, stopping, *store, marker).await {
                    return end;
                }
                sent_to = head;
                progress_due = None;
            }
            let batch = tokio::select! {
                revoked = revocations.recv() => match revocation_ends(revoked, *store) {
                    Some(end) => return end,
                    None => continue,
                },
                _ = stopping.wait_for(|stopping| *stopping) => return End::ShuttingDown,
                () = events.closed() => return End::ClientGone,
                () = sleep_until_some(progress_due) => None,
                next = feed.next() => match next {
                    None => return End::ShuttingDown,
                    Some(Err(error)) => return End::StoreFailed(error.to_string()),
                    Some(Ok(batch)) => Some(batch),
                },
            };
            let Some(batch) = batch else {
                let position = feed.cursor();
                let progress = encode(SSE_PROGRESS, position, &Progress { position });
                if let Err(end) = queue(events, revocations, stopping, *store, progress).await {
                    return end;
                }
                sent_to = position;
                progress_due = None;
                continue;
            };
            for event in batch.iter().filter(|e| e.stream.visible_to(*store)) {
                let message = encode(SSE_EVENT, event.position, event);
                if let Err(end) = queue(events, revocations, stopping, *store, message).await {
                    return end;
                }
                sent_to = event.position;
                metrics::counter!("shelfsync_hub_sse_events_pushed_total").increment(1);
            }
            if caught_up && sent_to < feed.cursor() && progress_due.is_none() {
                progress_due = Some(Instant::now() + PROGRESS_EVERY);
            }
        }
    }
}

/// One SSE message whose id is `position`.
fn encode(name: &str, position: u64, data: &impl serde::Serialize) -> Result<Event, End> {
    Event::default()
        .event(name)
        .id(position.to_string())
        .json_data(data)
        .map_err(|e| End::StoreFailed(e.to_string()))
}

/// Queues one message, waiting for room in the buffer. Not dropping on the first full
/// buffer matters: a replay, or one upload's worth of live events, is often longer than
/// the buffer, and an agent dropped for that would reconnect, replay and be dropped
/// again. Only an agent that takes nothing for [`SLOW_AGENT_STALL`] is dropped;
/// revocation and shutdown still end the stream at once.
async fn queue(
    events: &mpsc::Sender<Event>,
    revocations: &mut broadcast::Receiver<StoreId>,
    stopping: &mut watch::Receiver<bool>,
    store: StoreId,
    event: Result<Event, End>,
) -> Result<(), End> {
    let event = event?;
    let room = tokio::time::timeout(SLOW_AGENT_STALL, events.reserve());
    tokio::pin!(room);
    loop {
        tokio::select! {
            room = &mut room => return match room {
                Ok(Ok(permit)) => {
                    permit.send(event);
                    Ok(())
                }
                Ok(Err(_)) => Err(End::ClientGone),
                Err(_) => Err(End::TooSlow),
            },
            revoked = revocations.recv() => if let Some(end) = revocation_ends(revoked, store) {
                return Err(end);
            },
            _ = stopping.wait_for(|stopping| *stopping) => return Err(End::ShuttingDown),
        }
    }
}

/// Whether a revocation signal ends `store`'s stream.
fn revocation_ends(signal: Result<StoreId, broadcast::error::RecvError>, store: StoreId) -> Option<End> {
    match signal {
        Ok(revoked) if revoked == store => Some(End::Revoked),
        Ok(_) => None,
        // Missed signals may include ours: end, and let the agent re-authenticate.
        Err(broadcast::error::RecvError::Lagged(_)) => Some(End::Revoked),
        Err(broadcast::error::RecvError::Closed) => Some(End::ShuttingDown),
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
