//! The shelfsync domain model and wire types, shared by the hub and the edge agent.
//!
//! This crate is pure: no async runtime, no HTTP, no database. It owns the rules of the
//! business (what a command may do to a stock stream, and what each event means) as the
//! two functions [`inventory::decide`] and [`inventory::apply`] (and their catalog
//! twins), and the JSON shapes that cross the network, so that both binaries serialize
//! and validate exactly the same structs.

// Production code never unwraps: an error becomes an answer, a log line or an exit code
// (clippy.toml allows it in tests).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod breaker;
pub mod catalog;
pub mod edge;
pub mod error;
pub mod event;
#[cfg(feature = "sqlite")]
pub mod group_commit;
pub mod ids;
pub mod inventory;
pub mod problem;
pub mod product;
pub mod quantity;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod sync;
pub mod timestamp;
pub mod wire;
#[cfg(any(feature = "server", feature = "sqlite"))]
pub mod write_gate;

pub use error::DomainError;
pub use event::{EventEnvelope, EventMetadata, EventPayload, ExpectedVersion, Origin, StreamId};
pub use ids::{EventId, IdKey, ProductId, ReservationId, StoreId};
pub use inventory::{InventoryCommand, InventoryState};
pub use product::Product;
pub use quantity::StockQuantity;
