//! Logins under attack: a flood of `/oauth2/start` never stops
//! another browser's login, pending logins cost the gateway nothing (memory or Redis), a
//! callback replayed from another browser or replayed later is refused without burning the
//! user's own login, and nothing a provider or client sends can forge a log line or put
//! its text on our error page. Driven over real sockets, as an attacker would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use devidp::idp::DevIdp;
use reqwest::{Client, Response, StatusCode, header};
use support::redis::RedisServer;
use support::{
    CLIENT_ID, CLIENT_SECRET, COOKIE_SECRET_A, Harness, bare_client, location, one, query_of,
    set_cookie, start_idp, userinfo_status,
};

const SESSION: &str = "authgate_session";
const LOGIN_PREFIX: &str = "authgate_session_login_";

// --- helpers ---

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `/oauth2/start?rd=..` as `client` -> the provider's authorize URL.
async fn start(base: &str, client: &Client, rd: &str) -> (String, Response) {
    let r = client
        .get(format!("{base}/oauth2/start?rd={}", enc(rd)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "start");
    (location(&r), r)
}

/// The provider's authorize URL (auto-login) -> our callback URL.
async fn authorize(client: &Client, url: &str) -> String {
    let r = client.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND, "authorize");
    let callback = location(&r);
    assert!(callback.contains("/oauth2/callback?"), "{callback}");
    callback
}

