//! What operators read: the access log, `X-Request-Id`, `/readyz`, `X-Forwarded-Proto`, and
//! the operational metrics.
//!
//! The access log is captured in-process: one global subscriber (JSON, debug and up) for
//! this test binary writes each event into the buffer of the thread it happens on, when that
//! thread captures. Each test runs on one thread (tokio's current-thread runtime), the
//! gateway's tasks included. (A subscriber per test, with `set_default`, lost events now and
//! then when tests ran in parallel: tracing caches each call site's interest process-wide.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use reqwest::{StatusCode, header};
use serde_json::Value;
use support::{Harness, bare_client};
use tracing_subscriber::fmt::MakeWriter;

/// Log lines written on one thread while it captures ([`capture`]).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURING: std::cell::RefCell<Option<Captured>> = const { std::cell::RefCell::new(None) };
}

/// Writes to the capturing thread's buffer, or nowhere.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURING.with(|c| {
            if let Some(captured) = &*c.borrow() {
                captured.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for ThreadWriter {
    type Writer = ThreadWriter;
    fn make_writer(&'a self) -> ThreadWriter {
        ThreadWriter
    }
}

impl Captured {
    /// The access log lines so far, as JSON events.
    fn access(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["target"] == "authgate::access")
            .collect()
    }

    /// The one access line of `path`.
    fn line_of(&self, path: &str) -> Value {
        let lines: Vec<Value> = (self.access().into_iter())
            .filter(|e| e["path"] == path)
            .collect();
        assert_eq!(lines.len(), 1, "one access line for {path}: {lines:?}");
        lines.into_iter().next().unwrap()
    }
}

/// Stops capturing on this thread when dropped.
struct CaptureGuard;

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURING.with(|c| c.borrow_mut().take());
    }
}

/// Every event at debug and above on this thread, as JSON, into the returned buffer.
fn capture() -> (Captured, CaptureGuard) {
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(ThreadWriter)
            .json()
            .flatten_event(true)
            .init();
    });
    let captured = Captured::default();
    CAPTURING.with(|c| *c.borrow_mut() = Some(captured.clone()));
    (captured, CaptureGuard)
}

const PUBLIC: &str = r#"
[[route]]
path = "/public/"
policy = "public"
"#;

// === access log ===

#[tokio::test]
async fn access_lines_name_the_user_the_host_and_the_user_agent() {
    let (log, _guard) = capture();
    let h = Harness::builder().config(PUBLIC).start().await;
    let client = h.client();
    h.login(&client, "alice").await;
    let r = client
        .get(h.at("/app/page"))
        .header(header::ACCEPT, "application/json")
        .header(header::USER_AGENT, "probe-ua/1.0\t(x)")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let echo: Value = r.json().await.unwrap();
    let sub = echo["headers"]["x-forwarded-user"][0].as_str().unwrap();
    let line = log.line_of("/app/page");
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["sub"], sub);
    assert_eq!(line["host"], h.addr.to_string());
    assert_eq!(
        line["user_agent"], "probe-ua/1.0\\t(x)",
        "escaped like every client value"
    );
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "default", "the fallback route's label");
    assert_eq!(line["upstream"], "default");

    // No identity: `-`, and a missing header is `-` too.
    let r = bare_client()
        .get(h.at("/public/x"))
        .header(header::USER_AGENT, "")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let line = log.line_of("/public/x");
    assert_eq!(line["sub"], "-");
    assert_eq!(line["route"], "/public/");
    assert_eq!(line["user_agent"], "");
    let raw =
        support::raw::send(h.addr, &support::raw::request(b"GET", b"/public/bare", &[])).await;
    assert!(raw.header("x-request-id").is_some());
    let line = log.line_of("/public/bare");
    assert_eq!(line["user_agent"], "-");

    // Refused before the upstream: no identity was established.
    let r = bare_client()
        .get(h.at("/app/other"))
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let line = log.line_of("/app/other");
    assert_eq!(line["sub"], "-");
    assert_eq!(line["upstream"], "-", "it never went upstream");
}

