//! `GET /v1/sync/stream`: the push channel to an agent, as Server-Sent Events.
//!
//! The stream resumes after `Last-Event-ID` (or `?after=`), exclusive: it replays from
//! the store, sends `caught-up`, then goes live. Each `event` has the event's position as
//! its SSE id; a `progress` event (at most one a second) moves the id past events this
//! store does not see, so an idle store's cursor still reaches the head. A pump task feeds
//! each connection through a buffer of `sync.push_buffer_events` events and waits for room
//! in it: memory per connection is the buffer plus one page of the feed (a pump that waits
//! stops reading the bus, and its feed re-reads the store when it resumes), and an agent
//! that leaves the buffer full for [`SLOW_AGENT_STALL`] is dropped (it resumes by
//! reconnecting). A burst or a replay longer than the buffer therefore never drops an
//! agent that reads.
//!
//! Fan-out cost: an event's SSE frame is encoded once for every stream
//! ([`crate::bus::LiveEvent::frame`]) and the feed's pages share the bus's batches; on
//! each wake-up a pump takes every batch the bus already holds and queues their frames as
//! one body chunk (one write for many events), up to the buffer's size.
//! The stream ends when the store's token is revoked and when the hub shuts down. A store
//! may have at most `sync.max_push_streams_per_store` open at once (an agent needs one);
//! one more is `429 too_many_streams`.

use super::auth::StoreAgent;
use super::error::ApiError;
use super::AppState;
use crate::fleet::PushGuard;
use crate::sse;
use crate::store::EventFeed;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use shelfsync_common::server::extract::ApiQuery;
use shelfsync_common::server::failure::Reject;
use shelfsync_common::wire::sync::{CaughtUp, Progress, SSE_CAUGHT_UP, SSE_PROGRESS};
use shelfsync_common::StoreId;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

/// Most time between a cursor move past invisible events and the `progress` that says so.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// An agent whose buffer stays full this long (it takes no message) is dropped as too slow.
pub const SLOW_AGENT_STALL: Duration = Duration::from_secs(5);
/// Most bytes of frames a pump gathers into one body chunk.
const CHUNK_BYTES: usize = 256 * 1024;

/// Refuses a pull's or a stream's cursor past the log's head as [`ApiError::CursorAhead`]: the hub was restored
/// from a backup older than the agent's cursor. The bus's head may trail the stored log
/// for a moment (a commit not yet published, or another hub on the same PostgreSQL
/// database), so a cursor past it is checked against the stored head before it is refused.
pub(super) async fn refuse_cursor_ahead(state: &AppState, after: u64, head: u64) -> Result<(), ApiError> {
    if after <= head {
        return Ok(());
    }
    let stored = state.log.stored_head().await?;
    if after <= stored {
        return Ok(());
    }
    tracing::warn!(
        after,
        head = stored,
        "an agent's cursor is past the log's head: the hub was restored from an older backup"
    );
    metrics::counter!("shelfsync_hub_sync_cursor_ahead_total").increment(1);
    Err(ApiError::CursorAhead { after, head: stored })
}

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
        (status = 409, description = "cursor_ahead: the resume position is past the hub's head (the hub was restored from an older backup); the head is in X-Shelfsync-Head"),
        (status = 429, description = "too_many_streams: this store has as many push streams open as it may")))]
