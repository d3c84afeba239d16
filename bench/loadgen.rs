//! Fixed-rate HTTP/1.1 load generator with coordinated-omission correction (issue 8).
//!
//! `wrk` measures throughput at saturation; it cannot hold a fixed rate, and a closed-loop
//! tool hides queueing (coordinated omission). This one sends request `i` at the INTENDED
//! time `start + i / rate`, spread round-robin over `--connections` keep-alive connections,
//! and records each latency from:
//!
//! - the intended send time, when the connection was still busy with its previous request
//!   at that time (the request queued behind a slow answer: that wait is counted, as wrk2
//!   does);
//! - the actual send time, when the connection was idle and only our own timer woke late
//!   (tokio's timer has 1 ms granularity: that lateness is the generator's, not the
//!   server's, and would otherwise add up to 1 ms to every sample).
//!
//! ```text
//! loadgen --url http://127.0.0.1:8080/ --rate 2000 --duration 10 --connections 32 \
//!         [--header 'Name: value']... [--cookies FILE] [--expect 200]
//! ```
//! `--cookies`: one Cookie header value a line, used round-robin; `--expect`: the status that
//! counts as success (202 for `/oauth2/auth`); any other status makes the exit code 1.
//! A server that cannot keep up gets 1.2 × duration + 2 s; requests still unsent then are
//! counted as `unsent`, each with the wait it had reached (a lower bound of its latency).
//!
//! Prints one JSON object: counts by outcome and latency percentiles in microseconds.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

struct Args {
    addr: SocketAddr,
    host: String,
    path: String,
    rate: f64,
    duration: f64,
    connections: usize,
    headers: Vec<(String, String)>,
    cookies: Vec<String>,
    expect: u16,
}

