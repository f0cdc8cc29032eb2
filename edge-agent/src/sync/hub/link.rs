//! The hub link: every call to the hub goes through one circuit breaker, the
//! [`BreakerGuard`] the hub's query service uses too.
//!
//! `sync.breaker_failures` failures within `sync.breaker_window_secs` open the breaker:
//! calls are then refused at once, without touching the network, for the open period;
//! then one probe is let through, and its outcome closes the breaker or opens it again.
//! The open period starts at `sync.breaker_first_open_secs` (1 s); a probe that reached
//! the hub and failed doubles it, up to `sync.breaker_open_secs` (30 s); a probe that
//! found nothing listening (the hub is restarting) keeps it short, so a store is back
//! within about a second of its hub (see [`shelfsync_common::breaker`]). Every transition
//! is logged, written to [`LinkStatus`] (`breaker`, and `breaker_reason` while not
//! closed) and to the `shelfsync_edge_breaker_state` gauge; every call's outcome sets
//! `online` and `last_error`.
//!
//! The clock is tokio's (`tokio::time::Instant`), so tests with a paused clock drive it.

use super::client::HubError;
use crate::sync::{meters, LinkStatus};
use shelfsync_common::breaker::{Admission, BreakerConfig, BreakerGuard, BreakerState, Permit, Transition};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Why a call through the link did not return the hub's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The breaker is open: nothing was sent.
    #[error("the hub link is open (calls paused) for {retry_after:?} more")]
    Open {
        /// Until the next probe may pass (zero while another call is probing).
        retry_after: Duration,
    },
    /// The call was made and failed.
    #[error(transparent)]
    Hub(#[from] HubError),
}

