//! The follower: keeps the local store's hub-confirmed state up to date.
//!
//! Normally it holds the hub's push stream (`GET /v1/sync/stream`, Server-Sent Events)
//! open with `Last-Event-ID` = the store's cursor, and applies what arrives: `event`s
//! (a burst is coalesced into one `apply_hub` call), `caught-up` and `progress` (they move
//! the cursor past events this store does not see). When the stream drops it reconnects
//! at once (with back-off if it keeps dropping); the hub replays from the cursor, and
//! applying is idempotent for positions already applied.
//!
//! When the stream cannot be opened (hub down, link cut, stream refused), it pulls
//! (`GET /v1/sync/events`) page by page until caught up, every `sync.pull_interval_secs`,
//! and tries the stream again each time, all through the breaker.

use super::client::HubError;
use super::link::CallError;
use super::{meters, or_stop, sleep_or_stop, stopped, Ctx, SyncError};
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{FutureExt, Stream, StreamExt};
use shelfsync_common::sync::{CaughtUp, Progress, MAX_PULL_LIMIT, SSE_CAUGHT_UP, SSE_EVENT, SSE_PROGRESS};
use shelfsync_common::EventEnvelope;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Most events applied in one store transaction when a burst arrives.
const MAX_COALESCED: usize = 1000;
/// A stream that stayed up this long drops for a reason other than a broken hub: its
/// reconnect back-off starts afresh.
const STABLE_STREAM: Duration = Duration::from_secs(60);

/// Runs until `stopping`.
pub(super) async fn run(ctx: Arc<Ctx>, mut stopping: watch::Receiver<bool>) -> Result<(), SyncError> {
    if !ctx.wait_bootstrapped(&mut stopping).await {
        return Ok(());
    }
    let pull_interval = Duration::from_secs(ctx.config.sync.pull_interval_secs);
    let mut reconnect = ctx.retry_backoff();
    let mut opened_before = false;
    let mut down_since: Option<Instant> = None;
    loop {
        if !ctx.link.ready(&mut stopping).await {
            return Ok(());
        }
        let cursor = ctx.store.read(|view| view.sync.cursor);
        let opened = ctx.link.call("open the push stream", ctx.client.open_stream(cursor));
        let Some(opened) = or_stop(&mut stopping, opened).await else {
            return Ok(());
        };
        match opened {
            Ok(response) => {
                if opened_before {
                    metrics::counter!(meters::STREAM_RECONNECTS).increment(1);
                }
                opened_before = true;
                match down_since.take() {
                    Some(since) => tracing::info!(cursor, down_for = ?since.elapsed(), "push stream connected again"),
                    None => tracing::info!(cursor, "push stream connected"),
                }
                ctx.status.update(|s| s.push_connected = true);
                let started = Instant::now();
                let end = consume(&ctx, response.bytes_stream().eventsource(), &mut stopping).await;
                ctx.status.update(|s| s.push_connected = false);
                match end? {
                    End::Stopping => return Ok(()),
                    End::Closed(reason) => {
                        if started.elapsed() >= STABLE_STREAM {
                            reconnect = ctx.retry_backoff();
                        }
                        let delay = reconnect.next().unwrap_or(pull_interval);
                        tracing::warn!(%reason, reconnect_in = ?delay, "push stream ended; reconnecting");
                        down_since = Some(Instant::now());
                        if !sleep_or_stop(delay, &mut stopping).await {
                            return Ok(());
                        }
                    }
                }
            }
            // Nothing was sent; `ready` waits for the probe.
            Err(CallError::Open { .. }) => {}
            Err(CallError::Hub(error)) => {
                if down_since.is_none() {
                    down_since = Some(Instant::now());
                    tracing::warn!(%error, pull_every = ?pull_interval,
                        "push stream unavailable; pulling from the hub until it is back");
                } else {
                    tracing::debug!(%error, "push stream still unavailable");
                }
                catch_up(&ctx, &mut stopping).await?;
                // Try again after the pull interval, or as soon as the hub answers again
                // (another task's call closed the breaker), whichever comes first.
                tokio::select! {
                    () = stopped(&mut stopping) => return Ok(()),
                    () = tokio::time::sleep(pull_interval) => {}
                    () = ctx.link.reopened_and_closed() => {}
                }
            }
        }
    }
}

/// Pulls pages after the cursor until caught up (`next_cursor == head`). Returns whether
/// it got there; a failed pull ends the round (the next comes after the pull interval).
async fn catch_up(ctx: &Ctx, stopping: &mut watch::Receiver<bool>) -> Result<bool, SyncError> {
    loop {
        let cursor = ctx.store.read(|view| view.sync.cursor);
        let pulled = ctx.link.call("pull", ctx.client.pull(cursor, MAX_PULL_LIMIT));
        let Some(pulled) = or_stop(stopping, pulled).await else {
            return Ok(false);
        };
        let page = match pulled {
            Ok(page) => page,
            Err(error) => {
                metrics::counter!(meters::PULLS, "result" => "failed").increment(1);
                if let CallError::Hub(error) = error {
                    tracing::warn!(%error, cursor, "pull failed; trying again after the pull interval");
                }
                return Ok(false);
            }
        };
        metrics::counter!(meters::PULLS, "result" => "ok").increment(1);
        let (events, next_cursor, head) = (page.events.len(), page.next_cursor, page.head);
        let report = ctx.store.apply_hub(page.events, next_cursor, head).await?;
        metrics::counter!(meters::EVENTS_APPLIED, "via" => "pull").increment(report.applied as u64);
        meters::record_store(&ctx.store);
        tracing::debug!(
            cursor,
            events,
            next_cursor,
            head,
            confirmed_own = report.confirmed_own,
            "pulled"
        );
        if next_cursor > head {
            // The heartbeat reports it (once it is more than a race with a commit).
            tracing::debug!(cursor, head, "the hub's head is behind the cursor");
            return Ok(false);
        }
        if report.cursor >= head {
            return Ok(true);
        }
        if report.cursor <= cursor {
            // No progress although the hub is ahead: do not spin on it.
            tracing::warn!(
                cursor,
                head,
                "a pull did not move the cursor; trying again after the pull interval"
            );
            return Ok(false);
        }
    }
}

