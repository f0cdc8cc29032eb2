//! HTTP service glue shared by the hub and the edge agent (cargo feature `server`):
//! `problem+json` answers, request extractors whose rejections are problems, the
//! cross-cutting middleware, telemetry set-up and the shutdown signal. The domain modules
//! of this crate never depend on it, so `common` without the feature stays pure.

pub mod extract;
pub mod middleware;
pub mod openapi;
pub mod problem;
pub mod schedule;
pub mod secret;
pub mod settings;
pub mod telemetry;

pub use problem::ProblemResponse;

/// Serves `app` on `listener` until `shutdown` resolves, then finishes the requests in
/// flight. Every connection gets `TCP_NODELAY`: answers and push events are small, and
/// Nagle's algorithm would hold each one back for the peer's delayed ACK (about 40 ms).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

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
