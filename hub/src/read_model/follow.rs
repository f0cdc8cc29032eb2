//! The loop every subscriber of the log runs (the stock projector, the analytics
//! worker): take the feed's next events, join more history into the same batch while
//! behind (up to a cap), hand the batch to the subscriber, and retry a failed read with
//! backoff, until shutdown. What a batch does, and how a failed write is retried, is the
//! subscriber's ([`Follower`]).

use super::projector::{backoff, stopped};
use crate::store::{EventFeed, ReadError};
use shelfsync_common::EventEnvelope;
use std::time::Duration;
use tokio::sync::watch;

/// Longest wait before reading the log again after a failed read.
const MAX_READ_BACKOFF: Duration = Duration::from_secs(5);

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
                let delay = read_failures.next().unwrap_or(MAX_READ_BACKOFF);
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
