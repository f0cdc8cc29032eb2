//! The in-process event bus: the fan-out of committed batches, and the head position.
//!
//! The writer publishes each committed batch once. The bus is bounded and may drop
//! batches for a slow subscriber; subscribers therefore read it through the store's
//! [`crate::store::EventFeed`], which re-reads from the log whatever the bus dropped.
//! The bus knows nothing of the store, so the store can depend on it.
//!
//! A batch is published once as an `Arc<[LiveEvent]>` that every subscriber shares (no
//! per-subscriber copy). Each [`LiveEvent`] carries its SSE frame, encoded by the first
//! push stream that needs it and then shared by every other one: one serialization of an
//! event for the whole fleet, whatever the number of streams.

use axum::body::Bytes;
use shelfsync_common::wire::sync::SSE_EVENT;
use shelfsync_common::EventEnvelope;
use std::sync::{Arc, OnceLock};
use tokio::sync::{broadcast, watch};

/// A committed event and, once a push stream has needed it, its SSE frame.
#[derive(Debug)]
pub struct LiveEvent {
    envelope: EventEnvelope,
    frame: OnceLock<Result<Bytes, String>>,
}

impl LiveEvent {
    /// An event whose frame is not encoded yet.
    pub fn new(envelope: EventEnvelope) -> Self {
        Self {
            envelope,
            frame: OnceLock::new(),
        }
    }

    /// The event.
    pub fn envelope(&self) -> &EventEnvelope {
        &self.envelope
    }

    /// The event's position in the log.
    pub fn position(&self) -> u64 {
        self.envelope.position
    }

    /// The event's SSE frame (`event`, its position as id, the envelope as data), encoded
    /// on the first call and shared afterwards.
    pub fn frame(&self) -> Result<&Bytes, &str> {
        self.frame
            .get_or_init(|| {
                crate::sse::frame(SSE_EVENT, self.envelope.position, &self.envelope)
                    .map(Bytes::from)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(String::as_str)
    }
}

/// Events committed together, shared by every subscriber.
pub type Batch = Arc<[LiveEvent]>;

/// Batches kept for slow subscribers before they must re-read from the store.
const BUS_CAPACITY: usize = 1024;

/// Fan-out of committed events to in-process subscribers.
#[derive(Clone)]
pub struct EventBus {
    batches: broadcast::Sender<Batch>,
    head: Arc<watch::Sender<u64>>,
    /// Serializes publishers: on PostgreSQL both this hub's writer and the follower of
    /// the other hubs' commits publish, and each publication must see the head the
    /// previous one left.
    publishing: Arc<std::sync::Mutex<()>>,
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
            publishing: Arc::default(),
        }
    }

    /// Sets the head at start-up.
    pub fn set_head(&self, head: u64) {
        self.head.send_replace(head);
    }

    /// Publishes committed events in position order (called after commit). Events at or
    /// below the head were published already (by the other publisher) and are left out,
    /// so the head only moves forward. A batch may start past the head + 1 (another
    /// hub's events not read yet): the feeds see the gap and read it from the log.
    pub fn publish(&self, mut events: Vec<EventEnvelope>) {
        let _publishing = self
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let head = self.head();
        events.retain(|e| e.position > head);
        if let Some(last) = events.last() {
            // The head moves first: a feed that subscribes just after the send must not
            // see the old head, think itself caught up, and wait for the next commit.
            self.head.send_replace(last.position);
            let _ = self.batches.send(events.into_iter().map(LiveEvent::new).collect());
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

    /// A subscription to the batches published from now on, and to the head.
    pub fn subscribe(&self) -> (broadcast::Receiver<Batch>, watch::Receiver<u64>) {
        (self.batches.subscribe(), self.head.subscribe())
    }
}
