//! The front door for several apps, through real sockets: named upstreams (`[upstreams.NAME]`,
//! route `upstream`), `strip_prefix`, host routing (route `host`, exact and `*.`), route
//! `name` as the metrics label, hostile `Host` headers, and the configuration errors of each
//! key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::atomic::Ordering;

use figment::Figment;
use figment::providers::{Format, Toml};
use reqwest::{StatusCode, header};
use support::{Echo, Harness, echo_upstream, metric, raw};

/// Two upstreams and two host names: `billing.example.test` (any path) and `/billing/` (on
/// any host, prefix stripped) go to `billing`; `*.wiki.example.test` is denied; the rest is
/// public on the default upstream.
fn routes(billing: std::net::SocketAddr) -> String {
    format!(
        r#"
        [upstreams.billing]
        url = "http://{billing}"
        timeout = "5s"
        max_connections = 4

        [[route]]
        name = "billing-host"
        host = "Billing.Example.TEST"
        path = "/"
        policy = "public"
        upstream = "billing"

        [[route]]
        path = "/billing/"
        policy = "public"
        upstream = "billing"
        strip_prefix = true

        [[route]]
        host = "*.wiki.example.test"
        path = "/"
        policy = "deny"

        [[route]]
        path = "/"
        policy = "public"
        "#
    )
}

/// GET `path` with this `Host`; the status and, on 200, what the upstream saw.
async fn get(h: &Harness, host: &str, path: &str) -> (StatusCode, Option<Echo>) {
    let response = support::bare_client()
        .get(h.at(path))
        .header(header::HOST, host)
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    let echo = (status == StatusCode::OK).then(|| Echo(serde_json::from_str(&body).unwrap()));
    (status, echo)
}

#[tokio::test]
async fn routes_pick_their_upstream_by_host_and_path() {
    let (billing, billing_hits, _task) = echo_upstream().await;
    let h = Harness::builder().config(&routes(billing)).start().await;
    let hits = || billing_hits.load(Ordering::SeqCst);

    // Host routing: case-insensitive, port ignored, the path kept.
    for host in [
        "billing.example.test",
        "BILLING.example.Test:4180",
        "billing.example.test.",
    ] {
        let before = (hits(), h.upstream_hits());
        let (status, echo) = get(&h, host, "/invoices/7?x=1").await;
        assert_eq!(status, StatusCode::OK, "{host}");
        assert_eq!(echo.unwrap().path(), "/invoices/7", "{host}");
        assert_eq!(
            (hits(), h.upstream_hits()),
            (before.0 + 1, before.1),
            "{host}"
        );
    }
    // Not that host: the default upstream.
    for host in [
        "billing.example.test.evil",
        "xbilling.example.test",
        "a.billing.example.test",
        "127.0.0.1",
    ] {
        let before = (hits(), h.upstream_hits());
        let (status, _) = get(&h, host, "/invoices/7").await;
        assert_eq!(status, StatusCode::OK, "{host}");
        assert_eq!(
            (hits(), h.upstream_hits()),
            (before.0, before.1 + 1),
            "{host}"
        );
    }

    // strip_prefix: `/billing/x` reaches the billing upstream as `/x`, the query kept.
    let before = hits();
    let (_, echo) = get(&h, "127.0.0.1", "/billing/a/b?q=1").await;
    let echo = echo.unwrap();
    assert_eq!(
        (echo.path(), echo.0["query"].as_str()),
        ("/a/b".into(), Some("q=1"))
    );
    let (_, echo) = get(&h, "127.0.0.1", "/billing/").await;
    assert_eq!(echo.unwrap().path(), "/");
    assert_eq!(hits(), before + 2);
    // `/billing` itself is not under the `/billing/` prefix: default upstream, path kept.
    let (_, echo) = get(&h, "127.0.0.1", "/billing").await;
    assert_eq!(echo.unwrap().path(), "/billing");
    assert_eq!(hits(), before + 2);

    // Wildcard hosts: any subdomain, on a label boundary, never the parent.
    for (host, expected) in [
        ("a.wiki.example.test", StatusCode::FORBIDDEN),
        ("A.B.Wiki.Example.Test:8080", StatusCode::FORBIDDEN),
        ("wiki.example.test", StatusCode::OK),
        ("badwiki.example.test", StatusCode::OK),
    ] {
        assert_eq!(get(&h, host, "/page").await.0, expected, "{host}");
    }

    // Metrics: series labelled by route name and by upstream name.
    let text = h.metrics().await;
    assert_eq!(
        metric(
            &text,
            r#"authgate_requests_total{route="billing-host",status="200"}"#
        ),
        Some(3.0),
        "{text}"
    );
    assert!(
        metric(
            &text,
            r#"authgate_requests_total{route="/billing/",status="200"}"#
        )
        .is_some()
    );
    assert!(
        metric(
            &text,
            r#"authgate_decisions_total{route="*.wiki.example.test/",decision="denied"}"#
        )
        .is_some(),
        "{text}"
    );
    for upstream in ["default", "billing"] {
        let series =
            format!("authgate_upstream_connections_opened_total{{upstream=\"{upstream}\"}}");
        assert!(metric(&text, &series).unwrap() >= 1.0, "{series}");
        // The latency of each upstream is its own series too.
        let series = format!("authgate_upstream_duration_seconds_count{{upstream=\"{upstream}\"}}");
        assert!(metric(&text, &series).unwrap() >= 1.0, "{series}");
    }
}

