//! Hub settings: built-in defaults, then a TOML file (`--config`), then `SHELFSYNC_HUB_*`
//! environment variables, each layer overriding the one before. The annotated example in
//! `installers/hub.example.toml` is what `shelfsync-hub print-config` prints; a test
//! keeps it in step with the defaults here.

use serde::Deserialize;
use shelfsync_common::server::secret::Secret;
pub use shelfsync_common::server::settings::{ConfigError, JobsConfig, RetentionConfig};
use shelfsync_common::server::telemetry::LogFormat;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The annotated example configuration.
pub const EXAMPLE: &str = include_str!("../../installers/hub.example.toml");

/// Everything the hub can be configured with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// Listen address of the HTTP API.
    pub listen: SocketAddr,
    /// Directory of the SQLite files and the generated admin token.
    pub data_dir: PathBuf,
    /// Admin bearer token (generated into the data dir when absent).
    pub admin_token: Option<Secret>,
    /// Log filter.
    pub log: String,
    /// How log lines are written: `text` or `json`.
    pub log_format: LogFormat,
    /// HTTP limits.
    pub http: HttpConfig,
    /// Read side.
    pub query: QueryConfig,
    /// Sync with edge agents.
    pub sync: SyncConfig,
    /// Scheduled jobs.
    pub jobs: JobsConfig,
    /// Where the event log lives.
    pub storage: Storage,
    /// The PostgreSQL database, when `storage = "postgres"`.
    pub postgres: PostgresConfig,
    /// Analytics, alerts and their jobs.
    pub analytics: AnalyticsConfig,
    /// Outgoing webhooks.
    pub webhooks: WebhookConfig,
    /// How long revoked tokens are kept.
    pub retention: RetentionConfig,
    /// The URL agents and clients reach this hub at (behind a proxy, the proxy's); the
    /// enrollment command names it. Unset: derived from `listen`, with a warning.
    pub public_url: Option<String>,
    /// One-step enrollment codes.
    pub enrollment: EnrollmentConfig,
    /// HTTPS served by the hub itself.
    pub tls: TlsConfig,
}

/// One-step enrollment codes (`store add --enroll`, `POST /v1/enroll`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrollmentConfig {
    /// How long a new code works, in seconds.
    pub code_ttl_secs: u64,
    /// Refused redemptions (unknown, used or expired codes) this hub answers per minute;
    /// past it, `429 enrollment_rate_limited` until the minute is over.
    pub max_failures_per_minute: u32,
}

impl Default for EnrollmentConfig {
    fn default() -> Self {
        Self {
            code_ttl_secs: 900,
            max_failures_per_minute: 20,
        }
    }
}

/// HTTPS: with both files set the hub serves TLS (rustls) on `listen`; with neither,
/// plain HTTP (behind a proxy that terminates TLS, or for local tests).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The certificate chain (PEM), leaf first.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// Where the event log lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// One hub, the log in a SQLite file in the data directory (nothing to set up).
    #[default]
    Sqlite,
    /// Several hubs share one PostgreSQL database (see docs/operations.md).
    Postgres,
}

/// How to reach PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:5432/database` (or libpq's `key=value` form).
    pub database_url: Option<Secret>,
    /// Most read connections this hub opens (the writer and the follower take one more each).
    pub pool_size: usize,
    /// How long connecting may take.
    pub connect_timeout_ms: u64,
    /// Longest a statement (or a wait for another hub's write lock) may take.
    pub statement_timeout_ms: u64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            database_url: None,
            pool_size: 16,
            connect_timeout_ms: 5000,
            statement_timeout_ms: 10_000,
        }
    }
}

/// Analytics settings: the hub's own jobs (the shared `[jobs]` section holds the ones the
/// agent runs too).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalyticsConfig {
    /// Whether the analytics worker runs (off: the figures and alerts stand still; a
    /// hub that needs no analytics, and the bench's same-run baseline).
    pub worker: bool,
    /// Cron (with seconds, UTC) of the roll-up: the clock-dependent figures (streams
    /// with less than a week of cover, open alerts, yesterday's units) into metrics.
    pub rollup: String,
    /// Cron of housekeeping: old delivery records go.
    pub housekeeping: String,
    /// Days a `delivered` webhook record is kept (dead letters stay until redelivered).
    pub delivered_retention_days: u32,
}

