//! Raw HTTP/1.1 over TCP, written byte for byte: for what HTTP clients refuse or rewrite
//! (dot segments, raw bytes in the request target or a header value, `Connection` lists,
//! lowercase methods).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A raw answer: status, lowercase header lines, body (de-chunked).
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Raw {
    /// What the echo upstream saw (asserts 200).
    pub fn echo(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.body);
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    pub fn upstream_path(&self) -> String {
        self.echo()["path"].as_str().unwrap().to_owned()
    }

    /// The first value of a response header.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        (self.headers.iter())
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `<method> <target> HTTP/1.1` with `Host` and `Accept: application/json`, then `headers`
/// (name and value as raw bytes), then `Connection: close`.
pub fn request(method: &[u8], target: &[u8], headers: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut request = Vec::new();
    for part in [method, b" ", target, b" HTTP/1.1\r\n"] {
        request.extend_from_slice(part);
    }
    request.extend_from_slice(b"Host: 127.0.0.1\r\nAccept: application/json\r\n");
    for (name, value) in headers {
        for part in [*name, b": ", *value, b"\r\n"] {
            request.extend_from_slice(part);
        }
    }
    request.extend_from_slice(b"Connection: close\r\n\r\n");
    request
}

/// `GET <target> HTTP/1.1` exactly as given, with `extra` header lines.
pub async fn get(addr: SocketAddr, target: &[u8], extra: &[(&str, &str)]) -> Raw {
    let extra: Vec<(&[u8], &[u8])> = (extra.iter())
        .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
        .collect();
    send(addr, &request(b"GET", target, &extra)).await
}

/// Write `request` on a new connection and read the answer until the server closes.
pub async fn send(addr: SocketAddr, request: &[u8]) -> Raw {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut bytes))
        .await
        .expect("the server answers and closes")
        .unwrap();
    parse(&bytes)
}

fn parse(bytes: &[u8]) -> Raw {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Raw {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}
