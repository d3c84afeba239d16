//! The in-process test harness: the real gateway (`authgate::serve_gateway`) on
//! 127.0.0.1:0, in front of the development OpenID provider (faults, lifetimes and call
//! counters controlled by the test) and an echo upstream that answers JSON describing the
//! request it received.
//!
//! ```ignore
//! let h = Harness::start().await;                       // defaults
//! let h = Harness::builder().config(r#"[session]
//!     idle_timeout = "2s""#).start().await;             // TOML merged over the defaults
//! let client = h.client();                              // cookie jar, never follows redirects
//! h.login(&client, "alice").await;
//! let echo = h.echo(&client, "/hello").await;           // what the upstream saw
//! h.advance(Duration::from_secs(3600));                 // an hour later, for the gateway
//!                                                       // and its provider (no sleep)
//! ```
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod raw;
pub mod redis;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use authgate::clock::{Clock, ClockHand};
use authgate::config::Config;
use authgate::gateway::Gateway;
use devidp::idp::{DevIdp, DevIdpOptions};
use figment::Figment;
use figment::providers::{Format, Toml};
use reqwest::{Client, StatusCode, header};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const CLIENT_ID: &str = "gateway-under-test";
pub const CLIENT_SECRET: &str = "test-client-secret";
/// base64 of 32 bytes of 0x01 / 0x02.
pub const COOKIE_SECRET_A: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
pub const COOKIE_SECRET_B: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

pub struct Harness {
    pub idp: Arc<DevIdp>,
    pub gateway: Arc<Gateway>,
    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub url: String,
    pub addr: SocketAddr,
    pub upstream_addr: SocketAddr,
    /// Requests the echo upstream received (0 with [`Builder::upstream`]).
    upstream_hits: Arc<AtomicUsize>,
    shutdown: Option<oneshot::Sender<()>>,
    pub server: Option<JoinHandle<()>>,
    upstream: Option<JoinHandle<()>>,
    /// False when the provider was given with [`Builder::idp`]: dropping this harness then
    /// leaves it running for the others.
    owns_idp: bool,
    /// Moves the gateway's clock ([`Harness::advance`]).
    clock: ClockHand,
    /// The gateway's clock ([`Harness::unix_millis`]).
    time: Clock,
}

pub struct Builder {
    overrides: Vec<String>,
    upstream: Option<SocketAddr>,
    idp_options: DevIdpOptions,
    wait_ready: bool,
    listener: Option<TcpListener>,
    idp: Option<Arc<DevIdp>>,
}

impl Harness {
    pub fn builder() -> Builder {
        Builder {
            overrides: Vec::new(),
            upstream: None,
            idp_options: DevIdpOptions {
                client_id: CLIENT_ID.into(),
                client_secret: Some(CLIENT_SECRET.into()),
                access_ttl: Duration::from_secs(300),
                rotate_refresh_tokens: true,
                banner: None,
            },
            wait_ready: true,
            listener: None,
            idp: None,
        }
    }

    pub async fn start() -> Harness {
        Self::builder().start().await
    }

    /// A client with a cookie jar that never follows redirects.
    pub fn client(&self) -> Client {
        Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Log `user` in through the whole code flow (provider auto-login), asserting each hop.
    /// Returns the session cookie value.
    pub async fn login(&self, client: &Client, user: &str) -> String {
        self.login_landing(client, user, "/").await
    }

    /// Like [`login`], starting from `/oauth2/start?rd=<rd>`; asserts the landing path.
    pub async fn login_landing(&self, client: &Client, user: &str, rd: &str) -> String {
        self.idp.controls().set_auto_login(Some(user.to_owned()));
        let rd_enc: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        let start = client
            .get(self.at(&format!("/oauth2/start?rd={rd_enc}")))
            .send()
            .await
            .unwrap();
        assert_eq!(start.status(), StatusCode::FOUND, "start");
        let authorize = location(&start);
        assert!(authorize.starts_with(&self.idp.issuer()), "{authorize}");
        let back = client.get(&authorize).send().await.unwrap();
        assert_eq!(back.status(), StatusCode::FOUND, "authorize");
        let callback = location(&back);
        assert!(
            callback.starts_with(&self.at("/oauth2/callback?")),
            "{callback}"
        );
        let done = client.get(&callback).send().await.unwrap();
        assert_eq!(
            done.status(),
            StatusCode::FOUND,
            "callback: {:?}",
            done.text().await
        );
        let cookie = set_cookie(&done, "authgate_session").expect("session cookie");
        assert!(!cookie.is_empty());
        cookie
    }

    /// Move time forward by `by` for the gateway (every decision against a deadline: session
    /// timeouts, token expiry, refresh backoff, login cookies, token `exp`/`iat`) and for its
    /// provider (the tokens it issues from now on, and which of its access tokens are valid),
    /// instead of sleeping. A provider shared with [`Builder::idp`] moves for every harness
    /// using it. Redis keeps its own clock: its TTLs (the idle timeout, leases) do not move.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
        self.idp.controls().advance_clock(by);
    }

