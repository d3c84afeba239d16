//! The trust boundary, attacked as a client would: nothing
//! a client sends changes the decision or the identity the app sees. One table per class:
//! forwarded-header trust (forward auth), header aliases, `Connection` tricks, method case,
//! cookie bytes, CORS preflights. Each case names the attack, the status it must get and how
//! many requests the upstream must see (0 where refused). Requests are written byte for byte
//! on a TCP stream (`support::raw`): raw bytes, lowercase methods and `Connection` lists are
//! exactly what HTTP clients refuse or rewrite.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use support::Harness;
use support::raw::{self, Raw};

const ROUTES: &str = r#"
[server]
strip_request_headers = ["X-App-Secret"]

[[route]]
path = "/"
match = "exact"
policy = "public"

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

[[route]]
path = "/ops"
require_groups = ["ops"]

[[route]]
path = "/docs"
methods = ["GET"]
policy = "public"

[[route]]
path = "/docs"
methods = ["POST", "DELETE"]
require_groups = ["writers"]

[[route]]
path = "/files"
methods = ["DELETE", "PUT"]
policy = "deny"

[[route]]
path = "/files"
policy = "public"

[[route]]
path = "/cors/"
preflight = "forward"

[[route]]
path = "/cors-ops/"
preflight = "forward"
require_groups = ["ops"]
"#;

/// Stands for the logged-in session's cookie value in a header value.
const SESSION: &[u8] = b"@S";

/// The gateway with [`ROUTES`], 127.0.0.1 trusted or not, and alice (groups `dev`) logged
/// in: the harness and her session cookie's value.
async fn start(trusted: bool) -> (Harness, String) {
    let mut builder = Harness::builder().config(ROUTES);
    if trusted {
        builder = builder.config("[server]\ntrusted_proxies = [\"127.0.0.1/32\"]");
    }
    let h = builder.start().await;
    h.idp
        .controls()
        .set_user_claims("alice", json!({"groups": ["dev"]}));
    let session = h.login(&h.client(), "alice").await;
    (h, session)
}

struct Case {
    attack: &'static str,
    method: &'static [u8],
    target: &'static [u8],
    /// Header lines; [`SESSION`] in a value is replaced by the session cookie's value.
    headers: &'static [(&'static [u8], &'static [u8])],
    /// Send alice's session cookie (a `Cookie` line of its own).
    session: bool,
    status: u16,
    /// Requests the upstream receives.
    hits: usize,
}

