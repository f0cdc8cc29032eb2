//! Logs, metrics and error reports, set up in one place so both binaries and the tests
//! agree.
//!
//! Logs go to stderr through `tracing`, as text ([`LogFormat::Text`], coloured only when
//! stderr is a terminal and `NO_COLOR` is not set, so log files and journald get plain
//! text) or as one JSON object a line ([`LogFormat::Json`], for a log shipper); tests stay
//! quiet unless `TEST_LOG=1`. Metrics use one process-wide Prometheus recorder (installed once, so
//! several hubs started by tests in one process share it) rendered by `GET /metrics`.
//! A command that fails prints one line and exits non-zero ([`exit_code`]), never a
//! backtrace, whatever `RUST_BACKTRACE` says: the error is the user's to fix, not a bug.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::ffi::OsStr;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

/// How log lines are written: the `log_format` setting of both binaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's fields at the
    /// top level (`message` among them) and the enclosing spans' fields under `span` and
    /// `spans` (a request's `method`, `route` and `correlation_id`).
    Json,
}

impl<'de> serde::Deserialize<'de> for LogFormat {
    /// From `"text"` or `"json"`; anything else says which values it takes (the loader
    /// adds the setting's name).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(serde::de::Error::custom(format!(
                "expected \"text\" or \"json\", got {other:?}"
            ))),
        }
    }
}

/// Installs the log subscriber with `filter` (RUST_LOG wins when set), writing `format`.
/// Safe to call twice (the first call wins).
pub fn init_logging(filter: &str, format: LogFormat) {
    // The scheduler logs every job creation at info; keep it to warnings unless asked.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("tokio_cron_scheduler=warn,{filter}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => {
            let colour = use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
            builder.with_ansi(colour).try_init()
        }
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}

/// Colour codes only for a person at a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
fn use_colour(terminal: bool, no_color: Option<&OsStr>) -> bool {
    terminal && no_color.is_none_or(OsStr::is_empty)
}

/// The exit code of a command's outcome; on failure, first prints `error: ` and the error
/// with its causes (`{:#}`, one line for an `anyhow::Error`) on stderr.
pub fn exit_code<E: std::fmt::Display>(outcome: Result<(), E>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Installs logging for tests when `TEST_LOG` is set.
pub fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        init_logging("debug", LogFormat::Text);
    }
}

/// The process-wide Prometheus recorder, once installed.
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Whether [`metrics_handle`] installed the recorder: a metric handle taken before that
/// records nowhere, so only one taken after may be kept.
pub fn metrics_installed() -> bool {
    HANDLE.get().is_some()
}

/// The process-wide Prometheus recorder's handle.
pub fn metrics_handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_format_is_text_or_json_and_anything_else_is_refused() {
        let read = |text: &str| serde_json::from_str::<LogFormat>(text);
        assert_eq!(read("\"text\"").unwrap(), LogFormat::Text);
        assert_eq!(read("\"json\"").unwrap(), LogFormat::Json);
        assert!(read("\"xml\"")
            .unwrap_err()
            .to_string()
            .contains(r#"expected "text" or "json", got "xml""#));
        assert_eq!(LogFormat::default(), LogFormat::Text);
    }

    #[test]
    fn colour_only_at_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(
            use_colour(true, Some(OsStr::new(""))),
            "an empty NO_COLOR does not count"
        );
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None), "a file or a pipe gets plain text");
        assert!(!use_colour(false, Some(OsStr::new("1"))));
    }
}
