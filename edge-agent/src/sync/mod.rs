//! The sync worker: everything that crosses the link to the hub.
//!
//! Four supervised tasks share one [`hub::Hub`] (the hub's sync API behind the circuit
//! breaker every hub call goes through):
//!
//! - [`bootstrap`]: on a fresh store, fetches the hub's snapshot of this store once;
//!   uploading and following wait for it (an upload before the snapshot would be counted
//!   twice: in the snapshot and in the pending set).
//! - [`upload`]: sends the outbox in order and in batches, woken by every local write and
//!   retried on a timer with jittered exponential back-off.
//! - [`follow`]: follows the hub's push stream (SSE) from the store's cursor, and pulls on
//!   an interval while the stream is down; each time it (re)connects it checks that the
//!   hub's log still holds what the store saw, and re-syncs the store when the hub was
//!   restored from an older backup ([`restore`]).
//! - [`heartbeat`]: reports the agent's state to the hub's fleet view.
//!
//! Each task is restarted (after a short back-off) when it fails or panics, and every
//! wait selects on `stopping`, so the worker stops promptly at shutdown. The shared
//! [`LinkStatus`] is what the status page shows.

mod bootstrap;
mod follow;
mod heartbeat;
pub mod hub;
mod meters;
mod restore;
mod upload;

use crate::config::{EdgeConfig, HubCredentials};
use crate::store::{LocalError, LocalStore};
use backon::{BackoffBuilder, ExponentialBuilder};
pub use hub::Hub;
pub use restore::{resync, HUB_RESTORED, OPERATOR};
use shelfsync_common::StoreId;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::Instrument;

/// What the status page and heartbeats say about the hub link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// The last call to the hub succeeded and the breaker is closed.
    pub online: bool,
    /// The breaker's phase: closed, open or half_open.
    pub breaker: &'static str,
    /// Why the breaker last opened.
    pub breaker_reason: Option<String>,
    /// The push stream is connected.
    pub push_connected: bool,
    /// Why the last call to the hub failed (`None` once a call succeeds), e.g. "the hub
    /// refused this store's token".
    pub last_error: Option<String>,
}

impl Default for LinkState {
    fn default() -> Self {
        Self {
            online: false,
            breaker: "closed",
            breaker_reason: None,
            push_connected: false,
            last_error: None,
        }
    }
}

/// The link state, shared between the worker (writer) and the API (reader).
#[derive(Debug, Default)]
pub struct LinkStatus(Mutex<LinkState>);

