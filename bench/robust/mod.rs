//! What the soak (`bench/soak.rs`) and the fault run (`bench/faults.rs`) share: the release
//! gateway as a child process with a generated configuration, an upstream that can stream
//! bodies, tunnel WebSockets and reset its connections on demand, scripted logins and
//! sign-outs over HTTP, a fixed-rate load over live sessions that classifies every answer,
//! and readings of the gateway process from `/proc`.
//!
//! Both programs run the development provider (`devidp`) in-process on real sockets; the
//! gateway under test is the `authgate` binary given with `--authgate`.
#![allow(dead_code)] // each program uses its own part

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

pub const CLIENT_ID: &str = "robust";
pub const CLIENT_SECRET: &str = "robust-client-secret";
pub const COOKIE_NAME: &str = "authgate_session";
/// Longest a load request may take before it counts as a timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `--name value` arguments; `--flag` alone is `"1"`.
pub fn args() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut it = std::env::args().skip(1).peekable();
    while let Some(a) = it.next() {
        if let Some(name) = a.strip_prefix("--") {
            let value = match it.peek() {
                Some(v) if !v.starts_with("--") => it.next().unwrap_or_default(),
                _ => "1".to_owned(),
            };
            out.insert(name.to_owned(), value);
        }
    }
    out
}

pub fn arg<T: std::str::FromStr>(args: &BTreeMap<String, String>, name: &str, default: T) -> T {
    args.get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One JSON line on stdout (the results), flushed.
pub fn emit(value: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// A driver's `main`: runs `body` on a two-worker runtime. Exit 0 when the run passed its
/// criteria, 1 when it ran and failed them, 2 when it could not run (`what` names it).
pub fn run_driver(
    what: &str,
    body: impl std::future::Future<Output = Result<bool, String>>,
) -> std::process::ExitCode {
    let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    else {
        return std::process::ExitCode::from(2);
    };
    match rt.block_on(body) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            note(&format!("{what} failed: {e}"));
            std::process::ExitCode::from(2)
        }
    }
}

/// Progress on stderr.
pub fn note(text: &str) {
    eprintln!("[{}] {text}", chrono_now());
}

fn chrono_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

pub async fn bind() -> std::io::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0").await
}

/// A free port (bound, then released: the gateway binds it next).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

// ---------------------------------------------------------------------------------------
// The gateway process
// ---------------------------------------------------------------------------------------

/// The gateway's configuration: plain http on `port`, the provider at `issuer`, `session`
/// lines added to `[session]`, `tail` appended.
pub fn gateway_toml(
    port: u16,
    upstream: SocketAddr,
    issuer: &str,
    session: &str,
    tail: &str,
) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:{port}"
public_url = "http://127.0.0.1:{port}"
shutdown_grace = "5s"

[upstream]
url = "http://{upstream}"

[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
scopes = ["openid", "profile", "email", "offline_access"]

[session]
cookie_secrets = ["AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="]
cookie_secure = false
{session}
{tail}
"#
    )
}

/// A running `authgate` child process. Killed when dropped.
pub struct GatewayProc {
    child: Option<Child>,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    /// `taskset -c <cpu>` and `TOKIO_WORKER_THREADS=<workers>` when set.
    cpu: Option<String>,
    workers: Option<usize>,
    pub addr: SocketAddr,
    pub url: String,
}

impl GatewayProc {
    pub fn spawn(
        bin: &Path,
        config: &Path,
        log: &Path,
        port: u16,
        cpu: Option<String>,
        workers: Option<usize>,
    ) -> std::io::Result<Self> {
        let mut proc = GatewayProc {
            child: None,
            bin: bin.to_owned(),
            config: config.to_owned(),
            log: log.to_owned(),
            cpu,
            workers,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            url: format!("http://127.0.0.1:{port}"),
        };
        proc.start()?;
        Ok(proc)
    }

