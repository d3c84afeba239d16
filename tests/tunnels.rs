//! Upgraded connections (WebSocket tunnels) end with their session: whatever ends the
//! session (sign-out, back-channel logout, admin revoke, rejected refresh, idle or absolute
//! timeout, eviction), its tunnels are closed within 1 s, on every replica with Redis; and
//! the registry of tunnels forgets a tunnel once it closed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use reqwest::{StatusCode, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::redis::RedisServer;
use support::{Harness, bare_client, bind, eventually, start_idp};

/// How soon a tunnel must close once its session ended.
const WITHIN: Duration = Duration::from_secs(1);

/// A raw upstream: a request with `Upgrade: websocket` gets 101, then every byte is echoed;
/// any other request gets 200.
async fn ws_upstream() -> SocketAddr {
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let head = read_head(&mut tcp).await.to_ascii_lowercase();
                if !head.contains("upgrade: websocket") {
                    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
                    let _ = tcp.write_all(ok).await;
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
    addr
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
        assert!(head.len() < 64 * 1024, "head too long");
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Open a WebSocket tunnel through the gateway with the session `cookie`; checks it echoes.
async fn open_tunnel(gateway: SocketAddr, cookie: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(gateway).await.unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\n\
         Host: {gateway}\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Cookie: authgate_session={cookie}\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let head = tokio::time::timeout(Duration::from_secs(10), read_head(&mut tcp))
        .await
        .expect("no response head");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_open(&mut tcp).await;
    tcp
}

/// The tunnel still carries bytes both ways.
async fn assert_open(tcp: &mut TcpStream) {
    let message = b"still there?";
    tcp.write_all(message).await.unwrap();
    let mut back = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut back))
        .await
        .expect("no echo")
        .expect("tunnel closed");
    assert_eq!(&back, message);
}

/// The gateway closes the tunnel within [`WITHIN`] of `since`.
async fn assert_closed(tcp: &mut TcpStream, since: Instant, what: &str) {
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(WITHIN.saturating_sub(since.elapsed()), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "{what}: the tunnel is still open {:?} after the session ended",
        since.elapsed()
    );
}

/// The registry holds nothing once the tunnels closed.
async fn assert_forgotten(h: &Harness) {
    let forgotten = eventually(Duration::from_secs(2), || async {
        h.gateway.tunnels().sessions() == 0
    })
    .await;
    assert!(
        forgotten,
        "{} sessions still registered",
        h.gateway.tunnels().sessions()
    );
}

async fn harness(config: &str) -> Harness {
    Harness::builder()
        .upstream(ws_upstream().await)
        .config(config)
        .start()
        .await
}