/// Send every case, then assert each one's status and the upstream's hit count (every
/// mismatch is listed, not just the first); returns the answers.
async fn run(h: &Harness, session: &str, cases: &[Case]) -> Vec<Raw> {
    let mut answers = Vec::new();
    let mut wrong = Vec::new();
    for case in cases {
        let with_session = |v: &[u8]| replace(v, SESSION, session.as_bytes());
        let mut lines: Vec<(Vec<u8>, Vec<u8>)> = (case.headers.iter())
            .map(|(k, v)| (k.to_vec(), with_session(v)))
            .collect();
        if case.session {
            let cookie = format!("authgate_session={session}").into_bytes();
            lines.push((b"Cookie".to_vec(), cookie));
        }
        let lines: Vec<(&[u8], &[u8])> = (lines.iter())
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        let before = h.upstream_hits();
        let answer = raw::send(h.addr, &raw::request(case.method, case.target, &lines)).await;
        let hits = h.upstream_hits() - before;
        if (answer.status, hits) != (case.status, case.hits) {
            wrong.push(format!(
                "{}: status {} (want {}), upstream hits {hits} (want {}): {}",
                case.attack,
                answer.status,
                case.status,
                case.hits,
                answer.body.trim()
            ));
        }
        answers.push(answer);
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    answers
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = haystack;
    while let Some(i) = rest.windows(needle.len()).position(|w| w == needle) {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(with);
        rest = &rest[i + needle.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Every header name the upstream received, as sent by the gateway.
fn upstream_header_names(echo: &Value) -> Vec<String> {
    echo["headers"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

fn upstream_header(echo: &Value, name: &str) -> Option<String> {
    echo["headers"][name][0].as_str().map(str::to_owned)
}

/// A header name folded as CGI-style servers do: lowercase, punctuation as `-`.
fn folded(name: &str) -> String {
    (name.bytes())
        .map(|b| match b {
            b'a'..=b'z' | b'0'..=b'9' => b as char,
            b'A'..=b'Z' => b.to_ascii_lowercase() as char,
            _ => '-',
        })
        .collect()
}

// === forwarded-header trust (forward auth) ===

const AUTH: &[u8] = b"/oauth2/auth";
const FM: &[u8] = b"X-Forwarded-Method";
const FU: &[u8] = b"X-Forwarded-Uri";
const OU: &[u8] = b"X-Original-URI";

/// Forward-auth cases from a trusted proxy. `/` is public, as many sites have it: a check
/// that fell back to judging `GET /` let everything through.
#[rustfmt::skip]
const TRUSTED_FORWARD_AUTH: &[Case] = &[
    Case { attack: "plain check on an authenticated path", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/app")], session: true, status: 202, hits: 0 },
    Case { attack: "no X-Forwarded-Method (was judged GET)", method: b"GET", target: AUTH, headers: &[(FU, b"/app")], session: true, status: 400, hits: 0 },
    Case { attack: "no forwarded URI at all (was judged `/`, public)", method: b"GET", target: AUTH, headers: &[(FM, b"GET")], session: false, status: 400, hits: 0 },
    Case { attack: "empty method", method: b"GET", target: AUTH, headers: &[(FM, b""), (FU, b"/app")], session: true, status: 400, hits: 0 },
    Case { attack: "method that is no token", method: b"GET", target: AUTH, headers: &[(FM, b"G T"), (FU, b"/app")], session: true, status: 400, hits: 0 },
    Case { attack: "two methods", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FM, b"POST"), (FU, b"/items/1")], session: true, status: 400, hits: 0 },
    Case { attack: "URI that is not a path", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"admin")], session: true, status: 400, hits: 0 },
    Case { attack: "absolute URI", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"http://evil.example/admin")], session: true, status: 400, hits: 0 },
    Case { attack: "asterisk", method: b"GET", target: AUTH, headers: &[(FM, b"OPTIONS"), (FU, b"*")], session: false, status: 400, hits: 0 },
    Case { attack: "fragment hiding a dot segment", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/public/#/../admin")], session: true, status: 400, hits: 0 },
    Case { attack: "two URIs", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/public/x"), (FU, b"/admin")], session: true, status: 400, hits: 0 },
    Case { attack: "quote in the query of a denied path", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/admin/x?q=\"")], session: true, status: 403, hits: 0 },
    Case { attack: "raw UTF-8 in a denied path", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/admin/\xc3\xa9")], session: true, status: 403, hits: 0 },
    Case { attack: "raw Latin-1 byte in a denied path", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/admin/\xe9")], session: false, status: 403, hits: 0 },
    Case { attack: "space in a denied path", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/admin/a b")], session: true, status: 403, hits: 0 },
    Case { attack: "raw bytes on a group-restricted path", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/ops/\xc3\xa9")], session: true, status: 403, hits: 0 },
    Case { attack: "quote on an authenticated path, anonymous", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/app?q=\"")], session: false, status: 401, hits: 0 },
    Case { attack: "braces on an authenticated path, anonymous", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/app/{x}")], session: false, status: 401, hits: 0 },
    Case { attack: "raw bytes on a public path", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/public/\xc3\xa9")], session: false, status: 202, hits: 0 },
    Case { attack: "raw backslash", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/public/..\\admin")], session: true, status: 400, hits: 0 },
    Case { attack: "encoded slash", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/public%2F..%2Fadmin")], session: true, status: 400, hits: 0 },
    Case { attack: "encoded dot segments", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/public/%2e%2e/admin")], session: true, status: 403, hits: 0 },
    Case { attack: "lowercase post on a POST deny route", method: b"GET", target: AUTH, headers: &[(FM, b"post"), (FU, b"/items/1")], session: true, status: 403, hits: 0 },
    Case { attack: "mixed-case Post on a POST deny route", method: b"GET", target: AUTH, headers: &[(FM, b"Post"), (FU, b"/items/1")], session: true, status: 403, hits: 0 },
    Case { attack: "X-Original-URI with raw bytes", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (OU, b"/admin/\xc3\xa9")], session: true, status: 403, hits: 0 },
    Case { attack: "X-Original-URI cannot override X-Forwarded-Uri", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/admin"), (OU, b"/public/x")], session: true, status: 403, hits: 0 },
];

#[tokio::test]
async fn forward_auth_from_a_trusted_proxy_fails_closed() {
    let (h, session) = start(true).await;
    let answers = run(&h, &session, TRUSTED_FORWARD_AUTH).await;
    // The 202 of a trusted proxy carries the token.
    assert!(
        answers[0]
            .header("authorization")
            .unwrap()
            .starts_with("Bearer ")
    );
}

/// From an untrusted peer the forwarded headers are ignored, and the question is not "GET /"
/// (public here) either: it is "is there a valid session".
#[rustfmt::skip]
const UNTRUSTED_FORWARD_AUTH: &[Case] = &[
    Case { attack: "anonymous, no original request (was judged `/`, public)", method: b"GET", target: AUTH, headers: &[], session: false, status: 401, hits: 0 },
    Case { attack: "anonymous claiming a public URI", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/public/x")], session: false, status: 401, hits: 0 },
    Case { attack: "anonymous claiming `/` by X-Original-URI", method: b"GET", target: AUTH, headers: &[(OU, b"/")], session: false, status: 401, hits: 0 },
    Case { attack: "anonymous with hostile bytes", method: b"GET", target: AUTH, headers: &[(FU, b"/admin/\xc3\xa9?\"")], session: false, status: 401, hits: 0 },
    Case { attack: "a session claiming a denied URI is just a valid session", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/admin")], session: true, status: 202, hits: 0 },
    Case { attack: "a session claiming a group route is just a valid session", method: b"GET", target: AUTH, headers: &[(FM, b"GET"), (FU, b"/ops")], session: true, status: 202, hits: 0 },
];

#[tokio::test]
async fn forward_auth_from_an_untrusted_peer_is_a_plain_session_check() {
    let (h, session) = start(false).await;
    let answers = run(&h, &session, UNTRUSTED_FORWARD_AUTH).await;
    for answer in answers.iter().filter(|a| a.status == 202) {
        assert_eq!(answer.header("x-forwarded-user"), Some("alice"));
        assert_eq!(answer.header("authorization"), None, "never the token");
    }
    for answer in answers.iter().filter(|a| a.status == 401) {
        let body: Value = serde_json::from_str(&answer.body).unwrap();
        assert!(body["login_url"].as_str().unwrap().ends_with("?rd=%2F"));
    }
}

// === header aliases ===

/// Headers a legacy framework believes, in the spellings CGI-style servers fold together.
const ALIASES: &[(&str, &str)] = &[
    ("X-Original-URL", "IIS/Symfony route override"),
    ("X-Rewrite-URL", "Zend/Symfony route override"),
    ("X-Original-URI", "nginx original URI"),
    ("x.ORIGINAL_url", "route override, dotted and mixed case"),
    ("X-Forwarded-Prefix", "base path override"),
    ("X-Forwarded-Port", "port override"),
    ("X-Forwarded-Uri", "forward-auth URI"),
    ("X-Forwarded-Method", "forward-auth method"),
    ("X-Forwarded-Server", "any other X-Forwarded-*"),
    ("X_Forwarded_For", "client address, underscore alias"),
    ("X.Forwarded.Host", "host, dotted alias"),
    ("x_forwarded_proto", "scheme, underscore alias"),
    ("Forwarded", "RFC 7239"),
    ("X-Real-IP", "client address"),
    ("X_Real_IP", "client address, underscore alias"),
    ("True-Client-IP", "CDN client address"),
    ("X-Client-IP", "client address"),
    ("X-Cluster-Client-IP", "client address"),
    ("X-HTTP-Method-Override", "Rails/Express method override"),
    (
        "X_HTTP_Method_Override",
        "method override, underscore alias",
    ),
    ("X-HTTP-Method", "method override"),
    ("X-Method-Override", "method override"),
    ("X-App-Secret", "server.strip_request_headers"),
    ("x.app_SECRET", "server.strip_request_headers, any spelling"),
    ("X.Forwarded.User", "identity header, dotted alias"),
    ("X~Forwarded~Email", "identity header, other punctuation"),
];

async fn send_aliases(h: &Harness, name: &str) -> Value {
    let request = raw::request(b"GET", b"/public/x", &[(name.as_bytes(), b"6.6.6.6")]);
    let before = h.upstream_hits();
    let answer = raw::send(h.addr, &request).await;
    assert_eq!(answer.status, 200, "{name}: {}", answer.body);
    assert_eq!(h.upstream_hits() - before, 1, "{name}");
    answer.echo()
}

#[tokio::test]
async fn header_aliases_from_an_untrusted_peer_never_reach_the_app() {
    let (h, _) = start(false).await;
    let mut wrong = Vec::new();
    for (name, attack) in ALIASES {
        let echo = send_aliases(&h, name).await;
        let names = upstream_header_names(&echo);
        let smuggled: Vec<&String> = (names.iter())
            .filter(|n| folded(n) == folded(name))
            .filter(|n| upstream_header(&echo, n).as_deref() == Some("6.6.6.6"))
            .collect();
        if !smuggled.is_empty() {
            wrong.push(format!("{attack} ({name}): the app got {smuggled:?}"));
        }
        // What the gateway sets instead, in the canonical spelling only.
        let client_address =
            ["x-forwarded-for", "x-real-ip"].map(|n| upstream_header(&echo, n).unwrap_or_default());
        let real_ips = names.iter().filter(|n| folded(n) == "x-real-ip").count();
        if client_address != ["127.0.0.1", "127.0.0.1"] || real_ips != 1 {
            wrong.push(format!(
                "{attack} ({name}): client address {client_address:?} in {names:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

#[tokio::test]
async fn header_aliases_from_a_trusted_proxy_pass_unchanged() {
    let (h, _) = start(true).await;
    for (name, attack) in ALIASES {
        let echo = send_aliases(&h, name).await;
        let identity = ["x-forwarded-user", "x-forwarded-email"].contains(&folded(name).as_str());
        // Identity headers go from everyone; the rest is the trusted proxy's business.
        let expected = (!identity).then(|| "6.6.6.6".to_owned());
        let got = upstream_header(&echo, &name.to_ascii_lowercase());
        assert_eq!(got, expected, "{attack} ({name})");
    }
}

// === `Connection` tricks ===

const CONNECTION: &[u8] = b"Connection";

#[rustfmt::skip]
const CONNECTION_TRICKS: &[Case] = &[
    Case { attack: "Connection names Authorization", method: b"GET", target: b"/app", headers: &[(CONNECTION, b"close, Authorization")], session: true, status: 200, hits: 1 },
    Case { attack: "Connection names the identity headers", method: b"GET", target: b"/app", headers: &[(CONNECTION, b"X-Forwarded-User, X-Forwarded-Email, X-Forwarded-Groups, X-Forwarded-Preferred-Username")], session: true, status: 200, hits: 1 },
    Case { attack: "Connection names the forwarding headers", method: b"GET", target: b"/app", headers: &[(CONNECTION, b"X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, X-Real-IP")], session: true, status: 200, hits: 1 },
    Case { attack: "Connection over two lines", method: b"GET", target: b"/app", headers: &[(CONNECTION, b"keep-alive"), (CONNECTION, b"authorization, x-forwarded-user")], session: true, status: 200, hits: 1 },
    Case { attack: "Connection names everything on a public route", method: b"GET", target: b"/public/x", headers: &[(CONNECTION, b"X-Forwarded-For, X-Real-IP, X-Forwarded-Proto")], session: false, status: 200, hits: 1 },
    Case { attack: "a non-ASCII byte beside a listed header", method: b"GET", target: b"/app", headers: &[(CONNECTION, b"\xc3\xa9, X-Hop"), (b"X-Hop", b"1")], session: true, status: 200, hits: 1 },
];

#[tokio::test]
async fn connection_never_removes_what_the_gateway_sets() {
    let (h, session) = start(false).await;
    let answers = run(&h, &session, CONNECTION_TRICKS).await;
    for (case, answer) in CONNECTION_TRICKS.iter().zip(&answers) {
        let echo = answer.echo();
        let attack = case.attack;
        if case.session {
            let bearer = upstream_header(&echo, "authorization").unwrap_or_default();
            assert!(bearer.starts_with("Bearer "), "{attack}: {echo}");
            assert_eq!(
                upstream_header(&echo, "x-forwarded-user").as_deref(),
                Some("alice"),
                "{attack}"
            );
            assert_eq!(
                upstream_header(&echo, "x-forwarded-email").as_deref(),
                Some("alice@example.test"),
                "{attack}"
            );
            assert_eq!(
                upstream_header(&echo, "x-forwarded-groups").as_deref(),
                Some("dev"),
                "{attack}"
            );
        }
        assert_eq!(
            upstream_header(&echo, "x-forwarded-for").as_deref(),
            Some("127.0.0.1"),
            "{attack}"
        );
        assert_eq!(
            upstream_header(&echo, "x-real-ip").as_deref(),
            Some("127.0.0.1"),
            "{attack}"
        );
        assert_eq!(
            upstream_header(&echo, "x-forwarded-proto").as_deref(),
            Some("http"),
            "{attack}"
        );
        assert_eq!(
            upstream_header(&echo, "x-forwarded-host").as_deref(),
            Some("127.0.0.1"),
            "{attack}"
        );
        // A header the client itself named in Connection is gone (hop-by-hop).
        assert_eq!(upstream_header(&echo, "x-hop"), None, "{attack}");
    }
}

// === method case ===

#[rustfmt::skip]
const METHOD_CASE: &[Case] = &[
    Case { attack: "lowercase delete on a DELETE deny route", method: b"delete", target: b"/files/a", headers: &[], session: true, status: 403, hits: 0 },
    Case { attack: "mixed-case Delete on a DELETE deny route", method: b"Delete", target: b"/files/a", headers: &[], session: true, status: 403, hits: 0 },
    Case { attack: "lowercase put on a PUT deny route", method: b"put", target: b"/files/a", headers: &[], session: false, status: 403, hits: 0 },
    Case { attack: "DELETE on a DELETE deny route", method: b"DELETE", target: b"/files/a", headers: &[], session: true, status: 403, hits: 0 },
    Case { attack: "lowercase get reaches the public rest", method: b"get", target: b"/files/a", headers: &[], session: false, status: 200, hits: 1 },
    Case { attack: "lowercase post past a GET-only public route to a group route", method: b"post", target: b"/docs/x", headers: &[], session: true, status: 403, hits: 0 },
    Case { attack: "mixed-case Post to a group route", method: b"Post", target: b"/docs/x", headers: &[], session: true, status: 403, hits: 0 },
    Case { attack: "lowercase delete to a group route", method: b"delete", target: b"/docs/x", headers: &[], session: true, status: 403, hits: 0 },
    Case { attack: "lowercase post to a group route, anonymous", method: b"post", target: b"/docs/x", headers: &[], session: false, status: 401, hits: 0 },
    Case { attack: "lowercase get on the GET-only public route", method: b"get", target: b"/docs/x", headers: &[], session: false, status: 200, hits: 1 },
    Case { attack: "lowercase post on a POST deny route", method: b"post", target: b"/items/1", headers: &[], session: true, status: 403, hits: 0 },
];

#[tokio::test]
async fn route_methods_compare_case_insensitively() {
    let (h, session) = start(false).await;
    run(&h, &session, METHOD_CASE).await;
}

// === cookie bytes ===

const COOKIE: &[u8] = b"Cookie";

#[rustfmt::skip]
const COOKIE_BYTES: &[Case] = &[
    Case { attack: "a non-ASCII cookie before the session", method: b"GET", target: b"/app", headers: &[(COOKIE, b"name=Jos\xc3\xa9; authgate_session=@S")], session: false, status: 200, hits: 1 },
    Case { attack: "a non-ASCII cookie after the session", method: b"GET", target: b"/app", headers: &[(COOKIE, b"authgate_session=@S; name=Jos\xc3\xa9")], session: false, status: 200, hits: 1 },
    Case { attack: "a Latin-1 byte and a quoted value", method: b"GET", target: b"/app", headers: &[(COOKIE, b"a=\xe9; q=\"a b\"; authgate_session=@S")], session: false, status: 200, hits: 1 },
    Case { attack: "a non-ASCII cookie in another Cookie line", method: b"GET", target: b"/app", headers: &[(COOKIE, b"name=Jos\xc3\xa9"), (COOKIE, b"authgate_session=@S")], session: false, status: 200, hits: 1 },
    Case { attack: "a foreign cookie of the same name first", method: b"GET", target: b"/app", headers: &[(COOKIE, b"authgate_session=forged.value; authgate_session=@S")], session: false, status: 200, hits: 1 },
    Case { attack: "only a non-ASCII cookie: no session", method: b"GET", target: b"/app", headers: &[(COOKIE, b"name=Jos\xc3\xa9")], session: false, status: 401, hits: 0 },
];

#[rustfmt::skip]
const COOKIE_LEAKS: &[Case] = &[
    Case { attack: "the session beside a non-ASCII cookie on a public route", method: b"GET", target: b"/public/x", headers: &[(COOKIE, b"name=Jos\xc3\xa9; authgate_session=@S; authgate_session_login=x; authgate_session_login_AbCdEf012-_9=y")], session: false, status: 200, hits: 1 },
    Case { attack: "the session in a line of its own beside a non-ASCII one", method: b"GET", target: b"/public/x", headers: &[(COOKIE, b"authgate_session=@S; a=\xe9"), (COOKIE, b"b=1")], session: false, status: 200, hits: 1 },
    Case { attack: "our cookie with a non-ASCII value", method: b"GET", target: b"/public/x", headers: &[(COOKIE, b"authgate_session=\xff@S; name=Jos\xc3\xa9")], session: false, status: 200, hits: 1 },
];

/// The cookies the upstream received (one entry per `Cookie` line).
fn upstream_cookies(echo: &Value) -> Vec<String> {
    (echo["headers"]["cookie"].as_array())
        .map(|v| v.iter().map(|c| c.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_non_ascii_cookie_never_hides_the_session() {
    let (h, session) = start(false).await;
    let answers = run(&h, &session, COOKIE_BYTES).await;
    for (case, answer) in COOKIE_BYTES.iter().zip(&answers) {
        if answer.status == 200 {
            let bearer = upstream_header(&answer.echo(), "authorization").unwrap_or_default();
            assert!(bearer.starts_with("Bearer "), "{}", case.attack);
        }
    }
}

#[tokio::test]
async fn our_cookies_never_reach_the_upstream_whatever_else_the_header_holds() {
    let (h, session) = start(false).await;
    let answers = run(&h, &session, COOKIE_LEAKS).await;
    let mut wrong = Vec::new();
    for (case, answer) in COOKIE_LEAKS.iter().zip(&answers) {
        let cookies = upstream_cookies(&answer.echo());
        if cookies.iter().any(|c| c.contains("authgate_session")) {
            wrong.push(format!("{}: the app got {cookies:?}", case.attack));
        }
        // Everybody else's cookies pass, bytes intact.
        if !cookies
            .iter()
            .any(|c| c.contains("name=José") || c.contains("b=1"))
        {
            wrong.push(format!("{}: other cookies lost: {cookies:?}", case.attack));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

// === CORS preflights ===

const ORIGIN: (&[u8], &[u8]) = (b"Origin", b"https://other.example");
const ACRM: (&[u8], &[u8]) = (b"Access-Control-Request-Method", b"PUT");

#[rustfmt::skip]
const PREFLIGHTS: &[Case] = &[
    Case { attack: "preflight on an authenticated route", method: b"OPTIONS", target: b"/app/x", headers: &[ORIGIN, ACRM], session: false, status: 401, hits: 0 },
    Case { attack: "preflight on a group route", method: b"OPTIONS", target: b"/ops/x", headers: &[ORIGIN, ACRM], session: false, status: 401, hits: 0 },
    Case { attack: "preflight on a group route with a session lacking the group", method: b"OPTIONS", target: b"/ops/x", headers: &[ORIGIN, ACRM], session: true, status: 403, hits: 0 },
    Case { attack: "preflight on a forward route", method: b"OPTIONS", target: b"/cors/x", headers: &[ORIGIN, ACRM], session: false, status: 200, hits: 1 },
    Case { attack: "preflight with a session on a forward route", method: b"OPTIONS", target: b"/cors/x", headers: &[ORIGIN, ACRM], session: true, status: 200, hits: 1 },
    Case { attack: "preflight on a forward route with a group requirement", method: b"OPTIONS", target: b"/cors-ops/x", headers: &[ORIGIN, ACRM], session: false, status: 200, hits: 1 },
    Case { attack: "OPTIONS without Access-Control-Request-Method", method: b"OPTIONS", target: b"/cors/x", headers: &[ORIGIN], session: false, status: 401, hits: 0 },
    Case { attack: "OPTIONS without Origin", method: b"OPTIONS", target: b"/cors/x", headers: &[ACRM], session: false, status: 401, hits: 0 },
    Case { attack: "lowercase options", method: b"options", target: b"/cors/x", headers: &[ORIGIN, ACRM], session: false, status: 401, hits: 0 },
    Case { attack: "GET dressed as a preflight", method: b"GET", target: b"/cors/x", headers: &[ORIGIN, ACRM], session: false, status: 401, hits: 0 },
    Case { attack: "a real request on a forward route is authenticated", method: b"PUT", target: b"/cors/x", headers: &[ORIGIN], session: true, status: 200, hits: 1 },
];

#[tokio::test]
async fn preflights_are_authenticated_unless_the_route_forwards_them() {
    let (h, session) = start(false).await;
    let answers = run(&h, &session, PREFLIGHTS).await;
    for (case, answer) in PREFLIGHTS.iter().zip(&answers) {
        if answer.status != 200 {
            continue;
        }
        let echo = answer.echo();
        let identity = upstream_header(&echo, "authorization").is_some()
            || upstream_header(&echo, "x-forwarded-user").is_some();
        // Only the real request carries identity: a forwarded preflight never does.
        assert_eq!(identity, case.method == b"PUT", "{}", case.attack);
    }
}

/// Forward auth judges a preflight like the gateway would forward it.
#[rustfmt::skip]
const FORWARD_AUTH_PREFLIGHTS: &[Case] = &[
    Case { attack: "preflight on an authenticated route", method: b"GET", target: AUTH, headers: &[(FM, b"OPTIONS"), (FU, b"/app/x"), ORIGIN, ACRM], session: false, status: 401, hits: 0 },
    Case { attack: "preflight on a forward route", method: b"GET", target: AUTH, headers: &[(FM, b"OPTIONS"), (FU, b"/cors/x"), ORIGIN, ACRM], session: true, status: 202, hits: 0 },
    Case { attack: "OPTIONS without Origin on a forward route", method: b"GET", target: AUTH, headers: &[(FM, b"OPTIONS"), (FU, b"/cors/x"), ACRM], session: false, status: 401, hits: 0 },
];

#[tokio::test]
async fn forward_auth_judges_preflights_like_the_gateway() {
    let (h, session) = start(true).await;
    let answers = run(&h, &session, FORWARD_AUTH_PREFLIGHTS).await;
    assert_eq!(
        answers[1].header("x-forwarded-user"),
        None,
        "a preflight carries no identity"
    );
    assert_eq!(answers[1].header("authorization"), None);
}

// === other request values parsed strictly ===

/// The id that ties the gateway's log lines to the upstream's is the gateway's own, unless a
/// trusted proxy already named the request: a client cannot choose it.
#[tokio::test]
async fn a_request_id_is_kept_only_from_a_trusted_proxy_and_only_when_loggable() {
    for trusted in [true, false] {
        let (h, _) = start(trusted).await;
        let ids = async |lines: &[(&[u8], &[u8])]| -> (Vec<String>, String) {
            let answer = raw::send(h.addr, &raw::request(b"GET", b"/public/x", lines)).await;
            let values = answer.echo()["headers"]["x-request-id"].clone();
            let sent = (values.as_array().unwrap().iter())
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            (sent, answer.header("x-request-id").unwrap().to_owned())
        };
        let (sent, answered) = ids(&[(b"X-Request-Id", b"abc-123")]).await;
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(
            answered, sent[0],
            "the answer names the id the upstream saw"
        );
        if trusted {
            assert_eq!(sent, ["abc-123"]);
        } else {
            assert!(sent[0].bytes().all(|b| b.is_ascii_digit()), "{sent:?}");
        }
        for lines in [
            &[(&b"X-Request-Id"[..], &b"\xc3\xa9t\xe9"[..])][..],
            &[(b"X-Request-Id", b"one"), (b"X-Request-Id", b"two")],
            &[(b"X-Request-Id", b"")],
            &[(b"X-Request-Id", b"a b")],
            &[(b"X-Request-Id", &[b'a'; 129])],
        ] {
            let (ids, answered) = ids(lines).await;
            // One id, made by the gateway (a number).
            assert_eq!(ids.len(), 1, "{lines:?}: {ids:?}");
            assert!(
                ids[0].bytes().all(|b| b.is_ascii_digit()),
                "{lines:?}: {ids:?}"
            );
            assert_eq!(answered, ids[0]);
        }
    }
}