fn parse_args() -> Result<Args, String> {
    let mut url = None;
    let mut rate = 1000.0;
    let mut duration = 10.0;
    let mut connections = 32;
    let mut headers = Vec::new();
    let mut cookies = Vec::new();
    let mut expect = 200;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => url = Some(value()?),
            "--rate" => rate = value()?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--duration" => duration = value()?.parse().map_err(|e| format!("--duration: {e}"))?,
            "--connections" => {
                connections = value()?
                    .parse()
                    .map_err(|e| format!("--connections: {e}"))?;
            }
            "--header" => {
                let h = value()?;
                let (name, v) = h.split_once(':').ok_or("--header wants 'Name: value'")?;
                headers.push((name.trim().to_owned(), v.trim().to_owned()));
            }
            "--cookies" => {
                let text = std::fs::read_to_string(value()?).map_err(|e| e.to_string())?;
                cookies = text
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            "--expect" => expect = value()?.parse().map_err(|e| format!("--expect: {e}"))?,
            "--bench" => {} // `cargo bench` passes it
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let url = url::Url::parse(&url).map_err(|e| e.to_string())?;
    let host = url.host_str().ok_or("url without host")?.to_owned();
    let port = url.port_or_known_default().ok_or("url without port")?;
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut path = url.path().to_owned();
    if let Some(q) = url.query() {
        path = format!("{path}?{q}");
    }
    if rate <= 0.0 || duration <= 0.0 || connections == 0 {
        return Err("rate, duration and connections must be positive".into());
    }
    Ok(Args {
        addr,
        host: format!("{host}:{port}"),
        path,
        rate,
        duration,
        connections,
        headers,
        cookies,
        expect,
    })
}

#[derive(Default)]
struct Outcome {
    latencies_us: Vec<u32>,
    ok: u64,
    non200: u64,
    errors: u64,
    /// Intended requests still unsent at the deadline (the server could not keep up).
    unsent: u64,
    first_bad_status: Option<u16>,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> std::io::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn connection(
    args: Arc<Args>,
    id: usize,
    total: u64,
    start: Instant,
    deadline: Instant,
) -> Outcome {
    let mut out = Outcome::default();
    let interval_ns = 1e9 / args.rate;
    let mut sender: Option<Sender> = None;
    let mut prev_done = start;
    let mut i = id as u64;
    while i < total {
        let intended = start + Duration::from_nanos((i as f64 * interval_ns) as u64);
        let idle_at_intended = prev_done <= intended;
        if !idle_at_intended && prev_done > deadline {
            // Overloaded: the rest are never sent. Each counts with the wait it had reached
            // by the deadline, a lower bound of its latency (so percentiles stay honest).
            while i < total {
                let intended = start + Duration::from_nanos((i as f64 * interval_ns) as u64);
                let us = deadline.saturating_duration_since(intended).as_micros();
                out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                out.unsent += 1;
                i += args.connections as u64;
            }
            break;
        }
        if idle_at_intended {
            tokio::time::sleep_until(intended.into()).await;
        }
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            sender = connect(args.addr).await.ok();
        }
        let Some(s) = sender.as_mut() else {
            out.errors += 1;
            prev_done = Instant::now();
            i += args.connections as u64;
            continue;
        };
        let mut builder = Request::get(args.path.as_str()).header("host", args.host.as_str());
        for (name, value) in &args.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if !args.cookies.is_empty() {
            let cookie = &args.cookies[(i as usize) % args.cookies.len()];
            builder = builder.header("cookie", cookie.as_str());
        }
        let Ok(request) = builder.body(Empty::<Bytes>::new()) else {
            out.errors += 1;
            break;
        };
        let sent = Instant::now();
        let base = if idle_at_intended { sent } else { intended };
        let result = match s.ready().await {
            Ok(()) => s.send_request(request).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(response) => {
                let status = response.status().as_u16();
                let body_ok = response.into_body().collect().await.is_ok();
                let done = Instant::now();
                if status == args.expect && body_ok {
                    out.ok += 1;
                } else {
                    out.non200 += 1;
                    out.first_bad_status.get_or_insert(status);
                }
                let us = done.duration_since(base).as_micros();
                out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                prev_done = done;
            }
            Err(_) => {
                out.errors += 1;
                sender = None;
                prev_done = Instant::now();
            }
        }
        i += args.connections as u64;
    }
    out
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("loadgen: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("loadgen: no runtime");
        return std::process::ExitCode::from(1);
    };
    let total = (args.rate * args.duration).round() as u64;
    let (outcomes, elapsed) = runtime.block_on(async {
        // Connect first, so connection setup is not counted as latency.
        let start = Instant::now() + Duration::from_millis(200);
        // An overloaded server gets this much time past the schedule, then the rest is
        // counted as unsent (see `connection`).
        let deadline = start + Duration::from_secs_f64(args.duration * 1.2 + 2.0);
        let tasks: Vec<_> = (0..args.connections)
            .map(|id| tokio::spawn(connection(args.clone(), id, total, start, deadline)))
            .collect();
        let mut outcomes = Vec::new();
        for t in tasks {
            if let Ok(o) = t.await {
                outcomes.push(o);
            }
        }
        (outcomes, start.elapsed())
    });
    let mut all = Outcome::default();
    for o in outcomes {
        all.latencies_us.extend(o.latencies_us);
        all.ok += o.ok;
        all.non200 += o.non200;
        all.errors += o.errors;
        all.unsent += o.unsent;
        if all.first_bad_status.is_none() {
            all.first_bad_status = o.first_bad_status;
        }
    }
    all.latencies_us.sort_unstable();
    let l = &all.latencies_us;
    println!(
        "{{\"target_rate\":{},\"duration_s\":{:.3},\"intended\":{},\"ok\":{},\"non200\":{},\"first_bad_status\":{},\"errors\":{},\"unsent\":{},\"achieved_rps\":{:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
        args.rate,
        elapsed.as_secs_f64(),
        total,
        all.ok,
        all.non200,
        all.first_bad_status
            .map_or("null".to_owned(), |s| s.to_string()),
        all.errors,
        all.unsent,
        (all.ok + all.non200) as f64 / elapsed.as_secs_f64(),
        percentile(l, 50.0),
        percentile(l, 90.0),
        percentile(l, 99.0),
        percentile(l, 99.9),
        l.last().copied().unwrap_or(0),
    );
    if all.ok == 0 || all.non200 > 0 || all.errors > 0 {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    }
}
