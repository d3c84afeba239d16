//! Interop tests: the built `authgate` binary against a real OpenID provider, the npm package
//! `oidc-provider` 8.x (the engine Logto is built on) configured like Logto
//! (`tests/interop/provider/provider.js`), and a tiny echo upstream, all on loopback ports.
//!
//! Needs Node.js and `npm ci --prefix tests/interop/provider` (see tests/interop/README.md).
//! Every spawned process is killed on drop, and every scenario runs under a timeout.

// clippy.toml's allow-*-in-tests covers `#[test]` functions only, not this file's harness.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use reqwest::header::{ACCEPT, LOCATION, RETRY_AFTER, SET_COOKIE};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use std::io::BufRead;
use std::process::{Child, Command};
use tokio::net::TcpListener;
use url::Url;

const CLIENT_ID: &str = "authgate-interop";
/// Needs form-urlencoding before base64 in client_secret_basic (RFC 6749 section 2.3.1).
const CLIENT_SECRET: &str = "s3cr+t/%:x";
const RESOURCE: &str = "https://api.example.test";
/// The provider's access-token lifetime (seconds); the gateway refreshes 2 s before expiry.
const ACCESS_TTL: u64 = 5;
const COOKIE: &str = "authgate_session";
/// Each scenario, start-up included, must end within this.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(120);

/// At most two scenarios at a time: the machine is small, and the scenarios wait on clocks.
static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

// ============================================================================================
// Harness
// ============================================================================================

fn provider_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/provider")
}

/// Fails (not skips) when Node.js or the provider's node_modules are missing.
fn require_node() {
    let hint = "run `npm ci --prefix tests/interop/provider` (see tests/interop/README.md)";
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "interop tests need Node.js (`node` on PATH), then {hint}"
    );
    assert!(
        provider_dir().join("node_modules/oidc-provider").is_dir(),
        "interop tests need the provider's packages: {hint}"
    );
}

