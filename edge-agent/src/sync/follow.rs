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

use super::hub::{CallError, HubError};
use super::{meters, or_stop, sleep_or_stop, stopped, Ctx, SyncError};
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{FutureExt, Stream, StreamExt};
use shelfsync_common::wire::sync::{CaughtUp, Progress, MAX_PULL_LIMIT, SSE_CAUGHT_UP, SSE_EVENT, SSE_PROGRESS};
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
        if !ctx.hub.ready(&mut stopping).await {
            return Ok(());
        }
        let cursor = ctx.local.read(|view| view.sync.cursor);
        let opened = ctx.hub.open_stream(cursor);
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
                    () = ctx.hub.reopened_and_closed() => {}
                }
            }
        }
    }
}

/// Pulls pages after the cursor until caught up (`next_cursor == head`). Returns whether
/// it got there; a failed pull ends the round (the next comes after the pull interval).
async fn catch_up(ctx: &Ctx, stopping: &mut watch::Receiver<bool>) -> Result<bool, SyncError> {
    loop {
        let cursor = ctx.local.read(|view| view.sync.cursor);
        let pulled = ctx.hub.pull(cursor, MAX_PULL_LIMIT);
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
        let report = ctx.local.apply_hub(page.events, next_cursor, head).await?;
        metrics::counter!(meters::EVENTS_APPLIED, "via" => "pull").increment(report.applied as u64);
        meters::record_store(&ctx.local);
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
            cursor: ctx.local.read(|view| view.sync.cursor),
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
            let report = ctx.local.apply_hub(events, cursor, head).await?;
            metrics::counter!(meters::EVENTS_APPLIED, "via" => "push").increment(report.applied as u64);
            meters::record_store(&ctx.local);
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
            return Some(End::Closed(format!("connection: {}", super::hub::chain(&error))))
        }
        Some(Err(error)) => return Some(broken(ctx, format!("unreadable event stream: {error}"))),
        Some(Ok(message)) => message,
    };
    let Ok(id) = message.id.trim().parse::<u64>() else {
        return Some(broken(ctx, format!("an SSE id is not a position: {:?}", message.id)));
    };
    match message.event.as_str() {
        SSE_EVENT => {
            if let Err(reason) = take_event(id, &message.data, pending) {
                return Some(broken(ctx, reason));
            }
        }
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

/// Takes the `event` message with SSE id `id` into `pending`. An event whose position is
/// not its id breaks the protocol (`Err`). One this agent cannot read is skipped with an
/// alarm and the cursor moves past it: reconnecting would only bring the same event back
/// for ever (the pull fallback skips it the same way).
fn take_event(id: u64, data: &str, pending: &mut Pending) -> Result<(), String> {
    match serde_json::from_str::<EventEnvelope>(data) {
        Ok(event) if event.position != id => Err(format!("event at position {} sent with id {id}", event.position)),
        Ok(event) => {
            pending.events.push(event);
            pending.cursor = pending.cursor.max(id);
            pending.head = pending.head.max(id);
            Ok(())
        }
        Err(error) => {
            meters::skip_unreadable(Some(id), &error.to_string());
            pending.cursor = pending.cursor.max(id);
            pending.head = pending.head.max(id);
            Ok(())
        }
    }
}

/// A stream that breaks the protocol: counted against the link, then reconnected.
fn broken(ctx: &Ctx, reason: String) -> End {
    let error = HubError::Decode(reason.clone());
    tracing::warn!(%error, "the push stream broke the sync protocol");
    ctx.hub.report_failure("push stream", &error);
    End::Closed(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_data(position: u64, event_type: &str) -> String {
        serde_json::json!({
            "event_id": uuid::Uuid::now_v7(), "stream": {"product_id": uuid::Uuid::now_v7()},
            "stream_version": 1, "position": position, "schema_version": 1, "type": event_type,
            "data": {"id": uuid::Uuid::now_v7(), "sku": "S", "name": "N", "price_minor": 1},
            "metadata": {"origin": "hub", "actor": "a", "correlation_id": uuid::Uuid::nil(),
                         "occurred_at": "2026-01-01T00:00:00Z"},
        })
        .to_string()
    }

    #[test]
    fn a_pushed_event_this_agent_cannot_read_is_skipped_and_the_cursor_moves_past_it() {
        let mut pending = Pending::default();
        take_event(4, &event_data(4, "ProductRegistered"), &mut pending).unwrap();
        take_event(5, &event_data(5, "StockTeleported"), &mut pending).unwrap();
        assert_eq!(pending.events.len(), 1, "only the readable one is applied");
        assert_eq!(
            (pending.cursor, pending.head),
            (5, 5),
            "the cursor is past the unreadable one"
        );
        let mismatch = take_event(7, &event_data(6, "ProductRegistered"), &mut pending);
        assert!(mismatch.is_err(), "an id that is not the position breaks the protocol");
    }
}