/// Why a stream stopped being read.
#[derive(Debug)]
enum End {
    Stopping,
    Closed(String),
}

/// What the messages read so far ask the store to do.
#[derive(Default)]
struct Pending {
    events: Vec<EventEnvelope>,
    cursor: u64,
    head: u64,
}

/// Reads the stream, applying what it says, until it ends or `stopping`.
async fn consume<S, E>(ctx: &Ctx, messages: S, stopping: &mut watch::Receiver<bool>) -> Result<End, SyncError>
where
    S: Stream<Item = Result<Event, EventStreamError<E>>> + Send,
    E: std::error::Error,
{
    let mut messages = std::pin::pin!(messages);
    let mut caught_up = false;
    loop {
        let first = tokio::select! {
            biased;
            () = stopped(stopping) => return Ok(End::Stopping),
            next = messages.next() => next,
        };
        let mut pending = Pending {
            cursor: ctx.store.read(|view| view.sync.cursor),
            ..Pending::default()
        };
        let mut end = read(ctx, first, &mut pending, &mut caught_up);
        // Coalesce what has already arrived into one store transaction.
        while end.is_none() && pending.events.len() < MAX_COALESCED {
            match messages.next().now_or_never() {
                Some(next) => end = read(ctx, next, &mut pending, &mut caught_up),
                None => break,
            }
        }
        if !pending.events.is_empty() || pending.head > 0 {
            let Pending { events, cursor, head } = pending;
            let report = ctx.store.apply_hub(events, cursor, head).await?;
            metrics::counter!(meters::EVENTS_APPLIED, "via" => "push").increment(report.applied as u64);
            meters::record_store(&ctx.store);
        }
        if let Some(end) = end {
            return Ok(end);
        }
    }
}

/// Takes one message into `pending`; `Some` when the stream is over.
fn read<E: std::error::Error>(
    ctx: &Ctx,
    message: Option<Result<Event, EventStreamError<E>>>,
    pending: &mut Pending,
    caught_up: &mut bool,
) -> Option<End> {
    let message = match message {
        None => return Some(End::Closed("the hub closed the stream".into())),
        Some(Err(EventStreamError::Transport(error))) => {
            return Some(End::Closed(format!("connection: {}", super::client::chain(&error))))
        }
        Some(Err(error)) => return Some(broken(ctx, format!("unreadable event stream: {error}"))),
        Some(Ok(message)) => message,
    };
    let Ok(id) = message.id.trim().parse::<u64>() else {
        return Some(broken(ctx, format!("an SSE id is not a position: {:?}", message.id)));
    };
    match message.event.as_str() {
        SSE_EVENT => match serde_json::from_str::<EventEnvelope>(&message.data) {
            Ok(event) if event.position == id => {
                pending.cursor = pending.cursor.max(id);
                pending.head = pending.head.max(id);
                pending.events.push(event);
            }
            Ok(event) => {
                return Some(broken(
                    ctx,
                    format!("event at position {} sent with id {id}", event.position),
                ));
            }
            Err(error) => return Some(broken(ctx, format!("an event's data cannot be read: {error}"))),
        },
        SSE_CAUGHT_UP => match serde_json::from_str::<CaughtUp>(&message.data) {
            Ok(CaughtUp { head }) => {
                pending.cursor = pending.cursor.max(head);
                pending.head = pending.head.max(head);
                if !*caught_up {
                    *caught_up = true;
                    tracing::info!(head, "push stream caught up; following live");
                }
            }
            Err(error) => return Some(broken(ctx, format!("a caught-up marker cannot be read: {error}"))),
        },
        SSE_PROGRESS => match serde_json::from_str::<Progress>(&message.data) {
            Ok(Progress { position }) => {
                pending.cursor = pending.cursor.max(position);
                pending.head = pending.head.max(position);
            }
            Err(error) => return Some(broken(ctx, format!("a progress marker cannot be read: {error}"))),
        },
        other => tracing::debug!(event = other, id, "ignoring an unknown push message"),
    }
    None
}

/// A stream that breaks the protocol: counted against the link, then reconnected.
fn broken(ctx: &Ctx, reason: String) -> End {
    let error = HubError::Decode(reason.clone());
    tracing::warn!(%error, "the push stream broke the sync protocol");
    ctx.link.report_failure("push stream", &error);
    End::Closed(reason)
}
