//! One-step enrollment at the hub: making codes, and the limit on refused redemptions that
//! makes guessing one hopeless.
//!
//! A code has 40 bits (8 letters of 32, see `shelfsync_common::wire::enrollment`): about
//! 1.1e12 values. A guess succeeds with probability (live codes) / 2^40. The hub answers at
//! most `enrollment.max_failures_per_minute` refused redemptions per minute (20 by default),
//! counted before the code is looked up, so concurrent guesses cannot overrun it. With 20 a
//! minute, 10 codes live around the clock and a guesser never stopping, that is about
//! 20 * 60 * 24 * 365 * 10 / 2^40 = 1e-4 per year; one code's 15 minutes give it 300 guesses,
//! 3e-10. The price is that a guesser can hold enrollment up for the rest of a minute
//! (an operator then retries; store tokens are not affected).

use rand::Rng;
use shelfsync_common::wire::enrollment::{CODE_ALPHABET, CODE_LENGTH};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A new code in canonical form (8 letters, no dash).
pub fn new_code() -> String {
    let mut rng = rand::rng();
    (0..CODE_LENGTH)
        .map(|_| char::from(CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())]))
        .collect()
}

/// The window the failure limit counts in.
const WINDOW: Duration = Duration::from_secs(60);

/// At most `limit` redemption attempts that end refused per minute. Each attempt takes a
/// slot before it runs and gives it back when it succeeds.
#[derive(Debug)]
pub struct FailureLimiter {
    limit: u32,
    window: Mutex<(Instant, u32)>,
}

impl FailureLimiter {
    /// A limiter of `limit` refusals a minute.
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    /// Takes a slot; `Err(seconds to wait)` when this minute's are used up.
    pub fn acquire(&self) -> Result<(), u64> {
        let mut window = self.window.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        if now.duration_since(window.0) >= WINDOW {
            *window = (now, 0);
        }
        if window.1 >= self.limit {
            let left = WINDOW.saturating_sub(now.duration_since(window.0));
            return Err(left.as_secs().max(1));
        }
        window.1 += 1;
        Ok(())
    }

    /// Gives back a slot taken by an attempt that succeeded.
    pub fn release(&self) {
        let mut window = self.window.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        window.1 = window.1.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelfsync_common::wire::enrollment::normalize_code;

    #[test]
    fn new_codes_are_canonical_and_differ() {
        let (a, b) = (new_code(), new_code());
        assert_eq!(normalize_code(&a).as_deref(), Some(a.as_str()));
        assert_ne!(a, b);
    }

    #[test]
    fn refusals_past_the_limit_wait_and_successes_do_not_count() {
        let limiter = FailureLimiter::new(2);
        limiter.acquire().unwrap();
        limiter.release();
        limiter.acquire().unwrap();
        limiter.acquire().unwrap();
        let wait = limiter.acquire().unwrap_err();
        assert!((1..=60).contains(&wait), "{wait}");
    }
}
