//! The `authgate` binary: `--version`, `check` (redaction, errors naming keys, environment
//! overrides, `AUTHGATE_CONFIG`), exit codes, and SIGTERM shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use support::{COOKIE_SECRET_A, COOKIE_SECRET_B};

const CLIENT_SECRET: &str = "cli-test-client-secret-4f1e9a";

/// A command for the built binary with every inherited `AUTHGATE_*` variable removed.
fn authgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_authgate"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AUTHGATE_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A fresh temporary directory (removed on drop).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        use std::hash::{BuildHasher, RandomState};
        let n = RandomState::new().hash_one(std::time::SystemTime::now());
        let dir = std::env::temp_dir().join(format!("authgate-cli-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A valid configuration listening on `listen`; the issuer is never contacted by `check`.
fn valid_config(listen: SocketAddr, client_secret: Option<&str>) -> String {
    let secret = client_secret
        .map(|s| format!("client_secret = \"{s}\"\n"))
        .unwrap_or_default();
    format!(
        r#"
[server]
listen = "{listen}"
public_url = "http://{listen}"
shutdown_grace = "5s"
[upstream]
url = "http://127.0.0.1:9"
[oidc]
issuer = "http://127.0.0.1:9/oidc"
client_id = "cli-test-client"
{secret}
[session]
cookie_secrets = ["{COOKIE_SECRET_A}", "{COOKIE_SECRET_B}"]
cookie_secure = false
"#
    )
}

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn run(cmd: &mut Command) -> (Output, String, String) {
    let output = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("authgate did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn check(config: &Path) -> Command {
    let mut cmd = authgate();
    cmd.arg("check").arg("--config").arg(config);
    cmd
}

#[test]
fn version_prints_the_version() {
    let (output, stdout, _) = run(authgate().arg("--version"));
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
}

#[test]
fn check_prints_the_config_with_secrets_redacted() {
    let dir = TempDir::new();
    let config = dir.write(
        "gateway.toml",
        &valid_config(free_port(), Some(CLIENT_SECRET)),
    );
    let (output, stdout, stderr) = run(&mut check(&config));
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("[redacted]"), "{stdout}");
    assert!(stdout.contains("cli-test-client"), "{stdout}");
    // The effective config is valid TOML.
    let parsed: toml::Value = toml::from_str(&stdout).unwrap();
    assert_eq!(parsed["oidc"]["client_secret"].as_str(), Some("[redacted]"));
    for secret in [CLIENT_SECRET, COOKIE_SECRET_A, COOKIE_SECRET_B] {
        assert!(!stdout.contains(secret), "secret on stdout");
        assert!(!stderr.contains(secret), "secret on stderr");
    }
    // Also the undecorated base64 bodies of the cookie secrets.
    for secret in [COOKIE_SECRET_A, COOKIE_SECRET_B] {
        let body = secret.trim_end_matches('=');
        assert!(!stdout.contains(body) && !stderr.contains(body));
    }
}

#[test]
fn invalid_config_exits_2_and_names_every_key() {
    let dir = TempDir::new();
    let listen = free_port();
    let config = dir.write(
        "bad.toml",
        &format!(
            r#"
[server]
listen = "{listen}"
public_url = "http://{listen}"
listne = "typo"
[upstream]
url = "http://127.0.0.1:9"
[oidc]
issuer = "not a url"
client_id = "c"
client_secret = "{CLIENT_SECRET}"
[session]
cookie_secrets = ["c2hvcnQ="]
"#
        ),
    );
    let (output, stdout, stderr) = run(&mut check(&config));
    assert_eq!(output.status.code(), Some(2), "{stdout}{stderr}");
    for key in ["oidc.issuer", "session.cookie_secrets[0]", "server.listne"] {
        assert!(stderr.contains(key), "{key} not named:\n{stderr}");
    }
    assert!(!stderr.contains(CLIENT_SECRET) && !stdout.contains(CLIENT_SECRET));
}

#[test]
fn env_override_is_applied_and_redacted() {
    let dir = TempDir::new();
    let config = dir.write("gateway.toml", &valid_config(free_port(), None));
    // Without the override: a public client, no secret at all.
    let (output, stdout, stderr) = run(&mut check(&config));
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let parsed: toml::Value = toml::from_str(&stdout).unwrap();
    assert!(parsed["oidc"].get("client_secret").is_none(), "{stdout}");

    let (output, stdout, stderr) = run(check(&config).env("AUTHGATE_OIDC__CLIENT_SECRET", "007"));
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let parsed: toml::Value = toml::from_str(&stdout).unwrap();
    assert_eq!(parsed["oidc"]["client_secret"].as_str(), Some("[redacted]"));
    assert!(
        !stdout.contains("\"007\"") && !stdout.contains("= 7"),
        "{stdout}"
    );
}

#[test]
fn authgate_config_selects_the_file() {
    let dir = TempDir::new();
    let config = dir.write("elsewhere.toml", &valid_config(free_port(), None));
    // In a directory without ./gateway.toml, the default path does not exist.
    let (output, _, _) = run(authgate().arg("check").current_dir(&dir.0));
    assert_eq!(output.status.code(), Some(2));
    let (output, stdout, stderr) = run(authgate()
        .arg("check")
        .current_dir(&dir.0)
        .env("AUTHGATE_CONFIG", &config));
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("cli-test-client"), "{stdout}");
}

#[test]
fn invalid_config_exits_2_without_binding() {
    let dir = TempDir::new();
    let listen = free_port();
    let mut bad = valid_config(listen, Some(CLIENT_SECRET));
    bad = bad.replace(
        "issuer = \"http://127.0.0.1:9/oidc\"",
        "issuer = \"not a url\"",
    );
    let config = dir.write("bad.toml", &bad);
    let mut child = authgate()
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2));
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("oidc.issuer"), "{stderr}");
    // Nothing ever took the port.
    std::net::TcpListener::bind(listen).expect("port was bound by an invalid config");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A raw upstream that answers only once released.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let arrived = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    tokio::spawn({
        let (arrived, release) = (arrived.clone(), release.clone());
        async move {
            let (mut tcp, _) = upstream.accept().await.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).await.unwrap() == 1 {
                head.push(byte[0]);
            }
            arrived.notify_one();
            release.notified().await;
            tcp.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ndrained")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    });

    let dir = TempDir::new();
    let listen = free_port();
    let config = valid_config(listen, Some(CLIENT_SECRET))
        .replace("http://127.0.0.1:9\"", &format!("http://{upstream_addr}\""))
        + "[[route]]\npath = \"/\"\npolicy = \"public\"\n";
    let config = dir.write("gateway.toml", &config);
    let mut child = authgate()
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let healthy = support::eventually(Duration::from_secs(30), || {
        let request = client.get(format!("http://{listen}/healthz")).send();
        async move { request.await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    if !healthy {
        let _ = child.kill();
        panic!("authgate never answered /healthz");
    }
    let in_flight = tokio::spawn(client.get(format!("http://{listen}/slow")).send());
    tokio::time::timeout(Duration::from_secs(10), arrived.notified())
        .await
        .expect("request never reached the upstream");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The listener closes at once...
    let closed = support::eventually(Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(listen).await.is_err()
    })
    .await;
    assert!(closed, "still accepting after SIGTERM");
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );
    // ...and the in-flight request still completes.
    release.notify_one();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "drained");
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut child, Duration::from_secs(20)))
            .await
            .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    std::net::TcpListener::bind(listen).unwrap();
}

