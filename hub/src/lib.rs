//! shelfsync-hub: the authoritative event store of a shelfsync fleet and its HTTP API.
//!
//! The write side ([`store`]) is one event log in SQLite with a single group-committing
//! writer; the read side ([`projection`], [`query`]) folds that log into a stock read
//! model behind a TTL cache and a circuit breaker; [`api`] is the HTTP surface for web
//! shops, apps and back-office tools; [`analytics`] folds the log into sales figures and
//! alerts, which [`webhooks`] sends to subscribers; [`jobs`] runs the scheduled work. [`run`] wires
//! them together for the binary and for tests, which start the real thing in-process on
//! a port-0 listener through `testing` (feature `testing`). [`web`] is the back office's
//! pages at `/`, a client of the same handlers.

// Production code never unwraps: an error becomes an answer, a log line or an exit code
// (clippy.toml allows it in tests).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod analytics;
pub mod api;
pub mod backup;
pub mod bus;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod enrollment;
pub mod fleet;
pub mod jobs;
pub mod migrate;
pub mod migrate_storage;
pub mod read_model;
pub mod retention;
pub mod seed;
pub mod sse;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod verify;
pub mod web;
pub mod webhooks;

use crate::bus::EventBus;
use crate::config::HubConfig;
use crate::store::EventStore;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The event log's file name inside the data directory.
pub const EVENTS_FILE: &str = "events.sqlite";
/// The read model's file name inside the data directory.
pub const READ_MODEL_FILE: &str = "read_model.sqlite";
/// The analytics file's name inside the data directory (figures, alerts, their settings
/// and the webhook subscribers).
pub const ANALYTICS_FILE: &str = "analytics.sqlite";
/// The generated admin token's file name inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// How [`run`] starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Write the demo stores, catalog and stock into an empty store.
    pub seed_demo_data: bool,
    /// Print where the hub listens and which token to use on stdout.
    pub announce: bool,
}

