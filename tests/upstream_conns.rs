//! Upstream connections: one bounded pool per upstream, shared by every client connection.
//! Reused by the next request (any client's), reopened when the upstream closed them, never
//! reused after a body that was not read to its end, closed after `[upstream] idle_timeout`;
//! never more than `[upstream] max_connections` open, a request beyond waits up to
//! `[upstream] timeout` for one to come free, then gets 503 with `Retry-After`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{Harness, bind, eventually, metric};

type UpBody = BoxBody<Bytes, Infallible>;

const PUBLIC: &str = "[[route]]\npath = \"/\"\npolicy = \"public\"\n";

/// What the test upstream has seen.
#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    open: AtomicUsize,
}

/// An HTTP/1.1 upstream that answers every request with the client port of the connection
/// it came on, in the body and in `x-port` (`/big` streams 4 MiB; `/pause` answers after
/// 100 ms; `/drip` sends its head at once and 10 chunks 100 ms apart, busying its
/// connection for a second). `keep_alive = false` closes each connection after its answer.
async fn upstream(keep_alive: bool) -> (SocketAddr, Arc<Seen>) {
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let counters = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            counters.accepted.fetch_add(1, Ordering::SeqCst);
            counters.open.fetch_add(1, Ordering::SeqCst);
            let counters = counters.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(answer(req.uri().path(), peer.port()).await)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
                counters.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, seen)
}

async fn answer(path: &str, port: u16) -> Response<UpBody> {
    let body = match path {
        "/big" => {
            let chunks = (0..64).map(|_| Ok(Frame::data(Bytes::from(vec![b'x'; 64 * 1024]))));
            BodyExt::boxed(StreamBody::new(futures_util::stream::iter(chunks)))
        }
        "/drip" => {
            let chunks = futures_util::stream::unfold(0, |i| async move {
                if i == 10 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((Ok(Frame::data(Bytes::from_static(b"."))), i + 1))
            });
            BodyExt::boxed(StreamBody::new(chunks))
        }
        "/pause" => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Full::new(Bytes::from(port.to_string())).boxed()
        }
        _ => Full::new(Bytes::from(port.to_string())).boxed(),
    };
    let mut response = Response::new(body);
    response.headers_mut().insert("x-port", port.into());
    response
}

