//! The in-memory store: a moka cache bounded by `max_sessions`, with `idle_timeout` as
//! time-to-idle and `absolute_timeout` counted from the login time kept in the record.
//!
//! moka's time-to-live restarts on every update (a refresh is an update), so the absolute
//! deadline is computed from `Session::login_at` by an `Expiry` and checked again on read.
//! When full, the least recently used session is dropped (contract Details 18): moka's
//! eviction policy is set to LRU. Its default, TinyLFU, admits a new entry only when it is
//! used more often than the one it would evict, so on a full store a fresh login (inserted
//! once) was refused: the user was logged in, then immediately unauthenticated, while idle
//! old sessions stayed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use moka::policy::EvictionPolicy;

use super::{RefreshLease, Session, SessionKey, SessionStore, StoreError, unix_now};

pub struct MemoryStore {
    cache: Cache<SessionKey, Arc<Session>>,
    absolute_timeout: Duration,
}

impl MemoryStore {
    pub fn new(max_sessions: u64, idle_timeout: Duration, absolute_timeout: Duration) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_sessions)
            .eviction_policy(EvictionPolicy::lru())
            .time_to_idle(idle_timeout)
            .expire_after(AbsoluteExpiry { absolute_timeout })
            .build();
        MemoryStore {
            cache,
            absolute_timeout,
        }
    }

    /// Run moka's pending maintenance (tests and metrics want exact counts).
    pub async fn sync(&self) {
        self.cache.run_pending_tasks().await;
    }
}

impl SessionStore for MemoryStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<Arc<Session>>, StoreError> {
        let Some(session) = self.cache.get(key).await else {
            return Ok(None);
        };
        if unix_now() >= session.absolute_deadline(self.absolute_timeout) {
            self.cache.invalidate(key).await;
            return Ok(None);
        }
        Ok(Some(session))
    }

    async fn save(&self, key: SessionKey, session: Arc<Session>) -> Result<(), StoreError> {
        self.cache.insert(key, session).await;
        Ok(())
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        self.cache.invalidate(key).await;
        Ok(())
    }

    async fn delete_matching(
        &self,
        sid: Option<&str>,
        sub: Option<&str>,
    ) -> Result<(), StoreError> {
        // A scan: back-channel logouts are rare, and an index would cost memory per session.
        let doomed: Vec<Arc<SessionKey>> = self
            .cache
            .iter()
            .filter(|(_, s)| matches_logout(s, sid, sub))
            .map(|(k, _)| k)
            .collect();
        for key in doomed {
            self.cache.invalidate(key.as_ref()).await;
        }
        Ok(())
    }

    /// One replica: the in-process single flight is all the coordination there is.
    async fn refresh_lease(&self, _key: &SessionKey) -> Result<RefreshLease, StoreError> {
        Ok(RefreshLease::local())
    }

    async fn load_authoritative(
        &self,
        key: &SessionKey,
    ) -> Result<Option<Arc<Session>>, StoreError> {
        self.load(key).await
    }

    fn live(&self) -> u64 {
        self.cache.entry_count()
    }

    async fn ready(&self) -> bool {
        true
    }
}

/// Back-channel logout (OpenID Back-Channel Logout 1.0 section 2.4): with a `sid`, the
/// sessions of that provider session; with only a `sub`, every session of that user.
pub fn matches_logout(session: &Session, sid: Option<&str>, sub: Option<&str>) -> bool {
    let id = &session.identity;
    match (sid, sub) {
        (Some(sid), Some(sub)) => id.sid() == Some(sid) && id.sub() == sub,
        (Some(sid), None) => id.sid() == Some(sid),
        (None, Some(sub)) => id.sub() == sub,
        (None, None) => false,
    }
}

struct AbsoluteExpiry {
    absolute_timeout: Duration,
}

impl AbsoluteExpiry {
    fn remaining(&self, session: &Session) -> Duration {
        let deadline = session.absolute_deadline(self.absolute_timeout);
        Duration::from_secs(deadline.saturating_sub(unix_now()))
    }
}

impl Expiry<SessionKey, Arc<Session>> for AbsoluteExpiry {
    fn expire_after_create(
        &self,
        _: &SessionKey,
        s: &Arc<Session>,
        _: Instant,
    ) -> Option<Duration> {
        Some(self.remaining(s))
    }

    fn expire_after_update(
        &self,
        _: &SessionKey,
        s: &Arc<Session>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.remaining(s))
    }
}