#[test]
fn repo_gateway_toml_checks_with_secrets_from_env() {
    let repo_config = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml");
    let (output, stdout, stderr) = run(check(&repo_config)
        .env("AUTHGATE_OIDC__CLIENT_SECRET", CLIENT_SECRET)
        .env(
            "AUTHGATE_SESSION__COOKIE_SECRETS",
            format!("[{COOKIE_SECRET_A}]"),
        ));
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("[redacted]"));
    assert!(!stdout.contains(CLIENT_SECRET) && !stderr.contains(CLIENT_SECRET));
    assert!(!stdout.contains(COOKIE_SECRET_A) && !stderr.contains(COOKIE_SECRET_A));
    // Without the secrets the repo's file alone is not a working configuration.
    let (output, _, stderr) = run(&mut check(&repo_config));
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("session.cookie_secrets"), "{stderr}");
}

// --- authgate healthcheck ---------------------------------------------------------------

fn healthcheck(config: &Path) -> Command {
    let mut cmd = authgate();
    cmd.arg("healthcheck").arg("--config").arg(config);
    cmd
}

/// Start the gateway on `config` and wait until `probe_url` (its /healthz) answers 200.
async fn spawn_gateway(config: &Path, probe_url: String, client: reqwest::Client) -> Child {
    let mut child = authgate()
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let healthy = support::eventually(Duration::from_secs(30), || {
        let request = client.get(probe_url.clone()).send();
        async move { request.await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    if !healthy {
        let _ = child.kill();
        panic!("authgate never answered {probe_url}");
    }
    child
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn healthcheck_exits_0_against_a_gateway_listening_on_all_interfaces() {
    let dir = TempDir::new();
    // A wildcard `listen`: the probe must reach it on loopback.
    let port = free_port().port();
    let config = valid_config(SocketAddr::from(([0, 0, 0, 0], port)), None);
    let config = dir.write("gateway.toml", &config);
    let gateway = spawn_gateway(
        &config,
        format!("http://127.0.0.1:{port}/healthz"),
        reqwest::Client::new(),
    )
    .await;
    let (output, _, stderr) = run(&mut healthcheck(&config));
    stop(gateway);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}

#[tokio::test]
async fn healthcheck_speaks_tls_to_a_tls_listener_whatever_its_certificate_names() {
    let dir = TempDir::new();
    // A certificate for the public name only, as in production: never for 127.0.0.1.
    let certified = rcgen::generate_simple_self_signed(vec!["app.example.com".to_owned()]).unwrap();
    let cert = dir.write("tls.crt", &certified.cert.pem());
    let key = dir.write("tls.key", &certified.key_pair.serialize_pem());
    let listen = free_port();
    let config = valid_config(listen, None).replace(
        "[upstream]",
        &format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n[upstream]",
            cert.display(),
            key.display()
        ),
    );
    let config = dir.write("gateway.toml", &config);
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let gateway = spawn_gateway(&config, format!("https://{listen}/healthz"), client).await;
    let (output, _, stderr) = run(&mut healthcheck(&config));
    stop(gateway);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}

#[test]
fn healthcheck_exits_1_when_nothing_listens() {
    let dir = TempDir::new();
    let config = dir.write("gateway.toml", &valid_config(free_port(), None));
    let (output, _, stderr) = run(&mut healthcheck(&config));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot connect"), "{stderr}");
}

#[test]
fn healthcheck_exits_1_when_healthz_is_not_200() {
    use std::io::{Read, Write};
    // Something that answers HTTP on the port, but not 200.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = server.local_addr().unwrap();
    let answer = std::thread::spawn(move || {
        let (mut tcp, _) = server.accept().unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).unwrap() == 1 {
            head.push(byte[0]);
        }
        tcp.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        String::from_utf8_lossy(&head).into_owned()
    });
    let dir = TempDir::new();
    let config = dir.write("gateway.toml", &valid_config(listen, None));
    let (output, _, stderr) = run(&mut healthcheck(&config));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("503"), "{stderr}");
    let head = answer.join().unwrap();
    assert!(head.starts_with("GET /healthz HTTP/1.1\r\n"), "{head}");
}

#[test]
fn healthcheck_exits_1_not_2_on_an_invalid_config() {
    // Docker reserves exit code 2 of a health check: a bad configuration is "unhealthy".
    let dir = TempDir::new();
    let config = valid_config(free_port(), None).replace("http://127.0.0.1:9/oidc", "not a url");
    let config = dir.write("gateway.toml", &config);
    let (output, _, stderr) = run(&mut healthcheck(&config));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("oidc.issuer"), "{stderr}");
}

