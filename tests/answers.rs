//! Every answer the gateway writes itself instead of forwarding, as a client sees it: status,
//! `Retry-After`, `Content-Type`, `Cache-Control`, `WWW-Authenticate` and `Set-Cookie`, one
//! table per set-up. The refusals come from many places (the pipeline, forward auth, each
//! endpoint, the upstream, the store, the provider); this pins what they answer, whichever
//! code builds the answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use devidp::idp::TokenFault;
use reqwest::{Client, Method, Response, StatusCode, header};
use support::redis::RedisServer;
use support::{Harness, bare_client, bind, location, logout_token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What a client sees of an answer, besides its body.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Seen {
    status: u16,
    retry_after: Option<String>,
    content_type: Option<String>,
    cache_control: Option<String>,
    www_authenticate: Option<String>,
    set_cookie: Vec<String>,
}

fn seen(r: &Response) -> Seen {
    let one = |name: header::HeaderName| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Seen {
        status: r.status().as_u16(),
        retry_after: one(header::RETRY_AFTER),
        content_type: one(header::CONTENT_TYPE),
        cache_control: one(header::CACHE_CONTROL),
        www_authenticate: one(header::WWW_AUTHENTICATE),
        set_cookie: (r.headers().get_all(header::SET_COOKIE).iter())
            .map(|v| v.to_str().unwrap().to_owned())
            .collect(),
    }
}

const TEXT: Option<&str> = Some("text/plain; charset=utf-8");
const HTML: Option<&str> = Some("text/html; charset=utf-8");
const JSON: Option<&str> = Some("application/json");
const NO_STORE: Option<&str> = Some("no-store");
const CLEAR_SESSION: &str = "authgate_session=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax";

fn want(
    status: u16,
    retry_after: Option<&str>,
    content_type: Option<&str>,
    www_authenticate: Option<&str>,
    set_cookie: &[&str],
) -> Seen {
    Seen {
        status,
        retry_after: retry_after.map(str::to_owned),
        content_type: content_type.map(str::to_owned),
        cache_control: NO_STORE.map(str::to_owned),
        www_authenticate: www_authenticate.map(str::to_owned),
        set_cookie: set_cookie.iter().map(|s| s.to_string()).collect(),
    }
}

/// Collects every case that differs, so one run shows them all.
#[derive(Default)]
struct Table(Vec<String>);

impl Table {
    fn check(&mut self, case: &str, got: Seen, expected: Seen) {
        if got != expected {
            self.0.push(format!(
                "{case}:\n  got      {got:?}\n  expected {expected:?}"
            ));
        }
    }

    fn assert_empty(self) {
        assert!(self.0.is_empty(), "answers changed:\n{}", self.0.join("\n"));
    }
}

async fn send(client: &Client, method: Method, url: String, headers: &[(&str, &str)]) -> Response {
    let mut request = client.request(method, url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

const ROUTES: &str = r#"
[oidc]
bearer_audiences = ["https://api.example.test"]

[[route]]
path = "/deny"
policy = "deny"

[[route]]
path = "/admins"
require_groups = ["admins"]

[[route]]
path = "/api/"
api = true
bearer = "passthrough"
"#;

#[tokio::test]
async fn decisions_and_endpoint_refusals() {
    let h = Harness::builder().config(ROUTES).start().await;
    let anon = bare_client();
    let html = [("accept", "text/html")];
    let api = [("accept", "application/json")];
    let mut t = Table::default();

    let r = send(&anon, Method::GET, h.at("/app"), &html).await;
    assert_eq!(location(&r), h.at("/oauth2/start?rd=%2Fapp"));
    t.check(
        "navigation, no session",
        seen(&r),
        want(302, None, None, None, &[]),
    );
    let r = send(&anon, Method::GET, h.at("/app"), &api).await;
    let bearer = Some("Bearer");
    t.check(
        "API, no session",
        seen(&r),
        want(401, None, JSON, bearer, &[]),
    );
    let garbage = [("authorization", "Bearer garbage"), ("accept", "text/html")];
    let r = send(&anon, Method::GET, h.at("/api/x"), &garbage).await;
    let challenge = "Bearer error=\"invalid_token\", \
                     error_description=\"the token is not a well-formed JWT\"";
    t.check(
        "bad bearer",
        seen(&r),
        want(401, None, JSON, Some(challenge), &[]),
    );
    let r = send(&anon, Method::GET, h.at("/deny"), &html).await;
    t.check("deny route", seen(&r), want(403, None, TEXT, None, &[]));
    let r = send(&anon, Method::GET, h.at("/a%2Fb"), &html).await;
    t.check("refused path", seen(&r), want(400, None, TEXT, None, &[]));
    let r = send(&anon, Method::GET, h.at("/oauth2/nope"), &html).await;
    t.check(
        "unknown /oauth2/ path",
        seen(&r),
        want(404, None, TEXT, None, &[]),
    );
    let r = send(&anon, Method::POST, h.at("/oauth2/start"), &html).await;
    t.check("wrong method", seen(&r), want(405, None, TEXT, None, &[]));
    let r = send(&anon, Method::GET, h.at("/oauth2/userinfo"), &html).await;
    t.check(
        "userinfo, no session",
        seen(&r),
        want(401, None, JSON, bearer, &[]),
    );
    let r = send(&anon, Method::GET, h.at("/oauth2/auth"), &html).await;
    t.check(
        "forward auth, no session",
        seen(&r),
        want(401, None, JSON, bearer, &[]),
    );
    let callback = h.at("/oauth2/callback?state=x&code=y");
    let r = send(&anon, Method::GET, callback, &html).await;
    t.check(
        "callback, no login",
        seen(&r),
        want(400, None, HTML, None, &[]),
    );
    let r = send(&anon, Method::GET, h.at("/oauth2/callback"), &html).await;
    t.check(
        "callback, incomplete",
        seen(&r),
        want(400, None, HTML, None, &[]),
    );
    let r = send(&anon, Method::POST, h.at("/oauth2/backchannel_logout"), &[]).await;
    t.check(
        "logout token missing",
        seen(&r),
        want(400, None, JSON, None, &[]),
    );
    let r = send(&anon, Method::GET, h.at("/oauth2/sign_out"), &html).await;
    let signed_out = want(302, None, None, None, &[CLEAR_SESSION]);
    t.check("sign-out, no session", seen(&r), signed_out.clone());

    // Logged in: a group the user lacks; then a cookie whose session ended.
    let alice = h.client();
    h.login(&alice, "alice").await;
    let r = send(&alice, Method::GET, h.at("/admins"), &html).await;
    t.check("missing group", seen(&r), want(403, None, TEXT, None, &[]));
    let cookie = h.login(&h.client(), "bob").await;
    let stale = format!("authgate_session={cookie}");
    let r = send(
        &anon,
        Method::GET,
        h.at("/oauth2/sign_out"),
        &[("cookie", &stale)],
    )
    .await;
    t.check("sign-out", seen(&r), signed_out);
    let with = |accept| [("cookie", stale.as_str()), ("accept", accept)];
    let r = send(&anon, Method::GET, h.at("/app"), &with("text/html")).await;
    let ended = want(302, None, None, None, &[CLEAR_SESSION]);
    t.check("navigation, ended session", seen(&r), ended);
    let r = send(&anon, Method::GET, h.at("/app"), &with("application/json")).await;
    let ended = want(401, None, JSON, bearer, &[CLEAR_SESSION]);
    t.check("API, ended session", seen(&r), ended);
    t.assert_empty();
}

#[tokio::test]
async fn provider_not_ready() {
    let dead = bind().await.local_addr().unwrap();
    let h = Harness::builder()
        .config(&format!("[oidc]\nissuer = \"http://{dead}\""))
        .no_wait_ready()
        .start()
        .await;
    let anon = bare_client();
    let mut t = Table::default();
    let five = Some("5");
    for accept in ["text/html", "application/json"] {
        let r = send(&anon, Method::GET, h.at("/app"), &[("accept", accept)]).await;
        t.check(accept, seen(&r), want(503, five, TEXT, None, &[]));
    }
    let r = send(&anon, Method::GET, h.at("/oauth2/start"), &[]).await;
    t.check("/oauth2/start", seen(&r), want(503, five, TEXT, None, &[]));
    let r = send(&anon, Method::GET, h.at("/readyz"), &[]).await;
    t.check("/readyz", seen(&r), want(503, five, TEXT, None, &[]));
    t.assert_empty();
}

/// An upstream that answers nothing (`hang`), or a 200 head then a body of 10 bytes, one
/// every 200 ms (`drip`).
async fn raw_upstream(drip: bool) -> SocketAddr {
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                if !drip {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                let head = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n";
                let _ = tcp.write_all(head).await;
                for _ in 0..10 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = tcp.write_all(b".").await;
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn upstream_failures() {
    let public = "[[route]]\npath = \"/\"\npolicy = \"public\"";
    let upstream = |extra: &str| format!("[upstream]\ntimeout = \"500ms\"\n{extra}");
    let mut t = Table::default();

    let closed = bind().await.local_addr().unwrap(); // dropped: nothing listens
    let h = Harness::builder()
        .config(public)
        .upstream(closed)
        .start()
        .await;
    let r = send(&bare_client(), Method::GET, h.at("/x"), &[]).await;
    t.check("unreachable", seen(&r), want(502, None, TEXT, None, &[]));

    let h = (Harness::builder().config(public).config(&upstream("")))
        .upstream(raw_upstream(false).await)
        .start()
        .await;
    let r = send(&bare_client(), Method::GET, h.at("/x"), &[]).await;
    t.check(
        "no answer in time",
        seen(&r),
        want(504, None, TEXT, None, &[]),
    );

    let h = (Harness::builder().config(public))
        .config(&upstream("max_connections = 1"))
        .upstream(raw_upstream(true).await)
        .start()
        .await;
    let busy = send(&bare_client(), Method::GET, h.at("/drip"), &[]).await;
    assert_eq!(busy.status(), StatusCode::OK);
    let r = send(&bare_client(), Method::GET, h.at("/x"), &[]).await;
    t.check(
        "no connection free",
        seen(&r),
        want(503, Some("1"), TEXT, None, &[]),
    );
    drop(busy);
    t.assert_empty();
}

/// A transient refresh failure once the token expired: 503 for the time left of the backoff
/// (one second after a first failure).
#[tokio::test]
async fn refresh_backing_off() {
    let h = Harness::builder()
        .idp_options(|o| o.access_ttl = Duration::from_secs(2))
        .start()
        .await;
    let client = h.client();
    h.login(&client, "carol").await;
    h.idp
        .controls()
        .set_token_fault(Some(TokenFault::Status(500, "{}".into())));
    h.advance(Duration::from_millis(3100)); // past the token's expiry
    let r = send(
        &client,
        Method::GET,
        h.at("/app"),
        &[("accept", "text/html")],
    )
    .await;
    let mut t = Table::default();
    t.check(
        "backing off",
        seen(&r),
        want(503, Some("1"), TEXT, None, &[]),
    );
    t.assert_empty();
}

/// A Redis store that fails: the pipeline, userinfo, sign-out and back-channel logout answer
/// 503; a login whose new session cannot be saved too.
#[tokio::test]
async fn store_failures() {
    let mut redis = RedisServer::start();
    let h = Harness::builder()
        .config(&format!(
            "[session]\nstore = \"redis\"\nredis_url = \"{}\"\nredis_timeout = \"500ms\"",
            redis.url()
        ))
        .start()
        .await;
    let mut t = Table::default();

    // The new session cannot be saved (SADD refused, so its MULTI block is discarded; the
    // used-state marker still works).
    let client = h.client();
    h.idp.controls().set_auto_login(Some("dave".into()));
    let start = send(&client, Method::GET, h.at("/oauth2/start"), &[]).await;
    let back = send(&client, Method::GET, location(&start), &[]).await;
    let mut conn = redis.conn().await;
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "-sadd"][..])
        .query_async(&mut conn)
        .await
        .unwrap();
    let r = send(&client, Method::GET, location(&back), &[]).await;
    let cleared = r
        .headers()
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(cleared.starts_with("authgate_session_login_"), "{cleared}");
    let cleared = cleared.to_owned();
    t.check(
        "login, session not saved",
        seen(&r),
        want(503, Some("1"), TEXT, None, &[&cleared]),
    );
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "default", "+sadd"][..])
        .query_async(&mut conn)
        .await
        .unwrap();

    let cookie = h.login(&h.client(), "erin").await;
    let sid = h.idp.controls().last_issued_sid().unwrap();
    redis.kill();
    h.advance(Duration::from_millis(1200)); // the local read cache (1 s) expires
    let with = |accept: &str| {
        [
            ("cookie", format!("authgate_session={cookie}")),
            ("accept", accept.to_owned()),
        ]
    };
    let anon = bare_client();
    for (case, path) in [
        ("pipeline", "/app"),
        ("userinfo", "/oauth2/userinfo"),
        ("sign-out", "/oauth2/sign_out"),
    ] {
        let headers = with("text/html");
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let r = send(&anon, Method::GET, h.at(path), &headers).await;
        t.check(case, seen(&r), want(503, Some("1"), TEXT, None, &[]));
    }
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("logout_token", &logout_token(&h.idp, &sid))
        .finish();
    let r = anon
        .post(h.at("/oauth2/backchannel_logout"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    t.check(
        "back-channel logout",
        seen(&r),
        want(503, Some("1"), TEXT, None, &[]),
    );
    t.assert_empty();
}