    /// Milliseconds since the Unix epoch by the gateway's clock (moved by [`Harness::advance`]).
    pub fn unix_millis(&self) -> u64 {
        self.time.unix_millis()
    }

    /// Move the gateway's clock (and its provider's) to just past the start of Unix second `t`,
    /// as the gateway counts (whole seconds); no move when it is there already.
    pub fn advance_to(&self, t: u64) {
        let target = t * 1000 + 20;
        let now = self.unix_millis();
        if target > now {
            self.advance(Duration::from_millis(target - now));
        }
    }

    /// Move the clock to just past the next whole second, so that a deadline counted in whole
    /// seconds from now has (almost) all of its first second left.
    pub fn align_to_second(&self) {
        self.advance_to(self.unix_millis() / 1000 + 1);
    }

    /// The gateway's `/metrics` text (asserting 200).
    pub async fn metrics(&self) -> String {
        let response = bare_client().get(self.at("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.text().await.unwrap()
    }

    /// GET `path` as an API client and return what the echo upstream saw (asserts 200).
    pub async fn echo(&self, client: &Client, path: &str) -> Echo {
        let response = client
            .get(self.at(path))
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        Echo(serde_json::from_str(&body).unwrap())
    }

    /// How many requests the echo upstream has received so far.
    pub fn upstream_hits(&self) -> usize {
        self.upstream_hits.load(Ordering::SeqCst)
    }

    /// Stop accepting, drain, and wait for the server task.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
    }

    /// Begin shutdown without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.begin_shutdown();
        if let Some(upstream) = self.upstream.take() {
            upstream.abort();
        }
        if self.owns_idp {
            self.idp.shutdown();
        }
    }
}

impl Builder {
    /// TOML merged over the defaults (figment merge: later keys win, tables combine).
    pub fn config(mut self, toml: &str) -> Self {
        self.overrides.push(toml.to_owned());
        self
    }

    /// Use this upstream instead of the echo server.
    pub fn upstream(mut self, addr: SocketAddr) -> Self {
        self.upstream = Some(addr);
        self
    }

    pub fn idp_options(mut self, f: impl FnOnce(&mut DevIdpOptions)) -> Self {
        f(&mut self.idp_options);
        self
    }

    /// Do not wait for `/readyz` (tests of discovery failures).
    pub fn no_wait_ready(mut self) -> Self {
        self.wait_ready = false;
        self
    }

    /// Serve on this listener (tests that restart a gateway on the same port).
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Use this provider (started with [`start_idp`]) instead of starting one: several
    /// gateways (replicas sharing a Redis store) behind one provider. `idp_options` is then
    /// ignored, and dropping the harness does not stop the provider.
    pub fn idp(mut self, idp: Arc<DevIdp>) -> Self {
        self.idp = Some(idp);
        self
    }

    pub async fn start(self) -> Harness {
        let owns_idp = self.idp.is_none();
        let idp = match self.idp {
            Some(idp) => idp,
            None => DevIdp::start(bind().await, self.idp_options.clone())
                .await
                .unwrap(),
        };
        let upstream_hits = Arc::new(AtomicUsize::new(0));
        let (upstream_addr, upstream) = match self.upstream {
            Some(addr) => (addr, None),
            None => {
                let listener = bind().await;
                let addr = listener.local_addr().unwrap();
                let echo = devidp::echo::serve_echo_counting(listener, upstream_hits.clone());
                (addr, Some(tokio::spawn(echo)))
            }
        };
        let listener = match self.listener {
            Some(l) => l,
            None => bind().await,
        };
        let addr = listener.local_addr().unwrap();
        let url = format!("http://{addr}");
        let config = config(&url, &idp.issuer(), upstream_addr, &self.overrides);
        let (clock, hand) = Clock::adjustable();
        let clock_now = clock.clone();
        let gateway = authgate::build_with(config, clock).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn({
            let gateway = gateway.clone();
            async move {
                authgate::serve_gateway(gateway, listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            }
        });
        let harness = Harness {
            idp,
            gateway,
            url,
            addr,
            upstream_addr,
            upstream_hits,
            shutdown: Some(tx),
            server: Some(server),
            upstream,
            owns_idp,
            clock: hand,
            time: clock_now,
        };
        if self.wait_ready {
            wait_ready(&harness).await;
        }
        harness
    }
}

/// Move time forward by `by` for several gateways that share one provider ([`Builder::idp`]):
/// each gateway's clock, and the provider's once.
pub fn advance_all(replicas: &[&Harness], by: Duration) {
    for h in replicas {
        h.clock.advance(by);
    }
    if let Some(h) = replicas.first() {
        h.idp.controls().advance_clock(by);
    }
}

/// A provider with the harness's default options, to share with [`Builder::idp`].
pub async fn start_idp() -> Arc<DevIdp> {
    DevIdp::start(bind().await, Harness::builder().idp_options)
        .await
        .unwrap()
}

/// The test configuration: the required keys, plain http, fast refresh-ahead.
pub fn config(
    public_url: &str,
    issuer: &str,
    upstream: SocketAddr,
    overrides: &[String],
) -> Config {
    let base = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        public_url = "{public_url}"
        shutdown_grace = "5s"
        [upstream]
        url = "http://{upstream}"
        timeout = "5s"
        [oidc]
        issuer = "{issuer}"
        client_id = "{CLIENT_ID}"
        client_secret = "{CLIENT_SECRET}"
        timeout = "5s"
        [session]
        cookie_secrets = ["{COOKIE_SECRET_A}"]
        cookie_secure = false
        refresh_before_expiry = "10s"
        "#
    );
    let mut figment = Figment::from(Toml::string(&base));
    for o in overrides {
        figment = figment.merge(Toml::string(o));
    }
    Config::from_figment(figment).unwrap_or_else(|e| panic!("test config invalid:\n{e}"))
}

