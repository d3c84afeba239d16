//! Memory per session and CPU per request at up to 1 M live sessions (issue 8).
//!
//! ```text
//! taskset -c 0 cargo bench --bench sessions -- --upstream http://127.0.0.1:18081 \
//!     --loadgen target/release/examples/loadgen [--steps 0,10000,100000,1000000] [--secs 10]
//!     [--routes N]
//! ```
//!
//! `--routes N` (default 1): the gateway gets N routes, the first N - 1 with a `host` and a
//! path the load never asks for, the last (`/`, every host) the one every request matches, so
//! each request is routed past N - 1 host routes: the cost of routing a large table.
//!
//! What it does, in one process (pin it to one core; the load runs on the other):
//!
//! 1. Starts the development OpenID provider in-process (only for discovery: authenticated
//!    routes answer 503 until discovery succeeded) and builds the gateway through the public
//!    API (`authgate::build`), serving it on 127.0.0.1:0 with one tokio worker thread.
//! 2. Saves one probe session and checks that a request with its cookie reaches the upstream
//!    with a 200 (the upstream answers 200 only with `Authorization: Bearer`).
//! 3. Baseline: VmRSS (after `MemoryStore::sync()`).
//! 4. For each step n: saves sessions up to n (each with its own random tokens of realistic
//!    sizes: access token 900 B — a JWT —, ID token 1000 B, refresh token 43 B — opaque —,
//!    and its own identity built by the gateway's `IdentityRules` from sub, email,
//!    preferred_username, groups, sid), syncs the store, reads VmRSS, and prints
//!    `(VmRSS - baseline) / n - token bytes`: everything a session costs beyond the 1943 bytes
//!    of its three tokens (the record, the `Bearer ` prefix, the identity and its upstream
//!    headers, the key, moka's entry and its access-order/frequency structures, allocator
//!    rounding and fragmentation).
//! 5. At each step, `loadgen` (a child process, pinned by `--load-cpu`) sends a fixed rate of
//!    requests round-robin over up to 10 000 distinct session cookies for `--secs` seconds,
//!    and the process's own CPU time (utime + stime of /proc/self/stat, all threads) over
//!    the phase is divided by the requests answered. At the first and last step `wrk`
//!    (one cookie, 32 connections) measures saturation throughput and CPU per request too.
//!
//! Prints one JSON object per line on stdout; progress on stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::config::Config;
use authgate::gateway::Gateway;
use authgate::session::{Identity, Session, SessionKey, SessionStore, Store, Tokens, new_key};
use devidp::idp::{DevIdp, DevIdpOptions};
use figment::Figment;
use figment::providers::{Format, Toml};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

const ACCESS_LEN: usize = 900;
const ID_LEN: usize = 1000;
const REFRESH_LEN: usize = 43;
const TOKEN_BYTES: usize = ACCESS_LEN + ID_LEN + REFRESH_LEN;
const MAX_COOKIES: usize = 10_000;

struct Args {
    upstream: String,
    loadgen: String,
    steps: Vec<usize>,
    secs: u64,
    rate: u32,
    load_cpu: String,
    out_dir: Option<String>,
    variant: Variant,
    routes: usize,
}

/// What the memory steps save. Anything but `Full` only measures memory (no load phases):
/// the differences between the variants split the per-session cost into its parts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    /// Each session with its own identity, in the gateway's store (what the gateway does).
    Full,
    /// Every session shares one `Arc<Identity>`: full − this = the identity's cost.
    SharedIdentity,
    /// The same records held in a `Vec` instead of the store: full − this = the store's cost
    /// (moka's entry, deques, timer wheel, hash table, frequency sketch).
    Vec,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        upstream: String::new(),
        loadgen: "target/release/examples/loadgen".into(),
        steps: vec![0, 10_000, 100_000, 1_000_000],
        secs: 10,
        rate: 2000,
        load_cpu: "1".into(),
        out_dir: None,
        variant: Variant::Full,
        routes: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--upstream" => a.upstream = value()?,
            "--loadgen" => a.loadgen = value()?,
            "--steps" => {
                a.steps = value()?
                    .split(',')
                    .map(|s| s.trim().parse().map_err(|e| format!("--steps: {e}")))
                    .collect::<Result<_, _>>()?;
            }
            "--secs" => a.secs = value()?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--rate" => a.rate = value()?.parse().map_err(|e| format!("--rate: {e}"))?,
            "--load-cpu" => a.load_cpu = value()?,
            "--out-dir" => a.out_dir = Some(value()?),
            "--variant" => {
                a.variant = match value()?.as_str() {
                    "full" => Variant::Full,
                    "shared-identity" => Variant::SharedIdentity,
                    "vec" => Variant::Vec,
                    other => {
                        return Err(format!("--variant {other}: full | shared-identity | vec"));
                    }
                };
            }
            "--routes" => {
                a.routes = value()?.parse().map_err(|e| format!("--routes: {e}"))?;
                if a.routes == 0 {
                    return Err("--routes: at least 1".into());
                }
            }
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.upstream.is_empty() {
        return Err(
            "--upstream URL is required (a server answering 200 to Bearer requests)".into(),
        );
    }
    Ok(a)
}