pub async fn stream(
    State(state): State<AppState>,
    StoreAgent(store, token): StoreAgent,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Response, ApiError> {
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
    refuse_cursor_ahead(&state, after, state.log.bus().head()).await?;
    let limit = state.config.sync.max_push_streams_per_store;
    let presence = state
        .fleet
        .push_opened(store, limit)
        .map_err(|open| ApiError::TooManyStreams { open, limit })?;
    let budget = state.config.sync.push_buffer_events.clamp(1, Semaphore::MAX_PERMITS);
    let (chunks, received) = mpsc::unbounded_channel();
    let pump = Pump {
        store,
        token,
        feed: state.log.feed(after),
        out: Out {
            chunks,
            room: Arc::new(Semaphore::new(budget)),
            budget,
        },
        revocations: state.fleet.revocations(),
        stopping: state.stopping.clone(),
        keep_alive: Duration::from_secs(state.config.sync.keep_alive_secs.max(1)),
        _presence: presence,
    };
    tracing::info!(%store, after, "push stream opened");
    tokio::spawn(pump.run());
    // Taking a chunk into the response body frees its room in the buffer.
    let body = UnboundedReceiverStream::new(received).map(|(chunk, _room): Chunk| Ok::<_, Infallible>(chunk));
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// Frames for the body, and the buffer room (one permit per event) they hold until the
/// body takes them.
type Chunk = (Bytes, OwnedSemaphorePermit);

/// One connection's buffer: chunks of frames, at most `budget` events in all.
struct Out {
    chunks: mpsc::UnboundedSender<Chunk>,
    room: Arc<Semaphore>,
    budget: usize,
}

/// Moves one connection's events from the feed into its bounded buffer.
struct Pump {
    store: StoreId,
    /// The token the stream was opened with: it ends when that token is revoked.
    token: uuid::Uuid,
    feed: EventFeed,
    out: Out,
    revocations: broadcast::Receiver<(StoreId, uuid::Uuid)>,
    stopping: watch::Receiver<bool>,
    keep_alive: Duration,
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

/// Frames gathered for one body chunk.
#[derive(Default)]
struct Gathered {
    bytes: Vec<u8>,
    events: usize,
    /// The position of the last frame.
    last: u64,
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
            token,
            feed,
            out,
            revocations,
            stopping,
            keep_alive,
            ..
        } = self;
        let mut caught_up = false;
        let mut sent_to = feed.cursor();
        let mut progress_due: Option<Instant> = None;
        // The keep-alive timer is re-armed only when it fires, from the last time anything
        // was queued: no timer work per event.
        let mut last_queued = Instant::now();
        let alive = tokio::time::sleep(*keep_alive);
        tokio::pin!(alive);
        let mut lanes = Lanes {
            out,
            revocations,
            stopping,
            opened_with: (*store, *token),
        };
        loop {
            if !caught_up && feed.caught_up() {
                caught_up = true;
                let head = feed.cursor();
                let marker = marker(SSE_CAUGHT_UP, head, &CaughtUp { head });
                if let Err(end) = lanes.queue(marker, 1).await {
                    return end;
                }
                last_queued = Instant::now();
                sent_to = head;
                progress_due = None;
            }
            let page = tokio::select! {
                revoked = lanes.revocations.recv() => match revocation_ends(revoked, (*store, *token)) {
                    Some(end) => return end,
                    None => continue,
                },
                _ = lanes.stopping.wait_for(|stopping| *stopping) => return End::ShuttingDown,
                () = lanes.out.chunks.closed() => return End::ClientGone,
                () = &mut alive => {
                    let idle_until = last_queued + *keep_alive;
                    if Instant::now() >= idle_until {
                        // A full buffer needs no keep-alive: data is waiting to go.
                        if let Ok(room) = lanes.out.room.clone().try_acquire_owned() {
                            let _ = lanes.out.chunks.send((Bytes::from_static(sse::KEEP_ALIVE), room));
                        }
                        last_queued = Instant::now();
                    }
                    alive.as_mut().reset(last_queued + *keep_alive);
                    continue;
                }
                () = sleep_until_some(progress_due) => None,
                next = feed.next_page() => match next {
                    None => return End::ShuttingDown,
                    Some(Err(error)) => return End::StoreFailed(error.to_string()),
                    Some(Ok(page)) => Some(page),
                },
            };
            let Some(mut page) = page else {
                let position = feed.cursor();
                let progress = marker(SSE_PROGRESS, position, &Progress { position });
                if let Err(end) = lanes.queue(progress, 1).await {
                    return end;
                }
                last_queued = Instant::now();
                sent_to = position;
                progress_due = None;
                continue;
            };
            // Every batch the bus already holds goes into the same chunk(s).
            let mut gathered = Gathered::default();
            loop {
                for event in page.iter().filter(|e| e.envelope().stream.visible_to(*store)) {
                    let frame = match event.frame() {
                        Ok(frame) => frame,
                        Err(error) => return End::StoreFailed(error.to_owned()),
                    };
                    gathered.bytes.extend_from_slice(frame);
                    gathered.events += 1;
                    gathered.last = event.position();
                    if gathered.events >= lanes.out.budget || gathered.bytes.len() >= CHUNK_BYTES {
                        if let Err(end) = lanes.send(&mut gathered, &mut sent_to).await {
                            return end;
                        }
                        last_queued = Instant::now();
                    }
                }
                match feed.ready() {
                    Some(more) => page = more,
                    None => break,
                }
            }
            if gathered.events > 0 {
                if let Err(end) = lanes.send(&mut gathered, &mut sent_to).await {
                    return end;
                }
                last_queued = Instant::now();
            }
            if caught_up && sent_to < feed.cursor() && progress_due.is_none() {
                progress_due = Some(Instant::now() + PROGRESS_EVERY);
            }
        }
    }
}

/// What queueing into the buffer watches besides the room in it.
struct Lanes<'a> {
    out: &'a Out,
    revocations: &'a mut broadcast::Receiver<(StoreId, uuid::Uuid)>,
    stopping: &'a mut watch::Receiver<bool>,
    /// The stream's store and token.
    opened_with: (StoreId, uuid::Uuid),
}

