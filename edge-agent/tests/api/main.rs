//! The POS API over real HTTP against an in-process agent whose hub is unreachable: sales,
//! refusals that write nothing, idempotent retries, keys, validation, the status page, the
//! operator routes and the OpenAPI document. One file a concern: [`selling`],
//! [`idempotency`], [`keys`], [`validation`], [`ops`]. The agent comes from its test kit
//! ([`shelfsync_edge::testing`]).

mod support;

use serde_json::{json, Value};
use shelfsync_edge::testing::{Options, TestAgent, MANAGER, SNAPSHOT_AT, TERMINAL};
use support::{assert_problem, call};

mod idempotency;
mod keys;
mod ops;
mod selling;
mod validation;
