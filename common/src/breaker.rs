//! A circuit breaker as a pure state machine: the caller passes `now` to every call, so
//! the same code runs under tokio's paused clock in tests and the real clock in service.
//!
//! Closed: calls pass; `failure_threshold` failures within `failure_window` open it.
//! Open: calls are refused until the open period has passed; then one probe is let
//! through (half-open). The probe's success closes the breaker; its failure opens it
//! again.
//!
//! The open period adapts to what the failures cost the far side. It starts at
//! `first_open_for` (short, so that a brief outage is over quickly); each probe that
//! reached the far side and failed (a timeout, an error answer) doubles it, up to
//! `open_for`, which is the breaker's purpose: a struggling service is asked rarely. A
//! probe that never reached it ([`Failure::Refused`]: nothing listens, e.g. a restart)
//! cost it nothing, so the next one comes after `first_open_for` again, and the breaker
//! closes within about that long of the service being back.
//!
//! [`BreakerGuard`] shares one breaker between concurrent callers, with a permit per
//! call; both binaries use it (the hub around its read model, the agent around the hub).

mod guard;

pub use guard::{Admission, BreakerGuard, Permit, Transition};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Thresholds of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures that open the breaker...
    pub failure_threshold: u32,
    /// ...when they fall within this window.
    pub failure_window: Duration,
    /// The longest it stays open before letting one probe through.
    pub open_for: Duration,
    /// The open period after the breaker trips, and after a probe that was refused
    /// (at most `open_for`).
    pub first_open_for: Duration,
}

impl Default for BreakerConfig {
    /// Five failures in ten seconds open it; probes after 1 s, backing off to 30 s
    /// while probes reach the far side and fail.
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            failure_window: Duration::from_secs(10),
            open_for: Duration::from_secs(30),
            first_open_for: Duration::from_secs(1),
        }
    }
}

/// What a failed call cost the far side, which decides how soon to probe again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The call never reached it (connection refused: nothing listens). Probing again
    /// costs it nothing.
    Refused,
    /// The call reached it, or may have, and failed or was too slow: back off.
    Failed,
}

/// The breaker's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls are refused.
    Open,
    /// One probe may pass.
    HalfOpen,
}

impl BreakerState {
    /// Lower-case name for status pages and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The value of a breaker gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        }
    }
}

/// The breaker refused a call; retry after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerOpen {
    /// Time until the next probe may pass (zero while a probe is in flight).
    pub retry_after: Duration,
}

