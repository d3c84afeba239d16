//! Client connections cannot be hoarded: a connection that completes no
//! request head within `header_read_timeout` is closed, whatever the protocol; an idle
//! keep-alive connection closes after `idle_timeout` (HTTP/2 with GOAWAY), but a request in
//! flight is never cut; at most `max_connections` connections are served, and at most 100
//! concurrent streams per HTTP/2 connection. Real sockets, small limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{Harness, bind, metric};

const PUBLIC: &str = "[[route]]\npath = \"/\"\npolicy = \"public\"\n";

type UpBody = BoxBody<Bytes, Infallible>;

/// What the test upstream has seen.
#[derive(Default)]
struct Seen {
    /// Requests being answered now, and the most ever at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// An HTTP/1.1 upstream: `/slow` answers after 2.5 s, `/drip` sends 5 chunks 500 ms apart,
/// `/hold` answers after 300 ms; anything else at once.
async fn upstream() -> (SocketAddr, Arc<Seen>) {
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let counters = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let counters = counters.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let counters = counters.clone();
                    async move { Ok::<_, Infallible>(answer(req.uri().path(), &counters).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn answer(path: &str, seen: &Seen) -> Response<UpBody> {
    let now = seen.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    seen.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let response = match path {
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            Response::new(Full::new(Bytes::from_static(b"slow")).boxed())
        }
        "/drip" => {
            let chunks = futures_util::stream::unfold(0, |i| async move {
                if i == 5 {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                Some((Ok(Frame::data(Bytes::from_static(b"drip\n"))), i + 1))
            });
            Response::new(BodyExt::boxed(StreamBody::new(chunks)))
        }
        "/hold" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Response::new(Full::new(Bytes::from_static(b"held")).boxed())
        }
        _ => Response::new(Full::new(Bytes::from_static(b"ok")).boxed()),
    };
    seen.in_flight.fetch_sub(1, Ordering::SeqCst);
    response
}

async fn gateway(server: &str, upstream_toml: &str) -> (Harness, Arc<Seen>) {
    let (addr, seen) = upstream().await;
    let h = Harness::builder()
        .config(PUBLIC)
        .config(&format!(
            "[server]\n{server}\n[upstream]\n{upstream_toml}\n"
        ))
        .upstream(addr)
        .start()
        .await;
    (h, seen)
}

/// Read (and discard) until the gateway closes the connection; how long that took, `None`
/// when it was still open after `limit`.
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

fn get_head(h: &Harness, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n", h.addr)
}

/// One HTTP/1.1 request on `tcp`; the whole answer (for a `content-length` response).
async fn h1_request(tcp: &mut TcpStream, h: &Harness, path: &str) -> String {
    tcp.write_all(get_head(h, path).as_bytes()).await.unwrap();
    read_response(tcp).await
}

async fn read_response(tcp: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(
            n > 0,
            "closed mid-answer: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().unwrap())
                })
                .expect("a content-length answer");
            if body.len() >= length {
                return text;
            }
        }
    }
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_header_read_timeout() {
    let (h, _) = gateway("header_read_timeout = \"1s\"\nidle_timeout = \"60s\"", "").await;
    let mut silent = TcpStream::connect(h.addr).await.unwrap();
    let closed = closed_within(&mut silent, Duration::from_secs(10)).await;
    let closed = closed.expect("a connection that never sent a byte was kept open");
    assert!(
        closed >= Duration::from_millis(900),
        "closed early: {closed:?}"
    );
    let metrics = h.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "authgate_client_connections_closed_total{reason=\"no_request\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn an_http2_preface_without_a_request_is_closed_after_header_read_timeout() {
    let (h, _) = gateway("header_read_timeout = \"1s\"\nidle_timeout = \"60s\"", "").await;
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    tcp.write_all(H2_PREFACE).await.unwrap();
    tcp.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    // The gateway answers with its SETTINGS, then must close: no HEADERS ever came.
    let closed = closed_within(&mut tcp, Duration::from_secs(10)).await;
    assert!(
        closed.is_some(),
        "an HTTP/2 connection with no request was kept open"
    );
}

/// hyper's own head timer is off (it would cut idle connections at `header_read_timeout`):
/// the connection's deadline still bounds a head sent byte by byte.
#[tokio::test]
async fn a_request_head_sent_byte_by_byte_is_cut_at_header_read_timeout() {
    let (h, _) = gateway("header_read_timeout = \"1s\"\nidle_timeout = \"60s\"", "").await;
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    let started = Instant::now();
    let head = get_head(&h, "/");
    let mut closed = false;
    for byte in head.as_bytes().iter().take(head.len() - 1) {
        if tcp.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        if started.elapsed() > Duration::from_secs(10) {
            break;
        }
    }
    let closed = closed
        || closed_within(&mut tcp, Duration::from_secs(2))
            .await
            .is_some();
    assert!(
        closed,
        "a head dribbled for {:?} was accepted",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn an_idle_http1_connection_is_closed_after_idle_timeout() {
    // idle_timeout shorter than header_read_timeout: the idle one decides.
    let (h, _) = gateway("header_read_timeout = \"10s\"\nidle_timeout = \"1s\"", "").await;
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    assert!(
        h1_request(&mut tcp, &h, "/")
            .await
            .starts_with("HTTP/1.1 200")
    );
    let closed = closed_within(&mut tcp, Duration::from_secs(8)).await;
    let closed = closed.expect("an idle HTTP/1.1 connection was kept open");
    assert!(
        closed >= Duration::from_millis(900),
        "closed early: {closed:?}"
    );
    assert!(closed < Duration::from_secs(5), "closed late: {closed:?}");
}

#[tokio::test]
async fn an_idle_http1_connection_outlives_header_read_timeout() {
    // idle_timeout longer than header_read_timeout: waiting for the next request is idle
    // time, not time to send a head.
    let (h, _) = gateway("header_read_timeout = \"1s\"\nidle_timeout = \"5s\"", "").await;
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    assert!(
        h1_request(&mut tcp, &h, "/")
            .await
            .starts_with("HTTP/1.1 200")
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        h1_request(&mut tcp, &h, "/")
            .await
            .starts_with("HTTP/1.1 200"),
        "the connection was closed after header_read_timeout, not idle_timeout"
    );
}

#[tokio::test]
async fn an_idle_http2_connection_gets_goaway_after_idle_timeout() {
    let (h, _) = gateway("header_read_timeout = \"10s\"\nidle_timeout = \"1s\"", "").await;
    let mut h2 = RawH2::connect(h.addr).await;
    h2.get(1, &h.addr.to_string(), "/healthz").await;
    let answered = h2.until_response(1).await;
    let event = h2.next_event(Duration::from_secs(8)).await;
    let Event::GoAway(at) = event else {
        panic!("no GOAWAY on an idle HTTP/2 connection: {event:?}");
    };
    let idle = at.duration_since(answered);
    assert!(idle >= Duration::from_millis(900), "GOAWAY early: {idle:?}");
    assert!(idle < Duration::from_secs(5), "GOAWAY late: {idle:?}");
    // Then the connection closes (the client answered the PING that follows the first
    // GOAWAY; a second one names the last stream processed).
    loop {
        match h2.next_event(Duration::from_secs(5)).await {
            Event::GoAway(_) => {}
            other => {
                assert_eq!(other, Event::Closed);
                break;
            }
        }
    }
}

#[tokio::test]
async fn requests_longer_than_idle_timeout_are_not_cut() {
    let (h, _) = gateway("header_read_timeout = \"10s\"\nidle_timeout = \"1s\"", "").await;
    // HTTP/1.1: one quick request (the connection has been idle since), then a 2.5 s wait
    // for a response head, then a body that takes 2.5 s.
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    assert!(
        h1_request(&mut tcp, &h, "/")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(h1_request(&mut tcp, &h, "/slow").await.ends_with("slow"));
    tcp.write_all(get_head(&h, "/drip").as_bytes())
        .await
        .unwrap();
    let mut body = Vec::new();
    let mut buf = [0u8; 4096];
    while !body.ends_with(b"0\r\n\r\n") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "download cut: {}", String::from_utf8_lossy(&body));
        body.extend_from_slice(&buf[..n]);
    }
    assert_eq!(String::from_utf8_lossy(&body).matches("drip").count(), 5);
    // The connection is still a keep-alive one: the download counted as activity.
    assert!(
        h1_request(&mut tcp, &h, "/")
            .await
            .starts_with("HTTP/1.1 200")
    );

    // HTTP/2: a quick request, then a long download, then another request: the connection
    // was not shut down meanwhile.
    let tcp = TcpStream::connect(h.addr).await.unwrap();
    let (client, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let uri = |path: &str| format!("http://{}{path}", h.addr);
    let mut sender = client.clone();
    let quick = sender
        .send_request(Request::get(uri("/")).body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(quick.status(), StatusCode::OK);
    let mut sender = client.clone();
    let slow = sender
        .send_request(Request::get(uri("/drip")).body(Empty::new()).unwrap())
        .await
        .unwrap();
    let body = slow.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), 25, "{body:?}");
    let mut sender = client.clone();
    let response = sender
        .send_request(Request::get(uri("/")).body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!conn.is_finished());
}

#[tokio::test]
async fn beyond_max_connections_new_connections_wait_until_one_closes() {
    let (h, _) = gateway("max_connections = 3\nidle_timeout = \"60s\"", "").await;
    // Three keep-alive connections, each served once (the harness's readiness polls may
    // still hold a slot for a moment: the first answers can take that long).
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(h.addr).await.unwrap();
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            h1_request(&mut tcp, &h, "/healthz"),
        )
        .await
        .expect("one of the first three connections was not served");
        assert!(answer.starts_with("HTTP/1.1 200"));
        held.push(tcp);
    }
    // The fourth waits: the kernel completes its handshake, the gateway does not accept it.
    let mut fourth = TcpStream::connect(h.addr).await.unwrap();
    fourth
        .write_all(get_head(&h, "/healthz").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(1500), fourth.read(&mut buf)).await;
    assert!(early.is_err(), "connection 4 of 3 was served: {early:?}");
    // One closes: the fourth is served.
    drop(held.pop());
    let answer = tokio::time::timeout(Duration::from_secs(10), read_response(&mut fourth))
        .await
        .expect("the waiting connection was not served after one closed");
    assert!(answer.starts_with("HTTP/1.1 200"));
    // And after another closes, /healthz on a fresh connection works.
    drop(held.pop());
    let mut fresh = TcpStream::connect(h.addr).await.unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        h1_request(&mut fresh, &h, "/healthz"),
    )
    .await
    .expect("a fresh connection was not served");
    assert!(answer.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn an_http2_connection_runs_at_most_100_streams_at_once() {
    let (h, seen) = gateway("", "max_connections = 1000").await;
    let tcp = TcpStream::connect(h.addr).await.unwrap();
    let (client, conn) = hyper::client::conn::http2::handshake::<_, _, Empty<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    // One request first: the client then knows the gateway's SETTINGS (a client that opens
    // streams beyond them has the extra ones refused).
    let mut first = client.clone();
    let warm = Request::get(format!("http://{}/", h.addr))
        .body(Empty::new())
        .unwrap();
    assert_eq!(
        first.send_request(warm).await.unwrap().status(),
        StatusCode::OK
    );
    let requests = (0..150).map(|_| {
        let mut client = client.clone();
        let request = Request::get(format!("http://{}/hold", h.addr))
            .body(Empty::new())
            .unwrap();
        async move {
            let response = client.send_request(request).await.unwrap();
            response.status()
        }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let most = seen.max_in_flight.load(Ordering::SeqCst);
    assert!(
        most <= 100,
        "{most} streams of one connection in flight at once"
    );
    assert!(most >= 50, "the streams did not run concurrently ({most})");
}

// === a raw HTTP/2 client: enough to see GOAWAY ===

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const END_STREAM_AND_HEADERS: u8 = 0x5;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Headers(u32),
    GoAway(Instant),
    Closed,
    Timeout,
}

struct RawH2 {
    tcp: TcpStream,
}

impl RawH2 {
    async fn connect(addr: SocketAddr) -> Self {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(H2_PREFACE).await.unwrap();
        tcp.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        RawH2 { tcp }
    }

    /// A GET: `:method GET` and `:scheme http` from HPACK's static table, `:authority` and
    /// `:path` as literals.
    async fn get(&mut self, stream: u32, authority: &str, path: &str) {
        let mut block = vec![0x82, 0x86, 0x01, authority.len() as u8];
        block.extend_from_slice(authority.as_bytes());
        block.extend_from_slice(&[0x04, path.len() as u8]);
        block.extend_from_slice(path.as_bytes());
        let headers = frame(HEADERS, END_STREAM_AND_HEADERS, stream, &block);
        self.tcp.write_all(&headers).await.unwrap();
    }

    async fn until_response(&mut self, stream: u32) -> Instant {
        loop {
            match self.next_event(Duration::from_secs(10)).await {
                Event::Headers(id) if id == stream => return Instant::now(),
                Event::Headers(_) => {}
                other => panic!("no response on stream {stream}: {other:?}"),
            }
        }
    }

    /// The next HEADERS, GOAWAY or close; SETTINGS and PINGs are acknowledged on the way.
    async fn next_event(&mut self, limit: Duration) -> Event {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut head = [0u8; 9];
            match tokio::time::timeout_at(deadline, self.tcp.read_exact(&mut head)).await {
                Err(_) => return Event::Timeout,
                Ok(Err(_)) => return Event::Closed,
                Ok(Ok(_)) => {}
            }
            let len = (head[0] as usize) << 16 | (head[1] as usize) << 8 | head[2] as usize;
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            if self.tcp.read_exact(&mut payload).await.is_err() {
                return Event::Closed;
            }
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    let _ = self.tcp.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
                }
                PING if flags & ACK == 0 => {
                    let _ = self.tcp.write_all(&frame(PING, ACK, 0, &payload)).await;
                }
                GOAWAY => return Event::GoAway(Instant::now()),
                HEADERS => return Event::Headers(stream),
                _ => {}
            }
        }
    }
}