#[tokio::test]
async fn probes_are_logged_at_debug_and_requests_at_info() {
    let (log, _guard) = capture();
    let h = Harness::builder().config(PUBLIC).start().await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = bare_client().get(h.at(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    bare_client().get(h.at("/public/a")).send().await.unwrap();
    bare_client()
        .get(h.at("/oauth2/auth"))
        .send()
        .await
        .unwrap();
    let lines = log.access();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let probes: Vec<&Value> = lines.iter().filter(|e| e["path"] == path).collect();
        assert!(!probes.is_empty(), "{path} logged");
        for line in probes {
            assert_eq!(line["level"], "DEBUG", "{line}");
        }
    }
    assert_eq!(log.line_of("/public/a")["level"], "INFO");
    assert_eq!(log.line_of("/oauth2/auth")["level"], "INFO");
}

#[tokio::test]
async fn every_answer_carries_the_request_id_the_log_shows() {
    let (log, _guard) = capture();
    let h = Harness::builder().config(PUBLIC).start().await;
    for (path, status) in [
        ("/healthz", 200),
        ("/public/echo", 200),
        ("/app/x", 401),
        ("/oauth2/nope", 404),
        ("/oauth2/start?rd=/", 302),
    ] {
        let r = h
            .client()
            .get(h.at(path))
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        let ids: Vec<_> = r.headers().get_all("x-request-id").iter().collect();
        assert_eq!(ids.len(), 1, "{path}: {ids:?}");
        let id = ids[0].to_str().unwrap().to_owned();
        let logged_path = path.split('?').next().unwrap();
        assert_eq!(log.line_of(logged_path)["request_id"], id, "{path}");
        if path == "/public/echo" {
            let echo: Value = r.json().await.unwrap();
            assert_eq!(echo["headers"]["x-request-id"][0], id.as_str());
        }
    }
}

// === readiness ===

#[tokio::test]
async fn readyz_reports_the_store_and_store_up_is_a_metric() {
    let h = Harness::start().await;
    let r = bare_client().get(h.at("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body = r.text().await.unwrap();
    assert!(body.contains("session store answering=true"), "{body}");
    assert_eq!(
        support::metric(&h.metrics().await, "authgate_store_up"),
        Some(1.0)
    );
}

// === X-Forwarded-Proto ===

/// Behind a TLS-terminating ingress that is not in `trusted_proxies`, the listener is plain
/// http, but legacy apps building absolute URLs must see `https`.
#[tokio::test]
async fn forwarded_proto_is_the_configured_one_for_untrusted_peers() {
    for (configured, expected) in [
        (None, "http"),
        (Some("https"), "https"),
        (Some("http"), "http"),
    ] {
        let mut builder = Harness::builder().config(PUBLIC);
        if let Some(value) = configured {
            builder = builder.config(&format!("[server]\nforwarded_proto = \"{value}\""));
        }
        let h = builder.start().await;
        let r = bare_client()
            .get(h.at("/public/x"))
            .header("x-forwarded-proto", "ftp")
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "{configured:?}: {body}");
        let echo: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            echo["headers"]["x-forwarded-proto"],
            serde_json::json!([expected]),
            "{configured:?}"
        );
    }
}

// === metrics ===

/// Every sample belongs to a family declared (`# TYPE`) before it, once.
fn assert_well_formed(text: &str) {
    let mut types: std::collections::HashMap<String, String> = Default::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "{name} declared twice"
            );
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    let base = name.strip_suffix(s)?;
                    (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
                })
                .unwrap_or(name);
            assert!(types.contains_key(family), "undeclared sample: {line}");
            let value = line.rsplit_once(' ').unwrap().1;
            assert!(value.parse::<f64>().is_ok(), "not a number: {line}");
        }
    }
}