    /// Starts the process again (after [`GatewayProc::terminate`]).
    pub fn start(&mut self) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = match &self.cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpu).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(w) = self.workers {
            cmd.env("TOKIO_WORKER_THREADS", w.to_string());
        }
        self.child = Some(cmd.spawn()?);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then waits for the exit (up to `within`). Returns the exit code.
    pub async fn terminate(&mut self, within: Duration) -> Option<i32> {
        let pid = self.pid()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return status.code();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), String> {
        let http = http_client();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(r) = http.get(format!("{}/readyz", self.url)).send().await
                && r.status() == 200
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(format!("gateway {} never became ready", self.url))
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `redis-server` with append-only persistence in `dir`. Killed when dropped.
pub struct RedisProc {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl RedisProc {
    pub fn spawn(port: u16, dir: &Path) -> std::io::Result<Self> {
        let mut proc = RedisProc {
            child: None,
            port,
            dir: dir.to_owned(),
        };
        proc.start()?;
        Ok(proc)
    }

    pub fn start(&mut self) -> std::io::Result<()> {
        let log = std::fs::File::create(self.dir.join("redis.log"))?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--save",
                "",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no shutdown, no final write.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn wait_up(&self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)).await {
                let _ = s.write_all(b"PING\r\n").await;
                let mut buf = [0u8; 64];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await
                    && buf[..n].starts_with(b"+PONG")
                {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("redis on {} never answered PING", self.port))
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

// ---------------------------------------------------------------------------------------
// Readings of a process
// ---------------------------------------------------------------------------------------

/// Resident set size in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Open file descriptors.
pub fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// utime + stime in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(") ")?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// Established TCP connections whose local port is `port` (the upstream's side of the
/// gateway's upstream connections: only the gateway connects to it).
pub fn established_to(port: u16) -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    let want = format!("{port:04X}");
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].rsplit(':').next() == Some(want.as_str()) && f[3] == "01"
        })
        .count() as u64
}

