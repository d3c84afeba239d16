//! Path normalization through the real gateway, with raw HTTP/1.1
//! requests written byte for byte on a TCP stream: HTTP clients (reqwest's `url`) resolve dot
//! segments themselves, which would hide exactly what is under test.
//!
//! Against a `deny` route `/admin`, a `public` route `/public/`, and the `authenticated`
//! fallback: every trick reaches the route the normalized path names, and the upstream receives
//! exactly that normalized path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::Value;
use support::Harness;
use support::raw::get as raw_get;

const ROUTES: &str = r#"
[[route]]
path = "/admin"
policy = "deny"

[[route]]
path = "/secret"
match = "exact"
policy = "deny"

[[route]]
path = "/public/"
policy = "public"
"#;

/// A harness, and the `Cookie` header of a logged-in session.
async fn start() -> (Harness, String) {
    let h = Harness::builder().config(ROUTES).start().await;
    let client = h.client();
    let session = h.login(&client, "alice").await;
    (h, format!("authgate_session={session}"))
}

#[tokio::test]
async fn dot_segments_and_encodings_cannot_escape_a_deny_route() {
    let (h, cookie) = start().await;
    let with_session = [("Cookie", cookie.as_str())];
    for target in [
        "/admin",
        "/admin/x",
        "/public/../admin",
        "/public/../admin/users",
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/public/%2e./admin",
        "/public/./../admin",
        "/public//../admin",
        "/../admin",
        "/%2e%2e/admin",
        "//admin",
        "///admin/x",
        "/./admin",
        "/%61dmin",
        "/%61%64%6D%69%6E",
        "/%70ublic/%2E%2E/%61dmin/",
        "/admin#frag",
        "/admin?x=1",
        "/secret",
        "/public/../secret",
        "/%73ecret",
    ] {
        for extra in [&with_session[..], &[]] {
            let r = raw_get(h.addr, target.as_bytes(), extra).await;
            assert_eq!(
                r.status,
                403,
                "{target} (session: {}) must be denied: {}",
                !extra.is_empty(),
                r.body
            );
        }
    }
}