/// The breaker shared by every task of the worker.
#[derive(Debug)]
pub struct Link {
    guard: BreakerGuard,
    status: Arc<LinkStatus>,
    /// The breaker's phase, sent on every transition.
    phase: Arc<watch::Sender<BreakerState>>,
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Link {
    /// A closed link with `config`'s thresholds, reporting to `status`.
    pub fn new(config: BreakerConfig, status: Arc<LinkStatus>) -> Self {
        status.update(|s| s.breaker = BreakerState::Closed.as_str());
        metrics::gauge!(meters::BREAKER_STATE).set(BreakerState::Closed.gauge_value());
        let phase = Arc::new(watch::Sender::new(BreakerState::Closed));
        let guard = BreakerGuard::new(config, now, {
            let (status, phase) = (status.clone(), phase.clone());
            move |change| publish(&status, &phase, change)
        });
        Self { guard, status, phase }
    }

    /// The breaker's phase now.
    pub fn state(&self) -> BreakerState {
        self.guard.state()
    }

    /// Makes `call` through the breaker: refused at once while it is open, else awaited
    /// and its outcome counted. `call` is not polled when the breaker refuses.
    pub async fn call<T>(&self, what: &str, call: impl Future<Output = Result<T, HubError>>) -> Result<T, CallError> {
        let permit = self.guard.acquire().map_err(|open| {
            self.status.update(|s| s.online = false);
            CallError::Open {
                retry_after: open.retry_after,
            }
        })?;
        match call.await {
            Ok(answer) => {
                permit.succeeded();
                let closed = *self.phase.borrow() == BreakerState::Closed;
                self.status.update(|s| {
                    s.online = closed;
                    s.last_error = None;
                });
                Ok(answer)
            }
            Err(error) => {
                tracing::debug!(call = what, %error, "hub call failed");
                self.failed(Some(permit), what, &error);
                Err(CallError::Hub(error))
            }
        }
    }

    /// Counts a failure found after a call succeeded (e.g. the push stream sent data that
    /// breaks the protocol).
    pub fn report_failure(&self, what: &str, error: &HubError) {
        self.failed(None, what, error);
    }

    /// Waits until a call may pass: at once while closed; while open, until the probe is
    /// due; while another call probes, until its outcome is known. False when stopping
    /// first.
    pub async fn ready(&self, stopping: &mut watch::Receiver<bool>) -> bool {
        loop {
            let mut phase = self.phase.subscribe();
            let wait = match self.guard.admission() {
                Admission::Now => return true,
                Admission::AfterProbe => None,
                Admission::In(delay) => Some(delay),
            };
            tokio::select! {
                () = crate::sync::stopped(stopping) => return false,
                _ = phase.changed() => {}
                () = sleep_some(wait) => {}
            }
        }
    }

    /// Resolves when the breaker next closes after having been open (the hub answers
    /// again); never while it just stays closed.
    pub async fn reopened_and_closed(&self) {
        let mut phase = self.phase.subscribe();
        let _ = phase.wait_for(|state| *state != BreakerState::Closed).await;
        let _ = phase.wait_for(|state| *state == BreakerState::Closed).await;
    }

    /// Counts a failed call (`permit`) or a failure found outside one.
    fn failed(&self, permit: Option<Permit<'_>>, what: &str, error: &HubError) {
        let reason = format!("{what}: {error}");
        match permit {
            Some(permit) => permit.failed(error.failure(), &reason),
            None => self.guard.report_failure(error.failure(), &reason),
        };
        self.status.update(|s| {
            s.online = false;
            s.last_error = Some(reason);
        });
    }
}

/// Publishes a phase change of the breaker: log, status, gauge, watchers.
fn publish(status: &LinkStatus, phase: &watch::Sender<BreakerState>, change: Transition<'_>) {
    let reason = change.reason.unwrap_or("");
    match change.to {
        BreakerState::Open if change.from == BreakerState::HalfOpen => tracing::warn!(
            reason,
            "hub link open again: the probe failed; the store keeps working locally and probes again later"
        ),
        BreakerState::Open => tracing::warn!(
            reason,
            "hub link open: too many failed calls to the hub; calls are paused and the store keeps working \
             locally (sales wait in the outbox)"
        ),
        BreakerState::HalfOpen => tracing::info!("hub link half-open: the next call probes the hub"),
        BreakerState::Closed => tracing::info!(was = change.from.as_str(), "hub link closed: the hub answers again"),
    }
    metrics::gauge!(meters::BREAKER_STATE).set(change.to.gauge_value());
    status.update(|s| {
        s.breaker = change.to.as_str();
        match change.to {
            BreakerState::Open => {
                s.online = false;
                s.breaker_reason = change.reason.map(str::to_owned);
                // A probe cancelled mid-call fails with no error of its own: say why.
                if let Some(reason) = change.reason {
                    s.last_error = Some(reason.to_owned());
                }
            }
            BreakerState::Closed => s.breaker_reason = None,
            BreakerState::HalfOpen => {}
        }
    });
    phase.send_replace(change.to);
}

async fn sleep_some(delay: Option<Duration>) {
    match delay {
        Some(delay) => tokio::time::sleep(delay).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::time::advance;

    fn link() -> (Arc<Link>, Arc<LinkStatus>) {
        let status = Arc::new(LinkStatus::default());
        (Arc::new(Link::new(BreakerConfig::default(), status.clone())), status)
    }

    fn down() -> HubError {
        HubError::Unreachable("connection refused".into())
    }

    /// A call that counts whether it ran, and fails or succeeds.
    async fn counted(calls: &AtomicUsize, result: Result<(), HubError>) -> Result<(), HubError> {
        calls.fetch_add(1, Ordering::SeqCst);
        result
    }

    async fn fail_times(link: &Link, calls: &AtomicUsize, times: usize, every: Duration) {
        for _ in 0..times {
            let outcome = link.call("upload", counted(calls, Err(down()))).await;
            assert!(matches!(outcome, Err(CallError::Hub(_))), "{outcome:?}");
            advance(every).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn five_failures_within_ten_seconds_open_it_and_calls_are_refused_without_the_network() {
        let (link, status) = link();
        let calls = AtomicUsize::new(0);
        link.call("pull", counted(&calls, Ok(()))).await.unwrap();
        assert!(status.get().online);
        fail_times(&link, &calls, 4, Duration::from_secs(2)).await;
        assert_eq!(link.state(), BreakerState::Closed, "four failures do not open it");
        assert_eq!(status.get().breaker, "closed");
        assert!(!status.get().online, "the last call failed");
        assert!(status.get().last_error.unwrap().contains("connection refused"));

        fail_times(&link, &calls, 1, Duration::ZERO).await;
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        assert_eq!(link.state(), BreakerState::Open);
        let shown = status.get();
        assert_eq!((shown.breaker, shown.online), ("open", false));
        let reason = shown.breaker_reason.expect("a reason");
        assert!(
            reason.contains("upload") && reason.contains("connection refused"),
            "{reason}"
        );

        advance(Duration::from_millis(400)).await;
        let refused = link.call("upload", counted(&calls, Ok(()))).await;
        assert_eq!(
            refused,
            Err(CallError::Open {
                retry_after: Duration::from_millis(600)
            }),
            "the first open period is a second"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            6,
            "an open breaker does not touch the network"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_spread_wider_than_the_window_do_not_open_it() {
        let (link, status) = link();
        let calls = AtomicUsize::new(0);
        fail_times(&link, &calls, 12, Duration::from_secs(3)).await;
        assert_eq!(link.state(), BreakerState::Closed);
        assert_eq!(status.get().breaker, "closed");
        assert_eq!(calls.load(Ordering::SeqCst), 12);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_open_period_one_probe_passes_and_its_success_closes_it() {
        let (link, status) = link();
        let calls = Arc::new(AtomicUsize::new(0));
        fail_times(&link, &calls, 5, Duration::ZERO).await;
        advance(Duration::from_millis(999)).await;
        assert!(matches!(
            link.call("x", counted(&calls, Ok(()))).await,
            Err(CallError::Open { .. })
        ));
        advance(Duration::from_millis(1)).await;
        assert_eq!(link.state(), BreakerState::HalfOpen);
        assert_eq!(status.get().breaker, "half_open");

        // The probe is in flight: it holds the only pass.
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let probe = tokio::spawn({
            let (link, calls) = (link.clone(), calls.clone());
            async move {
                link.call("probe", async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    finished.await.ok();
                    Ok(())
                })
                .await
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(calls.load(Ordering::SeqCst), 6, "the probe went out");
        let second = link.call("x", counted(&calls, Ok(()))).await;
        assert_eq!(
            second,
            Err(CallError::Open {
                retry_after: Duration::ZERO
            })
        );
        assert_eq!(calls.load(Ordering::SeqCst), 6, "only one probe at a time");

        finish.send(()).unwrap();
        probe.await.unwrap().unwrap();
        assert_eq!(link.state(), BreakerState::Closed);
        let shown = status.get();
        assert_eq!((shown.breaker, shown.online, shown.last_error), ("closed", true, None));
        assert_eq!(shown.breaker_reason, None, "no stale reason once the hub answers again");
        link.call("x", counted(&calls, Ok(()))).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_reached_the_hub_and_failed_opens_it_again_for_twice_as_long() {
        let (link, status) = link();
        let calls = AtomicUsize::new(0);
        fail_times(&link, &calls, 5, Duration::ZERO).await;
        advance(Duration::from_secs(1)).await;
        let unauthorized = HubError::Unauthorized {
            status: 401,
            detail: "revoked".into(),
        };
        let probe = link.call("heartbeat", counted(&calls, Err(unauthorized))).await;
        assert!(matches!(probe, Err(CallError::Hub(HubError::Unauthorized { .. }))));
        assert_eq!(link.state(), BreakerState::Open);
        let shown = status.get();
        assert_eq!(shown.breaker, "open");
        assert!(shown
            .breaker_reason
            .unwrap()
            .contains("the hub refused this store's token"));
        assert!(shown.last_error.unwrap().contains("the hub refused this store's token"));

        advance(Duration::from_millis(1999)).await;
        assert!(matches!(
            link.call("x", counted(&calls, Ok(()))).await,
            Err(CallError::Open { .. })
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 6);
        advance(Duration::from_millis(1)).await;
        link.call("x", counted(&calls, Ok(()))).await.unwrap();
        assert_eq!(status.get().breaker, "closed");
        assert_eq!(status.get().breaker_reason, None);
    }

    #[tokio::test(start_paused = true)]
    async fn while_nothing_listens_it_probes_every_second_and_closes_a_second_after_the_hub_is_back() {
        let (link, status) = link();
        let calls = AtomicUsize::new(0);
        let refused = || HubError::NoConnection("tcp connect error: Connection refused".into());
        for _ in 0..5 {
            let _ = link.call("upload", counted(&calls, Err(refused()))).await;
        }
        assert_eq!(link.state(), BreakerState::Open);
        let (_stop, mut stopping) = watch::channel(false);
        let outage_started = tokio::time::Instant::now();
        let hub_back = outage_started + Duration::from_secs(40);
        loop {
            assert!(link.ready(&mut stopping).await);
            let answer = if tokio::time::Instant::now() < hub_back {
                Err(refused())
            } else {
                Ok(())
            };
            if link.call("probe", counted(&calls, answer)).await.is_ok() {
                break;
            }
            assert_eq!(status.get().breaker, "open");
        }
        let closed_after = tokio::time::Instant::now() - hub_back;
        assert!(closed_after <= Duration::from_secs(1), "{closed_after:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 5 + 39 + 1, "one cheap probe a second");
        assert_eq!(status.get().breaker, "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_for_the_link_ends_when_the_probe_is_due_or_when_stopping() {
        let (link, _) = link();
        let calls = AtomicUsize::new(0);
        let (stop, mut stopping) = watch::channel(false);
        assert!(link.ready(&mut stopping).await, "closed: at once");
        fail_times(&link, &calls, 5, Duration::ZERO).await;
        let started = tokio::time::Instant::now();
        assert!(link.ready(&mut stopping).await);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(1),
            "waits exactly until the probe is due"
        );

        // Another caller waits while the probe is in flight, and goes on once it settled.
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        let probe = tokio::spawn({
            let link = link.clone();
            async move {
                link.call("probe", async move { finished.await.map_err(|_| down()) })
                    .await
            }
        });
        tokio::task::yield_now().await;
        let waiter = tokio::spawn({
            let (link, mut stopping) = (link.clone(), stopping.clone());
            async move { link.ready(&mut stopping).await }
        });
        advance(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished());
        finish.send(()).unwrap();
        probe.await.unwrap().unwrap();
        assert!(waiter.await.unwrap());

        fail_times(&link, &calls, 5, Duration::ZERO).await;
        let waiter = tokio::spawn({
            let link = link.clone();
            async move { link.ready(&mut stopping).await }
        });
        advance(Duration::from_millis(500)).await;
        stop.send(true).unwrap();
        assert!(!waiter.await.unwrap(), "stopping ends the wait");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_does_not_wedge_the_breaker() {
        let (link, _) = link();
        let calls = AtomicUsize::new(0);
        fail_times(&link, &calls, 5, Duration::ZERO).await;
        advance(Duration::from_secs(1)).await;
        let probe = link.call("probe", std::future::pending::<Result<(), HubError>>());
        assert!(
            tokio::time::timeout(Duration::from_secs(1), probe).await.is_err(),
            "cancelled"
        );
        assert_eq!(link.state(), BreakerState::Open, "counted as a failed probe");
        advance(Duration::from_secs(30)).await;
        link.call("x", counted(&calls, Ok(()))).await.unwrap();
        assert_eq!(link.state(), BreakerState::Closed);
    }
}