/// A free loopback port (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let bytes: [u8; 8] = rand::random();
        let dir = std::env::temp_dir().join(format!(
            "authgate-interop-{}-{}",
            std::process::id(),
            URL_SAFE_NO_PAD.encode(bytes).replace('-', "_")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop; on a failing test, its log is printed.
struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!("----- {} log (last lines) -----", self.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Options {
    /// Ask for the API resource (JWT access tokens) instead of opaque userinfo tokens.
    resource: bool,
    /// Persist the provider's grants and keys in a file, so that it survives a restart.
    adapter_file: bool,
}

/// The provider, the upstream and the gateway of one scenario.
struct Env {
    options: Options,
    provider: Option<Proc>,
    provider_port: u16,
    /// Killed on drop.
    _gateway: Proc,
    gateway_url: String,
    upstream: tokio::task::JoinHandle<()>,
    /// Last: removed after the processes (whose logs it holds) are gone.
    dir: TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.upstream.abort();
    }
}

impl Env {
    async fn start(options: Options) -> Self {
        require_node();
        let dir = TempDir::new();
        let gateway_port = free_port();
        let gateway_url = format!("http://127.0.0.1:{gateway_port}");

        let (provider, provider_port) = spawn_provider(&dir.0, &gateway_url, options, 0).await;

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_port = listener.local_addr().unwrap().port();
        let upstream = tokio::spawn(serve_upstream(listener));

        let secret: [u8; 32] = rand::random();
        let resource = if options.resource {
            format!("[\"{RESOURCE}\"]")
        } else {
            "[]".to_owned()
        };
        let config = format!(
            r#"[server]
listen = "127.0.0.1:{gateway_port}"
public_url = "{gateway_url}"

[upstream]
url = "http://127.0.0.1:{upstream_port}"
timeout = "10s"

[oidc]
issuer = "http://127.0.0.1:{provider_port}/oidc"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
scopes = ["openid", "profile", "email", "offline_access"]
resource = {resource}
timeout = "3s"

[session]
cookie_secrets = ["{}"]
cookie_secure = false
refresh_before_expiry = "2s"

[[route]]
path = "/admin"
require_acr = ["urn:interop:mfa"]
"#,
            STANDARD.encode(secret)
        );
        let config_path = dir.0.join("gateway.toml");
        std::fs::write(&config_path, config).unwrap();

        let log = dir.0.join("gateway.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_authgate"));
        command
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info,authgate=debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ));
        for (key, _) in std::env::vars() {
            if key.starts_with("AUTHGATE_") {
                command.env_remove(key);
            }
        }
        let gateway = Proc {
            name: "gateway",
            child: command.spawn().expect("cannot start the authgate binary"),
            log,
        };

        let env = Self {
            dir,
            options,
            provider: Some(provider),
            provider_port,
            _gateway: gateway,
            gateway_url,
            upstream,
        };
        env.wait_ready().await;
        env
    }

    /// Waits for the gateway's /readyz (discovery done).
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = plain_client()
                .get(self.gw("/readyz"))
                .send()
                .await
                .map(|r| r.status());
            if matches!(status, Ok(StatusCode::OK)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the gateway never became ready: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn gw(&self, path: &str) -> String {
        format!("{}{path}", self.gateway_url)
    }

    fn provider_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.provider_port)
    }

    fn issuer(&self) -> String {
        format!("{}/oidc", self.provider_base())
    }

    async fn events(&self) -> Value {
        plain_client()
            .get(format!("{}/__test/events", self.provider_base()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn stop_provider(&mut self) {
        if let Some(mut provider) = self.provider.take() {
            provider.kill();
        }
    }

    async fn restart_provider(&mut self) {
        self.stop_provider().await;
        let (provider, port) = spawn_provider(
            &self.dir.0,
            &self.gateway_url,
            self.options,
            self.provider_port,
        )
        .await;
        assert_eq!(port, self.provider_port);
        self.provider = Some(provider);
    }
}

/// Starts provider.js and waits for its `READY <issuer>` line; returns it with its port.
async fn spawn_provider(dir: &Path, gateway_url: &str, options: Options, port: u16) -> (Proc, u16) {
    let log = dir.join(format!("provider-{port}.log"));
    let mut command = Command::new("node");
    command
        .arg("provider.js")
        .arg(port.to_string())
        .current_dir(provider_dir())
        .env("CLIENT_ID", CLIENT_ID)
        .env("CLIENT_SECRET", CLIENT_SECRET)
        .env("REDIRECT_URI", format!("{gateway_url}/oauth2/callback"))
        .env("POST_LOGOUT_REDIRECT_URI", format!("{gateway_url}/"))
        .env(
            "BACKCHANNEL_LOGOUT_URI",
            format!("{gateway_url}/oauth2/backchannel_logout"),
        )
        .env("RESOURCE", RESOURCE)
        .env("ACCESS_TTL", ACCESS_TTL.to_string())
        .env("AUTO_LOGIN_USER", "alice")
        .env("LOG_REQUESTS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()));
    if options.adapter_file {
        command.env("ADAPTER_FILE", dir.join("provider-store.json"));
    }
    let mut child = command.spawn().expect("cannot start node");
    // A thread reads stdout: it reports the READY line, then keeps draining the pipe.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(issuer) = line.strip_prefix("READY ")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(issuer.to_owned());
            }
        }
    });
    let proc = Proc {
        name: "provider",
        child,
        log,
    };
    let issuer = match tokio::time::timeout(Duration::from_secs(30), rx).await {
        Ok(Ok(issuer)) => issuer,
        other => panic!("the provider did not print READY: {other:?}"),
    };
    let port = Url::parse(&issuer).unwrap().port().unwrap();
    (proc, port)
}

