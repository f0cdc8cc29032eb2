//! HTTP service glue shared by the hub and the edge agent (cargo feature `server`):
//! `problem+json` answers and the error-answer skeleton, request extractors whose
//! rejections are problems, the cross-cutting middleware and request logs, telemetry set-up, settings, the
//! start-up of a server process, the accept loop and the shutdown signal. The domain
//! modules of this crate never depend on it, so `common` without the feature stays pure.

pub mod extract;
pub mod failure;
pub mod middleware;
pub mod openapi;
pub mod ops;
pub mod problem;
pub mod request_log;
pub mod retention;
pub mod schedule;
pub mod secret;
pub mod serve;
pub mod settings;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod web;

pub use problem::ProblemResponse;
pub use serve::{serve, serve_until, ConnectionLimits};
pub use tls::TlsAcceptor;

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}
