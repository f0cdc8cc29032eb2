//! Logs, metrics and error reports, set up in one place so both binaries and the tests
//! agree.
//!
//! Logs go to stderr through `tracing`, coloured only when stderr is a terminal and
//! `NO_COLOR` is not set (log files and journald get plain text); tests stay quiet unless
//! `TEST_LOG=1`. Metrics use one process-wide Prometheus recorder (installed once, so
//! several hubs started by tests in one process share it) rendered by `GET /metrics`.
//! A command that fails prints one line and exits non-zero ([`exit_code`]), never a
//! backtrace, whatever `RUST_BACKTRACE` says: the error is the user's to fix, not a bug.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::ffi::OsStr;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

/// Installs the log subscriber with `filter` (RUST_LOG wins when set). Safe to call twice.
pub fn init_logging(filter: &str) {
    // The scheduler logs every job creation at info; keep it to warnings unless asked.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("tokio_cron_scheduler=warn,{filter}")));
    let colour = use_colour(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init();
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
        init_logging("debug");
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