/// The upstream: answers every request with JSON of what it received.
async fn serve_upstream(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                let mut headers = serde_json::Map::new();
                for (name, value) in req.headers() {
                    headers.insert(
                        name.as_str().to_owned(),
                        json!(String::from_utf8_lossy(value.as_bytes())),
                    );
                }
                let body = json!({
                    "method": req.method().as_str(),
                    "path": req.uri().path_and_query().map_or("/", |p| p.as_str()),
                    "headers": headers,
                });
                let mut response = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                Ok::<_, Infallible>(response)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A browser: a cookie jar, no automatic redirects (each hop is asserted).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

async fn navigate(client: &reqwest::Client, url: &str) -> Response {
    client.get(url).header(ACCEPT, HTML).send().await.unwrap()
}

async fn api_get(client: &reqwest::Client, url: &str) -> Response {
    client
        .get(url)
        .header(ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
}

fn location(response: &Response, base: &str) -> Url {
    let value = response
        .headers()
        .get(LOCATION)
        .unwrap_or_else(|| panic!("no Location on a {} answer", response.status()))
        .to_str()
        .unwrap();
    Url::parse(base).unwrap().join(value).unwrap()
}

fn query(url: &Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

/// The session cookie's Set-Cookie header, if the response has one.
fn session_set_cookie(response: &Response) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with(&format!("{COOKIE}=")))
}

fn assert_cookie_cleared(response: &Response) {
    let cookie = session_set_cookie(response).unwrap_or_else(|| {
        panic!(
            "the session cookie is not cleared: {:?}",
            response.headers()
        )
    });
    assert!(
        cookie.starts_with(&format!("{COOKIE}=;"))
            && cookie.to_ascii_lowercase().contains("max-age=0"),
        "not a cleared cookie: {cookie}"
    );
}

/// Decodes a JWT's payload (no verification: the tests look at claims).
fn jwt_claims(token: &str) -> Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {token}");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

/// What the upstream received, from a 200 proxied answer.
async fn upstream_saw(response: Response) -> Value {
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "not proxied: {response:?}"
    );
    response.json().await.unwrap()
}

fn bearer_of(seen: &Value) -> String {
    let auth = seen["headers"]["authorization"]
        .as_str()
        .unwrap_or_else(|| panic!("no Authorization upstream: {seen}"));
    auth.strip_prefix("Bearer ").unwrap().to_owned()
}