/// Every `name=value` a response sets (not clearing ones), as one `Cookie` header value.
fn cookies_set(r: &Response) -> String {
    r.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .filter(|v| !v.contains("Max-Age=0"))
        .map(|v| v.split(';').next().unwrap())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The callback answered a login: 302 to `landing` with a session cookie.
async fn assert_logged_in(r: Response, landing: &str, what: &str) -> String {
    let status = r.status();
    let cookie = set_cookie(&r, SESSION).filter(|c| !c.is_empty());
    let location = r.headers().get(header::LOCATION).cloned();
    assert_eq!(status, StatusCode::FOUND, "{what}: {:?}", r.text().await);
    assert_eq!(location.unwrap(), landing, "{what}");
    cookie.unwrap_or_else(|| panic!("{what}: no session cookie"))
}

async fn assert_refused(r: Response, what: &str) -> String {
    let status = r.status();
    assert!(
        set_cookie(&r, SESSION).is_none_or(|v| v.is_empty()),
        "{what}: a session cookie was set"
    );
    let body = r.text().await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
    body
}

/// `n` anonymous `/oauth2/start` (no cookies, 8 at a time), each with this `rd`.
async fn flood(base: &str, n: usize, rd: &str) {
    let url = Arc::new(format!("{base}/oauth2/start?rd={}", enc(rd)));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = bare_client();
                for _ in 0..n / 8 {
                    let r = client.get(url.as_str()).send().await.unwrap();
                    assert_eq!(r.status(), StatusCode::FOUND);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Like [`flood`], over raw connections (`Connection: close`): a client that does not parse
/// its own 60 KB URLs is much faster than reqwest in a debug build.
async fn flood_raw(base: &str, n: usize, rd: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://").to_owned();
    let request = Arc::new(format!(
        "GET /oauth2/start?rd={} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
        enc(rd)
    ));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (addr, request) = (addr.clone(), request.clone());
            tokio::spawn(async move {
                for _ in 0..n / 8 {
                    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
                    tcp.write_all(request.as_bytes()).await.unwrap();
                    let mut answer = Vec::new();
                    tcp.read_to_end(&mut answer).await.unwrap();
                    assert!(
                        answer.starts_with(b"HTTP/1.1 302"),
                        "{:?}",
                        String::from_utf8_lossy(&answer)
                    );
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

// --- finding 1: a flood never stops another browser's login ---

/// With the old server-side cache (`max_pending_logins` bounded, moka's TinyLFU admission)
/// the flood evicted X's pending login and refused Y's. The attacker keeps flooding while
/// X and Y finish, as a real attack would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_starts_stops_no_login_started_before_or_after_it() {
    let h = Harness::builder()
        .config("[session]\nmax_pending_logins = 100")
        .start()
        .await;
    h.idp.controls().set_auto_login(Some("xavier".into()));
    let x = h.client();
    let (authorize_url, _) = start(&h.url, &x, "/x").await;
    let x_callback = authorize(&x, &authorize_url).await;

    flood(&h.url, 2400, "/").await;

    h.idp.controls().set_auto_login(Some("yvonne".into()));
    let y = h.client();
    let (authorize_url, _) = start(&h.url, &y, "/y").await;
    let y_callback = authorize(&y, &authorize_url).await;

    flood(&h.url, 800, "/").await;

    let r = x.get(&x_callback).send().await.unwrap();
    assert_logged_in(r, "/x", "X, started before the flood").await;
    let r = y.get(&y_callback).send().await.unwrap();
    assert_logged_in(r, "/y", "Y, started after the flood").await;
    assert_eq!(userinfo_status(&h, &x).await, StatusCode::OK);
    assert_eq!(userinfo_status(&h, &y).await, StatusCode::OK);
    assert_eq!(h.idp.controls().code_calls(), 2);
}

// --- finding 8: a foreign callback burns nothing ---

#[tokio::test]
async fn a_foreign_callback_is_refused_and_the_owner_still_logs_in() {
    let h = Harness::start().await;
    h.idp.controls().set_auto_login(Some("victor".into()));
    let victim = h.client();
    let (authorize_url, _) = start(&h.url, &victim, "/mine").await;
    let callback = authorize(&victim, &authorize_url).await;

    // A browser without any login cookie, and one with a login of its own.
    let stranger = h.client();
    assert_refused(stranger.get(&callback).send().await.unwrap(), "no cookie").await;
    let attacker = h.client();
    start(&h.url, &attacker, "/").await;
    assert_refused(attacker.get(&callback).send().await.unwrap(), "own cookie").await;
    assert_eq!(h.idp.controls().code_calls(), 0, "never redeemed");

    let r = victim.get(&callback).send().await.unwrap();
    assert_logged_in(r, "/mine", "the victim, after the replays").await;
    assert_eq!(userinfo_status(&h, &victim).await, StatusCode::OK);
    assert_eq!(
        userinfo_status(&h, &attacker).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_callback_replayed_with_the_old_login_cookie_is_refused() {
    let h = Harness::start().await;
    h.idp.controls().set_auto_login(Some("alice".into()));
    let browser = h.client();
    let (authorize_url, started) = start(&h.url, &browser, "/").await;
    let captured = cookies_set(&started);
    let callback = authorize(&browser, &authorize_url).await;
    let done = browser.get(&callback).send().await.unwrap();
    let cleared = done.headers().get_all(header::SET_COOKIE).iter().any(|v| {
        let v = v.to_str().unwrap();
        v.starts_with(LOGIN_PREFIX) && v.contains("Max-Age=0")
    });
    assert_logged_in(done, "/", "first use").await;

    // The same browser again (its jar no longer has the cookie), then whoever kept a copy.
    assert_refused(browser.get(&callback).send().await.unwrap(), "jar").await;
    let replay = bare_client()
        .get(&callback)
        .header(header::COOKIE, &captured)
        .send()
        .await
        .unwrap();
    assert_refused(replay, "old cookie").await;
    assert_eq!(
        h.idp.controls().code_calls(),
        1,
        "a replay is never redeemed"
    );
    assert!(cleared, "the used login cookie is cleared");
}

// --- several tabs ---

/// Tabs restored together start their logins at the same moment: none knows the others'
/// cookies (the old single binding cookie was overwritten by the last one).
#[tokio::test]
async fn tabs_started_at_once_in_one_browser_all_complete() {
    let h = Harness::start().await;
    h.idp.controls().set_auto_login(Some("alice".into()));
    let browser = h.client();
    let starts = ["/one", "/two", "/three"].map(|rd| {
        let browser = browser.clone();
        let base = h.url.clone();
        async move { start(&base, &browser, rd).await.0 }
    });
    let authorize_urls = futures_util::future::join_all(starts).await;
    let mut callbacks = Vec::new();
    for url in &authorize_urls {
        callbacks.push(authorize(&browser, url).await);
    }
    for (callback, landing) in callbacks.iter().zip(["/one", "/two", "/three"]).rev() {
        let r = browser.get(callback).send().await.unwrap();
        assert_logged_in(r, landing, landing).await;
    }
    assert_eq!(h.idp.controls().code_calls(), 3);
}

// --- finding 2: pending logins cost the gateway nothing ---

#[tokio::test]
async fn an_rd_of_60_kb_lands_on_root_and_the_login_cookie_stays_small() {
    let h = Harness::start().await;
    h.idp.controls().set_auto_login(Some("alice".into()));
    let browser = h.client();
    let huge = format!("/{}", "a".repeat(60 * 1024));
    let (authorize_url, started) = start(&h.url, &browser, &huge).await;
    let cookies = cookies_set(&started);
    assert!(cookies.len() < 400, "{} bytes of cookies", cookies.len());
    let callback = authorize(&browser, &authorize_url).await;
    let r = browser.get(&callback).send().await.unwrap();
    assert_logged_in(r, "/", "60 KB rd").await;

    // 2048 bytes is still kept.
    let at_bound = format!("/{}", "b".repeat(2047));
    let (authorize_url, _) = start(&h.url, &browser, &at_bound).await;
    let callback = authorize(&browser, &authorize_url).await;
    let r = browser.get(&callback).send().await.unwrap();
    assert_logged_in(r, &at_bound, "2048-byte rd").await;
}

/// The gateway's resident memory does not grow with the number of logins started (the old
/// cache kept every 60 KB `rd` for `login_timeout`: 10,000 of them took 600 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_logins_do_not_grow_the_gateways_memory() {
    let idp = start_idp().await;
    let gateway = Binary::start(&idp, "text").await;
    let base = gateway.url.clone();
    let huge = format!("/{}", "a".repeat(60 * 1024));
    flood_raw(&base, 80, &huge).await; // warm-up: buffers, allocator arenas
    let before = gateway.rss_kib();
    flood_raw(&base, 1200, &huge).await;
    let after = gateway.rss_kib();
    // 1200 x 60 KB would be 70 MB kept (the old cache kept them for `login_timeout`).
    assert!(
        after < before + 20 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

/// With Redis, starting a login writes nothing (the old store wrote a 60 KB key per start);
/// a login started on one replica completes on another; a completed state is refused on
/// every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_logins_keep_nothing_until_completed_and_finish_on_any_replica() {
    let redis = RedisServer::start();
    let idp = start_idp().await;
    let config = |public_url: Option<&str>| {
        let mut c = format!(
            "[session]\nstore = \"redis\"\nredis_url = \"{}\"\nmax_pending_logins = 10\n",
            redis.url()
        );
        if let Some(url) = public_url {
            c.push_str(&format!("[server]\npublic_url = \"{url}\"\n"));
        }
        c
    };
    let a = Harness::builder()
        .idp(idp.clone())
        .config(&config(None))
        .start()
        .await;
    let b = Harness::builder()
        .idp(idp.clone())
        .config(&config(Some(&a.url)))
        .start()
        .await;
    let keys = || async {
        let mut conn = redis.conn().await;
        redis::cmd("DBSIZE")
            .query_async::<u64>(&mut conn)
            .await
            .unwrap()
    };

    idp.controls().set_auto_login(Some("dave".into()));
    let x = a.client();
    let (authorize_url, started) = start(&a.url, &x, "/landing").await;
    let captured = cookies_set(&started);
    let callback = authorize(&x, &authorize_url).await;
    flood_raw(&a.url, 400, &format!("/{}", "a".repeat(60 * 1024))).await;
    flood(&b.url, 400, "/").await;
    assert_eq!(keys().await, 0, "starting logins wrote to Redis");

    // A foreign replay on B: refused, nothing consumed.
    assert_refused(
        bare_client()
            .get(callback.replacen(&a.url, &b.url, 1))
            .send()
            .await
            .unwrap(),
        "foreign",
    )
    .await;
    let done = x
        .get(callback.replacen(&a.url, &b.url, 1))
        .send()
        .await
        .unwrap();
    let session = assert_logged_in(done, "/landing", "finished on B").await;
    assert!(keys().await > 0, "the session and the used state");
    let replay = bare_client()
        .get(&callback)
        .header(header::COOKIE, &captured)
        .send()
        .await
        .unwrap();
    assert_refused(replay, "replayed on A with the old cookie").await;
    assert_eq!(idp.controls().code_calls(), 1);
    let r = bare_client()
        .get(a.at("/oauth2/userinfo"))
        .header(header::COOKIE, format!("{SESSION}={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

// --- finding 9: the provider's text never reaches our page or forges a log line ---

#[tokio::test]
async fn a_provider_error_shows_its_code_never_its_text() {
    let h = Harness::start().await;
    let browser = h.client();
    let (authorize_url, _) = start(&h.url, &browser, "/").await;
    let state = one(&query_of(&authorize_url), "state").to_owned();
    let spoof = "Your account is locked. Call +1 555 0100 to unlock it";
    let r = browser
        .get(h.at(&format!(
            "/oauth2/callback?error=access_denied&error_description={}&state={state}",
            enc(spoof)
        )))
        .send()
        .await
        .unwrap();
    let body = assert_refused(r, "access_denied").await;
    assert!(body.contains("access_denied"), "{body}");
    assert!(!body.contains("555") && !body.contains("locked"), "{body}");

    let r = browser
        .get(h.at(&format!(
            "/oauth2/callback?error={}&state={state}",
            enc("Call 555 0100 <b>now</b>")
        )))
        .send()
        .await
        .unwrap();
    let body = assert_refused(r, "unknown code").await;
    assert!(body.contains("Login failed"), "{body}");
    assert!(!body.contains("555") && !body.contains("now"), "{body}");
    assert_eq!(h.idp.controls().code_calls(), 0);
}

/// The real binary, its real log output on a pipe: a provider `error` with CR LF and ESC,
/// and a forged claim in `error_description`, stay inside one escaped line. Text and JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_text_cannot_forge_a_log_line() {
    let idp = start_idp().await;
    for format in ["text", "json"] {
        let gateway = Binary::start(&idp, format).await;
        let forged = "x\r\n2030-01-01T00:00:00.000000Z  INFO authgate: login succeeded sub=admin";
        let r = bare_client()
            .get(format!(
                "{}/oauth2/callback?error={}&error_description={}&state=s",
                gateway.url,
                enc(forged),
                enc("\u{1b}[2J\u{1b}[31mred\u{7}\u{85}\u{202e}evil\nsub=admin")
            ))
            .send()
            .await
            .unwrap();
        assert_refused(r, format).await;
        // Raw bytes in the request line and a header: refused or escaped, never raw.
        raw_request(&gateway.url, b"GET /a\x1bb HTTP/1.1\r\nHost: x\r\n\r\n").await;
        raw_request(
            &gateway.url,
            b"GET /x HTTP/1.1\r\nHost: x\ty\r\nUser-Agent: a\tb\r\nX-Request-Id: a\tb\r\n\r\n",
        )
        .await;
        let log = gateway.stop_and_read_log().await;
        assert!(log.contains("provider returned a login error"), "{log}");
        for (n, line) in log.lines().enumerate() {
            let bad = line.chars().find(|c| c.is_control() || *c == '\u{202e}');
            assert!(bad.is_none(), "{format} line {n} holds {bad:?}: {line:?}");
            match format {
                "text" => assert!(
                    line.starts_with(|c: char| c.is_ascii_digit()),
                    "a line that is not an event: {line:?}"
                ),
                _ => {
                    let event: serde_json::Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("not one JSON event ({e}): {line:?}"));
                    for value in event.as_object().unwrap().values() {
                        let text = value.as_str().unwrap_or_default();
                        assert!(!text.chars().any(char::is_control), "{line}");
                    }
                }
            }
        }
        let forged_lines = log.lines().filter(|l| l.contains("sub=admin")).count();
        assert_eq!(forged_lines, 1, "one (escaped) line holds it:\n{log}");
    }
}

// --- the real binary ---

/// `authgate` run as a process on a free port, its stderr in a file.
struct Binary {
    child: Child,
    url: String,
    log: PathBuf,
    dir: PathBuf,
}

impl Binary {
    async fn start(idp: &Arc<DevIdp>, log_format: &str) -> Binary {
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "authgate-login-abuse-{}-{}",
            std::process::id(),
            listen.port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            r#"
[server]
listen = "{listen}"
public_url = "http://{listen}"
log_format = "{log_format}"
[upstream]
url = "http://127.0.0.1:9"
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
[session]
cookie_secrets = ["{COOKIE_SECRET_A}"]
cookie_secure = false
"#,
            issuer = idp.issuer()
        );
        let config_path = dir.join("gateway.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = dir.join("stderr.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_authgate"));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AUTHGATE_") {
                cmd.env_remove(key);
            }
        }
        let child = cmd
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let binary = Binary {
            child,
            url: format!("http://{listen}"),
            log,
            dir,
        };
        let client = bare_client();
        let ready = support::eventually(Duration::from_secs(30), || {
            let request = client.get(format!("{}/readyz", binary.url)).send();
            async move { request.await.is_ok_and(|r| r.status() == StatusCode::OK) }
        })
        .await;
        assert!(ready, "authgate never became ready");
        binary
    }

    /// Resident set size of the process, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// SIGTERM, wait for the exit, and the whole log.
    async fn stop_and_read_log(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let exited = support::eventually(Duration::from_secs(15), || {
            let done = self.child.try_wait().unwrap().is_some();
            async move { done }
        })
        .await;
        assert!(exited, "authgate did not exit");
        let bytes = std::fs::read(&self.log).unwrap();
        String::from_utf8(bytes).expect("the log is UTF-8")
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Send raw bytes on a fresh connection and read whatever comes back.
async fn raw_request(base: &str, bytes: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(bytes).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut answer)).await;
}
