//! Feeds this hub's bus with what other hubs commit: a task that `LISTEN`s on the log's
//! channel and, on each notification (or once a second without one), reads the log after
//! the bus head by position and publishes it. A notification only wakes it, so one that
//! is lost costs at most a second, never an event. A broken connection is reopened.

use super::reads::events_after;
use super::{PgSettings, CHANNEL};
use crate::bus::EventBus;
use crate::store::ReadError;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Mutex, Notify};
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
}

impl Follower {
    /// Starts following on its own connection.
    pub fn start(settings: PgSettings, bus: EventBus) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(follow(settings, bus, stopped));
        Self {
            stop,
            task: Mutex::new(Some(task)),
        }
    }

    /// Stops the task and waits for it.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

async fn follow(settings: PgSettings, bus: EventBus, mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if let Err(error) = listen(&settings, &bus, &mut stop).await {
            tracing::warn!(%error, "following the event log on PostgreSQL failed; retrying in a second");
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

async fn listen(settings: &PgSettings, bus: &EventBus, stop: &mut watch::Receiver<bool>) -> Result<(), ReadError> {
    let (client, mut connection) = settings.config()?.connect(NoTls).await?;
    let woken = Arc::new(Notify::new());
    let wake = woken.clone();
    // The connection's own task: it carries the queries and hands over notifications.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => wake.notify_one(),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    let result = loop {
        if let Err(error) = catch_up(&client, bus).await {
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
