//! The guard both binaries put in front of a remote: one [`CircuitBreaker`] shared by
//! concurrent callers, a [`Permit`] per call that reports its outcome, and a callback for
//! every phase change, so that each owner keeps its own logs, gauge and status page.
//!
//! Used by the hub's query service (around the read model) and the agent's hub link
//! (around every call to the hub). What the guard adds to the bare breaker:
//!
//! - **Permits.** A call asks for a [`Permit`] and settles it with
//!   [`Permit::succeeded`] or [`Permit::failed`]. The permit knows whether it is the
//!   half-open breaker's only probe; a probe dropped unsettled (the call was cancelled)
//!   counts as failed, so the breaker never waits for a probe that will not report.
//! - **Transitions.** Every time the guard looks at the breaker (asking, settling,
//!   reading the state) it compares the phase with the one it last reported and calls
//!   `on_change` with a [`Transition`] when it moved. `on_change` runs under the guard's
//!   lock, so transitions arrive in order; it must not call the guard.
//! - **Admission.** [`BreakerGuard::admission`] says when the next call may pass, for
//!   callers that wait instead of being refused.
//!
//! The clock is the owner's (both binaries pass tokio's, so tests with a paused clock
//! drive it).

use super::{BreakerConfig, BreakerOpen, BreakerState, CircuitBreaker, Failure};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A phase change, as the guard saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition<'a> {
    /// The phase last reported.
    pub from: BreakerState,
    /// The phase now.
    pub to: BreakerState,
    /// The failure that opened the breaker (`None` once it closed).
    pub reason: Option<&'a str>,
    /// How long the current open period lasts (the next one, while closed).
    pub open_for: Duration,
}

/// When the next call may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Now (closed, or half-open with the probe still free).
    Now,
    /// Once the probe in flight has reported.
    AfterProbe,
    /// After this long (open, the probe not yet due).
    In(Duration),
}

type Clock = Box<dyn Fn() -> Instant + Send + Sync>;
type OnChange = Box<dyn Fn(Transition<'_>) + Send + Sync>;

/// One breaker shared by every caller of a remote.
pub struct BreakerGuard {
    inner: Mutex<Watched>,
    clock: Clock,
    on_change: OnChange,
}

impl std::fmt::Debug for BreakerGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakerGuard")
            .field("inner", &self.lock())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Watched {
    breaker: CircuitBreaker,
    /// The phase last passed to `on_change` (closed at the start).
    shown: BreakerState,
}

impl BreakerGuard {
    /// A closed guard with `config`'s thresholds, reading `clock` and reporting every
    /// phase change to `on_change` (not the initial, closed phase).
    pub fn new(
        config: BreakerConfig,
        clock: impl Fn() -> Instant + Send + Sync + 'static,
        on_change: impl Fn(Transition<'_>) + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner: Mutex::new(Watched {
                breaker: CircuitBreaker::new(config),
                shown: BreakerState::Closed,
            }),
            clock: Box::new(clock),
            on_change: Box::new(on_change),
        }
    }

    /// The phase now.
    pub fn state(&self) -> BreakerState {
        let mut inner = self.lock();
        self.observe(&mut inner, (self.clock)())
    }

    /// The failure that opened the breaker, while it is not closed.
    pub fn trip_reason(&self) -> Option<String> {
        self.lock().breaker.trip_reason().map(str::to_owned)
    }

    /// When the next call may pass. Asking changes nothing.
    pub fn admission(&self) -> Admission {
        let mut inner = self.lock();
        let now = (self.clock)();
        match self.observe(&mut inner, now) {
            BreakerState::Closed => Admission::Now,
            BreakerState::HalfOpen if inner.breaker.probe_in_flight() => Admission::AfterProbe,
            BreakerState::HalfOpen => Admission::Now,
            // Open and not yet due: asking does not change the breaker.
            BreakerState::Open => Admission::In(
                inner
                    .breaker
                    .try_acquire(now)
                    .err()
                    .map_or(Duration::ZERO, |open| open.retry_after),
            ),
        }
    }

    /// Asks to make a call: a permit to settle, or the breaker's refusal.
    pub fn acquire(&self) -> Result<Permit<'_>, BreakerOpen> {
        let mut inner = self.lock();
        let now = (self.clock)();
        let probe = self.observe(&mut inner, now) == BreakerState::HalfOpen;
        let acquired = inner.breaker.try_acquire(now);
        self.observe(&mut inner, now);
        acquired.map(|()| Permit {
            guard: self,
            probe,
            settled: false,
        })
    }

    /// Counts a failure found outside a permit (e.g. a stream that was opened and then
    /// broke the protocol). Returns the open period when it opened the breaker.
    pub fn report_failure(&self, failure: Failure, reason: &str) -> Option<Duration> {
        let mut inner = self.lock();
        self.fail(&mut inner, failure, reason)
    }

    fn lock(&self) -> MutexGuard<'_, Watched> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn fail(&self, inner: &mut Watched, failure: Failure, reason: &str) -> Option<Duration> {
        let now = (self.clock)();
        let opened = inner.breaker.on_failure(now, failure, reason);
        self.observe(inner, now);
        opened.then(|| inner.breaker.open_period())
    }

    fn succeed(&self, inner: &mut Watched) {
        inner.breaker.on_success();
        self.observe(inner, (self.clock)());
    }

    /// The phase at `now`, reported to `on_change` if it moved since last time.
    fn observe(&self, inner: &mut Watched, now: Instant) -> BreakerState {
        let state = inner.breaker.state(now);
        if state != inner.shown {
            let from = std::mem::replace(&mut inner.shown, state);
            (self.on_change)(Transition {
                from,
                to: state,
                reason: inner.breaker.trip_reason(),
                open_for: inner.breaker.open_period(),
            });
        }
        state
    }
}