/// `n` routes: `n - 1` host routes no request of the bench matches, then `/` for every host
/// (the route each request ends on, with the default `authenticated` policy).
fn route_table(n: usize) -> String {
    let mut toml = String::new();
    for i in 1..n {
        toml.push_str(&format!(
            "[[route]]\nhost = \"app{i}.example.test\"\npath = \"/app{i}/\"\n"
        ));
    }
    toml.push_str("[[route]]\npath = \"/\"\n");
    toml
}

/// A fast deterministic generator (xorshift64*): 2 GB of token text must not take minutes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `len` base64url characters (what JWTs and opaque tokens are made of).
    fn token(&mut self, len: usize) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut s = String::with_capacity(len);
        while s.len() < len {
            let mut r = self.next();
            for _ in 0..10 {
                if s.len() == len {
                    break;
                }
                s.push(ALPHABET[(r & 63) as usize] as char);
                r >>= 6;
            }
        }
        s
    }
}

fn identity(gateway: &Gateway, rng: &mut Rng, i: usize) -> Option<Arc<Identity>> {
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(format!("user-{i:08}")));
    claims.insert("email".into(), json!(format!("user{i}@example.test")));
    claims.insert("preferred_username".into(), json!(format!("user{i}")));
    claims.insert("groups".into(), json!(["staff"]));
    claims.insert("sid".into(), json!(rng.token(21)));
    gateway.identity_rules().identity(&claims).map(Arc::new)
}

fn session(identity: Arc<Identity>, rng: &mut Rng, now: u64) -> Option<Session> {
    Some(Session {
        tokens: Tokens {
            // A JWT-shaped access token: three dot-separated parts.
            bearer: Tokens::bearer_value(&format!(
                "eyJ{}.{}.{}",
                rng.token(60),
                rng.token(ACCESS_LEN - 3 - 60 - 2 - 342),
                rng.token(342)
            ))?,
            access_expires_at: Some(now + 3600),
            refresh_token: Some(rng.token(REFRESH_LEN).into_boxed_str()),
            id_token: Some(rng.token(ID_LEN).into_boxed_str()),
            more: Box::default(), // one resource: no extra access tokens
        },
        identity,
        login_at: now,
        backoff: None,
        last_seen: Default::default(),
        provider: Default::default(),
    })
}

fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of the whole process (every thread), in clock ticks (1/100 s here).
fn cpu_ticks() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // The command name may contain spaces: fields are counted after the closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

async fn sync(gateway: &Gateway) {
    // (the bench always configures the memory store)
    if let Store::Memory(m) = gateway.store().as_ref() {
        m.sync().await;
    }
}

/// Runs a child (the load) while the gateway serves; returns (stdout, CPU µs of this process).
async fn measured(mut cmd: Command) -> Result<(String, f64), String> {
    let before = cpu_ticks();
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot run the load: {e}"))?;
    let ticks = cpu_ticks().saturating_sub(before);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "load failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok((stdout, ticks as f64 * 1e6 / clk_tck()))
}