#[tokio::test]
async fn path_parameters_cannot_escape_a_deny_route() {
    // Tomcat, Jetty and Spring strip `;params` from each segment before routing, so for such
    // an upstream `/admin;x=1` IS `/admin`.
    let (h, cookie) = start().await;
    let with_session = [("Cookie", cookie.as_str())];
    for target in [
        "/admin;x=1",
        "/admin;",
        "/admin;jsessionid=abc/users",
        "/admin/;x/users",
        "/secret;a=b",
        "/public/..;x=1/../admin",
    ] {
        let r = raw_get(h.addr, target.as_bytes(), &with_session).await;
        assert!(
            r.status == 403 || r.status == 400,
            "{target} must be refused (403 or 400), got {}: {}",
            r.status,
            r.body
        );
    }
    // `;` inside a segment name that is not a parameter of a denied path stays ordinary.
    let r = raw_get(h.addr, b"/adminx;y", &with_session).await;
    assert_eq!(r.upstream_path(), "/adminx;y");
    let r = raw_get(h.addr, b"/a;b/c", &with_session).await;
    assert_eq!(r.upstream_path(), "/a;b/c");
    // And a parameter never widens a public route: `/public;x/a` is not under `/public/`
    // for an upstream that keeps `;`, so it needs a session.
    let r = raw_get(h.addr, b"/public;x/a", &[]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = raw_get(h.addr, b"/public/a;x", &[]).await;
    assert_eq!(r.upstream_path(), "/public/a;x");
}

#[tokio::test]
async fn unsafe_paths_are_answered_400() {
    let (h, cookie) = start().await;
    let with_session = [("Cookie", cookie.as_str())];
    for target in [
        &b"/public/..;/admin"[..],
        b"/public/..;jsessionid=1/admin",
        b"/public/.;/admin",
        b"/public/..%3b/admin",
        b"/public/%2e%2e;/admin",
        b"/a%2fb",
        b"/a%2Fb",
        b"/public/..%2fadmin",
        b"/public/%2F..%2Fadmin",
        b"/a%5cb",
        b"/a%5Cb",
        b"/public/..%5cadmin",
        b"/a%00",
        b"/a%00b",
        b"/a%zz",
        b"/a%",
    ] {
        for extra in [&with_session[..], &[]] {
            let r = raw_get(h.addr, target, extra).await;
            assert_eq!(
                r.status,
                400,
                "{} must be refused: {}",
                String::from_utf8_lossy(target),
                r.body
            );
            assert!(r.body.len() < 200);
        }
    }
    // A raw backslash never reaches the upstream either (hyper or the gateway refuses it).
    let r = raw_get(h.addr, b"/public\\..\\admin", &with_session).await;
    assert_eq!(r.status, 400, "{}", r.body);
}

#[tokio::test]
async fn the_upstream_receives_exactly_the_normalized_path() {
    let (h, cookie) = start().await;
    let with_session = [("Cookie", cookie.as_str())];
    for (target, expected) in [
        ("/plain", "/plain"),
        ("/public/../private", "/private"),
        ("/public/x/../y", "/public/y"),
        ("/public/%2e%2e/private/", "/private/"),
        ("/a/./b", "/a/b"),
        ("/a/b/..", "/a/"),
        ("//x//y", "/x/y"),
        ("/%7Euser/%41%5a", "/~user/AZ"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%20b", "/a%20b"),
        ("/a%3fb", "/a%3Fb"),
        ("/%252e%252e/admin", "/%252e%252e/admin"),
        ("/x/y#frag", "/x/y"),
        ("/../../etc/passwd", "/etc/passwd"),
    ] {
        let r = raw_get(h.addr, target.as_bytes(), &with_session).await;
        assert_eq!(r.upstream_path(), expected, "{target}");
    }
    // The query is kept as sent, not normalized.
    let r = raw_get(h.addr, b"/public/../q?a=%2e%2e/../b&c", &with_session).await;
    let echo = r.echo();
    assert_eq!(echo["path"], "/q");
    assert_eq!(echo["query"], "a=%2e%2e/../b&c");
}

#[tokio::test]
async fn matching_is_case_sensitive_and_on_the_normalized_path() {
    let (h, cookie) = start().await;
    let with_session = [("Cookie", cookie.as_str())];
    // `/ADMIN` is another path: not denied (upstream paths are case-sensitive).
    let r = raw_get(h.addr, b"/ADMIN", &with_session).await;
    assert_eq!(r.upstream_path(), "/ADMIN");
    let r = raw_get(h.addr, b"/Admin/x", &with_session).await;
    assert_eq!(r.upstream_path(), "/Admin/x");

    // Leaving the public route by traversal needs a session: the fallback applies.
    let r = raw_get(h.addr, b"/public/../private", &[]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = raw_get(h.addr, b"/public/%2e%2e/private", &[]).await;
    assert_eq!(r.status, 401, "{}", r.body);
    // Entering it by encoding or traversal does not need one, and the upstream sees the
    // normalized path.
    let r = raw_get(h.addr, b"/%70ublic/a", &[]).await;
    assert_eq!(r.upstream_path(), "/public/a");
    let r = raw_get(h.addr, b"/private/../public/b", &[]).await;
    assert_eq!(r.upstream_path(), "/public/b");
    let r = raw_get(h.addr, b"//public//c", &[]).await;
    assert_eq!(r.upstream_path(), "/public/c");
    let echo = raw_get(h.addr, b"/public/d", &[]).await.echo();
    assert!(echo["headers"].get("authorization").is_none());
    // The 401's login URL lands back on the normalized path.
    let r = raw_get(h.addr, b"/x/%2e%2e/landing?q=1", &[]).await;
    assert_eq!(r.status, 401);
    let body: Value = serde_json::from_str(&r.body).unwrap();
    let login_url = body["login_url"].as_str().unwrap();
    assert!(
        login_url.ends_with("/oauth2/start?rd=%2Flanding%3Fq%3D1"),
        "{login_url}"
    );
    assert!(r.headers.iter().all(|(k, _)| k != "location"));
}

#[tokio::test]
async fn built_in_endpoints_are_recognized_on_the_normalized_path() {
    let (h, cookie) = start().await;
    // Encoded spellings of the gateway's own endpoints are the gateway's, never proxied.
    let health = raw_get(h.addr, b"/%68ealthz", &[]).await;
    assert_eq!((health.status, health.body.trim()), (200, "ok"));
    let userinfo = raw_get(h.addr, b"/%6fauth2/userinfo", &[("Cookie", &cookie)]).await;
    assert_eq!(userinfo.status, 200, "{}", userinfo.body);
    let info: Value = serde_json::from_str(&userinfo.body).unwrap();
    assert_eq!(info["sub"], "alice");
    assert!(
        info.get("headers").is_none(),
        "answered by the gateway, not the echo upstream"
    );
    let reserved = raw_get(h.addr, b"/oauth2/../oauth2/nope", &[]).await;
    assert_eq!(reserved.status, 404);
}
