//! The connection to Redis, whatever its topology. Every store call goes through [`Conn`],
//! which speaks redis' `ConnectionLike`, so commands, pipelines and scripts are written once.
//!
//! - **Single** (`redis_url`): one `ConnectionManager`, reconnected by redis itself.
//! - **Sentinel** (`redis_sentinels` + `redis_sentinel_master`): redis' own Sentinel client
//!   asks the Sentinels which node is the master (`SENTINEL MASTERS`, skipping one flagged
//!   down) and checks that node's `ROLE`; commands then go over one multiplexed connection to
//!   it. redis' `SentinelClient` hands out a client for a fixed address and never looks again,
//!   so the following is ours: a call that fails the way a lost master fails (connection
//!   refused or dropped, I/O error, timeout, `READONLY` from a demoted master, `MASTERDOWN`)
//!   drops that connection, and the next call asks the Sentinels again (one discovery at a
//!   time; after a failed one, calls fail at once for [`RETRY_DISCOVERY`] instead of queueing).
//!   The call that saw the failure is answered with its error (503), never retried: a write's
//!   fate on a dying master is unknown. A new master address is a failover seen
//!   (`authgate_store_failovers_total`). Besides, a background task listens to one Sentinel
//!   at a time for `+switch-master` of our master and forgets the connection at once, so a
//!   failover the gateway did not see fail (a forced one, a partition that left the old
//!   master reachable from here) switches before any call lands on a demoted master.
//! - **Cluster** (`redis_cluster_nodes`): redis' cluster client (slot map, `MOVED`/`ASK`
//!   followed and the map refreshed, one connection per node). It does not count
//!   redirections, so neither can we.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, TlsMode, Value,
};

use crate::metrics::StoreMetrics;

/// After a discovery that found no master, calls fail at once for this long (then the next
/// one asks the Sentinels again): no queue of requests each waiting on a discovery.
pub const RETRY_DISCOVERY: Duration = Duration::from_millis(100);

/// Cheap to clone: every clone shares the connection(s).
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Sentinel(SentinelConn),
    Cluster(ClusterConnection),
}

