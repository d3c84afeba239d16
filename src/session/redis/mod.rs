//! The Redis store (`session.store = "redis"`): sessions shared by every replica.
//!
//! - One multiplexed connection per process through redis' `ConnectionManager`, created
//!   lazily (so `build()` stays synchronous and the gateway starts while Redis is down) and
//!   reconnected automatically. Every call is bounded by `session.redis_timeout`: past it
//!   the store counts as down (`/readyz` 503, authenticated requests 503 + `Retry-After`;
//!   never a logout).
//! - Records are sealed (`crypto`): AES-256-GCM under a key derived from the cookie secrets,
//!   under a key NAME that is a keyed hash of the session id. Layout, with `<p>` the
//!   `session.redis_key_prefix`:
//!   - `<p>s:<hmac(id)>`: the sealed record; TTL = min(idle left, absolute left), reset on
//!     every load (idle semantics) by the load script;
//!   - `<p>sid:<hmac(sid)>`, `<p>sub:<hmac(sub)>`: sets of record names, for back-channel
//!     logout; their TTL is `absolute_timeout`, reset on every save, so at least any
//!     member's; a member whose record expired is harmless;
//!   - `<p>lease:<hmac(id)>`: the refresh lease (`lease`);
//!   - `<p>used:<hmac(state)>`: a completed login's state, so that a replayed callback is
//!     refused on every replica (`SET NX`, expiring after `login_timeout`). Pending logins
//!     themselves live in the browser's sealed login cookies (`crate::login`): starting a
//!     login writes nothing here.
//! - A replica-local read cache (moka) answers a session's requests for at most
//!   [`CACHE_TTL`] (1 s) without a round trip. That bounds how long a session deleted on
//!   another replica (sign-out, rejected refresh, back-channel logout) still works here.
//! - Multi-key scripts and pipelines assume one Redis (or a primary with replicas), not
//!   Redis Cluster.

mod codec;
pub mod crypto;
mod lease;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline, RedisResult, Script};

use super::identity::IdentityRules;
use super::memory::matches_logout;
use super::{RefreshLease, Session, SessionKey, SessionStore, StoreError, unix_now};
use crate::metrics::StoreMetrics;
use crate::secret::Secret;
use crypto::Keyring;

/// Lifetime of the replica-local read cache.
pub const CACHE_TTL: Duration = Duration::from_secs(1);
/// Lifetime of an unrenewed refresh lease (a dead holder's lease is gone after this).
pub const LEASE: Duration = Duration::from_secs(5);

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

pub struct RedisOptions {
    /// `redis://` or `rediss://`, with user and password when needed (a secret).
    pub url: Secret<String>,
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
}

/// Cheap to clone: the login single-use markers share it.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    keys: Keyring,
    opts: RedisOptions,
    cache: Cache<SessionKey, Arc<Session>>,
    metrics: Arc<StoreMetrics>,
    load: Script,
}

