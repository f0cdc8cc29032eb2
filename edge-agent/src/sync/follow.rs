//! The follower: keeps the local store's hub-confirmed state up to date.
//!
//! Normally it holds the hub's push stream (`GET /v1/sync/stream`, Server-Sent Events)
//! open with `Last-Event-ID` = the store's cursor, and applies what arrives: `event`s,
//! `caught-up` and `progress` (they move the cursor past events this store does not see).
//! Reading and applying overlap: while one batch is being applied (its group commit), the
//! stream goes on being read into the next one (up to [`MAX_COALESCED`] events), so the
//! hub never waits on our fsync and a replay runs at the speed of the slower side, not of
//! the two one after the other. When the stream drops it reconnects at once (with
//! back-off if it keeps dropping); the hub replays from the cursor, and applying is
//! idempotent for positions already applied.
//!
//! Before it opens the stream it catches up by pulling (`GET /v1/sync/events`, pages of
//! up to [`MAX_PULL_LIMIT`] events, the next page fetched while the last is applied, one
//! store transaction per page): an agent far behind (restarted after days offline) gets
//! there many times faster than through one SSE message per event, and one that is
//! current pays one small request.
//!
//! When the stream cannot be opened (hub down, link cut, stream refused), it pulls
//! (`GET /v1/sync/events`) page by page until caught up, the next page fetched while the
//! last one is applied, every `sync.pull_interval_secs`, and tries the stream again each
//! time, all through the breaker.