/// A certificate the gateway cannot use stops it at start (exit 1) with a message that names
/// the setting and the file, and says why, cause included (rustls' own reason).
#[test]
fn unusable_tls_files_exit_1_naming_the_file_and_the_cause() {
    let dir = TempDir::new();
    let one = rcgen::generate_simple_self_signed(vec!["a.example".to_owned()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["b.example".to_owned()]).unwrap();
    let cert = dir.write("tls.crt", &one.cert.pem());
    let wrong_key = dir.write("other.key", &other.key_pair.serialize_pem());
    let key_as_cert = dir.write("key-as.crt", &one.key_pair.serialize_pem());
    let key = dir.write("tls.key", &one.key_pair.serialize_pem());
    let start = |cert: &Path, key: &Path| {
        let config = valid_config(free_port(), None).replace(
            "[upstream]",
            &format!(
                "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n[upstream]",
                cert.display(),
                key.display()
            ),
        );
        let config = dir.write("gateway.toml", &config);
        let (output, _, stderr) = run(authgate().arg("--config").arg(&config));
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        stderr
    };

    let stderr = start(&cert, &wrong_key);
    let told = "TLS: certificate and key do not fit: ";
    let at = stderr.find(told).unwrap_or_else(|| panic!("{stderr}"));
    // rustls' reason follows (the cause, not just the context).
    let reason = stderr[at + told.len()..].lines().next().unwrap_or("");
    assert!(reason.trim().len() > 3, "no cause in: {stderr}");

    let stderr = start(&key_as_cert, &key);
    let told = format!(
        "TLS: server.tls_cert_file {}: no certificate found",
        key_as_cert.display()
    );
    assert!(stderr.contains(&told), "{stderr}");
}

// === check: files, warnings, every error ===

/// A certificate, key or CA file the gateway would refuse at start is refused by `check`
/// too (exit 2, naming the setting and the file), instead of `check` passing and the run
/// then exiting 1.
#[test]
fn check_parses_the_tls_and_ca_files() {
    let dir = TempDir::new();
    let one = rcgen::generate_simple_self_signed(vec!["a.example".to_owned()]).unwrap();
    let cert = dir.write("tls.crt", &one.cert.pem());
    let key = dir.write("tls.key", &one.key_pair.serialize_pem());
    let garbage = dir.write("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64\n");
    let with = |cert: &Path, key: &Path, ca: Option<&Path>| {
        let ca = ca
            .map(|ca| format!("ca_file = \"{}\"\n", ca.display()))
            .unwrap_or_default();
        let config = valid_config(free_port(), None).replace(
            "[upstream]\n",
            &format!(
                "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n[upstream]\n{ca}",
                cert.display(),
                key.display()
            ),
        );
        let config = dir.write("gateway.toml", &config);
        let (output, stdout, stderr) = run(&mut check(&config));
        (output.status.code(), stdout, stderr)
    };
    let (code, _, stderr) = with(&cert, &key, Some(&cert));
    assert_eq!(code, Some(0), "{stderr}");

    let (code, stdout, stderr) = with(&garbage, &key, None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("server.tls_cert_file") && stderr.contains("garbage.pem"),
        "{stderr}"
    );
    let (code, _, stderr) = with(&cert, &garbage, None);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("garbage.pem"), "{stderr}");
    let no_pem = dir.write("empty-bundle.pem", "no certificate here\n");
    for ca in [&garbage, &no_pem] {
        let (code, _, stderr) = with(&cert, &key, Some(ca));
        assert_eq!(code, Some(2), "{stderr}");
        let file = ca.file_name().unwrap().to_str().unwrap();
        assert!(
            stderr.contains("upstream.ca_file") && stderr.contains(file),
            "{stderr}"
        );
    }
}

