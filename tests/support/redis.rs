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
        Self::start_persistent_with(&[])
    }

    /// [`RedisServer::start_persistent`] with more arguments (relative paths land in its
    /// own directory: Redis runs there).
    pub fn start_persistent_with(args: &[&str]) -> RedisServer {
        Self::launch(Some(temp_dir("redis")), args)
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

    pub fn is_running(&self) -> bool {
        self.child.is_some()
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

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "authgate-{what}-{}-{}",
        std::process::id(),
        unique()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A free loopback port (free when asked).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `check` every 50 ms until true; panics with `what` after `within`.
pub async fn wait_for<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `INFO <section>` of the server at `url` as `field:value` lines (empty when it does not
/// answer).
pub async fn info(url: &str, section: &str) -> String {
    let Ok(client) = ::redis::Client::open(url) else {
        return String::new();
    };
    let Ok(Ok(mut conn)) = tokio::time::timeout(
        Duration::from_secs(1),
        client.get_multiplexed_async_connection(),
    )
    .await
    else {
        return String::new();
    };
    ::redis::cmd("INFO")
        .arg(section)
        .query_async(&mut conn)
        .await
        .unwrap_or_default()
}

/// One master, one replica, three Sentinels (`redis-server --sentinel`, a generated
/// configuration each) monitoring it as [`SentinelGroup::NAME`], quorum 2, with the
/// failover timings cut short (down after 1 s). Everything killed on drop.
pub struct SentinelGroup {
    pub master: RedisServer,
    pub replica: RedisServer,
    sentinels: Vec<(u16, Child)>,
    dir: PathBuf,
}

impl SentinelGroup {
    pub const NAME: &'static str = "authgate";

    pub async fn start() -> SentinelGroup {
        // In the group's directory: a full sync writes an RDB file.
        let dir = temp_dir("sentinel");
        let dir_arg = dir.display().to_string();
        let master = RedisServer::start_with(&["--dir", &dir_arg, "--dbfilename", "master.rdb"]);
        let replica = RedisServer::start_with(&[
            "--dir",
            &dir_arg,
            "--dbfilename",
            "replica.rdb",
            "--replicaof",
            "127.0.0.1",
            &master.port.to_string(),
        ]);
        wait_for(Duration::from_secs(10), "the replica's sync", || async {
            info(&replica.url(), "replication")
                .await
                .contains("master_link_status:up")
        })
        .await;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let conf = dir.join(format!("sentinel-{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {name} 127.0.0.1 {mport} 2\n\
                     sentinel down-after-milliseconds {name} 1000\n\
                     sentinel failover-timeout {name} 5000\n\
                     sentinel parallel-syncs {name} 1\n",
                    dir.display(),
                    name = Self::NAME,
                    mport = master.port
                ),
            )
            .unwrap();
            let child = Command::new("redis-server")
                .arg(&conf)
                .arg("--sentinel")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run redis-server --sentinel ({e})"));
            sentinels.push((port, child));
        }
        let group = SentinelGroup {
            master,
            replica,
            sentinels,
            dir,
        };
        // Every Sentinel knows the replica and the two other Sentinels (a failover needs
        // them: quorum, then a leader elected by a majority).
        for url in group.sentinel_urls() {
            wait_for(Duration::from_secs(20), "the Sentinels to meet", || {
                let url = url.clone();
                async move {
                    let info = info(&url, "sentinel").await;
                    info.contains("slaves=1") && info.contains("sentinels=3")
                }
            })
            .await;
        }
        group
    }

    pub fn sentinel_urls(&self) -> Vec<String> {
        (self.sentinels.iter())
            .map(|(port, _)| format!("redis://127.0.0.1:{port}"))
            .collect()
    }

    /// The master's port as the first answering Sentinel names it.
    pub async fn master_port(&self) -> Option<u16> {
        for url in self.sentinel_urls() {
            let Ok(client) = ::redis::Client::open(url.as_str()) else {
                continue;
            };
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                continue;
            };
            let addr: Option<(String, u16)> = ::redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(Self::NAME)
                .query_async(&mut conn)
                .await
                .ok()
                .flatten();
            if let Some((_, port)) = addr {
                return Some(port);
            }
        }
        None
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three masters (`--cluster-enabled yes`, AOF so a killed node comes back with its data,
/// `cluster-require-full-coverage no` so the others serve while one is down), joined with
/// `redis-cli --cluster create`.
pub struct ClusterGroup {
    pub nodes: Vec<RedisServer>,
}

impl ClusterGroup {
    pub async fn start() -> ClusterGroup {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let bus = free_port().to_string();
                RedisServer::start_persistent_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-require-full-coverage",
                    "no",
                    "--cluster-port",
                    &bus,
                ])
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e})"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let group = ClusterGroup { nodes };
        for node in &group.nodes {
            let url = node.url();
            wait_for(Duration::from_secs(20), "cluster_state:ok", || {
                let url = url.clone();
                async move {
                    let info = cluster_info(&url).await;
                    info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
                }
            })
            .await;
        }
        group
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Which node (index into `nodes`) serves the slot of `key`, as the first answering
    /// node's `CLUSTER SLOTS` says.
    pub async fn node_of(&self, key: &str) -> usize {
        use ::redis::Value;
        let node = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a live node");
        let mut conn = node.conn().await;
        let slot: i64 = ::redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let slots: Value = ::redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .unwrap();
        let Value::Array(ranges) = slots else {
            panic!("CLUSTER SLOTS: {slots:?}")
        };
        for range in ranges {
            let Value::Array(parts) = range else {
                continue;
            };
            if let (Some(Value::Int(lo)), Some(Value::Int(hi)), Some(Value::Array(master))) =
                (parts.first(), parts.get(1), parts.get(2))
                && (*lo..=*hi).contains(&slot)
                && let Some(Value::Int(port)) = master.get(1)
            {
                return (self.nodes.iter())
                    .position(|n| i64::from(n.port) == *port)
                    .unwrap();
            }
        }
        panic!("no node serves {key}")
    }
}

/// `CLUSTER INFO` of the node at `url` (empty when it does not answer).
pub async fn cluster_info(url: &str) -> String {
    let Ok(client) = ::redis::Client::open(url) else {
        return String::new();
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return String::new();
    };
    ::redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async(&mut conn)
        .await
        .unwrap_or_default()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
