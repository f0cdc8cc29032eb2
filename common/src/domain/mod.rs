//! The business rules, and nothing else: no I/O, no async runtime, no HTTP, no database.
//!
//! What a command may do to a stock stream and what each event means are the two pure
//! functions [`inventory::decide`] and [`inventory::apply`] (and their catalog twins in
//! [`catalog`]); the envelope every event travels in is [`event`]; the identifiers,
//! quantities and times they carry are checked where they are made ([`ids`],
//! [`quantity`], [`timestamp`]). Both binaries run exactly this code, so a till offline
//! and the hub decide a command the same way.

pub mod allocation;
pub mod catalog;
pub mod error;
pub mod event;
pub mod ids;
pub mod inventory;
pub mod product;
pub mod quantity;
pub mod timestamp;