/// A `Host` that cannot be read is refused (400) when routes name hosts, never routed as if
/// it were another host.
#[tokio::test]
async fn hostile_host_headers_are_refused() {
    let (billing, billing_hits, _task) = echo_upstream().await;
    let h = Harness::builder().config(&routes(billing)).start().await;
    let send = |host: &'static [u8]| {
        let mut request = b"GET /invoices HTTP/1.1\r\nHost: ".to_vec();
        request.extend_from_slice(host);
        request.extend_from_slice(b"\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
        let addr = h.addr;
        async move { raw::send(addr, &request).await.status }
    };
    for host in [
        &b"billing.example.test@evil.test"[..],
        b"billing.example.test:80:80",
        b"billing.example.test:",
        b"billing.example.test/x",
        b"billing%2eexample.test",
        b"billing..example.test",
        b"a.wiki.example.test\\",
        b"[::1",
        b"bill ing.example.test",
    ] {
        assert_eq!(send(host).await, 400, "{}", String::from_utf8_lossy(host));
    }
    // Two Host headers: refused too.
    let two = raw::get(h.addr, b"/invoices", &[("Host", "billing.example.test")]).await;
    assert_eq!(two.status, 400);
    // An absolute-form target names a host: a `Host` header naming another is refused (the
    // upstream would get that `Host`, so the request must not be routed by the target).
    let confused = raw::send(
        h.addr,
        &raw::request(b"GET", b"http://billing.example.test/abs", &[]),
    )
    .await;
    assert_eq!(confused.status, 400);
    let agreed = b"GET http://billing.example.test/abs HTTP/1.1\r\nHost: Billing.example.test:80\r\nAccept: application/json\r\nConnection: close\r\n\r\n";
    assert_eq!(raw::send(h.addr, agreed).await.upstream_path(), "/abs");
    assert_eq!(billing_hits.load(Ordering::SeqCst), 1);
    assert_eq!(h.upstream_hits(), 0);
}

/// Without a route naming a host, the host is not judged (as before this feature).
#[tokio::test]
async fn hosts_are_not_judged_without_host_routes() {
    let h = Harness::start().await;
    let request = b"GET /x HTTP/1.1\r\nHost: odd..host\r\nConnection: close\r\n\r\n";
    let answer = raw::send(h.addr, request).await;
    // Authenticated by default: 401, not 400.
    assert_eq!(answer.status, 401, "{}", answer.body);
}

// === configuration errors ===

const BASE: &str = r#"
    [server]
    public_url = "https://app.example.com"
    [upstream]
    url = "http://127.0.0.1:8080"
    [oidc]
    issuer = "https://idp.example.com"
    client_id = "gw"
    [session]
    cookie_secrets = ["AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="]
    [upstreams.billing]
    url = "http://127.0.0.1:8081"
"#;

fn load(extra: &str) -> Result<authgate::config::Config, authgate::config::ConfigErrors> {
    let figment = Figment::from(Toml::string(BASE)).merge(Toml::string(extra));
    authgate::config::Config::from_figment(figment)
}

fn error_of(extra: &str, key: &str) -> String {
    let errors = load(extra).expect_err("must be refused");
    match errors.find(key) {
        Some(e) => e.to_string(),
        None => panic!("no error for {key} in:\n{errors}"),
    }
}

