//! Feeds this hub's bus with what other hubs commit: a task that `LISTEN`s on the log's
//! channel and, on each notification (or once a second without one), reads the log after
//! the bus head by position and publishes it. A notification only wakes it, so one that
//! is lost costs at most a second, never an event. A broken connection is reopened.
//!
//! It also hears revocations taken by any hub and passes on the stores they hit, so that
//! every hub ends their open push streams. (A revocation notice that is lost leaves a
//! stream open until it next reconnects, when its token is refused: tokens are checked
//! on every request, never cached.)

use super::reads::events_after;
use super::{PgSettings, CHANNEL, REVOKED_CHANNEL};
use crate::bus::EventBus;
use crate::store::ReadError;
use futures_util::StreamExt;
use shelfsync_common::StoreId;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch, Mutex, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// Longest wait for a notification before the log is read anyway.
const POLL: Duration = Duration::from_secs(1);
/// Events read and published at a time.
const PAGE: usize = 1000;

/// The follower task; stopped by [`Follower::stop`].
pub struct Follower {
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    revoked: broadcast::Sender<(StoreId, uuid::Uuid)>,
}

/// What the follower passes on.
#[derive(Clone)]
struct Outputs {
    bus: EventBus,
    revoked: broadcast::Sender<(StoreId, uuid::Uuid)>,
}

impl Follower {
    /// Starts following on its own connection.
    pub fn start(settings: PgSettings, bus: EventBus) -> Self {
        let (stop, stopped) = watch::channel(false);
        let revoked = broadcast::channel(256).0;
        let outputs = Outputs {
            bus,
            revoked: revoked.clone(),
        };
        let task = tokio::spawn(follow(settings, outputs, stopped));
        Self {
            stop,
            task: Mutex::new(Some(task)),
            revoked,
        }
    }

    /// The store tokens any hub revoked (store, token id), from now on.
    pub fn revocations(&self) -> broadcast::Receiver<(StoreId, uuid::Uuid)> {
        self.revoked.subscribe()
    }

    /// Stops the task and waits for it.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

async fn follow(settings: PgSettings, outputs: Outputs, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if let Err(error) = listen(&settings, &outputs, &mut stop).await {
            tracing::warn!(%error, "following the event log on PostgreSQL failed; retrying in a second");
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

async fn listen(settings: &PgSettings, outputs: &Outputs, stop: &mut watch::Receiver<bool>) -> Result<(), ReadError> {
    let (client, mut connection) = settings.config()?.connect(NoTls).await?;
    let woken = Arc::new(Notify::new());
    let wake = woken.clone();
    let revoked = outputs.revoked.clone();
    // The connection's own task: it carries the queries and hands over notifications.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(note)) if note.channel() == REVOKED_CHANNEL => {
                    if let Some(revocation) = parse_revocation(note.payload()) {
                        let _ = revoked.send(revocation);
                    }
                }
                Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}; LISTEN {REVOKED_CHANNEL}"))
        .await?;
    let result = loop {
        if let Err(error) = catch_up(&client, &outputs.bus).await {
            break Err(error);
        }
        tokio::select! {
            _ = woken.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => break Ok(()),
        }
    };
    driver.abort();
    result
}

/// `"<store id> <token id>"`, as the writer announces a revoked store token.
fn parse_revocation(payload: &str) -> Option<(StoreId, uuid::Uuid)> {
    let (store, token) = payload.split_once(' ')?;
    Some((StoreId(store.parse().ok()?), token.parse().ok()?))
}

/// Publishes every committed event after the bus head.
async fn catch_up(client: &Client, bus: &EventBus) -> Result<(), ReadError> {
    loop {
        let events = events_after(client, bus.head(), PAGE).await?;
        let full = events.len() == PAGE;
        bus.publish(events);
        if !full {
            return Ok(());
        }
    }
}
