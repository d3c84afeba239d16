//! The proxy core: header hygiene, X-Forwarded-*, streaming both ways, WebSocket tunnels,
//! upstream failures (502/504), HTTP/2 clients, request limits, graceful drain, status
//! endpoints and metrics, and serving while the provider is undiscovered.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use reqwest::{StatusCode, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

use support::{Harness, bind, eventually, metric};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type UpBody = BoxBody<Bytes, BoxError>;

const PUBLIC: &str = "[[route]]\npath = \"/\"\npolicy = \"public\"\n";

// --- helpers -------------------------------------------------------------------------------

/// A hyper 1 HTTP/1.1 upstream on 127.0.0.1:0 answering with `handler`.
async fn upstream<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<UpBody>> + Send + 'static,
{
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

fn full(body: impl Into<Bytes>) -> UpBody {
    Full::new(body.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn text(body: impl Into<Bytes>) -> Response<UpBody> {
    Response::new(full(body))
}

/// Read an HTTP head (through the blank line), byte by byte so nothing after it is consumed.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
        assert!(head.len() < 256 * 1024, "head too long");
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A port nothing listens on (bound, then released).
async fn closed_port() -> SocketAddr {
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// Peak resident memory of this process (Linux), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn chunk_stream(
    rx: mpsc::Receiver<Bytes>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) },
    )
}

// --- hop-by-hop ----------------------------------------------------------------------------

#[tokio::test]
async fn hop_by_hop_request_headers_never_reach_the_upstream() {
    let h = Harness::builder().config(PUBLIC).start().await;
    let response = h
        .client()
        .get(h.at("/hop"))
        .header(header::ACCEPT, "application/json")
        .header(header::CONNECTION, "keep-alive, x-secret")
        .header("keep-alive", "timeout=5")
        .header(header::TE, "trailers")
        .header(header::TRAILER, "x-checksum")
        .header(header::PROXY_AUTHORIZATION, "Basic cHJveHk6c2VjcmV0")
        .header(header::UPGRADE, "h2c")
        .header("x-secret", "1")
        .header("x-kept", "yes")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let echo = support::Echo(response.json().await.unwrap());
    for name in [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "upgrade",
        "x-secret",
    ] {
        assert_eq!(echo.header(name), None, "{name} reached the upstream");
    }
    assert_eq!(echo.header("x-kept").as_deref(), Some("yes"));
}

