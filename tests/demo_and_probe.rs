//! The binary's two helpers for new users: `authgate demo` (the README's run command: it
//! starts, says where to go, and a scripted login through the development provider's form
//! reaches the echo upstream with the user's identity) and `authgate check --probe`
//! (discovery against a live provider, findings, exit code).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{StatusCode, header};
use support::{COOKIE_SECRET_A, location};

/// Kills the child on drop, so a failing test never leaves a process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn authgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_authgate"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AUTHGATE_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Start `authgate demo` on a free port and return it with the URL it tells users to open.
fn start_demo() -> (Running, String) {
    let mut child = authgate()
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("open ").nth(1) {
                let url = rest.split_whitespace().next().unwrap_or_default();
                let _ = tx.send(url.trim_end_matches('/').to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the demo prints the URL to open");
    (Running(child), url)
}

/// `name="..." value="..."` of every hidden input of the login form.
fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let input =
        regex::Regex::new(r#"<input type="hidden" name="([^"]*)" value="([^"]*)""#).unwrap();
    input
        .captures_iter(html)
        .map(|c| {
            (
                c[1].to_owned(),
                c[2].replace("&amp;", "&").replace("&quot;", "\""),
            )
        })
        .collect()
}

#[tokio::test]
async fn demo_starts_and_a_scripted_login_reaches_the_echo_upstream() {
    let (mut demo, url) = start_demo();
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    // Ready once discovery against its own provider succeeded (503 until then).
    let mut ready = false;
    for _ in 0..200 {
        let r = client.get(format!("{url}/readyz")).send().await;
        if r.is_ok_and(|r| r.status() == StatusCode::OK) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the demo never became ready");
    // A browser navigation without a session is sent to login.
    let first = client
        .get(format!("{url}/hello?from=test"))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::FOUND);
    let start = client.get(location(&first)).send().await.unwrap();
    assert_eq!(start.status(), StatusCode::FOUND);
    let authorize = location(&start);
    // The development provider shows a plain login form, and says what it is.
    let form = client
        .get(&authorize)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(form.contains("Development provider"), "{form}");
    let idp_origin = authorize.split("/authorize").next().unwrap();
    let mut fields = hidden_fields(&form);
    assert!(fields.iter().any(|(k, _)| k == "code_challenge"), "{form}");
    fields.push(("username".into(), "dana".into()));
    let login = client
        .post(format!("{idp_origin}/login"))
        .form(&fields)
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::FOUND);
    let callback = client.get(location(&login)).send().await.unwrap();
    assert_eq!(callback.status(), StatusCode::FOUND);
    assert_eq!(location(&callback), "/hello?from=test");
    // The echo upstream shows what the gateway forwarded.
    let echo: serde_json::Value = client
        .get(format!("{url}/hello"))
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["headers"]["x-forwarded-user"][0], "dana");
    let bearer = echo["headers"]["authorization"][0].as_str().unwrap();
    assert!(
        bearer.starts_with("Bearer ") && bearer.len() > 20,
        "{bearer}"
    );
    assert!(echo["headers"].get("cookie").is_none());
    // Ctrl-C (SIGINT) ends it cleanly.
    let pid = demo.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = demo.0.wait();
        drop(demo);
        status
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "{status:?}");
}

fn probe_config(issuer: &str, scopes: &str) -> String {
    format!(
        r#"
[server]
public_url = "http://127.0.0.1:4180"
[upstream]
url = "http://127.0.0.1:8080"
[oidc]
issuer = "{issuer}"
client_id = "probe"
client_secret = "probe-secret"
scopes = {scopes}
[session]
cookie_secrets = ["{COOKIE_SECRET_A}"]
"#
    )
}