fn wrk_requests(out: &str) -> Option<(u64, f64)> {
    // "  123456 requests in 10.00s, ..." and "Requests/sec: 12345.67"
    let total = out
        .lines()
        .find(|l| l.contains(" requests in "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let rps = out
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    if out.contains("Non-2xx") || out.contains("Socket errors") {
        return None;
    }
    Some((total, rps))
}

struct Bench {
    args: Args,
    gateway: Arc<Gateway>,
    url: String,
    cookie_name: String,
    keys: Vec<SessionKey>,
}

impl Bench {
    fn cookie(&self, key: &SessionKey) -> String {
        format!(
            "{}={}",
            self.cookie_name,
            self.gateway.cookies().encode(key)
        )
    }

    async fn fixed_rate(&self, n: usize) -> Result<Value, String> {
        let file =
            std::env::temp_dir().join(format!("authgate-bench-cookies-{}", std::process::id()));
        let cookies: Vec<String> = self
            .keys
            .iter()
            .take(MAX_COOKIES)
            .map(|k| self.cookie(k))
            .collect();
        std::fs::write(&file, cookies.join("\n")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &self.args.load_cpu, &self.args.loadgen])
            .args(["--url", &format!("{}/app", self.url)])
            .args(["--rate", &self.args.rate.to_string()])
            .args(["--duration", &self.args.secs.to_string()])
            .args(["--connections", "32", "--cookies"])
            .arg(&file);
        let result = measured(cmd).await;
        let _ = std::fs::remove_file(&file);
        let (out, cpu_us) = result?;
        let mut v: Value = serde_json::from_str(out.trim()).map_err(|e| format!("{e}: {out}"))?;
        let answered = v["ok"].as_u64().unwrap_or(0);
        v["phase"] = json!("fixed_rate");
        v["sessions"] = json!(n);
        v["distinct_cookies"] = json!(cookies.len());
        v["cpu_us_per_req"] = json!(cpu_us / answered.max(1) as f64);
        Ok(v)
    }

    async fn saturation(&self, n: usize) -> Result<Value, String> {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &self.args.load_cpu, "wrk", "-t1", "-c32"])
            .arg(format!("-d{}s", self.args.secs))
            .args(["-H", &format!("Cookie: {}", self.cookie(&self.keys[0]))])
            .arg(format!("{}/app", self.url));
        let (out, cpu_us) = measured(cmd).await?;
        let (total, rps) =
            wrk_requests(&out).ok_or(format!("wrk saw errors or non-2xx answers:\n{out}"))?;
        Ok(json!({
            "phase": "saturation", "sessions": n, "connections": 32, "requests": total,
            "rps": rps, "cpu_us_per_req": cpu_us / total.max(1) as f64,
        }))
    }
}