/// Another echo upstream (tests with several upstreams): its address, and the count of
/// requests it received. Stops when the returned task is dropped or aborted.
pub async fn echo_upstream() -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(devidp::echo::serve_echo_counting(listener, hits.clone()));
    (addr, hits, task)
}

pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

async fn wait_ready(h: &Harness) {
    let client = h.client();
    for _ in 0..200 {
        if let Ok(r) = client.get(h.at("/readyz")).send().await
            && r.status() == StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("gateway never became ready");
}

/// A client WITHOUT a cookie jar (cookies are sent by hand), never following redirects.
pub fn bare_client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The status of `/oauth2/userinfo` for this client's session (200 with one, 401 without).
pub async fn userinfo_status(h: &Harness, client: &Client) -> StatusCode {
    client
        .get(h.at("/oauth2/userinfo"))
        .send()
        .await
        .unwrap()
        .status()
}

/// A valid back-channel logout token of `idp` for the provider session `sid` (a fresh `jti`).
pub fn logout_token(idp: &DevIdp, sid: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let now = authgate::session::unix_now();
    idp.sign_jwt(&serde_json::json!({
        "iss": idp.issuer(),
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "jti": format!("jti-{}-{now}", NEXT.fetch_add(1, Ordering::SeqCst)),
        "events": { "http://schemas.openid.net/event/backchannel-logout": {} },
        "sid": sid,
    }))
}

/// POST `token` to the gateway's back-channel logout endpoint; the status.
pub async fn post_logout_token(h: &Harness, token: &str) -> StatusCode {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("logout_token", token)
        .finish();
    bare_client()
        .post(h.at("/oauth2/backchannel_logout"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

/// Every query parameter of `url`, in order, by name.
pub fn query_of(url: &str) -> std::collections::HashMap<String, Vec<String>> {
    let url = url::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let mut map: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (k, v) in url.query_pairs() {
        map.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    map
}

/// The single value of query parameter `name` (panics on none or several).
pub fn one<'a>(q: &'a std::collections::HashMap<String, Vec<String>>, name: &str) -> &'a str {
    match q.get(name).map(Vec::as_slice) {
        Some([v]) => v,
        other => panic!("expected exactly one {name}, got {other:?} in {q:?}"),
    }
}

/// The `Location` header, made absolute against nothing (the gateway writes absolute URLs
/// for the provider, paths for same-origin landings).
pub fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(header::LOCATION)
        .unwrap_or_else(|| panic!("no Location on {}", response.status()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// The value a `Set-Cookie` gives cookie `name`, if the response sets it.
pub fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (pair, _) = v.split_once(';').unwrap_or((v, ""));
            let (k, value) = pair.split_once('=')?;
            (k.trim() == name).then(|| value.to_owned())
        })
}

/// The whole `Set-Cookie` line for cookie `name`.
pub fn set_cookie_line(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// What the echo upstream received.
#[derive(Debug, Clone)]
pub struct Echo(pub Value);

impl Echo {
    /// First value of a request header as the upstream saw it.
    pub fn header(&self, name: &str) -> Option<String> {
        self.0["headers"][name.to_ascii_lowercase()]
            .as_array()
            .and_then(|v| v.first())
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.0["headers"][name.to_ascii_lowercase()]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn path(&self) -> String {
        self.0["path"].as_str().unwrap_or_default().to_owned()
    }

    pub fn method(&self) -> String {
        self.0["method"].as_str().unwrap_or_default().to_owned()
    }

    pub fn bearer(&self) -> Option<String> {
        self.header("authorization")
            .and_then(|v| v.strip_prefix("Bearer ").map(str::to_owned))
    }
}

/// The value of the Prometheus sample named exactly `series` (name plus labels), `None`
/// when the series is absent.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.trim().parse().unwrap())
    })
}

/// Poll `cond` every 20 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond().await
}
