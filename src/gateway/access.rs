//! The access log line and the request id it carries.
//!
//! One line per request, target `authgate::access`: request id, method, path, host, user
//! agent, the user's `sub` (`-` when the request carried no identity), status, latencies,
//! peer. Probes (`/healthz`, `/readyz`, `/metrics`) are logged at debug, everything else at
//! info (a failed upstream call at warn): an orchestrator polling every few seconds must not
//! drown the requests people look for.
//!
//! Every value a client controls goes through `log_safe` (escaped, bounded).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use crate::endpoints::Builtin;
use crate::logging::log_safe;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest `X-Request-Id` kept from a trusted proxy.
pub const MAX_REQUEST_ID: usize = 128;

/// Makes the ids of requests that bring none we keep.
pub struct RequestIds {
    next: AtomicU64,
}

impl RequestIds {
    /// Ids count up from a random start, so two replicas (or two runs) rarely share one.
    pub fn new() -> Self {
        RequestIds {
            next: AtomicU64::new(u64::from(rand::random::<u32>()) * 1_000_000),
        }
    }

    /// The request's id, set on `headers` (the upstream sees it). A trusted proxy's
    /// `X-Request-Id` is kept when it is one value of 1 to [`MAX_REQUEST_ID`] visible ASCII
    /// characters without spaces; anyone else's, or anything else, is replaced, every line of
    /// it: a client must not choose the id that ties log lines together.
    pub fn assign(&self, headers: &mut HeaderMap, trusted: bool) -> HeaderValue {
        if trusted {
            let mut ids = headers.get_all(&X_REQUEST_ID).iter();
            if let (Some(id), None) = (ids.next(), ids.next())
                && is_valid_id(id.as_bytes())
            {
                return id.clone();
            }
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = HeaderValue::from(n);
        headers.insert(X_REQUEST_ID.clone(), id.clone());
        id
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

fn is_valid_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic)
}

/// Whether `builtin` is polled by machines (orchestrator probes, Prometheus).
pub fn is_probe(builtin: Option<Builtin>) -> bool {
    matches!(
        builtin,
        Some(Builtin::Healthz | Builtin::Readyz | Builtin::Metrics)
    )
}

/// What the request said about itself, taken before it is handed on.
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub host: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
}

impl Seen {
    pub fn of(method: &Method, uri: &Uri, headers: &HeaderMap) -> Self {
        Seen {
            method: method.clone(),
            uri: uri.clone(),
            host: headers.get(http::header::HOST).cloned().or_else(|| {
                // HTTP/2 carries the host in `:authority`.
                let authority = uri.authority()?;
                HeaderValue::from_str(authority.as_str()).ok()
            }),
            user_agent: headers.get(http::header::USER_AGENT).cloned(),
        }
    }
}

/// One access log line.
pub struct Line<'a> {
    pub seen: &'a Seen,
    pub request_id: &'a HeaderValue,
    pub sub: Option<&'a str>,
    /// The route's metrics label (its `name`, else host and path).
    pub route: &'a str,
    /// The upstream's name (`default` for `[upstream]`), when the request went to one.
    pub upstream: Option<&'a str>,
    pub status: u16,
    pub elapsed: Duration,
    pub upstream_time: Option<Duration>,
    pub peer: std::net::SocketAddr,
    pub probe: bool,
    pub upstream_error: Option<&'a str>,
}

impl Line<'_> {
    pub fn emit(&self) {
        let request_id = text(Some(self.request_id));
        let method = &self.seen.method;
        let path = self.seen.uri.path();
        let host = text(self.seen.host.as_ref());
        let user_agent = text(self.seen.user_agent.as_ref());
        let sub = self.sub.unwrap_or("-");
        let route = self.route;
        let upstream = self.upstream.unwrap_or("-");
        let status = self.status;
        let latency_us = self.elapsed.as_micros() as u64;
        let upstream_us = self.upstream_time.map(|d| d.as_micros() as u64);
        let peer = self.peer;
        macro_rules! line {
            ($level:ident $(, $($extra:tt)+)?) => {
                tracing::$level!(
                    target: "authgate::access",
                    request_id = %log_safe(&request_id), %method, path = %log_safe(path),
                    host = %log_safe(&host), sub = %log_safe(sub),
                    route = %log_safe(route), upstream = %log_safe(upstream),
                    user_agent = %log_safe(&user_agent),
                    status, latency_us, upstream_us, %peer $(, $($extra)+)?
                )
            };
        }
        match self.upstream_error {
            Some(error) => line!(warn, upstream_error = %log_safe(error)),
            None if self.probe => line!(debug),
            None => line!(info),
        }
    }
}

/// A header's value as text (`-` when absent); bytes beyond ASCII are read as UTF-8,
/// replacing what is not.
fn text(value: Option<&HeaderValue>) -> Cow<'_, str> {
    match value {
        Some(v) => String::from_utf8_lossy(v.as_bytes()),
        None => Cow::Borrowed("-"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assigned(lines: &[&[u8]], trusted: bool) -> (HeaderValue, Vec<HeaderValue>) {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(X_REQUEST_ID.clone(), HeaderValue::from_bytes(line).unwrap());
        }
        let id = RequestIds::new().assign(&mut headers, trusted);
        let sent = headers.get_all(&X_REQUEST_ID).iter().cloned().collect();
        (id, sent)
    }

    #[test]
    fn a_trusted_proxys_valid_id_is_kept() {
        let (id, sent) = assigned(&[b"abc-123"], true);
        assert_eq!(id, "abc-123");
        assert_eq!(sent, [id]);
        let longest = vec![b'a'; MAX_REQUEST_ID];
        assert_eq!(assigned(&[&longest], true).0.as_bytes(), longest);
    }

    #[test]
    fn an_untrusted_id_or_an_invalid_one_is_replaced() {
        let too_long = vec![b'a'; MAX_REQUEST_ID + 1];
        let cases: [(&[&[u8]], bool); 6] = [
            (&[b"abc-123"], false),
            (&[b"a b"], true),
            (&[b"a\tb"], true),
            (&[b"\xc3\xa9"], true),
            (&[b"one", b"two"], true),
            (&[&too_long], true),
        ];
        for (lines, trusted) in cases {
            let (id, sent) = assigned(lines, trusted);
            assert!(id.as_bytes().iter().all(u8::is_ascii_digit), "{lines:?}");
            assert_eq!(sent, [id], "{lines:?}: one line, ours");
        }
        assert!(
            assigned(&[b""], true)
                .0
                .as_bytes()
                .iter()
                .all(u8::is_ascii_digit)
        );
    }

    #[test]
    fn probes_are_the_polled_endpoints() {
        assert!(is_probe(Some(Builtin::Healthz)));
        assert!(is_probe(Some(Builtin::Readyz)));
        assert!(is_probe(Some(Builtin::Metrics)));
        assert!(!is_probe(Some(Builtin::Auth)));
        assert!(!is_probe(None));
    }
}
