//! The last step of the pipeline: forward a request to the upstream app and stream the answer.
//!
//! Bodies are streamed both ways and never buffered. The upstream response head must arrive
//! within `[upstream] timeout` (else 504), and a streamed body that stalls for longer than that
//! is cut (nginx's `proxy_read_timeout` semantics: a 1 GiB download is not killed by a
//! whole-response deadline). Connect errors and resets become 502. `Upgrade` requests
//! (WebSocket) are tunnelled both ways once the upstream answers 101.

mod body;
mod conn;
mod outbound;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, HOST, UPGRADE};
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::config::UpstreamConfig;
use crate::error::{StartupError, UpstreamSetupError};
use crate::logging::log_safe;
use crate::tls;

pub use body::{Body, BodyError};
use conn::{Checkout, Connector, Pool, Sender};
pub use conn::{ConnectError, PoolBusy, ReturnOnEnd};
use outbound::OutBody;

/// Resolves when a tunnel must close (its session ended). Owned by the tunnel: dropped
/// when the tunnel closes.
pub type TunnelEnd = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The body of a response streamed back from the upstream.
pub type UpstreamBody = IdleTimeoutBody<ReturnOnEnd<Incoming>>;

/// Why a request could not be forwarded. Answered 502/504 (503 when busy) by `reply`.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// `max_connections` reached and none came free within `timeout`: 503.
    #[error(transparent)]
    Busy(#[from] PoolBusy),
    #[error("upstream unreachable: {0}")]
    Unreachable(#[from] ConnectError),
    #[error("upstream connection failed: {0}")]
    Failed(#[source] hyper::Error),
    #[error("bad upstream URI: {0}")]
    BadUri(#[from] http::Error),
}

/// Every upstream: `[upstream]` (index 0, named `default`) and each `[upstreams.NAME]`, in
/// the order routes refer to them (`crate::policy::Route::upstream`).
pub struct Upstreams {
    default: Upstream,
    named: Vec<(String, Upstream)>,
}

// === impl Upstreams ===

impl Upstreams {
    /// `[upstream]` and the named ones; each with its own pool, timeout and TLS settings.
    pub fn new(
        default: &UpstreamConfig,
        named: &[(String, UpstreamConfig)],
    ) -> Result<Self, StartupError> {
        let named = (named.iter())
            .map(|(name, cfg)| Ok((name.clone(), Upstream::new(cfg)?)))
            .collect::<Result<_, StartupError>>()?;
        Ok(Upstreams {
            default: Upstream::new(default)?,
            named,
        })
    }

    /// Only `[upstream]` (tests and benchmarks).
    pub fn single(upstream: Upstream) -> Self {
        Upstreams {
            default: upstream,
            named: Vec::new(),
        }
    }

    /// Upstream `index` (0: `[upstream]`); an index no route can hold means the default.
    pub fn get(&self, index: usize) -> &Upstream {
        (index.checked_sub(1))
            .and_then(|i| self.named.get(i))
            .map_or(&self.default, |(_, upstream)| upstream)
    }

    /// The name of upstream `index` (`default` for `[upstream]`, as [`Upstreams::get`]).
    pub fn name(&self, index: usize) -> &str {
        (index.checked_sub(1))
            .and_then(|i| self.named.get(i))
            .map_or("default", |(name, _)| name.as_str())
    }

    /// Every upstream with its name (`default` first), for the metrics.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Upstream)> {
        std::iter::once(("default", &self.default))
            .chain(self.named.iter().map(|(name, u)| (name.as_str(), u)))
    }

    /// The names of `[upstreams.NAME]`, in index order (index = position + 1).
    pub fn names(&self) -> Vec<&str> {
        self.named.iter().map(|(name, _)| name.as_str()).collect()
    }
}

/// One upstream app: where it is, how long it may take, and its connections.
pub struct Upstream {
    connector: Connector,
    pool: Arc<Pool>,
    authority: Authority,
    /// Path prefix of `[upstream] url` without a trailing slash ("" for none).
    path_prefix: Arc<str>,
    timeout: Duration,
}

// === impl Upstream ===

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, StartupError> {
        let tls = tls::client_config(cfg.ca_file.as_deref())?;
        let uri: Uri = cfg
            .url
            .as_str()
            .parse()
            .map_err(UpstreamSetupError::InvalidUri)?;
        let parts = uri.into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(UpstreamSetupError::NoHost.into());
        };
        let connect_timeout = cfg.timeout.min(Duration::from_secs(10));
        Ok(Upstream {
            connector: Connector::new(&scheme, &authority, tls, connect_timeout)?,
            pool: Arc::new(Pool::new(cfg.max_connections, cfg.idle_timeout)),
            authority,
            path_prefix: cfg.url.path().trim_end_matches('/').into(),
            timeout: cfg.timeout,
        })
    }

    /// Upstream connections opened since start.
    pub fn connections_opened(&self) -> u64 {
        self.connector.opened()
    }

    /// Connections open to the upstream now (or being opened), idle ones included.
    pub fn connections_open(&self) -> usize {
        self.pool.open()
    }

    /// Idle connections kept for the next requests.
    pub fn connections_idle(&self) -> usize {
        self.pool.idle()
    }

    /// Requests that found every connection busy and `max_connections` reached, and waited.
    pub fn connection_waits(&self) -> u64 {
        self.pool.waited()
    }

    /// Requests that waited `timeout` for a connection in vain (answered 503).
    pub fn connection_wait_timeouts(&self) -> u64 {
        self.pool.wait_timeouts()
    }

    /// Forward `req` (headers already rewritten by the pipeline) over a connection of the
    /// pool and stream the answer back. `path` is the normalized path the policy matched
    /// on: the upstream sees exactly it. An upgraded connection is closed when `end`
    /// resolves (its session ended).
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        path: &str,
        end: Option<TunnelEnd>,
    ) -> Result<Response<Body>, ProxyError> {
        let upgrade = wants_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
        let mut req = req.map(OutBody::from);
        self.prepare(&mut req, path)?;
        let (response, sender) = self.exchange(req).await?;
        match upgrade {
            // The upgraded connection is the tunnel's now: `sender` is not reused.
            Some(client_side) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                Ok(tunnel(client_side, response, end))
            }
            _ => Ok(self.stream_back(response, sender)),
        }
    }

    /// Send a request whose body the gateway holds in full (a form post kept across a login)
    /// to `path`, and stream the answer back. Never an upgrade.
    pub async fn replay(
        &self,
        req: Request<Bytes>,
        path: &str,
    ) -> Result<Response<Body>, ProxyError> {
        let mut req = req.map(OutBody::from);
        self.prepare(&mut req, path)?;
        let (response, sender) = self.exchange(req).await?;
        Ok(self.stream_back(response, sender))
    }

    /// Get a connection (waiting up to `timeout` for one: 503 after), send the request and
    /// wait up to `timeout` for the response head (504 after). An idle connection may have
    /// been closed by the upstream just as we picked it: if the request was not sent, it is
    /// sent again on another connection (what hyper-util's pool does too); if it was, it is
    /// not retried (it may not be idempotent).
    async fn exchange(
        &self,
        mut req: Request<OutBody>,
    ) -> Result<(Response<Incoming>, Sender), ProxyError> {
        let wait_until = Instant::now() + self.timeout;
        loop {
            let checkout = self.pool.checkout(wait_until).await?;
            let sent = tokio::time::timeout(self.timeout, self.send(checkout, req)).await;
            match sent.map_err(|_| ProxyError::Timeout(self.timeout))? {
                Sent::Answered(response, sender) => return Ok((response, sender)),
                Sent::Unsent(unsent) => req = unsent,
                Sent::Failed(e) => return Err(e),
            }
        }
    }

    async fn send(&self, checkout: Checkout, req: Request<OutBody>) -> Sent {
        let mut sender = match checkout {
            Checkout::Idle(sender) => sender,
            Checkout::New(permit) => {
                // Boxed: the TLS handshake's future is large, and only a new connection needs
                // it; every request's future would carry its size.
                let mut sender = match Box::pin(self.connector.connect(permit)).await {
                    Ok(sender) => sender,
                    Err(e) => return Sent::Failed(e.into()),
                };
                return match sender.send_request(req).await {
                    Ok(response) => Sent::Answered(response, sender),
                    Err(e) => Sent::Failed(ProxyError::Failed(e)),
                };
            }
        };
        if sender.ready().await.is_err() {
            return Sent::Unsent(req);
        }
        match sender.try_send_request(req).await {
            Ok(response) => Sent::Answered(response, sender),
            Err(mut e) => match e.take_message() {
                Some(unsent) => Sent::Unsent(unsent),
                None => Sent::Failed(ProxyError::Failed(e.into_error())),
            },
        }
    }

    /// Point the request at the upstream: origin-form URI, HTTP/1.1, Host kept from the
    /// client.
    fn prepare(&self, req: &mut Request<OutBody>, path: &str) -> Result<(), ProxyError> {
        if !req.headers().contains_key(HOST) {
            // HTTP/2 carries the host in `:authority`; HTTP/1.1 upstreams need a Host header.
            let host = req.uri().authority().and_then(|a| a.as_str().parse().ok());
            let host = host.or_else(|| self.authority.as_str().parse().ok());
            if let Some(host) = host {
                req.headers_mut().insert(HOST, host);
            }
        }
        // The usual case, a path sent as it is normalized to an upstream without a path:
        // the request's own path and query go on, shared, not copied.
        let same = self.path_prefix.is_empty() && req.uri().path() == path;
        let pq = match req.uri().path_and_query() {
            Some(pq) if same => pq.clone(),
            _ => self.path_and_query(path, req.uri().query())?,
        };
        *req.uri_mut() = Uri::from(pq);
        *req.version_mut() = Version::HTTP_11;
        Ok(())
    }

    fn path_and_query(&self, path: &str, query: Option<&str>) -> Result<PathAndQuery, ProxyError> {
        let pq = match (self.path_prefix.is_empty(), query) {
            (true, None) => return Ok(PathAndQuery::try_from(path).map_err(http::Error::from)?),
            (true, Some(q)) => format!("{path}?{q}"),
            (false, None) => format!("{}{path}", self.path_prefix),
            (false, Some(q)) => format!("{}{path}?{q}", self.path_prefix),
        };
        Ok(PathAndQuery::try_from(pq).map_err(http::Error::from)?)
    }

    fn stream_back(&self, response: Response<Incoming>, sender: Sender) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        crate::headers::strip_hop_by_hop(&mut parts.headers);
        let body = IdleTimeoutBody::new(ReturnOnEnd::new(body, sender, &self.pool), self.timeout);
        Response::from_parts(parts, Body::Upstream { body })
    }
}

