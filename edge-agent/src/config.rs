//! Agent settings: built-in defaults, then a TOML file (`--config`), then
//! `SHELFSYNC_EDGE_*` environment variables. A missing or bad setting stops start-up with a
//! message that names it. `shelfsync-edge print-config` prints the annotated example in
//! `installers/edge.example.toml`; a test keeps it in step with the defaults here.

use serde::Deserialize;
use shelfsync_common::breaker::BreakerConfig;
use shelfsync_common::domain::allocation::OverShare;
use shelfsync_common::server::secret::Secret;
pub use shelfsync_common::server::settings::{ConfigError, JobsConfig, RetentionConfig};
use shelfsync_common::server::telemetry::LogFormat;
use shelfsync_common::StoreId;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The annotated example configuration.
pub const EXAMPLE: &str = include_str!("../../installers/edge.example.toml");

/// Everything the agent can be configured with.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// This store's id at the hub (required).
    pub store_id: Option<StoreId>,
    /// The hub's base URL (required).
    pub hub_url: Option<String>,
    /// The store token from enrollment (required).
    pub hub_token: Option<Secret>,
    /// Accept an `http://` hub_url (the store token crosses the network in clear text):
    /// for tests on one machine only.
    pub allow_insecure_hub: bool,
    /// Extra trust roots for the hub's certificate (PEM), e.g. a private CA's.
    pub ca_file: Option<PathBuf>,
    /// POS API listen address.
    pub listen: SocketAddr,
    /// Directory of the local store and generated keys.
    pub data_dir: PathBuf,
    /// The tills' key (generated when absent).
    pub terminal_key: Option<Secret>,
    /// The operator's key (generated when absent).
    pub manager_key: Option<Secret>,
    /// Log filter.
    pub log: String,
    /// How log lines are written: `text` or `json`.
    pub log_format: LogFormat,
    /// POS API limits.
    pub http: HttpConfig,
    /// Sync with the hub.
    pub sync: SyncConfig,
    /// Scheduled jobs.
    pub jobs: JobsConfig,
    /// Allocations (the store's side of the hub's escrow, `docs/allocations.md`).
    pub allocations: AllocationsConfig,
    /// How long confirmed outbox rows and idempotency records are kept.
    pub retention: RetentionConfig,
}

/// The store's allocation policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllocationsConfig {
    /// What a till's sale that needs more than the store's share gets: `refuse`
    /// (`409 allocation_exhausted`), `mark` (sold; the answer says how many units were
    /// promised to online orders) or `silent` (sold, as without an allocation).
    pub over_share: OverShare,
}

/// POS API limits: 64 KiB bodies, 10 s per request, 256 connections by default.
pub type HttpConfig = shelfsync_common::server::settings::HttpConfig<EdgeHttp>;

/// The defaults of [`HttpConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeHttp;

impl shelfsync_common::server::settings::HttpDefaults for EdgeHttp {
    const BODY_LIMIT_BYTES: usize = 64 * 1024;
    const REQUEST_TIMEOUT_SECS: u64 = 10;
    const MAX_CONNECTIONS: usize = 256;
}

/// Sync settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Events per upload.
    pub upload_batch: usize,
    /// Seconds between pulls while the push stream is down.
    pub pull_interval_secs: u64,
    /// Seconds between heartbeats.
    pub heartbeat_interval_secs: u64,
    /// Timeout of one hub call, in seconds.
    pub request_timeout_secs: u64,
    /// Silence on the push stream (no event, no keep-alive) after which it counts as dead.
    pub stream_idle_timeout_secs: u64,
    /// First retry delay, in milliseconds.
    pub retry_min_ms: u64,
    /// Longest retry delay, in milliseconds.
    pub retry_max_ms: u64,
    /// Failures that open the breaker.
    pub breaker_failures: u32,
    /// Window of those failures, in seconds.
    pub breaker_window_secs: u64,
    /// Longest time the breaker stays open before a probe, in seconds.
    pub breaker_open_secs: u64,
    /// The breaker's first open period, and the period after a probe that found nothing
    /// listening, in seconds (probes that reach a failing hub double it, up to
    /// `breaker_open_secs`).
    pub breaker_first_open_secs: u64,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            store_id: None,
            hub_url: None,
            hub_token: None,
            allow_insecure_hub: false,
            ca_file: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 7171)),
            data_dir: PathBuf::from("/var/lib/shelfsync-edge"),
            terminal_key: None,
            manager_key: None,
            log: "info".into(),
            log_format: LogFormat::Text,
            http: HttpConfig::default(),
            sync: SyncConfig::default(),
            jobs: JobsConfig::default(),
            allocations: AllocationsConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            upload_batch: 500,
            pull_interval_secs: 5,
            heartbeat_interval_secs: 15,
            request_timeout_secs: 10,
            stream_idle_timeout_secs: 45,
            retry_min_ms: 200,
            retry_max_ms: 10_000,
            breaker_failures: 5,
            breaker_window_secs: 10,
            breaker_open_secs: 30,
            breaker_first_open_secs: 1,
        }
    }
}