impl RedisStore {
    /// Set up the client; connects on first use (needs a Tokio runtime).
    pub fn new(opts: RedisOptions, secrets: &[Secret<Vec<u8>>]) -> Result<RedisStore, String> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err("the Redis client needs a Tokio runtime".into());
        }
        let keys = Keyring::new(secrets).ok_or("no usable cookie secret")?;
        let url = opts.url.expose();
        if url.starts_with("rediss:") {
            // redis builds its TLS config with `ClientConfig::builder()`, which needs the
            // process-wide provider: ring, the only one in the tree. Already set = fine.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        // The error may quote the URL (and its password): say only what is wrong.
        let client = redis::Client::open(url.as_str())
            .map_err(|e| format!("invalid session.redis_url ({:?})", e.kind()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(opts.timeout))
            .set_response_timeout(Some(opts.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("cannot set up the Redis client: {e}"))?;
        let cache = Cache::builder()
            .max_capacity(opts.cache_capacity.max(1))
            .time_to_live(opts.cache_ttl)
            .build();
        Ok(RedisStore {
            inner: Arc::new(Inner {
                conn,
                keys,
                opts,
                cache,
                metrics: Arc::new(StoreMetrics::default()),
                load: Script::new(LOAD),
            }),
        })
    }

    pub fn metrics(&self) -> &StoreMetrics {
        &self.inner.metrics
    }

    /// The current Redis key of a session (for tests and operators' tooling).
    pub fn session_name(&self, key: &SessionKey) -> String {
        format!(
            "{}s:{}",
            self.inner.opts.key_prefix,
            self.inner.session_hash(key)
        )
    }

    /// Forget the local read cache (tests: what another replica would see).
    pub fn clear_local_cache(&self) {
        self.inner.cache.invalidate_all();
    }

    /// Run one Redis call with the timeout, the latency histogram and the error counters.
    async fn run<T>(
        &self,
        what: &str,
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
                Err(StoreError(format!("redis {what}: {e}")))
            }
            Err(_) => {
                metrics.error(true);
                Err(StoreError(format!("redis {what}: no answer in time")))
            }
        }
    }

    /// One command, through [`Self::run`].
    async fn query<T: FromRedisValue>(&self, what: &str, cmd: &Cmd) -> Result<T, StoreError> {
        let mut conn = self.inner.conn.clone();
        self.run(what, cmd.query_async(&mut conn)).await
    }

    /// One pipeline (one round trip), through [`Self::run`].
    async fn query_pipe<T: FromRedisValue>(
        &self,
        what: &str,
        pipe: &Pipeline,
    ) -> Result<T, StoreError> {
        let mut conn = self.inner.conn.clone();
        self.run(what, pipe.query_async(&mut conn)).await
    }

    async fn fetch(&self, key: &SessionKey) -> Result<Option<Arc<Session>>, StoreError> {
        let inner = &self.inner;
        let names: Vec<String> = inner.session_names(key);
        let mut conn = inner.conn.clone();
        let mut invocation = inner.load.prepare_invoke();
        for name in &names {
            invocation.key(name);
        }
        invocation
            .arg(unix_now())
            .arg(millis(inner.opts.idle_timeout));
        let call = invocation.invoke_async::<Option<(usize, Vec<u8>)>>(&mut conn);
        let found = self.run("load", call).await?;
        let Some((index, sealed)) = found else {
            return Ok(None);
        };
        let Some(session) = inner.open_session(key, &sealed) else {
            tracing::debug!("a session record failed to decrypt or decode: treated as absent");
            return Ok(None);
        };
        if unix_now() >= session.absolute_deadline(inner.opts.absolute_timeout) {
            return Ok(None);
        }
        let session = Arc::new(session);
        if index > 1 {
            // Found under a previous secret's name: move it under the current one.
            if let Some(old) = names.get(index - 1) {
                self.save(*key, session.clone()).await?;
                self.query::<()>("DEL", redis::cmd("DEL").arg(old)).await?;
            }
        }
        inner.cache.insert(*key, session.clone()).await;
        Ok(Some(session))
    }

    /// Whether a login `state` was completed, on any replica (its used marker exists under
    /// the name of any secret).
    pub async fn login_used(&self, state: &str) -> Result<bool, StoreError> {
        let mut exists = redis::cmd("EXISTS");
        exists.arg(self.inner.index_names("used", state));
        let found: u64 = self.query("EXISTS (login)", &exists).await?;
        Ok(found > 0)
    }

    /// Record a completed login's `state` for `ttl` (its cookie is dead by then): `false`
    /// when another request recorded it first. Written only once a code was redeemed, so
    /// the markers are bounded by real logins.
    pub async fn mark_login_used(&self, state: &str, ttl: Duration) -> Result<bool, StoreError> {
        let inner = &self.inner;
        let name = format!(
            "{}used:{}",
            inner.opts.key_prefix,
            inner.keys.name("used", state.as_bytes())
        );
        let mut set = redis::cmd("SET");
        set.arg(name).arg(1).arg("NX").arg("PX").arg(millis(ttl));
        let done: Option<String> = self.query("SET NX (login)", &set).await?;
        Ok(done.is_some())
    }
}

impl Inner {
    /// The keyed hash of a session id under the current secret.
    fn session_hash(&self, key: &SessionKey) -> String {
        self.keys.name("session", key)
    }

    /// The record's name under every secret, the current one first.
    fn session_names(&self, key: &SessionKey) -> Vec<String> {
        let prefix = &self.opts.key_prefix;
        self.keys
            .names("session", key)
            .into_iter()
            .map(|h| format!("{prefix}s:{h}"))
            .collect()
    }

    fn index_names(&self, label: &str, value: &str) -> Vec<String> {
        let prefix = &self.opts.key_prefix;
        self.keys
            .names(label, value.as_bytes())
            .into_iter()
            .map(|h| format!("{prefix}{label}:{h}"))
            .collect()
    }

