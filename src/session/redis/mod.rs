//! The Redis store (`session.store = "redis"`): sessions shared by every replica.
//!
//! - One multiplexed connection per process through redis' `ConnectionManager`, created
//!   lazily (so `build()` stays synchronous and the gateway starts while Redis is down) and
//!   reconnected automatically. Every call is bounded by `session.redis_timeout`: past it
//!   the store counts as down (`/readyz` 503, authenticated requests 503 + `Retry-After`;
//!   never a logout).
//! - Records are sealed (`crate::seal`): AES-256-GCM under a key derived from the cookie secrets,
//!   under a key NAME that is a keyed hash of the session id. Layout, with `<p>` the
//!   `session.redis_key_prefix`:
//!   - `<p>s:<hmac(id)>`: the sealed record; TTL = min(idle left, absolute left), reset on
//!     every load (idle semantics) by the load script. With the admin API on, the value also
//!     carries the session's revocation envelope (its current refresh token, sealed under keys
//!     of its own and bound to this key name: `envelope`), rewritten with every write of the
//!     record, which an admin revoke opens to revoke the token at the provider;
//!   - `<p>sid:<hmac(sid)>`, `<p>sub:<hmac(sub)>`: sets of record names, for back-channel
//!     logout; their TTL is `absolute_timeout`, reset on every save, so at least any
//!     member's; a member whose record expired is harmless;
//!   - `<p>lease:<hmac(id)>`: the refresh lease (`lease`);
//!   - `<p><kind>:<hash>`: a single-use marker (`SET NX` with expiry, so a replay is refused
//!     on every replica), the hash its caller made: `used:` of a completed login's state,
//!     `once:` of a used logout token's issuer and `jti`.
//! - A replica-local read cache (moka) answers a session's requests for at most
//!   [`CACHE_TTL`] (1 s) without a round trip. That bounds how long a session deleted on
//!   another replica (sign-out, rejected refresh, back-channel logout) still works here; on
//!   the replica that deleted it, it is dead at once (see [`Inner::deletions`]). An entry's
//!   age is judged by the gateway's clock (`crate::clock`; moka's own time-to-live, on real
//!   time, only reclaims memory).
//! - An ended session stays ended: a refresh writes its result with the
//!   `REPLACE` script, a compare-and-set on the exact sealed value it read, so a record
//!   deleted (or rewritten) meanwhile is never written back, and nothing is ever written from
//!   the local cache.
//! - Topologies (`conn`): one Redis, a master found through Sentinel, or a Cluster. In a
//!   Cluster every key of one session (record under every secret's name, refresh lease, and
//!   so the refresh's result, which is the record) carries the hash tag `{<4 hex>}` of an
//!   unkeyed hash of its id, the same under every secret: one slot, so the load and
//!   compare-and-set scripts stay single-slot. The `sid:`/`sub:` indexes are keys of their
//!   own (a user's index in that user's slot), written BEFORE the record (a failure leaves at
//!   worst an index entry without a record, never a record the index misses), and read with
//!   one `SMEMBERS` each: a back-channel logout by `sub` asks the one node holding that user's
//!   index, whatever nodes the sessions live on. Markers have no tag (spread by their hash).
//! - Sentinel: writes that must survive a failover (a new session, a refresh's result, a
//!   refresh lease) are followed by `WAIT 1` on a connection of their own (see
//!   [`Inner::replicated`]).

pub(crate) mod codec;
mod conn;
pub(crate) mod envelope;
mod lease;
mod stash;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::future::Cache;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline, RedisResult, Script};
use sha2::Digest;

use self::conn::{Conn, SentinelConn};

use super::admin::{Revoked, SessionInfo, Target, valid_id};
use super::identity::IdentityRules;
use super::memory::matches_logout;
use super::{
    Marker, RefreshLease, Replaced, Session, SessionKey, SessionStore, StoreError, Version,
    Versioned,
};
use crate::clock::Clock;
use crate::config::{ProviderId, RedisTopology};
use crate::error::StoreSetupError;
use crate::metrics::StoreMetrics;
use crate::seal::Keyring;
use crate::secret::Secret;

/// Lifetime of the replica-local read cache.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// Lifetime of an unrenewed refresh lease (a dead holder's lease is gone after this).
pub const LEASE: Duration = Duration::from_secs(5);
/// Sentinel: how long a write waits for one replica's acknowledgement (`WAIT 1`) at most
/// (also at most half of `session.redis_timeout`). Past it the write stands, counted in
/// `authgate_store_unreplicated_writes_total`: with the replica gone, sessions go on.
pub const WAIT_REPLICA: Duration = Duration::from_millis(200);

/// Load a record: the first of KEYS (candidate names, current secret first) that exists.
/// Its TTL is reset to the idle timeout (ARGV[2] ms), capped at the deadline kept in the
/// value's plain header (bytes 2..9, Unix seconds; ARGV[1] is now). Returns {index, value}.
const LOAD: &str = r"
for i, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v then
    local ttl = tonumber(ARGV[2])
    if #v >= 9 then
      local deadline = 0
      for j = 2, 9 do deadline = deadline * 256 + string.byte(v, j) end
      if deadline > 0 then
        local left = (deadline - tonumber(ARGV[1])) * 1000
        if left <= 0 then
          redis.call('DEL', key)
          return false
        end
        if left < ttl then ttl = left end
      end
    end
    redis.call('PEXPIRE', key, ttl)
    return {i, v}
  end