impl Lanes<'_> {
    /// Queues the gathered frames as one chunk and empties `gathered`.
    async fn send(&mut self, gathered: &mut Gathered, sent_to: &mut u64) -> Result<(), End> {
        let taken = std::mem::take(gathered);
        self.queue(Ok(Bytes::from(taken.bytes)), taken.events).await?;
        *sent_to = taken.last;
        metrics::counter!("shelfsync_hub_sse_events_pushed_total").increment(taken.events as u64);
        Ok(())
    }

    /// Queues one chunk of `events` messages, waiting for room for them in the buffer.
    /// Not dropping on the first full buffer matters: a replay, or one upload's worth of
    /// live events, is often longer than the buffer, and an agent dropped for that would
    /// reconnect, replay and be dropped again. Only an agent that takes nothing for
    /// [`SLOW_AGENT_STALL`] is dropped; revocation and shutdown still end the stream at
    /// once.
    async fn queue(&mut self, chunk: Result<Bytes, End>, events: usize) -> Result<(), End> {
        let chunk = chunk?;
        // At most `budget` events are gathered, so the permits always exist.
        let wanted = u32::try_from(events.min(self.out.budget)).unwrap_or(u32::MAX);
        let room = tokio::time::timeout(SLOW_AGENT_STALL, self.out.room.clone().acquire_many_owned(wanted));
        tokio::pin!(room);
        loop {
            tokio::select! {
                room = &mut room => return match room {
                    Ok(Ok(room)) => self.out.chunks.send((chunk, room)).map_err(|_| End::ClientGone),
                    Ok(Err(_)) => Err(End::ClientGone),
                    Err(_) => Err(End::TooSlow),
                },
                () = self.out.chunks.closed() => return Err(End::ClientGone),
                revoked = self.revocations.recv() => if let Some(end) = revocation_ends(revoked, self.opened_with) {
                    return Err(end);
                },
                _ = self.stopping.wait_for(|stopping| *stopping) => return Err(End::ShuttingDown),
            }
        }
    }
}

/// One `caught-up` or `progress` message whose id is `position`.
fn marker(name: &str, position: u64, data: &impl serde::Serialize) -> Result<Bytes, End> {
    sse::frame(name, position, data)
        .map(Bytes::from)
        .map_err(|e| End::StoreFailed(e.to_string()))
}

/// Whether a revocation signal ends the stream opened for a store with a token.
fn revocation_ends(
    signal: Result<(StoreId, uuid::Uuid), broadcast::error::RecvError>,
    opened_with: (StoreId, uuid::Uuid),
) -> Option<End> {
    match signal {
        Ok(revoked) if revoked == opened_with => Some(End::Revoked),
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