pub fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The value of a metric series without labels (or its first labelled line).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.strip_prefix(series)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The value of the line that starts with `series` exactly (labels included), then a space.
pub fn metric_exact(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

pub async fn scrape(http: &reqwest::Client, gateway: &str) -> String {
    match http.get(format!("{gateway}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

// ---------------------------------------------------------------------------------------
// Logins and sign-outs
// ---------------------------------------------------------------------------------------

/// A client that never follows redirects and keeps no cookies.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(8)
        .build()
        .unwrap_or_default()
}

fn location(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get(reqwest::header::LOCATION)?
        .to_str()
        .ok()
        .map(str::to_owned)
}

/// `name=value` of every `Set-Cookie` whose name starts with `prefix` and has a value.
fn set_cookies(r: &reqwest::Response, prefix: &str) -> Vec<String> {
    r.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter(|nv| nv.starts_with(prefix) && !nv.ends_with('='))
        .map(str::to_owned)
        .collect()
}

/// Logs `user` in through the gateway's code flow, submitting the provider's login form
/// (every user its own identity). Returns the session cookie's value.
pub async fn login(http: &reqwest::Client, gateway: &str, user: &str) -> Result<String, String> {
    let start = http
        .get(format!("{gateway}/oauth2/start?rd=%2F"))
        .send()
        .await
        .map_err(|e| format!("start: {e}"))?;
    if start.status() != 302 {
        return Err(format!("start: {}", start.status()));
    }
    let authorize = location(&start).ok_or("start: no Location")?;
    let login_cookies = set_cookies(&start, &format!("{COOKIE_NAME}_login")).join("; ");
    let url = url::Url::parse(&authorize).map_err(|e| e.to_string())?;
    let mut form: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    form.push(("username".into(), user.into()));
    let login_url = format!(
        "{}://{}/login",
        url.scheme(),
        url.host_str()
            .zip(url.port())
            .map(|(h, p)| format!("{h}:{p}"))
            .unwrap_or_default()
    );
    let back = http
        .post(login_url)
        .form(&form)
        .send()
        .await
        .map_err(|e| format!("provider login: {e}"))?;
    let callback = location(&back).ok_or(format!("provider login: {}", back.status()))?;
    let done = http
        .get(&callback)
        .header(reqwest::header::COOKIE, login_cookies)
        .send()
        .await
        .map_err(|e| format!("callback: {e}"))?;
    let cookie = set_cookies(&done, &format!("{COOKIE_NAME}="))
        .into_iter()
        .next()
        .ok_or(format!("callback: {} without a session", done.status()))?;
    Ok(cookie[COOKIE_NAME.len() + 1..].to_owned())
}

/// Signs the session out (`GET /oauth2/sign_out`): the gateway deletes it and revokes its
/// refresh token. True when answered with the expected redirect.
pub async fn sign_out(http: &reqwest::Client, gateway: &str, cookie: &str) -> bool {
    http.get(format!("{gateway}/oauth2/sign_out"))
        .header(reqwest::header::COOKIE, format!("{COOKIE_NAME}={cookie}"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 302)
}

// ---------------------------------------------------------------------------------------
// The upstream
// ---------------------------------------------------------------------------------------

type UpBody = BoxBody<Bytes, Infallible>;

/// A fake upstream: `GET /ws` with `Upgrade` is tunnelled (every byte echoed), `POST
/// /upload` reads its body to the end and answers its size, `GET /download` streams 20
/// chunks of 1 KiB 250 ms apart, anything else answers 200 `ok`. While resetting, every
/// request makes its connection close with a TCP RST, unanswered.
pub struct Upstream {
    pub addr: SocketAddr,
    resetting: AtomicBool,
    /// Bumped to reset every open connection at once.
    reset_all: watch::Sender<u64>,
    pub requests: AtomicU64,
    pub resets: AtomicU64,
}

impl Upstream {
    pub async fn start() -> std::io::Result<Arc<Upstream>> {
        let listener = bind().await?;
        let up = Arc::new(Upstream {
            addr: listener.local_addr()?,
            resetting: AtomicBool::new(false),
            reset_all: watch::channel(0).0,
            requests: AtomicU64::new(0),
            resets: AtomicU64::new(0),
        });
        tokio::spawn(accept_loop(listener, up.clone()));
        Ok(up)
    }

    /// On: reset every open connection now, and each one a request arrives on from now on.
    pub fn set_resetting(&self, on: bool) {
        self.resetting.store(on, Ordering::SeqCst);
        if on {
            self.reset_all.send_modify(|g| *g += 1);
        }
    }
}

async fn accept_loop(listener: TcpListener, up: Arc<Upstream>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_upstream_conn(stream, up.clone()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn serve_upstream_conn(stream: TcpStream, up: Arc<Upstream>) {
    let _ = stream.set_nodelay(true);
    // A second descriptor of the socket: it survives the connection's own, so that a reset
    // can set SO_LINGER 0 on it after hyper let go, and close it with an RST.
    let Ok(std_stream) = stream.into_std() else {
        return;
    };
    let Ok(keep) = std_stream.try_clone() else {
        return;
    };
    let Ok(stream) = TcpStream::from_std(std_stream) else {
        return;
    };
    let kill = Arc::new(Notify::new());
    let mut reset_all = up.reset_all.subscribe();
    let service = {
        let (up, kill) = (up.clone(), kill.clone());
        hyper::service::service_fn(move |req| handle(up.clone(), kill.clone(), req))
    };
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => return,
        () = kill.notified() => {}
        _ = reset_all.changed() => {}
    }
    up.resets.fetch_add(1, Ordering::Relaxed);
    if let Ok(keep) = TcpStream::from_std(keep) {
        let _ = keep.set_zero_linger();
        drop(keep);
    }
}

async fn handle(
    up: Arc<Upstream>,
    kill: Arc<Notify>,
    req: Request<Incoming>,
) -> Result<Response<UpBody>, Infallible> {
    up.requests.fetch_add(1, Ordering::Relaxed);
    if up.resetting.load(Ordering::SeqCst) {
        kill.notify_one();
        std::future::pending::<()>().await;
    }
    let path = req.uri().path().to_owned();
    let response = if path == "/ws" && req.headers().contains_key(hyper::header::UPGRADE) {
        let upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = vec![0u8; 4096];
                loop {
                    match io.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if io.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            }
        });
        Response::builder()
            .status(101)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .body(Empty::new().boxed())
    } else if path == "/upload" {
        let n = match req.into_body().collect().await {
            Ok(b) => b.to_bytes().len(),
            Err(_) => 0,
        };
        Response::builder().body(Full::new(Bytes::from(n.to_string())).boxed())
    } else if path == "/download" {
        let chunks = futures_util::stream::unfold(0u32, |i| async move {
            if i == DOWNLOAD_CHUNKS {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            let frame: Result<Frame<Bytes>, Infallible> =
                Ok(Frame::data(Bytes::from(vec![b'x'; 1024])));
            Some((frame, i + 1))
        });
        Response::builder().body(BodyExt::boxed(StreamBody::new(chunks)))
    } else {
        Response::builder().body(Full::new(Bytes::from_static(b"ok")).boxed())
    };
    Ok(response.unwrap_or_else(|_| Response::new(Empty::new().boxed())))
}

/// Chunks of `/download` (1 KiB each, 250 ms apart).
pub const DOWNLOAD_CHUNKS: u32 = 20;

// ---------------------------------------------------------------------------------------
// Sessions and the load
// ---------------------------------------------------------------------------------------

/// One user's place in the load: the cookie of their current session.
pub struct Slot {
    pub user: String,
    cookie: Mutex<Option<Arc<str>>>,
    /// Bumped whenever the cookie is replaced or withdrawn (a sign-out by the load's own
    /// churn): a 401 for an older generation is expected, not a logout.
    generation: AtomicU64,
    /// Held by a tunnel or a streaming task: never churned.
    pub pinned: bool,
    /// Milliseconds (since the load's start) of the first 200 after [`Slots::mark`], 0 = none yet.
    first_ok_after_mark: AtomicU64,
    /// The gateway answered this session's request as unauthenticated (the load never ended
    /// it): the session is gone.
    logged_out: AtomicBool,
}

pub struct Slots {
    pub slots: Vec<Slot>,
    pub started: Instant,
}

impl Slots {
    pub fn new(n: usize, pinned: usize, prefix: &str) -> Arc<Slots> {
        Arc::new(Slots {
            slots: (0..n)
                .map(|i| Slot {
                    user: format!("{prefix}{i:05}"),
                    cookie: Mutex::new(None),
                    generation: AtomicU64::new(0),
                    pinned: i < pinned,
                    first_ok_after_mark: AtomicU64::new(0),
                    logged_out: AtomicBool::new(false),
                })
                .collect(),
            started: Instant::now(),
        })
    }

    pub fn ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn cookie(&self, i: usize) -> Option<(Arc<str>, u64)> {
        let slot = &self.slots[i];
        let c = lock(&slot.cookie);
        Some((c.clone()?, slot.generation.load(Ordering::SeqCst)))
    }

    pub fn set_cookie(&self, i: usize, cookie: Option<String>) {
        let slot = &self.slots[i];
        let mut c = lock(&slot.cookie);
        slot.generation.fetch_add(1, Ordering::SeqCst);
        *c = cookie.map(Arc::from);
        slot.logged_out.store(false, Ordering::SeqCst);
    }

    /// Logs every slot in through `gateways` (round robin), `parallel` at a time, spread
    /// evenly over `spread` (so that their refreshes are spread as well).
    pub async fn login_all(
        self: &Arc<Self>,
        gateways: &[String],
        parallel: usize,
        spread: Duration,
    ) -> Result<(), String> {
        let next = Arc::new(AtomicU64::new(0));
        let begin = Instant::now();
        let mut tasks: Vec<tokio::task::JoinHandle<Result<(), String>>> = Vec::new();
        for _ in 0..parallel {
            let (this, next, gateways) = (self.clone(), next.clone(), gateways.to_vec());
            tasks.push(tokio::spawn(async move {
                let http = http_client();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    if i >= this.slots.len() {
                        return Ok(());
                    }
                    let gw = &gateways[i % gateways.len()];
                    let at = begin + spread.mul_f64(i as f64 / this.slots.len() as f64);
                    tokio::time::sleep_until(at.into()).await;
                    let cookie = login(&http, gw, &this.slots[i].user).await?;
                    this.set_cookie(i, Some(cookie));
                }
            }));
        }
        for t in tasks {
            t.await.map_err(|e| e.to_string())??;
        }
        Ok(())
    }

    /// Starts watching for recovery: from now on each slot's first 200 is remembered.
    pub fn mark(&self) {
        for s in &self.slots {
            s.first_ok_after_mark.store(0, Ordering::SeqCst);
        }
    }

    /// Slots that lost their session (answered as unauthenticated).
    pub fn logged_out(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].logged_out.load(Ordering::SeqCst))
            .collect()
    }

    /// Of the slots still logged in: how many answered 200 since [`Slots::mark`], and the
    /// latest of those first 200s (ms since the load's start).
    pub fn recovered(&self) -> (usize, usize, u64) {
        let mut live = 0;
        let mut ok = 0;
        let mut latest = 0;
        for s in &self.slots {
            if s.logged_out.load(Ordering::SeqCst) || lock(&s.cookie).is_none() {
                continue;
            }
            live += 1;
            let t = s.first_ok_after_mark.load(Ordering::SeqCst);
            if t != 0 {
                ok += 1;
                latest = latest.max(t);
            }
        }
        (ok, live, latest)
    }
}

/// What one load request got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// 200 with a session.
    Ok,
    /// A request without a session: 302 (browser) or 401 (API), as expected.
    Anonymous,
    /// 302/401 for a session the load itself had just signed out.
    SignedOut,
    /// 302/401 for a session that was not ended by the load: a logout that should not have
    /// happened.
    Logout,
    S502,
    S503,
    S504,
    /// Any other 5xx.
    Other5xx,
    /// Anything else unexpected (4xx other than the above, 200 without a session...).
    OtherStatus,
    /// Could not connect or the connection failed mid-request.
    ConnError,
    Timeout,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Ok => "ok",
            Class::Anonymous => "anonymous_302_401",
            Class::SignedOut => "signed_out_by_load",
            Class::Logout => "spurious_logout",
            Class::S502 => "s502",
            Class::S503 => "s503",
            Class::S504 => "s504",
            Class::Other5xx => "other_5xx",
            Class::OtherStatus => "other_status",
            Class::ConnError => "conn_error",
            Class::Timeout => "timeout",
        }
    }
}

