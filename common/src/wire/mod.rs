//! The JSON shapes that cross the network, shared by the hub, the edge agent and the
//! tests so that every side (de)serializes the same structs: the hub's HTTP API bodies
//! ([`api`]), the edge agent's local API for the tills ([`edge`]), the sync protocol
//! between agent and hub ([`sync`]), the problem body every error answer carries
//! ([`problem`]), the fingerprint that tells a retried write from another one
//! ([`fingerprint`]) and the [`secret::Secret`] type that keeps tokens out of `Debug`
//! output. Pure data and validation, no I/O.

pub mod analytics;
pub mod api;
pub mod edge;
pub mod enrollment;
pub mod fingerprint;
pub mod jobs;
pub mod problem;
pub mod secret;
pub mod sync;