/// Leave to make one call; settle it with its outcome. Dropped unsettled (the call was
/// cancelled), a probe counts as failed, so that the breaker does not wait for it forever;
/// any other call counts as nothing.
#[must_use = "a permit reports the call's outcome"]
#[derive(Debug)]
pub struct Permit<'a> {
    guard: &'a BreakerGuard,
    probe: bool,
    settled: bool,
}

impl Permit<'_> {
    /// This call is the half-open breaker's only probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The call succeeded: the breaker closes (if it was not).
    pub fn succeeded(mut self) {
        self.settled = true;
        let mut inner = self.guard.lock();
        self.guard.succeed(&mut inner);
    }

    /// The call failed for `reason`. Returns the open period when this failure opened the
    /// breaker.
    pub fn failed(mut self, failure: Failure, reason: &str) -> Option<Duration> {
        self.settled = true;
        let mut inner = self.guard.lock();
        self.guard.fail(&mut inner, failure, reason)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            let mut inner = self.guard.lock();
            self.guard.fail(&mut inner, Failure::Failed, "the probe was cancelled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const SECOND: Duration = Duration::from_secs(1);

    /// A clock the test moves by hand.
    #[derive(Clone)]
    struct FakeClock(Arc<Mutex<Instant>>);

    impl FakeClock {
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    /// Transitions as (from, to, reason).
    type Seen = Arc<Mutex<Vec<(BreakerState, BreakerState, Option<String>)>>>;

    /// A guard with the default thresholds (5 failures in 10 s, first open period 1 s),
    /// its clock, and what it reported.
    fn guard() -> (BreakerGuard, FakeClock, Seen) {
        let clock = FakeClock(Arc::new(Mutex::new(Instant::now())));
        let seen: Seen = Arc::default();
        let (reading, recording) = (clock.clone(), seen.clone());
        let guard = BreakerGuard::new(
            BreakerConfig::default(),
            move || *reading.0.lock().unwrap(),
            move |t| {
                recording
                    .lock()
                    .unwrap()
                    .push((t.from, t.to, t.reason.map(str::to_owned)))
            },
        );
        (guard, clock, seen)
    }

    fn trip(guard: &BreakerGuard) {
        for _ in 0..5 {
            let _ = guard.acquire().unwrap().failed(Failure::Failed, "down");
        }
        assert_eq!(guard.state(), BreakerState::Open);
    }

    #[test]
    fn given_a_closed_guard_when_calls_fail_then_the_one_that_opens_it_returns_the_open_period() {
        let (guard, _, seen) = guard();
        for _ in 0..4 {
            let permit = guard.acquire().expect("closed: calls pass");
            assert!(!permit.is_probe());
            assert_eq!(permit.failed(Failure::Failed, "timeout"), None);
        }
        let fifth = guard.acquire().unwrap().failed(Failure::Failed, "timeout");
        assert_eq!(fifth, Some(SECOND), "the first open period");
        assert_eq!(guard.trip_reason().as_deref(), Some("timeout"));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(BreakerState::Closed, BreakerState::Open, Some("timeout".into()))]
        );
    }

    #[test]
    fn given_an_open_guard_when_asked_then_it_refuses_and_says_when_the_probe_is_due() {
        let (guard, clock, _) = guard();
        trip(&guard);
        clock.advance(Duration::from_millis(400));
        let refused = guard.acquire().unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(600));
        assert_eq!(guard.admission(), Admission::In(Duration::from_millis(600)));
    }

    #[test]
    fn given_the_open_period_over_when_a_probe_passes_then_others_wait_for_it_and_its_success_closes() {
        let (guard, clock, seen) = guard();
        trip(&guard);
        clock.advance(SECOND);
        assert_eq!(guard.admission(), Admission::Now, "the probe is free");
        let probe = guard.acquire().expect("the probe passes");
        assert!(probe.is_probe());
        assert_eq!(guard.admission(), Admission::AfterProbe);
        assert!(guard.acquire().is_err(), "one probe at a time");
        probe.succeeded();
        assert_eq!(guard.state(), BreakerState::Closed);
        assert_eq!(guard.trip_reason(), None);
        let phases: Vec<_> = seen.lock().unwrap().iter().map(|(from, to, _)| (*from, *to)).collect();
        assert_eq!(
            phases,
            vec![
                (BreakerState::Closed, BreakerState::Open),
                (BreakerState::Open, BreakerState::HalfOpen),
                (BreakerState::HalfOpen, BreakerState::Closed),
            ]
        );
    }

    #[test]
    fn given_a_probe_when_it_is_dropped_unsettled_then_it_counts_as_failed() {
        let (guard, clock, seen) = guard();
        trip(&guard);
        clock.advance(SECOND);
        drop(guard.acquire().expect("the probe"));
        assert_eq!(guard.state(), BreakerState::Open, "not left waiting for the probe");
        assert_eq!(guard.trip_reason().as_deref(), Some("the probe was cancelled"));
        let last = seen.lock().unwrap().last().cloned();
        assert_eq!(
            last,
            Some((
                BreakerState::HalfOpen,
                BreakerState::Open,
                Some("the probe was cancelled".into())
            ))
        );
    }

    #[test]
    fn given_a_closed_guard_when_an_ordinary_permit_is_dropped_then_nothing_is_counted() {
        let (guard, _, seen) = guard();
        for _ in 0..10 {
            drop(guard.acquire().unwrap());
        }
        assert_eq!(guard.state(), BreakerState::Closed);
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn given_a_failure_found_outside_a_call_when_reported_then_it_counts_like_a_failed_call() {
        let (guard, _, _) = guard();
        for _ in 0..4 {
            assert_eq!(guard.report_failure(Failure::Failed, "garbled stream"), None);
        }
        assert_eq!(guard.report_failure(Failure::Failed, "garbled stream"), Some(SECOND));
        assert_eq!(guard.state(), BreakerState::Open);
    }

    #[test]
    fn given_an_open_guard_when_the_period_passes_then_reading_the_state_reports_half_open_once() {
        let (guard, clock, seen) = guard();
        trip(&guard);
        clock.advance(SECOND);
        assert_eq!(guard.state(), BreakerState::HalfOpen);
        assert_eq!(guard.state(), BreakerState::HalfOpen);
        assert_eq!(seen.lock().unwrap().len(), 2, "closed→open, open→half-open, each once");
    }
}
