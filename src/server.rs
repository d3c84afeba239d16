//! The accept loop: plain TCP or TLS, HTTP/1.1 and HTTP/2, connection limits, graceful drain.
//!
//! Each connection is served on its own task; the TLS handshake happens there too, so a slow
//! client never blocks `accept`. On shutdown the listener is dropped at once (new connections
//! are refused), in-flight requests get `shutdown_grace`, then we return.
//!
//! Limits no client can push others past:
//! - at most `max_connections` client connections: at the limit the loop stops accepting, and
//!   new connections wait in the kernel's backlog until one closes. The slot is held by the
//!   socket itself ([`Slotted`]), so a WebSocket tunnel keeps it for as long as it lives;
//! - a connection must complete its first request head within `header_read_timeout` of being
//!   accepted: TLS handshake, HTTP/2 preface and first HEADERS, or HTTP/1 head. hyper's own
//!   timer covers only an HTTP/1 head, and hyper-util's protocol sniff has none;
//! - a keep-alive connection with no request in flight for `idle_timeout` is shut down
//!   gracefully (HTTP/1: closed; HTTP/2: GOAWAY, in-flight streams finish);
//! - at most [`MAX_CONCURRENT_STREAMS`] streams per HTTP/2 connection.
//!
//! The deadlines are kept by one timer per connection ([`Activity`]), which the requests only
//! update with two atomic operations each: no timer is reset per request.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::config::ServerConfig;
use crate::headers::{self, Peer};
use crate::logging::log_safe;

/// Concurrent streams allowed on one HTTP/2 connection. A client opening more
/// waits for one to finish (RFC 9113 5.1.2), or has the extra ones refused.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// Something that answers requests: the gateway, or the metrics-only listener.
pub trait Handler: Send + Sync + 'static {
    /// State kept per client connection, shared by its requests.
    type PerConnection: Send + Sync + 'static;
    /// The body of its responses.
    type Body: HttpBody<Data = Bytes, Error: Into<BoxError>> + Send + 'static;

    /// Called once when a client connection is accepted (after its TLS handshake).
    fn connection(&self, peer: &Peer) -> Self::PerConnection;

    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Peer,
        connection: Arc<Self::PerConnection>,
    ) -> impl Future<Output = Response<Self::Body>> + Send;
}

/// The error of a response body, as hyper takes it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Client connection counters of one listener, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    open: AtomicI64,
    no_request: AtomicU64,
    idle: AtomicU64,
}

impl ConnectionStats {
    /// Client connections open now (TLS handshakes and WebSocket tunnels included).
    pub fn open(&self) -> i64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed because no request head was complete within `header_read_timeout`.
    pub fn closed_without_request(&self) -> u64 {
        self.no_request.load(Ordering::Relaxed)
    }

    /// Keep-alive connections shut down after `idle_timeout` without a request.
    pub fn closed_idle(&self) -> u64 {
        self.idle.load(Ordering::Relaxed)
    }
}

