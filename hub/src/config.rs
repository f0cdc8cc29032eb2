//! Hub settings: built-in defaults, then a TOML file (`--config`), then `SHELFSYNC_HUB_*`
//! environment variables, each layer overriding the one before. The annotated example in
//! `installers/hub.example.toml` is what `shelfsync-hub print-config` prints; a test
//! keeps it in step with the defaults here.

use serde::Deserialize;
use shelfsync_common::server::secret::Secret;
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
    /// HTTP limits.
    pub http: HttpConfig,
    /// Read side.
    pub query: QueryConfig,
    /// Sync with edge agents.
    pub sync: SyncConfig,
    /// Scheduled jobs.
    pub jobs: JobsConfig,
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

/// HTTP limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body in bytes.
    pub body_limit_bytes: usize,
    /// Request timeout in seconds.
    pub request_timeout_secs: u64,
    /// Seconds a connection may take to send a request's headers (idle keep-alive too).
    pub header_read_timeout_secs: u64,
    /// Most client connections open at once (keep it under the file descriptor limit).
    pub max_connections: usize,
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

/// Cron schedules (six fields, with seconds).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Reservation expiry.
    pub reservation_expiry: String,
    /// WAL checkpoint.
    pub wal_checkpoint: String,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("/var/lib/shelfsync-hub"),
            admin_token: None,
            log: "info".into(),
            http: HttpConfig::default(),
            query: QueryConfig::default(),
            sync: SyncConfig::default(),
            jobs: JobsConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
            request_timeout_secs: 30,
            header_read_timeout_secs: 10,
            max_connections: 800,
        }
    }
}

impl HttpConfig {
    /// The connection limits the accept loop enforces.
    pub fn connection_limits(&self) -> shelfsync_common::server::ConnectionLimits {
        shelfsync_common::server::ConnectionLimits {
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs),
            max_connections: self.max_connections,
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

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            reservation_expiry: "*/15 * * * * *".into(),
            wal_checkpoint: "0 */5 * * * *".into(),
        }
    }
}

/// A setting that stops start-up, with the setting's name in the message.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

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
        if self.http.request_timeout_secs == 0 {
            return Err(ConfigError("http.request_timeout_secs must be at least 1".into()));
        }
        if self.http.header_read_timeout_secs == 0 {
            return Err(ConfigError("http.header_read_timeout_secs must be at least 1".into()));
        }
        if self.sync.max_push_streams_per_store == 0 {
            return Err(ConfigError("sync.max_push_streams_per_store must be at least 1".into()));
        }
        if self.http.max_connections == 0 {
            return Err(ConfigError("http.max_connections must be at least 1".into()));
        }
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError("admin_token must be at least 16 characters".into()));
        }
        for (name, expr) in [
            ("jobs.reservation_expiry", &self.jobs.reservation_expiry),
            ("jobs.wal_checkpoint", &self.jobs.wal_checkpoint),
        ] {
            shelfsync_common::server::settings::check_cron(name, expr).map_err(ConfigError)?;
        }
        Ok(())
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
    }
}
