//! Time to write and read back the memory store's snapshot file (`session.snapshot_file`),
//! and its size per session, at 100 k and 1 M sessions (issue 18).
//!
//! ```text
//! cargo run --release --example snapshot -- [--steps 100000,1000000] [--dir /tmp]
//! ```
//!
//! Each session has random tokens of the sizes `bench/sessions.rs` uses (access token 900 B,
//! ID token 1000 B, refresh token 43 B) and its own identity (sub, email,
//! preferred_username, groups, sid) built by the gateway's `IdentityRules`. For each step:
//! the sessions are put in a gateway's memory store, `snapshot::write` writes them (sealed,
//! fsync'd, renamed), and `snapshot::restore` reads them into a second gateway's store.
//! Prints one JSON object per line on stdout (with the build profile); progress on stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::Instant;

use authgate::config::{Config, ProviderId};
use authgate::gateway::Gateway;
use authgate::session::snapshot;
use authgate::session::{Identity, Session, SessionKey, SessionStore, Store, Tokens, new_key};
use figment::Figment;
use figment::providers::{Format, Toml};
use serde_json::{Map, json};

const ACCESS_LEN: usize = 900;
const ID_LEN: usize = 1000;
const REFRESH_LEN: usize = 43;

/// A fast deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

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

fn gateway(max_sessions: usize) -> Result<Arc<Gateway>, String> {
    let toml = format!(
        r#"
        [server]
        public_url = "http://127.0.0.1:4180"
        [upstream]
        url = "http://127.0.0.1:9"
        [oidc]
        issuer = "http://127.0.0.1:9"
        client_id = "bench"
        [session]
        cookie_secrets = ["AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="]
        max_sessions = {max_sessions}
        "#
    );
    let config =
        Config::from_figment(Figment::from(Toml::string(&toml))).map_err(|e| e.to_string())?;
    authgate::build(config).map_err(|e| e.to_string())
}

fn sessions(gateway: &Gateway, n: usize, now: u64) -> Vec<(SessionKey, Session)> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let rules = gateway.identity_rules();
    (0..n)
        .filter_map(|i| {
            let mut claims = Map::new();
            claims.insert("sub".into(), json!(format!("user-{i:08}")));
            claims.insert("email".into(), json!(format!("user{i}@example.test")));
            claims.insert("preferred_username".into(), json!(format!("user{i}")));
            claims.insert("groups".into(), json!(["staff"]));
            claims.insert("sid".into(), json!(rng.token(21)));
            let identity: Arc<Identity> = Arc::new(rules.identity(&claims)?);
            let session = Session {
                tokens: Tokens {
                    bearer: Tokens::bearer_value(&format!(
                        "eyJ{}.{}.{}",
                        rng.token(60),
                        rng.token(ACCESS_LEN - 3 - 60 - 2 - 342),
                        rng.token(342)
                    ))?,
                    access_expires_at: Some(now + 3600),
                    refresh_token: Some(rng.token(REFRESH_LEN).into_boxed_str()),
                    id_token: Some(rng.token(ID_LEN).into_boxed_str()),
                    more: Box::default(),
                },
                identity,
                login_at: now,
                backoff: None,
                last_seen: Default::default(),
                provider: ProviderId::DEFAULT,
            };
            session.last_seen.set(now);
            Some((new_key(), session))
        })
        .collect()
}

fn memory(gateway: &Gateway) -> Result<&authgate::session::memory::MemoryStore, String> {
    match gateway.store().as_ref() {
        Store::Memory(m) => Ok(m),
        Store::Redis(_) => Err("not the memory store".into()),
    }
}

async fn step(n: usize, dir: &std::path::Path) -> Result<(), String> {
    let source = gateway(n + 1)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let made = sessions(&source, n, now);
    let put = memory(&source)?.restore(made).await;
    eprintln!("{n}: {put} sessions in the store");
    let path = dir.join(format!("authgate-snapshot-bench-{}", std::process::id()));
    let secrets = source.config().session.cookie_secrets.clone();
    let started = Instant::now();
    let source_rules = source.identity_rules();
    let written = snapshot::write(memory(&source)?, &secrets, &source_rules, &path)
        .map_err(|e| e.to_string())?;
    let write_time = started.elapsed();
    drop(source);
    let target = gateway(n + 1)?;
    let rules = target.identity_rules();
    let started = Instant::now();
    let read = snapshot::restore(memory(&target)?, &secrets, &rules, &path)
        .await
        .map_err(|e| e.to_string())?;
    let read_time = started.elapsed();
    let live = target.store().live();
    let _ = std::fs::remove_file(&path);
    println!(
        "{}",
        json!({
            "bench": "snapshot",
            "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
            "sessions": n,
            "written": written.sessions,
            "read_back": read.sessions,
            "live_after_read": live,
            "file_bytes": written.bytes,
            "bytes_per_session": written.bytes as f64 / n.max(1) as f64,
            "write_seconds": write_time.as_secs_f64(),
            "read_seconds": read_time.as_secs_f64(),
        })
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let mut steps = vec![100_000, 1_000_000];
    let mut dir = std::env::temp_dir();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--steps", Some(v)) => {
                steps = v.split(',').filter_map(|s| s.trim().parse().ok()).collect()
            }
            ("--dir", Some(v)) => dir = v.into(),
            _ => {
                eprintln!("usage: snapshot [--steps 100000,1000000] [--dir DIR]");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    for n in steps {
        if let Err(e) = runtime.block_on(step(n, &dir)) {
            eprintln!("step {n}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    std::process::ExitCode::SUCCESS
}