/// Who this store is and how it reaches the hub: the store id, the hub URL and the
/// store token (a secret), checked. The agent cannot run without them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubCredentials {
    /// This store.
    pub store_id: StoreId,
    /// The hub's base URL, without a trailing slash.
    pub hub_url: String,
    /// The store token.
    pub hub_token: Secret,
    /// Extra trust roots for the hub's certificate (checked readable when loaded).
    pub ca_file: Option<PathBuf>,
}

impl EdgeConfig {
    /// Loads defaults, then `file` (if given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let loaded: Self = shelfsync_common::server::settings::load(file, "SHELFSYNC_EDGE").map_err(ConfigError)?;
        loaded.validate()?;
        Ok(loaded)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sync = &self.sync;
        if sync.upload_batch == 0 || sync.upload_batch > shelfsync_common::wire::sync::MAX_UPLOAD_BATCH {
            return Err(ConfigError("sync.upload_batch must be 1..=500".into()));
        }
        for (name, value) in [
            ("sync.pull_interval_secs", sync.pull_interval_secs),
            ("sync.heartbeat_interval_secs", sync.heartbeat_interval_secs),
            ("sync.request_timeout_secs", sync.request_timeout_secs),
            ("sync.stream_idle_timeout_secs", sync.stream_idle_timeout_secs),
            ("sync.breaker_window_secs", sync.breaker_window_secs),
            ("sync.breaker_open_secs", sync.breaker_open_secs),
            ("sync.breaker_first_open_secs", sync.breaker_first_open_secs),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        if sync.breaker_failures == 0 {
            return Err(ConfigError("sync.breaker_failures must be at least 1".into()));
        }
        if sync.retry_min_ms == 0 || sync.retry_min_ms > sync.retry_max_ms {
            return Err(ConfigError(
                "sync.retry_min_ms must be at least 1 and at most sync.retry_max_ms".into(),
            ));
        }
        self.http.validate()?;
        for (name, key) in [("terminal_key", &self.terminal_key), ("manager_key", &self.manager_key)] {
            if key.as_deref().is_some_and(|k| k.len() < 16) {
                return Err(ConfigError(format!("{name} must be at least 16 characters")));
            }
        }
        self.jobs.validate()?;
        self.retention.validate()
    }

    /// The hub credentials, or an error naming the first missing setting.
    pub fn hub_credentials(&self) -> Result<HubCredentials, ConfigError> {
        let missing = |name: &str, env: &str| {
            ConfigError(format!(
                "{name} is not set (in the config file, or as {env}); see `shelfsync-edge print-config`"
            ))
        };
        let store_id = self
            .store_id
            .ok_or_else(|| missing("store_id", "SHELFSYNC_EDGE_STORE_ID"))?;
        let hub_url = self
            .hub_url
            .clone()
            .ok_or_else(|| missing("hub_url", "SHELFSYNC_EDGE_HUB_URL"))?;
        check_hub_url("hub_url", &hub_url, self.allow_insecure_hub)?;
        if let Some(ca_file) = &self.ca_file {
            trust_roots(ca_file)?;
        }
        let hub_token = self
            .hub_token
            .clone()
            .ok_or_else(|| missing("hub_token", "SHELFSYNC_EDGE_HUB_TOKEN"))?;
        Ok(HubCredentials {
            store_id,
            hub_url: hub_url.trim_end_matches('/').to_owned(),
            hub_token,
            ca_file: self.ca_file.clone(),
        })
    }

    /// The hub-link breaker thresholds.
    pub fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: self.sync.breaker_failures,
            failure_window: Duration::from_secs(self.sync.breaker_window_secs),
            open_for: Duration::from_secs(self.sync.breaker_open_secs),
            first_open_for: Duration::from_secs(self.sync.breaker_first_open_secs),
        }
    }
}

