//! A real `redis-server`, started by the test on a free loopback port and killed on drop.
//!
//! ```ignore
//! let redis = RedisServer::start();                 // in-memory only
//! let redis = RedisServer::start_persistent();      // AOF (fsync always) in a temp dir
//! redis.url();                                      // redis://127.0.0.1:<port>
//! redis.kill(); redis.restart();                    // an outage, then the same port again
//! ```
//!
//! `redis-server` must be installed (`apt-get install -y redis-server`; `tests/run.sh`
//! does it): without it the test fails and says so, it is never skipped.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    dir: Option<PathBuf>,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::launch(None, &[])
    }

    /// With more `redis-server` arguments (e.g. an ACL user).
    pub fn start_with(args: &[&str]) -> RedisServer {
        Self::launch(None, args)
    }

    /// With an append-only file fsynced on every write: data survives `kill` + `restart`.
    pub fn start_persistent() -> RedisServer {
        let dir = std::env::temp_dir().join(format!(
            "authgate-redis-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self::launch(Some(dir), &[])
    }

    fn launch(dir: Option<PathBuf>, extra: &[&str]) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = RedisServer {
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port, and wait until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match &self.dir {
            Some(dir) => {
                cmd.args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                    .arg(dir);
            }
            None => {
                cmd.args(["--appendonly", "no"]);
            }
        }
        cmd.args(&self.extra);
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run redis-server ({e}): install it with `apt-get install -y redis-server` \
                 (tests/run.sh installs it)"
            )
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: an outage, as abrupt as they come.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A connection for the test's own inspection.
    pub async fn conn(&self) -> ::redis::aio::MultiplexedConnection {
        Self::connect(&self.url()).await
    }

    pub async fn connect(url: &str) -> ::redis::aio::MultiplexedConnection {
        ::redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Every key with every value's bytes (strings: GET; sets: the members, joined).
    pub async fn dump(&self) -> Vec<(String, Vec<u8>)> {
        let mut conn = self.conn().await;
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut out = Vec::new();
        for key in keys {
            let kind: String = ::redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            let value: Vec<u8> = match kind.as_str() {
                "string" => ::redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap(),
                "set" => {
                    let members: Vec<Vec<u8>> = ::redis::cmd("SMEMBERS")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    members.join(&b'\n')
                }
                _ => Vec::new(), // expired between KEYS and TYPE
            };
            out.push((key, value));
        }
        out
    }

    /// Total commands the server has executed (`INFO commandstats`), minus the INFO itself.
    pub async fn commands(&self) -> u64 {
        let mut conn = self.conn().await;
        let info: String = ::redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .unwrap();
        info.lines()
            .filter(|l| l.starts_with("cmdstat_") && !l.starts_with("cmdstat_info:"))
            .filter_map(|l| {
                l.split("calls=")
                    .nth(1)?
                    .split(',')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