/// Serve `handler` on `listener` until `shutdown` resolves, then drain.
pub async fn run<H: Handler>(
    handler: Arc<H>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    cfg: &ServerConfig,
    stats: Arc<ConnectionStats>,
    shutdown: impl Future<Output = ()>,
) {
    let builder = Arc::new(connection_builder(cfg));
    // Shutdown signal to every connection; `closed()` resolves once all of them ended.
    let (drain, _) = watch::channel(());
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let limits = Limits {
        first_request: cfg.header_read_timeout,
        handshake: cfg.tls_handshake_timeout,
        idle: cfg.idle_timeout,
    };
    let mut shutdown = pin!(shutdown);
    loop {
        // A free slot first: at `max_connections`, connections queue in the kernel's backlog.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, addr)) => {
                let conn = Connection {
                    handler: handler.clone(),
                    builder: builder.clone(),
                    stop: drain.subscribe(),
                    tls: tls.clone(),
                    limits,
                    stats: stats.clone(),
                    trusted: headers::is_trusted(&cfg.trusted_proxies, addr.ip()),
                };
                tokio::spawn(conn.serve(tcp, addr, slot));
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                tracing::warn!(error = %log_safe(&e), "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    tracing::info!(grace = ?cfg.shutdown_grace, "shutting down: listener closed, draining");
    let _ = drain.send(());
    tokio::select! {
        () = drain.closed() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(cfg.shutdown_grace) => {
            tracing::warn!("shutdown grace period over, closing remaining connections");
        }
    }
}

fn connection_builder(cfg: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        // Not hyper's head timer: it starts only after the protocol sniff, and on a
        // keep-alive connection it also runs while the connection is idle, which would cut
        // every idle connection at `header_read_timeout` instead of `idle_timeout`. The
        // connection's watchdog bounds the first head from accept, and a later head can only
        // arrive on an idle connection, which closes after `idle_timeout`.
        .header_read_timeout(None)
        .max_headers(cfg.max_headers)
        .max_buf_size(cfg.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        // A peer that vanished while a stream is open is found out by PING (answered within
        // hyper's 20 s), not after the kernel's retransmission timeout.
        .keep_alive_interval(cfg.idle_timeout)
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    /// From accept to the first complete request head (TLS handshake included).
    first_request: Duration,
    handshake: Duration,
    idle: Duration,
}

struct Connection<H> {
    handler: Arc<H>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stop: watch::Receiver<()>,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    stats: Arc<ConnectionStats>,
    /// Whether the peer is one of `trusted_proxies`: decided once per connection.
    trusted: bool,
}

impl<H: Handler> Connection<H> {
    async fn serve(self, tcp: TcpStream, addr: SocketAddr, slot: OwnedSemaphorePermit) {
        let accepted = Instant::now();
        let first_request_by = accepted + self.limits.first_request;
        let _ = tcp.set_nodelay(true);
        let io = Slotted::new(tcp, slot, self.stats.clone());
        match self.tls.clone() {
            None => {
                let peer = Peer {
                    addr,
                    tls: false,
                    trusted: self.trusted,
                };
                self.serve_io(TokioIo::new(io), peer, first_request_by)
                    .await;
            }
            Some(acceptor) => {
                let handshake_by = first_request_by.min(accepted + self.limits.handshake);
                match tokio::time::timeout_at(handshake_by, acceptor.accept(io)).await {
                    Ok(Ok(stream)) => {
                        let peer = Peer {
                            addr,
                            tls: true,
                            trusted: self.trusted,
                        };
                        self.serve_io(TokioIo::new(stream), peer, first_request_by)
                            .await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, error = %log_safe(&e), "TLS handshake failed")
                    }
                    Err(_) => {
                        self.stats.no_request.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%addr, "TLS handshake timed out");
                    }
                }
            }
        }
    }

    /// Serve HTTP on `io` under the connection's watchdog: closed when no request head is
    /// complete by `first_request_by`, shut down gracefully when idle for `limits.idle`.
    async fn serve_io<I>(self, io: I, peer: Peer, first_request_by: Instant)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let handler = self.handler;
        let state = Arc::new(handler.connection(&peer));
        let activity = Arc::new(Activity::new());
        let requests = activity.clone();
        let service = service_fn(move |req| {
            let request = requests.begin();
            let handler = handler.clone();
            let state = state.clone();
            async move {
                let response = handler.handle(req, peer, state).await;
                // The request stays in flight until hyper drops the body: sent to its end,
                // or the client went away.
                Ok::<_, Infallible>(response.map(|body| Tracked { body, request }))
            }
        });
        let mut conn = pin!(self.builder.serve_connection_with_upgrades(io, service));
        let mut stop = self.stop;
        // First look at whichever comes first: the first-request deadline, or the idle one
        // of a request that would end at once. Later looks are each set to the exact
        // deadline the state calls for (see `Activity::next`).
        let first_look = first_request_by.min(Instant::now() + self.limits.idle);
        let mut timer = pin!(tokio::time::sleep_until(first_look));
        let mut closing = false;
        let limits = self.limits;
        let result = loop {
            tokio::select! {
                result = conn.as_mut() => break result,
                () = timer.as_mut() => {
                    let now = Instant::now();
                    if closing {
                        // Shut down gracefully a while ago (idle, or the server stops).
                        // HTTP/2 closes once the client answers the GOAWAY's PING; a client
                        // that never does is dropped once nothing is in flight.
                        if activity.in_flight() == 0 {
                            tracing::debug!(addr = %peer.addr, "connection did not close in time");
                            return;
                        }
                        timer.as_mut().reset(now + limits.first_request);
                        continue;
                    }
                    match activity.next(now, first_request_by, limits.idle) {
                        Next::Wait(until) => timer.as_mut().reset(until),
                        Next::CloseNow => {
                            self.stats.no_request.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(addr = %peer.addr, "no request head within header_read_timeout");
                            return;
                        }
                        Next::Shutdown => {
                            self.stats.idle.fetch_add(1, Ordering::Relaxed);
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                            timer.as_mut().reset(now + limits.first_request);
                        }
                    }
                }
                _ = stop.changed(), if !closing => {
                    // The server stops (or is gone): finish in-flight requests, then close.
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    timer.as_mut().reset(Instant::now() + limits.first_request);
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(addr = %peer.addr, error = %log_safe(&e), "connection ended with an error");
        }
    }
}

/// What the watchdog does when its timer fires.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Look again then.
    Wait(Instant),
    /// Graceful shutdown (idle).
    Shutdown,
    /// Drop the connection (no request ever came, or closing took too long).
    CloseNow,
}

/// Requests in flight on one connection and when the last one ended: written by the
/// requests, read by the connection's watchdog when its timer fires.
struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Nanoseconds from `epoch` to the end of the last request; [`Activity::NEVER`] until one
    /// has ended.
    last_end: AtomicU64,
}

