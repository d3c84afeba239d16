//! Upstream connections: a bounded pool per upstream, shared by every client connection.
//!
//! At most `max_connections` connections to the upstream are open at once, idle ones
//! included: each holds a permit of the pool's semaphore for as long as
//! its connection task runs. A request takes the most recently used idle connection; when
//! there is none it opens one if a permit is free, and otherwise waits, first in line, for
//! whichever comes first: a connection handed back (given straight to the oldest waiter, so
//! newcomers cannot overtake it) or a permit freed by a connection that closed. Idle
//! connections are closed after `idle_timeout` by one reaper task per pool.
//!
//! What keeps the hot path cheap: the pool's mutex is held only to pop or push one entry (never
//! across an await), no task is spawned per request, and a connection is handed back only
//! once its response body has been read to the end ([`ReturnOnEnd`]), so a request never waits
//! behind another one's download and a connection with unread bytes is never reused.
//!
//! A connection that becomes a WebSocket tunnel leaves the pool and frees its permit: tunnels
//! are bounded by the client connections they belong to (`server.max_connections`), and
//! counting them here would let a few hundred open WebSockets stall every other request.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use crate::error::UpstreamSetupError;
use crate::logging::log_safe;

pub type Sender = SendRequest<super::outbound::OutBody>;

/// The upstream connections of one upstream.
pub struct Pool {
    /// One permit per open connection (or one being opened).
    permits: Arc<Semaphore>,
    max: usize,
    idle_timeout: Duration,
    shared: Mutex<Shared>,
    /// Requests that found no connection free and had to wait.
    waited: AtomicU64,
    /// Of those, the ones that got none within the wait (answered 503).
    wait_timeouts: AtomicU64,
}