/// Counts and latencies since the last [`Recorder::take`].
#[derive(Default)]
pub struct Interval {
    pub latencies_us: Vec<u32>,
    pub counts: BTreeMap<Class, u64>,
    pub first_other_status: Option<u16>,
}

impl Interval {
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }

    pub fn count(&self, c: Class) -> u64 {
        self.counts.get(&c).copied().unwrap_or(0)
    }

    pub fn counts_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (c, n) in &self.counts {
            m.insert(c.name().into(), (*n).into());
        }
        serde_json::Value::Object(m)
    }

    pub fn merge(&mut self, other: &Interval) {
        self.latencies_us.extend_from_slice(&other.latencies_us);
        for (c, n) in &other.counts {
            *self.counts.entry(*c).or_default() += n;
        }
        self.first_other_status = self.first_other_status.or(other.first_other_status);
    }
}

#[derive(Default)]
pub struct Recorder {
    current: Mutex<Interval>,
}

impl Recorder {
    pub fn record(&self, class: Class, latency: Duration, status: Option<u16>) {
        let mut i = lock(&self.current);
        i.latencies_us
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
        *i.counts.entry(class).or_default() += 1;
        if matches!(class, Class::OtherStatus | Class::Other5xx) && i.first_other_status.is_none() {
            i.first_other_status = status;
        }
    }

