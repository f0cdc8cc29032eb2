//! The pact between a request's time limit and the single writers: a request that was
//! answered "timed out" wrote nothing, and a write that will land is never answered
//! "timed out".
//!
//! Without it, a write queued behind a slow batch could outlive its request: the time
//! limit answered `503 timeout`, the client (told that nothing happened) moved on or sent
//! something else, and the queued job committed a moment later. Now each request runs in
//! a [`scope`] with its own [`WriteGate`], which every job it submits carries to the
//! writer. The writer [`claim`](WriteGate::claim)s the gate just before it runs the job;
//! the time limit [`close`](WriteGate::close)s it before it answers 503. Exactly one of
//! them wins: a closed gate makes the writer drop the job unrun, and a claimed gate makes
//! the time limit wait for the writer's real answer (a batch in flight takes one commit).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

const OPEN: u8 = 0;
const CLAIMED: u8 = 1;
const CLOSED: u8 = 2;

/// One request's gate; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct WriteGate(Arc<AtomicU8>);

tokio::task_local! {
    static GATE: WriteGate;
}

impl WriteGate {
    /// An open gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// The writer is about to run one of this request's jobs: true unless the request
    /// already gave up (then the job must not run).
    pub fn claim(&self) -> bool {
        match self
            .0
            .compare_exchange(OPEN, CLAIMED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == CLAIMED,
        }
    }

    /// The request's time is up: true when nothing was claimed, so nothing of it will
    /// ever be written (and answering "timed out" is the truth).
    pub fn close(&self) -> bool {
        match self
            .0
            .compare_exchange(OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == CLOSED,
        }
    }
}

/// Runs `future` (a request) with `gate` as its gate.
pub async fn scope<F: std::future::Future>(gate: WriteGate, future: F) -> F::Output {
    GATE.scope(gate, future).await
}

/// The gate of the request this task is serving, if it runs in a [`scope`]. Writes made
/// outside a request (jobs, the seed, tests) have none and always run.
pub fn current() -> Option<WriteGate> {
    GATE.try_with(Clone::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_and_the_time_limit_cannot_both_win() {
        let claimed_first = WriteGate::new();
        assert!(claimed_first.claim());
        assert!(claimed_first.claim(), "a request's second job runs too");
        assert!(!claimed_first.close(), "too late to say nothing was written");

        let closed_first = WriteGate::new();
        assert!(closed_first.close());
        assert!(!closed_first.claim(), "the writer drops the job");
        assert!(closed_first.close());
    }

    #[tokio::test]
    async fn a_scope_hands_its_gate_to_the_code_it_runs() {
        assert!(current().is_none());
        let gate = WriteGate::new();
        let seen = scope(gate.clone(), async { current() }).await;
        assert!(seen.expect("inside the scope").claim());
        assert!(!gate.close(), "the same gate");
    }
}