#[test]
fn configuration_errors_name_the_route() {
    let typo = error_of(
        r#"
        [[route]]
        path = "/a/"
        [[route]]
        path = "/billing/"
        upstream = "biling"
        "#,
        "route[1].upstream",
    );
    assert_eq!(
        typo,
        r#"route[1].upstream: "biling" is not an [upstreams.NAME] (known: billing)"#
    );
    let host = error_of(
        r#"
        [[route]]
        path = "/"
        host = "*example.com"
        "#,
        "route[0].host",
    );
    assert_eq!(
        host,
        r#"route[0].host: "*example.com": a wildcard must be the whole first label, as in "*.example.com""#
    );
    let strip = error_of(
        r#"
        [[route]]
        path = "/r/[0-9]+"
        match = "regex"
        strip_prefix = true
        "#,
        "route[0].strip_prefix",
    );
    assert_eq!(
        strip,
        r#"route[0].strip_prefix: applies to prefix routes only (this route has match = "regex")"#
    );
    let exact = error_of(
        r#"
        [[route]]
        path = "/x"
        match = "exact"
        strip_prefix = true
        "#,
        "route[0].strip_prefix",
    );
    assert!(exact.contains("\"exact\""), "{exact}");
    for (extra, key, needle) in [
        (
            "[[route]]\npath = \"/a\"\nname = \"api\"\n[[route]]\npath = \"/b\"\nname = \"api\"",
            "route[1].name",
            "already the name of route[0]",
        ),
        (
            "[[route]]\npath = \"/a\"\nname = \"default\"",
            "route[0].name",
            "reserved",
        ),
        (
            "[[route]]\npath = \"/a\"\nname = \"a\\\"b\"",
            "route[0].name",
            "visible ASCII",
        ),
        (
            "[[route]]\npath = \"/a\"\nhost = \"app.example.com:443\"",
            "route[0].host",
            "without a port",
        ),
        (
            "[[route]]\npath = \"/a\"\nhost = \"exämple.com\"",
            "route[0].host",
            "not a host name",
        ),
        (
            "[[route]]\npath = \"/a\"\nupstream = \"billing\"\n[upstreams.\"bad name\"]\nurl = \"http://x\"",
            "upstreams.bad name",
            "not an upstream name",
        ),
        (
            "[upstreams.default]\nurl = \"http://x\"",
            "upstreams.default",
            "choose another",
        ),
        (
            "[upstreams.wiki]\ntimeout = \"5s\"",
            "upstreams.wiki.url",
            "required",
        ),
        (
            "[upstreams.wiki]\nurl = \"http://x\"\ntimeot = \"5s\"",
            "upstreams.wiki.timeot",
            "unknown field",
        ),
        (
            "[server]\nallowed_redirect_hosts = [\"*.example.com\"]",
            "server.allowed_redirect_hosts[0]",
            "not a host name",
        ),
        (
            "[server]\nallowed_redirect_hosts = [\"https://b.example.com\"]",
            "server.allowed_redirect_hosts[0]",
            "not a host name",
        ),
        (
            "[[route]]\npath = \"/a\"\nrequire_email_domains = [\"bücher.example\"]",
            "route[0].require_email_domains[0]",
            "xn--",
        ),
        (
            "[[route]]\npath = \"/a\"\nrequire_email_domains = [\"@example.com\"]",
            "route[0].require_email_domains[0]",
            "not a domain",
        ),
        (
            "[[route]]\npath = \"/a\"\nrequire_emails = [\"a@b@example.com\"]",
            "route[0].require_emails[0]",
            "not an email address",
        ),
    ] {
        let message = error_of(extra, key);
        assert!(message.contains(needle), "{key}: {message}");
    }
}

#[test]
fn route_names_default_to_host_and_path_and_stay_unique() {
    let config = load(
        r#"
        [server]
        allowed_redirect_hosts = ["B.example.com", ".Corp.example"]
        [[route]]
        path = "/a/"
        [[route]]
        path = "/a/"
        policy = "deny"
        [[route]]
        path = "/"
        host = "*.Example.com"
        [[route]]
        path = "/r/[0-9]+"
        match = "regex"
        [[route]]
        path = "/b/"
        name = "b-api"
        upstream = "billing"
        strip_prefix = true
        "#,
    )
    .unwrap();
    let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["/a/", "/a/#1", "*.example.com/", "/r/[0-9]+", "b-api"]
    );
    assert_eq!(
        config.server.allowed_redirect_hosts,
        ["b.example.com", ".corp.example"]
    );
    // `authgate check` prints the new keys.
    let printed = config.redacted_toml();
    for needle in [
        "[upstreams.billing]",
        "host = \"*.example.com\"",
        "upstream = \"billing\"",
        "strip_prefix = true",
        "name = \"b-api\"",
    ] {
        assert!(printed.contains(needle), "{needle} in:\n{printed}");
    }
}

/// A named upstream can be set (or completed) from the environment like any section:
/// `AUTHGATE_UPSTREAMS__<NAME>__<KEY>`.
#[test]
fn named_upstreams_take_environment_overrides() {
    let env = authgate::config::EnvOverrides::from_vars([
        ("AUTHGATE_UPSTREAMS__WIKI__URL", "http://wiki:3000"),
        ("AUTHGATE_UPSTREAMS__BILLING__MAX_CONNECTIONS", "8"),
    ]);
    let figment = Figment::from(Toml::string(BASE))
        .merge(Toml::string(
            "[[route]]\npath = \"/w/\"\nupstream = \"wiki\"",
        ))
        .merge(env);
    let config = authgate::config::Config::from_figment(figment).unwrap();
    let names: Vec<&str> = config.upstreams.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["billing", "wiki"]);
    assert_eq!(config.upstreams[0].1.max_connections, 8);
    assert_eq!(config.upstreams[1].1.url.as_str(), "http://wiki:3000/");
}
