//! Form posts kept across a login.
//!
//! A browser that posts a form after its session ended would lose what the user typed: a
//! POST cannot follow a redirect to the provider and back. So a browser form POST without a
//! live session, from the app's own origin, is kept here while its login runs, and sent
//! upstream once the login succeeds in the same browser (`endpoints::login`).
//!
//! - Which posts ([`is_form_post`]): `POST`, `Accept` holding `text/html`, one `Content-Type`
//!   of `application/x-www-form-urlencoded` or `multipart/form-data`, and an `Origin` equal
//!   to `public_url`'s origin or to an allowed redirect host's, or `Sec-Fetch-Site:
//!   same-origin` (never `cross-site`). A hostile page that auto-submits a form to the app
//!   must not get its post replayed with the victim's fresh session: that is what SameSite
//!   cookies prevent, and preservation must not undo it.
//! - The body is at most `session.max_preserved_body` bytes: a larger `Content-Length` is
//!   refused unread, and a body without one is read only up to the limit ([`read_body`]).
//! - Kept under an id derived from the login's `state`, so bound to the login cookie that
//!   carries that state: only the browser holding it can complete that login, and the
//!   callback refuses a foreign or replayed state before anything is taken. Taking is
//!   single use (memory: removed from the map; Redis: `GETDEL`), and an entry lives at most
//!   `login_timeout`.
//! - Sealed (AES-256-GCM under the keys that encrypt session records, bound to the entry's
//!   id and deadline) in memory and in Redis alike.
//! - Bounds, so that no client crowds out others: per browser, one per pending login (a
//!   browser holds at most `MAX_PER_BROWSER` of them, and a post whose login cookie is
//!   dropped to make room is dropped too); per client address [`MAX_PER_CLIENT`] posts and
//!   [`MAX_BYTES_PER_CLIENT`] bytes; in total [`MAX_ENTRIES`] posts and [`MAX_BYTES`] bytes
//!   (per replica). A post beyond a bound is answered as before (not kept); nothing already
//!   kept is ever evicted by another client's posts.
//! - Nothing kept is ever logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Limited};
use sha2::{Digest, Sha256};
use url::Url;

use crate::clock::Clock;
use crate::config::{SameSite, SessionConfig};
use crate::redirect::SafeRedirect;
use crate::seal::Keyring;
use crate::session::{Marker, Store, StoreError};

/// Posts kept at once (per replica).
pub const MAX_ENTRIES: usize = 1024;
/// Bytes of the posts kept at once (per replica).
pub const MAX_BYTES: usize = 64 << 20;
/// Posts one client address may have kept at once.
pub const MAX_PER_CLIENT: usize = 16;
/// Bytes one client address may have kept at once.
pub const MAX_BYTES_PER_CLIENT: usize = MAX_BYTES / 16;
/// How long reading a body without `Content-Length` may take.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Associated data of every sealed post (followed by its id).
const CONTEXT: &[u8] = b"authgate preserved form post v1\0";
const ID_CONTEXT: &[u8] = b"authgate preserved form post id v1\0";
/// Request headers kept with the body (besides `Content-Type`); every other one is dropped.
const KEPT_HEADERS: [HeaderName; 5] = [
    http::header::HOST,
    http::header::ACCEPT,
    http::header::ACCEPT_LANGUAGE,
    http::header::USER_AGENT,
    http::header::ORIGIN,
];

/// A kept form post: what is sent upstream after the login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormPost {
    /// The request's host (routing by host), if it had one.
    pub host: Option<String>,
    /// The normalized path the route was found for.
    pub path: String,
    pub query: Option<String>,
    /// `Content-Type` first, then the [`KEPT_HEADERS`] the request had.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

/// Whether `req` is a browser form post from the app's own origin (see the module doc).
pub fn is_form_post<B>(req: &Request<B>, public_url: &Url, redirect_hosts: &[String]) -> bool {
    let headers = req.headers();
    req.method() == Method::POST
        && accepts_html(headers)
        && is_form_type(headers)
        && comes_from_the_app(headers, public_url, redirect_hosts)
}

fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let media = t.split(';').next().unwrap_or_default().trim();
            media.eq_ignore_ascii_case("text/html")
        })
}

