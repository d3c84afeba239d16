//! Form posts survive a login: a browser form POST from the app's own origin without a
//! session is kept, and sent upstream exactly once after the login in the same browser; the
//! browser gets the upstream's answer. Cross-site posts, over-size bodies, API routes and
//! routes that opt out are answered as before (401), and the bounds hold.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use reqwest::{Client, StatusCode, header};
use support::redis::RedisServer;
use support::{Harness, bind, location, set_cookie};

/// What the recording upstream received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: http::HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// An upstream that records every request and answers a form post the classic way:
/// `303 See Other` to `/done` (Post/Redirect/Get).
async fn recording_upstream() -> (SocketAddr, Log) {
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let log: Log = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.unwrap().to_bytes();
                        seen.lock().unwrap().push(Seen {
                            method: parts.method.to_string(),
                            uri: parts.uri.to_string(),
                            headers: parts.headers,
                            body,
                        });
                        let response = Response::builder()
                            .status(303)
                            .header("location", "/done")
                            .header("set-cookie", "app=1; Path=/")
                            .body(Full::new(Bytes::from_static(b"saved")))
                            .unwrap();
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, log)
}

async fn gateway(extra: &str) -> (Harness, Log) {
    let (addr, log) = recording_upstream().await;
    let h = Harness::builder()
        .upstream(addr)
        .config(&format!(
            r#"
            [[route]]
            path = "/api/"
            api = true
            [[route]]
            path = "/kept-out/"
            preserve_form_posts = false
            {extra}
            "#
        ))
        .start()
        .await;
    (h, log)
}

const URLENCODED: &str = "application/x-www-form-urlencoded";
const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// A browser's form POST from the gateway's own origin.
async fn post(
    h: &Harness,
    client: &Client,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    client
        .post(h.at(path))
        .header(header::ACCEPT, HTML)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ORIGIN, &h.url)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The login a kept post's 302 leads to: `/oauth2/start` (which takes the post over), then
/// the provider (auto-login as `user`). Returns the callback URL.
async fn through_provider(
    h: &Harness,
    client: &Client,
    kept: &reqwest::Response,
    user: &str,
) -> String {
    assert_eq!(
        kept.status(),
        StatusCode::FOUND,
        "a kept post goes to login"
    );
    let start = location(kept);
    assert!(start.starts_with(&h.at("/oauth2/start?rd=")), "{start}");
    let authorize = start_login(h, client, &start).await;
    h.idp.controls().set_auto_login(Some(user.to_owned()));
    let back = client.get(&authorize).send().await.unwrap();
    assert_eq!(back.status(), StatusCode::FOUND);
    let callback = location(&back);
    assert!(
        callback.starts_with(&h.at("/oauth2/callback?")),
        "{callback}"
    );
    callback
}

/// `GET /oauth2/start?..`: the provider's authorization URL.
async fn start_login(h: &Harness, client: &Client, start: &str) -> String {
    let started = client.get(start).send().await.unwrap();
    assert_eq!(started.status(), StatusCode::FOUND);
    let authorize = location(&started);
    assert!(authorize.starts_with(&h.idp.issuer()), "{authorize}");
    authorize
}

fn posts(log: &Log) -> Vec<Seen> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == "POST")
        .cloned()
        .collect()
}