async fn sign_out(h: &Harness, cookie: &str) {
    let r = bare_client()
        .post(h.at("/oauth2/sign_out"))
        .header(header::COOKIE, format!("authgate_session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
}

async fn status(h: &Harness, cookie: &str) -> StatusCode {
    bare_client()
        .get(h.at("/app"))
        .header(header::ACCEPT, "application/json")
        .header(header::COOKIE, format!("authgate_session={cookie}"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn sign_out_closes_the_sessions_tunnels_only() {
    let h = harness("").await;
    let alice = h.login(&h.client(), "alice").await;
    let bob = h.login(&h.client(), "bob").await;
    let mut a1 = open_tunnel(h.addr, &alice).await;
    let mut a2 = open_tunnel(h.addr, &alice).await;
    let mut b = open_tunnel(h.addr, &bob).await;
    assert_eq!(h.gateway.tunnels().sessions(), 2);

    sign_out(&h, &alice).await;
    let ended = Instant::now();
    assert_closed(&mut a1, ended, "sign-out").await;
    assert_closed(&mut a2, ended, "sign-out, second tunnel").await;
    assert_open(&mut b).await;
    drop(b);
    assert_forgotten(&h).await;
}

#[tokio::test]
async fn backchannel_logout_closes_the_tunnel() {
    let h = harness("").await;
    let cookie = h.login(&h.client(), "alice").await;
    let sid = h.idp.controls().last_issued_sid().unwrap();
    let mut tunnel = open_tunnel(h.addr, &cookie).await;
    let token = support::logout_token(&h.idp, &sid);
    assert_eq!(support::post_logout_token(&h, &token).await, StatusCode::OK);
    assert_closed(&mut tunnel, Instant::now(), "back-channel logout").await;
    assert_forgotten(&h).await;
}

#[tokio::test]
async fn rejected_refresh_closes_the_tunnel() {
    let h = harness("").await;
    let cookie = h.login(&h.client(), "alice").await;
    let mut tunnel = open_tunnel(h.addr, &cookie).await;
    // The access token expires; the grant was revoked at the provider meanwhile: the next
    // request's refresh is rejected and ends the session.
    h.idp.controls().revoke_grants_of("alice");
    h.advance(Duration::from_secs(2 * 3600));
    assert_eq!(status(&h, &cookie).await, StatusCode::UNAUTHORIZED);
    assert_closed(&mut tunnel, Instant::now(), "rejected refresh").await;
}

#[tokio::test]
async fn idle_timeout_closes_the_tunnel_and_tunnel_traffic_is_not_use() {
    let h = harness("[session]\nidle_timeout = \"10m\"").await;
    let cookie = h.login(&h.client(), "alice").await;
    let mut tunnel = open_tunnel(h.addr, &cookie).await;
    h.advance(Duration::from_secs(9 * 60));
    // Traffic through the tunnel: not a use of the session.
    assert_open(&mut tunnel).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_open(&mut tunnel).await;
    h.advance(Duration::from_secs(2 * 60));
    assert_closed(&mut tunnel, Instant::now(), "idle timeout").await;
    assert_eq!(status(&h, &cookie).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn absolute_timeout_closes_a_tunnel_of_a_session_in_use() {
    let h = harness("[session]\nidle_timeout = \"30m\"\nabsolute_timeout = \"1h\"").await;
    let cookie = h.login(&h.client(), "alice").await;
    let mut tunnel = open_tunnel(h.addr, &cookie).await;
    // Used every 25 minutes: never idle, but an hour after the login it ends.
    for _ in 0..2 {
        h.advance(Duration::from_secs(25 * 60));
        assert_eq!(status(&h, &cookie).await, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_open(&mut tunnel).await;
    }
    h.advance(Duration::from_secs(11 * 60));
    assert_closed(&mut tunnel, Instant::now(), "absolute timeout").await;
}

#[tokio::test]
async fn eviction_closes_the_tunnel() {
    let h = harness("[session]\nmax_sessions = 1").await;
    let alice = h.login(&h.client(), "alice").await;
    let mut tunnel = open_tunnel(h.addr, &alice).await;
    h.login(&h.client(), "bob").await;
    assert_closed(&mut tunnel, Instant::now(), "eviction").await;
}

#[tokio::test]
async fn a_tunnel_that_closes_by_itself_is_forgotten() {
    let h = harness("").await;
    let cookie = h.login(&h.client(), "alice").await;
    for _ in 0..3 {
        let tunnel = open_tunnel(h.addr, &cookie).await;
        assert_eq!(h.gateway.tunnels().sessions(), 1);
        drop(tunnel);
        assert_forgotten(&h).await;
    }
    assert_eq!(status(&h, &cookie).await, StatusCode::OK);
}

/// Two replicas share Redis: a sign-out on B closes A's tunnel within 1 s.
#[tokio::test]
async fn sign_out_on_one_replica_closes_the_tunnel_on_another() {
    let redis = RedisServer::start();
    let idp = start_idp().await;
    let upstream = ws_upstream().await;
    let config = format!(
        "[session]\nstore = \"redis\"\nredis_url = \"{}\"\nredis_key_prefix = \"ag:\"",
        redis.url()
    );
    let replica = || {
        Harness::builder()
            .idp(idp.clone())
            .upstream(upstream)
            .config(&config)
            .start()
    };
    let a = replica().await;
    let b = replica().await;
    let cookie = a.login(&a.client(), "alice").await;
    let mut on_a = open_tunnel(a.addr, &cookie).await;
    let mut on_b = open_tunnel(b.addr, &cookie).await;
    // Checks of a live session keep it open.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_open(&mut on_a).await;

    sign_out(&b, &cookie).await;
    let ended = Instant::now();
    assert_closed(&mut on_b, ended, "sign-out, same replica").await;
    assert_closed(&mut on_a, ended, "sign-out on another replica").await;
    eprintln!(
        "tunnel on the other replica closed after {:?}",
        ended.elapsed()
    );
    assert_forgotten(&a).await;
}

#[tokio::test]
async fn admin_revoke_closes_the_tunnel() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let token = "admin-token-for-the-tunnel-test-0123";
    let file = std::env::temp_dir().join(format!("authgate-tunnel-admin-{}", std::process::id()));
    std::fs::write(&file, token).unwrap();
    let h = harness(&format!(
        "[server]\nadmin_listen = \"{addr}\"\nadmin_token_file = \"{}\"",
        file.display()
    ))
    .await;
    let cookie = h.login(&h.client(), "alice").await;
    let mut tunnel = open_tunnel(h.addr, &cookie).await;
    let r = bare_client()
        .post(format!("http://{addr}/admin/sessions/revoke"))
        .bearer_auth(token)
        .json(&serde_json::json!({"sub": "alice"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_closed(&mut tunnel, Instant::now(), "admin revoke").await;
    let _ = std::fs::remove_file(file);
}

/// `authgate_tunnels_open`: each open tunnel counts, and is no longer counted once closed
/// (by the client, or because its session ended).
#[tokio::test]
async fn the_open_tunnels_gauge_follows_tunnels() {
    let h = harness("").await;
    let cookie = h.login(&h.client(), "alice").await;
    let gauge = || async { support::metric(&h.metrics().await, "authgate_tunnels_open") };
    assert_eq!(gauge().await, Some(0.0));
    let first = open_tunnel(h.addr, &cookie).await;
    let mut second = open_tunnel(h.addr, &cookie).await;
    assert_eq!(gauge().await, Some(2.0));
    drop(first);
    let one = eventually(Duration::from_secs(2), || async {
        gauge().await == Some(1.0)
    })
    .await;
    assert!(one, "{:?}", gauge().await);
    sign_out(&h, &cookie).await;
    assert_closed(&mut second, Instant::now(), "sign-out").await;
    drop(second);
    let none = eventually(Duration::from_secs(2), || async {
        gauge().await == Some(0.0)
    })
    .await;
    assert!(none, "{:?}", gauge().await);
}
