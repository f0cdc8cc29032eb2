//! The analytics worker: follows the log from its checkpoint and folds every batch
//! ([`super::fold::apply_batch`]) in one transaction with the checkpoint. A batch that
//! fails is retried, the same batch, with exponential backoff and jitter (50 ms to 5 s),
//! and the stall is visible in metrics; writes and the stock read model never wait for it.
//! While behind (at start, after a rebuild, after a burst) it joins feed pages into one
//! transaction of up to 20,000 events.

use super::fold::{apply_batch, Folded};
use super::{checkpoint, clear_derived, open_writer, AnalyticsDb, Settings};
use crate::read_model::{backoff, follow, report_lag, stopped, Follower};
use crate::store::{EventStore, ReadError};
use rusqlite::Connection;
use shelfsync_common::EventEnvelope;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Events per transaction while catching up.
const CATCH_UP_BATCH: usize = 20_000;
/// The longest retry delay (the read model's backoff's cap).
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The running worker and the analytics file it writes.
pub struct AnalyticsHandle {
    db: Arc<AnalyticsDb>,
    position: watch::Receiver<u64>,
    task: JoinHandle<()>,
    lag_task: JoinHandle<()>,
}

impl AnalyticsHandle {
    /// The analytics file (settings, webhook state, reads).
    pub fn db(&self) -> Arc<AnalyticsDb> {
        self.db.clone()
    }

    /// The position the figures have reached (moves after each commit).
    pub fn position(&self) -> watch::Receiver<u64> {
        self.position.clone()
    }

    /// Waits for the worker to stop (after the shutdown signal it was spawned with).
    pub async fn join(self) {
        if let Err(error) = self.task.await {
            tracing::error!(%error, "the analytics task failed");
        }
        self.lag_task.abort();
    }
}

/// Opens (creating and migrating) the analytics file at `path` without a worker
/// (`analytics.worker = false`): the figures stay where they are, settings and webhooks
/// still work.
pub fn idle(path: &Path) -> Result<AnalyticsHandle, ReadError> {
    let db = AnalyticsDb::open(path)?;
    let position = db.reads_checkpoint()?;
    let (_, position) = watch::channel(position);
    Ok(AnalyticsHandle {
        db,
        position,
        task: tokio::spawn(async {}),
        lag_task: tokio::spawn(async {}),
    })
}

/// Opens (creating and migrating) the analytics file at `path` and starts the worker from
/// its checkpoint; it runs until `shutdown` turns true. A checkpoint ahead of the log's
/// head belongs to another log: the figures are emptied and folded again from zero.
pub fn spawn(log: EventStore, path: &Path, shutdown: watch::Receiver<bool>) -> Result<AnalyticsHandle, ReadError> {
    let db = AnalyticsDb::open(path)?;
    // Shown from the start, so that an alert rule on its increase sees the first oversell.
    metrics::counter!("shelfsync_hub_analytics_alerts_total", "kind" => "oversell").increment(0);
    let mut conn = open_writer(path, false)?;
    let mut position = checkpoint(&conn)?;
    let head = log.bus().head();
    if position > head {
        tracing::warn!(
            position,
            head,
            "the analytics file is ahead of the event log; folding again from zero"
        );
        clear_derived(&mut conn)?;
        position = 0;
    }
    metrics::gauge!("shelfsync_hub_analytics_position").set(position as f64);
    let (position_tx, position_rx) = watch::channel(position);
    let lag_task = tokio::spawn(report_lag(
        "shelfsync_hub_analytics_lag_events",
        log.bus().watch_head(),
        position_rx.clone(),
    ));
    let worker = Worker {
        log,
        conn: Arc::new(Mutex::new(conn)),
        db: db.clone(),
        settings: Arc::new(Settings::default()),
        settings_version: u64::MAX,
        position: position_tx,
        shutdown,
        at: position,
    };
    Ok(AnalyticsHandle {
        db,
        position: position_rx,
        task: tokio::spawn(worker.run()),
        lag_task,
    })
}