/// Logs `client` in through the gateway and the headless interaction, starting from a
/// browser navigation to `path`; returns what the upstream saw on landing there.
async fn login(env: &Env, client: &reqwest::Client, path: &str) -> Value {
    // 1. The protected page sends the browser to login.
    let response = navigate(client, &env.gw(path)).await;
    assert_eq!(response.status(), StatusCode::FOUND, "{response:?}");
    let mut url = location(&response, &env.gateway_url);
    if url.path() == "/oauth2/start" {
        assert_eq!(url.origin(), Url::parse(&env.gateway_url).unwrap().origin());
        let response = navigate(client, url.as_str()).await;
        assert_eq!(response.status(), StatusCode::FOUND, "{response:?}");
        url = location(&response, &env.gateway_url);
    }

    // 2. The authorization request, as the provider receives it.
    assert_eq!(
        url.as_str().split('?').next().unwrap(),
        format!("{}/auth", env.issuer())
    );
    let q = query(&url);
    assert_eq!(q.get("response_type").map(String::as_str), Some("code"));
    assert_eq!(q.get("client_id").map(String::as_str), Some(CLIENT_ID));
    assert_eq!(
        q.get("redirect_uri"),
        Some(&env.gw("/oauth2/callback")),
        "redirect_uri"
    );
    assert_eq!(
        q.get("code_challenge_method").map(String::as_str),
        Some("S256")
    );
    assert!(q.get("code_challenge").is_some_and(|c| c.len() >= 43));
    assert!(q.get("state").is_some_and(|s| !s.is_empty()), "state");
    assert!(q.get("nonce").is_some_and(|s| !s.is_empty()), "nonce");
    assert_eq!(q.get("prompt").map(String::as_str), Some("consent"));
    let scopes: Vec<&str> = q["scope"].split(' ').collect();
    for scope in ["openid", "profile", "email", "offline_access"] {
        assert!(scopes.contains(&scope), "scope {scope} missing: {scopes:?}");
    }
    let resources: Vec<String> = url
        .query_pairs()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v.into_owned())
        .collect();
    if env.options.resource {
        assert_eq!(resources, vec![RESOURCE.to_owned()]);
    } else {
        assert!(resources.is_empty(), "{resources:?}");
    }

    // 3. Through the provider (login and consent interactions) back to the callback.
    let callback = env.gw("/oauth2/callback");
    let mut hops = 0;
    while !url.as_str().starts_with(&callback) {
        let response = navigate(client, url.as_str()).await;
        assert!(
            response.status().is_redirection(),
            "provider answered {} at {url}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
        url = location(&response, url.as_str());
        hops += 1;
        assert!(hops < 12, "redirect loop at the provider");
    }
    let cq = query(&url);
    assert!(cq.contains_key("code"), "no code: {url}");
    assert_eq!(cq.get("state"), q.get("state"));
    // RFC 9207: the provider names itself in the authorization response.
    assert_eq!(cq.get("iss"), Some(&env.issuer()), "iss: {url}");

    // 4. The callback sets the session and lands on the original path.
    let response = navigate(client, url.as_str()).await;
    assert_eq!(
        response.status(),
        StatusCode::FOUND,
        "callback: {response:?}"
    );
    let cookie = session_set_cookie(&response).expect("the callback sets no session cookie");
    let lower = cookie.to_ascii_lowercase();
    assert!(lower.contains("httponly"), "{cookie}");
    assert!(!lower.contains("max-age=0"), "{cookie}");
    let landing = location(&response, &env.gateway_url);
    assert_eq!(landing.as_str(), env.gw(path), "landing page");

    // 5. The original page, proxied with the user's identity.
    let seen = upstream_saw(navigate(client, landing.as_str()).await).await;
    assert_eq!(seen["path"], path);
    assert_eq!(seen["headers"]["x-forwarded-user"], "alice", "{seen}");
    assert_eq!(
        seen["headers"]["x-forwarded-email"], "alice@example.test",
        "{seen}"
    );
    assert_eq!(seen["headers"]["x-forwarded-groups"], "staff", "{seen}");
    assert!(
        seen["headers"]
            .get("cookie")
            .is_none_or(|c| !c.as_str().unwrap().contains(COOKIE)),
        "the session cookie went upstream: {seen}"
    );
    seen
}

/// Steps 1 to 3 of [`login`] without their checks: the callback URL the provider sends the
/// browser back to.
async fn callback_from_provider(env: &Env, client: &reqwest::Client) -> Url {
    let response = navigate(client, &env.gw("/oauth2/start?rd=/")).await;
    assert_eq!(response.status(), StatusCode::FOUND, "{response:?}");
    let mut url = location(&response, &env.gateway_url);
    let callback = env.gw("/oauth2/callback");
    let mut hops = 0;
    while !url.as_str().starts_with(&callback) {
        let response = navigate(client, url.as_str()).await;
        assert!(response.status().is_redirection(), "{response:?}");
        url = location(&response, url.as_str());
        hops += 1;
        assert!(hops < 12, "redirect loop at the provider");
    }
    url
}

/// Runs one scenario with a start-up'd environment, under the scenario timeout.
async fn scenario<F, Fut>(options: Options, body: F)
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = ()>,
{
    let _slot = SLOTS.acquire().await.unwrap();
    tokio::time::timeout(SCENARIO_TIMEOUT, async {
        let env = Env::start(options).await;
        body(env).await;
    })
    .await
    .expect("scenario timed out");
}

/// Sleeps until the current access token (issued at `issued`) has expired.
async fn sleep_past_expiry(issued: Instant) {
    let until = issued + Duration::from_secs(ACCESS_TTL) + Duration::from_millis(700);
    tokio::time::sleep_until(until.into()).await;
}