end
return false";

/// Compare-and-set of a record: write ARGV[2] under KEYS[2] (the current secret's name; TTL
/// ARGV[3] ms) only while KEYS[1] (where it was read) still holds exactly ARGV[1]; a record
/// read under an old secret's name is moved. KEYS[3..] are the index sets to add KEYS[2] to
/// (their TTL ARGV[4] ms). Returns 1 written, 0 absent (ended: nothing is re-created), -1
/// changed by another write.
const REPLACE: &str = r"
local current = redis.call('GET', KEYS[1])
if not current then return 0 end
if current ~= ARGV[1] then return -1 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
if KEYS[1] ~= KEYS[2] then redis.call('DEL', KEYS[1]) end
for i = 3, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[2])
  redis.call('PEXPIRE', KEYS[i], ARGV[4])
end
return 1";

pub struct RedisOptions {
    /// One Redis, Sentinel or Cluster; `redis://` or `rediss://` URLs, with user and
    /// password when needed (secrets).
    pub topology: RedisTopology,
    pub key_prefix: String,
    pub timeout: Duration,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    /// Capacity of the local read cache.
    pub cache_capacity: u64,
    pub cache_ttl: Duration,
    pub lease: Duration,
    /// How long a refresh waits for another replica's lease before giving up (503).
    pub lease_wait: Duration,
    /// The gateway's: a record read back shares their header name list (see
    /// [`IdentityRules::restore`]).
    pub identity_rules: Arc<IdentityRules>,
    /// Write a revocation envelope with every record (`envelope`): the admin API is on.
    pub revocation_envelopes: bool,
}

/// Cheap to clone (one shared connection and cache).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    /// Cluster: session keys carry their slot's hash tag; index writes are separate calls.
    cluster: bool,
    /// Sentinel: `WAIT 1` after the writes that must survive a failover.
    wait_replica: Option<Duration>,
    /// The `WAIT`s, one at a time, shared by the writes they cover (see
    /// [`RedisStore::replicated`]).
    waits: tokio::sync::Mutex<()>,
    waits_started: AtomicU64,
    wait_log: std::sync::Mutex<WaitLog>,
    keys: Keyring,
    /// The keys of revocation envelopes (`envelope`): written only with
    /// `RedisOptions::revocation_envelopes`, opened by an admin revoke.
    envelopes: Keyring,
    opts: RedisOptions,
    cache: Cache<SessionKey, Cached>,
    metrics: Arc<StoreMetrics>,
    load: Script,
    replace: Script,
    /// Deletions run by this replica so far. A record read from (or written to) Redis goes
    /// into the local cache only if no deletion ran here in between: one may have deleted
    /// that very record just after the Redis call, and the cache would then serve it for up
    /// to `CACHE_TTL`. Read only on a cache miss, never on the hot path.
    deletions: AtomicU64,
    clock: Clock,
}

/// What the last `WAIT` found.
#[derive(Default)]
struct WaitLog {
    /// The number of the last completed `WAIT` (in start order), and whether a replica
    /// acknowledged it.
    last: Option<(u64, bool)>,
    /// No replica acknowledged lately: writes are not waited for until then.
    no_replica_until: Option<Instant>,
}

/// After a `WAIT` no replica acknowledged, writes are not waited for during this long (the
/// replica is down, or being resynchronised after a failover): no write pays the bound.
const NO_REPLICA_BACKOFF: Duration = Duration::from_secs(5);

/// A record in the local read cache, and until when it may answer (Unix milliseconds by the
/// store's clock).
#[derive(Clone)]
struct Cached {
    session: Arc<Session>,
    until_ms: u64,
}

impl RedisStore {
    /// Set up the client; connects on first use (needs a Tokio runtime).
    pub fn new(
        opts: RedisOptions,
        secrets: &[Secret<Vec<u8>>],
    ) -> Result<RedisStore, StoreSetupError> {
        RedisStore::with_clock(opts, secrets, Clock::system())
    }

