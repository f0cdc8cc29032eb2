//! shelfsync-hub: the authoritative event store of a shelfsync fleet and its HTTP API.
//!
//! The write side ([`store`]) is one event log in SQLite with a single group-committing
//! writer; the read side ([`projection`], [`query`]) folds that log into a stock read
//! model behind a TTL cache and a circuit breaker; [`api`] is the HTTP surface for web
//! shops, apps and back-office tools. [`run`] wires them together for the binary and for
//! tests, which start the real thing in-process on a port-0 listener.

pub mod bus;
pub mod store;
