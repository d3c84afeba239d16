//! Continuity: a configuration reload under load (routes, cookie secrets, upstreams, TLS
//! certificate), invalid reloads, and the memory store's snapshot across a restart.
//!
//! Reloads here call `Gateway::reload` with a configuration built like the harness's; the
//! SIGHUP path (`Config::load` of the file, then the same call) is run through the binary in
//! `tests/cli.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use authgate::config::Config;
use authgate::session::SessionStore;
use figment::providers::Format;
use reqwest::StatusCode;
use support::{COOKIE_SECRET_A, COOKIE_SECRET_B, Harness, metric};

/// A fresh temporary directory (removed on drop).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        use std::hash::{BuildHasher, RandomState};
        let n = RandomState::new().hash_one(std::time::SystemTime::now());
        let dir =
            std::env::temp_dir().join(format!("authgate-continuity-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The harness's configuration with `overrides` (and `upstream` instead of its own).
fn config_of(h: &Harness, upstream: std::net::SocketAddr, overrides: &[&str]) -> Config {
    let overrides: Vec<String> = overrides.iter().map(|s| (*s).to_owned()).collect();
    support::config(&h.url, &h.idp.issuer(), upstream, &overrides)
}

const PUBLIC: &str = "[[route]]\npath = \"/pub/\"\npolicy = \"public\"\n";
const DENIED: &str = "[[route]]\npath = \"/pub/\"\npolicy = \"deny\"\n";

/// Reload under load: two clients send requests without a pause (a logged-in one to an
/// authenticated path, an anonymous one to `/pub/`) while reloads swap `/pub/` from public
/// to deny and back, rotate the cookie secret, and move the default upstream. No request
/// fails that should not, every change is visible to the next request, and the session
/// made before keeps working throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_swaps_routes_secrets_and_upstreams() {
    let h = Harness::builder().config(PUBLIC).start().await;
    let user = h.client();
    h.login(&user, "alice").await;
    let (second_upstream, second_hits, _task) = support::echo_upstream().await;

    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    // The anonymous client's last status on /pub/, for the route swaps.
    let pub_status = Arc::new(std::sync::atomic::AtomicU16::new(0));
    let load = {
        let (stop, requests, failures, pub_status) = (
            stop.clone(),
            requests.clone(),
            failures.clone(),
            pub_status.clone(),
        );
        let (user, anonymous) = (user.clone(), h.client());
        let (app, public) = (h.at("/app/x"), h.at("/pub/x"));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let (a, p) = tokio::join!(user.get(&app).send(), anonymous.get(&public).send());
                requests.fetch_add(2, Ordering::Relaxed);
                match a {
                    Ok(r) if r.status() == StatusCode::OK => {}
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("session: {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("session: {e}")),
                }
                match p {
                    // Either configuration's answer is right while the swap happens.
                    Ok(r)
                        if r.status() == StatusCode::OK || r.status() == StatusCode::FORBIDDEN =>
                    {
                        pub_status.store(r.status().as_u16(), Ordering::Relaxed);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("public: {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(format!("public: {e}")),
                }
            }
        })
    };
    // Time from the start of a reload until the load client sees its effect.
    async fn applied(what: &str, started: Instant, seen: impl Fn() -> bool) -> Duration {
        while !seen() {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{what} not visible within 1 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        started.elapsed()
    }
    let mut times = Vec::new();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for round in 0..3 {
        let started = Instant::now();
        let changed = h
            .gateway
            .reload(Ok(config_of(&h, h.upstream_addr, &[DENIED])))
            .await
            .unwrap();
        assert_eq!(changed, ["route[0].policy"], "round {round}");
        times.push(
            applied("deny", started, || {
                pub_status.load(Ordering::Relaxed) == 403
            })
            .await,
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        h.gateway
            .reload(Ok(config_of(&h, h.upstream_addr, &[PUBLIC])))
            .await
            .unwrap();
        times.push(
            applied("public", started, || {
                pub_status.load(Ordering::Relaxed) == 200
            })
            .await,
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Rotation: a new first secret signs, the old one still verifies the session cookie.
    let rotated =
        format!("[session]\ncookie_secrets = [\"{COOKIE_SECRET_B}\", \"{COOKIE_SECRET_A}\"]\n");
    let changed = h
        .gateway
        .reload(Ok(config_of(&h, h.upstream_addr, &[PUBLIC, &rotated])))
        .await
        .unwrap();
    assert_eq!(changed, ["session.cookie_secrets"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let newcomer = h.client();
    let cookie = h.login(&newcomer, "bob").await;
    let key = h
        .gateway
        .cookies()
        .decode(&cookie)
        .expect("signed with the new first secret");
    assert!(h.gateway.store().load(&key).await.unwrap().is_some());
    // The upstream moves: new requests go to the other one.
    let before = second_hits.load(Ordering::Relaxed);
    let started = Instant::now();
    let changed = h
        .gateway
        .reload(Ok(config_of(&h, second_upstream, &[PUBLIC, &rotated])))
        .await
        .unwrap();
    assert_eq!(changed, ["upstream.url"]);
    times.push(
        applied("upstream", started, || {
            second_hits.load(Ordering::Relaxed) > before
        })
        .await,
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();

    let failures = failures.lock().unwrap().clone();
    let total = requests.load(Ordering::Relaxed);
    let worst = times.iter().max().copied().unwrap_or_default();
    eprintln!(
        "reload under load: {total} requests, {} failures, {} reloads applied, time to apply: max {worst:?}, all {times:?}",
        failures.len(),
        times.len() + 1
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert!(total > 100, "the load ran: {total}");
    let text = h.metrics().await;
    assert_eq!(
        metric(&text, "authgate_config_reloads_total{result=\"success\"}"),
        Some(8.0)
    );
    assert_eq!(
        metric(&text, "authgate_config_reloads_total{result=\"failure\"}"),
        Some(0.0)
    );
    assert!(
        metric(
            &text,
            "authgate_config_last_reload_success_timestamp_seconds"
        )
        .unwrap()
            > 0.0
    );
    // The session of before still works on the last configuration, through the new upstream.
    let echo = h.echo(&user, "/app/after").await;
    assert_eq!(echo.header("x-forwarded-user").as_deref(), Some("alice"));
}

/// An invalid configuration (a syntax error; a bad regex) changes nothing and counts a
/// failure; keys that need a restart keep their running value.
#[tokio::test]
async fn invalid_reload_keeps_the_running_configuration() {
    let h = Harness::builder().config(PUBLIC).start().await;
    let anonymous = h.client();
    let dir = TempDir::new();
    let file = dir.path("gateway.toml");
    std::fs::write(&file, "[server\nlisten = ").unwrap();
    let e = h.gateway.reload(Config::load(&file)).await.unwrap_err();
    assert!(
        matches!(e, authgate::gateway::ReloadError::Invalid(_)),
        "{e}"
    );
    let bad_regex = "[[route]]\npath = \"^/pub/(\"\nmatch = \"regex\"\npolicy = \"deny\"\n";
    let figment = figment::Figment::from(figment::providers::Toml::string(bad_regex));
    let loaded = Config::from_figment(figment);
    assert!(loaded.is_err());
    assert!(h.gateway.reload(loaded).await.is_err());
    let status = anonymous.get(h.at("/pub/x")).send().await.unwrap().status();
    assert_eq!(status, StatusCode::OK, "the old routes still serve");
    let text = h.metrics().await;
    assert_eq!(
        metric(&text, "authgate_config_reloads_total{result=\"failure\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(&text, "authgate_config_reloads_total{result=\"success\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "authgate_config_last_reload_success_timestamp_seconds"
        ),
        Some(0.0)
    );

    // A key read only at start keeps its value; the rest of the reload applies.
    let listen = h.gateway.server_config().listen;
    let other = "[server]\nlisten = \"127.0.0.1:1\"\nmax_connections = 7\n";
    let changed = h
        .gateway
        .reload(Ok(config_of(&h, h.upstream_addr, &[DENIED, other])))
        .await
        .unwrap();
    assert_eq!(changed, ["route[0].policy"]);
    assert_eq!(h.gateway.server_config().listen, listen);
    assert_ne!(h.gateway.server_config().max_connections, 7);
    let status = anonymous.get(h.at("/pub/x")).send().await.unwrap().status();
    assert_eq!(status, StatusCode::FORBIDDEN);
}

fn write_cert(dir: &TempDir, name: &str) -> (PathBuf, PathBuf, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.path(&format!("{name}.crt"));
    let key_path = dir.path(&format!("{name}.key"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    (cert_path, key_path, cert.cert.pem())
}

/// Whether a TLS handshake with `addr` succeeds trusting only `ca`.
async fn handshake_trusting(addr: std::net::SocketAddr, ca: &Path) -> bool {
    let config = authgate::tls::client_config(Some(ca)).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.is_ok()
}

/// A new certificate on disk is served on the next handshake after the reload.
#[tokio::test]
async fn a_reload_serves_the_new_certificate_on_the_next_handshake() {
    let dir = TempDir::new();
    let (cert, key, _) = write_cert(&dir, "first");
    let first_ca = dir.path("first-ca.crt");
    std::fs::copy(&cert, &first_ca).unwrap();
    let tls = format!(
        "[server]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let h = Harness::builder()
        .config(&tls)
        .no_wait_ready()
        .start()
        .await;
    assert!(handshake_trusting(h.addr, &first_ca).await);
    // The files are replaced in place, as a certificate manager does.
    let (next_cert, next_key, _) = write_cert(&dir, "second");
    std::fs::rename(&next_cert, &cert).unwrap();
    std::fs::rename(&next_key, &key).unwrap();
    assert!(
        handshake_trusting(h.addr, &first_ca).await,
        "not before the reload"
    );
    let changed = h
        .gateway
        .reload(Ok(config_of(&h, h.upstream_addr, &[&tls])))
        .await
        .unwrap();
    assert_eq!(changed, ["server.tls_cert_file"]);
    assert!(
        !handshake_trusting(h.addr, &first_ca).await,
        "old certificate still served"
    );
    assert!(
        handshake_trusting(h.addr, &cert).await,
        "new certificate not served"
    );
}

/// A gateway on `listener` (the same port as before), behind `idp`, with `toml`.
async fn restart(
    idp: &Arc<devidp::idp::DevIdp>,
    listener: tokio::net::TcpListener,
    toml: &str,
) -> Harness {
    Harness::builder()
        .idp(idp.clone())
        .listener(listener)
        .config(toml)
        .start()
        .await
}

fn snapshot_config(path: &Path, secrets: &[&str]) -> String {
    let secrets: Vec<String> = secrets.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[session]\nsnapshot_file = \"{}\"\ncookie_secrets = [{}]\n",
        path.display(),
        secrets.join(", ")
    )
}

/// Log in, shut down, start again: the same cookie is still logged in, and the provider
/// sees no token request for it. The file is read once.
#[tokio::test]
async fn sessions_survive_a_restart_through_the_snapshot() {
    let dir = TempDir::new();
    let file = dir.path("sessions");
    let idp = support::start_idp().await;
    let toml = snapshot_config(&file, &[COOKIE_SECRET_A]);
    let mut h = restart(&idp, support::bind().await, &toml).await;
    let client = h.client();
    h.login(&client, "alice").await;
    let addr = h.addr;
    h.stop().await;
    let meta = std::fs::metadata(&file).expect("snapshot written at shutdown");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let token_calls = idp.controls().code_calls() + idp.controls().refresh_calls();
    drop(h);

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let h = restart(&idp, listener, &toml).await;
    assert_eq!(h.gateway.store().live(), 1);
    let echo = h.echo(&client, "/after-restart").await;
    assert_eq!(echo.header("x-forwarded-user").as_deref(), Some("alice"));
    assert!(echo.bearer().is_some());
    assert_eq!(
        idp.controls().code_calls() + idp.controls().refresh_calls(),
        token_calls,
        "no token request"
    );
    assert!(!file.exists(), "the file is read once, then removed");
}

/// A corrupt file, a truncated one, one sealed with a secret no longer configured, and a
/// missing one: each start goes on, with no sessions.
#[tokio::test]
async fn an_unreadable_snapshot_is_ignored() {
    let dir = TempDir::new();
    let file = dir.path("sessions");
    let idp = support::start_idp().await;
    let toml = snapshot_config(&file, &[COOKIE_SECRET_A]);
    // A good file to spoil.
    let mut h = restart(&idp, support::bind().await, &toml).await;
    h.login(&h.client(), "alice").await;
    h.login(&h.client(), "bob").await;
    h.stop().await;
    drop(h);
    let good = std::fs::read(&file).unwrap();

    let mut cases: Vec<(&str, Vec<u8>, String)> = vec![
        ("garbage", b"not a snapshot at all".to_vec(), toml.clone()),
        ("truncated", good[..good.len() - 20].to_vec(), toml.clone()),
        (
            "cut after a record",
            good[..good.len() / 2].to_vec(),
            toml.clone(),
        ),
        (
            "rotated away",
            good.clone(),
            snapshot_config(&file, &[COOKIE_SECRET_B]),
        ),
    ];
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    cases.push(("one bit flipped", flipped, toml.clone()));
    for (what, bytes, toml) in cases {
        std::fs::write(&file, &bytes).unwrap();
        let h = restart(&idp, support::bind().await, &toml).await;
        assert_eq!(h.gateway.store().live(), 0, "{what}");
        let status = h
            .client()
            .get(h.at("/healthz"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK, "{what}");
    }
    // The same bytes with a secret rotation that keeps the old one: all read back.
    std::fs::write(&file, &good).unwrap();
    let h = restart(
        &idp,
        support::bind().await,
        &snapshot_config(&file, &[COOKIE_SECRET_B, COOKIE_SECRET_A]),
    )
    .await;
    assert_eq!(h.gateway.store().live(), 2);
    drop(h);
    // Missing.
    let _ = std::fs::remove_file(&file);
    let h = restart(&idp, support::bind().await, &toml).await;
    assert_eq!(h.gateway.store().live(), 0);
}

/// `snapshot_file` with the Redis store is refused, naming both keys.
#[test]
fn snapshot_file_with_redis_is_refused() {
    let toml = r#"
        [server]
        public_url = "http://127.0.0.1:4180"
        [upstream]
        url = "http://127.0.0.1:9"
        [oidc]
        issuer = "http://127.0.0.1:9"
        client_id = "x"
        [session]
        cookie_secrets = ["AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="]
        store = "redis"
        redis_url = "redis://127.0.0.1:6379"
        snapshot_file = "/tmp/s"
    "#;
    let figment = figment::Figment::from(figment::providers::Toml::string(toml));
    let errors = Config::from_figment(figment).unwrap_err();
    let e = errors.find("session.snapshot_file").expect("named");
    assert!(e.message.contains("session.store"), "{e}");
}

/// Providers on reload: adding a `[providers.NAME]` needs a restart (in-memory sessions name
/// their provider by position), so that reload fails, is counted, and changes nothing; a
/// change of a provider's client settings with the same issuer applies (no new discovery:
/// the gateway stays ready at once).
#[tokio::test]
async fn a_reload_that_adds_a_provider_is_refused_and_a_changed_client_applies() {
    let h = Harness::builder().config(PUBLIC).start().await;
    let anonymous = h.client();
    let partners = format!(
        "[providers.partners]\nissuer = \"{}\"\nclient_id = \"other-client\"\nclient_secret = \"other-secret\"\n",
        h.idp.issuer()
    );
    let e = h
        .gateway
        .reload(Ok(config_of(&h, h.upstream_addr, &[DENIED, &partners])))
        .await
        .unwrap_err();
    assert!(
        matches!(e, authgate::gateway::ReloadError::ProvidersRenamed),
        "{e}"
    );
    let status = anonymous.get(h.at("/pub/x")).send().await.unwrap().status();
    assert_eq!(
        status,
        StatusCode::OK,
        "nothing of the refused reload applies"
    );
    assert!(h.gateway.providers().by_name("partners").is_none());
    let text = h.metrics().await;
    assert_eq!(
        metric(&text, "authgate_config_reloads_total{result=\"failure\"}"),
        Some(1.0)
    );

    // Same issuer, other scopes: a new client that keeps the discovered metadata.
    let before = h.gateway.oidc();
    let scopes =
        "[oidc]\nscopes = [\"openid\", \"email\", \"profile\", \"offline_access\", \"groups\"]\n";
    let changed = h
        .gateway
        .reload(Ok(config_of(&h, h.upstream_addr, &[PUBLIC, scopes])))
        .await
        .unwrap();
    assert!(
        changed.iter().any(|k| k.starts_with("oidc.scopes")),
        "{changed:?}"
    );
    assert!(!Arc::ptr_eq(&before, &h.gateway.oidc()), "a new client");
    assert!(h.gateway.is_ready(), "the discovery was taken over");
}