fn emit(v: &Value, out_dir: Option<&str>) {
    println!("{v}");
    if let Some(dir) = out_dir {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("{dir}/sessions.jsonl"))
        {
            let _ = writeln!(f, "{v}");
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let idp_listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let idp = DevIdp::start(
        idp_listener,
        DevIdpOptions {
            client_id: "bench".into(),
            client_secret: Some("bench-secret".into()),
            access_ttl: Duration::from_secs(3600),
            rotate_refresh_tokens: true,
            banner: None,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let max_sessions = args.steps.iter().max().copied().unwrap_or(0) + 1000;
    let toml = format!(
        r#"[server]
listen = "{addr}"
public_url = "http://{addr}"
trusted_proxies = ["127.0.0.1/32"]
[upstream]
url = "{upstream}"
[oidc]
issuer = "{issuer}"
client_id = "bench"
client_secret = "bench-secret"
[session]
cookie_secrets = ["AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="]
cookie_secure = false
max_sessions = {max_sessions}
{routes}"#,
        upstream = args.upstream,
        issuer = idp.issuer(),
        routes = route_table(args.routes),
    );
    let config = Config::from_figment(Figment::from(Toml::string(&toml)))
        .map_err(|e| format!("config: {e}"))?;
    let gateway = authgate::build(config).map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(authgate::serve_gateway(gateway.clone(), listener, async {
        let _ = stop_rx.await;
    }));
    let ready_by = Instant::now() + Duration::from_secs(20);
    while !gateway.is_ready() {
        if Instant::now() > ready_by {
            return Err("discovery did not succeed".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut bench = Bench {
        cookie_name: gateway.cookies().name().to_owned(),
        url: format!("http://{addr}"),
        gateway,
        args,
        keys: Vec::new(),
    };
    let now = authgate::session::unix_now();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let probe = new_key();
    let shared = identity(&bench.gateway, &mut rng, 0).ok_or("no identity")?;
    let record = session(shared.clone(), &mut rng, now).ok_or("no token")?;
    bench
        .gateway
        .store()
        .save(probe, Arc::new(record))
        .await
        .map_err(|e| e.to_string())?;
    bench.keys.push(probe);

    // The probe session must really authenticate: one request answered 200 by the upstream.
    // (on a blocking thread: this one must keep serving with a current-thread runtime)
    let mut curl = Command::new("curl");
    curl.args([
        "-s",
        "-m",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
    ])
    .arg(format!("Cookie: {}", bench.cookie(&probe)))
    .arg(format!("{}/app", bench.url));
    let check = tokio::task::spawn_blocking(move || curl.output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("curl: {e}"))?;
    let code = String::from_utf8_lossy(&check.stdout).into_owned();
    if code != "200" {
        return Err(format!(
            "a request with the probe session answered {code}, not 200"
        ));
    }

    // Warm up (runtime buffers, connection pools), then the baseline.
    let variant = bench.args.variant;
    if variant == Variant::Full {
        let warm_secs = bench.args.secs;
        bench.args.secs = 2;
        bench.fixed_rate(0).await?;
        bench.args.secs = warm_secs;
    }
    let mut held: Vec<(SessionKey, Arc<Session>)> = Vec::new();
    if variant == Variant::Vec {
        held.reserve_exact(bench.args.steps.iter().max().copied().unwrap_or(0));
    }
    sync(&bench.gateway).await;
    let baseline_kib = proc_status_kib("VmRSS:");
    emit(
        &json!({"phase": "baseline", "variant": format!("{variant:?}"), "sessions": 0, "rss_kib": baseline_kib,
                "token_bytes_per_session": TOKEN_BYTES}),
        bench.args.out_dir.as_deref(),
    );
    let out_dir = bench.args.out_dir.clone();
    let steps = bench.args.steps.clone();
    let last = steps.last().copied();
    let mut have = 0usize; // sessions beyond the probe
    for (index, &n) in steps.iter().enumerate() {
        let started = Instant::now();
        while have < n {
            have += 1;
            let key = new_key();
            let id = match variant {
                Variant::SharedIdentity => shared.clone(),
                _ => identity(&bench.gateway, &mut rng, have).ok_or("no identity")?,
            };
            let record = Arc::new(session(id, &mut rng, now).ok_or("no token")?);
            if variant == Variant::Vec {
                held.push((key, record));
            } else {
                bench
                    .gateway
                    .store()
                    .save(key, record)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if bench.keys.len() < MAX_COOKIES {
                bench.keys.push(key);
            }
            if have.is_multiple_of(100_000) {
                eprintln!("sessions: {have}");
            }
        }
        let rss_unsynced = proc_status_kib("VmRSS:");
        sync(&bench.gateway).await;
        let rss = proc_status_kib("VmRSS:");
        let live = bench.gateway.store().live();
        let delta_bytes = rss.saturating_sub(baseline_kib) as f64 * 1024.0;
        let per_session = if n > 0 { delta_bytes / n as f64 } else { 0.0 };
        emit(
            &json!({"phase": "memory", "variant": format!("{variant:?}"), "sessions": n, "live": live, "held": held.len(),
                    "insert_secs": started.elapsed().as_secs_f64(),
                    "rss_kib_before_sync": rss_unsynced, "rss_kib": rss,
                    "vmhwm_kib": proc_status_kib("VmHWM:"),
                    "bytes_per_session": per_session,
                    "bytes_per_session_beyond_tokens": if n > 0 { per_session - TOKEN_BYTES as f64 } else { 0.0 }}),
            out_dir.as_deref(),
        );
        if variant != Variant::Full {
            continue;
        }
        if index == 0 || Some(n) == last {
            emit(&bench.saturation(n).await?, out_dir.as_deref());
        }
        emit(&bench.fixed_rate(n).await?, out_dir.as_deref());
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    idp.shutdown();
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sessions: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // Like `TOKIO_WORKER_THREADS=1 authgate`; SESSIONS_RUNTIME=current-thread tries tokio's
    // single-threaded scheduler instead (an experiment for the analysis, not what ships).
    let mut builder = if std::env::var("SESSIONS_RUNTIME").as_deref() == Ok("current-thread") {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(1);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sessions: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessions: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