/// How one attempt ended.
enum Sent {
    Answered(Response<Incoming>, Sender),
    /// The reused connection was closed before the request left: try another.
    Unsent(Request<OutBody>),
    Failed(ProxyError),
}

/// An `Upgrade` request (RFC 9110 section 7.8): `Connection: upgrade` plus an `Upgrade` header.
pub fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.headers().contains_key(UPGRADE)
        && req
            .headers()
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Answer 101 to the client and splice the two upgraded connections together, until either
/// side closes or `end` resolves (then both are closed).
fn tunnel(
    client_side: hyper::upgrade::OnUpgrade,
    mut response: Response<Incoming>,
    end: Option<TunnelEnd>,
) -> Response<Body> {
    let upstream_side = hyper::upgrade::on(&mut response);
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client_side, upstream_side) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %log_safe(&e), "upgrade failed");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        let end = async move {
            match end {
                Some(end) => end.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = copied {
                    tracing::debug!(error = %log_safe(&e), "upgraded connection closed");
                }
            }
            () = end => tracing::debug!("upgraded connection closed: its session ended"),
        }
    });
    let (mut parts, _) = response.into_parts();
    // Keep `Connection: upgrade` and `Upgrade`: the client needs them to switch protocols.
    parts
        .headers
        .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    Response::from_parts(parts, Body::empty())
}