impl Conn {
    /// The connection for writes that a `WAIT` then confirms (Sentinel: a second connection
    /// to the master, so the `WAIT` holds up only these writes); the same one otherwise.
    pub(super) fn durable(&self) -> Conn {
        match self {
            Conn::Sentinel(s) => Conn::Sentinel(SentinelConn {
                shared: s.shared.clone(),
                durable: true,
            }),
            other => other.clone(),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The master the Sentinels name, followed through failovers.
#[derive(Clone)]
pub(super) struct SentinelConn {
    shared: Arc<SentinelShared>,
    durable: bool,
}

struct SentinelShared {
    master_name: String,
    /// How to talk to the master (credentials, db, TLS): those of the first Sentinel URL.
    node: SentinelNodeConnectionInfo,
    db: i64,
    timeout: Duration,
    /// Discovery, one at a time.
    sentinel: tokio::sync::Mutex<Sentinel>,
    current: Mutex<Current>,
    discoveries: AtomicU64,
    metrics: Arc<StoreMetrics>,
}

#[derive(Default)]
struct Current {
    master: Option<Arc<Master>>,
    /// The address of the last master found (a different one next time is a failover).
    last_address: Option<String>,
    /// When a discovery last failed, and how.
    failed: Option<(Instant, ErrorKind)>,
}

struct Master {
    conn: MultiplexedConnection,
    durable: MultiplexedConnection,
}

impl SentinelConn {
    /// Set up (connects on first use). `sentinels` are the Sentinels' URLs.
    pub(super) fn new(
        sentinels: &[String],
        master_name: &str,
        timeout: Duration,
        metrics: Arc<StoreMetrics>,
    ) -> RedisResult<SentinelConn> {
        let infos = (sentinels.iter())
            .map(|u| u.as_str().into_connection_info())
            .collect::<RedisResult<Vec<_>>>()?;
        let first = infos.first().ok_or_else(|| {
            RedisError::from((ErrorKind::InvalidClientConfig, "no Sentinel given"))
        })?;
        let mut node = SentinelNodeConnectionInfo::default()
            .set_redis_connection_info(first.redis_settings().clone());
        if matches!(first.addr(), ConnectionAddr::TcpTls { .. }) {
            node = node.set_tls_mode(TlsMode::Secure);
        }
        let db = first.redis_settings().db();
        let sentinel = Sentinel::build(infos.clone())?;
        let shared = Arc::new(SentinelShared {
            master_name: master_name.to_owned(),
            node,
            db,
            timeout,
            sentinel: tokio::sync::Mutex::new(sentinel),
            current: Mutex::new(Current::default()),
            discoveries: AtomicU64::new(0),
            metrics,
        });
        tokio::spawn(watch_switches(Arc::downgrade(&shared), infos, timeout));
        Ok(SentinelConn {
            shared,
            durable: false,
        })
    }

    fn current(&self) -> Result<Option<Arc<Master>>, RedisError> {
        let current = lock(&self.shared.current);
        if let Some(master) = &current.master {
            return Ok(Some(master.clone()));
        }
        if let Some((at, kind)) = current.failed
            && at.elapsed() < RETRY_DISCOVERY
        {
            return Err(RedisError::from((kind, "no Redis master known (Sentinel)")));
        }
        Ok(None)
    }

    /// The current master, asking the Sentinels when there is none.
    async fn master(&self) -> RedisResult<Arc<Master>> {
        if let Some(master) = self.current()? {
            return Ok(master);
        }
        let mut sentinel = self.shared.sentinel.lock().await;
        // Another call may have found it (or failed to) while this one waited.
        if let Some(master) = self.current()? {
            return Ok(master);
        }
        let found = self.discover(&mut sentinel).await;
        let mut current = lock(&self.shared.current);
        match found {
            Ok((address, master)) => {
                let master = Arc::new(master);
                if current.last_address.as_ref().is_some_and(|a| *a != address) {
                    self.shared.metrics.failover();
                    tracing::warn!(%address, "Redis master changed (Sentinel failover)");
                }
                current.last_address = Some(address);
                current.master = Some(master.clone());
                current.failed = None;
                Ok(master)
            }
            Err(e) => {
                current.failed = Some((Instant::now(), e.kind()));
                Err(e)
            }
        }
    }

    async fn discover(&self, sentinel: &mut Sentinel) -> RedisResult<(String, Master)> {
        let shared = &self.shared;
        shared.discoveries.fetch_add(1, Ordering::Relaxed);
        let client = sentinel
            .async_master_for(&shared.master_name, Some(&shared.node))
            .await?;
        let address = client.get_connection_info().addr().to_string();
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(shared.timeout))
            .set_response_timeout(Some(shared.timeout));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let durable = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        Ok((address, Master { conn, durable }))
    }

    /// A call on `master` failed: when the failure says the master is lost, forget it (unless
    /// another call already replaced it), so the next call asks the Sentinels.
    fn failed(&self, master: &Arc<Master>, error: &RedisError) {
        if !master_lost(error) {
            return;
        }
        let mut current = lock(&self.shared.current);
        if current
            .master
            .as_ref()
            .is_some_and(|m| Arc::ptr_eq(m, master))
        {
            current.master = None;
        }
    }

    /// Forget the master after a call that got no answer in time (the store's own timeout
    /// dropped the call, so [`Self::failed`] never saw it).
    pub(super) fn timed_out(&self) {
        lock(&self.shared.current).master = None;
    }

    fn connection(&self, master: &Master) -> MultiplexedConnection {
        if self.durable {
            master.durable.clone()
        } else {
            master.conn.clone()
        }
    }
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let master = self.master().await?;
            let mut conn = self.connection(&master);
            let result = conn.req_packed_command(cmd).await;
            if let Err(e) = &result {
                self.failed(&master, e);
            }
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let master = self.master().await?;
            let mut conn = self.connection(&master);
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            if let Err(e) = &result {
                self.failed(&master, e);
            }
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.db
    }
}

/// Listen to the Sentinels (one at a time, the next one when it goes away) for
/// `+switch-master <name> <old ip> <old port> <new ip> <new port>` of our master, and forget
/// the current connection when one comes. Ends with the store.
async fn watch_switches(
    shared: Weak<SentinelShared>,
    sentinels: Vec<ConnectionInfo>,
    timeout: Duration,
) {
    use futures_util::StreamExt;
    for info in sentinels.iter().cycle() {
        let subscribed = async {
            let client = redis::Client::open(info.clone())?;
            let mut pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
                .await
                .map_err(|_| RedisError::from((ErrorKind::Io, "Sentinel: no answer")))??;
            pubsub.subscribe("+switch-master").await?;
            Ok::<_, RedisError>(pubsub)
        };
        if let Ok(pubsub) = subscribed.await {
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let payload: String = message.get_payload().unwrap_or_default();
                if payload.split(' ').next() == Some(shared.master_name.as_str()) {
                    tracing::info!("Sentinel announced a new Redis master");
                    lock(&shared.current).master = None;
                }
            }
        }
        if shared.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A failure that says this node is no longer (or not reachably) the master.
fn master_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
