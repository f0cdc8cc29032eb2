//! A circuit breaker as a pure state machine: the caller passes `now` to every call, so
//! the same code runs under tokio's paused clock in tests and the real clock in service.
//!
//! Closed: calls pass; `failure_threshold` failures within `failure_window` open it.
//! Open: calls are refused until `open_for` has passed; then one probe is let through
//! (half-open). The probe's success closes the breaker; its failure opens it again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Thresholds of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures that open the breaker...
    pub failure_threshold: u32,
    /// ...when they fall within this window.
    pub failure_window: Duration,
    /// How long it stays open before letting one probe through.
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    /// Five failures in ten seconds open it for thirty seconds (design, section 6).
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            failure_window: Duration::from_secs(10),
            open_for: Duration::from_secs(30),
        }
    }
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
            probe_in_flight: false,
            trip_reason: None,
        }
    }

    /// The phase at `now` (an open breaker whose wait is over reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match (self.state, self.opened_at) {
            (BreakerState::Open, Some(at)) if now.duration_since(at) >= self.config.open_for => BreakerState::HalfOpen,
            (state, _) => state,
        }
    }

    /// The failure that last opened the breaker.
    pub fn trip_reason(&self) -> Option<&str> {
        self.trip_reason.as_deref()
    }

    /// Asks to make a call at `now`. `Ok` means go ahead and report the outcome.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), BreakerOpen> {
        match self.state(now) {
            BreakerState::Closed => Ok(()),
            BreakerState::Open => {
                let waited = self.opened_at.map_or(Duration::ZERO, |at| now.duration_since(at));
                Err(BreakerOpen {
                    retry_after: self.config.open_for.saturating_sub(waited),
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
        self.probe_in_flight = false;
    }

    /// Reports a failed call at `now`, with a reason for the logs and status pages.
    /// Returns true when this failure opened the breaker.
    pub fn on_failure(&mut self, now: Instant, reason: &str) -> bool {
        if self.state == BreakerState::HalfOpen {
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
            self.open(now, reason);
            return true;
        }
        false
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

    fn breaker() -> (CircuitBreaker, Instant) {
        (CircuitBreaker::new(BreakerConfig::default()), Instant::now())
    }

    #[test]
    fn five_failures_within_ten_seconds_open_it() {
        let (mut b, t0) = breaker();
        for i in 0..4 {
            assert!(!b.on_failure(t0 + Duration::from_secs(i), "timeout"));
            assert_eq!(b.state(t0), BreakerState::Closed);
        }
        assert!(b.on_failure(t0 + Duration::from_secs(4), "timeout"));
        assert_eq!(b.state(t0 + Duration::from_secs(4)), BreakerState::Open);
        assert_eq!(b.trip_reason(), Some("timeout"));
        let refused = b.try_acquire(t0 + Duration::from_secs(14)).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(20));
    }

    #[test]
    fn failures_spread_wider_than_the_window_do_not_open_it() {
        let (mut b, t0) = breaker();
        for i in 0..10 {
            b.on_failure(t0 + Duration::from_secs(i * 3), "timeout");
        }
        assert_eq!(b.state(t0 + Duration::from_secs(30)), BreakerState::Closed);
    }

    #[test]
    fn after_the_wait_one_probe_passes_and_its_outcome_decides() {
        let (mut b, t0) = breaker();
        for _ in 0..5 {
            b.on_failure(t0, "refused");
        }
        let later = t0 + Duration::from_secs(30);
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        assert!(b.try_acquire(later).is_ok());
        assert!(b.try_acquire(later).is_err(), "only one probe at a time");
        assert!(b.on_failure(later, "still down"));
        assert_eq!(b.state(later), BreakerState::Open);
        let again = later + Duration::from_secs(30);
        assert!(b.try_acquire(again).is_ok());
        b.on_success();
        assert_eq!(b.state(again), BreakerState::Closed);
        assert!(b.try_acquire(again).is_ok());
    }
}
