//! Open redirects through the real endpoints: whatever
//! `rd` says, a completed login and a sign-out without a session land on a same-origin path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod support;

use std::time::Duration;

use reqwest::{Client, StatusCode, header};
use support::{Harness, location};

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Values that must all land on `/`. `{public}` is replaced by the gateway's public URL.
const HOSTILE: &[&str] = &[
    "https://evil.example",
    "HTTPS://EVIL.EXAMPLE/",
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/%2F%2Fevil.example",
    "/%2f%2fevil.example",
    "/%5Cevil.example",
    "/%252F%252Fevil.example",
    "%2F%2Fevil.example",
    "\t//evil.example",
    " //evil.example",
    "/\t/evil.example",
    "/%09/evil.example",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "https://app@evil.example",
    "{public}@evil.example",
    "{public}.evil.example/",
    "http://127.0.0.1:1/other-port",
    "https:evil.example",
    "http:/evil.example",
    "/\r\nLocation: https://evil.example",
    "/%0d%0aSet-Cookie:%20x=1",
    "/x\r\nSet-Cookie: x=1",
    "/\u{0}evil.example",
    "/../evil.example",
    "/./\\evil.example",
    "\u{3000}//evil.example",
];

fn hostile(h: &Harness) -> Vec<String> {
    HOSTILE
        .iter()
        .map(|v| v.replace("{public}", &h.url))
        .collect()
}

/// A `Location` the browser resolves on the gateway's own origin.
fn assert_same_origin(h: &Harness, loc: &str, what: &str) {
    assert!(loc.starts_with('/'), "{what:?} -> {loc:?}");
    assert!(!loc.starts_with("//"), "{what:?} -> {loc:?}");
    assert!(!loc.starts_with("/\\"), "{what:?} -> {loc:?}");
    assert!(
        loc.bytes().all(|b| b.is_ascii_graphic()),
        "{what:?} -> {loc:?}: only visible ASCII"
    );
    let base = url::Url::parse(&h.url).unwrap();
    let resolved = base.join(loc).unwrap();
    assert_eq!(resolved.origin(), base.origin(), "{what:?} -> {loc:?}");
}

fn client() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A whole login started at `/oauth2/start?rd=<rd>`; returns where the callback lands.
async fn landing_after_login(h: &Harness, client: &Client, rd: &str) -> String {
    let start = client
        .get(h.at(&format!("/oauth2/start?rd={}", enc(rd))))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::FOUND, "start {rd:?}");
    let back = client.get(location(&start)).send().await.unwrap();
    assert_eq!(back.status(), StatusCode::FOUND, "authorize {rd:?}");
    let done = client.get(location(&back)).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::FOUND, "callback {rd:?}");
    location(&done)
}

async fn landing_after_sign_out(h: &Harness, rd: &str) -> String {
    let r = client()
        .get(h.at(&format!("/oauth2/sign_out?rd={}", enc(rd))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "sign_out {rd:?}");
    location(&r)
}

#[tokio::test]
async fn hostile_rd_never_leaves_the_origin_after_login() {
    let h = Harness::start().await;
    h.idp.controls().set_auto_login(Some("alice".into()));
    let client = client();
    let values = hostile(&h);
    assert!(values.len() >= 15);
    for rd in &values {
        let loc = landing_after_login(&h, &client, rd).await;
        assert_same_origin(&h, &loc, rd);
        assert_eq!(loc, "/", "{rd:?}");
    }
    assert_eq!(h.idp.controls().code_calls(), values.len());
}

#[tokio::test]
async fn hostile_rd_never_leaves_the_origin_after_sign_out() {
    let h = Harness::start().await;
    for rd in &hostile(&h) {
        let loc = landing_after_sign_out(&h, rd).await;
        assert_same_origin(&h, &loc, rd);
        assert_eq!(loc, "/", "{rd:?}");
    }
}

#[tokio::test]
async fn legitimate_rd_lands_where_asked() {
    let h = Harness::start().await;
    h.idp.controls().set_auto_login(Some("alice".into()));
    let client = client();
    let cases = [
        ("/a/b?c=d".to_owned(), "/a/b?c=d"),
        (h.at("/a/b?c=d"), "/a/b?c=d"),
        ("/a/b?c=d#fragment".to_owned(), "/a/b?c=d"),
        ("/".to_owned(), "/"),
        ("/caf%C3%A9?q=%2F".to_owned(), "/caf%C3%A9?q=%2F"),
    ];
    for (rd, expected) in &cases {
        assert_eq!(
            landing_after_login(&h, &client, rd).await,
            *expected,
            "login {rd:?}"
        );
        assert_eq!(
            landing_after_sign_out(&h, rd).await,
            *expected,
            "sign_out {rd:?}"
        );
    }
    // Without rd: the root.
    let r = client.get(h.at("/oauth2/start")).send().await.unwrap();
    let back = client.get(location(&r)).send().await.unwrap();
    let done = client.get(location(&back)).send().await.unwrap();
    assert_eq!(location(&done), "/");
}

#[tokio::test]
async fn navigation_to_a_scheme_relative_looking_path_lands_on_the_origin() {
    let h = Harness::start().await;
    h.idp.controls().set_auto_login(Some("alice".into()));
    let client = client();
    // The request path itself is `//evil.example/x`: the landing URL derived from it must
    // not become a scheme-relative redirect.
    let r = client
        .get(h.at("//evil.example/x?y=1"))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let to_start = location(&r);
    assert!(to_start.starts_with(&h.at("/oauth2/start?")), "{to_start}");
    let start = client.get(&to_start).send().await.unwrap();
    let back = client.get(location(&start)).send().await.unwrap();
    let done = client.get(location(&back)).send().await.unwrap();
    assert_eq!(done.status(), StatusCode::FOUND);
    let loc = location(&done);
    assert_same_origin(&h, &loc, "//evil.example/x?y=1");
}