fn count(events: &Value, name: &str) -> u64 {
    events[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name}: {events}"))
}

// ============================================================================================
// Scenarios
// ============================================================================================

/// 1 + 2 (resource): the full browser login; the upstream gets a JWT for the resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_with_resource_forwards_a_jwt_for_the_resource() {
    scenario(
        Options {
            resource: true,
            ..Options::default()
        },
        |env| async move {
            let client = browser();
            let seen = login(&env, &client, "/app/page?x=1").await;
            let claims = jwt_claims(&bearer_of(&seen));
            assert_eq!(claims["aud"], RESOURCE, "{claims}");
            assert_eq!(claims["sub"], "alice");
            assert_eq!(claims["iss"], env.issuer());
            assert_eq!(count(&env.events().await, "authorization_code"), 1);

            // The gateway's own view of the session.
            let info: Value = api_get(&client, &env.gw("/oauth2/userinfo"))
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(info["sub"], "alice", "{info}");
            assert_eq!(info["groups"], json!(["staff"]), "{info}");
            assert!(info.get("access_token").is_none());
        },
    )
    .await;
}

/// 1 + 2 (opaque): without a resource the bearer is the provider's opaque token, which the
/// provider's userinfo endpoint accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_without_resource_forwards_a_token_userinfo_accepts() {
    scenario(Options::default(), |env| async move {
        let client = browser();
        let seen = login(&env, &client, "/").await;
        let bearer = bearer_of(&seen);
        assert_eq!(
            bearer.split('.').count(),
            1,
            "expected an opaque token: {bearer}"
        );
        let me = plain_client()
            .get(format!("{}/me", env.issuer()))
            .bearer_auth(&bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(me.status(), StatusCode::OK);
        let me: Value = me.json().await.unwrap();
        assert_eq!(me["sub"], "alice");
        assert_eq!(me["email"], "alice@example.test");

        // A spoofed identity from the client is replaced.
        let seen = upstream_saw(
            client
                .get(env.gw("/"))
                .header("x-forwarded-user", "mallory")
                .header("authorization", "Bearer forged")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(seen["headers"]["x-forwarded-user"], "alice");
        assert_eq!(bearer_of(&seen), bearer);
    })
    .await;
}

/// RFC 9207 against a provider that advertises it and sends `iss`: a callback whose `iss`
/// names another issuer, or has none, is refused before its code is redeemed; the untouched
/// callback logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_response_iss_is_checked() {
    scenario(Options::default(), |env| async move {
        let discovery: Value = plain_client()
            .get(format!("{}/.well-known/openid-configuration", env.issuer()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            discovery["authorization_response_iss_parameter_supported"], true,
            "{discovery}"
        );
        let client = browser();
        for (what, iss) in [
            ("wrong", Some("https://attacker.example/oidc")),
            ("missing", None),
        ] {
            let mut url = callback_from_provider(&env, &client).await;
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "iss")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            {
                let mut q = url.query_pairs_mut();
                q.clear();
                for (k, v) in &pairs {
                    q.append_pair(k, v);
                }
                if let Some(iss) = iss {
                    q.append_pair("iss", iss);
                }
            }
            let response = navigate(&client, url.as_str()).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{what} iss");
            assert!(session_set_cookie(&response).is_none(), "{what} iss");
        }
        let events = env.events().await;
        assert_eq!(count(&events, "authorization_code"), 0, "{events}");
        assert!(
            events["grant_errors"].as_array().is_some_and(Vec::is_empty),
            "a code was sent to the token endpoint: {events}"
        );
        // The provider's own response, untouched, logs in.
        let url = callback_from_provider(&env, &client).await;
        let response = navigate(&client, url.as_str()).await;
        assert_eq!(response.status(), StatusCode::FOUND, "{response:?}");
        assert_eq!(count(&env.events().await, "authorization_code"), 1);
    })
    .await;
}