/// A start-up step that failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory or the admin token file.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Opening the event store.
    #[error("opening the event store: {0}")]
    Store(#[from] store::ReadError),
    /// Starting the projection.
    #[error("starting the read model projection: {0}")]
    Projection(String),
    /// Writing the demo data.
    #[error("seeding the demo data: {0}")]
    Seed(#[from] seed::SeedError),
    /// Starting the scheduled jobs.
    #[error("starting the scheduled jobs: {0}")]
    Jobs(String),
    /// Loading the TLS certificate and key.
    #[error("loading the TLS certificate: {0}")]
    Tls(String),
    /// Serving HTTP.
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

/// Runs the hub on `listener` until `shutdown` resolves, then stops accepting requests,
/// finishes those in flight, and closes the store after its last write.
pub async fn run(
    config: HubConfig,
    listener: tokio::net::TcpListener,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    let tls = tls_acceptor(&config)?;
    let data_dir = config.data_dir.clone();
    shelfsync_common::sqlite::create_private_dir(&data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let (admin_secret, token_file) = admin_token(&config)?;
    // Install the metrics recorder before anything records.
    shelfsync_common::server::telemetry::metrics_handle();
    let log = open_log(&config).await?;
    if options.seed_demo_data && seed::seed_if_empty(&log, &data_dir).await? {
        tracing::info!("demo data written");
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let projector = read_model::spawn(log.clone(), &data_dir.join(READ_MODEL_FILE), stopped.clone())
        .map_err(|e| StartError::Projection(e.to_string()))?;
    let queries = read_model::QueryService::new(
        projector.queries(),
        projector.projected(),
        log.bus().watch_head(),
        projector.touched(),
        read_model::QueryConfig::from(&config.query),
    );
    let queries = Arc::new(match config.storage {
        config::Storage::Sqlite => queries,
        config::Storage::Postgres => queries.sharing(log.clone()),
    });
    let analytics_path = data_dir.join(ANALYTICS_FILE);
    let analytics = match config.analytics.worker {
        true => analytics::spawn(log.clone(), &analytics_path, stopped.clone()),
        false => analytics::idle(&analytics_path),
    }
    .map_err(|e| StartError::Projection(format!("analytics: {e}")))?;
    let webhooks = webhooks::Webhooks::start(
        analytics.db(),
        config.webhooks.clone(),
        analytics.position(),
        stopped.clone(),
    )
    .await
    .map_err(|e| StartError::Projection(format!("webhooks: {e}")))?;
    let scheduler = Arc::new(
        jobs::start(
            &config,
            log.clone(),
            projector.queries(),
            analytics.db(),
            webhooks.clone(),
        )
        .await
        .map_err(|e| StartError::Jobs(e.to_string()))?,
    );
    let (begin_stopping, stopping) = tokio::sync::watch::channel(false);
    let fleet = Arc::new(fleet::Fleet::default());
    if let Some(revocations) = log.revocations_elsewhere() {
        tokio::spawn(fleet::end_streams_revoked_elsewhere(fleet.clone(), revocations));
        tokio::spawn(cluster::share_presence(fleet.clone(), log.clone(), stopped.clone()));
    }
    let address = listener.local_addr().map_err(StartError::Serve)?;
    let state = api::AppState::new(api::Shared {
        log: log.clone(),
        queries,
        read_model: projector.queries(),
        admin_digest: shelfsync_common::server::secret::digest(&admin_secret),
        config: Arc::new(config.clone()),
        fleet,
        stopping,
        projection_stall: projector.stall(),
        analytics: analytics.db(),
        analytics_position: analytics.position(),
        webhooks,
        jobs: scheduler.clone(),
        public_url: config.public_url_on(address),
        enroll_failures: enrollment::FailureLimiter::new(config.enrollment.max_failures_per_minute),
    });
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%address, scheme, data_dir = %data_dir.display(), "hub listening");
    if options.announce {
        announce(
            &format!("{scheme}://{address}"),
            &admin_secret,
            token_file.as_deref(),
            options.seed_demo_data,
        );
    }
    let limits = config.http.connection_limits();
    let served = shelfsync_common::server::serve_until(
        listener,
        api::router(state, web::router()),
        (limits, tls),
        shutdown,
        begin_stopping,
    )
    .await;
    tracing::info!("shutting down: HTTP closed, stopping jobs and the projection");
    jobs::stop(&scheduler).await;
    let _ = stop.send(true);
    projector.join().await;
    analytics.join().await;
    log.close().await;
    tracing::info!("hub stopped");
    served.map_err(StartError::Serve)
}

/// Opens the event log where the configuration says: the SQLite file in the data
/// directory, or the PostgreSQL database several hubs share.
async fn open_log(config: &HubConfig) -> Result<EventStore, StartError> {
    match config.storage {
        config::Storage::Sqlite => Ok(EventStore::open(&config.data_dir.join(EVENTS_FILE), EventBus::new())?),
        config::Storage::Postgres => {
            // `validate` refused a postgres storage without a URL.
            let settings = config
                .postgres
                .settings()
                .ok_or(StartError::Store(store::ReadError::Corrupt(
                    "storage = \"postgres\" needs postgres.database_url".into(),
                )))?;
            tracing::info!("event store on PostgreSQL");
            Ok(EventStore::open_postgres(settings, EventBus::new()).await?)
        }
    }
}

/// The admin secret from configuration, else from `<data_dir>/admin-token`, generated
/// (mode 0600) at first start. Returns the secret and the file it came from, if any.
fn admin_token(config: &HubConfig) -> Result<(String, Option<PathBuf>), StartError> {
    let path = config.data_dir.join(ADMIN_TOKEN_FILE);
    let (secret, generated) =
        shelfsync_common::server::secret::configured_or_stored(config.admin_token.as_deref(), &path).map_err(
            |source| StartError::DataDir {
                path: path.clone(),
                source,
            },
        )?;
    if generated {
        tracing::info!(path = %path.display(), "generated the admin token");
    }
    Ok((secret, config.admin_token.is_none().then_some(path)))
}

/// The TLS acceptor when `[tls]` names a certificate and key (`validate` refused one
/// without the other).
fn tls_acceptor(config: &HubConfig) -> Result<Option<shelfsync_common::server::TlsAcceptor>, StartError> {
    let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) else {
        return Ok(None);
    };
    shelfsync_common::server::tls::acceptor(cert, key, ("tls.cert_file", "tls.key_file"))
        .map(Some)
        .map_err(StartError::Tls)
}

fn announce(url: &str, secret: &str, token_file: Option<&Path>, demo: bool) {
    println!("shelfsync hub listening on {url}");
    match (demo, token_file) {
        (true, _) => println!("admin token: {secret}"),
        (false, Some(file)) => println!("admin token: in {}", file.display()),
        (false, None) => println!("admin token: as configured"),
    }
    if demo {
        println!("demo stores:");
        for store in seed::stores() {
            println!("  {}  {}", store.id, store.name);
        }
        println!("demo products:");
        for product in seed::products() {
            println!("  {}  {:<11} {}", product.id, product.sku, product.name);
        }
    }
}

/// Rebuilds the analytics figures from the event log, with a progress bar when `progress`.
pub fn rebuild_analytics(data_dir: &Path, progress: bool) -> Result<u64, store::ReadError> {
    analytics::rebuild(&data_dir.join(EVENTS_FILE), &data_dir.join(ANALYTICS_FILE), progress)
}

/// Rebuilds the read model from the event log, with a progress bar when `progress`.
pub fn rebuild_read_model(data_dir: &Path, progress: bool) -> Result<u64, read_model::ProjectionError> {
    read_model::rebuild(&data_dir.join(EVENTS_FILE), &data_dir.join(READ_MODEL_FILE), progress)
}

pub use shelfsync_common::server::shutdown_signal;
