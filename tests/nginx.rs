//! authgate as the forward-auth service of a real nginx (`auth_request`), with the example
//! configuration `deploy/nginx/nginx.conf`: Debian's `/usr/sbin/nginx` in front of the
//! in-process gateway and the echo upstream, all on loopback.
//!
//! nginx is required: when it is missing these tests FAIL (never skip) and say how to
//! install it (`apt-get install -y nginx`; `.ci/run` installs it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};
use support::raw;
use support::{Echo, Harness, location, set_cookie};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NGINX: &str = "/usr/sbin/nginx";
const CONF_TEMPLATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx/nginx.conf");

const ROUTES: &str = r#"
[server]
trusted_proxies = ["127.0.0.1/32"]

[[route]]
path = "/admin"
policy = "deny"

[[route]]
path = "/public/"
policy = "public"
"#;

/// A running nginx, killed (and its directory removed) on drop.
struct Nginx {
    child: Child,
    prefix: PathBuf,
    /// `http://127.0.0.1:<port>`
    url: String,
    port: u16,
}

impl Nginx {
    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn error_log(&self) -> String {
        let log = std::fs::read_to_string(self.prefix.join("error.log")).unwrap_or_default();
        let stderr = std::fs::read_to_string(self.prefix.join("stderr.log")).unwrap_or_default();
        format!("{log}{stderr}")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.prefix);
    }
}

/// A port free right now (nginx cannot report the one it picked).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn require_nginx() {
    assert!(
        Path::new(NGINX).exists(),
        "nginx is required for this test and {NGINX} is missing: install it with \
         `apt-get update && apt-get install -y nginx` (.ci/run installs it)"
    );
}

