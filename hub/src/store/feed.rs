//! The catch-up feed: an ordered, gap-free stream of the log's events after a cursor.
//!
//! Subscribers (the projection, and the push streams to agents) start from a cursor, read
//! history from the log, then follow the [`EventBus`]. When a subscriber falls behind (the
//! broadcast channel overflowed, or a batch does not start where it stopped), the feed
//! re-reads the gap from the log: the bus may drop messages, the feed never drops an
//! event. Live pages are views into the bus's shared batches ([`Page`]): following the
//! bus copies no event, whatever the number of subscribers. History is read in aligned
//! pages that feeds share too ([`History`]): when thousands of push streams fall behind
//! together (a bulk catalog change), the log is read, and each event's SSE frame encoded,
//! once per page rather than once per stream.

use super::log_reads::LogReads;
use super::ReadError;
use crate::bus::{Batch, EventBus, LiveEvent};
use shelfsync_common::EventEnvelope;
use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

/// Events read from the log per catch-up page; page `k` holds positions
/// `k * CATCH_UP_PAGE + 1 ..= (k + 1) * CATCH_UP_PAGE` (positions have no gaps).
const CATCH_UP_PAGE: usize = 1000;
/// Full pages of history kept for the feeds that read them next (about 1 MB each with
/// their frames encoded).
const SHARED_PAGES: usize = 16;

/// The log's history in aligned pages; the last [`SHARED_PAGES`] reads that reached the
/// end of their page are shared by the feeds that need them next.
pub(crate) struct History {
    reads: LogReads,
    pages: Mutex<VecDeque<(u64, Batch)>>,
}

impl History {
    pub(crate) fn new(reads: LogReads) -> Self {
        Self {
            reads,
            pages: Mutex::new(VecDeque::with_capacity(SHARED_PAGES)),
        }
    }

    /// The events after `after` up to the end of its page (fewer at the head), and whether
    /// they reach the page's end (more may follow).
    async fn after(&self, after: u64) -> Result<(Page, bool), ReadError> {
        let index = after / CATCH_UP_PAGE as u64;
        let end = (index + 1) * CATCH_UP_PAGE as u64;
        let shared = self
            .lock()
            .iter()
            .find(|(k, batch)| *k == index && batch.first().is_some_and(|e| e.position() <= after + 1))
            .map(|(_, batch)| batch.clone());
        let batch = match shared {
            Some(batch) => batch,
            None => {
                let limit = (end - after) as usize;
                let events = self.reads.events_after(after, limit).await?;
                let batch: Batch = events.into_iter().map(LiveEvent::new).collect();
                // Only the rest of a page that reaches its end is final (the head's page
                // still grows); the feeds behind this cursor in the same page share it.
                if batch.last().is_some_and(|e| e.position() == end) {
                    let mut pages = self.lock();
                    if pages.len() == SHARED_PAGES {
                        pages.pop_front();
                    }
                    pages.push_back((index, batch.clone()));
                }
                batch
            }
        };
        let full = batch.last().is_some_and(|e| e.position() == end);
        let from = batch.partition_point(|e| e.position() <= after);
        Ok((Page { batch, from }, full))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Batch)>> {
        self.pages.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Consecutive events, in order, shared with the bus (or read from the log): a batch from
/// the first event the feed had not returned yet.
#[derive(Clone)]
pub struct Page {
    batch: Batch,
    from: usize,
}

impl Deref for Page {
    type Target = [LiveEvent];

    fn deref(&self) -> &[LiveEvent] {
        &self.batch[self.from..]
    }
}

/// An ordered, gap-free stream of events after a cursor.
pub struct EventFeed {
    history: Arc<History>,
    live: broadcast::Receiver<Batch>,
    head: watch::Receiver<u64>,
    cursor: u64,
    /// Events after the cursor may be missing from the channel (at the start, after a lag
    /// or a gap): read the store before trusting the channel again.
    behind: bool,
}

impl EventFeed {
    /// A feed of every event after `after`, in order, history first. It subscribes to the
    /// bus before its first read of the log, so nothing committed in between is missed.
    pub(super) fn new(history: Arc<History>, bus: &EventBus, after: u64) -> Self {
        let (live, head) = bus.subscribe();
        Self {
            history,
            live,
            head,
            cursor: after,
            behind: true,
        }
    }

    /// The position of the last event returned.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Whether the feed has returned everything committed so far.
    pub fn caught_up(&self) -> bool {
        self.cursor >= *self.head.borrow()
    }

    /// The next events as owned envelopes (for a subscriber that keeps them).
    pub async fn next(&mut self) -> Option<Result<Vec<EventEnvelope>, ReadError>> {
        let page = self.next_page().await?;
        Some(page.map(|page| page.iter().map(|e| e.envelope().clone()).collect()))
    }

    /// The next events, in order, waiting until there are some. `None` means the bus
    /// closed (the hub is shutting down).
    pub async fn next_page(&mut self) -> Option<Result<Page, ReadError>> {
        loop {
            // The channel was subscribed before the first read, so once a read of the store
            // comes back short, every later commit is in the channel: read it from memory.
            if self.behind {
                match self.history.after(self.cursor).await {
                    Ok((page, full)) => {
                        self.behind = full;
                        if let Some(last) = page.last() {
                            self.cursor = last.position();
                            return Some(Ok(page));
                        }
                    }
                    Err(error) => return Some(Err(error)),
                }
            }
            match self.live.recv().await {
                Ok(batch) => {
                    if let Some(page) = self.follow(batch) {
                        return Some(Ok(page));
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

    /// The next events if the bus already holds them, without waiting (and without
    /// reading the store: a feed that is behind answers `None`, and its next
    /// [`EventFeed::next_page`] reads the gap).
    pub fn ready(&mut self) -> Option<Page> {
        while !self.behind {
            match self.live.try_recv() {
                Ok(batch) => {
                    if let Some(page) = self.follow(batch) {
                        return Some(page);
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.behind = true,
                Err(_) => return None,
            }
        }
        None
    }

    /// The part of a live batch after the cursor, if it follows the cursor; a batch that
    /// leaves a gap sets `behind`.
    fn follow(&mut self, batch: Batch) -> Option<Page> {
        // Batches are in position order: skip what the feed has already returned.
        let from = batch.partition_point(|e| e.position() <= self.cursor);
        match batch.get(from) {
            Some(first) if first.position() == self.cursor + 1 => {
                self.cursor = batch.last().map_or(self.cursor, LiveEvent::position);
                Some(Page { batch, from })
            }
            // A gap before this batch: read it from the store on the next turn.
            Some(_) => {
                self.behind = true;
                None
            }
            None => None,
        }
    }
}
