//! The accept loop both binaries serve HTTP/1.1 with, in place of `axum::serve`, for two
//! limits that a client without a token must not get around:
//!
//! - **Header read timeout**: a connection must send a request's complete headers within
//!   [`ConnectionLimits::header_read_timeout`] of the server starting to wait for them,
//!   else it is closed. hyper only enforces this when it is given a timer, which
//!   `axum::serve` does not do; so without this loop a connection that never finishes its
//!   headers stays open for as long as its peer likes. The same timeout closes idle
//!   keep-alive connections. A response being streamed (a push stream) is not affected.
//! - **Connection cap**: at most [`ConnectionLimits::max_connections`] connections are
//!   open at once, so slow connections cannot use up the process's file descriptors
//!   (which its SQLite files need too). At the cap the loop stops accepting: new
//!   connections wait in the kernel's listen backlog, costing no descriptor, until a slot
//!   frees, which a stalled connection's does within the header timeout.
//!
//! TLS: given a [`TlsAcceptor`], each connection's handshake runs in its own task (bounded by
//! the header read timeout, so a peer that never finishes it holds its slot no longer
//! than one that never sends headers), then HTTP is served over it exactly as over TCP.
//!
//! Shutdown: when `shutdown` resolves the loop stops accepting, tells every connection to
//! finish its request in flight and close, and returns once all of them have. With
//! [`serve_until`] the binary also learns the moment shutdown begins, which answers that
//! never end by themselves (push streams) and readiness need.

use super::TlsAcceptor;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// What one server accepts from its clients' connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest wait for a request's headers (idle keep-alive included).
    pub header_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// [`serve`], sending `true` on `stopping` the moment `shutdown` resolves: a push stream
/// never finishes by itself, so the graceful shutdown can only complete once the streams
/// are told to end, and `/readyz` answers 503 from then on.
pub async fn serve_until(
    listener: TcpListener,
    app: Router,
    (limits, tls): (ConnectionLimits, Option<TlsAcceptor>),
    shutdown: impl Future<Output = ()> + Send + 'static,
    stopping: watch::Sender<bool>,
) -> std::io::Result<()> {
    let begin = async move {
        shutdown.await;
        let _ = stopping.send(true);
    };
    serve_connections(listener, app, limits, tls, begin).await
}

/// Serves `app` on `listener` under `limits` until `shutdown` resolves, then finishes the
/// requests in flight. Every connection gets `TCP_NODELAY`: answers and push events are
/// small, and Nagle's algorithm would hold each one back for the peer's delayed ACK.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_connections(listener, app, limits, None, shutdown).await
}

/// [`serve`], over TLS when given an acceptor.
async fn serve_connections(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing, closing_seen) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let tcp = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => tcp,
                Err(error) => {
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone());
        let closing = closing_seen.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let _slot = slot;
            match tls {
                None => serve_connection(TokioIo::new(tcp), service, limits, closing).await,
                Some(tls) => {
                    let handshake = tokio::time::timeout(limits.header_read_timeout, tls.accept(tcp)).await;
                    match handshake {
                        Ok(Ok(stream)) => serve_connection(TokioIo::new(stream), service, limits, closing).await,
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serves HTTP/1.1 on one connection until it ends, or finishes its request in flight
/// once `closing` turns true.
async fn serve_connection<I>(
    io: TokioIo<I>,
    service: TowerToHyperService<Router>,
    limits: ConnectionLimits,
    mut closing: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let finished = tokio::select! {
        served = connection.as_mut() => Some(served),
        _ = closing.wait_for(|closing| *closing) => None,
    };
    let served = match finished {
        Some(served) => served,
        None => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = served {
        tracing::debug!(%error, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serve_until_tells_the_binary_when_shutdown_begins_and_then_returns() {
        // Given a server with a shutdown trigger and a stopping signal,
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (trigger, shutdown) = tokio::sync::oneshot::channel::<()>();
        let (stopping, mut stopping_seen) = watch::channel(false);
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(1),
            max_connections: 4,
        };
        let server = tokio::spawn(serve_until(
            listener,
            Router::new(),
            (limits, None),
            async move {
                let _ = shutdown.await;
            },
            stopping,
        ));
        assert!(!*stopping_seen.borrow());
        // when shutdown begins,
        trigger.send(()).unwrap();
        // then the binary is told, and the server returns.
        stopping_seen.wait_for(|stopping| *stopping).await.unwrap();
        server.await.unwrap().unwrap();
    }
}
