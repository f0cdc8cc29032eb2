//! Layered settings for both binaries: built-in defaults, then a TOML file, then
//! environment variables with a prefix (`__` between a section and its key). Each binary
//! keeps its own settings struct; this module loads and checks them, and owns the sections
//! both binaries have with the same keys: `[http]` ([`HttpConfig`], whose defaults each
//! binary sets), `[jobs]` ([`JobsConfig`]) and `[retention]` ([`RetentionConfig`]), with
//! [`ConfigError`], the error that stops start-up.

use super::serve::ConnectionLimits;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::marker::PhantomData;
use std::path::Path;
use std::time::Duration;

/// A setting that stops start-up, with the setting's name in the message.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// A binary's defaults for its `[http]` section (the hub takes larger bodies and more
/// connections than a store's agent).
pub trait HttpDefaults {
    /// Largest request body in bytes.
    const BODY_LIMIT_BYTES: usize;
    /// Request timeout in seconds.
    const REQUEST_TIMEOUT_SECS: u64;
    /// Most client connections open at once.
    const MAX_CONNECTIONS: usize;
}

/// The `[http]` section: request and connection limits of the API a binary serves, with
/// the binary's defaults `D` for the keys a file or the environment leaves out.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default, bound = "")]
pub struct HttpConfig<D: HttpDefaults> {
    /// Largest request body in bytes.
    pub body_limit_bytes: usize,
    /// Request timeout in seconds.
    pub request_timeout_secs: u64,
    /// Seconds a connection may take to send a request's headers (idle keep-alive too).
    pub header_read_timeout_secs: u64,
    /// Most client connections open at once (keep it under the file descriptor limit).
    pub max_connections: usize,
    #[serde(skip)]
    defaults: PhantomData<D>,
}

impl<D: HttpDefaults> Default for HttpConfig<D> {
    fn default() -> Self {
        Self {
            body_limit_bytes: D::BODY_LIMIT_BYTES,
            request_timeout_secs: D::REQUEST_TIMEOUT_SECS,
            header_read_timeout_secs: 10,
            max_connections: D::MAX_CONNECTIONS,
            defaults: PhantomData,
        }
    }
}

impl<D: HttpDefaults> HttpConfig<D> {
    /// The connection limits the accept loop enforces.
    pub fn connection_limits(&self) -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            max_connections: self.max_connections,
        }
    }

    /// The longest a request may run.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// Checks the values that parse but make no sense (a zero timeout or cap).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("http.request_timeout_secs", self.request_timeout_secs),
            ("http.header_read_timeout_secs", self.header_read_timeout_secs),
            ("http.max_connections", self.max_connections as u64),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}

/// The `[jobs]` section: cron schedules (six fields, with seconds) of the maintenance
/// jobs both binaries run.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Reservation expiry.
    pub reservation_expiry: String,
    /// WAL checkpoint.
    pub wal_checkpoint: String,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            reservation_expiry: "*/15 * * * * *".into(),
            wal_checkpoint: "0 */5 * * * *".into(),
        }
    }
}

impl JobsConfig {
    /// Checks that every schedule is a six-field cron expression.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, expr) in [
            ("jobs.reservation_expiry", &self.reservation_expiry),
            ("jobs.wal_checkpoint", &self.wal_checkpoint),
        ] {
            check_cron(name, expr).map_err(ConfigError)?;
        }
        Ok(())
    }
}

/// The `[retention]` section: how long the records that only serve retries and audits
/// are kept (the agent's confirmed outbox rows and idempotency records, the hub's revoked
/// tokens), when the job that prunes them runs, and how many rows one transaction removes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days a record is kept after it stopped being needed (1..=3650).
    pub keep_days: u32,
    /// Cron (with seconds, UTC) of the prune job.
    pub schedule: String,
    /// Most rows one transaction removes (100..=100000): the longest a till's write can
    /// wait behind the prune.
    pub batch_rows: usize,
}

/// The shortest retention: a till's retry comes within minutes, an agent's upload retry
/// within the hub's outage; a day leaves room for both and for a clock that jumped.
pub const MIN_KEEP_DAYS: u32 = 1;
/// The longest retention (ten years): longer is a typo.
pub const MAX_KEEP_DAYS: u32 = 3650;

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            keep_days: 30,
            schedule: "0 17 3 * * *".into(),
            batch_rows: 1000,
        }
    }
}

impl RetentionConfig {
    /// Checks the age bounds, the batch size and the schedule.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_KEEP_DAYS..=MAX_KEEP_DAYS).contains(&self.keep_days) {
            return Err(ConfigError(format!(
                "retention.keep_days must be {MIN_KEEP_DAYS}..={MAX_KEEP_DAYS} (days; a till retries within minutes), got {}",
                self.keep_days
            )));
        }
        if !(100..=100_000).contains(&self.batch_rows) {
            return Err(ConfigError(format!(
                "retention.batch_rows must be 100..=100000, got {}",
                self.batch_rows
            )));
        }
        check_cron("retention.schedule", &self.schedule).map_err(ConfigError)
    }

    /// How long a record is kept.
    pub fn keep(&self) -> Duration {
        Duration::from_secs(u64::from(self.keep_days) * 86_400)
    }
}

