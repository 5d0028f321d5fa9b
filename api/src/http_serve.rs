//! The HTTP listener's accept loop: hyper's HTTP/1.1 server with a header
//! timeout and a connection cap, in place of `axum::serve`, which sets
//! neither. Without them a client sending one header byte a second
//! (slowloris), or ten thousand idle connections, held the server's
//! sockets for ever.
//!
//! * A connection must send a whole request head within the header
//!   timeout, and an idle keep-alive connection is closed after it too
//!   (hyper starts the timer whenever it waits for a head).
//! * At most `http_max_connections` at once; more wait in the kernel's
//!   backlog. A WebSocket keeps its place until it closes.
//! * A failed accept (out of file descriptors) pauses before the next.
//! * On shutdown the loop stops accepting and open connections finish the
//!   request in hand (WebSocket sessions close themselves with 1001).
//! * With TLS, the handshake is part of the head: it too must finish
//!   within the header timeout; a client speaking plaintext to it fails
//!   the handshake and is closed.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use bluelight_ingest::tls::Tls;

/// How the HTTP listener bounds its connections.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// A request head must arrive within this (and an idle connection
    /// waiting for one is closed after it).
    pub header_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
    limits: HttpLimits,
    tls: Option<Arc<Tls>>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            () = stopped(&mut stop) => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stopped(&mut stop) => return,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept an HTTP connection; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Nagle off: alert and nearest frames are small and must not wait
        // to be coalesced (it costs tens of milliseconds against a delayed
        // ACK).
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(app.clone());
        let stop = stop.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(tcp, service, limits, stop).await,
                Some(tls) => {
                    let handshake = tls.acceptor().accept(tcp);
                    match tokio::time::timeout(limits.header_timeout, handshake).await {
                        Ok(Ok(stream)) => serve_connection(stream, service, limits, stop).await,
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Serves one connection (plain or TLS) until it ends or the server stops.
async fn serve_connection<I>(
    io: I,
    service: TowerToHyperService<Router>,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "HTTP connection ended");
            }
        }
        () = stopped(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