    fn open_session(&self, key: &SessionKey, sealed: &[u8]) -> Option<Session> {
        let (plain, _) = self.keys.open(&session_context(key), sealed)?;
        codec::decode_session(&plain, &self.opts.identity_rules)
    }
}

impl SessionStore for RedisStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<Arc<Session>>, StoreError> {
        let inner = &self.inner;
        if let Some(session) = inner.cache.get(key).await {
            if unix_now() < session.absolute_deadline(inner.opts.absolute_timeout) {
                inner.metrics.cache(true);
                return Ok(Some(session));
            }
            inner.cache.invalidate(key).await;
        }
        inner.metrics.cache(false);
        self.fetch(key).await
    }

    async fn save(&self, key: SessionKey, session: Arc<Session>) -> Result<(), StoreError> {
        let inner = &self.inner;
        let now = unix_now();
        let deadline = session.absolute_deadline(inner.opts.absolute_timeout);
        if deadline <= now {
            return self.delete(&key).await;
        }
        let ttl = millis(inner.opts.idle_timeout).min((deadline - now).saturating_mul(1000));
        let sealed = codec::encode_session(&session)
            .and_then(|plain| inner.keys.seal(&session_context(&key), deadline, &plain))
            .ok_or_else(|| StoreError("cannot seal a session record".into()))?;
        let name = self.session_name(&key);
        let index_ttl = millis(inner.opts.absolute_timeout);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("SET")
            .arg(&name)
            .arg(sealed)
            .arg("PX")
            .arg(ttl)
            .ignore();
        let id = &session.identity;
        let indexes = [Some(("sub", id.sub())), id.sid().map(|s| ("sid", s))];
        for (label, value) in indexes.into_iter().flatten() {
            let set = format!(
                "{}{label}:{}",
                inner.opts.key_prefix,
                inner.keys.name(label, value.as_bytes())
            );
            pipe.cmd("SADD").arg(&set).arg(&name).ignore();
            pipe.cmd("PEXPIRE").arg(&set).arg(index_ttl).ignore();
        }
        self.query_pipe::<()>("save", &pipe).await?;
        inner.cache.insert(key, session).await;
        Ok(())
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        let inner = &self.inner;
        inner.cache.invalidate(key).await;
        let mut del = redis::cmd("DEL");
        del.arg(inner.session_names(key));
        self.query("DEL", &del).await
    }

    async fn delete_matching(
        &self,
        sid: Option<&str>,
        sub: Option<&str>,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        if sid.is_none() && sub.is_none() {
            return Ok(());
        }
        // Per secret: the sid set and/or the sub set; a session matches when it is in each.
        let sid_sets = sid.map(|s| inner.index_names("sid", s));
        let sub_sets = sub.map(|s| inner.index_names("sub", s));
        let mut pipe = redis::pipe();
        let mut fetched = Vec::new();
        for i in 0..inner.keys.secrets() {
            let sets: Vec<&String> = [&sid_sets, &sub_sets]
                .into_iter()
                .filter_map(|s| s.as_ref().and_then(|s| s.get(i)))
                .collect();
            pipe.cmd("SINTER").arg(&sets);
            fetched.extend(sets);
        }
        let found: Vec<Vec<String>> = self.query_pipe("SINTER", &pipe).await?;
        let doomed = found.concat();
        if !doomed.is_empty() {
            let mut pipe = redis::pipe();
            pipe.cmd("DEL").arg(&doomed).ignore();
            for set in fetched {
                pipe.cmd("SREM").arg(set).arg(&doomed).ignore();
            }
            self.query_pipe::<()>("DEL (logout)", &pipe).await?;
        }
        // This replica's cache; the others' expire within CACHE_TTL.
        let cached: Vec<Arc<SessionKey>> = (inner.cache.iter())
            .filter(|(_, s)| matches_logout(s, sid, sub))
            .map(|(k, _)| k)
            .collect();
        for key in cached {
            inner.cache.invalidate(key.as_ref()).await;
        }
        Ok(())
    }

    async fn refresh_lease(&self, key: &SessionKey) -> Result<RefreshLease, StoreError> {
        self.take_lease(key).await
    }

    async fn load_authoritative(
        &self,
        key: &SessionKey,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        self.fetch(key).await
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

fn session_context(key: &SessionKey) -> Vec<u8> {
    [b"session\0".as_slice(), key].concat()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