impl Default for AnalyticsConfig {
    fn default() -> Self {
        Self {
            worker: true,
            rollup: "0 10 * * * *".into(),
            housekeeping: "0 30 3 * * *".into(),
            delivered_retention_days: 30,
        }
    }
}

impl PostgresConfig {
    /// The store's settings; `None` without a `database_url`.
    pub fn settings(&self) -> Option<crate::store::PgSettings> {
        Some(crate::store::PgSettings {
            url: self.database_url.as_deref()?.to_owned(),
            pool_size: self.pool_size,
            connect_timeout: std::time::Duration::from_millis(self.connect_timeout_ms),
            statement_timeout: std::time::Duration::from_millis(self.statement_timeout_ms),
        })
    }
}

/// Outgoing webhook settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Longest wait for a subscriber's answer, in milliseconds.
    pub timeout_ms: u64,
    /// Attempts at one alert before it goes to the dead-letter list.
    pub max_attempts: u32,
    /// First retry delay in milliseconds (doubling, with jitter).
    pub backoff_min_ms: u64,
    /// Longest retry delay in milliseconds.
    pub backoff_max_ms: u64,
    /// Failures within `breaker_window_secs` that open a subscriber's breaker.
    pub breaker_failures: u32,
    /// The breaker's failure window in seconds.
    pub breaker_window_secs: u64,
    /// Longest time a subscriber's breaker stays open before a probe, in seconds.
    pub breaker_open_secs: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 5_000,
            max_attempts: 8,
            backoff_min_ms: 500,
            backoff_max_ms: 60_000,
            breaker_failures: 5,
            breaker_window_secs: 60,
            breaker_open_secs: 60,
        }
    }
}

/// Sync settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Events buffered per push stream; an agent whose buffer stays full for 5 s is dropped.
    pub push_buffer_events: usize,
    /// Seconds between keep-alives on an idle push stream.
    pub keep_alive_secs: u64,
    /// Push streams one store may have open at once (its agent needs one).
    pub max_push_streams_per_store: u32,
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            push_buffer_events: 1024,
            keep_alive_secs: 15,
            max_push_streams_per_store: 4,
        }
    }
}

/// HTTP limits: 1 MiB bodies, 30 s per request, 800 connections by default.
pub type HttpConfig = shelfsync_common::server::settings::HttpConfig<HubHttp>;

/// The defaults of [`HttpConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubHttp;

impl shelfsync_common::server::settings::HttpDefaults for HubHttp {
    const BODY_LIMIT_BYTES: usize = 1024 * 1024;
    const REQUEST_TIMEOUT_SECS: u64 = 30;
    const MAX_CONNECTIONS: usize = 800;
}

/// Read-side settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Cache TTL in seconds.
    pub cache_ttl_secs: u64,
    /// Longest read-your-writes wait in milliseconds.
    pub min_position_wait_ms: u64,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("/var/lib/shelfsync-hub"),
            admin_token: None,
            log: "info".into(),
            log_format: LogFormat::Text,
            http: HttpConfig::default(),
            query: QueryConfig::default(),
            sync: SyncConfig::default(),
            jobs: JobsConfig::default(),
            storage: Storage::Sqlite,
            postgres: PostgresConfig::default(),
            analytics: AnalyticsConfig::default(),
            webhooks: WebhookConfig::default(),
            public_url: None,
            enrollment: EnrollmentConfig::default(),
            tls: TlsConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            cache_ttl_secs: 30,
            min_position_wait_ms: 2000,
        }
    }
}