    /// [`RedisStore::new`], deciding absolute deadlines and the local read cache's lifetime by
    /// `clock` (idle timeouts are Redis' own TTLs, on Redis' clock).
    pub fn with_clock(
        opts: RedisOptions,
        secrets: &[Secret<Vec<u8>>],
        clock: Clock,
    ) -> Result<RedisStore, StoreSetupError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(StoreSetupError::NoRuntime);
        }
        let keys = Keyring::new(secrets).ok_or(StoreSetupError::NoUsableSecret)?;
        let envelopes = Keyring::for_revocation(secrets).ok_or(StoreSetupError::NoUsableSecret)?;
        let metrics = Arc::new(StoreMetrics::default());
        metrics.set_topology(opts.topology.name());
        let urls: Vec<String> = match &opts.topology {
            RedisTopology::Single { url } => vec![url.expose().clone()],
            RedisTopology::Sentinel { sentinels, .. } => {
                sentinels.iter().map(|u| u.expose().clone()).collect()
            }
            RedisTopology::Cluster { nodes } => nodes.iter().map(|u| u.expose().clone()).collect(),
        };
        if urls.iter().any(|u| u.starts_with("rediss:")) {
            // redis builds its TLS config with `ClientConfig::builder()`, which needs the
            // process-wide provider: ring, the only one in the tree. Already set = fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        // An error may quote the URL (and its password): say only what is wrong.
        let invalid = |e: redis::RedisError| StoreSetupError::InvalidUrl(e.kind());
        let timeout = opts.timeout;
        let conn = match &opts.topology {
            RedisTopology::Single { url } => {
                let client = redis::Client::open(url.expose().as_str()).map_err(invalid)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                Conn::Single(
                    ConnectionManager::new_lazy_with_config(client, config)
                        .map_err(StoreSetupError::Client)?,
                )
            }
            RedisTopology::Sentinel { master, .. } => Conn::Sentinel(
                SentinelConn::new(&urls, master, timeout, metrics.clone()).map_err(invalid)?,
            ),
            RedisTopology::Cluster { .. } => {
                let client =
                    redis::cluster::ClusterClient::builder(urls.iter().map(String::as_str))
                        .connection_timeout(timeout)
                        .response_timeout(timeout)
                        .retries(2)
                        .max_retry_wait(200)
                        .build()
                        .map_err(invalid)?;
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                Conn::Cluster(client.get_pending_async_connection_with_config(config))
            }
        };
        let cluster = matches!(opts.topology, RedisTopology::Cluster { .. });
        let wait_replica = matches!(opts.topology, RedisTopology::Sentinel { .. })
            .then(|| WAIT_REPLICA.min(timeout / 2));
        let cache = Cache::builder()
            .max_capacity(opts.cache_capacity.max(1))
            .time_to_live(opts.cache_ttl)
            .build();
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conn,
                cluster,
                wait_replica,
                waits: tokio::sync::Mutex::new(()),
                waits_started: AtomicU64::new(0),
                wait_log: std::sync::Mutex::new(WaitLog::default()),
                keys,
                envelopes,
                opts,
                cache,
                metrics,
                load: Script::new(LOAD),
                replace: Script::new(REPLACE),
                deletions: AtomicU64::new(0),
                clock,
            }),
        })
    }

    pub fn metrics(&self) -> &StoreMetrics {
        &self.inner.metrics
    }

    /// The current Redis key of a session (for tests and operators' tooling).
    pub fn session_name(&self, key: &SessionKey) -> String {
        self.inner
            .session_key("s", key, &self.inner.session_hash(key))
    }

    /// Forget the local read cache (tests: what another replica would see).
    pub fn clear_local_cache(&self) {
        self.inner.cache.invalidate_all();
    }

    /// Whether each session's record exists (under any secret's name), in one round trip;
    /// touches nothing (no idle TTL reset).
    pub async fn alive(&self, keys: &[SessionKey]) -> Result<Vec<bool>, StoreError> {
        if self.inner.cluster {
            // A pipeline may not cross slots there: one `EXISTS` a session (its names under
            // every secret share its slot).
            let mut alive = Vec::with_capacity(keys.len());
            for key in keys {
                let mut exists = redis::cmd("EXISTS");
                exists.arg(self.inner.session_names(key));
                alive.push(self.query::<i64>("EXISTS (tunnels)", &exists).await? > 0);
            }
            return Ok(alive);
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("EXISTS").arg(self.inner.session_names(key));
        }
        let found: Vec<i64> = self.query_pipe("EXISTS (tunnels)", &pipe).await?;
        Ok(found.into_iter().map(|n| n > 0).collect())
    }

    /// The sessions of user `sub` (admin API), from the `sub` index sets. A record cannot be
    /// opened without its session id, so times come from what Redis keeps in the clear: the
    /// absolute deadline in the sealed value's header (login = deadline - absolute timeout)
    /// and the TTL (reset to the idle timeout by every use: last use = expiry - idle timeout
    /// while the idle timeout, not the absolute deadline, governs).
    pub async fn sessions_of(&self, sub: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let names = self.indexed(sub).await?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        // One pipeline, or in a Cluster (where a pipeline may not cross slots) one a record.
        let batches: Vec<&[String]> = if self.inner.cluster {
            names.chunks(1).collect()
        } else {
            vec![names.as_slice()]
        };
        let mut found: Vec<redis::Value> = Vec::with_capacity(names.len() * 2);
        for batch in batches {
            let mut pipe = redis::pipe();
            for name in batch {
                pipe.cmd("GETRANGE").arg(name).arg(1).arg(8);
                pipe.cmd("PTTL").arg(name);
            }
            found.extend(
                self.query_pipe::<Vec<redis::Value>>("sessions_of", &pipe)
                    .await?,
            );
        }
        let inner = &self.inner;
        let now_ms = inner.clock.unix_millis();
        let absolute = inner.opts.absolute_timeout.as_secs();
        let idle = inner.opts.idle_timeout.as_secs();
        let mut out = Vec::new();
        for (name, pair) in names.iter().zip(found.chunks(2)) {
            let [header, ttl] = pair else { continue };
            let (Ok(header), Ok(ttl)) = (
                Vec::<u8>::from_redis_value(header.clone()),
                i64::from_redis_value(ttl.clone()),
            ) else {
                continue;
            };
            let (Ok(deadline), Ok(ttl)) =
                (<[u8; 8]>::try_from(header.as_slice()), u64::try_from(ttl))
            else {
                continue; // gone meanwhile (PTTL -2) or unreadable
            };
            let deadline = u64::from_be_bytes(deadline);
            let expires_at = now_ms.saturating_add(ttl) / 1000;
            let login_at = deadline.saturating_sub(absolute);
            let Some(id) = inner.id_of_record(name) else {
                continue;
            };
            out.push(SessionInfo {
                id,
                login_at,
                last_used_at: expires_at.saturating_sub(idle).max(login_at),
                expires_at,
            });
        }
        out.sort_by(|a, b| (a.login_at, &a.id).cmp(&(b.login_at, &b.id)));
        Ok(out)
    }

    /// End the sessions of `target` (admin API). A record cannot be opened without its
    /// session id; each is taken with `GETDEL` (read and deleted in one step, so a refresh
    /// cannot slip a new refresh token in between) and its revocation envelope, when it has
    /// one that opens, gives the refresh token to revoke at the provider.
    pub async fn revoke(&self, target: &Target) -> Result<Revoked, StoreError> {
        let inner = &self.inner;
        let names = match target {
            Target::Sub(sub) => self.indexed(sub).await?,
            Target::Id(id) => inner.record_of_id(id).into_iter().collect(),
        };
        // One `GETDEL` a record: in a Cluster each record lives in its own slot.
        let mut count = 0;
        let mut refresh_tokens = Vec::new();
        for name in &names {
            let mut take = redis::cmd("GETDEL");
            take.arg(name);
            let Some(value) = self
                .query::<Option<Vec<u8>>>("GETDEL (revoke)", &take)
                .await?
            else {
                continue;
            };
            count += 1;
            let rules = &inner.opts.identity_rules;
            match envelope::open(&inner.envelopes, name, &value, rules) {
                Some(found) => refresh_tokens.push((found.provider, found.refresh_token)),
                None => tracing::debug!(
                    "admin revoke: a record without a revocation envelope that opens \
                     (written with the admin API off, or under another secret)"
                ),
            }
        }
        // This replica's cache: every entry of that user, or all of it for one id (its key
        // is not known from the id); the other replicas' expire within CACHE_TTL.
        let cached: Vec<SessionKey> = (inner.cache.iter())
            .filter(|(_, c)| match target {
                Target::Sub(sub) => c.session.identity.sub() == sub,
                Target::Id(_) => true,
            })
            .map(|(k, _)| *k)
            .collect();
        self.forget_locally(cached).await;
        Ok(Revoked {
            count,
            refresh_tokens,
        })
    }

    /// The record names in the `sub` index sets of user `sub`, under every secret and at
    /// every provider (the admin API names a user by `sub` alone). One `SMEMBERS` a set: in a
    /// Cluster each set lives in its own slot.
    async fn indexed(&self, sub: &str) -> Result<Vec<String>, StoreError> {
        let inner = &self.inner;
        let mut names: Vec<String> = Vec::new();
        for provider in inner.opts.identity_rules.provider_ids() {
            for set in inner.index_names(provider, "sub", sub) {
                let mut members = redis::cmd("SMEMBERS");
                members.arg(&set);
                names.extend(
                    self.query::<Vec<String>>("SMEMBERS (sub)", &members)
                        .await?,
                );
            }
        }
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// Run one Redis call with the timeout, the latency histogram and the error counters.
    async fn run<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let metrics = &self.inner.metrics;
        let started = Instant::now();
        let result = tokio::time::timeout(self.inner.opts.timeout, call).await;
        metrics.latency.observe(started.elapsed());
        match result {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                metrics.error(false);
                Err(StoreError::Redis {
                    what,
                    source: Box::new(e),
                })
            }
            Err(_) => {
                metrics.error(true);
                if let Conn::Sentinel(s) = &self.inner.conn {
                    s.timed_out();
                }
                Err(StoreError::Timeout {
                    what,
                    timeout: self.inner.opts.timeout,
                })
            }
        }
    }

    /// One command, through [`Self::run`].
    async fn query<T: FromRedisValue>(
        &self,
        what: &'static str,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        let mut conn = self.inner.conn.clone();
        self.run(what, cmd.query_async(&mut conn)).await
    }

    /// One pipeline (one round trip), through [`Self::run`].
    async fn query_pipe<T: FromRedisValue>(
        &self,
        what: &'static str,
        pipe: &Pipeline,
    ) -> Result<T, StoreError> {
        let mut conn = self.inner.conn.clone();
        self.run(what, pipe.query_async(&mut conn)).await
    }

    /// [`Self::query`] on the connection whose writes [`Self::replicated`] confirms.
    async fn query_durable<T: FromRedisValue>(
        &self,
        what: &'static str,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        let mut conn = self.inner.conn.durable();
        self.run(what, cmd.query_async(&mut conn)).await
    }

    /// Sentinel: wait (at most [`WAIT_REPLICA`]) until a replica holds every write made so
    /// far on the durable connection, so a failover right after it promotes a replica that
    /// has it. No replica in time: the write stands (counted), and for
    /// [`NO_REPLICA_BACKOFF`] writes are not waited for. Other topologies: nothing.
    ///
    /// A `WAIT` blocks its connection on the server, so they run one at a time, and one that
    /// started after a write completed covers it: writes that queued behind a `WAIT` share
    /// the next one (a group commit), so a burst of writes costs two bounds at most.
    pub(super) async fn replicated(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let Some(bound) = inner.wait_replica else {
            return Ok(());
        };
        let written_before = inner.waits_started.load(Ordering::SeqCst);
        if lock(&inner.wait_log)
            .no_replica_until
            .is_some_and(|until| Instant::now() < until)
        {
            inner.metrics.unreplicated();
            return Ok(());
        }
        let _one_at_a_time = inner.waits.lock().await;
        let covered = lock(&inner.wait_log)
            .last
            .filter(|(n, _)| *n > written_before);
        let acked = match covered {
            Some((_, acked)) => acked,
            None => {
                let number = inner.waits_started.fetch_add(1, Ordering::SeqCst) + 1;
                let mut wait = redis::cmd("WAIT");
                wait.arg(1).arg(millis(bound));
                let acked = self.query_durable::<i64>("WAIT", &wait).await? >= 1;
                let mut log = lock(&inner.wait_log);
                log.last = Some((number, acked));
                log.no_replica_until = (!acked).then(|| Instant::now() + NO_REPLICA_BACKOFF);
                acked
            }
        };
        if !acked {
            inner.metrics.unreplicated();
        }
        Ok(())
    }

    /// Cluster: add `name` to the session's index sets, each in its own slot (one call a set;
    /// before the record is written, see the module doc).
    async fn index_separately(&self, name: &str, session: &Session) -> Result<(), StoreError> {
        let ttl = millis(self.inner.opts.absolute_timeout);
        for set in self.inner.index_sets(session) {
            let mut pipe = redis::pipe();
            pipe.cmd("SADD").arg(&set).arg(name).ignore();
            pipe.cmd("PEXPIRE").arg(&set).arg(ttl).ignore();
            self.query_pipe::<()>("SADD (index)", &pipe).await?;
        }
        Ok(())
    }

    /// Read the record from Redis (never the local cache), with its version; resets its idle
    /// TTL. A record found under an old secret's name is moved under the current one.
    async fn fetch(&self, key: &SessionKey) -> Result<Option<Versioned>, StoreError> {
        // A record another replica moved at the same moment is read again under its new name.
        for _ in 0..2 {
            if let Some(found) = self.fetch_once(key).await? {
                return Ok(found);
            }
        }
        Err(StoreError::Contended)
    }

    /// [`Self::fetch`]; `None` when the record changed under it (read it again).
    async fn fetch_once(&self, key: &SessionKey) -> Result<Option<Option<Versioned>>, StoreError> {
        let inner = &self.inner;
        let generation = inner.deletions.load(Ordering::SeqCst);
        let names: Vec<String> = inner.session_names(key);
        let mut conn = inner.conn.clone();
        let mut invocation = inner.load.prepare_invoke();
        for name in &names {
            invocation.key(name);
        }
        invocation
            .arg(inner.clock.unix_now())
            .arg(millis(inner.opts.idle_timeout));
        let call = invocation.invoke_async::<Option<(usize, Vec<u8>)>>(&mut conn);
        let found = self.run("load", call).await?;
        let Some((index, sealed)) = found else {
            return Ok(Some(None));
        };
        let Some(session) = inner.open_session(key, &sealed) else {
            tracing::debug!("a session record failed to decrypt or decode: treated as absent");
            return Ok(Some(None));
        };
        if inner.clock.unix_now() >= session.absolute_deadline(inner.opts.absolute_timeout) {
            return Ok(Some(None));
        }
        let Some(name) = names.get(index.wrapping_sub(1)) else {
            return Ok(Some(None));
        };
        let session = Arc::new(session);
        let read = Versioned::sealed(session.clone(), name.clone(), sealed.into());
        if index == 1 {
            self.cache_insert(*key, session, generation).await;
            return Ok(Some(Some(read)));
        }
        // Found under a previous secret's name: move it under the current one, only while it
        // is still the record just read (a sign-out meanwhile keeps it ended).
        Ok(match self.write_over(key, &read, session).await? {
            (Replaced::Done, moved) => Some(moved),
            (Replaced::Gone, _) => Some(None),
            (Replaced::Changed, _) => None,
        })
    }

    /// Put a record just read from or written to Redis into the local cache, unless this
    /// replica deleted something since `generation` (see [`Inner::deletions`]). Inserted
    /// first and checked after, so a deletion racing with it either is seen here or removes
    /// the entry itself.
    async fn cache_insert(&self, key: SessionKey, session: Arc<Session>, generation: u64) {
        let inner = &self.inner;
        let ttl_ms = u64::try_from(inner.opts.cache_ttl.as_millis()).unwrap_or(u64::MAX);
        let until_ms = inner.clock.unix_millis().saturating_add(ttl_ms);
        inner.cache.insert(key, Cached { session, until_ms }).await;
        if inner.deletions.load(Ordering::SeqCst) != generation {
            inner.cache.invalidate(&key).await;
        }
    }

    /// The end of every local deletion: counted, then the local cache entries dropped.
    async fn forget_locally(&self, keys: impl IntoIterator<Item = SessionKey>) {
        let inner = &self.inner;
        inner.deletions.fetch_add(1, Ordering::SeqCst);
        for key in keys {
            inner.cache.invalidate(&key).await;
        }
    }

    /// Back-channel logout in Redis: the records the `SINTER`s of `find` name, and their
    /// entries in the index `sets`.
    async fn delete_indexed(&self, find: Pipeline, sets: Vec<&String>) -> Result<(), StoreError> {
        let found: Vec<Vec<String>> = self.query_pipe("SINTER", &find).await?;
        let doomed = found.concat();
        if doomed.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(&doomed).ignore();
        for set in sets {
            pipe.cmd("SREM").arg(set).arg(&doomed).ignore();
        }
        self.query_pipe::<()>("DEL (logout)", &pipe).await
    }

    /// Cluster: back-channel logout with the index sets of each secret in `groups` (a session
    /// matches when it is in every set of a group), read with one `SMEMBERS` a set, since
    /// each set lives in its own slot.
    async fn delete_indexed_cluster(&self, groups: Vec<Vec<&String>>) -> Result<(), StoreError> {
        let mut doomed: Vec<String> = Vec::new();
        for sets in &groups {
            let mut matching: Option<Vec<String>> = None;
            for set in sets {
                let mut members = redis::cmd("SMEMBERS");
                members.arg(*set);
                let found: Vec<String> = self.query("SMEMBERS", &members).await?;
                matching = Some(match matching {
                    None => found,
                    Some(before) => before.into_iter().filter(|m| found.contains(m)).collect(),
                });
            }
            doomed.extend(matching.unwrap_or_default());
        }
        if doomed.is_empty() {
            return Ok(());
        }
        // One DEL a record (each in its own slot), then the index entries.
        for name in &doomed {
            let mut del = redis::cmd("DEL");
            del.arg(name);
            self.query::<()>("DEL (logout)", &del).await?;
        }
        for set in groups.iter().flatten() {
            let mut srem = redis::cmd("SREM");
            srem.arg(*set).arg(&doomed);
            self.query::<()>("SREM (logout)", &srem).await?;
        }
        Ok(())
    }

    /// The `REPLACE` script: `session` over the version `expected` read. On success, the new
    /// version too.
    async fn write_over(
        &self,
        key: &SessionKey,
        expected: &Versioned,
        session: Arc<Session>,
    ) -> Result<(Replaced, Option<Versioned>), StoreError> {
        let inner = &self.inner;
        let Version::Sealed {
            name: read_name,
            value: read_value,
        } = &expected.version
        else {
            // A version from another store: it cannot be this store's record.
            return Ok((Replaced::Changed, None));
        };
        if !inner.session_names(key).contains(read_name) {
            // Another session's record (in a Cluster, another slot): not this one's version.
            return Ok((Replaced::Changed, None));
        }
        let generation = inner.deletions.load(Ordering::SeqCst);
        let now = inner.clock.unix_now();
        let deadline = session.absolute_deadline(inner.opts.absolute_timeout);
        if deadline <= now {
            return Ok((Replaced::Gone, None));
        }
        let ttl = millis(inner.opts.idle_timeout).min((deadline - now).saturating_mul(1000));
        let name = self.session_name(key);
        let sealed = inner.seal_session(key, &name, deadline, &session)?;
        if inner.cluster {
            self.index_separately(&name, &session).await?;
        }
        let mut invocation = inner.replace.prepare_invoke();
        invocation.key(read_name).key(&name);
        if !inner.cluster {
            for set in inner.index_sets(&session) {
                invocation.key(set);
            }
        }
        invocation
            .arg(&read_value[..])
            .arg(&sealed)
            .arg(ttl)
            .arg(millis(inner.opts.absolute_timeout));
        let mut conn = inner.conn.durable();
        let call = invocation.invoke_async::<i64>(&mut conn);
        let replaced = match self.run("replace", call).await? {
            1 => Replaced::Done,
            0 => Replaced::Gone,
            _ => Replaced::Changed,
        };
        if replaced == Replaced::Done {
            self.replicated().await?;
        }
        if replaced != Replaced::Done {
            inner.cache.invalidate(key).await;
            return Ok((replaced, None));
        }
        self.cache_insert(*key, session.clone(), generation).await;
        Ok((
            replaced,
            Some(Versioned::sealed(session, name, sealed.into())),
        ))
    }
}