/// The example configuration with its placeholders filled in, started in the foreground.
async fn start_nginx(
    port: u16,
    authgate_port: u16,
    upstream_port: u16,
    billing_port: u16,
) -> Nginx {
    require_nginx();
    static N: AtomicUsize = AtomicUsize::new(0);
    let prefix = std::env::temp_dir().join(format!(
        "authgate-nginx-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&prefix);
    std::fs::create_dir_all(&prefix).unwrap();
    let template = std::fs::read_to_string(CONF_TEMPLATE)
        .unwrap_or_else(|e| panic!("cannot read {CONF_TEMPLATE}: {e}"));
    let conf = template
        .replace("__LISTEN_PORT__", &port.to_string())
        .replace("__AUTHGATE_PORT__", &authgate_port.to_string())
        .replace("__UPSTREAM_PORT__", &upstream_port.to_string())
        .replace("__BILLING_PORT__", &billing_port.to_string())
        .replace("__PREFIX__", prefix.to_str().unwrap());
    assert!(!conf.contains("__"), "an unreplaced placeholder:\n{conf}");
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let stderr = std::fs::File::create(prefix.join("stderr.log")).unwrap();
    let child = Command::new(NGINX)
        .arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(&prefix)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {NGINX}: {e}"));
    let mut nginx = Nginx {
        child,
        prefix,
        url: format!("http://127.0.0.1:{port}"),
        port,
    };
    for _ in 0..500 {
        if let Some(status) = nginx.child.try_wait().unwrap() {
            panic!("nginx exited with {status}:\n{}", nginx.error_log());
        }
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return nginx;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nginx never listened on {port}:\n{}", nginx.error_log());
}

/// The gateway with `public_url` = the nginx origin, then nginx in front of it.
async fn start() -> (Harness, Nginx) {
    require_nginx();
    let port = free_port();
    let h = Harness::builder()
        .config(ROUTES)
        .config(&format!(
            "[server]\npublic_url = \"http://127.0.0.1:{port}\""
        ))
        .start()
        .await;
    // The second app (`location /billing/`) is the same echo server unless a test starts
    // its own (`start_with_billing`).
    let nginx = start_nginx(
        port,
        h.addr.port(),
        h.upstream_addr.port(),
        h.upstream_addr.port(),
    )
    .await;
    (h, nginx)
}

/// As [`start`], with the `/billing/` location on a second upstream of its own, whose hits are
/// counted.
async fn start_with_billing() -> (Harness, Nginx, Arc<AtomicUsize>) {
    require_nginx();
    let port = free_port();
    let (billing, hits, _task) = support::echo_upstream().await;
    let h = Harness::builder()
        .config(ROUTES)
        .config(&format!(
            "[server]\npublic_url = \"http://127.0.0.1:{port}\"\n[[route]]\npath = \"/billing/\"\nrequire_groups = [\"billing\"]"
        ))
        .start()
        .await;
    let nginx = start_nginx(port, h.addr.port(), h.upstream_addr.port(), billing.port()).await;
    (h, nginx, hits)
}

async fn browse(client: &Client, url: &str) -> reqwest::Response {
    client
        .get(url)
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap()
}

async fn api_get(client: &Client, url: &str) -> reqwest::Response {
    client
        .get(url)
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
}

/// The whole code flow through nginx, starting from a protected page; returns the session
/// cookie's value.
async fn login_through_nginx(h: &Harness, nginx: &Nginx, client: &Client, user: &str) -> String {
    h.idp.controls().set_auto_login(Some(user.to_owned()));
    let r = browse(client, &nginx.at("/app/page?x=1")).await;
    assert_eq!(r.status(), StatusCode::FOUND, "{}", nginx.error_log());
    let start = relative(nginx, &location(&r));
    assert!(start.starts_with("/oauth2/start?rd="), "{start}");
    let r = browse(client, &nginx.at(&start)).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let authorize = location(&r);
    assert!(authorize.starts_with(&h.idp.issuer()), "{authorize}");
    let r = browse(client, &authorize).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let callback = location(&r);
    assert!(
        callback.starts_with(&nginx.at("/oauth2/callback?")),
        "the provider must send the browser back through nginx: {callback}"
    );
    let r = browse(client, &callback).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    assert_eq!(relative(nginx, &location(&r)), "/app/page?x=1");
    set_cookie(&r, "authgate_session").expect("a session cookie")
}

/// nginx makes its own redirects absolute (`absolute_redirect on`): compare paths.
fn relative(nginx: &Nginx, location: &str) -> String {
    location
        .strip_prefix(&nginx.url)
        .unwrap_or(location)
        .to_owned()
}

#[tokio::test]
async fn a_browser_without_a_session_is_sent_to_login() {
    let (_h, nginx) = start().await;
    let c = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = browse(&c, &nginx.at("/app/page")).await;
    assert_eq!(r.status(), StatusCode::FOUND, "{}", nginx.error_log());
    assert_eq!(
        relative(&nginx, &location(&r)),
        "/oauth2/start?rd=/app/page"
    );
}

#[tokio::test]
async fn the_full_login_through_nginx_reaches_the_upstream_with_identity() {
    let (h, nginx) = start().await;
    let c = h.client();
    login_through_nginx(&h, &nginx, &c, "alice").await;
    let r = c
        .get(nginx.at("/app/page?x=1"))
        .header(header::ACCEPT, "application/json")
        .header("X-Forwarded-User", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", nginx.error_log());
    let echo = Echo(r.json::<Value>().await.unwrap());
    assert_eq!(echo.path(), "/app/page");
    let bearer = echo.bearer().expect("Authorization: Bearer upstream");
    assert!(!bearer.is_empty());
    assert_eq!(echo.header_values("x-forwarded-user"), ["alice"]);
    assert_eq!(
        echo.header("x-forwarded-email").as_deref(),
        Some("alice@example.test")
    );
    // authgate's own endpoints through nginx know the session too.
    let r = api_get(&c, &nginx.at("/oauth2/userinfo")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["sub"], "alice");
}

#[tokio::test]
async fn deny_and_public_routes_through_nginx() {
    let (h, nginx) = start().await;
    let anonymous = h.client();
    let r = browse(&anonymous, &nginx.at("/admin/users")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "{}", nginx.error_log());
    let alice = h.client();
    login_through_nginx(&h, &nginx, &alice, "alice").await;
    let r = api_get(&alice, &nginx.at("/admin")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // The original URI is judged after normalization (raw bytes: clients resolve `%2e%2e`).
    let status = raw_status(nginx.port, "/public/%2e%2e/admin").await;
    assert_eq!(status, 403, "{}", nginx.error_log());

    // Public: no session needed, and nothing spoofed reaches the upstream.
    let r = anonymous
        .get(nginx.at("/public/x"))
        .header(header::ACCEPT, "application/json")
        .header(header::AUTHORIZATION, "Bearer forged")
        .header("X-Forwarded-User", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", nginx.error_log());
    let echo = Echo(r.json::<Value>().await.unwrap());
    assert_eq!(echo.header("authorization"), None);
    assert_eq!(echo.header("x-forwarded-user"), None);
}

/// The status of a raw `GET <target>` (no client-side path normalization).
async fn raw_status(port: u16, target: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut bytes))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&bytes);
    text.split(' ').nth(1).unwrap().parse().unwrap()
}

/// The cookie pairs the app received through nginx.
async fn app_cookies(nginx: &Nginx, client: &Client, path: &str, cookie: &str) -> Vec<String> {
    let r = client
        .get(nginx.at(path))
        .header(header::ACCEPT, "application/json")
        .header(header::COOKIE, cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", nginx.error_log());
    let echo = Echo(r.json::<Value>().await.unwrap());
    let cookies = echo.header_values("cookie").join(";");
    (cookies.split(';').map(str::trim))
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn authgate_cookies_never_reach_the_app_through_nginx() {
    let (h, nginx) = start().await;
    let session = login_through_nginx(&h, &nginx, &h.client(), "alice").await;
    let c = support::bare_client();
    for (path, cookie, expected) in [
        (
            "/app",
            format!("a=1; authgate_session={session}; authgate_session_login=l; b=2"),
            &["a=1", "b=2"][..],
        ),
        (
            "/app",
            format!("authgate_session_login=l;authgate_session={session}"),
            &[],
        ),
        (
            "/public/x",
            "authgate_session=s; a=1; authgate_session=t; authgate_session_login=l; b=2".into(),
            &["a=1", "b=2"],
        ),
        // More of ours than the maps remove: the app gets no cookie rather than ours.
        (
            "/public/x",
            "authgate_session=1; authgate_session=2; a=1; authgate_session=3; authgate_session_login=4"
                .into(),
            &[],
        ),
        // A cookie that only ends like ours is not ours.
        ("/public/x", "xauthgate_session=1; b=2".into(), &["xauthgate_session=1", "b=2"]),
    ] {
        let got = app_cookies(&nginx, &c, path, &cookie).await;
        assert_eq!(got, expected, "{cookie}");
    }
}

/// nginx passes `$request_uri` raw in `X-Forwarded-Uri`: quotes, spaces and UTF-8 bytes that a
/// URI may not hold. Each is judged on its path, never as `GET /`.
struct Hostile {
    attack: &'static str,
    target: &'static [u8],
    /// With alice's session cookie.
    session: bool,
    /// Whether authgate lets nginx pass the request on (its 202).
    allowed: bool,
    /// What the client gets from nginx.
    status: u16,
    /// Requests the app's handler receives. The echo app (hyper) itself answers 400 to a
    /// request target holding a quote, before its handler runs: an allowed request may still
    /// count 0 here, which is why `allowed` is checked on its own.
    hits: usize,
}

#[rustfmt::skip]
const HOSTILE: &[Hostile] = &[
    Hostile { attack: "quote in the query of a denied path", target: b"/admin/x?q=\"", session: true, allowed: false, status: 403, hits: 0 },
    Hostile { attack: "quote in a denied path", target: b"/admin/a\"b", session: true, allowed: false, status: 403, hits: 0 },
    Hostile { attack: "raw UTF-8 in a denied path", target: b"/admin/\xc3\xa9", session: true, allowed: false, status: 403, hits: 0 },
    Hostile { attack: "raw Latin-1 byte in a denied path", target: b"/admin/\xe9", session: true, allowed: false, status: 403, hits: 0 },
    Hostile { attack: "angle brackets in a denied path", target: b"/admin/<x>", session: true, allowed: false, status: 403, hits: 0 },
    Hostile { attack: "raw UTF-8 in a denied path, anonymous", target: b"/admin/\xc3\xa9", session: false, allowed: false, status: 403, hits: 0 },
    Hostile { attack: "quotes on an authenticated path, anonymous: to login", target: b"/app/\"x\"?q=\"", session: false, allowed: false, status: 302, hits: 0 },
    Hostile { attack: "raw UTF-8 on an authenticated path, anonymous: to login", target: b"/app/\xc3\xa9", session: false, allowed: false, status: 302, hits: 0 },
    Hostile { attack: "quotes on an authenticated path with a session", target: b"/app/\"x\"?q=\"", session: true, allowed: true, status: 400, hits: 0 },
    Hostile { attack: "raw UTF-8 on a public path", target: b"/public/\xc3\xa9", session: false, allowed: true, status: 200, hits: 1 },
    Hostile { attack: "quote in the query of a public path", target: b"/public/x?q=\"", session: false, allowed: true, status: 400, hits: 0 },
    Hostile { attack: "raw UTF-8 on an authenticated path with a session", target: b"/app/\xc3\xa9", session: true, allowed: true, status: 200, hits: 1 },
    Hostile { attack: "encoded backslash", target: b"/public/..%5Cadmin", session: true, allowed: false, status: 400, hits: 0 },
    Hostile { attack: "encoded slash", target: b"/public/..%2Fadmin", session: true, allowed: false, status: 400, hits: 0 },
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
async fn hostile_uris_through_nginx_are_judged_on_their_path() {
    let (h, nginx) = start().await;
    let session = login_through_nginx(&h, &nginx, &h.client(), "alice").await;
    let cookie = format!("authgate_session={session}");
    let addr = ([127, 0, 0, 1], nginx.port).into();
    let mut wrong = Vec::new();
    for case in HOSTILE {
        let mut headers: Vec<(&[u8], &[u8])> = Vec::new();
        if case.session {
            headers.push((b"Cookie", cookie.as_bytes()));
        }
        let (before, allowed_before) = (h.upstream_hits(), allowed_checks(&h).await);
        let answer = raw::send(addr, &raw::request(b"GET", case.target, &headers)).await;
        let hits = h.upstream_hits() - before;
        let allowed = allowed_checks(&h).await > allowed_before;
        if (allowed, answer.status, hits) != (case.allowed, case.status, case.hits) {
            wrong.push(format!(
                "{}: allowed {allowed} (want {}), status {} (want {}), app hits {hits} (want {})",
                case.attack, case.allowed, answer.status, case.status, case.hits
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "\n{}\n{}",
        wrong.join("\n"),
        nginx.error_log()
    );
}

/// A second `location` to a second upstream: the same login, judged by its own route (groups),
/// the prefix stripped by nginx, the identity set, nothing reaching that app unjudged.
#[tokio::test]
async fn a_second_location_reaches_its_own_upstream_under_its_own_route() {
    let (h, nginx, billing_hits) = start_with_billing().await;

    // No session: to the login, and the second app never sees the request.
    let anonymous = h.client();
    let r = browse(&anonymous, &nginx.at("/billing/invoices")).await;
    assert_eq!(r.status(), StatusCode::FOUND, "{}", nginx.error_log());
    assert!(
        location(&r).contains("/oauth2/start?rd=/billing/invoices"),
        "{}",
        location(&r)
    );
    assert_eq!(billing_hits.load(Ordering::SeqCst), 0);

    // A user outside the route's group: 403 from authgate's route, still unseen.
    let c = h.client();
    login_through_nginx(&h, &nginx, &c, "alice").await;
    let r = api_get(&c, &nginx.at("/billing/invoices")).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(billing_hits.load(Ordering::SeqCst), 0);
    // ...while the first app serves her.
    let r = api_get(&c, &nginx.at("/app/page")).await;
    assert_eq!(r.status(), StatusCode::OK);

    // A member of the group: the second upstream, prefix stripped, with identity and token.
    h.idp
        .controls()
        .set_user_claims("bob", json!({"groups": ["billing"]}));
    let c = h.client();
    login_through_nginx(&h, &nginx, &c, "bob").await;
    let r = c
        .get(nginx.at("/billing/invoices?page=2"))
        .header(header::ACCEPT, "application/json")
        .header("X-Forwarded-User", "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", nginx.error_log());
    let echo = Echo(r.json::<Value>().await.unwrap());
    assert_eq!(echo.path(), "/invoices");
    assert_eq!(echo.header_values("x-forwarded-user"), ["bob"]);
    assert!(echo.bearer().is_some_and(|b| !b.is_empty()));
    assert_eq!(billing_hits.load(Ordering::SeqCst), 1);
}
