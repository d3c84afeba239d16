//! authgate as the forward-auth service of a real Caddy (`forward_auth`), with the shipped
//! `deploy/caddy/Caddyfile`: Debian's `/usr/bin/caddy` in front of the in-process gateway and
//! the echo upstream, all on loopback, on random free ports.
//!
//! Caddy is required: when it is missing these tests FAIL (never skip) and say how to install
//! it (`apt-get install -y caddy`; `tests/run.sh` installs it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Client, Method, StatusCode, header};
use serde_json::Value;
use support::raw;
use support::{Echo, Harness, location, set_cookie};
use tokio::net::TcpStream;

const CADDY: &str = "/usr/bin/caddy";
const CADDYFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/caddy/Caddyfile");

const ROUTES: &str = r#"
[server]
trusted_proxies = ["127.0.0.1/32"]

[[route]]
path = "/admin"
policy = "deny"

[[route]]
path = "/public/"
policy = "public"

[[route]]
path = "/items"
methods = ["POST"]
policy = "deny"
"#;

/// A running Caddy, killed (and its directory removed) on drop.
struct Caddy {
    child: Child,
    dir: PathBuf,
    /// `http://127.0.0.1:<port>`
    url: String,
    port: u16,
}

impl Caddy {
    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("caddy.log")).unwrap_or_default()
    }
}

impl Drop for Caddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port free right now (Caddy cannot report the one it picked).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn require_caddy() {
    assert!(
        Path::new(CADDY).exists(),
        "Caddy is required for this test and {CADDY} is missing: install it with \
         `apt-get update && apt-get install -y caddy` (tests/run.sh installs it)"
    );
}

