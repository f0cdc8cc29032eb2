//! The end-to-end fault suite's harness: real `shelfsync-hub` and `shelfsync-edge`
//! processes, a fault-injecting TCP proxy between every agent and the hub, a seeded POS
//! workload, and a checker that proves convergence and that no acknowledged sale is lost
//! or doubled. The scenarios are in `tests/faults.rs`, the hub's crash tests in
//! `tests/hub_crash/`, several hubs behind HAProxy in `tests/haproxy_cluster/`;
//! `docs/testing.md` explains them.
//!
//! - [`bins`]: builds and finds the two binaries.
//! - [`process`]: hub and agent processes (start, SIGKILL, SIGTERM, restart).
//! - the fault-injecting proxy is `shelfsync_common::testing::proxy` (feature `testing`),
//!   shared with the agent's sync tests.
//! - [`workload`]: tills that sell at an agent, with idempotent retries.
//! - [`checker`]: quiescence, log shape, acknowledged writes, convergence, oversells.
//! - [`cluster`]: a hub and its stores wired together, seed and soak settings.
//! - [`haproxy`]: a real HAProxy from `installers/haproxy.cfg`; [`ha_cluster`]: three
//!   hubs on one PostgreSQL database behind it, with agents and web clients
//!   (`tests/haproxy_cluster/`).
//!
//! The crate also holds the `shelfsync-demo` binary (`cargo run`).

pub mod bins;
pub mod checker;
pub mod cluster;
pub mod ha_cluster;
pub mod haproxy;
pub mod process;
pub mod workload;