fn is_form_type(headers: &HeaderMap) -> bool {
    let mut types = headers.get_all(CONTENT_TYPE).iter();
    let (Some(value), None) = (types.next(), types.next()) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let media = value.split(';').next().unwrap_or_default().trim();
    media.eq_ignore_ascii_case("application/x-www-form-urlencoded")
        || media.eq_ignore_ascii_case("multipart/form-data")
}

/// `Sec-Fetch-Site: cross-site` never, nor an `Origin` that is not the app's; otherwise
/// `Origin` is `public_url`'s origin or an allowed redirect host's, or `Sec-Fetch-Site` is
/// `same-origin`.
fn comes_from_the_app(headers: &HeaderMap, public_url: &Url, redirect_hosts: &[String]) -> bool {
    let fetch_site = headers.get_all("sec-fetch-site").iter().collect::<Vec<_>>();
    if fetch_site
        .iter()
        .any(|s| s.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return false;
    }
    match origin_is_the_apps(headers, public_url, redirect_hosts) {
        Some(verdict) => verdict,
        None => {
            single(headers, "sec-fetch-site").is_some_and(|s| s.eq_ignore_ascii_case("same-origin"))
        }
    }
}

/// Whether the `Origin` header is the app's (`None`: there is none).
fn origin_is_the_apps(
    headers: &HeaderMap,
    public_url: &Url,
    redirect_hosts: &[String],
) -> Option<bool> {
    if !headers.contains_key("origin") {
        return None;
    }
    let Some(origin) = single(headers, "origin") else {
        return Some(false);
    };
    let Ok(url) = Url::parse(origin) else {
        return Some(false);
    };
    // An origin is serialized exactly so: scheme, host, port, nothing else.
    if url.origin().ascii_serialization() != origin {
        return Some(false);
    }
    if url.origin() == public_url.origin() {
        return Some(true);
    }
    // An allowed redirect host (https, or http when public_url is) keeps its URL.
    let probe = format!("{origin}/");
    let target = SafeRedirect::parse_allowing(&probe, public_url, redirect_hosts);
    Some(target.as_str() == probe)
}

fn single<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok(),
        _ => None,
    }
}

/// The whole body when it has at most `max` bytes: a larger `Content-Length` is refused
/// unread; without one, reading stops (and fails) past `max`, or after
/// [`BODY_READ_TIMEOUT`].
pub async fn read_body<B>(body: B, headers: &HeaderMap, max: usize) -> Option<Bytes>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    match (lengths.next(), lengths.next()) {
        (None, _) => {}
        (Some(v), None) => {
            let n: u64 = v.to_str().ok()?.parse().ok()?;
            if n > max as u64 {
                return None;
            }
        }
        _ => return None,
    }
    let read = Limited::new(body, max).collect();
    let collected = tokio::time::timeout(BODY_READ_TIMEOUT, read)
        .await
        .ok()?
        .ok()?;
    Some(collected.to_bytes())
}

/// The posts kept while their logins run.
pub struct Preserved {
    /// `<cookie_name>_login_form`: the ticket of the browser's newest post not yet taken
    /// over by a login (a login cookie's name: never forwarded upstream).
    ticket_name: String,
    /// `; Path=<public_url path>/; HttpOnly; SameSite=Lax[..]`.
    ticket_attributes: String,
    enabled: bool,
    max_body: usize,
    keys: Option<Keyring>,
    store: Arc<Store>,
    lifetime: Duration,
    ledger: Mutex<Ledger>,
    clock: Clock,
}

/// What this replica keeps, for the bounds (and, with the memory store, the posts).
#[derive(Default)]
struct Ledger {
    held: HashMap<[u8; 32], Held>,
    bytes: usize,
    clients: HashMap<IpAddr, (usize, usize)>,
}

struct Held {
    client: IpAddr,
    bytes: usize,
    /// Unix milliseconds.
    deadline: u64,
    /// The sealed post (memory store only; Redis holds it otherwise).
    sealed: Option<Vec<u8>>,
}