/// Valid but almost certainly wrong: warned about on stderr, exit 0.
#[test]
fn check_warns_about_likely_mistakes() {
    let dir = TempDir::new();
    let config = valid_config(free_port(), None)
        .replace("cookie_secure = false", "cookie_secure = false\ncookie_samesite = \"strict\"")
        .replace(
            "client_id = \"cli-test-client\"",
            "client_id = \"cli-test-client\"\nextra_auth_params = { redirect_uri = \"https://x\", nonce = \"n\", prompt = \"login\" }",
        )
        + r#"
[[route]]
path = "/api/"
[[route]]
path = "/api/admin/"
policy = "deny"
[[route]]
path = "/api/admin"
match = "exact"
methods = ["GET"]
[[route]]
path = "/upload"
methods = ["POST", "PSOT"]
[[route]]
path = "/upload/big"
methods = ["POST"]
[[route]]
path = "/upload/get"
methods = ["GET"]
[[route]]
path = '^/v[0-9]+/x$'
match = "regex"
[[route]]
path = "/v2/x"
match = "exact"
[[route]]
path = "/v2/y"
match = "exact"
[[route]]
host = "*.example.com"
path = "/h/"
[[route]]
host = "other.example.org"
path = "/h/"
[[route]]
host = "a.example.com"
path = "/h/x"
[[route]]
path = "/h/"
"#;
    let config = dir.write("gateway.toml", &config);
    let (output, stdout, stderr) = run(&mut check(&config));
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains("[server]"), "{stdout}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    for expected in [
        "warning: oidc.extra_auth_params.redirect_uri: ",
        "warning: oidc.extra_auth_params.nonce: ",
        "warning: session.cookie_samesite: ",
        "warning: route[1]: never matches: every request it would match is taken by route[0]",
        "warning: route[2]: never matches: every request it would match is taken by route[0]",
        "warning: route[3].methods: `PSOT` is not an HTTP method",
        "warning: route[4]: never matches: every request it would match is taken by route[3]",
        "warning: route[7]: never matches: every request it would match is taken by route[6]",
        "warning: route[11]: never matches: every request it would match is taken by route[9]",
    ] {
        assert!(
            warnings.iter().any(|w| w.starts_with(expected)),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    // `prompt` is the user's to set; GET on /upload/get is not taken by a POST route; /v2/y
    // is not matched by the regex; a route for another host, or for every host after a
    // host-scoped one, is not shadowed.
    assert_eq!(warnings.len(), 9, "{stderr}");
}

/// One wrong value does not hide the next one in the same table, and a typo gets the key
/// that was meant.
#[test]
fn check_lists_every_error_and_suggests_the_key_meant() {
    let dir = TempDir::new();
    let config = valid_config(free_port(), None)
        .replace(
            "shutdown_grace = \"5s\"",
            "shutdown_grace = \"5s\"\nmax_connections = \"lots\"\nidle_timout = \"1m\"\nmax_headers = -1",
        )
        + "[[route]]\npath = \"/a\"\nmatchh = \"exact\"\napi = \"yes\"\n";
    let config = dir.write("gateway.toml", &config);
    let (output, _, stderr) = run(&mut check(&config));
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for expected in [
        "server.max_connections: invalid type",
        "server.idle_timout: unknown field `idle_timout` (did you mean `idle_timeout`?)",
        "server.max_headers: invalid",
        "route[0].matchh: unknown field `matchh` (did you mean `match`?)",
        "route[0].api: invalid type",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

// --- SIGHUP reload and the session snapshot, through the binary -------------------------

/// The code flow against a gateway at `base` (the provider logs `user` in by itself).
async fn log_in(client: &reqwest::Client, base: &str, idp: &devidp::idp::DevIdp, user: &str) {
    idp.controls().set_auto_login(Some(user.to_owned()));
    let start = client
        .get(format!("{base}/oauth2/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 302, "start");
    let back = client.get(support::location(&start)).send().await.unwrap();
    assert_eq!(back.status(), 302, "authorize");
    let done = client.get(support::location(&back)).send().await.unwrap();
    assert_eq!(done.status(), 302, "callback");
}

fn kill(signal: &str, child: &Child) {
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

async fn metric_of(client: &reqwest::Client, base: &str, series: &str) -> Option<f64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    support::metric(&text, series)
}

/// SIGHUP reloads the file (a route turns to deny within 1 s; an invalid file changes
/// nothing and counts a failure); SIGTERM writes the sessions, and the next start reads them
/// back: the same cookie is still logged in, with no token request.
#[tokio::test]
async fn sighup_reloads_and_sessions_survive_sigterm() {
    let idp = support::start_idp().await;
    let (upstream, _, _task) = support::echo_upstream().await;
    let dir = TempDir::new();
    let listen = free_port();
    let base = format!("http://{listen}");
    let snapshot = dir.0.join("sessions");
    let config_with = |policy: &str| {
        format!(
            r#"
[server]
listen = "{listen}"
public_url = "{base}"
shutdown_grace = "5s"
[upstream]
url = "http://{upstream}"
[oidc]
issuer = "{}"
client_id = "{}"
client_secret = "{}"
[session]
cookie_secrets = ["{COOKIE_SECRET_A}"]
cookie_secure = false
snapshot_file = "{}"
[[route]]
path = "/pub/"
policy = "{policy}"
"#,
            idp.issuer(),
            support::CLIENT_ID,
            support::CLIENT_SECRET,
            snapshot.display()
        )
    };
    let config = dir.write("gateway.toml", &config_with("public"));
    let client = support::bare_client();
    let user = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let child = spawn_gateway(&config, format!("{base}/readyz"), client.clone()).await;
    log_in(&user, &base, &idp, "alice").await;
    let public = format!("{base}/pub/x");
    assert_eq!(client.get(&public).send().await.unwrap().status(), 200);

    dir.write("gateway.toml", &config_with("deny"));
    let sent = Instant::now();
    kill("-HUP", &child);
    let denied = support::eventually(Duration::from_secs(1), || {
        let request = client.get(&public).send();
        async move { request.await.is_ok_and(|r| r.status() == 403) }
    })
    .await;
    let took = sent.elapsed();
    assert!(denied, "the reload did not apply within 1 s");
    eprintln!("SIGHUP to the first denied answer: {took:?}");
    let reloads = "authgate_config_reloads_total{result=\"success\"}";
    assert_eq!(metric_of(&client, &base, reloads).await, Some(1.0));

    dir.write("gateway.toml", "[server\nthis is not TOML");
    kill("-HUP", &child);
    let failures = "authgate_config_reloads_total{result=\"failure\"}";
    let counted = support::eventually(Duration::from_secs(5), || {
        let client = client.clone();
        let base = base.clone();
        async move { metric_of(&client, &base, failures).await == Some(1.0) }
    })
    .await;
    assert!(counted, "the failed reload was not counted");
    assert_eq!(client.get(&public).send().await.unwrap().status(), 403);
    let session = user.get(format!("{base}/app")).send().await.unwrap();
    assert_eq!(session.status(), 200, "the session works after the reloads");

    // SIGTERM: the sessions are written; the next start reads them back.
    let mut child = child;
    kill("-TERM", &child);
    let status = tokio::task::spawn_blocking(move || {
        let status = wait_exit(&mut child, Duration::from_secs(20));
        (status, child)
    })
    .await
    .unwrap()
    .0;
    assert_eq!(status.code(), Some(0));
    assert!(snapshot.exists(), "no snapshot written");
    let token_calls = idp.controls().code_calls() + idp.controls().refresh_calls();
    dir.write("gateway.toml", &config_with("public"));
    let child = spawn_gateway(&config, format!("{base}/readyz"), client.clone()).await;
    let response = (user.get(format!("{base}/app")))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "logged out by the restart");
    let body = response.text().await.unwrap();
    let echo: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(
        echo["headers"]["x-forwarded-user"][0],
        serde_json::json!("alice"),
        "{echo}"
    );
    assert_eq!(
        idp.controls().code_calls() + idp.controls().refresh_calls(),
        token_calls,
        "a token request after the restart"
    );
    stop(child);
}

/// `server.watch_config`: a configuration file updated the way Kubernetes updates a mounted
/// ConfigMap (a `..data` symlink swapped to a new directory) is reloaded without a signal.
#[cfg(unix)]
#[tokio::test]
async fn watch_config_reloads_a_file_swapped_like_a_configmap() {
    use std::os::unix::fs::symlink;
    let (upstream, _, _task) = support::echo_upstream().await;
    let dir = TempDir::new();
    let listen = free_port();
    let config_with = |policy: &str| {
        valid_config(listen, Some(CLIENT_SECRET))
            .replace(
                "http://127.0.0.1:9\"\n[oidc]",
                &format!("http://{upstream}\"\n[oidc]"),
            )
            .replace("[upstream]", "watch_config = true\n[upstream]")
            + &format!("[[route]]\npath = \"/pub/\"\npolicy = \"{policy}\"\n")
    };
    std::fs::create_dir_all(dir.0.join("v1")).unwrap();
    std::fs::create_dir_all(dir.0.join("v2")).unwrap();
    dir.write("v1/gateway.toml", &config_with("public"));
    dir.write("v2/gateway.toml", &config_with("deny"));
    symlink("v1", dir.0.join("..data")).unwrap();
    symlink("..data/gateway.toml", dir.0.join("gateway.toml")).unwrap();
    let client = support::bare_client();
    let base = format!("http://{listen}");
    let child = spawn_gateway(
        &dir.0.join("gateway.toml"),
        format!("{base}/healthz"),
        client.clone(),
    )
    .await;
    let public = format!("{base}/pub/x");
    assert_eq!(client.get(&public).send().await.unwrap().status(), 200);
    // The kubelet's atomic update: a new symlink renamed over `..data`.
    symlink("v2", dir.0.join("..data_tmp")).unwrap();
    std::fs::rename(dir.0.join("..data_tmp"), dir.0.join("..data")).unwrap();
    let denied = support::eventually(Duration::from_secs(10), || {
        let request = client.get(&public).send();
        async move { request.await.is_ok_and(|r| r.status() == 403) }
    })
    .await;
    stop(child);
    assert!(denied, "the swapped file was not reloaded");
}