/// Step-up end to end (RFC 9470): a session from a plain login is sent back to the provider
/// with `acr_values`, the provider prompts again and records the acr, and the session keeps
/// its id while its identity gains the acr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_up_to_the_routes_acr_keeps_the_session() {
    scenario(Options::default(), |env| async move {
        let client = browser();
        login(&env, &client, "/").await;
        let response = navigate(&client, &env.gw("/admin")).await;
        assert_eq!(response.status(), StatusCode::FOUND, "{response:?}");
        let mut url = location(&response, &env.gateway_url);
        assert_eq!(url.path(), "/oauth2/start");
        let response = navigate(&client, url.as_str()).await;
        url = location(&response, &env.gateway_url);
        assert_eq!(
            query(&url).get("acr_values").map(String::as_str),
            Some("urn:interop:mfa"),
            "{url}"
        );
        let callback = env.gw("/oauth2/callback");
        let mut hops = 0;
        while !url.as_str().starts_with(&callback) {
            let response = navigate(&client, url.as_str()).await;
            assert!(response.status().is_redirection(), "{response:?}");
            url = location(&response, url.as_str());
            hops += 1;
            assert!(hops < 12, "redirect loop at the provider");
        }
        let response = navigate(&client, url.as_str()).await;
        assert_eq!(
            response.status(),
            StatusCode::FOUND,
            "callback: {response:?}"
        );
        assert!(
            session_set_cookie(&response).is_none(),
            "the session keeps its id"
        );
        assert_eq!(
            location(&response, &env.gateway_url).as_str(),
            env.gw("/admin")
        );
        let seen = upstream_saw(navigate(&client, &env.gw("/admin")).await).await;
        assert_eq!(seen["path"], "/admin");
        assert_eq!(seen["headers"]["x-forwarded-user"], "alice", "{seen}");
    })
    .await;
}

/// 3: after expiry the gateway refreshes (rotating the refresh token) and forwards the new
/// access token; twice, so the rotated refresh token is the one kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_after_expiry_with_rotation() {
    scenario(
        Options {
            resource: true,
            ..Options::default()
        },
        |env| async move {
            let client = browser();
            let mut issued = Instant::now();
            let first = bearer_of(&login(&env, &client, "/").await);
            let mut previous = first.clone();
            for round in 1..=2u64 {
                sleep_past_expiry(issued).await;
                issued = Instant::now();
                let seen = upstream_saw(api_get(&client, &env.gw("/api/x")).await).await;
                let bearer = bearer_of(&seen);
                assert_ne!(
                    bearer, previous,
                    "round {round}: the access token was not refreshed"
                );
                let claims = jwt_claims(&bearer);
                assert_eq!(
                    claims["aud"], RESOURCE,
                    "a refreshed token lost its resource"
                );
                assert!(
                    claims["exp"].as_u64().unwrap() > now_secs(),
                    "forwarded an expired token"
                );
                let events = env.events().await;
                assert_eq!(count(&events, "refresh_token"), round, "{events}");
                assert_eq!(count(&events, "refresh_token_consumed"), round, "{events}");
                assert_eq!(events["grant_errors"], json!([]), "{events}");
                previous = bearer;
            }
            // Between refreshes the same token is reused: no extra refresh.
            let seen = upstream_saw(api_get(&client, &env.gw("/api/y")).await).await;
            assert_eq!(bearer_of(&seen), previous);
            assert_eq!(count(&env.events().await, "refresh_token"), 2);
        },
    )
    .await;
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// 4: 50 concurrent requests of one session at expiry share one refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_at_expiry_share_one_refresh() {
    scenario(Options::default(), |env| async move {
        let client = browser();
        let issued = Instant::now();
        let first = bearer_of(&login(&env, &client, "/").await);
        sleep_past_expiry(issued).await;

        let url = env.gw("/api/concurrent");
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let client = client.clone();
                let url = format!("{url}?i={i}");
                tokio::spawn(async move {
                    let response = api_get(&client, &url).await;
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    (status, body)
                })
            })
            .collect();
        let mut bearers = std::collections::HashSet::new();
        for task in tasks {
            let (status, body) = task.await.unwrap();
            assert_eq!(status, StatusCode::OK, "{body}");
            let seen: Value = serde_json::from_str(&body).unwrap();
            bearers.insert(bearer_of(&seen));
        }
        assert!(!bearers.contains(&first), "an expired token was forwarded");
        assert_eq!(bearers.len(), 1, "several refreshed tokens: {bearers:?}");
        let events = env.events().await;
        assert_eq!(count(&events, "refresh_token"), 1, "{events}");
        assert_eq!(events["grant_errors"], json!([]), "{events}");
    })
    .await;
}