pin_project! {
    /// A streamed body that fails when it has nothing for us for longer than `timeout`.
    ///
    /// The timer is set again only when the body has nothing ready after having had a
    /// frame: a body whose frames are all ready when asked (a small response) never touches
    /// the timer, and the stall is counted from when we wait on the upstream.
    pub struct IdleTimeoutBody<B> {
        #[pin]
        inner: B,
        #[pin]
        deadline: Sleep,
        timeout: Duration,
        // A frame came since the timer was last set.
        progressed: bool,
    }
}

impl<B> IdleTimeoutBody<B> {
    pub fn new(inner: B, timeout: Duration) -> Self {
        IdleTimeoutBody {
            inner,
            deadline: tokio::time::sleep(timeout),
            timeout,
            progressed: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("upstream body stalled for more than {0:?}")]
struct BodyStalled(Duration);

impl<B> HttpBody for IdleTimeoutBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.progressed = true;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if std::mem::take(this.progressed) {
            this.deadline.as_mut().reset(Instant::now() + *this.timeout);
        }
        ready!(this.deadline.poll(cx));
        Poll::Ready(Some(Err(Box::new(BodyStalled(*this.timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Chain;

    #[test]
    fn setup_errors_say_what_is_wrong_with_the_url() {
        let cfg = |url: &str| UpstreamConfig {
            url: url.parse().unwrap(),
            timeout: Duration::from_secs(1),
            ca_file: None,
            max_connections: 1,
            idle_timeout: Duration::from_secs(1),
        };
        for (url, expected) in [
            (
                "ftp://files.example/",
                "upstream: upstream.url: the scheme must be http or https",
            ),
            (
                "file:///srv/app",
                "upstream: upstream.url: not a URI: invalid format",
            ),
        ] {
            let Err(e) = Upstream::new(&cfg(url)) else {
                panic!("{url} accepted")
            };
            assert_eq!(Chain(&e).to_string(), expected);
        }
        assert!(Upstream::new(&cfg("https://app.example:8443/base")).is_ok());
    }
}