use super::hub::{CallError, HubError};
use super::restore::Check;
use super::{meters, or_stop, sleep_or_stop, stopped, Ctx, SyncError};
use crate::store::ApplyReport;
use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{FutureExt, Stream, StreamExt};
use shelfsync_common::wire::sync::{CaughtUp, Progress, MAX_PULL_LIMIT, SSE_CAUGHT_UP, SSE_EVENT, SSE_PROGRESS};
use shelfsync_common::EventEnvelope;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Most events read ahead into one store transaction while the last one is applied.
const MAX_COALESCED: usize = 4000;
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
        // The hub restored from an older backup: re-sync before following it (and before
        // the uploader sends anything to it).
        match super::restore::diverged(&ctx).await? {
            Check::Consistent => {
                ctx.log_checked.send_replace(true);
            }
            Check::Diverged(reason) => {
                if !super::restore::recover(&ctx, &reason, &mut stopping).await? {
                    if !sleep_or_stop(pull_interval, &mut stopping).await {
                        return Ok(());
                    }
                    continue;
                }
                ctx.log_checked.send_replace(true);
            }
            // The check's pull failed: check again before following, since the uploader
            // waits for a verdict (following without one would hold the outbox back for as
            // long as the stream stays open).
            Check::Unknown => {
                let delay = reconnect.next().unwrap_or(pull_interval);
                if !sleep_or_stop(delay, &mut stopping).await {
                    return Ok(());
                }
                continue;
            }
        }
        // A failed pull is logged and counted; the stream is tried all the same.
        catch_up(&ctx, &mut stopping).await?;
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
                // The hub may be restarting (restored?): check again before uploading.
                ctx.log_checked.send_replace(false);
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
            // The hub's head is behind the cursor: the check at the top re-syncs.
            Err(error) if super::restore::is_cursor_ahead(&error) => {}
            Err(CallError::Hub(error)) => {
                ctx.log_checked.send_replace(false);
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

/// Pulls pages after the cursor until caught up (`next_cursor == head`), fetching the next
/// page while the last one is applied. Returns whether it got there; a failed pull ends
/// the round (the next comes after the pull interval).
async fn catch_up(ctx: &Ctx, stopping: &mut watch::Receiver<bool>) -> Result<bool, SyncError> {
    let mut cursor = ctx.local.read(|view| view.sync.cursor);
    let Some(Some(mut page)) = or_stop(stopping, pull(ctx, cursor)).await else {
        return Ok(false);
    };
    loop {
        let (events, next_cursor, head) = (page.events.len(), page.next_cursor, page.head);
        tracing::debug!(cursor, events, next_cursor, head, "pulled");
        let apply = ctx.local.apply_hub(page.events, next_cursor, head);
        if next_cursor < head && next_cursor > cursor {
            // More to come: the next page travels while this one is applied.
            let Some((report, next)) = or_stop(stopping, async { tokio::join!(apply, pull(ctx, next_cursor)) }).await
            else {
                return Ok(false);
            };
            record_pulled(ctx, report?);
            let Some(next) = next else {
                return Ok(false);
            };
            (cursor, page) = (next_cursor, next);
            continue;
        }
        let Some(report) = or_stop(stopping, apply).await else {
            return Ok(false);
        };
        record_pulled(ctx, report?);
        if next_cursor > head {
            // A hub older than the `cursor_ahead` answer: the restore check notices.
            tracing::debug!(cursor, head, "the hub's head is behind the cursor");
            return Ok(false);
        }
        if next_cursor < head {
            // No progress although the hub is ahead: do not spin on it.
            tracing::warn!(
                cursor,
                head,
                "a pull did not move the cursor; trying again after the pull interval"
            );
            return Ok(false);
        }
        return Ok(true);
    }
}

/// One pull of the page after `cursor`; `None` when it failed (logged and counted).
async fn pull(ctx: &Ctx, cursor: u64) -> Option<shelfsync_common::wire::sync::PullResponse> {
    match ctx.hub.pull(cursor, MAX_PULL_LIMIT).await {
        Ok(page) => {
            metrics::counter!(meters::PULLS, "result" => "ok").increment(1);
            Some(page)
        }
        Err(error) => {
            metrics::counter!(meters::PULLS, "result" => "failed").increment(1);
            if let CallError::Hub(error) = error {
                tracing::warn!(%error, cursor, "pull failed; trying again after the pull interval");
            }
            None
        }
    }
}

fn record_pulled(ctx: &Ctx, report: ApplyReport) {
    metrics::counter!(meters::EVENTS_APPLIED, "via" => "pull").increment(report.applied as u64);
    meters::record_store(&ctx.local);
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

impl Pending {
    /// Whether there is anything to apply.
    fn any(&self) -> bool {
        !self.events.is_empty() || self.head > 0
    }

    /// What to apply now; the cursor stays, as the base of what is read next.
    fn take(&mut self) -> Self {
        let events = std::mem::take(&mut self.events);
        let head = std::mem::take(&mut self.head);
        Self {
            events,
            cursor: self.cursor,
            head,
        }
    }
}

/// Reads the stream, applying what it says, until it ends or `stopping`. At most one
/// batch is being applied while the next is read.
async fn consume<S, E>(ctx: &Ctx, messages: S, stopping: &mut watch::Receiver<bool>) -> Result<End, SyncError>
where
    S: Stream<Item = Result<Event, EventStreamError<E>>> + Send,
    E: std::error::Error,
{
    let mut messages = std::pin::pin!(messages);
    let mut caught_up = false;
    let mut pending = Pending {
        cursor: ctx.local.read(|view| view.sync.cursor),
        ..Pending::default()
    };
    let mut applying = None;
    let mut end = None;
    loop {
        if applying.is_none() && pending.any() {
            let Pending { events, cursor, head } = pending.take();
            let local = ctx.local.clone();
            applying = Some(Box::pin(async move { local.apply_hub(events, cursor, head).await }));
        }
        if applying.is_none() {
            if let Some(end) = end {
                return Ok(end);
            }
        }
        let read_more = end.is_none() && pending.events.len() < MAX_COALESCED;
        tokio::select! {
            biased;
            () = stopped(stopping) => return Ok(End::Stopping),
            applied = in_flight(&mut applying) => {
                applying = None;
                let report = applied?;
                metrics::counter!(meters::EVENTS_APPLIED, "via" => "push").increment(report.applied as u64);
                meters::record_store(&ctx.local);
            }
            next = messages.next(), if read_more => {
                end = read(ctx, next, &mut pending, &mut caught_up);
                // Take in what has already arrived.
                while end.is_none() && pending.events.len() < MAX_COALESCED {
                    match messages.next().now_or_never() {
                        Some(next) => end = read(ctx, next, &mut pending, &mut caught_up),
                        None => break,
                    }
                }
            }
        }
    }
}

/// Waits for the batch being applied; for ever when there is none.
async fn in_flight<F: std::future::Future + Unpin>(applying: &mut Option<F>) -> F::Output {
    match applying {
        Some(apply) => apply.await,
        None => std::future::pending().await,
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