impl HubConfig {
    /// Loads defaults, then `file` (if given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let loaded: Self = shelfsync_common::server::settings::load(file, "SHELFSYNC_HUB").map_err(ConfigError)?;
        loaded.validate()?;
        Ok(loaded)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.http.body_limit_bytes < 1024 {
            return Err(ConfigError("http.body_limit_bytes must be at least 1024".into()));
        }
        self.http.validate()?;
        if self.sync.max_push_streams_per_store == 0 {
            return Err(ConfigError("sync.max_push_streams_per_store must be at least 1".into()));
        }
        if self.storage == Storage::Postgres && self.postgres.database_url.is_none() {
            return Err(ConfigError(
                "storage = \"postgres\" needs postgres.database_url (SHELFSYNC_HUB_POSTGRES__DATABASE_URL)".into(),
            ));
        }
        if self.postgres.pool_size == 0 {
            return Err(ConfigError("postgres.pool_size must be at least 1".into()));
        }
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError("admin_token must be at least 16 characters".into()));
        }
        let w = &self.webhooks;
        if w.timeout_ms == 0 || w.max_attempts == 0 || w.breaker_failures == 0 || w.backoff_min_ms > w.backoff_max_ms {
            return Err(ConfigError(
                "webhooks: timeout_ms, max_attempts and breaker_failures must be at least 1, backoff_min_ms at most backoff_max_ms".into(),
            ));
        }
        for (name, expr) in [
            ("analytics.rollup", &self.analytics.rollup),
            ("analytics.housekeeping", &self.analytics.housekeeping),
        ] {
            shelfsync_common::server::settings::check_cron(name, expr).map_err(ConfigError)?;
        }
        self.validate_enrollment()?;
        self.jobs.validate()?;
        self.retention.validate()
    }

    fn validate_enrollment(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.public_url {
            shelfsync_common::server::settings::check_http_url("public_url", url).map_err(ConfigError)?;
        }
        if !(1..=7 * 24 * 3600).contains(&self.enrollment.code_ttl_secs) {
            return Err(ConfigError(
                "enrollment.code_ttl_secs must be between 1 and 604800 (a week)".into(),
            ));
        }
        if self.enrollment.max_failures_per_minute == 0 {
            return Err(ConfigError(
                "enrollment.max_failures_per_minute must be at least 1".into(),
            ));
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) => Err(ConfigError(
                "tls.cert_file is set but tls.key_file is not: set both, or neither".into(),
            )),
            (None, Some(_)) => Err(ConfigError(
                "tls.key_file is set but tls.cert_file is not: set both, or neither".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The URL the enrollment command names: `public_url`, else `http(s)://<listen>`
    /// (`https` when the hub serves TLS), and whether it was derived.
    pub fn public_url(&self) -> (String, bool) {
        self.public_url_on(self.listen)
    }

    /// [`Self::public_url`], derived from `address` (where the hub really listens) when
    /// `public_url` is not set.
    pub fn public_url_on(&self, address: SocketAddr) -> (String, bool) {
        match &self.public_url {
            Some(url) => (url.trim_end_matches('/').to_owned(), false),
            None => {
                let scheme = if self.tls.cert_file.is_some() { "https" } else { "http" };
                (format!("{scheme}://{address}"), true)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelfsync_common::server::settings::from_toml;

    #[test]
    fn the_annotated_example_parses_to_the_defaults() {
        assert_eq!(from_toml::<HubConfig>(EXAMPLE).unwrap(), HubConfig::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = from_toml::<HubConfig>("lisen = \"1.2.3.4:1\"").unwrap_err();
        assert!(err.contains("lisen"), "{err}");
        let mut bad = HubConfig::default();
        bad.jobs.wal_checkpoint = "*/5 * * * *".into();
        assert!(bad.validate().unwrap_err().to_string().contains("jobs.wal_checkpoint"));
        let mut bad = HubConfig::default();
        bad.retention.keep_days = 4000;
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("retention.keep_days must be 1..=3650"));
        let err = from_toml::<HubConfig>("log_format = \"xml\"").unwrap_err();
        assert!(
            err.contains("log_format") && err.contains(r#"expected "text" or "json""#),
            "{err}"
        );
        let json = from_toml::<HubConfig>("log_format = \"json\"").unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        // Given a configuration with every secret set, its Debug output shows none of them.
        let config = from_toml::<HubConfig>(
            "admin_token = \"ss_admin_hunter2\"\n[postgres]\ndatabase_url = \"postgres://u:pw_hunter2@db/x\"",
        )
        .unwrap();
        assert_eq!(config.admin_token.as_deref(), Some("ss_admin_hunter2"));
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