impl LinkStatus {
    /// The current state.
    pub fn get(&self) -> LinkState {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Changes the state.
    pub fn update(&self, change: impl FnOnce(&mut LinkState)) {
        change(&mut self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

/// The running worker.
pub struct SyncHandle {
    status: Arc<LinkStatus>,
    hub: Arc<Hub>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl SyncHandle {
    /// The shared link state.
    pub fn status(&self) -> Arc<LinkStatus> {
        self.status.clone()
    }

    /// The hub handle the worker calls through (its breaker included), for the till's
    /// requests that need the hub (asking for more of an allocation).
    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    /// Waits for every task to stop (after `stopping` turned true).
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Why a sync task gave up (it is restarted by its supervisor).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The local store failed; nothing was lost (the hub's data is re-read, the outbox
    /// is re-sent).
    #[error("local store: {0}")]
    Local(#[from] LocalError),
}

/// Starts the worker's tasks; they stop when `stopping` turns true.
pub fn spawn(
    local: LocalStore,
    credentials: HubCredentials,
    config: Arc<EdgeConfig>,
    stopping: watch::Receiver<bool>,
) -> SyncHandle {
    meters::describe();
    let status = Arc::new(LinkStatus::default());
    let bootstrapped = watch::Sender::new(local.read(|view| view.sync.bootstrapped));
    let hub = Arc::new(Hub::new(&credentials, &config, status.clone()));
    let ctx = Arc::new(Ctx {
        local,
        hub: hub.clone(),
        status: status.clone(),
        store_id: credentials.store_id,
        config,
        bootstrapped,
        upload_gate: tokio::sync::Mutex::new(()),
        log_checked: watch::Sender::new(false),
    });
    let span = tracing::info_span!("sync", store = %credentials.store_id, hub = %credentials.hub_url);
    span.in_scope(|| tracing::info!("sync worker starting"));
    let tasks = vec![
        supervise("bootstrap", &ctx, &stopping, &span, bootstrap::run),
        supervise("upload", &ctx, &stopping, &span, upload::run),
        supervise("follow", &ctx, &stopping, &span, follow::run),
        supervise("heartbeat", &ctx, &stopping, &span, heartbeat::run),
    ];
    SyncHandle { status, hub, tasks }
}

/// What every task shares.
pub(crate) struct Ctx {
    local: LocalStore,
    hub: Arc<Hub>,
    status: Arc<LinkStatus>,
    store_id: StoreId,
    config: Arc<EdgeConfig>,
    /// Turns true once the store has its starting snapshot.
    bootstrapped: watch::Sender<bool>,
    /// Held by the uploader around each upload and its answer, and by a re-sync from its
    /// first upload to its new snapshot being taken in.
    upload_gate: tokio::sync::Mutex<()>,
    /// True while the follower has checked, since its last (re)connection, that the hub's
    /// log still holds what this store saw ([`restore`]). The uploader waits for it: an
    /// event uploaded to a restored hub before the re-sync would land before the older
    /// events the re-sync sends again (a sale before its reservation).
    log_checked: watch::Sender<bool>,
}

impl Ctx {
    /// Jittered exponential back-off between `sync.retry_min_ms` and `sync.retry_max_ms`.
    fn retry_backoff(&self) -> impl Iterator<Item = Duration> + Send {
        backoff(self.config.sync.retry_min_ms, self.config.sync.retry_max_ms)
    }

    /// Waits until the follower has checked the hub's log since it last (re)connected;
    /// false when stopping first.
    async fn wait_log_checked(&self, stopping: &mut watch::Receiver<bool>) -> bool {
        let mut checked = self.log_checked.subscribe();
        tokio::select! {
            ready = checked.wait_for(|ready| *ready) => ready.is_ok(),
            () = stopped(stopping) => false,
        }
    }

    /// Waits until the store has its snapshot; false when stopping first.
    async fn wait_bootstrapped(&self, stopping: &mut watch::Receiver<bool>) -> bool {
        let mut bootstrapped = self.bootstrapped.subscribe();
        tokio::select! {
            ready = bootstrapped.wait_for(|ready| *ready) => ready.is_ok(),
            () = stopped(stopping) => false,
        }
    }
}

/// Jittered exponential back-off: the delay doubles from `min_ms`, each delay is spread
/// over [d, 2d) so that a fleet of agents does not retry in step, and none exceeds `max_ms`.
fn backoff(min_ms: u64, max_ms: u64) -> impl Iterator<Item = Duration> + Send {
    let (min, max) = (Duration::from_millis(min_ms), Duration::from_millis(max_ms));
    ExponentialBuilder::new()
        .with_min_delay(min)
        .with_max_delay((max / 2).max(min))
        .without_max_times()
        .with_jitter()
        // backon without its `std` feature seeds every process alike: all the agents of a
        // fleet would then "jitter" identically after a hub outage.
        .with_jitter_seed(rand::random())
        .build()
        .map(move |delay| delay.min(max))
}

/// Resolves when `stopping` turns true (or its sender is gone).
pub(crate) async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// Whether `stopping` is true now.
fn is_stopping(stopping: &watch::Receiver<bool>) -> bool {
    *stopping.borrow()
}

/// Sleeps for `delay`; false when stopping first.
pub(crate) async fn sleep_or_stop(delay: Duration, stopping: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => !is_stopping(stopping),
        () = stopped(stopping) => false,
    }
}

/// Runs `work` unless stopping comes first (`None`).
pub(crate) async fn or_stop<T>(stopping: &mut watch::Receiver<bool>, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        () = stopped(stopping) => None,
        done = work => Some(done),
    }
}

/// A task that ran this long without failing starts its restart back-off afresh.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// How long a task may take to notice `stopping` before it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs one task until it finishes or `stopping` turns true, restarting it (after a
/// back-off) when it returns an error or panics.
fn supervise<F, Fut>(
    name: &'static str,
    ctx: &Arc<Ctx>,
    stopping: &watch::Receiver<bool>,
    span: &tracing::Span,
    task: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(Arc<Ctx>, watch::Receiver<bool>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), SyncError>> + Send + 'static,
{
    let (ctx, mut stopping) = (ctx.clone(), stopping.clone());
    let span = tracing::info_span!(parent: span, "task", task = name);
    let inner_span = span.clone();
    tokio::spawn(
        async move {
            let mut restarts = backoff(500, 30_000);
            loop {
                let started = tokio::time::Instant::now();
                let mut running = tokio::spawn(task(ctx.clone(), stopping.clone()).instrument(inner_span.clone()));
                let outcome = tokio::select! {
                    outcome = &mut running => outcome,
                    () = stopped(&mut stopping) => match tokio::time::timeout(STOP_GRACE, &mut running).await {
                        Ok(outcome) => outcome,
                        Err(_) => {
                            running.abort();
                            tracing::warn!("the task did not stop within {STOP_GRACE:?}; aborted");
                            return;
                        }
                    },
                };
                match outcome {
                    Ok(Ok(())) => return,
                    Ok(Err(error)) if !is_stopping(&stopping) => {
                        tracing::error!(%error, "sync task failed; restarting it");
                    }
                    Err(failure) if failure.is_panic() => {
                        let panic = failure.into_panic();
                        let message = panic
                            .downcast_ref::<&str>()
                            .map(|s| (*s).to_owned())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "(no message)".into());
                        tracing::error!(panic = %message, "sync task panicked; restarting it");
                    }
                    Ok(Err(_)) | Err(_) => return,
                }
                if started.elapsed() >= HEALTHY_RUN {
                    restarts = backoff(500, 30_000);
                }
                let delay = restarts.next().unwrap_or(Duration::from_secs(30));
                if !sleep_or_stop(delay, &mut stopping).await {
                    return;
                }
            }
        }
        .instrument(span),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_stays_within_the_bounds() {
        let delays: Vec<Duration> = backoff(200, 10_000).take(12).collect();
        assert!(
            delays[0] >= Duration::from_millis(200) && delays[0] < Duration::from_millis(400),
            "{delays:?}"
        );
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_millis(200) && *d <= Duration::from_secs(10)),
            "{delays:?}"
        );
        assert!(delays[11] >= Duration::from_secs(5), "it grows to the cap: {delays:?}");
        // Two agents started together do not retry in step.
        let (a, b): (Vec<_>, Vec<_>) = (
            backoff(200, 10_000).take(6).collect(),
            backoff(200, 10_000).take(6).collect(),
        );
        assert_ne!(a, b);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_or_panicking_task_is_restarted_and_all_stop_promptly() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let local = LocalStore::open(&dir.path().join("edge.sqlite"), StoreId::new_v7()).unwrap();
        let config = Arc::new(EdgeConfig::default());
        let credentials = HubCredentials {
            store_id: StoreId::new_v7(),
            hub_url: "http://127.0.0.1:9".into(),
            ca_file: None,
            hub_token: "t".into(),
        };
        let status = Arc::new(LinkStatus::default());
        let ctx = Arc::new(Ctx {
            local: local.clone(),
            hub: Arc::new(Hub::new(&credentials, &config, status.clone())),
            status,
            store_id: credentials.store_id,
            config,
            bootstrapped: watch::Sender::new(false),
            upload_gate: tokio::sync::Mutex::new(()),
            log_checked: watch::Sender::new(false),
        });
        let (stop, stopping) = watch::channel(false);
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = runs.clone();
        let span = tracing::Span::none();
        let task = supervise("flaky", &ctx, &stopping, &span, move |_, mut stopping| {
            let run = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                match run {
                    0 => Err(SyncError::Local(LocalError::Storage("disk on fire".into()))),
                    1 => panic!("a bug"),
                    _ => {
                        stopped(&mut stopping).await;
                        Ok(())
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "restarted after an error and after a panic"
        );
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("stops promptly")
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        local.close().await;
    }
}
