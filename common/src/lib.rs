//! Code shared by the hub and the edge agent, grouped so that its layers are visible:
//!
//! - [`domain`]: the business rules (commands, events, `decide`/`apply`). Pure: no I/O.
//! - [`wire`]: the JSON shapes that cross the network. Pure data and validation.
//! - [`breaker`]: the circuit breaker both binaries guard a remote with, as a pure state
//!   machine that takes `now` from its caller.
//! - `sqlite` (feature `sqlite`): durable connections, migrations and the one
//!   group-commit writer both binaries build their databases on.
//! - `server` (feature `server`): the HTTP service glue (extractors, problem answers,
//!   middleware, telemetry, settings).
//! - `write_gate` (either feature): the pact between a request's time limit and the
//!   writers.
//! - `testing` (feature `testing`: dev-dependencies and the e2e harness crate, never the
//!   release binaries): the helpers every test and bench shares (the fault proxy, HTTP and OpenAPI checks, bench measurements).
//!
//! The features are the only way I/O enters this crate; `domain` and `wire` never
//! import from them.

// Production code never unwraps: an error becomes an answer, a log line or an exit code
// (clippy.toml allows it in tests).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod breaker;
pub mod domain;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "sqlite")]
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;
#[cfg(any(feature = "server", feature = "sqlite"))]
pub mod write_gate;

pub use domain::error::DomainError;
pub use domain::event::{EventEnvelope, EventMetadata, EventPayload, ExpectedVersion, Origin, StreamId};
pub use domain::ids::{EventId, IdKey, ProductId, ReservationId, StoreId};
pub use domain::inventory::{InventoryCommand, InventoryState};
pub use domain::product::Product;
pub use domain::quantity::StockQuantity;
