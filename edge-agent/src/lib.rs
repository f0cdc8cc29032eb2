//! shelfsync-edge: the daemon on each store's machine. The tills talk only to it.
//!
//! [`store`] is the local SQLite store (outbox, hub-confirmed state, catalog) with its
//! in-memory view (local state = confirmed + pending).

pub mod store;