/// The shipped Caddyfile, copied into a directory of its own and run in the foreground with
/// its addresses from the environment (as its header says) and no admin endpoint.
async fn start_caddy(port: u16, authgate_port: u16, app_port: u16) -> Caddy {
    require_caddy();
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "authgate-caddy-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("Caddyfile");
    std::fs::copy(CADDYFILE, &config).unwrap_or_else(|e| panic!("cannot copy {CADDYFILE}: {e}"));
    let log = std::fs::File::create(dir.join("caddy.log")).unwrap();
    let child = Command::new(CADDY)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(&config)
        .env("AUTHGATE_SITE", format!("http://127.0.0.1:{port}"))
        .env("AUTHGATE_UPSTREAM", format!("127.0.0.1:{authgate_port}"))
        .env("APP_UPSTREAM", format!("127.0.0.1:{app_port}"))
        .env("CADDY_ADMIN", "off")
        // Caddy keeps its state (autosave, certificates) under these: not the user's.
        .env("HOME", &dir)
        .env("XDG_CONFIG_HOME", &dir)
        .env("XDG_DATA_HOME", &dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {CADDY}: {e}"));
    let mut caddy = Caddy {
        child,
        dir,
        url: format!("http://127.0.0.1:{port}"),
        port,
    };
    for _ in 0..500 {
        if let Some(status) = caddy.child.try_wait().unwrap() {
            panic!("caddy exited with {status}:\n{}", caddy.log());
        }
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return caddy;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("caddy never listened on {port}:\n{}", caddy.log());
}

/// The gateway with `public_url` = the Caddy origin, then Caddy in front of it.
async fn start() -> (Harness, Caddy) {
    require_caddy();
    let port = free_port();
    let h = Harness::builder()
        .config(ROUTES)
        .config(&format!(
            "[server]\npublic_url = \"http://127.0.0.1:{port}\""
        ))
        .start()
        .await;
    let caddy = start_caddy(port, h.addr.port(), h.upstream_addr.port()).await;
    (h, caddy)
}

async fn browse(client: &Client, url: &str) -> reqwest::Response {
    client
        .get(url)
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap()
}

/// The whole code flow through Caddy, starting from a protected page; returns the session
/// cookie's value.
async fn login_through_caddy(h: &Harness, caddy: &Caddy, client: &Client, user: &str) -> String {
    h.idp.controls().set_auto_login(Some(user.to_owned()));
    let r = browse(client, &caddy.at("/app/page?x=1")).await;
    assert_eq!(r.status(), StatusCode::FOUND, "{}", caddy.log());
    assert_eq!(location(&r), "/oauth2/start?rd=/app/page?x=1");
    let r = browse(client, &caddy.at(&location(&r))).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let authorize = location(&r);
    assert!(authorize.starts_with(&h.idp.issuer()), "{authorize}");
    let r = browse(client, &authorize).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let callback = location(&r);
    assert!(
        callback.starts_with(&caddy.at("/oauth2/callback?")),
        "the provider must send the browser back through Caddy: {callback}"
    );
    let r = browse(client, &callback).await;
    assert_eq!(r.status(), StatusCode::FOUND, "{:?}", r.text().await);
    assert_eq!(location(&r), "/app/page?x=1");
    set_cookie(&r, "authgate_session").expect("a session cookie")
}

async fn api(client: &Client, method: Method, url: &str) -> reqwest::Response {
    client
        .request(method, url)
        .header(header::ACCEPT, "application/json")
        .header("X-Forwarded-User", "mallory")
        .header(header::AUTHORIZATION, "Bearer forged")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_full_login_through_caddy_reaches_the_app_with_identity() {
    let (h, caddy) = start().await;
    let c = h.client();
    login_through_caddy(&h, &caddy, &c, "alice").await;
    let r = api(&c, Method::GET, &caddy.at("/app/page?x=1")).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", caddy.log());
    let echo = Echo(r.json::<Value>().await.unwrap());
    assert_eq!(echo.path(), "/app/page");
    let bearer = echo.bearer().expect("Authorization: Bearer upstream");
    assert_ne!(bearer, "forged");
    assert_eq!(echo.header_values("x-forwarded-user"), ["alice"]);
    assert_eq!(
        echo.header("x-forwarded-email").as_deref(),
        Some("alice@example.test")
    );
    let cookies = echo.header_values("cookie").join("; ");
    assert!(!cookies.contains("authgate_session"), "{cookies}");
    // The method Caddy forwards is judged: a POST-only deny route.
    let r = api(&c, Method::POST, &caddy.at("/items/1")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = api(&c, Method::GET, &caddy.at("/items/1")).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_a_session_navigations_go_to_login_and_the_rest_gets_401() {
    let (h, caddy) = start().await;
    let c = h.client();
    let r = browse(&c, &caddy.at("/app/page")).await;
    assert_eq!(r.status(), StatusCode::FOUND, "{}", caddy.log());
    assert_eq!(location(&r), "/oauth2/start?rd=/app/page");
    let r = api(&c, Method::POST, &caddy.at("/app/page")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["login_url"]
            .as_str()
            .unwrap()
            .contains("/oauth2/start")
    );
    assert_eq!(h.upstream_hits(), 0);
}

#[tokio::test]
async fn nothing_spoofed_reaches_the_app_on_a_public_route() {
    let (h, caddy) = start().await;
    let c = h.client();
    let r = c
        .get(caddy.at("/public/x"))
        .header(header::ACCEPT, "application/json")
        .header("X-Forwarded-User", "mallory")
        .header(header::AUTHORIZATION, "Bearer forged")
        .header(
            header::COOKIE,
            "authgate_session=s; a=1; authgate_session=t; authgate_session_login=l; b=2",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", caddy.log());
    let echo = Echo(r.json::<Value>().await.unwrap());
    assert_eq!(echo.header("x-forwarded-user"), None);
    assert_eq!(echo.header("authorization"), None);
    // authgate's cookies never reach the app, the others do.
    let cookies = echo.header_values("cookie").join(";");
    let pairs: Vec<&str> = (cookies.split(';').map(str::trim))
        .filter(|p| !p.is_empty())
        .collect();
    assert_eq!(pairs, ["a=1", "b=2"], "{cookies:?}");
}

#[tokio::test]
async fn the_check_itself_is_not_reachable_through_caddy() {
    let (h, caddy) = start().await;
    let c = h.client();
    login_through_caddy(&h, &caddy, &c, "alice").await;
    let r = c
        .get(caddy.at("/oauth2/auth"))
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Uri", "/app")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.headers().get(header::AUTHORIZATION).is_none());
}

/// Caddy forwards `{http.request.uri}` as it arrived, raw bytes included; each is judged on
/// its path.
struct Hostile {
    attack: &'static str,
    method: &'static [u8],
    target: &'static [u8],
    /// With alice's session cookie.
    session: bool,
    /// Whether authgate lets Caddy pass the request on (its 202).
    allowed: bool,
    /// What the client gets from Caddy.
    status: u16,
    /// Requests the app's handler receives.
    hits: usize,
}

#[rustfmt::skip]
const HOSTILE: &[Hostile] = &[
    Hostile { attack: "quote in the query of a denied path (Caddy refuses it itself)", method: b"GET", target: b"/admin/x?q=\"", session: true, allowed: false, status: 400, hits: 0 },
    Hostile { attack: "raw UTF-8 in a denied path", method: b"GET", target: b"/admin/\xc3\xa9", session: true, allowed: false, status: 403, hits: 0 },
    Hostile { attack: "raw Latin-1 byte in a denied path", method: b"GET", target: b"/admin/\xe9", session: true, allowed: false, status: 403, hits: 0 },
    Hostile { attack: "braces and a pipe in a denied path", method: b"GET", target: b"/admin/{x}|y", session: true, allowed: false, status: 403, hits: 0 },
    Hostile { attack: "encoded dot segments into a denied path", method: b"GET", target: b"/public/%2e%2e/admin", session: true, allowed: false, status: 403, hits: 0 },
    Hostile { attack: "encoded backslash", method: b"GET", target: b"/public/..%5Cadmin", session: true, allowed: false, status: 400, hits: 0 },
    Hostile { attack: "raw UTF-8 on an authenticated path, anonymous: to login", method: b"GET", target: b"/app/\xc3\xa9", session: false, allowed: false, status: 302, hits: 0 },
    Hostile { attack: "raw UTF-8 on an authenticated path with a session", method: b"GET", target: b"/app/\xc3\xa9", session: true, allowed: true, status: 200, hits: 1 },
    Hostile { attack: "raw UTF-8 on a public path", method: b"GET", target: b"/public/\xc3\xa9", session: false, allowed: true, status: 200, hits: 1 },
    Hostile { attack: "raw Latin-1 byte on a public path", method: b"GET", target: b"/public/\xe9", session: false, allowed: true, status: 200, hits: 1 },
    Hostile { attack: "lowercase post on a POST deny route", method: b"post", target: b"/items/1", session: true, allowed: false, status: 403, hits: 0 },
    Hostile { attack: "POST with raw bytes on a POST deny route", method: b"POST", target: b"/items/\xc3\xa9", session: true, allowed: false, status: 403, hits: 0 },
];

/// Forward-auth checks the gateway has allowed so far (its `/metrics`, every route).
async fn allowed_checks(h: &Harness) -> f64 {
    let text = h.metrics().await;
    (text.lines())
        .filter(|l| {
            l.starts_with("authgate_decisions_total{") && l.contains("decision=\"allowed\"")
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn hostile_uris_through_caddy_are_judged_on_their_path() {
    let (h, caddy) = start().await;
    let session = login_through_caddy(&h, &caddy, &h.client(), "alice").await;
    let cookie = format!("authgate_session={session}");
    let addr = ([127, 0, 0, 1], caddy.port).into();
    let mut wrong = Vec::new();
    for case in HOSTILE {
        let mut headers: Vec<(&[u8], &[u8])> = vec![(b"Content-Length", b"0")];
        if case.session {
            headers.push((b"Cookie", cookie.as_bytes()));
        }
        let (before, allowed_before) = (h.upstream_hits(), allowed_checks(&h).await);
        let answer = raw::send(addr, &raw::request(case.method, case.target, &headers)).await;
        let hits = h.upstream_hits() - before;
        let allowed = allowed_checks(&h).await > allowed_before;
        if (allowed, answer.status, hits) != (case.allowed, case.status, case.hits) {
            wrong.push(format!(
                "{}: allowed {allowed} (want {}), status {} (want {}), app hits {hits} (want {})",
                case.attack, case.allowed, answer.status, case.status, case.hits
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}\n{}", wrong.join("\n"), caddy.log());
}