struct Worker {
    log: EventStore,
    conn: Arc<Mutex<Connection>>,
    db: Arc<AnalyticsDb>,
    settings: Arc<Settings>,
    settings_version: u64,
    position: watch::Sender<u64>,
    shutdown: watch::Receiver<bool>,
    at: u64,
}

impl Worker {
    async fn run(mut self) {
        tracing::info!(from = self.at, "analytics worker started");
        let mut feed = self.log.feed(self.at);
        let mut shutdown = self.shutdown.clone();
        follow(&mut feed, &mut shutdown, CATCH_UP_BATCH, &mut self).await;
        tracing::info!(position = self.at, "analytics worker stopped");
    }

    /// Folds one batch, retrying it until it commits. False when shut down meanwhile.
    async fn fold(&mut self, events: Vec<EventEnvelope>) -> bool {
        let events = Arc::new(events);
        let mut delays = backoff();
        loop {
            let started = Instant::now();
            let (conn, batch) = (self.conn.clone(), events.clone());
            let version = self.db.settings_version();
            let reload = (version != self.settings_version).then_some(version);
            let settings = self.settings.clone();
            let outcome = tokio::task::spawn_blocking(move || {
                let mut conn = conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let settings = match reload {
                    Some(_) => Arc::new(Settings::load(&conn)?),
                    None => settings,
                };
                let folded = apply_batch(&mut conn, &settings, &batch)?;
                Ok::<_, ReadError>((settings, folded))
            })
            .await
            .unwrap_or_else(|e| Err(ReadError::Join(e.to_string())));
            match outcome {
                Ok((settings, folded)) => {
                    if let Some(version) = reload {
                        self.settings = settings;
                        self.settings_version = version;
                    }
                    self.committed(folded, started);
                    return true;
                }
                Err(error) => {
                    let delay = delays.next().unwrap_or(MAX_BACKOFF);
                    metrics::counter!("shelfsync_hub_analytics_retries_total").increment(1);
                    tracing::warn!(%error, position = self.at, retry_in_ms = delay.as_millis() as u64,
                        "analytics: folding a batch failed; retrying it");
                    if !self.pause(delay).await {
                        return false;
                    }
                }
            }
        }
    }

    fn committed(&mut self, folded: Folded, started: Instant) {
        metrics::histogram!("shelfsync_hub_analytics_batch_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("shelfsync_hub_analytics_events_total").increment(folded.events as u64);
        if folded.position > self.at {
            self.at = folded.position;
            metrics::gauge!("shelfsync_hub_analytics_position").set(folded.position as f64);
            self.position.send_replace(folded.position);
        }
    }

    async fn pause(&mut self, delay: Duration) -> bool {
        tokio::select! {
            () = stopped(&mut self.shutdown) => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

impl Follower for Worker {
    async fn batch(&mut self, events: Vec<EventEnvelope>) -> bool {
        self.fold(events).await
    }

    fn read_failed(&mut self, error: &ReadError, retry_in: Duration) {
        metrics::counter!("shelfsync_hub_analytics_retries_total").increment(1);
        tracing::warn!(%error, position = self.at, retry_in_ms = retry_in.as_millis() as u64,
            "analytics: reading the log failed; retrying");
    }
}

impl AnalyticsDb {
    /// The checkpoint, read now.
    fn reads_checkpoint(&self) -> Result<u64, ReadError> {
        self.reads.run_blocking(checkpoint)
    }

    /// Bumped by every settings change; the worker reloads settings when it moves.
    pub fn settings_version(&self) -> u64 {
        self.settings_version.load(Ordering::Acquire)
    }

    /// Marks the settings changed (after the write committed).
    pub(crate) fn settings_changed(&self) {
        self.settings_version.fetch_add(1, Ordering::AcqRel);
    }
}
