//! The accept loop: plain TCP or TLS, HTTP/1.1 and HTTP/2, graceful drain.
//!
//! Each connection is served on its own task; the TLS handshake happens there too (with a
//! timeout), so a slow client never blocks `accept`. On shutdown the listener is dropped at
//! once (new connections are refused), in-flight requests get `shutdown_grace`, then we return.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::body::Body;
use crate::config::ServerConfig;
use crate::headers::{self, Peer};
use crate::logging::log_safe;

/// Something that answers requests: the gateway, or the metrics-only listener.
pub trait Handler: Send + Sync + 'static {
    /// State kept per client connection, shared by its requests (the gateway keeps its
    /// upstream connections there).
    type PerConnection: Send + Sync + 'static;

    /// Called once when a client connection is accepted (after its TLS handshake).
    fn connection(&self, peer: &Peer) -> Self::PerConnection;

    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Peer,
        connection: Arc<Self::PerConnection>,
    ) -> impl Future<Output = Response<Body>> + Send;
}

/// Serve `handler` on `listener` until `shutdown` resolves, then drain.
pub async fn run<H: Handler>(
    handler: Arc<H>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    cfg: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let builder = Arc::new(connection_builder(cfg));
    let graceful = GracefulShutdown::new();
    let handshake_timeout = cfg.tls_handshake_timeout;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, addr)) => {
                    let conn = Connection {
                        handler: handler.clone(),
                        builder: builder.clone(),
                        watcher: graceful.watcher(),
                        tls: tls.clone(),
                        handshake_timeout,
                        trusted: headers::is_trusted(&cfg.trusted_proxies, addr.ip()),
                    };
                    tokio::spawn(conn.serve(tcp, addr));
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %log_safe(&e), "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    drop(listener);
    tracing::info!(grace = ?cfg.shutdown_grace, "shutting down: listener closed, draining");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(cfg.shutdown_grace) => {
            tracing::warn!("shutdown grace period over, closing remaining connections");
        }
    }
}

fn connection_builder(cfg: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_headers(cfg.max_headers)
        .max_buf_size(cfg.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

struct Connection<H> {
    handler: Arc<H>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
    tls: Option<TlsAcceptor>,
    handshake_timeout: Duration,
    /// Whether the peer is one of `trusted_proxies`: decided once per connection.
    trusted: bool,
}

impl<H: Handler> Connection<H> {
    async fn serve(self, tcp: TcpStream, addr: SocketAddr) {
        let _ = tcp.set_nodelay(true);
        match self.tls.clone() {
            None => {
                let peer = Peer {
                    addr,
                    tls: false,
                    trusted: self.trusted,
                };
                self.serve_io(TokioIo::new(tcp), peer).await;
            }
            Some(acceptor) => {
                match tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let peer = Peer {
                            addr,
                            tls: true,
                            trusted: self.trusted,
                        };
                        self.serve_io(TokioIo::new(stream), peer).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, error = %log_safe(&e), "TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve_io<I>(self, io: I, peer: Peer)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let handler = self.handler;
        let state = Arc::new(handler.connection(&peer));
        let service = service_fn(move |req| {
            let handler = handler.clone();
            let state = state.clone();
            async move { Ok::<_, Infallible>(handler.handle(req, peer, state).await) }
        });
        let conn = self.builder.serve_connection_with_upgrades(io, service);
        if let Err(e) = self.watcher.watch(conn.into_owned()).await {
            tracing::debug!(
                addr = %peer.addr,
                error = %log_safe(&e),
                "connection ended with an error"
            );
        }
    }
}
