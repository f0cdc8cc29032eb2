//! shelfsync-edge: the daemon on each store's machine. The tills talk only to it, and it
//! keeps selling while the hub is out of reach.
//!
//! [`store`] is the local SQLite store (outbox, hub-confirmed state, catalog) with its
//! in-memory view (local state = confirmed + pending); [`api`] is the POS API on the store
//! LAN; [`sync`] is the worker that uploads the outbox, follows the hub's push stream
//! (falling back to pulls), bootstraps from a snapshot and sends heartbeats, behind a
//! circuit breaker; [`jobs`] expires this store's reservations and maintains the file.
//! [`web`] is the store page at `/` for the store manager. [`run`] wires them together for
//! the binary and for tests.

// Production code never unwraps: an error becomes an answer, a log line or an exit code
// (clippy.toml allows it in tests).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod cli;
pub mod config;
pub mod enroll;
pub mod jobs;
pub mod offline;
pub mod store;
pub mod sync;
#[cfg(feature = "testing")]
pub mod testing;
pub mod web;

use crate::config::EdgeConfig;
use crate::store::LocalStore;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The local store's file name inside the data directory.
pub const STORE_FILE: &str = "edge.sqlite";
/// The generated terminal key's file name inside the data directory.
pub const TERMINAL_KEY_FILE: &str = "terminal-key";
/// The generated manager key's file name inside the data directory.
pub const MANAGER_KEY_FILE: &str = "manager-key";

/// A start-up step that failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A required or bad setting.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The data directory or a key file.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The terminal key and the manager key are the same secret.
    #[error(
        "the terminal key and the manager key are the same, so every till would be the manager: \
         set different keys (terminal_key, manager_key or their files in the data directory)"
    )]
    SameKeys,
    /// Opening the local store.
    #[error("opening the local store: {0}")]
    Store(store::LocalError),
    /// Starting the scheduled jobs.
    #[error("starting the scheduled jobs: {0}")]
    Jobs(String),
    /// Serving HTTP.
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

/// Runs the agent on `listener` until `shutdown` resolves, then stops accepting requests,
/// finishes those in flight, stops the sync worker and closes the store after its last write.
pub async fn run(
    config: EdgeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let credentials = config.hub_credentials()?;
    let data_dir = config.data_dir.clone();
    shelfsync_common::sqlite::create_private_dir(&data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let terminal_key = key(&data_dir, config.terminal_key.as_deref(), TERMINAL_KEY_FILE)?;
    let manager_key = key(&data_dir, config.manager_key.as_deref(), MANAGER_KEY_FILE)?;
    if terminal_key == manager_key {
        return Err(StartError::SameKeys);
    }
    shelfsync_common::server::telemetry::metrics_handle();
    let local = LocalStore::open(&data_dir.join(STORE_FILE), credentials.store_id).map_err(StartError::Store)?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let config = Arc::new(config);
    let worker = sync::spawn(local.clone(), credentials.clone(), config.clone(), stopping.clone());
    let scheduler = jobs::start(&config.jobs, &config.retention, local.clone())
        .await
        .map_err(|e| StartError::Jobs(e.to_string()))?;
    let state = api::AppState {
        local: local.clone(),
        link: worker.status(),
        hub: worker.hub(),
        config: config.clone(),
        terminal_digest: shelfsync_common::server::secret::digest(&terminal_key),
        manager_digest: shelfsync_common::server::secret::digest(&manager_key),
        stopping: stopping.clone(),
    };
    let address = listener.local_addr().map_err(StartError::Serve)?;
    tracing::info!(%address, store = %credentials.store_id, hub = %credentials.hub_url, "edge agent listening");
    let limits = config.http.connection_limits();
    let served = shelfsync_common::server::serve_until(
        listener,
        api::router(state, web::router()),
        (limits, None),
        shutdown,
        stop,
    )
    .await;
    tracing::info!("shutting down: HTTP closed, stopping the sync worker and jobs");
    worker.join().await;
    jobs::stop(&scheduler).await;
    local.close().await;
    tracing::info!("edge agent stopped");
    served.map_err(StartError::Serve)
}

/// A key from configuration, else from `<data_dir>/<file>`, generated (mode 0600) at first start.
fn key(data_dir: &Path, configured: Option<&str>, file: &str) -> Result<String, StartError> {
    let path = data_dir.join(file);
    let (key, generated) =
        shelfsync_common::server::secret::configured_or_stored(configured, &path).map_err(|source| {
            StartError::DataDir {
                path: path.clone(),
                source,
            }
        })?;
    if generated {
        tracing::info!(path = %path.display(), "generated a key");
    }
    Ok(key)
}

pub use shelfsync_common::server::shutdown_signal;