/// One HTTP/1.1 client connection to the gateway.
async fn h1_connection(h: &Harness) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(h.addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

fn get(h: &Harness, path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header(hyper::header::HOST, h.addr.to_string())
        .body(Empty::new())
        .unwrap()
}

async fn text(response: Response<Incoming>) -> String {
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

async fn gateway(upstream: SocketAddr) -> Harness {
    gateway_with(upstream, "").await
}

/// `upstream_toml`: more `[upstream]` keys.
async fn gateway_with(upstream: SocketAddr, upstream_toml: &str) -> Harness {
    Harness::builder()
        .config(PUBLIC)
        .config(&format!("[upstream]\n{upstream_toml}\n"))
        .upstream(upstream)
        .start()
        .await
}

#[tokio::test]
async fn a_client_connection_reuses_its_upstream_connection() {
    let (addr, seen) = upstream(true).await;
    let h = gateway(addr).await;
    let mut client = h1_connection(&h).await;
    let mut ports = Vec::new();
    for _ in 0..5 {
        client.ready().await.unwrap();
        ports.push(text(client.send_request(get(&h, "/")).await.unwrap()).await);
    }
    assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);

    // A second client connection reuses the idle one: the pool is the upstream's, not the
    // client connection's.
    let mut other = h1_connection(&h).await;
    let port = text(other.send_request(get(&h, "/")).await.unwrap()).await;
    assert_eq!(port, ports[0]);
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(connections_opened(&h).await, 1.0);
}

/// `authgate_upstream_connections_opened_total{upstream="default"}` from `/metrics`.
async fn connections_opened(h: &Harness) -> f64 {
    gauge(h, "authgate_upstream_connections_opened_total").await
}

#[tokio::test]
async fn an_upstream_that_closes_its_connections_gets_new_ones() {
    let (addr, seen) = upstream(false).await;
    let h = gateway(addr).await;
    let mut client = h1_connection(&h).await;
    let mut ports = Vec::new();
    for _ in 0..4 {
        client.ready().await.unwrap();
        ports.push(text(client.send_request(get(&h, "/")).await.unwrap()).await);
        // Let the upstream's close arrive before the next request.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ports.dedup();
    assert_eq!(ports.len(), 4, "a new upstream connection per request");
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 4);
    assert_eq!(connections_opened(&h).await, 4.0);
}

/// An upstream that keeps a connection open after its answer but closes it, without a
/// word, 100 ms later (an app's keep-alive timeout): the next request, sent after that,
/// is answered on a new connection, not failed with a 502.
#[tokio::test]
async fn an_idle_connection_closed_by_the_upstream_is_replaced() {
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = tcp.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            });
        }
    });
    let h = gateway(addr).await;
    let mut client = h1_connection(&h).await;
    for _ in 0..3 {
        client.ready().await.unwrap();
        assert_eq!(
            text(client.send_request(get(&h, "/")).await.unwrap()).await,
            "ok"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

/// A client connection that goes away leaves its upstream connection to the pool (the next
/// client reuses it), and the pool closes it after `idle_timeout`.
#[tokio::test]
async fn an_idle_upstream_connection_outlives_its_client_until_idle_timeout() {
    let (addr, seen) = upstream(true).await;
    let h = gateway_with(addr, "idle_timeout = \"1s\"").await;
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    tcp.write_all(format!("GET / HTTP/1.1\r\nhost: {}\r\n\r\n", h.addr).as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tcp.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    assert_eq!(seen.open.load(Ordering::SeqCst), 1);
    drop(tcp);
    let dropped = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || async {
            seen.open.load(Ordering::SeqCst) == 0
        })
        .await,
        "an idle upstream connection outlived idle_timeout"
    );
    assert!(dropped.elapsed() >= Duration::from_millis(500));
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
}

/// HTTP/2 streams run concurrently, each on an upstream connection of its own; a stream
/// cancelled halfway through a download leaves unread bytes on its upstream connection,
/// which must never carry another request.
#[tokio::test]
async fn http2_streams_and_a_cancelled_download() {
    let (addr, seen) = upstream(true).await;
    let h = gateway(addr).await;
    let tcp = TcpStream::connect(h.addr).await.unwrap();
    let (client, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let uri = |path: &str| format!("http://{}{path}", h.addr);

    let requests = (0..8).map(|_| {
        let mut client = client.clone();
        let request = Request::get(uri("/")).body(Empty::new()).unwrap();
        async move { text(client.send_request(request).await.unwrap()).await }
    });
    let ports = futures_util::future::join_all(requests).await;
    assert_eq!(ports.len(), 8);
    let accepted = seen.accepted.load(Ordering::SeqCst);
    assert!(
        (1..=8).contains(&accepted),
        "{accepted} upstream connections"
    );

    // Start a 4 MiB download and read one chunk: its upstream connection is busy until
    // the body is read, so the next stream must not wait for it.
    let mut sender = client.clone();
    let response = sender
        .send_request(Request::get(uri("/big")).body(Empty::new()).unwrap())
        .await
        .unwrap();
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some_and(|d| !d.is_empty()));
    let mut sender = client.clone();
    let beside = sender.send_request(Request::get(uri("/")).body(Empty::new()).unwrap());
    let beside = tokio::time::timeout(Duration::from_secs(5), beside)
        .await
        .expect("a stream waited behind an unfinished download")
        .unwrap();
    text(beside).await;
    // Cancel the download.
    drop(body);

    // Every later request gets a whole, well-formed answer.
    for _ in 0..4 {
        let mut sender = client.clone();
        let response = sender
            .send_request(Request::get(uri("/")).body(Empty::new()).unwrap())
            .await
            .unwrap();
        let port = text(response).await;
        assert!(port.parse::<u16>().is_ok(), "garbled answer {port:?}");
    }
}

/// An HTTP/2 client connection to the gateway, past its SETTINGS exchange (one request
/// answered), so the client keeps within the gateway's stream limit.
async fn h2_connection(h: &Harness) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(h.addr).await.unwrap();
    let (mut client, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let first = client.send_request(h2_get(h, "/")).await.unwrap();
    text(first).await;
    client
}

fn h2_get(h: &Harness, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{}{path}", h.addr))
        .body(Empty::new())
        .unwrap()
}

/// `count` concurrent `path` requests on one HTTP/2 connection; their statuses.
async fn h2_burst(
    h: &Harness,
    client: &hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    path: &str,
    count: usize,
) -> Vec<StatusCode> {
    let requests = (0..count).map(|_| {
        let mut client = client.clone();
        let request = h2_get(h, path);
        async move {
            let response = client.send_request(request).await.unwrap();
            let status = response.status();
            response.into_body().collect().await.unwrap();
            status
        }
    });
    futures_util::future::join_all(requests).await
}

/// The series `name` of `[upstream]` (labelled `upstream="default"`).
async fn gauge(h: &Harness, name: &str) -> f64 {
    let series = format!("{name}{{upstream=\"default\"}}");
    metric(&h.metrics().await, &series).unwrap_or_else(|| panic!("{series} is exposed"))
}

/// One HTTP/2 client with 150 concurrent streams: the upstream never sees more than
/// `max_connections` connections (it saw one per stream before).
#[tokio::test]
async fn http2_fan_out_is_bounded_by_max_connections() {
    let (addr, seen) = upstream(true).await;
    let h = gateway_with(addr, "max_connections = 4").await;
    let client = h2_connection(&h).await;
    let statuses = h2_burst(&h, &client, "/pause", 150).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let accepted = seen.accepted.load(Ordering::SeqCst);
    assert!(
        accepted <= 4,
        "{accepted} upstream connections for max_connections = 4"
    );
    assert!(gauge(&h, "authgate_upstream_connections").await <= 4.0);
    assert!(gauge(&h, "authgate_upstream_connection_waits_total").await > 0.0);
    assert_eq!(
        gauge(&h, "authgate_upstream_connection_wait_timeouts_total").await,
        0.0
    );
}

/// Four HTTP/2 clients with 16 streams each, then idle but connected: their upstream
/// connections close after the upstream's `idle_timeout` (they were held for as long as the
/// clients stayed).
#[tokio::test]
async fn idle_clients_hold_no_upstream_connection_past_idle_timeout() {
    let (addr, seen) = upstream(true).await;
    let h = gateway_with(addr, "idle_timeout = \"1s\"").await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        let client = h2_connection(&h).await;
        let statuses = h2_burst(&h, &client, "/pause", 16).await;
        assert!(statuses.iter().all(|s| *s == StatusCode::OK));
        clients.push(client);
    }
    assert!(seen.open.load(Ordering::SeqCst) > 1);
    assert!(
        eventually(Duration::from_secs(5), || async {
            seen.open.load(Ordering::SeqCst) == 0
        })
        .await,
        "{} upstream connections still open for idle clients",
        seen.open.load(Ordering::SeqCst)
    );
    assert_eq!(gauge(&h, "authgate_upstream_connections").await, 0.0);
    // The clients are still connected and served.
    let mut client = clients.pop().unwrap();
    text(client.send_request(h2_get(&h, "/")).await.unwrap()).await;
}

