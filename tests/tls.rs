//! HTTPS on the listener: HTTP/1.1 and HTTP/2 by ALPN, plain HTTP refused, the TLS
//! handshake timeout, and the first-request deadline (`header_read_timeout` from accept, the
//! handshake included).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, StatusCode, Version, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{Echo, Harness, eventually};

struct Tls {
    h: Harness,
    cert_pem: String,
    cert_der: rustls_pki_types::CertificateDer<'static>,
    dir: PathBuf,
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Tls {
    /// `https://localhost:<port>` (the client resolves localhost to the gateway).
    fn at(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.h.addr.port())
    }

    fn client(&self, http1_only: bool) -> Client {
        let mut builder = Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).unwrap())
            .resolve("localhost", self.h.addr)
            .timeout(Duration::from_secs(20));
        if http1_only {
            builder = builder.http1_only();
        }
        builder.build().unwrap()
    }
}

/// A gateway serving HTTPS with a fresh self-signed certificate for `localhost`.
async fn start(extra: &str) -> Tls {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    let cert_der = certified.cert.der().clone();
    let dir = std::env::temp_dir().join(format!(
        "authgate-tls-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let h = Harness::builder()
        .config("[[route]]\npath = \"/\"\npolicy = \"public\"")
        .config(&format!(
            "[server]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n{extra}",
            cert.display().to_string(),
            key.display().to_string()
        ))
        // The harness polls /readyz over plain HTTP: wait over HTTPS instead.
        .no_wait_ready()
        .start()
        .await;
    let tls = Tls {
        h,
        cert_pem,
        cert_der,
        dir,
    };
    let client = tls.client(true);
    let ready = eventually(Duration::from_secs(10), || {
        let request = client.get(tls.at("/readyz")).send();
        async move { request.await.is_ok_and(|r| r.status() == StatusCode::OK) }
    })
    .await;
    assert!(ready, "HTTPS gateway never became ready");
    tls
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

async fn echo(client: &Client, url: String) -> (Version, Echo) {
    let response = client
        .get(url)
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let version = response.version();
    (version, Echo(response.json().await.unwrap()))
}

#[tokio::test]
async fn https_over_http1() {
    let tls = start("").await;
    let (version, echo) = echo(&tls.client(true), tls.at("/one")).await;
    assert_eq!(version, Version::HTTP_11);
    assert_eq!(echo.path(), "/one");
    assert_eq!(echo.header("x-forwarded-proto").as_deref(), Some("https"));
}

#[tokio::test]
async fn https_negotiates_http2_by_alpn() {
    let tls = start("").await;
    let (version, echo) = echo(&tls.client(false), tls.at("/two")).await;
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(echo.path(), "/two");
    assert_eq!(echo.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        echo.header("host"),
        Some(format!("localhost:{}", tls.h.addr.port()))
    );
}

#[tokio::test]
async fn plain_http_to_the_tls_port_fails() {
    let tls = start("").await;
    let plain = tls.h.client();
    let result = plain
        .get(format!("http://{}/healthz", tls.h.addr))
        .send()
        .await;
    assert!(
        result.is_err(),
        "plain HTTP answered on the TLS port: {:?}",
        result.map(|r| r.status())
    );
    // The same path over HTTPS works.
    let ok = tls
        .client(true)
        .get(tls.at("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn silent_client_is_dropped_after_the_handshake_timeout() {
    let tls = start("tls_handshake_timeout = \"1s\"").await;
    let mut silent = TcpStream::connect(tls.h.addr).await.unwrap();
    // Meanwhile other clients are served (new connection each time, fresh handshakes).
    for _ in 0..3 {
        let client = tls.client(true);
        let ok = client.get(tls.at("/healthz")).send().await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
    }
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(15), silent.read(&mut buf))
        .await
        .expect("a client that never sent a ClientHello was kept open");
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("server sent {n} bytes to a client that never said hello"),
    }
}

/// Time until the gateway closes `stream` (reading and discarding), `None` if still open
/// after `limit`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Option<Duration> {
    let started = std::time::Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_slow_handshake_is_closed_at_header_read_timeout() {
    // The handshake alone may take 30 s, but the first request head is due within 1 s of
    // accept: the handshake is part of that.
    let tls = start("tls_handshake_timeout = \"30s\"\nheader_read_timeout = \"1s\"").await;
    let mut slow = TcpStream::connect(tls.h.addr).await.unwrap();
    // The start of a TLS record (a ClientHello on its way), then nothing.
    slow.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    let closed = closed_within(&mut slow, Duration::from_secs(10)).await;
    assert!(
        closed.is_some(),
        "a handshake still unfinished after header_read_timeout was kept open"
    );
}

#[tokio::test]
async fn a_tls_connection_without_a_request_is_closed_at_header_read_timeout() {
    let tls = start("header_read_timeout = \"1s\"").await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(tls.cert_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(tls.h.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    // Handshake done; no request follows.
    let closed = closed_within(&mut stream, Duration::from_secs(10)).await;
    let closed = closed.expect("a TLS connection that sent no request was kept open");
    assert!(closed < Duration::from_secs(5), "closed late: {closed:?}");
}
