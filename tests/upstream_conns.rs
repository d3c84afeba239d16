//! Upstream connections live with the client connection that uses them: reused by its next
//! request, reopened when the upstream closed them, never reused after a body that was not
//! read to its end, and closed when the client connection closes.
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
/// it came on (`/big` streams 4 MiB). `keep_alive = false` closes each connection after its
/// answer.
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
                    Ok::<_, Infallible>(answer(req.uri().path(), peer.port()))
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

fn answer(path: &str, port: u16) -> Response<UpBody> {
    if path == "/big" {
        let chunks = (0..64).map(|_| Ok(Frame::data(Bytes::from(vec![b'x'; 64 * 1024]))));
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        return Response::new(BodyExt::boxed(body));
    }
    Response::new(Full::new(Bytes::from(port.to_string())).boxed())
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
    Harness::builder()
        .config(PUBLIC)
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

    // A second client connection gets an upstream connection of its own.
    let mut other = h1_connection(&h).await;
    let port = text(other.send_request(get(&h, "/")).await.unwrap()).await;
    assert_ne!(port, ports[0]);
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(connections_opened(&h).await, 2.0);
}

/// `authgate_upstream_connections_opened_total` from `/metrics`.
async fn connections_opened(h: &Harness) -> f64 {
    metric(
        &h.metrics().await,
        "authgate_upstream_connections_opened_total",
    )
    .expect("the metric is exposed")
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

#[tokio::test]
async fn closing_the_client_connection_closes_its_upstream_connection() {
    let (addr, seen) = upstream(true).await;
    let h = gateway(addr).await;
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    tcp.write_all(format!("GET / HTTP/1.1\r\nhost: {}\r\n\r\n", h.addr).as_bytes())
        .await
        .unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tcp.read(&mut answer).await.unwrap();
    assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
    assert_eq!(seen.open.load(Ordering::SeqCst), 1);
    drop(tcp);
    assert!(
        eventually(Duration::from_secs(5), || async {
            seen.open.load(Ordering::SeqCst) == 0
        })
        .await,
        "the upstream connection outlived its client connection"
    );
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
