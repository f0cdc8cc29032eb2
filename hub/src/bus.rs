//! The in-process event bus and the catch-up feed built on it.
//!
//! The writer publishes each committed batch once; subscribers (the projection, and the
//! push streams to agents) read it through an [`EventFeed`], which starts from a cursor,
//! reads history from the store, then follows the bus. When a subscriber falls behind
//! (the broadcast channel overflowed, or a batch does not start where it stopped), the
//! feed re-reads the gap from the store: the bus may drop messages, the feed never
//! drops an event.

use crate::store::{reader, ReadPool, StoreError};
use shelfsync_common::EventEnvelope;
use std::sync::Arc;
use tokio::sync::{broadcast, watch};

/// Batches kept for slow subscribers before they must re-read from the store.
const BUS_CAPACITY: usize = 1024;
/// Events read from the store per catch-up page.
const CATCH_UP_PAGE: usize = 1000;

/// Fan-out of committed events to in-process subscribers.
#[derive(Clone)]
pub struct EventBus {
    batches: broadcast::Sender<Arc<[EventEnvelope]>>,
    head: Arc<watch::Sender<u64>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// An empty bus at head 0.
    pub fn new() -> Self {
        let (batches, _) = broadcast::channel(BUS_CAPACITY);
        Self {
            batches,
            head: Arc::new(watch::channel(0).0),
        }
    }

    /// Sets the head at start-up.
    pub fn set_head(&self, head: u64) {
        self.head.send_replace(head);
    }

    /// Publishes one committed batch (called by the writer after commit).
    pub fn publish(&self, events: Vec<EventEnvelope>) {
        if let Some(last) = events.last() {
            // The head moves first: a feed that subscribes just after the send must not
            // see the old head, think itself caught up, and wait for the next commit.
            self.head.send_replace(last.position);
            let _ = self.batches.send(events.into());
        }
    }

    /// The position of the last committed event.
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Watches the head position.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// A feed of every event after `after`, in order, history first.
    pub fn feed(&self, reads: Arc<ReadPool>, after: u64) -> EventFeed {
        EventFeed {
            reads,
            live: self.batches.subscribe(),
            head: self.head.subscribe(),
            cursor: after,
            behind: true,
        }
    }
}

/// An ordered, gap-free stream of events after a cursor.
pub struct EventFeed {
    reads: Arc<ReadPool>,
    live: broadcast::Receiver<Arc<[EventEnvelope]>>,
    head: watch::Receiver<u64>,
    cursor: u64,
    /// Events after the cursor may be missing from the channel (at the start, after a lag
    /// or a gap): read the store before trusting the channel again.
    behind: bool,
}

impl EventFeed {
    /// The position of the last event returned.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Whether the feed has returned everything committed so far.
    pub fn caught_up(&self) -> bool {
        self.cursor >= *self.head.borrow()
    }

    /// The next events, in order, waiting until there are some. `None` means the bus
    /// closed (the hub is shutting down).
    pub async fn next(&mut self) -> Option<Result<Vec<EventEnvelope>, StoreError>> {
        loop {
            // The channel was subscribed before the first read, so once a read of the store
            // comes back short, every later commit is in the channel: read it from memory.
            if self.behind {
                let after = self.cursor;
                let page = self
                    .reads
                    .run(move |conn| reader::events_after(conn, after, CATCH_UP_PAGE))
                    .await;
                match page {
                    Ok(events) => {
                        self.behind = events.len() == CATCH_UP_PAGE;
                        if let Some(last) = events.last() {
                            self.cursor = last.position;
                            return Some(Ok(events));
                        }
                    }
                    Err(error) => return Some(Err(error)),
                }
            }
            match self.live.recv().await {
                Ok(batch) => {
                    let fresh: Vec<EventEnvelope> =
                        batch.iter().filter(|e| e.position > self.cursor).cloned().collect();
                    match fresh.first() {
                        Some(first) if first.position == self.cursor + 1 => {
                            self.cursor = fresh.last().map_or(self.cursor, |e| e.position);
                            return Some(Ok(fresh));
                        }
                        // A gap before this batch: read it from the store on the next turn.
                        Some(_) => self.behind = true,
                        None => continue,
                    }
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    tracing::debug!(skipped, cursor = self.cursor, "feed lagged; re-reading from the store");
                    self.behind = true;
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}