impl Preserved {
    pub fn new(cfg: &SessionConfig, public_url: &Url, store: Arc<Store>, clock: Clock) -> Self {
        let base = public_url.path().trim_end_matches('/');
        let path = if base.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
            format!("{base}/")
        } else {
            "/".to_owned()
        };
        Preserved {
            ticket_name: format!("{}_login_form", cfg.cookie_name),
            ticket_attributes: crate::cookie::attributes(cfg, &path, SameSite::Lax),
            enabled: cfg.preserve_form_posts,
            max_body: usize::try_from(cfg.max_preserved_body).unwrap_or(usize::MAX),
            keys: Keyring::new(&cfg.cookie_secrets),
            store,
            lifetime: cfg.login_timeout,
            ledger: Mutex::default(),
            clock,
        }
    }

    /// `session.preserve_form_posts`.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// `session.max_preserved_body`.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Keep `post` for the login with `state`, on behalf of `client`. `false` (nothing kept)
    /// beyond a bound, or when the store fails.
    pub async fn keep(&self, state: &str, client: IpAddr, post: &FormPost) -> bool {
        let id = id_for(state);
        let Some(plain) = encode(post) else {
            return false;
        };
        let now = self.clock.unix_millis();
        let lifetime_ms = u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX);
        let deadline_secs = self
            .clock
            .unix_now()
            .saturating_add(self.lifetime.as_secs().max(1));
        let Some(sealed) = self
            .keys
            .as_ref()
            .and_then(|k| k.seal(&context(&id), deadline_secs, &plain))
        else {
            return false;
        };
        let memory = self.store.redis().is_none();
        let held = Held {
            client,
            bytes: sealed.len(),
            deadline: now.saturating_add(lifetime_ms),
            sealed: None,
        };
        {
            let mut ledger = self.ledger();
            if !ledger.admits(&held) {
                ledger.purge(now);
                if !ledger.admits(&held) {
                    return false;
                }
            }
            let held = Held {
                sealed: memory.then(|| sealed.clone()),
                ..held
            };
            ledger.insert(id, held);
        }
        if let Some(redis) = self.store.redis()
            && let Err(e) = redis.stash(&marker(id), &sealed, self.lifetime).await
        {
            let e = crate::logging::log_safe(crate::error::Chain(&e));
            tracing::warn!(error = %e, "could not keep a form post");
            self.ledger().remove(&id);
            return false;
        }
        true
    }

    /// The post kept for the login with `state`, removed (single use). `Ok(None)` when none
    /// is, or it expired.
    pub async fn take(&self, state: &str) -> Result<Option<FormPost>, StoreError> {
        let id = id_for(state);
        let local = self.ledger().remove(&id).and_then(|h| h.sealed);
        let sealed = match self.store.redis() {
            Some(redis) => redis.unstash(&marker(id)).await?,
            None => local,
        };
        let Some(sealed) = sealed else {
            return Ok(None);
        };
        let Some((plain, deadline)) = self
            .keys
            .as_ref()
            .and_then(|k| k.open(&context(&id), &sealed))
        else {
            return Ok(None);
        };
        if deadline <= self.clock.unix_now() {
            return Ok(None);
        }
        Ok(decode(&plain))
    }

    /// Drop the post kept for the login with `state`, if any (its login cookie was dropped).
    pub async fn forget(&self, state: &str) {
        let id = id_for(state);
        self.ledger().remove(&id);
        if let Some(redis) = self.store.redis() {
            let _ = redis.unstash(&marker(id)).await;
        }
    }

    /// Keep `post` under a new ticket (a post without a login yet): the `Set-Cookie` that
    /// hands the ticket to the browser, or `None` when nothing is kept. The browser's
    /// previous ticket, if any, is dropped with its post: one post per browser waits for its
    /// login to start.
    pub async fn keep_ticketed(
        &self,
        headers: &HeaderMap,
        client: IpAddr,
        post: &FormPost,
    ) -> Option<HeaderValue> {
        if let Some(previous) = self.ticket(headers) {
            self.forget(previous).await;
        }
        let ticket = {
            use rand::RngCore;
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
        };
        if !self.keep(&ticket, client, post).await {
            return None;
        }
        let max_age = self.lifetime.as_secs().max(60);
        crate::cookie::set_cookie(&self.ticket_name, &ticket, max_age, &self.ticket_attributes)
    }

    /// A login starts in a browser that holds a ticket: its post moves under the login's
    /// `state` (bound to the login cookie from now on). The `Set-Cookie` that clears the
    /// ticket, when the request had one.
    pub async fn adopt(
        &self,
        headers: &HeaderMap,
        state: &str,
        client: IpAddr,
    ) -> Option<HeaderValue> {
        let ticket = self.ticket(headers)?;
        match self.take(ticket).await {
            Ok(Some(post)) => {
                self.keep(state, client, &post).await;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                error = %crate::logging::log_safe(crate::error::Chain(&e)),
                "could not read a kept form post"
            ),
        }
        crate::cookie::clear_cookie(&self.ticket_name, &self.ticket_attributes)
    }

    /// The request's ticket: 43 base64url characters, else none.
    fn ticket<'h>(&'h self, headers: &'h HeaderMap) -> Option<&'h str> {
        let value = crate::headers::find_cookie(headers, &self.ticket_name)?;
        (value.len() == 43
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then_some(value)
    }

    /// Posts this replica keeps now, those past their lifetime dropped first (at most
    /// [`MAX_ENTRIES`] looked at): `authgate_preserved_form_posts`.
    pub fn kept(&self) -> usize {
        let mut ledger = self.ledger();
        ledger.purge(self.clock.unix_millis());
        ledger.held.len()
    }

    /// Posts and bytes kept by this replica (tests).
    pub fn held(&self) -> (usize, usize) {
        let ledger = self.ledger();
        (ledger.held.len(), ledger.bytes)
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Ledger {
    fn admits(&self, new: &Held) -> bool {
        let (n, bytes) = self.clients.get(&new.client).copied().unwrap_or_default();
        self.held.len() < MAX_ENTRIES
            && self.bytes + new.bytes <= MAX_BYTES
            && n < MAX_PER_CLIENT
            && bytes + new.bytes <= MAX_BYTES_PER_CLIENT
    }

    fn insert(&mut self, id: [u8; 32], held: Held) {
        self.remove(&id);
        self.bytes += held.bytes;
        let client = self.clients.entry(held.client).or_default();
        client.0 += 1;
        client.1 += held.bytes;
        self.held.insert(id, held);
    }

    fn remove(&mut self, id: &[u8; 32]) -> Option<Held> {
        let held = self.held.remove(id)?;
        self.bytes -= held.bytes;
        if let Some(client) = self.clients.get_mut(&held.client) {
            client.0 -= 1;
            client.1 -= held.bytes;
            if client.0 == 0 {
                self.clients.remove(&held.client);
            }
        }
        Some(held)
    }

    /// Drop what expired (bounded: at most [`MAX_ENTRIES`] are held).
    fn purge(&mut self, now: u64) {
        let expired: Vec<[u8; 32]> = (self.held.iter())
            .filter(|(_, h)| h.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.remove(&id);
        }
    }
}

fn id_for(state: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(ID_CONTEXT)
        .chain_update(state.as_bytes())
        .finalize()
        .into()
}

fn context(id: &[u8; 32]) -> Vec<u8> {
    [CONTEXT, id.as_slice()].concat()
}

fn marker(id: [u8; 32]) -> Marker {
    Marker { kind: "form", id }
}

/// The headers of `req` kept with its body: `Content-Type`, then [`KEPT_HEADERS`].
pub fn kept_headers(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    std::iter::once(CONTENT_TYPE)
        .chain(KEPT_HEADERS)
        .filter_map(|name| {
            let value = headers.get(&name)?.clone();
            Some((name, value))
        })
        .collect()
}

/// Length-prefixed fields: host (empty: none), path, query (a leading `?` marks one),
/// the header count then name and value of each, the body.
fn encode(post: &FormPost) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(post.body.len() + 256);
    let mut put = |bytes: &[u8]| -> Option<()> {
        out.extend_from_slice(&u32::try_from(bytes.len()).ok()?.to_be_bytes());
        out.extend_from_slice(bytes);
        Some(())
    };
    put(post.host.as_deref().unwrap_or_default().as_bytes())?;
    put(post.path.as_bytes())?;
    put(post
        .query
        .as_ref()
        .map(|q| format!("?{q}"))
        .unwrap_or_default()
        .as_bytes())?;
    put(&u32::try_from(post.headers.len()).ok()?.to_be_bytes())?;
    for (name, value) in &post.headers {
        put(name.as_str().as_bytes())?;
        put(value.as_bytes())?;
    }
    put(&post.body)?;
    Some(out)
}

fn decode(mut bytes: &[u8]) -> Option<FormPost> {
    let mut take = || -> Option<&[u8]> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let (value, rest) =
            rest.split_at_checked(usize::try_from(u32::from_be_bytes(*len)).ok()?)?;
        bytes = rest;
        Some(value)
    };
    let host = std::str::from_utf8(take()?).ok()?;
    let path = std::str::from_utf8(take()?).ok()?.to_owned();
    let query = std::str::from_utf8(take()?).ok()?;
    let count = u32::from_be_bytes(take()?.try_into().ok()?);
    let mut headers = Vec::new();
    for _ in 0..count.min(8) {
        let name = HeaderName::from_bytes(take()?).ok()?;
        let value = HeaderValue::from_bytes(take()?).ok()?;
        headers.push((name, value));
    }
    let body = Bytes::copy_from_slice(take()?);
    Some(FormPost {
        host: (!host.is_empty()).then(|| host.to_owned()),
        path,
        query: query.strip_prefix('?').map(str::to_owned),
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::post("/form");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");
    const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml;q=0.9");

    #[test]
    fn only_same_origin_browser_form_posts() {
        let public: Url = "https://app.test".parse().unwrap();
        let hosts = vec![".example.test".to_owned()];
        let ok = |h: &[(&str, &str)]| is_form_post(&req(h), &public, &hosts);
        assert!(ok(&[FORM, HTML, ("origin", "https://app.test")]));
        assert!(ok(&[FORM, HTML, ("origin", "https://a.example.test")]));
        assert!(ok(&[FORM, HTML, ("sec-fetch-site", "same-origin")]));
        assert!(ok(&[
            ("content-type", "multipart/form-data; boundary=x"),
            HTML,
            ("origin", "https://app.test")
        ]));
        assert!(!ok(&[FORM, HTML]), "no origin at all");
        assert!(!ok(&[FORM, HTML, ("origin", "https://evil.test")]));
        assert!(!ok(&[FORM, HTML, ("origin", "null")]));
        assert!(!ok(&[FORM, HTML, ("origin", "http://app.test")]));
        assert!(!ok(&[FORM, HTML, ("origin", "https://app.test/x")]));
        assert!(!ok(&[
            FORM,
            HTML,
            ("origin", "https://app.test"),
            ("sec-fetch-site", "cross-site")
        ]));
        assert!(!ok(&[
            FORM,
            HTML,
            ("origin", "https://evil.test"),
            ("sec-fetch-site", "same-site")
        ]));
        assert!(!ok(&[
            FORM,
            ("accept", "application/json"),
            ("origin", "https://app.test")
        ]));
        assert!(!ok(&[
            ("content-type", "application/json"),
            HTML,
            ("origin", "https://app.test")
        ]));
        let get = Request::get("/form")
            .header(FORM.0, FORM.1)
            .header(HTML.0, HTML.1)
            .header("origin", "https://app.test")
            .body(())
            .unwrap();
        assert!(!is_form_post(&get, &public, &hosts));
    }

    #[test]
    fn posts_round_trip() {
        let post = FormPost {
            host: Some("app.test".into()),
            path: "/a/b".into(),
            query: Some("x=1".into()),
            headers: vec![(
                CONTENT_TYPE,
                HeaderValue::from_static("multipart/form-data; boundary=z"),
            )],
            body: Bytes::from_static(b"--z\r\n\0binary\r\n--z--"),
        };
        assert_eq!(decode(&encode(&post).unwrap()).unwrap(), post);
        let bare = FormPost {
            host: None,
            query: None,
            ..post
        };
        assert_eq!(decode(&encode(&bare).unwrap()).unwrap(), bare);
    }

    #[tokio::test]
    async fn bodies_are_read_under_the_limit_only() {
        let mut h = HeaderMap::new();
        let body = || http_body_util::Full::new(Bytes::from_static(b"0123456789"));
        assert_eq!(read_body(body(), &h, 10).await.unwrap().len(), 10);
        assert!(
            read_body(body(), &h, 9).await.is_none(),
            "read past the limit"
        );
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("100"));
        assert!(
            read_body(body(), &h, 50).await.is_none(),
            "announced too large"
        );
    }
}