#[derive(Default)]
struct Shared {
    /// Oldest first: the reaper pops expired ones at the front, requests take the most
    /// recently used at the back (so the ones not needed age out).
    idle: VecDeque<Idle>,
    /// Requests waiting for a connection, oldest first.
    waiters: VecDeque<oneshot::Sender<Sender>>,
    reaper_started: bool,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

/// What a request got from the pool.
pub(super) enum Checkout {
    /// An idle connection, still open when taken.
    Idle(Sender),
    /// Room for a new connection: the permit goes to its connection task.
    New(OwnedSemaphorePermit),
}

/// No connection came free within the wait.
#[derive(Debug, thiserror::Error)]
#[error("all {0} upstream connections busy")]
pub struct PoolBusy(pub usize);

impl Pool {
    pub(super) fn new(max: usize, idle_timeout: Duration) -> Self {
        Pool {
            permits: Arc::new(Semaphore::new(max)),
            max,
            idle_timeout,
            shared: Mutex::default(),
            waited: AtomicU64::new(0),
            wait_timeouts: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // Every critical section leaves `Shared` consistent (a push or a pop): a panic
        // elsewhere while it was held poisons nothing worth refusing service over.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// An idle connection, else a permit to open one, else wait until `deadline` for either.
    pub(super) async fn checkout(&self, deadline: Instant) -> Result<Checkout, PoolBusy> {
        let handed = {
            let mut shared = self.lock();
            while let Some(idle) = shared.idle.pop_back() {
                if !idle.sender.is_closed() {
                    return Ok(Checkout::Idle(idle.sender));
                }
            }
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return Ok(Checkout::New(permit));
            }
            let (tx, rx) = oneshot::channel();
            shared.add_waiter(tx);
            rx
        };
        // Boxed: the wait's future (semaphore, timer, channel) would make every request's
        // future larger, and most requests find a connection at once.
        Box::pin(self.wait(handed, deadline)).await
    }

    /// Wait until `deadline` for a connection handed over on `handed`, or for a permit.
    async fn wait(
        &self,
        mut handed: oneshot::Receiver<Sender>,
        deadline: Instant,
    ) -> Result<Checkout, PoolBusy> {
        self.waited.fetch_add(1, Ordering::Relaxed);
        let permit = tokio::select! {
            handed = &mut handed => match handed {
                Ok(sender) => return Ok(Checkout::Idle(sender)),
                // Not reached: a waiter's sender leaves the queue only to send.
                Err(_) => None,
            },
            permit = self.permits.clone().acquire_owned() => permit.ok(),
            () = tokio::time::sleep_until(deadline) => None,
        };
        // A connection handed over while the permit (or the deadline) won the race is
        // used, not dropped; none can come after `close`.
        handed.close();
        if let Ok(sender) = handed.try_recv() {
            return Ok(Checkout::Idle(sender));
        }
        match permit {
            Some(permit) => Ok(Checkout::New(permit)),
            None => {
                self.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                Err(PoolBusy(self.max))
            }
        }
    }

    /// Hand `sender` to the oldest waiting request, else keep it idle; closed ones are
    /// dropped (their task has freed their permit).
    pub(super) fn put_back(self: &Arc<Self>, mut sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let start_reaper = {
            let mut shared = self.lock();
            while let Some(waiter) = shared.waiters.pop_front() {
                match waiter.send(sender) {
                    Ok(()) => return,
                    // That request gave up (timed out or its client went away).
                    Err(back) => sender = back,
                }
            }
            if shared.idle.len() >= self.max {
                // Only closed entries can be in excess: each open one holds a permit.
                shared.idle.retain(|idle| !idle.sender.is_closed());
            }
            shared.idle.push_back(Idle { sender, since: now });
            !std::mem::replace(&mut shared.reaper_started, true)
        };
        if start_reaper {
            tokio::spawn(reap(Arc::downgrade(self), self.idle_timeout));
        }
    }

    /// Take the connections idle for `idle_timeout` (and closed ones) off the front; returns
    /// them, to be dropped outside the lock, and when to look again.
    fn expire(&self, now: Instant) -> (Vec<Sender>, Instant) {
        let mut expired = Vec::new();
        let mut shared = self.lock();
        while let Some(oldest) = shared.idle.front() {
            let stale = now.saturating_duration_since(oldest.since) >= self.idle_timeout;
            if !stale && !oldest.sender.is_closed() {
                break;
            }
            if let Some(idle) = shared.idle.pop_front() {
                expired.push(idle.sender);
            }
        }
        let next = match shared.idle.front() {
            Some(oldest) => oldest.since + self.idle_timeout,
            None => now + self.idle_timeout,
        };
        (expired, next)
    }

    /// Connections open or being opened.
    pub(super) fn open(&self) -> usize {
        self.max.saturating_sub(self.permits.available_permits())
    }

    pub(super) fn idle(&self) -> usize {
        self.lock().idle.len()
    }

    pub(super) fn waited(&self) -> u64 {
        self.waited.load(Ordering::Relaxed)
    }

    pub(super) fn wait_timeouts(&self) -> u64 {
        self.wait_timeouts.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn add_waiter(&mut self, waiter: oneshot::Sender<Sender>) {
        // Requests that gave up leave their entry behind; drop those before the queue
        // grows its allocation, so it stays within twice the live waiters.
        if self.waiters.len() == self.waiters.capacity() {
            self.waiters.retain(|w| !w.is_closed());
        }
        self.waiters.push_back(waiter);
    }
}

/// Closes idle connections once they have been idle for `idle_timeout`; ends with the pool.
async fn reap(pool: Weak<Pool>, idle_timeout: Duration) {
    let mut next = Instant::now() + idle_timeout;
    loop {
        tokio::time::sleep_until(next).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let (expired, then) = pool.expire(Instant::now());
        // Dropping the last handle of a connection lets its task close it and free the permit.
        drop(expired);
        next = then;
    }
}

/// Why no upstream connection could be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("resolving {host}: {source}")]
    Resolve { host: String, source: io::Error },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("connecting to {addr}: {source}")]
    Tcp { addr: SocketAddr, source: io::Error },
    #[error("connecting to {addr}: no answer within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("TLS handshake with {host}: {source}")]
    Tls { host: String, source: io::Error },
    #[error("HTTP/1.1 handshake: {0}")]
    Http(#[source] hyper::Error),
}

/// Opens HTTP/1.1 connections to the upstream, over TLS for `https`.
pub(super) struct Connector {
    /// Host without IPv6 brackets, as the resolver wants it.
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
    /// Connections opened so far (metrics: compared with the request count, it shows reuse).
    opened: AtomicU64,
}

impl Connector {
    pub(super) fn new(
        scheme: &Scheme,
        authority: &Authority,
        tls: rustls::ClientConfig,
        connect_timeout: Duration,
    ) -> Result<Self, UpstreamSetupError> {
        let https = if *scheme == Scheme::HTTPS {
            true
        } else if *scheme == Scheme::HTTP {
            false
        } else {
            return Err(UpstreamSetupError::Scheme);
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = ServerName::try_from(host.to_owned()).map_err(|source| {
                UpstreamSetupError::ServerName {
                    host: host.to_owned(),
                    source,
                }
            })?;
            let mut config = tls;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some((TlsConnector::from(Arc::new(config)), name))
        } else {
            None
        };
        Ok(Connector {
            host: host.to_owned(),
            port,
            tls,
            connect_timeout,
            opened: AtomicU64::new(0),
        })
    }

