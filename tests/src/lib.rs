//! The end-to-end fault suite's harness: real `shelfsync-hub` and `shelfsync-edge`
//! processes, a fault-injecting TCP proxy between every agent and the hub, a seeded POS
//! workload, and a checker that proves convergence and that no acknowledged sale is lost
//! or doubled. The scenarios are in `tests/faults.rs`, the hub's crash tests in
//! `tests/hub_crash/`; `docs/testing.md` explains them.
//!
//! - [`bins`]: builds and finds the two binaries.
//! - [`process`]: hub and agent processes (start, SIGKILL, SIGTERM, restart).
//! - the fault-injecting proxy is `shelfsync_common::testing::proxy` (feature `testing`),
//!   shared with the agent's sync tests.
//! - [`workload`]: tills that sell at an agent, with idempotent retries.
//! - [`checker`]: quiescence, log shape, acknowledged writes, convergence, oversells.
//! - [`cluster`]: a hub and its stores wired together, seed and soak settings.
//!
//! The crate also holds the `shelfsync-demo` binary (`cargo run`).

pub mod bins;
pub mod checker;
pub mod cluster;
pub mod process;
pub mod workload;