impl Activity {
    const NEVER: u64 = u64::MAX;

    fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_end: AtomicU64::new(Self::NEVER),
        }
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// In flight: look again after `idle` (a request that ends meanwhile moves the idle
    /// deadline past that). None ever: close at the first-request deadline. Else idle since
    /// the last end.
    fn next(&self, now: Instant, first_request_by: Instant, idle: Duration) -> Next {
        if self.in_flight() > 0 {
            return Next::Wait(now + idle);
        }
        match self.last_end.load(Ordering::Acquire) {
            Self::NEVER if now >= first_request_by => Next::CloseNow,
            Self::NEVER => Next::Wait(first_request_by),
            nanos => {
                let idle_by = self.epoch + Duration::from_nanos(nanos) + idle;
                if now >= idle_by {
                    Next::Shutdown
                } else {
                    Next::Wait(idle_by)
                }
            }
        }
    }
}

/// One request in flight; its end is recorded when dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let nanos = activity.epoch.elapsed().as_nanos();
        let nanos = u64::try_from(nanos).unwrap_or(Activity::NEVER - 1);
        // The end time first: the watchdog reads it after seeing the count drop.
        activity.last_end.store(nanos, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project! {
    /// A response body that keeps its request counted as in flight until hyper drops it.
    struct Tracked<B> {
        #[pin]
        body: B,
        request: InFlight,
    }
}

impl<B: HttpBody<Data = Bytes>> HttpBody for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

pin_project! {
    /// The client's socket with its `max_connections` slot: the slot is released when the
    /// socket closes, also when an upgrade (WebSocket) took the socket over from hyper.
    struct Slotted {
        #[pin]
        tcp: TcpStream,
        slot: Slot,
    }
}

impl Slotted {
    fn new(tcp: TcpStream, permit: OwnedSemaphorePermit, stats: Arc<ConnectionStats>) -> Self {
        stats.open.fetch_add(1, Ordering::Relaxed);
        Slotted {
            tcp,
            slot: Slot {
                _permit: permit,
                stats,
            },
        }
    }
}

struct Slot {
    _permit: OwnedSemaphorePermit,
    stats: Arc<ConnectionStats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for Slotted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().tcp.poll_read(cx, buf)
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().tcp.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().tcp.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().tcp.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().tcp.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_decides_from_requests_not_bytes() {
        let activity = Arc::new(Activity::new());
        let start = Instant::now();
        let first_by = start + Duration::from_secs(10);
        let idle = Duration::from_secs(60);
        assert_eq!(activity.next(start, first_by, idle), Next::Wait(first_by));
        assert_eq!(activity.next(first_by, first_by, idle), Next::CloseNow);

        let request = activity.begin();
        tokio::time::advance(Duration::from_secs(100)).await;
        let now = Instant::now();
        assert_eq!(activity.next(now, first_by, idle), Next::Wait(now + idle));
        drop(request);
        let ended = Instant::now();
        assert_eq!(
            activity.next(ended, first_by, idle),
            Next::Wait(ended + idle)
        );
        assert_eq!(activity.next(ended + idle, first_by, idle), Next::Shutdown);
    }
}