    pub(super) fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// A new connection, its HTTP/1.1 state driven by a task of its own, which holds
    /// `permit` until the connection closes (or becomes a tunnel).
    pub(super) async fn connect(
        &self,
        permit: OwnedSemaphorePermit,
    ) -> Result<Sender, ConnectError> {
        let tcp = self.tcp().await?;
        let sender = match &self.tls {
            None => handshake(tcp, permit).await,
            Some((connector, name)) => {
                let tls = tokio::time::timeout(
                    self.connect_timeout,
                    connector.connect(name.clone(), tcp),
                )
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
                .map_err(|source| ConnectError::Tls {
                    host: self.host.clone(),
                    source,
                })?;
                handshake(tls, permit).await
            }
        }?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(sender)
    }

    /// Every resolved address in turn, each within the connect timeout.
    async fn tcp(&self) -> Result<TcpStream, ConnectError> {
        let addrs = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|source| ConnectError::Resolve {
                host: self.host.clone(),
                source,
            })?;
        let mut last = ConnectError::NoAddress {
            host: self.host.clone(),
        };
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    // Requests are small writes that must leave at once.
                    let _ = tcp.set_nodelay(true);
                    return Ok(tcp);
                }
                Ok(Err(source)) => last = ConnectError::Tcp { addr, source },
                Err(_) => {
                    last = ConnectError::Timeout {
                        addr,
                        timeout: self.connect_timeout,
                    }
                }
            }
        }
        Err(last)
    }
}

async fn handshake<T>(io: T, permit: OwnedSemaphorePermit) -> Result<Sender, ConnectError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(ConnectError::Http)?;
    tokio::spawn(async move {
        // With upgrades: a WebSocket tunnel takes the connection over after a 101, and this
        // future ends then.
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %log_safe(&e), "upstream connection ended with an error");
        }
        drop(permit);
    });
    Ok(sender)
}

pin_project! {
    /// A response body that hands its upstream connection back for the next request once
    /// the body has been read to its end. A body dropped before its end (the client went
    /// away) drops the connection: it still holds unread response bytes.
    pub struct ReturnOnEnd<B> {
        #[pin]
        inner: B,
        sender: Option<Sender>,
        pool: Arc<Pool>,
    }
}

impl<B: HttpBody> ReturnOnEnd<B> {
    pub(super) fn new(inner: B, sender: Sender, pool: &Arc<Pool>) -> Self {
        let mut body = ReturnOnEnd {
            inner,
            sender: Some(sender),
            pool: pool.clone(),
        };
        if body.inner.is_end_stream() {
            give_back(&mut body.sender, &body.pool);
        }
        body
    }
}

fn give_back(sender: &mut Option<Sender>, pool: &Arc<Pool>) {
    if let Some(sender) = sender.take() {
        pool.put_back(sender);
    }
}

impl<B: HttpBody<Data = Bytes>> HttpBody for ReturnOnEnd<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let frame = this.inner.as_mut().poll_frame(cx);
        match &frame {
            Poll::Ready(None) => give_back(this.sender, this.pool),
            // The last frame: hyper may not poll again after it, so give back now.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => {
                give_back(this.sender, this.pool);
            }
            // An error: the connection is in an unknown state, never reuse it.
            Poll::Ready(Some(Err(_))) => drop(this.sender.take()),
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