impl Inner {
    /// The keyed hash of a session id under the current secret.
    fn session_hash(&self, key: &SessionKey) -> String {
        self.keys.name("session", key)
    }

    /// The record's name under every secret, the current one first.
    fn session_names(&self, key: &SessionKey) -> Vec<String> {
        self.keys
            .names("session", key)
            .into_iter()
            .map(|h| self.session_key("s", key, &h))
            .collect()
    }

    /// `<prefix><kind>:<hash>`; in a Cluster `<prefix>{<tag>}<kind>:<hash>`, the tag the same
    /// for every key of the session under every secret (one slot).
    fn session_key(&self, kind: &str, key: &SessionKey, hash: &str) -> String {
        let prefix = &self.opts.key_prefix;
        if self.cluster {
            format!("{prefix}{{{}}}{kind}:{hash}", slot_tag(key))
        } else {
            format!("{prefix}{kind}:{hash}")
        }
    }

    /// The key of a single-use marker. Not keyed by the cookie secrets (the id is already a
    /// hash), so a secret rotation forgets nothing.
    fn marker_name(&self, marker: &Marker) -> String {
        let hex: String = marker.id.iter().map(|b| format!("{b:02x}")).collect();
        format!("{}{}:{hex}", self.opts.key_prefix, marker.kind)
    }