/// Loads `T` from its `Default`s (via `#[serde(default)]`), then `file`, then the
/// environment variables starting with `env_prefix` + `_`. The error names the setting.
pub fn load<T: DeserializeOwned>(file: Option<&Path>, env_prefix: &str) -> Result<T, String> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        if !path.exists() {
            return Err(format!("config file {} does not exist", path.display()));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    builder = builder.add_source(
        config::Environment::with_prefix(env_prefix)
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true),
    );
    builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| e.to_string())
}

/// Parses TOML text into `T` (for tests of annotated example files).
pub fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| e.to_string())
}

/// Checks that `url` (the setting or flag `name`) is an `http://` or `https://` URL, so
/// that `127.0.0.1:7070` is a clear error rather than a failed connection.
pub fn check_http_url(name: &str, url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!(
            "{name} must start with http:// or https://, got {url:?} (did you mean http://{url}?)"
        ))
    }
}

/// Checks that `expr` is a six-field cron expression (with seconds).
pub fn check_cron(name: &str, expr: &str) -> Result<(), String> {
    if expr.split_whitespace().count() == 6 {
        Ok(())
    } else {
        Err(format!(
            "{name} must be a cron expression with six fields (sec min hour day month weekday), got {expr:?}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        listen: String,
    }

    #[test]
    fn files_are_read_and_unknown_keys_named() {
        assert_eq!(
            from_toml::<Example>("listen = \"a\"").unwrap(),
            Example { listen: "a".into() }
        );
        assert!(from_toml::<Example>("lisen = \"a\"").unwrap_err().contains("lisen"));
        assert!(load::<Example>(Some(Path::new("/nonexistent.toml")), "X")
            .unwrap_err()
            .contains("does not exist"));
        assert!(check_cron("jobs.x", "* * * * *").unwrap_err().contains("jobs.x"));
        assert!(check_cron("jobs.x", "*/5 * * * * *").is_ok());
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Small;

    impl HttpDefaults for Small {
        const BODY_LIMIT_BYTES: usize = 2048;
        const REQUEST_TIMEOUT_SECS: u64 = 7;
        const MAX_CONNECTIONS: usize = 9;
    }

    type Http = HttpConfig<Small>;

    #[test]
    fn an_http_section_takes_its_binarys_defaults_for_the_keys_it_leaves_out() {
        // Given a section that sets one key, when it is read,
        let http: Http = from_toml("max_connections = 3").unwrap();
        // then the others are the defaults the type names.
        assert_eq!(
            http,
            Http {
                max_connections: 3,
                ..Http::default()
            }
        );
        assert_eq!(
            (
                http.body_limit_bytes,
                http.request_timeout_secs,
                http.header_read_timeout_secs
            ),
            (2048, 7, 10)
        );
        assert_eq!(http.request_timeout(), Duration::from_secs(7));
        assert_eq!(
            http.connection_limits(),
            ConnectionLimits {
                header_read_timeout: Duration::from_secs(10),
                max_connections: 3,
            }
        );
    }

    #[test]
    fn zero_limits_and_bad_schedules_are_named() {
        // Given a zero in each limit, validation names that setting.
        for (key, http) in [
            (
                "http.request_timeout_secs",
                Http {
                    request_timeout_secs: 0,
                    ..Http::default()
                },
            ),
            (
                "http.header_read_timeout_secs",
                Http {
                    header_read_timeout_secs: 0,
                    ..Http::default()
                },
            ),
            (
                "http.max_connections",
                Http {
                    max_connections: 0,
                    ..Http::default()
                },
            ),
        ] {
            let error = http.validate().unwrap_err().to_string();
            assert_eq!(error, format!("configuration: {key} must be at least 1"));
        }
        assert!(Http::default().validate().is_ok());
        // Given a five-field schedule, validation names the job.
        let jobs = JobsConfig {
            wal_checkpoint: "*/5 * * * *".into(),
            ..JobsConfig::default()
        };
        assert!(jobs.validate().unwrap_err().to_string().contains("jobs.wal_checkpoint"));
        assert!(JobsConfig::default().validate().is_ok());
    }

    #[test]
    fn retention_refuses_zero_absurd_ages_and_batches_naming_the_setting() {
        // Given the defaults, they pass: 30 days, 1,000 rows a transaction.
        let defaults = RetentionConfig::default();
        assert!(defaults.validate().is_ok());
        assert_eq!(defaults.keep(), Duration::from_secs(30 * 86_400));
        // Given an age of 0 (would prune what a retry still needs) or of 10,000 days,
        for days in [0, 3651, 10_000] {
            let bad = RetentionConfig {
                keep_days: days,
                ..RetentionConfig::default()
            };
            // then start-up stops, naming the setting and its range.
            let error = bad.validate().unwrap_err().to_string();
            assert!(
                error.contains("retention.keep_days must be 1..=3650") && error.contains(&days.to_string()),
                "{error}"
            );
        }
        for rows in [0, 99, 100_001] {
            let bad = RetentionConfig {
                batch_rows: rows,
                ..RetentionConfig::default()
            };
            assert!(bad.validate().unwrap_err().to_string().contains("retention.batch_rows"));
        }
        let bad = RetentionConfig {
            schedule: "0 3 * * *".into(),
            ..RetentionConfig::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("retention.schedule"));
        // A key the section does not have is named too.
        assert!(from_toml::<RetentionConfig>("keep = \"30d\"")
            .unwrap_err()
            .contains("keep"));
    }
}