#[tokio::test]
async fn build_process_upstream_and_login_series() {
    let h = Harness::builder().config(PUBLIC).start().await;
    let m = |text: &str, series: &str| support::metric(text, series);
    let before = h.metrics().await;
    assert_well_formed(&before);
    let build = before
        .lines()
        .find(|l| l.starts_with("authgate_build_info{"))
        .expect("authgate_build_info");
    assert!(
        build.starts_with(&format!(
            "authgate_build_info{{version=\"{}\",revision=\"",
            env!("CARGO_PKG_VERSION")
        )) && build.ends_with("\"} 1"),
        "{build}"
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        let value = m(&before, name).unwrap_or_else(|| panic!("{name} missing"));
        assert!(value > 0.0, "{name} = {value}");
    }
    let start = m(&before, "process_start_time_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start <= now + 1.0 && start > now - 3600.0,
        "{start} vs {now}"
    );

    let upstream = "authgate_upstream_duration_seconds_count{upstream=\"default\"}";
    assert_eq!(m(&before, upstream), Some(0.0));
    bare_client().get(h.at("/public/a")).send().await.unwrap();
    assert_eq!(m(&h.metrics().await, upstream), Some(1.0));

    // Logins: one that succeeds, one the provider refuses, one replayed.
    let started = "authgate_logins_total{result=\"started\"}";
    let succeeded = "authgate_logins_total{result=\"succeeded\"}";
    let failed =
        |reason: &str| format!("authgate_logins_total{{result=\"failed\",reason=\"{reason}\"}}");
    assert_eq!(m(&before, started), Some(0.0));
    h.login(&h.client(), "alice").await;
    let client = h.client();
    let r = client.get(h.at("/oauth2/start?rd=/")).send().await.unwrap();
    let state = support::one(&support::query_of(&support::location(&r)), "state").to_owned();
    let r = client
        .get(h.at(&format!(
            "/oauth2/callback?error=access_denied&state={state}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = client
        .get(h.at("/oauth2/callback?code=x&state=never-issued"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let after = h.metrics().await;
    assert_well_formed(&after);
    assert_eq!(m(&after, started), Some(2.0));
    assert_eq!(m(&after, succeeded), Some(1.0));
    assert_eq!(m(&after, &failed("provider_error")), Some(1.0));
    assert_eq!(m(&after, &failed("invalid_state")), Some(1.0));
    assert_eq!(m(&after, &failed("rejected")), Some(0.0));
}

/// moka applies removals lazily; the gauge must not show a signed-out session.
#[tokio::test]
async fn sessions_live_is_exact_and_capacity_evictions_are_counted() {
    let h = Harness::builder()
        .config("[session]\nmax_sessions = 2")
        .start()
        .await;
    let live = |text: &str| support::metric(text, "authgate_sessions_live");
    let evicted = |text: &str| support::metric(text, "authgate_sessions_evicted_total");
    assert_eq!(evicted(&h.metrics().await), Some(0.0));
    let alice = h.client();
    h.login(&alice, "alice").await;
    assert_eq!(live(&h.metrics().await), Some(1.0));
    let r = alice.get(h.at("/oauth2/sign_out")).send().await.unwrap();
    assert!(r.status().is_redirection(), "{}", r.status());
    assert_eq!(live(&h.metrics().await), Some(0.0), "at once, not later");

    for user in ["bob", "carol", "dave"] {
        h.login(&h.client(), user).await;
    }
    let text = h.metrics().await;
    assert_eq!(live(&text), Some(2.0));
    assert_eq!(
        evicted(&text),
        Some(1.0),
        "one session made room for another"
    );
}

#[tokio::test]
async fn discovery_failures_are_counted() {
    let idp = support::start_idp().await;
    idp.controls().set_discovery_unavailable(true);
    let h = Harness::builder()
        .idp(idp.clone())
        .no_wait_ready()
        .start()
        .await;
    let failures = "authgate_provider_failures_total{kind=\"discovery\",provider=\"default\"}";
    let failed = support::eventually(std::time::Duration::from_secs(10), || async {
        support::metric(&h.metrics().await, failures).is_some_and(|n| n >= 1.0)
    })
    .await;
    assert!(failed, "a failed discovery is counted");
    let text = h.metrics().await;
    assert_eq!(
        support::metric(
            &text,
            "authgate_provider_failures_total{kind=\"jwks\",provider=\"default\"}"
        ),
        Some(0.0)
    );
    assert_well_formed(&text);
}