    /// The back-channel logout index sets a record belongs in (under the current secret).
    fn index_sets(&self, session: &Session) -> Vec<String> {
        let id = &session.identity;
        [Some(("sub", id.sub())), id.sid().map(|s| ("sid", s))]
            .into_iter()
            .flatten()
            .map(|(label, value)| {
                let value = self.index_value(session.provider, value);
                let hash = self.keys.name(label, &value);
                format!("{}{label}:{hash}", self.opts.key_prefix)
            })
            .collect()
    }

    /// The admin API's id of the record called `name`: its keyed hash (64 hex digits), in a
    /// Cluster preceded by its slot tag (68), so that the id alone names the record again.
    fn id_of_record(&self, name: &str) -> Option<String> {
        let rest = name.strip_prefix(self.opts.key_prefix.as_str())?;
        let id = if self.cluster {
            let (tag, hash) = rest.strip_prefix('{')?.split_once("}s:")?;
            format!("{tag}{hash}")
        } else {
            rest.strip_prefix("s:")?.to_owned()
        };
        valid_id(&id).then_some(id)
    }

    /// The record an admin API id names ([`Self::id_of_record`]); `None` for an id of
    /// another topology.
    fn record_of_id(&self, id: &str) -> Option<String> {
        let prefix = &self.opts.key_prefix;
        match (self.cluster, id.len()) {
            (true, 68) => Some(format!("{prefix}{{{}}}s:{}", &id[..4], &id[4..])),
            (false, 64) => Some(format!("{prefix}s:{id}")),
            _ => None,
        }
    }