/// Checks that `url` (from the setting or option `name`) is `https://`, or `http://` with
/// `allow_insecure` (`allow_insecure_hub`).
pub fn check_hub_url(name: &str, url: &str, allow_insecure: bool) -> Result<(), ConfigError> {
    shelfsync_common::server::settings::check_http_url(name, url).map_err(ConfigError)?;
    if url.starts_with("http://") && !allow_insecure {
        return Err(ConfigError(format!(
            "{name} is {url:?}: over http:// the store token and every sale cross the network unencrypted; \
             use the hub's https:// address, or set allow_insecure_hub = true \
             (SHELFSYNC_EDGE_ALLOW_INSECURE_HUB=true) for a test on one machine"
        )));
    }
    Ok(())
}

/// The certificates in `ca_file` (PEM), to trust for the hub besides the built-in roots;
/// an error names the setting when the file cannot be read or holds none.
pub fn trust_roots(ca_file: &Path) -> Result<Vec<reqwest::Certificate>, ConfigError> {
    let bad = |why: String| ConfigError(format!("ca_file = {}: {why}", ca_file.display()));
    let pem = std::fs::read(ca_file).map_err(|e| bad(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no certificate (expected -----BEGIN CERTIFICATE-----)".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<EdgeConfig, String> {
        shelfsync_common::server::settings::from_toml(text)
    }

    #[test]
    fn the_annotated_example_parses_to_the_defaults() {
        assert_eq!(parse(EXAMPLE).unwrap(), EdgeConfig::default());
    }

    #[test]
    fn missing_and_bad_settings_are_named() {
        let err = EdgeConfig::default().hub_credentials().unwrap_err().to_string();
        assert!(
            err.contains("store_id") && err.contains("SHELFSYNC_EDGE_STORE_ID"),
            "{err}"
        );
        let config = EdgeConfig {
            store_id: Some(StoreId::new_v7()),
            hub_url: Some("hub:7070".into()),
            ..EdgeConfig::default()
        };
        assert!(config.hub_credentials().unwrap_err().to_string().contains("hub_url"));
        let plain = EdgeConfig {
            store_id: Some(StoreId::new_v7()),
            hub_url: Some("http://127.0.0.1:7070".into()),
            hub_token: Some("ss_token".into()),
            ..EdgeConfig::default()
        };
        let err = plain.hub_credentials().unwrap_err().to_string();
        assert!(err.contains("allow_insecure_hub") && err.contains("hub_url"), "{err}");
        let allowed = EdgeConfig {
            allow_insecure_hub: true,
            ..plain.clone()
        };
        assert!(allowed.hub_credentials().is_ok());
        let missing_ca = EdgeConfig {
            hub_url: Some("https://hub.example.com".into()),
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..plain
        };
        let err = missing_ca.hub_credentials().unwrap_err().to_string();
        assert!(err.contains("ca_file = /nonexistent/ca.pem"), "{err}");
        assert!(parse("upload_batch = 3")
            .unwrap_err()
            .to_string()
            .contains("upload_batch"));
        let mut bad = EdgeConfig::default();
        bad.sync.upload_batch = 501;
        assert!(bad.validate().unwrap_err().to_string().contains("sync.upload_batch"));
        let mut bad = EdgeConfig::default();
        bad.retention.keep_days = 0;
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("retention.keep_days must be 1..=3650"));
        let err = parse("log_format = \"xml\"").unwrap_err();
        assert!(
            err.contains("log_format") && err.contains(r#"expected "text" or "json""#),
            "{err}"
        );
        assert_eq!(parse("log_format = \"json\"").unwrap().log_format, LogFormat::Json);
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        // Given a configuration with every secret set, neither it nor the checked
        // credentials show one in their Debug output.
        let config = parse(
            "store_id = \"01935701-0000-7000-8000-000000000001\"\nhub_url = \"https://hub:7070\"\n\
             hub_token = \"ss_token_hunter2\"\nterminal_key = \"till_key_hunter2\"\nmanager_key = \"boss_key_hunter2\"",
        )
        .unwrap();
        let credentials = config.hub_credentials().unwrap();
        assert_eq!(credentials.hub_token.expose(), "ss_token_hunter2");
        let shown = format!("{config:?} {config:#?} {credentials:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