/// At the cap, a request waits `timeout` for a connection, then gets 503 with Retry-After.
#[tokio::test]
async fn at_max_connections_a_request_waits_then_gets_503() {
    let (addr, seen) = upstream(true).await;
    let h = gateway_with(addr, "max_connections = 1\ntimeout = \"500ms\"").await;
    // A download keeps the only connection busy for a second (its head came at once).
    let mut busy = h1_connection(&h).await;
    let download = busy.send_request(get(&h, "/drip")).await.unwrap();
    assert_eq!(download.status(), StatusCode::OK);
    let mut other = h1_connection(&h).await;
    let started = std::time::Instant::now();
    let refused = other.send_request(get(&h, "/")).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key(hyper::header::RETRY_AFTER));
    assert!(
        waited >= Duration::from_millis(400),
        "answered after {waited:?}"
    );
    // The download completes, on the one connection.
    let body = download.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"..........");
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(
        gauge(&h, "authgate_upstream_connection_wait_timeouts_total").await,
        1.0
    );
}

/// At the cap, the connection freed by a finished response goes to the waiting request.
#[tokio::test]
async fn a_freed_connection_is_handed_to_the_waiting_request() {
    let (addr, seen) = upstream(true).await;
    let h = gateway_with(addr, "max_connections = 1\ntimeout = \"5s\"").await;
    let mut busy = h1_connection(&h).await;
    let download = busy.send_request(get(&h, "/drip")).await.unwrap();
    let port = download.headers()["x-port"].to_str().unwrap().to_owned();
    let reader = tokio::spawn(download.into_body().collect());
    let mut other = h1_connection(&h).await;
    let started = std::time::Instant::now();
    let answer = text(other.send_request(get(&h, "/")).await.unwrap()).await;
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(answer, port, "not the connection the download freed");
    reader.await.unwrap().unwrap();
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(
        gauge(&h, "authgate_upstream_connection_waits_total").await,
        1.0
    );
}

/// Idle connections never make the cap unusable: a new client gets another client's idle
/// connection instead of waiting for a permit.
#[tokio::test]
async fn at_max_connections_idle_connections_of_other_clients_are_used() {
    let (addr, seen) = upstream(true).await;
    let h = gateway_with(addr, "max_connections = 2\ntimeout = \"5s\"").await;
    // Two clients at once: two upstream connections, both idle afterwards.
    let mut a = h1_connection(&h).await;
    let mut b = h1_connection(&h).await;
    let (ra, rb) = tokio::join!(
        a.send_request(get(&h, "/pause")),
        b.send_request(get(&h, "/pause"))
    );
    let (pa, pb) = tokio::join!(text(ra.unwrap()), text(rb.unwrap()));
    assert_ne!(pa, pb);
    let mut c = h1_connection(&h).await;
    let started = std::time::Instant::now();
    let pc = text(c.send_request(get(&h, "/")).await.unwrap()).await;
    assert!(started.elapsed() < Duration::from_millis(400));
    assert!(pc == pa || pc == pb, "{pc} is a third connection");
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(
        gauge(&h, "authgate_upstream_connection_waits_total").await,
        0.0
    );
}