    fn index_names(&self, provider: ProviderId, label: &str, value: &str) -> Vec<String> {
        let prefix = &self.opts.key_prefix;
        self.keys
            .names(label, &self.index_value(provider, value))
            .into_iter()
            .map(|h| format!("{prefix}{label}:{h}"))
            .collect()
    }

    /// What an index set is named after: the `sid` or `sub` itself for `[oidc]` (as before
    /// several providers), `NUL NAME NUL value` for a `[providers.NAME]` (a `sub` names a
    /// user at one provider; no value holds a NUL byte before a name, so none collide).
    fn index_value(&self, provider: ProviderId, value: &str) -> Vec<u8> {
        match self.opts.identity_rules.provider_name(provider) {
            None => value.as_bytes().to_vec(),
            Some(name) => [b"\0", name.as_bytes(), b"\0", value.as_bytes()].concat(),
        }
    }

    /// A record read back: layout 1 (no envelope) or 2 (after its envelope, which is part of
    /// the record's associated data), see `envelope`.
    fn open_session(&self, key: &SessionKey, sealed: &[u8]) -> Option<Session> {
        let (record, envelope) = envelope::split(sealed);
        let context = envelope::record_context(&session_context(key), envelope);
        let (plain, _) = self.keys.open(&context, &record)?;
        codec::decode_session(&plain, &self.opts.identity_rules)
    }