/// 5: an admin revokes the grant at the provider: once the access token expires, the
/// refresh fails with invalid_grant, the session ends and the cookie is cleared (401 for an
/// API request, 302 to login for a browser navigation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_grant_ends_the_session() {
    scenario(Options::default(), |env| async move {
        let api = browser();
        let nav = browser();
        let issued = Instant::now();
        login(&env, &api, "/").await;
        login(&env, &nav, "/").await;
        let revoked: Value = plain_client()
            .post(format!(
                "{}/__test/revoke_grants?sub=alice",
                env.provider_base()
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(revoked["revoked"].as_u64().unwrap() >= 2, "{revoked}");
        sleep_past_expiry(issued).await;

        let response = api_get(&api, &env.gw("/api/x")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().get(LOCATION).is_none());
        assert_cookie_cleared(&response);
        let body: Value = response.json().await.expect("a 401 with a JSON body");
        assert!(body.is_object());

        let response = navigate(&nav, &env.gw("/page")).await;
        assert_eq!(response.status(), StatusCode::FOUND);
        let to = location(&response, &env.gateway_url);
        assert!(
            to.as_str().starts_with(&format!("{}/auth", env.issuer()))
                || to.path() == "/oauth2/start",
            "not a redirect to login: {to}"
        );
        assert_cookie_cleared(&response);

        let events = env.events().await;
        assert_eq!(count(&events, "refresh_token"), 0, "{events}");
        assert_eq!(
            events["grant_errors"],
            json!(["invalid_grant", "invalid_grant"]),
            "{events}"
        );

        // The session is gone: no further refresh attempt.
        let response = api_get(&api, &env.gw("/api/x")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            env.events().await["grant_errors"].as_array().unwrap().len(),
            2
        );
    })
    .await;
}

/// 6: sign-out revokes the refresh token at the provider and hands over to its end-session
/// endpoint (RP-initiated logout), which sends the browser back to the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_revokes_and_ends_the_provider_session() {
    scenario(Options::default(), |env| async move {
        let client = browser();
        login(&env, &client, "/").await;
        let before = env.events().await;

        let response = navigate(&client, &env.gw("/oauth2/sign_out")).await;
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_cookie_cleared(&response);
        let to = location(&response, &env.gateway_url);
        assert_eq!(
            to.as_str().split('?').next().unwrap(),
            format!("{}/session/end", env.issuer())
        );
        let q = query(&to);
        assert_eq!(q.get("post_logout_redirect_uri"), Some(&env.gw("/")));
        assert_eq!(q.get("client_id").map(String::as_str), Some(CLIENT_ID));
        let hint = jwt_claims(q.get("id_token_hint").expect("no id_token_hint"));
        assert_eq!(hint["sub"], "alice");
        assert_eq!(hint["aud"], CLIENT_ID);

        // The session is gone at the gateway.
        let response = api_get(&client, &env.gw("/api/x")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

        // The provider's logout page (a form the browser auto-submits), then back home.
        let page = navigate(&client, to.as_str()).await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        let xsrf = html
            .split("name=\"xsrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no logout form: {html}"));
        let response = client
            .post(format!("{}/session/end/confirm", env.issuer()))
            .form(&[("xsrf", xsrf), ("logout", "yes")])
            .send()
            .await
            .unwrap();
        assert!(response.status().is_redirection(), "{response:?}");
        let home = location(&response, &env.issuer());
        assert_eq!(home.as_str().split('?').next().unwrap(), env.gw("/"));
        assert_eq!(count(&env.events().await, "end_session"), 1);

        // Logging in again works (prompt=consent, the provider session is gone too).
        login(&env, &client, "/again").await;

        // Checked last, so that a failure here does not hide the checks above.
        let after = env.events().await;
        assert_eq!(
            count(&after, "revocations"),
            count(&before, "revocations") + 1,
            "the refresh token was not revoked at sign-out: {after}"
        );
        assert_eq!(
            count(&after, "refresh_token_revocations"),
            count(&before, "refresh_token_revocations") + 1,
            "the refresh token was not revoked at sign-out: {after}"
        );
    })
    .await;
}

