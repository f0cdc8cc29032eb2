//! The loop every subscriber of the log runs (the stock projector, the analytics
//! worker): take the feed's next events, join more history into the same batch while
//! behind (up to a cap), hand the batch to the subscriber, and retry a failed read with
//! backoff, until shutdown. What a batch does, and how a failed write is retried, is the
//! subscriber's ([`Follower`]); the backoff, the shutdown wait and the lag gauge are shared
//! here too.

use crate::store::{EventFeed, ReadError};
use shelfsync_common::EventEnvelope;
use std::time::Duration;
use tokio::sync::watch;

/// First retry delay after a failed read or write.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest retry delay after a failed read or write.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A subscriber of the log.
pub(crate) trait Follower {
    /// Folds one batch (retrying its own write failures); false stops the loop.
    async fn batch(&mut self, events: Vec<EventEnvelope>) -> bool;

    /// Reading the log failed; the loop waits `retry_in` and reads the same events again.
    fn read_failed(&mut self, error: &ReadError, retry_in: Duration);
}

/// Runs `follower` on `feed` until `shutdown` turns true, the bus closes, or a batch says
/// stop. While the feed is behind the head, pages are joined into batches of up to
/// `catch_up` events.
pub(crate) async fn follow(
    feed: &mut EventFeed,
    shutdown: &mut watch::Receiver<bool>,
    catch_up: usize,
    follower: &mut impl Follower,
) {
    let mut read_failures = backoff();
    loop {
        let next = tokio::select! {
            biased;
            () = stopped(shutdown) => break,
            next = feed.next() => next,
        };
        match next {
            None => {
                tracing::info!("the event bus closed");
                break;
            }
            Some(Err(error)) => {
                // The feed has not moved: the next call re-reads the same events.
                let delay = read_failures.next().unwrap_or(MAX_BACKOFF);
                follower.read_failed(&error, delay);
                let slept = tokio::select! {
                    biased;
                    () = stopped(shutdown) => false,
                    () = tokio::time::sleep(delay) => true,
                };
                if !slept {
                    break;
                }
            }
            Some(Ok(mut events)) => {
                read_failures = backoff();
                // Behind the head: take more history into the same transaction. A failed
                // read here is simply retried by the next turn of the loop.
                while !feed.caught_up() && events.len() < catch_up {
                    match feed.next().await {
                        Some(Ok(more)) => events.extend(more),
                        _ => break,
                    }
                }
                if !follower.batch(events).await {
                    break;
                }
            }
        }
    }
}

/// The retry delays of a failed batch: 50 ms doubling to 5 s, with jitter, forever (the
/// analytics worker retries the same way).
pub(crate) fn backoff() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(MIN_BACKOFF)
        .with_max_delay(MAX_BACKOFF)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// Resolves once `shutdown` turns true (or its sender is gone).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Keeps the lag gauge `gauge` (head - projected) current until the subscriber stops.
pub(crate) async fn report_lag(
    gauge: &'static str,
    mut head: watch::Receiver<u64>,
    mut projected: watch::Receiver<u64>,
) {
    loop {
        let lag = head.borrow_and_update().saturating_sub(*projected.borrow_and_update());
        metrics::gauge!(gauge).set(lag as f64);
        tokio::select! {
            changed = head.changed() => if changed.is_err() { break },
            changed = projected.changed() => if changed.is_err() { break },
        }
    }
}
