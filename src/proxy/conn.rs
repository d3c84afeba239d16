//! Upstream connections, kept with the downstream connection that uses them.
//!
//! Why not a shared pool: hyper-util's pooled client takes a process-wide lock on every
//! checkout and check-in, and spawns a task per response to put the connection back once its
//! body is read. A downstream HTTP/1.1 connection sends one request at a time, so the upstream
//! connection it used last is exactly the one it needs next: keeping it with the downstream
//! connection shares no lock between connections and costs no extra task. A downstream
//! HTTP/2 connection carries concurrent streams: it opens more upstream connections and keeps
//! up to [`MAX_IDLE`] of them. When the downstream connection closes, its upstream connections
//! close with it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::StartupError;
use crate::logging::log_safe;

/// Idle upstream connections kept per downstream connection (only HTTP/2 ever has more than
/// one: its concurrent streams each need their own HTTP/1.1 upstream connection).
const MAX_IDLE: usize = 16;

pub type Sender = SendRequest<Incoming>;

/// The idle upstream connections of one downstream connection. The lock is per downstream
/// connection, so it is uncontended for HTTP/1.1 and shared by one connection's streams only.
#[derive(Default)]
pub struct UpstreamConns {
    idle: Mutex<Vec<Sender>>,
}

impl UpstreamConns {
    /// The most recently used idle connection that is still open.
    pub(super) fn take(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Keep `sender` for the next request, unless it is closed or enough are kept already.
    pub(super) fn put_back(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(sender);
        }
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
    ) -> Result<Self, StartupError> {
        let bad = |why: &str| StartupError::Upstream(format!("upstream.url: {why}"));
        let https = if *scheme == Scheme::HTTPS {
            true
        } else if *scheme == Scheme::HTTP {
            false
        } else {
            return Err(bad("the scheme must be http or https"));
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| bad(&format!("host {host}: {e}")))?;
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

    /// A new connection, its HTTP/1.1 state driven by a task of its own.
    pub(super) async fn connect(&self) -> Result<Sender, ConnectError> {
        let tcp = self.tcp().await?;
        let sender = match &self.tls {
            None => handshake(tcp).await,
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
                handshake(tls).await
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

async fn handshake<T>(io: T) -> Result<Sender, ConnectError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(ConnectError::Http)?;
    tokio::spawn(async move {
        // With upgrades: a WebSocket tunnel takes the connection over after a 101.
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %log_safe(&e), "upstream connection ended with an error");
        }
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
        conns: Weak<UpstreamConns>,
    }
}

impl<B: HttpBody> ReturnOnEnd<B> {
    pub(super) fn new(inner: B, sender: Sender, conns: &Arc<UpstreamConns>) -> Self {
        let mut body = ReturnOnEnd {
            inner,
            sender: Some(sender),
            conns: Arc::downgrade(conns),
        };
        if body.inner.is_end_stream() {
            body.give_back();
        }
        body
    }

    fn give_back(&mut self) {
        give_back(&mut self.sender, &self.conns);
    }
}

fn give_back(sender: &mut Option<Sender>, conns: &Weak<UpstreamConns>) {
    if let (Some(sender), Some(conns)) = (sender.take(), conns.upgrade()) {
        conns.put_back(sender);
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
            Poll::Ready(None) => give_back(this.sender, this.conns),
            // The last frame: hyper may not poll again after it, so give back now.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => {
                give_back(this.sender, this.conns);
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