    pub fn take(&self) -> Interval {
        std::mem::take(&mut *lock(&self.current))
    }
}

pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The shape of the load.
#[derive(Clone)]
pub struct LoadSpec {
    /// Gateways the connections are spread over (round robin by connection).
    pub targets: Vec<SocketAddr>,
    /// `None`: closed loop (each connection sends its next request at once).
    pub rate: Option<f64>,
    pub connections: usize,
    /// One request in `anonymous_every` goes without a session.
    pub anonymous_every: u64,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Option<Sender> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// Runs the load until `stop` turns true; every answer is classified into `recorder` and
/// each session's state into `slots`. Requests go to `GET /app/<n>`; request `i` is
/// anonymous when `i % anonymous_every == anonymous_every - 1` (half of those as a browser
/// navigation, half as an API call), else it uses the next session in turn.
pub async fn run_load(
    spec: LoadSpec,
    slots: Arc<Slots>,
    recorder: Arc<Recorder>,
    stop: watch::Receiver<bool>,
) {
    let start = Instant::now() + Duration::from_millis(100);
    let tasks: Vec<_> = (0..spec.connections)
        .map(|id| {
            let (spec, slots, recorder, stop) =
                (spec.clone(), slots.clone(), recorder.clone(), stop.clone());
            tokio::spawn(connection(spec, id, start, slots, recorder, stop))
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

async fn connection(
    spec: LoadSpec,
    id: usize,
    start: Instant,
    slots: Arc<Slots>,
    recorder: Arc<Recorder>,
    stop: watch::Receiver<bool>,
) {
    let addr = spec.targets[id % spec.targets.len()];
    let host = addr.to_string();
    let mut sender: Option<Sender> = None;
    let mut prev_done = start;
    let mut i = id as u64;
    let n = slots.slots.len() as u64;
    let every = spec.anonymous_every.max(2);
    while !*stop.borrow() {
        let base = match spec.rate {
            Some(rate) => {
                let intended = start + Duration::from_nanos((i as f64 * 1e9 / rate) as u64);
                if prev_done <= intended {
                    tokio::time::sleep_until(intended.into()).await;
                    None
                } else {
                    Some(intended) // queued behind the previous answer: counted from here
                }
            }
            None => None,
        };
        let anonymous = i % every == every - 1;
        let session = if anonymous {
            None
        } else {
            let k = i - i / every; // the k-th session request
            let slot = (k % n) as usize;
            slots.cookie(slot).map(|(c, g)| (slot, c, g))
        };
        let browser = anonymous && (i / every).is_multiple_of(2);
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            sender = connect(addr).await;
        }
        let sent = Instant::now();
        let base = base.unwrap_or(sent);
        let Some(s) = sender.as_mut() else {
            recorder.record(Class::ConnError, sent.elapsed(), None);
            prev_done = Instant::now();
            i += spec.connections as u64;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut req = Request::get(format!("/app/{}", i % 1000)).header("host", host.as_str());
        if let Some((_, cookie, _)) = &session {
            req = req.header("cookie", format!("{COOKIE_NAME}={cookie}"));
        }
        if browser {
            req = req.header("accept", "text/html");
        }
        let Ok(req) = req.body(Empty::<Bytes>::new()) else {
            break;
        };
        let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
            s.ready().await?;
            let response = s.send_request(req).await?;
            let status = response.status().as_u16();
            response.into_body().collect().await?;
            Ok::<u16, hyper::Error>(status)
        })
        .await;
        let done = Instant::now();
        let (class, status) = match result {
            Err(_) => {
                sender = None;
                (Class::Timeout, None)
            }
            Ok(Err(_)) => {
                sender = None;
                (Class::ConnError, None)
            }
            Ok(Ok(status)) => (classify(status, &session, &slots), Some(status)),
        };
        if let (Some((slot, _, _)), Class::Ok) = (&session, class) {
            let _ = slots.slots[*slot].first_ok_after_mark.compare_exchange(
                0,
                slots.ms().max(1),
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
        recorder.record(class, done.duration_since(base), status);
        prev_done = done;
        i += spec.connections as u64;
    }
}

fn classify(status: u16, session: &Option<(usize, Arc<str>, u64)>, slots: &Slots) -> Class {
    match (status, session) {
        (200, Some(_)) => Class::Ok,
        (302 | 401, None) => Class::Anonymous,
        (302 | 401, Some((slot, _, generation))) => {
            let s = &slots.slots[*slot];
            if s.generation.load(Ordering::SeqCst) != *generation {
                Class::SignedOut
            } else {
                s.logged_out.store(true, Ordering::SeqCst);
                Class::Logout
            }
        }
        (502, _) => Class::S502,
        (503, _) => Class::S503,
        (504, _) => Class::S504,
        (500..=599, _) => Class::Other5xx,
        _ => Class::OtherStatus,
    }
}

// ---------------------------------------------------------------------------------------
// Tunnels and streaming bodies
// ---------------------------------------------------------------------------------------

/// Counters of the long-lived traffic.
#[derive(Default)]
pub struct LongLived {
    pub tunnels_opened: AtomicU64,
    pub tunnel_echoes: AtomicU64,
    /// A tunnel that failed to open, closed or lost an echo.
    pub tunnel_failures: AtomicU64,
    pub uploads_ok: AtomicU64,
    pub downloads_ok: AtomicU64,
    pub stream_failures: AtomicU64,
}

async fn read_head(tcp: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
        if head.len() > 16 * 1024 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Holds a WebSocket tunnel open with `slot`'s session, sending a message every second and
/// reading its echo; reopens it if it fails (counted).
pub async fn tunnel_task(
    gateway: SocketAddr,
    slots: Arc<Slots>,
    slot: usize,
    counters: Arc<LongLived>,
    stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let Some((cookie, _)) = slots.cookie(slot) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let opened = async {
            let mut tcp = TcpStream::connect(gateway).await.ok()?;
            let request = format!(
                "GET /ws HTTP/1.1\r\nHost: {gateway}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\nCookie: {COOKIE_NAME}={cookie}\r\n\r\n"
            );
            tcp.write_all(request.as_bytes()).await.ok()?;
            let head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut tcp))
                .await
                .ok()??;
            head.starts_with("HTTP/1.1 101").then_some(tcp)
        }
        .await;
        let Some(mut tcp) = opened else {
            counters.tunnel_failures.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        counters.tunnels_opened.fetch_add(1, Ordering::Relaxed);
        let mut seq = 0u64;
        while !*stop.borrow() {
            seq += 1;
            let message = format!("message {seq:012}\n");
            let mut back = vec![0u8; message.len()];
            let echoed = async {
                tcp.write_all(message.as_bytes()).await.ok()?;
                tcp.read_exact(&mut back).await.ok()
            };
            match tokio::time::timeout(Duration::from_secs(10), echoed).await {
                Ok(Some(_)) if back == message.as_bytes() => {
                    counters.tunnel_echoes.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    counters.tunnel_failures.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Alternates a streamed upload (64 KiB sent as 32 chunks 150 ms apart) and a streamed
/// download (`/download`, 5 s) with `slot`'s session, for as long as the load runs.
pub async fn streaming_task(
    gateway: String,
    slots: Arc<Slots>,
    slot: usize,
    counters: Arc<LongLived>,
    stop: watch::Receiver<bool>,
) {
    let http = http_client();
    while !*stop.borrow() {
        let Some((cookie, _)) = slots.cookie(slot) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let chunks = futures_util::stream::unfold(0u32, |i| async move {
            if i == 32 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
            Some((Ok::<_, Infallible>(Bytes::from(vec![b'u'; 2048])), i + 1))
        });
        let upload = http
            .post(format!("{gateway}/upload"))
            .header(reqwest::header::COOKIE, format!("{COOKIE_NAME}={cookie}"))
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await;
        let ok = match upload {
            Ok(r) if r.status() == 200 => r.text().await.is_ok_and(|t| t == "65536"),
            _ => false,
        };
        if ok {
            counters.uploads_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.stream_failures.fetch_add(1, Ordering::Relaxed);
        }
        let download = http
            .get(format!("{gateway}/download"))
            .header(reqwest::header::COOKIE, format!("{COOKIE_NAME}={cookie}"))
            .send()
            .await;
        let ok = match download {
            Ok(mut r) if r.status() == 200 => {
                let mut total = 0usize;
                let mut failed = false;
                loop {
                    match r.chunk().await {
                        Ok(Some(c)) => total += c.len(),
                        Ok(None) => break,
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                !failed && total == DOWNLOAD_CHUNKS as usize * 1024
            }
            _ => false,
        };
        if ok {
            counters.downloads_ok.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.stream_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Least-squares slope of `ys` over `xs` (per unit of x).
pub fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    if xs.len() < 2 {
        return 0.0;
    }
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}