async fn run_probe(config: String) -> (Option<i32>, String) {
    tokio::task::spawn_blocking(move || {
        // One file per run: tests run in parallel, and configs of one length are common.
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("authgate-probe-{}-{run}.toml", std::process::id(),));
        std::fs::write(&path, config).unwrap();
        let out = authgate()
            .args(["check", "--probe", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn probe_reports_what_matters_and_warns_without_offline_access() {
    let idp = support::start_idp().await;
    let (code, report) = run_probe(probe_config(&idp.issuer(), r#"["openid", "email"]"#)).await;
    assert_eq!(code, Some(0), "{report}");
    for ok in [
        "ok       refresh_token grant supported",
        "ok       PKCE S256 supported",
        "ok       revocation endpoint present",
        "ok       end-session endpoint present",
    ] {
        assert!(report.contains(ok), "missing {ok:?} in:\n{report}");
    }
    assert!(
        report.contains("WARNING  offline_access is not among oidc.scopes"),
        "{report}"
    );
    let (code, report) = run_probe(probe_config(
        &idp.issuer(),
        r#"["openid", "email", "offline_access"]"#,
    ))
    .await;
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains("ok       offline_access requested"),
        "{report}"
    );
    assert!(!report.contains("WARNING"), "{report}");
}

/// The `offline_access` verdict follows the provider's discovery: a provider that does not
/// list the scope issues refresh tokens by its own rules (no warning without it), and may
/// refuse a login that asks for it (a warning with it).
#[tokio::test]
async fn probe_judges_offline_access_by_the_providers_scopes() {
    let idp = support::start_idp().await;
    idp.controls()
        .set_scopes_supported(Some(vec!["openid".into(), "email".into()]));
    let (code, report) = run_probe(probe_config(&idp.issuer(), r#"["openid", "email"]"#)).await;
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains("ok       offline_access not requested, and the provider does not list it"),
        "{report}"
    );
    assert!(!report.contains("WARNING"), "{report}");
    let (code, report) = run_probe(probe_config(
        &idp.issuer(),
        r#"["openid", "email", "offline_access"]"#,
    ))
    .await;
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains("WARNING  offline_access is requested but the provider does not list it"),
        "{report}"
    );
}

#[tokio::test]
async fn probe_exits_1_when_the_provider_is_unreachable() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (code, report) = run_probe(probe_config(&issuer, r#"["openid"]"#)).await;
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("provider unreachable"), "{report}");
}

/// The probe says whether the provider advertises the authorization response's `iss`
/// parameter (RFC 9207), and which `acr` values it lists.
#[tokio::test]
async fn probe_reports_rfc9207_and_acr_values() {
    let idp = support::start_idp().await;
    let config = probe_config(&idp.issuer(), r#"["openid", "offline_access"]"#);
    let (code, report) = run_probe(config.clone()).await;
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains("ok       authorization response iss parameter (RFC 9207) advertised"),
        "{report}"
    );
    assert!(
        report.contains("info     acr_values_supported: urn:devidp:pwd urn:devidp:mfa"),
        "{report}"
    );
    idp.controls().set_advertise_response_iss(false);
    idp.controls().set_acr_values_supported(Vec::new());
    let (code, report) = run_probe(config).await;
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.contains("info     authorization response iss parameter (RFC 9207) not advertised"),
        "{report}"
    );
    assert!(
        report.contains("info     acr_values_supported: none listed"),
        "{report}"
    );
}

/// With several providers the probe reports on each: its own RFC 9207 and `acr` values.
#[tokio::test]
async fn probe_reports_on_every_provider() {
    let idp = support::start_idp().await;
    let partners = support::start_idp().await;
    partners.controls().set_advertise_response_iss(false);
    partners
        .controls()
        .set_acr_values_supported(vec!["urn:partners:mfa".into()]);
    let mut config = probe_config(&idp.issuer(), r#"["openid", "offline_access"]"#);
    config.push_str(&format!(
        "[providers.partners]\nissuer = \"{}\"\nclient_id = \"probe\"\n",
        partners.issuer()
    ));
    let (code, report) = run_probe(config).await;
    assert_eq!(code, Some(0), "{report}");
    let (default, named) = report
        .split_once("probe: [providers.partners] discovered")
        .unwrap_or_else(|| panic!("no partners section in:\n{report}"));
    assert!(
        default.contains("ok       authorization response iss parameter (RFC 9207) advertised")
            && default.contains("acr_values_supported: urn:devidp:pwd urn:devidp:mfa"),
        "{report}"
    );
    assert!(
        named.contains("info     authorization response iss parameter (RFC 9207) not advertised")
            && named.contains("info     acr_values_supported: urn:partners:mfa"),
        "{report}"
    );
    partners.shutdown();
}