/// 7: the provider goes down mid-session: after expiry the gateway answers 503 with
/// Retry-After and keeps the session; once the provider is back (same port, same stored
/// grants), the same cookie works again without a login.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_restart_keeps_the_session() {
    scenario(
        Options {
            adapter_file: true,
            ..Options::default()
        },
        |mut env| async move {
            let client = browser();
            let issued = Instant::now();
            let first = bearer_of(&login(&env, &client, "/").await);
            env.stop_provider().await;
            sleep_past_expiry(issued).await;

            let response = api_get(&client, &env.gw("/api/x")).await;
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            let retry: u64 = response
                .headers()
                .get(RETRY_AFTER)
                .expect("503 without Retry-After")
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=30).contains(&retry), "Retry-After {retry}");
            assert!(
                session_set_cookie(&response).is_none(),
                "a transient failure touched the cookie"
            );
            let response = navigate(&client, &env.gw("/page")).await;
            assert_eq!(
                response.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "a browser is not sent to login"
            );
            assert!(session_set_cookie(&response).is_none());
            let info = api_get(&client, &env.gw("/oauth2/userinfo")).await;
            assert_eq!(info.status(), StatusCode::OK, "the session was dropped");

            env.restart_provider().await;
            let deadline = Instant::now() + Duration::from_secs(35);
            let seen = loop {
                let response = api_get(&client, &env.gw("/api/x")).await;
                match response.status() {
                    StatusCode::OK => break response.json::<Value>().await.unwrap(),
                    StatusCode::SERVICE_UNAVAILABLE if Instant::now() < deadline => {
                        assert!(session_set_cookie(&response).is_none());
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    other => panic!(
                        "after the restart: {other} {}",
                        response.text().await.unwrap()
                    ),
                }
            };
            assert_ne!(bearer_of(&seen), first);
            assert_eq!(seen["headers"]["x-forwarded-user"], "alice");
            let events = env.events().await;
            assert_eq!(count(&events, "refresh_token"), 1, "{events}");
        },
    )
    .await;
}

/// Back-channel logout: ending the session at the provider (not through the gateway) makes
/// the provider post a logout token to the gateway, which ends the gateway's session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backchannel_logout_from_the_provider_ends_the_session() {
    scenario(Options::default(), |env| async move {
        let client = browser();
        login(&env, &client, "/").await;

        // The user logs out at the provider directly (its own session cookie is in the jar).
        let page = navigate(&client, &format!("{}/session/end", env.issuer())).await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.unwrap();
        let xsrf = html
            .split("name=\"xsrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no logout form: {html}"))
            .to_owned();
        let response = client
            .post(format!("{}/session/end/confirm", env.issuer()))
            .form(&[("xsrf", xsrf.as_str()), ("logout", "yes")])
            .send()
            .await
            .unwrap();
        assert!(response.status().is_redirection(), "{response:?}");
        // oidc-provider may deliver the logout token after answering the browser.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let events = env.events().await;
            if count(&events, "backchannel_success") == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no back-channel logout delivered: {events}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let response = api_get(&client, &env.gw("/api/x")).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "the session survived"
        );
    })
    .await;
}