/// A circuit breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    recent_failures: VecDeque<Instant>,
    opened_at: Option<Instant>,
    /// How long the current (or next) open period lasts.
    open_period: Duration,
    probe_in_flight: bool,
    trip_reason: Option<String>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            recent_failures: VecDeque::new(),
            opened_at: None,
            open_period: config.first_open_for.min(config.open_for),
            probe_in_flight: false,
            trip_reason: None,
        }
    }

    /// The phase at `now` (an open breaker whose wait is over reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match (self.state, self.opened_at) {
            (BreakerState::Open, Some(at)) if now.duration_since(at) >= self.open_period => BreakerState::HalfOpen,
            (state, _) => state,
        }
    }

    /// The failure that opened the breaker, while it is not closed.
    pub fn trip_reason(&self) -> Option<&str> {
        self.trip_reason.as_deref()
    }

    /// How long the current open period lasts (the next one, while closed).
    pub fn open_period(&self) -> Duration {
        self.open_period
    }

    /// A half-open breaker let its probe through and waits for its outcome.
    pub fn probe_in_flight(&self) -> bool {
        self.probe_in_flight
    }

    /// Asks to make a call at `now`. `Ok` means go ahead and report the outcome.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), BreakerOpen> {
        match self.state(now) {
            BreakerState::Closed => Ok(()),
            BreakerState::Open => {
                let waited = self.opened_at.map_or(Duration::ZERO, |at| now.duration_since(at));
                Err(BreakerOpen {
                    retry_after: self.open_period.saturating_sub(waited),
                })
            }
            BreakerState::HalfOpen if self.probe_in_flight => Err(BreakerOpen {
                retry_after: Duration::ZERO,
            }),
            BreakerState::HalfOpen => {
                self.state = BreakerState::HalfOpen;
                self.probe_in_flight = true;
                Ok(())
            }
        }
    }

    /// Reports a successful call.
    pub fn on_success(&mut self) {
        self.state = BreakerState::Closed;
        self.recent_failures.clear();
        self.opened_at = None;
        self.open_period = self.first_open_period();
        self.probe_in_flight = false;
        self.trip_reason = None;
    }

    /// Reports a failed call at `now`, with a reason for the logs and status pages.
    /// Returns true when this failure opened the breaker.
    pub fn on_failure(&mut self, now: Instant, failure: Failure, reason: &str) -> bool {
        if self.state == BreakerState::HalfOpen {
            self.open_period = match failure {
                Failure::Refused => self.first_open_period(),
                Failure::Failed => self.open_period.saturating_mul(2).min(self.config.open_for),
            };
            self.open(now, reason);
            return true;
        }
        if self.state == BreakerState::Open {
            return false;
        }
        while self
            .recent_failures
            .front()
            .is_some_and(|at| now.duration_since(*at) > self.config.failure_window)
        {
            self.recent_failures.pop_front();
        }
        self.recent_failures.push_back(now);
        if self.recent_failures.len() >= self.config.failure_threshold as usize {
            self.open_period = self.first_open_period();
            self.open(now, reason);
            return true;
        }
        false
    }

    fn first_open_period(&self) -> Duration {
        self.config.first_open_for.min(self.config.open_for)
    }

    fn open(&mut self, now: Instant, reason: &str) {
        self.state = BreakerState::Open;
        self.opened_at = Some(now);
        self.probe_in_flight = false;
        self.recent_failures.clear();
        self.trip_reason = Some(reason.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn breaker() -> (CircuitBreaker, Instant) {
        (CircuitBreaker::new(BreakerConfig::default()), Instant::now())
    }

    /// Opens `b` at `at` with five failures of `kind`.
    fn trip(b: &mut CircuitBreaker, at: Instant, kind: Failure) {
        for _ in 0..5 {
            b.on_failure(at, kind, "down");
        }
        assert_eq!(b.state(at), BreakerState::Open);
    }

    /// Waits out the open period from `at`, lets the probe through and fails it; returns
    /// when that happened.
    fn fail_probe(b: &mut CircuitBreaker, at: Instant, kind: Failure) -> Instant {
        let due = at + b.open_period();
        assert!(
            b.try_acquire(due - Duration::from_millis(1)).is_err(),
            "not before it is due"
        );
        assert!(b.try_acquire(due).is_ok(), "the probe passes when due");
        assert!(b.on_failure(due, kind, "still down"));
        due
    }

    #[test]
    fn five_failures_within_ten_seconds_open_it() {
        let (mut b, t0) = breaker();
        for i in 0..4 {
            assert!(!b.on_failure(t0 + SECOND * i, Failure::Failed, "timeout"));
            assert_eq!(b.state(t0), BreakerState::Closed);
        }
        assert!(b.on_failure(t0 + SECOND * 4, Failure::Failed, "timeout"));
        assert_eq!(b.state(t0 + SECOND * 4), BreakerState::Open);
        assert_eq!(b.trip_reason(), Some("timeout"));
        let refused = b.try_acquire(t0 + SECOND * 4 + Duration::from_millis(400)).unwrap_err();
        assert_eq!(
            refused.retry_after,
            Duration::from_millis(600),
            "the first open period is 1 s"
        );
    }

    #[test]
    fn failures_spread_wider_than_the_window_do_not_open_it() {
        let (mut b, t0) = breaker();
        for i in 0..10 {
            b.on_failure(t0 + SECOND * (i * 3), Failure::Failed, "timeout");
        }
        assert_eq!(b.state(t0 + SECOND * 30), BreakerState::Closed);
    }

    #[test]
    fn after_the_wait_one_probe_passes_and_its_outcome_decides() {
        let (mut b, t0) = breaker();
        trip(&mut b, t0, Failure::Failed);
        let later = t0 + SECOND;
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.try_acquire(later).is_ok());
        assert!(b.try_acquire(later).is_err(), "only one probe at a time");
        assert!(b.on_failure(later, Failure::Failed, "still down"));
        assert_eq!(b.state(later), BreakerState::Open);
        assert_eq!(b.trip_reason(), Some("still down"));
        let again = later + SECOND * 2;
        assert!(b.try_acquire(again).is_ok());
        b.on_success();
        assert_eq!(b.state(again), BreakerState::Closed);
        assert_eq!(b.trip_reason(), None, "a closed breaker has no reason to show");
        assert!(b.try_acquire(again).is_ok());
    }

    #[test]
    fn probes_that_reach_a_failing_service_back_off_to_the_configured_period() {
        let (mut b, t0) = breaker();
        trip(&mut b, t0, Failure::Failed);
        let mut at = t0;
        let mut periods = Vec::new();
        for _ in 0..7 {
            periods.push(b.open_period().as_secs());
            at = fail_probe(&mut b, at, Failure::Failed);
        }
        assert_eq!(periods, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(b.open_period(), SECOND * 30);

        // A success starts the next outage short again.
        assert!(b.try_acquire(at + SECOND * 30).is_ok());
        b.on_success();
        trip(&mut b, at + SECOND * 31, Failure::Failed);
        assert_eq!(b.open_period(), SECOND);
    }

    #[test]
    fn a_refused_probe_probes_again_soon_whatever_the_period_had_grown_to() {
        let (mut b, t0) = breaker();
        trip(&mut b, t0, Failure::Refused);
        let mut at = t0;
        for _ in 0..40 {
            at = fail_probe(&mut b, at, Failure::Refused);
            assert_eq!(b.open_period(), SECOND, "nothing listens: asking again is free");
        }
        assert_eq!(at, t0 + SECOND * 40, "a 40 s restart costs at most 1 s after it ends");

        // The service listens again but fails: back off from there.
        at = fail_probe(&mut b, at, Failure::Failed);
        assert_eq!(b.open_period(), SECOND * 2);
        at = fail_probe(&mut b, at, Failure::Failed);
        assert_eq!(b.open_period(), SECOND * 4);
        fail_probe(&mut b, at, Failure::Refused);
        assert_eq!(b.open_period(), SECOND);
    }

    #[test]
    fn the_first_period_never_exceeds_the_configured_one() {
        let config = BreakerConfig {
            open_for: Duration::from_millis(500),
            ..BreakerConfig::default()
        };
        let mut b = CircuitBreaker::new(config);
        let t0 = Instant::now();
        trip(&mut b, t0, Failure::Refused);
        assert_eq!(b.open_period(), Duration::from_millis(500));
    }
}