fn header_of(seen: &Seen, name: &str) -> Option<String> {
    seen.headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// Sends the post, logs in, checks the upstream got it exactly once, as posted, and the
/// browser got the upstream's answer; a replayed callback is refused and sends nothing.
async fn kept_and_sent_once(h: &Harness, log: &Log, content_type: &str, body: &[u8]) {
    let client = h.client();
    let kept = post(
        h,
        &client,
        "/app/form?step=2&x=%C3%A9",
        content_type,
        body.to_vec(),
    )
    .await;
    assert!(posts(log).is_empty(), "nothing sent before the login");
    assert_eq!(h.gateway.preserved().held().0, 1);
    let callback = through_provider(h, &client, &kept, "alice").await;
    let answer = client.get(&callback).send().await.unwrap();
    assert_eq!(
        answer.status(),
        StatusCode::SEE_OTHER,
        "the upstream's answer"
    );
    assert_eq!(location(&answer), "/done");
    assert!(
        set_cookie(&answer, "authgate_session").is_some(),
        "the new session"
    );
    assert_eq!(
        set_cookie(&answer, "app").as_deref(),
        Some("1"),
        "the upstream's cookie"
    );
    assert_eq!(answer.text().await.unwrap(), "saved");
    let sent = posts(log);
    assert_eq!(sent.len(), 1, "sent exactly once");
    let seen = &sent[0];
    assert_eq!(seen.uri, "/app/form?step=2&x=%C3%A9");
    assert_eq!(
        header_of(seen, "content-type").as_deref(),
        Some(content_type)
    );
    assert_eq!(&seen.body[..], body);
    assert!(
        header_of(seen, "authorization")
            .unwrap()
            .starts_with("Bearer ")
    );
    assert_eq!(
        header_of(seen, "x-forwarded-user").as_deref(),
        Some("alice")
    );
    let cookies = header_of(seen, "cookie").unwrap_or_default();
    assert!(!cookies.contains("authgate_session"), "{cookies}");
    assert_eq!(
        h.gateway.preserved().held().0,
        0,
        "single use: nothing left"
    );
    // The session works, and a replayed callback sends nothing again.
    assert_eq!(support::userinfo_status(h, &client).await, StatusCode::OK);
    let replay = client.get(&callback).send().await.unwrap();
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert_eq!(posts(log).len(), 1, "no second POST upstream");
}

#[tokio::test]
async fn an_urlencoded_post_is_sent_once_after_the_login() {
    let (h, log) = gateway("").await;
    kept_and_sent_once(&h, &log, URLENCODED, b"title=Hello&text=caf%C3%A9+%26+more").await;
}

#[tokio::test]
async fn a_multipart_post_is_sent_once_byte_for_byte() {
    let (h, log) = gateway("").await;
    let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.bin\"\r\n\
Content-Type: application/octet-stream\r\n\r\n"
        .to_vec();
    body.extend((0..=255u8).collect::<Vec<_>>());
    body.extend_from_slice(b"\r\n--XyZ--\r\n");
    kept_and_sent_once(&h, &log, "multipart/form-data; boundary=XyZ", &body).await;
}

#[tokio::test]
async fn a_post_after_the_session_expired_is_kept() {
    let (h, log) = gateway(
        r#"[session]
        idle_timeout = "5m""#,
    )
    .await;
    let client = h.client();
    h.login(&client, "alice").await;
    h.advance(std::time::Duration::from_secs(600));
    let kept = post(&h, &client, "/app/form", URLENCODED, "a=1").await;
    assert_eq!(
        set_cookie(&kept, "authgate_session").as_deref(),
        Some(""),
        "the dead session's cookie is cleared"
    );
    let callback = through_provider(&h, &client, &kept, "alice").await;
    let answer = client.get(&callback).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(posts(&log).len(), 1);
    assert_eq!(&posts(&log)[0].body[..], b"a=1");
}

#[tokio::test]
async fn same_origin_by_fetch_metadata_alone_is_kept() {
    let (h, _log) = gateway("").await;
    let client = h.client();
    let response = client
        .post(h.at("/app/form"))
        .header(header::ACCEPT, HTML)
        .header(header::CONTENT_TYPE, URLENCODED)
        .header("sec-fetch-site", "same-origin")
        .body("a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FOUND);
    assert_eq!(h.gateway.preserved().held().0, 1);
}

/// A hostile page auto-submitting a form to the app must not get its post replayed with the
/// victim's fresh session: answered as before (401), nothing kept.
#[tokio::test]
async fn cross_site_posts_are_answered_as_before() {
    let (h, log) = gateway("").await;
    let client = h.client();
    let cases: [&[(&str, &str)]; 5] = [
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
        &[("origin", &h.url), ("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "cross-site")],
        &[],
    ];
    for headers in cases {
        let mut request = client
            .post(h.at("/app/form"))
            .header(header::ACCEPT, HTML)
            .header(header::CONTENT_TYPE, URLENCODED)
            .body("amount=1000&to=mallory");
        for (n, v) in headers {
            request = request.header(*n, *v);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{headers:?}");
        assert!(set_cookie(&response, "authgate_session_login_form").is_none());
    }
    assert_eq!(h.gateway.preserved().held(), (0, 0));
    h.login(&client, "alice").await;
    assert!(posts(&log).is_empty(), "nothing replayed after a login");
}

#[tokio::test]
async fn over_size_bodies_api_routes_and_opted_out_routes_are_answered_as_before() {
    let (h, _log) = gateway(
        r#"[session]
        max_preserved_body = 100"#,
    )
    .await;
    let client = h.client();
    // Announced too large.
    let big = post(&h, &client, "/app/form", URLENCODED, "a".repeat(101)).await;
    assert_eq!(big.status(), StatusCode::UNAUTHORIZED);
    // Chunked, no Content-Length: read up to the limit only.
    let chunks = futures_util::stream::iter(
        (0..3).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'a'; 40]))),
    );
    let streamed = post(
        &h,
        &client,
        "/app/form",
        URLENCODED,
        reqwest::Body::wrap_stream(chunks),
    )
    .await;
    assert_eq!(streamed.status(), StatusCode::UNAUTHORIZED);
    // Exactly at the limit is kept.
    let fits = post(&h, &client, "/app/form", URLENCODED, "a".repeat(100)).await;
    assert_eq!(fits.status(), StatusCode::FOUND);
    assert_eq!(h.gateway.preserved().held().0, 1);
    // An API route and a route that opts out.
    for path in ["/api/form", "/kept-out/form"] {
        let r = post(&h, &client, path, URLENCODED, "a=1").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    // JSON is no form.
    let json = post(&h, &client, "/app/form", "application/json", "{}").await;
    assert_eq!(json.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h.gateway.preserved().held().0, 1);
}

#[tokio::test]
async fn switched_off_globally_posts_are_answered_as_before() {
    let (h, _log) = gateway(
        r#"[session]
        preserve_form_posts = false"#,
    )
    .await;
    let r = post(&h, &h.client(), "/app/form", URLENCODED, "a=1").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h.gateway.preserved().held(), (0, 0));
}

/// Another browser holding the callback URL (not the login cookie) cannot resume the post;
/// the browser that posted still can.
#[tokio::test]
async fn a_foreign_browser_cannot_resume() {
    let (h, log) = gateway("").await;
    let victim = h.client();
    let kept = post(&h, &victim, "/app/form", URLENCODED, "secret=1").await;
    let callback = through_provider(&h, &victim, &kept, "alice").await;
    let stranger = h.client();
    let foreign = stranger.get(&callback).send().await.unwrap();
    assert_eq!(foreign.status(), StatusCode::BAD_REQUEST);
    assert!(posts(&log).is_empty(), "nothing sent for the stranger");
    let own = victim.get(&callback).send().await.unwrap();
    assert_eq!(own.status(), StatusCode::SEE_OTHER);
    assert_eq!(posts(&log).len(), 1);
}

/// Per browser: one post waits for its login to start (a newer one replaces it), and one
/// post per pending login, of which a browser holds at most 4: a post whose login was
/// dropped to make room is dropped too.
#[tokio::test]
async fn per_browser_the_oldest_posts_make_room() {
    let (h, log) = gateway("").await;
    let client = h.client();
    for i in 0..3 {
        post(&h, &client, "/app/form", URLENCODED, format!("waiting={i}")).await;
    }
    assert_eq!(
        h.gateway.preserved().held().0,
        1,
        "one waiting post per browser"
    );
    let mut authorize = Vec::new();
    for i in 0..6 {
        let kept = post(&h, &client, "/app/form", URLENCODED, format!("n={i}")).await;
        authorize.push(start_login(&h, &client, &location(&kept)).await);
        h.advance(std::time::Duration::from_millis(5));
    }
    assert_eq!(
        h.gateway.preserved().held().0,
        4,
        "one per pending login, 4 at most"
    );
    // The newest resumes with its own body.
    h.idp.controls().set_auto_login(Some("alice".into()));
    let back = client.get(authorize.last().unwrap()).send().await.unwrap();
    let answer = client.get(location(&back)).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(posts(&log).len(), 1);
    assert_eq!(&posts(&log)[0].body[..], b"n=5");
}

/// Per client address at most 16 posts, in total (per replica) at most 1024: beyond, posts
/// are answered as before and nothing already kept is evicted.
#[tokio::test]
async fn per_client_and_total_bounds_never_evict_others() {
    let (h, log) = gateway(
        r#"[server]
        trusted_proxies = ["127.0.0.1/32"]"#,
    )
    .await;
    let victim = h.client();
    let first = post(&h, &victim, "/app/form", URLENCODED, "mine=1").await;
    assert_eq!(first.status(), StatusCode::FOUND);
    // One address floods: 15 more fit (16 with the victim's), then 401.
    let flood = |ip: String| {
        let h = &h;
        async move {
            support::bare_client()
                .post(h.at("/app/form"))
                .header(header::ACCEPT, HTML)
                .header(header::CONTENT_TYPE, URLENCODED)
                .header(header::ORIGIN, &h.url)
                .header("x-forwarded-for", ip)
                .body("flood=1")
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let mut same = Vec::new();
    for _ in 0..16 {
        same.push(flood("198.51.100.1".into()).await);
    }
    assert_eq!(
        same.iter().filter(|s| **s == StatusCode::FOUND).count(),
        16,
        "{same:?}"
    );
    assert_eq!(flood("198.51.100.1".into()).await, StatusCode::UNAUTHORIZED);
    // Many addresses fill the total; the victim's post stays.
    let mut refused = 0;
    for i in 0..1100u32 {
        let ip = format!("10.{}.{}.1", i / 16 / 250, (i / 16) % 250);
        if flood(ip).await == StatusCode::UNAUTHORIZED {
            refused += 1;
        }
    }
    let (held, _) = h.gateway.preserved().held();
    assert_eq!(held, 1024);
    assert_eq!(refused, 1100 - (1024 - 17));
    let callback = through_provider(&h, &victim, &first, "alice").await;
    let answer = victim.get(&callback).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(&posts(&log)[0].body[..], b"mine=1");
}

#[tokio::test]
async fn with_redis_the_post_is_kept_sealed_and_sent_once() {
    let redis = RedisServer::start();
    let (h, log) = gateway(&format!(
        r#"[session]
        store = "redis"
        redis_url = "{}"
        redis_key_prefix = "ag:""#,
        redis.url()
    ))
    .await;
    let client = h.client();
    let body = b"note=top+secret+words";
    let kept = post(&h, &client, "/app/form", URLENCODED, body.to_vec()).await;
    let dump = redis.dump().await;
    let forms: Vec<_> = dump
        .iter()
        .filter(|(k, _)| k.starts_with("ag:form:"))
        .collect();
    assert_eq!(
        forms.len(),
        1,
        "{:?}",
        dump.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    let sealed = &forms[0].1;
    assert!(
        !sealed.windows(10).any(|w| w == b"top+secret"),
        "the body is not readable in Redis"
    );
    let callback = through_provider(&h, &client, &kept, "alice").await;
    let answer = client.get(&callback).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER);
    assert_eq!(posts(&log).len(), 1);
    assert_eq!(&posts(&log)[0].body[..], body);
    assert!(
        !redis
            .dump()
            .await
            .iter()
            .any(|(k, _)| k.starts_with("ag:form:")),
        "taken: gone from Redis"
    );
    let replay = client.get(&callback).send().await.unwrap();
    assert_eq!(replay.status(), StatusCode::BAD_REQUEST);
    assert_eq!(posts(&log).len(), 1);
}

/// `authgate_preserved_form_posts`: a kept post raises it, its replay after the login
/// lowers it.
#[tokio::test]
async fn the_kept_posts_gauge_follows_kept_and_replayed_posts() {
    let (h, log) = gateway("").await;
    let gauge = || async { support::metric(&h.metrics().await, "authgate_preserved_form_posts") };
    assert_eq!(gauge().await, Some(0.0));
    let client = h.client();
    let kept = post(&h, &client, "/app/form", URLENCODED, "title=Hello").await;
    assert_eq!(gauge().await, Some(1.0));
    let callback = through_provider(&h, &client, &kept, "alice").await;
    let answer = client.get(&callback).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::SEE_OTHER, "replayed");
    assert_eq!(posts(&log).len(), 1);
    assert_eq!(gauge().await, Some(0.0));
}