#[tokio::test]
async fn hop_by_hop_response_headers_never_reach_the_client() {
    // A raw upstream so that the response head is exactly what we write.
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                loop {
                    let head = read_head(&mut tcp).await;
                    if head.is_empty() {
                        return;
                    }
                    let body = "hello";
                    let response = format!(
                        "HTTP/1.1 200 OK\r\n\
                         Connection: keep-alive, x-up-secret\r\n\
                         Keep-Alive: timeout=5\r\n\
                         X-Up-Secret: 1\r\n\
                         Proxy-Authenticate: Basic realm=\"up\"\r\n\
                         Trailer: x-checksum\r\n\
                         Upgrade: h2c\r\n\
                         X-Kept: yes\r\n\
                         Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tcp.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let h = Harness::builder()
        .config(PUBLIC)
        .upstream(addr)
        .start()
        .await;
    let response = h.client().get(h.at("/x")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    for name in [
        "keep-alive",
        "x-up-secret",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    ] {
        assert!(!headers.contains_key(name), "{name} reached the client");
    }
    if let Some(connection) = headers.get(header::CONNECTION) {
        assert!(
            !connection.to_str().unwrap().contains("x-up-secret"),
            "{connection:?}"
        );
    }
    assert_eq!(headers["x-kept"], "yes");
    assert_eq!(response.text().await.unwrap(), "hello");
}

// --- X-Forwarded-* -------------------------------------------------------------------------

#[tokio::test]
async fn forwarded_headers_are_replaced_for_untrusted_peers() {
    let h = Harness::builder().config(PUBLIC).start().await;
    let response = h
        .client()
        .get(h.at("/xff"))
        .header(header::ACCEPT, "application/json")
        .header("x-forwarded-for", "1.2.3.4")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "evil.example")
        .send()
        .await
        .unwrap();
    let echo = support::Echo(response.json().await.unwrap());
    assert_eq!(echo.header_values("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(echo.header_values("x-forwarded-proto"), vec!["http"]);
    assert_eq!(
        echo.header_values("x-forwarded-host"),
        vec![h.addr.to_string()]
    );
    assert_eq!(echo.header("host"), Some(h.addr.to_string()));
}

#[tokio::test]
async fn forwarded_headers_are_extended_for_trusted_proxies() {
    let h = Harness::builder()
        .config(PUBLIC)
        .config("[server]\ntrusted_proxies = [\"127.0.0.1/32\"]")
        .start()
        .await;
    let response = h
        .client()
        .get(h.at("/xff"))
        .header(header::ACCEPT, "application/json")
        .header("x-forwarded-for", "1.2.3.4")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "app.example.com")
        .send()
        .await
        .unwrap();
    let echo = support::Echo(response.json().await.unwrap());
    assert_eq!(
        echo.header_values("x-forwarded-for"),
        vec!["1.2.3.4, 127.0.0.1"]
    );
    assert_eq!(echo.header_values("x-forwarded-proto"), vec!["https"]);
    assert_eq!(
        echo.header_values("x-forwarded-host"),
        vec!["app.example.com"]
    );
    // Without incoming values, a trusted peer gets the gateway's own.
    let echo = h.echo(&h.client(), "/plain").await;
    assert_eq!(echo.header_values("x-forwarded-for"), vec!["127.0.0.1"]);
    assert_eq!(echo.header_values("x-forwarded-proto"), vec!["http"]);
}

// --- streaming -----------------------------------------------------------------------------

const CHUNK: usize = 64 * 1024;
const BIG: u64 = 256 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_streams_chunk_by_chunk() {
    let first_bytes = Arc::new(Notify::new());
    let addr = upstream({
        let first_bytes = first_bytes.clone();
        move |req: Request<Incoming>| {
            let first_bytes = first_bytes.clone();
            async move {
                let mut body = req.into_body();
                let mut n: u64 = 0;
                while let Some(frame) = body.frame().await {
                    let Ok(frame) = frame else {
                        return text(format!("error after {n}"));
                    };
                    if let Some(data) = frame.data_ref() {
                        if n == 0 && !data.is_empty() {
                            first_bytes.notify_one();
                        }
                        n += data.len() as u64;
                    }
                }
                text(n.to_string())
            }
        }
    })
    .await;
    let h = Harness::builder()
        .config(PUBLIC)
        .upstream(addr)
        .start()
        .await;
    let peak_before = peak_rss();

    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let request = tokio::spawn(
        reqwest::Client::new()
            .post(h.at("/upload"))
            .body(reqwest::Body::wrap_stream(chunk_stream(rx)))
            .send(),
    );
    let chunk = Bytes::from(vec![b'u'; CHUNK]);
    tx.send(chunk.clone()).await.unwrap();
    // Only one chunk is out: the upstream must see it before the client sends anything else.
    tokio::time::timeout(Duration::from_secs(30), first_bytes.notified())
        .await
        .expect("the upstream got no bytes while the client was still sending");
    for _ in 1..(BIG as usize / CHUNK) {
        tx.send(chunk.clone()).await.unwrap();
    }
    drop(tx);
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), BIG.to_string());
    if let (Some(before), Some(after)) = (peak_before, peak_rss()) {
        assert!(
            after.saturating_sub(before) < BIG / 2,
            "peak RSS grew by {} bytes for a {BIG}-byte upload",
            after - before
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_streams_chunk_by_chunk() {
    let release = Arc::new(Notify::new());
    let produced_last = Arc::new(AtomicBool::new(false));
    let addr = upstream({
        let release = release.clone();
        let produced_last = produced_last.clone();
        move |_req: Request<Incoming>| {
            let release = release.clone();
            let produced_last = produced_last.clone();
            async move {
                let (tx, rx) = mpsc::channel::<Bytes>(4);
                tokio::spawn(async move {
                    let chunk = Bytes::from(vec![b'd'; CHUNK]);
                    let _ = tx.send(chunk.clone()).await;
                    // Wait until the client has the first chunk before producing the rest.
                    release.notified().await;
                    for _ in 1..(BIG as usize / CHUNK) {
                        if tx.send(chunk.clone()).await.is_err() {
                            return;
                        }
                    }
                    produced_last.store(true, Ordering::SeqCst);
                });
                let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
                });
                Response::new(BodyExt::boxed(StreamBody::new(stream)))
            }
        }
    })
    .await;
    let h = Harness::builder()
        .config(PUBLIC)
        .upstream(addr)
        .start()
        .await;
    let peak_before = peak_rss();
    let mut response = reqwest::Client::new()
        .get(h.at("/download"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let first = tokio::time::timeout(Duration::from_secs(30), response.chunk())
        .await
        .expect("no first chunk while the upstream was still producing")
        .unwrap()
        .expect("body ended early");
    assert!(!first.is_empty());
    assert!(!produced_last.load(Ordering::SeqCst));
    release.notify_one();
    let mut total = first.len() as u64;
    while let Some(chunk) = response.chunk().await.unwrap() {
        assert!(chunk.iter().all(|&b| b == b'd'));
        total += chunk.len() as u64;
    }
    assert_eq!(total, BIG);
    assert!(produced_last.load(Ordering::SeqCst));
    if let (Some(before), Some(after)) = (peak_before, peak_rss()) {
        assert!(
            after.saturating_sub(before) < BIG / 2,
            "peak RSS grew by {} bytes for a {BIG}-byte download",
            after - before
        );
    }
}

// --- WebSocket -----------------------------------------------------------------------------

/// A raw upstream: `GET /ws` with `Upgrade: websocket` gets 101 (fixed accept value: the
/// gateway does not check it), then every byte is echoed. Heads it received are reported.
async fn ws_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let head = read_head(&mut tcp).await;
                let lower = head.to_ascii_lowercase();
                let _ = seen_tx.send(head);
                if !(lower.starts_with("get /ws ") && lower.contains("upgrade: websocket")) {
                    let _ = tcp
                        .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\n\
                          Upgrade: websocket\r\n\
                          Connection: Upgrade\r\n\
                          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                    )
                    .await;
                let mut buf = [0u8; 4096];
                loop {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tcp.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, seen_rx)
}

async fn ws_handshake(gateway: SocketAddr, cookie: Option<&str>) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(gateway).await.unwrap();
    let cookie = cookie
        .map(|c| format!("Cookie: authgate_session={c}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /ws HTTP/1.1\r\n\
         Host: {gateway}\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\
         {cookie}\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut tcp))
        .await
        .expect("no response head");
    (tcp, head)
}

async fn assert_echoes(tcp: &mut TcpStream) {
    for message in [&b"ping through the tunnel"[..], b"\x00\x01binary\xff"] {
        tcp.write_all(message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut back))
            .await
            .expect("no echo")
            .unwrap();
        assert_eq!(back, message);
    }
}

#[tokio::test]
async fn websocket_is_tunnelled_on_a_public_route() {
    let (addr, mut seen) = ws_upstream().await;
    let h = Harness::builder()
        .config(PUBLIC)
        .upstream(addr)
        .start()
        .await;
    let (mut tcp, head) = ws_handshake(h.addr, None).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    assert_echoes(&mut tcp).await;
    let upstream_head = seen.recv().await.unwrap().to_ascii_lowercase();
    assert!(upstream_head.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq=="));
    assert!(upstream_head.contains("connection: upgrade"));
}

#[tokio::test]
async fn websocket_on_an_authenticated_route_needs_a_session() {
    let (addr, mut seen) = ws_upstream().await;
    // No routes: everything is `authenticated`.
    let h = Harness::builder().upstream(addr).start().await;
    let (_tcp, head) = ws_handshake(h.addr, None).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(seen.try_recv().is_err(), "forwarded without a session");

    let cookie = h.login(&h.client(), "alice").await;
    let (mut tcp, head) = ws_handshake(h.addr, Some(&cookie)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_echoes(&mut tcp).await;
    let upstream_head = seen.recv().await.unwrap().to_ascii_lowercase();
    assert!(
        upstream_head.contains("authorization: bearer "),
        "{upstream_head}"
    );
    assert!(upstream_head.contains("x-forwarded-user: alice"));
    assert!(!upstream_head.contains("authgate_session"));
}

// --- upstream failures ---------------------------------------------------------------------

#[tokio::test]
async fn closed_upstream_port_is_502_and_the_session_survives() {
    let dead = closed_port().await;
    let h = Harness::builder()
        .config("[[route]]\npath = \"/public\"\npolicy = \"public\"")
        .upstream(dead)
        .start()
        .await;
    let client = h.client();
    let response = client.get(h.at("/public/x")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body = response.text().await.unwrap();
    assert!(body.len() < 100, "{body}");
    assert!(!body.contains("127.0.0.1") && !body.contains(&dead.port().to_string()));

    h.login(&client, "alice").await;
    let response = client
        .get(h.at("/app"))
        .header(header::ACCEPT, "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let userinfo = client.get(h.at("/oauth2/userinfo")).send().await.unwrap();
    assert_eq!(
        userinfo.status(),
        StatusCode::OK,
        "session lost after a 502"
    );

    let metrics = h.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "authgate_upstream_errors_total{kind=\"unreachable\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
}

/// A raw upstream that reads the request head and then writes `answer` (possibly nothing)
/// and holds the connection open without another byte.
async fn stalling_upstream(answer: &'static [u8]) -> SocketAddr {
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let _ = read_head(&mut tcp).await;
                let _ = tcp.write_all(answer).await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(tcp);
            });
        }
    });
    addr
}

#[tokio::test]
async fn stalled_upstream_is_504() {
    let addr = stalling_upstream(b"").await;
    let h = Harness::builder()
        .config(PUBLIC)
        .config("[upstream]\ntimeout = \"1s\"")
        .upstream(addr)
        .start()
        .await;
    let response = h.client().get(h.at("/slow")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    let metrics = h.metrics().await;
    assert_eq!(
        metric(&metrics, "authgate_upstream_errors_total{kind=\"timeout\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn body_stalling_mid_stream_is_cut() {
    const HEAD_AND_SOME: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n\
        aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let addr = stalling_upstream(HEAD_AND_SOME).await;
    let h = Harness::builder()
        .config(PUBLIC)
        .config("[upstream]\ntimeout = \"1s\"")
        .upstream(addr)
        .start()
        .await;
    // No client timeout: only the gateway can end this body.
    let client = reqwest::Client::new();
    let response = client.get(h.at("/stall")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = tokio::time::timeout(Duration::from_secs(20), response.bytes())
        .await
        .expect("the gateway never cut the stalled body");
    match body {
        Err(_) => {}
        Ok(bytes) => assert!(
            bytes.len() < 1_000_000,
            "complete body from a stalled upstream"
        ),
    }
}

// --- HTTP/2 --------------------------------------------------------------------------------

/// HTTP/1.0 allows a request without `Host`; the upstream (HTTP/1.1) must get one: the
/// upstream's own.
#[tokio::test]
async fn a_request_without_host_reaches_the_upstream_with_the_upstreams_host() {
    let addr = upstream(|req: Request<Incoming>| async move {
        let host = req.headers().get(hyper::header::HOST).cloned();
        text(format!("host={host:?}"))
    })
    .await;
    let h = Harness::builder()
        .config(PUBLIC)
        .upstream(addr)
        .start()
        .await;
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    tcp.write_all(b"GET /old HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(
        answer.ends_with(&format!("host=Some(\"{addr}\")")),
        "{answer}"
    );
}

#[tokio::test]
async fn h2c_client_is_proxied_to_an_http1_upstream() {
    let addr = upstream(|req: Request<Incoming>| async move {
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        text(format!("{:?} host={host}", req.version()))
    })
    .await;
    let h = Harness::builder()
        .config(PUBLIC)
        .upstream(addr)
        .start()
        .await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client.get(h.at("/h2")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(
        response.text().await.unwrap(),
        format!("HTTP/1.1 host={}", h.addr)
    );
}

// --- limits --------------------------------------------------------------------------------

#[tokio::test]
async fn too_many_or_too_large_headers_are_refused() {
    let count = Arc::new(AtomicUsize::new(0));
    let addr = upstream({
        let count = count.clone();
        move |_req: Request<Incoming>| {
            count.fetch_add(1, Ordering::SeqCst);
            async { text("ok") }
        }
    })
    .await;
    let h = Harness::builder()
        .config(PUBLIC)
        .upstream(addr)
        .start()
        .await;
    let client = reqwest::Client::new();
    let with_headers = |n: usize| {
        let mut req = client.get(h.at("/limits"));
        for i in 0..n {
            req = req.header(format!("x-h-{i}"), "v");
        }
        req
    };
    // Control: a reasonable request passes.
    let ok = with_headers(40).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(count.load(Ordering::SeqCst), 1);

    match with_headers(150).send().await {
        Err(_) => {}
        Ok(r) => assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
    }
    match client
        .get(h.at("/limits"))
        .header("x-big", "a".repeat(70 * 1024))
        .send()
        .await
    {
        Err(_) => {}
        Ok(r) => assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "an oversized request was forwarded"
    );
}

// --- graceful drain ------------------------------------------------------------------------

/// An upstream that answers `/slow` only once `release` is notified (and says so on
/// `arrived`); everything else at once.
async fn slow_upstream(release: Arc<Notify>, arrived: Arc<Notify>) -> SocketAddr {
    upstream(move |req: Request<Incoming>| {
        let release = release.clone();
        let arrived = arrived.clone();
        async move {
            if req.uri().path() == "/slow" {
                arrived.notify_one();
                release.notified().await;
                return text("released");
            }
            text("fast")
        }
    })
    .await
}

#[tokio::test]
async fn shutdown_refuses_new_connections_and_drains_in_flight_requests() {
    let release = Arc::new(Notify::new());
    let arrived = Arc::new(Notify::new());
    let addr = slow_upstream(release.clone(), arrived.clone()).await;
    let mut h = Harness::builder()
        .config(PUBLIC)
        .upstream(addr)
        .start()
        .await;
    let in_flight = tokio::spawn(reqwest::Client::new().get(h.at("/slow")).send());
    tokio::time::timeout(Duration::from_secs(10), arrived.notified())
        .await
        .expect("slow request never reached the upstream");

    h.begin_shutdown();
    let gateway = h.addr;
    assert!(
        eventually(Duration::from_secs(5), || async move {
            TcpStream::connect(gateway).await.is_err()
        })
        .await,
        "new connections still accepted after shutdown began"
    );
    assert!(!in_flight.is_finished());

    release.notify_one();
    let response = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("in-flight request not drained")
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "released");
    let server = h.server.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server task did not end after draining")
        .unwrap();
}

// --- status endpoints and metrics ----------------------------------------------------------

#[tokio::test]
async fn health_ready_and_metrics() {
    let release = Arc::new(Notify::new());
    let arrived = Arc::new(Notify::new());
    let addr = slow_upstream(release.clone(), arrived.clone()).await;
    let h = Harness::builder()
        .config(PUBLIC)
        .upstream(addr)
        .start()
        .await;
    let client = h.client();
    let healthz = client.get(h.at("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), StatusCode::OK);
    let readyz = client.get(h.at("/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), StatusCode::OK);

    let fast = client.get(h.at("/fast")).send().await.unwrap();
    assert_eq!(fast.text().await.unwrap(), "fast");
    let metrics = h.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "authgate_requests_total{route=\"/\",status=\"200\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    // Only the /metrics request itself.
    assert_eq!(
        metric(&metrics, "authgate_requests_in_flight"),
        Some(1.0),
        "{metrics}"
    );

    let slow = tokio::spawn(client.get(h.at("/slow")).send());
    tokio::time::timeout(Duration::from_secs(10), arrived.notified())
        .await
        .unwrap();
    let metrics = h.metrics().await;
    assert_eq!(metric(&metrics, "authgate_requests_in_flight"), Some(2.0));
    release.notify_one();
    assert_eq!(slow.await.unwrap().unwrap().status(), StatusCode::OK);
    let metrics = h.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "authgate_requests_total{route=\"/\",status=\"200\"}"
        ),
        Some(2.0)
    );
    assert_eq!(metric(&metrics, "authgate_requests_in_flight"), Some(1.0));
}

#[tokio::test]
async fn metrics_listen_serves_metrics_elsewhere_and_main_listener_proxies_them() {
    let metrics_addr = closed_port().await;
    let h = Harness::builder()
        .config(PUBLIC)
        .config(&format!("[server]\nmetrics_listen = \"{metrics_addr}\""))
        .start()
        .await;
    let client = h.client();
    let echo = h.echo(&client, "/metrics").await;
    assert_eq!(echo.path(), "/metrics", "main listener must proxy /metrics");

    let response = client
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let metrics = response.text().await.unwrap();
    assert_eq!(
        metric(
            &metrics,
            "authgate_requests_total{route=\"/\",status=\"200\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    let other = client
        .get(format!("http://{metrics_addr}/anything"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}

// --- provider down at start ----------------------------------------------------------------

#[tokio::test]
async fn provider_unreachable_at_start_keeps_serving() {
    let dead_issuer = closed_port().await;
    let h = Harness::builder()
        .config("[[route]]\npath = \"/public\"\npolicy = \"public\"")
        .config(&format!("[oidc]\nissuer = \"http://{dead_issuer}\""))
        .no_wait_ready()
        .start()
        .await;
    let client = h.client();
    let healthz = client.get(h.at("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), StatusCode::OK);
    let readyz = client.get(h.at("/readyz")).send().await.unwrap();
    assert_eq!(readyz.status(), StatusCode::SERVICE_UNAVAILABLE);

    let echo = h.echo(&client, "/public/page").await;
    assert_eq!(echo.path(), "/public/page");

    for accept in ["application/json", "text/html"] {
        let response = client
            .get(h.at("/app"))
            .header(header::ACCEPT, accept)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{accept}"
        );
        let retry_after: u64 = response.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(retry_after >= 1);
    }
    let start = client.get(h.at("/oauth2/start")).send().await.unwrap();
    assert_eq!(start.status(), StatusCode::SERVICE_UNAVAILABLE);
}

/// The exposition is well-formed: every metric family is declared once (`# HELP`/`# TYPE`),
/// and no series (name and labels) appears twice. Prometheus rejects a scrape otherwise.
#[tokio::test]
async fn metrics_declare_each_family_once_and_each_series_once() {
    let h = Harness::builder().config(PUBLIC).start().await;
    let client = h.client();
    client.get(h.at("/hello")).send().await.unwrap();
    let text = h.metrics().await;
    let mut declared = std::collections::HashSet::new();
    let mut series = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(declared.insert(rest.to_owned()), "declared twice: {line}");
        } else if !line.trim().is_empty() {
            let key = line.rsplit_once(' ').map_or(line, |(k, _)| k);
            assert!(series.insert(key.to_owned()), "series twice: {key}");
        }
    }
}
