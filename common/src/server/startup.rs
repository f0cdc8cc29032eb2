//! The start-up both server binaries share, from `main` to a bound listener: install the
//! logs, start the multi-threaded runtime, bind the listen address (a clash says which
//! setting to change) and run the server on it. Every failure carries the step it
//! happened in, which [`super::telemetry::exit_code`] prints as one line before exiting 1;
//! the shutdown signal is [`super::shutdown_signal`].

use super::telemetry::LogFormat;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// What a binary says when its start-up fails.
#[derive(Debug, Clone, Copy)]
pub struct Process {
    /// Shown when the address is taken, e.g. `is another hub running? set listen / SHELFSYNC_HUB_LISTEN`.
    pub bind_hint: &'static str,
    /// The step the server's own failure is reported under, e.g. `running the hub`.
    pub running: &'static str,
}

/// Installs the logs with `log_filter` in `log_format`, starts the runtime, binds
/// `listen`, then runs `serve(listener)` until it returns.
pub fn serve_process<F, Fut, E>(
    log_filter: &str,
    log_format: LogFormat,
    listen: SocketAddr,
    process: Process,
    serve: F,
) -> anyhow::Result<()>
where
    F: FnOnce(TcpListener) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    super::telemetry::init_logging(log_filter, log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen} ({})", process.bind_hint))?;
        serve(listener).await.context(process.running)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST: Process = Process {
        bind_hint: "is another test server running? set listen",
        running: "running the test server",
    };

    #[test]
    fn the_server_gets_a_bound_listener_and_its_failure_names_the_step() {
        // Given a free port, when the server runs, then it gets a listener on that address
        // and its own failure is reported as the running step, with the cause.
        let error = serve_process(
            "off",
            LogFormat::Text,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            TEST,
            |listener| async move {
                assert!(listener.local_addr().is_ok());
                Err::<(), _>(std::io::Error::other("disk gone"))
            },
        )
        .unwrap_err();
        assert_eq!(format!("{error:#}"), "running the test server: disk gone");
    }

    #[test]
    fn a_taken_address_says_which_setting_to_change() {
        // Given an address another listener holds,
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        // when the server starts on it, then the error names the address and the hint.
        let error = serve_process("off", LogFormat::Text, address, TEST, |_| async {
            Ok::<(), std::io::Error>(())
        })
        .unwrap_err();
        let message = format!("{error:#}");
        assert!(
            message.starts_with(&format!(
                "binding {address} (is another test server running? set listen): "
            )),
            "{message}"
        );
    }
}