    /// The value to store for `session` under `name`: the sealed record, after its revocation
    /// envelope when envelopes are on and the session has a refresh token.
    fn seal_session(
        &self,
        key: &SessionKey,
        name: &str,
        deadline: u64,
        session: &Session,
    ) -> Result<Vec<u8>, StoreError> {
        let rules = &self.opts.identity_rules;
        let envelope = self
            .opts
            .revocation_envelopes
            .then(|| envelope::seal(&self.envelopes, name, deadline, session, rules))
            .flatten();
        let context = envelope::record_context(&session_context(key), envelope.as_deref());
        codec::encode_session(session, rules)
            .and_then(|plain| self.keys.seal(&context, deadline, &plain))
            .and_then(|record| envelope::frame(record, envelope.as_deref()))
            .ok_or(StoreError::Seal)
    }
}

impl SessionStore for RedisStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<Arc<Session>>, StoreError> {
        let inner = &self.inner;
        if let Some(cached) = inner.cache.get(key).await {
            let now_ms = inner.clock.unix_millis();
            let deadline = cached
                .session
                .absolute_deadline(inner.opts.absolute_timeout);
            if now_ms < cached.until_ms && now_ms / 1000 < deadline {
                inner.metrics.cache(true);
                return Ok(Some(cached.session));
            }
            inner.cache.invalidate(key).await;
        }
        inner.metrics.cache(false);
        Ok(self.fetch(key).await?.map(|read| read.session))
    }

    async fn save(&self, key: SessionKey, session: Arc<Session>) -> Result<(), StoreError> {
        let inner = &self.inner;
        let now = inner.clock.unix_now();
        let deadline = session.absolute_deadline(inner.opts.absolute_timeout);
        if deadline <= now {
            return self.delete(&key).await;
        }
        let ttl = millis(inner.opts.idle_timeout).min((deadline - now).saturating_mul(1000));
        let name = self.session_name(&key);
        let sealed = inner.seal_session(&key, &name, deadline, &session)?;
        let generation = inner.deletions.load(Ordering::SeqCst);
        if inner.cluster {
            self.index_separately(&name, &session).await?;
            let mut set = redis::cmd("SET");
            set.arg(&name).arg(sealed).arg("PX").arg(ttl);
            self.query_durable::<()>("save", &set).await?;
            self.cache_insert(key, session, generation).await;
            return Ok(());
        }
        let index_ttl = millis(inner.opts.absolute_timeout);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("SET")
            .arg(&name)
            .arg(sealed)
            .arg("PX")
            .arg(ttl)
            .ignore();
        for set in inner.index_sets(&session) {
            pipe.cmd("SADD").arg(&set).arg(&name).ignore();
            pipe.cmd("PEXPIRE").arg(&set).arg(index_ttl).ignore();
        }
        let mut conn = inner.conn.durable();
        self.run("save", pipe.query_async::<()>(&mut conn)).await?;
        self.replicated().await?;
        self.cache_insert(key, session, generation).await;
        Ok(())
    }

    async fn load_for_update(&self, key: &SessionKey) -> Result<Option<Versioned>, StoreError> {
        self.fetch(key).await
    }

    async fn replace(
        &self,
        key: &SessionKey,
        expected: &Versioned,
        session: Arc<Session>,
    ) -> Result<Replaced, StoreError> {
        Ok(self.write_over(key, expected, session).await?.0)
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        let inner = &self.inner;
        let mut del = redis::cmd("DEL");
        del.arg(inner.session_names(key));
        let deleted = self.query("DEL", &del).await;
        // Locally too, even when Redis failed: this replica stops serving it at once.
        self.forget_locally([*key]).await;
        deleted
    }

    async fn delete_matching(
        &self,
        provider: ProviderId,
        sid: Option<&str>,
        sub: Option<&str>,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        if sid.is_none() && sub.is_none() {
            return Ok(());
        }
        // Per secret: the sid set and/or the sub set; a session matches when it is in each.
        let sid_sets = sid.map(|s| inner.index_names(provider, "sid", s));
        let sub_sets = sub.map(|s| inner.index_names(provider, "sub", s));
        let groups: Vec<Vec<&String>> = (0..inner.keys.secrets())
            .map(|i| {
                [&sid_sets, &sub_sets]
                    .into_iter()
                    .filter_map(|s| s.as_ref().and_then(|s| s.get(i)))
                    .collect()
            })
            .collect();
        let deleted = if inner.cluster {
            self.delete_indexed_cluster(groups).await
        } else {
            let mut pipe = redis::pipe();
            for sets in &groups {
                pipe.cmd("SINTER").arg(sets);
            }
            self.delete_indexed(pipe, groups.concat()).await
        };
        // This replica's cache (even when Redis failed); the others' expire within CACHE_TTL.
        let cached: Vec<SessionKey> = (inner.cache.iter())
            .filter(|(_, c)| matches_logout(&c.session, provider, sid, sub))
            .map(|(k, _)| *k)
            .collect();
        self.forget_locally(cached).await;
        deleted
    }

    async fn refresh_lease(&self, key: &SessionKey) -> Result<RefreshLease, StoreError> {
        self.take_lease(key).await
    }

    async fn is_claimed(&self, marker: &Marker) -> Result<bool, StoreError> {
        let mut exists = redis::cmd("EXISTS");
        exists.arg(self.inner.marker_name(marker));
        Ok(self.query::<i64>("EXISTS (marker)", &exists).await? > 0)
    }

    async fn claim_once(&self, marker: &Marker, ttl: Duration) -> Result<bool, StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(self.inner.marker_name(marker))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        let set: Option<String> = self.query("SET NX (marker)", &set).await?;
        Ok(set.is_some())
    }

    /// Sessions in this replica's read cache (Redis holds the shared count).
    fn live(&self) -> u64 {
        self.inner.cache.entry_count()
    }

    async fn ready(&self) -> bool {
        self.query::<String>("PING", &redis::cmd("PING"))
            .await
            .is_ok()
    }
}

/// A session's Cluster hash tag: 4 hex digits of an unkeyed hash of its id (16 bits, enough
/// to reach all 16384 slots; the same under every cookie secret, so a record read under an
/// old secret's name shares the slot of its new name). It reveals 16 bits of a hash of a
/// 128-bit random id, and nothing of the tokens.
fn slot_tag(key: &SessionKey) -> String {
    let digest = sha2::Sha256::new()
        .chain_update(b"authgate slot\0")
        .chain_update(key)
        .finalize();
    format!("{:02x}{:02x}", digest[0], digest[1])
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn session_context(key: &SessionKey) -> Vec<u8> {
    [b"session\0".as_slice(), key].concat()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
