//! The in-memory store: a moka cache bounded by `max_sessions`, with `idle_timeout` as
//! time-to-idle and `absolute_timeout` counted from the login time kept in the record.
//!
//! moka's time-to-live restarts on every update (a refresh is an update), so the absolute
//! deadline is computed from `Session::login_at` by an `Expiry` and checked again on read.
//! When full, the least recently used session is dropped: moka's
//! eviction policy is set to LRU. Its default, TinyLFU, admits a new entry only when it is
//! used more often than the one it would evict, so on a full store a fresh login (inserted
//! once) was refused: the user was logged in, then immediately unauthenticated, while idle
//! old sessions stayed.
//!
//! moka keeps its LRU order lazily: a read or a write is queued in a buffer and applied to
//! the order by the next maintenance pass (run by some later cache call once 64 operations
//! are queued or 300 ms have passed). A pass applies the queued READS FIRST, then the
//! writes, and a read of an entry whose insertion is still queued is dropped (the entry has
//! no place in the order yet). So logins A and B, a request with A, and login C within one
//! pass evicted A: A's read was dropped, and A, inserted first, looked least recent. A login
//! therefore runs the pending maintenance right after its insert, before its cookie is sent:
//! every later request of that session then reads an entry already in the order, and the
//! eviction that a login causes sees every read made before it. Logins are rare (each one
//! costs a round trip to the provider), and the hot path is untouched: a request still only
//! queues its read. moka drops a read only when its read buffer (384) is full, which takes
//! hundreds of reads queued while one pass runs (a pass starts at 64): under such a burst
//! the recency of a session may miss that one request.
//!
//! Deadlines are decided on read with the gateway's clock (`crate::clock`), which tests may
//! move forward: the absolute deadline from `login_at`, and the idle timeout from the
//! record's last-seen stamp (whole seconds, written at most once a second). moka's own
//! time-to-idle and expiry run on real time; they reclaim memory, and in production they
//! end a session first (the stamp's whole seconds only ever judge later).
//!
//! An ended session stays ended: updates go through `and_compute_with`
//! (`replace`: only over the very record the flight read, never an insert), and so do
//! deletions, so that moka serializes the two per key: a replace can no longer read the
//! record, lose the race to a delete, and then write it back.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::ops::compute::{CompResult, Op};
use moka::policy::EvictionPolicy;

use super::admin::{Revoked, SessionInfo, Target, short_id};
use super::by_user::ByUser;
use super::{
    Marker, ProviderId, RefreshLease, Replaced, Session, SessionKey, SessionStore, StoreError,
    Versioned,
};
use crate::clock::Clock;

/// Bound on the single-use markers of used logout tokens. Only the provider can sign a
/// logout token, so this many within the replay window is already far beyond any real
/// logout rate.
pub const MAX_LOGOUT_MARKERS: u64 = 100_000;

pub struct MemoryStore {
    cache: Cache<SessionKey, Arc<Session>>,
    absolute_timeout: Duration,
    /// `idle_timeout` in whole seconds.
    idle_secs: u64,
    clock: Clock,
    /// Single-use markers: each entry lives for the duration it holds. Only completed logins
    /// and provider-signed logout tokens set one, so no anonymous flood grows it; past its
    /// bound the least recently seen are forgotten first.
    markers: Cache<Marker, Held>,
    /// See [`MemoryStore::evicted_for_capacity`].
    evicted: Arc<AtomicU64>,
    /// The sessions of each user (`by_user`): kept in step by `save` and the removal
    /// listener.
    by_user: Arc<ByUser>,
}

/// A marker's lifetime: `ttl` on moka's (real-time) clock, and its deadline on ours.
#[derive(Debug, Clone, Copy)]
struct Held {
    ttl: Duration,
    /// Unix milliseconds, by the store's clock.
    until: u64,
}

/// What a [`MemoryStore`] holds at most, and for how long.
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    pub max_sessions: u64,
    pub idle_timeout: Duration,
    pub absolute_timeout: Duration,
    /// Single-use markers kept at most: `session.max_pending_logins` used login states plus
    /// [`MAX_LOGOUT_MARKERS`] logout tokens.
    pub max_markers: u64,
    pub clock: Clock,
}

impl MemoryStore {
    pub fn new(max_sessions: u64, idle_timeout: Duration, absolute_timeout: Duration) -> Self {
        MemoryStore::with_options(MemoryOptions {
            max_sessions,
            idle_timeout,
            absolute_timeout,
            max_markers: MAX_LOGOUT_MARKERS,
            clock: Clock::system(),
        })
    }

    pub fn with_options(opts: MemoryOptions) -> Self {
        let absolute_timeout = opts.absolute_timeout;
        let evicted = Arc::new(AtomicU64::new(0));
        let counter = evicted.clone();
        let by_user = Arc::new(ByUser::default());
        let index = by_user.clone();
        let cache = Cache::builder()
            .max_capacity(opts.max_sessions)
            // Only `Size`: an expiry or an explicit removal is not a capacity problem.
            // Every removal but a replacement (a refresh: same id, same user) leaves the index.
            .eviction_listener(move |key: Arc<SessionKey>, session: Arc<Session>, cause| {
                if cause == RemovalCause::Size {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                if cause != RemovalCause::Replaced {
                    index.remove(session.identity.sub(), &key);
                }
            })
            .eviction_policy(EvictionPolicy::lru())
            .time_to_idle(opts.idle_timeout)
            .expire_after(AbsoluteExpiry {
                absolute_timeout,
                clock: opts.clock.clone(),
            })
            .build();
        let markers = Cache::builder()
            .max_capacity(opts.max_markers)
            // A new marker always gets in, the oldest goes (moka's default admission could
            // refuse it).
            .eviction_policy(EvictionPolicy::lru())
            .expire_after(HeldDuration)
            .build();
        MemoryStore {
            cache,
            absolute_timeout,
            idle_secs: opts.idle_timeout.as_secs(),
            clock: opts.clock,
            markers,
            evicted,
            by_user,
        }
    }

    /// Sessions dropped so far because `max_sessions` was reached (least recently used
    /// first), before their timeouts.
    pub fn evicted_for_capacity(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Whether each session lives, by the same deadlines as `load`, without stamping its
    /// last use (the tunnel watcher's question). A session found past a deadline is dropped.
    pub async fn alive(&self, keys: &[SessionKey]) -> Vec<bool> {
        let now = self.clock.unix_now();
        let mut alive = Vec::with_capacity(keys.len());
        for key in keys {
            let live = match self.cache.get(key).await {
                Some(s) => now < s.absolute_deadline(self.absolute_timeout) && !self.idle(&s, now),
                None => false,
            };
            if !live {
                self.delete(key).await.ok();
            }
            alive.push(live);
        }
        alive
    }

    /// The live sessions of user `sub` (admin API).
    pub async fn sessions_of(&self, sub: &str) -> Vec<SessionInfo> {
        let now = self.clock.unix_now();
        let mut found: Vec<SessionInfo> = (self.keys_of(sub).await.iter())
            .filter_map(|(key, s)| {
                let deadline = s.absolute_deadline(self.absolute_timeout);
                if now >= deadline || self.idle(s, now) {
                    return None;
                }
                let last_used_at = match s.last_seen.get() {
                    0 => s.login_at,
                    seen => seen,
                };
                Some(SessionInfo {
                    id: short_id(key),
                    login_at: s.login_at,
                    last_used_at,
                    expires_at: last_used_at.saturating_add(self.idle_secs).min(deadline),
                })
            })
            .collect();
        found.sort_by(|a, b| (a.login_at, &a.id).cmp(&(b.login_at, &b.id)));
        found
    }

    /// End the sessions of `target` (admin API).
    pub async fn revoke(&self, target: &Target) -> Result<Revoked, StoreError> {
        let doomed: Vec<(SessionKey, Arc<Session>)> = match target {
            Target::Sub(sub) => self.keys_of(sub).await,
            Target::Id(id) => (self.cache.iter())
                .filter(|(k, _)| short_id(k) == *id)
                .map(|(k, s)| (*k, s))
                .collect(),
        };
        let mut revoked = Revoked::default();
        for (key, session) in doomed {
            self.delete(&key).await?;
            revoked.ended(&session);
        }
        Ok(revoked)
    }

    /// Every record of user `sub`, through the index (checking each record's own `sub`).
    /// moka's `get` counts as a use for moka's own (real-time) time-to-idle and LRU order,
    /// not for the idle timeout the store decides by (the record's last-seen stamp).
    async fn keys_of(&self, sub: &str) -> Vec<(SessionKey, Arc<Session>)> {
        let mut found = Vec::new();
        for key in self.by_user.keys(sub) {
            if let Some(s) = self.cache.get(&key).await
                && s.identity.sub() == sub
            {
                found.push((key, s));
            }
        }
        found
    }

    /// Users in the index by user (tests: it forgets ended sessions).
    pub fn indexed_users(&self) -> usize {
        self.by_user.users()
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
        let now = self.clock.unix_now();
        if now >= session.absolute_deadline(self.absolute_timeout) || self.idle(&session, now) {
            // Boxed: rare, and its future would make every request's future larger.
            Box::pin(self.cache.invalidate(key)).await;
            return Ok(None);
        }
        session.last_seen.set(now);
        Ok(Some(session))
    }

    async fn save(&self, key: SessionKey, session: Arc<Session>) -> Result<(), StoreError> {
        session.last_seen.set(self.clock.unix_now());
        self.by_user.insert(session.identity.sub(), key);
        self.cache.insert(key, session).await;
        // Put the new session in the LRU order now (see the module doc), and let the
        // eviction this insert causes see every read queued before it.
        self.cache.run_pending_tasks().await;
        Ok(())
    }

    async fn load_for_update(&self, key: &SessionKey) -> Result<Option<Versioned>, StoreError> {
        Ok(self.load(key).await?.map(Versioned::local))
    }

    async fn replace(
        &self,
        key: &SessionKey,
        expected: &Versioned,
        session: Arc<Session>,
    ) -> Result<Replaced, StoreError> {
        let expected = &expected.session;
        session.last_seen.set(self.clock.unix_now());
        let result = (self.cache.entry(*key))
            .and_compute_with(|current| {
                let op = match current {
                    Some(entry) if Arc::ptr_eq(entry.value(), expected) => Op::Put(session),
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
        Ok(match result {
            CompResult::ReplacedWith(_) | CompResult::Inserted(_) => Replaced::Done,
            CompResult::Unchanged(_) => Replaced::Changed,
            CompResult::StillNone(_) | CompResult::Removed(_) => Replaced::Gone,
        })
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        // Through the per-key compute lock, like `replace` (see the module doc).
        (self.cache.entry(*key))
            .and_compute_with(|_| std::future::ready(Op::Remove))
            .await;
        Ok(())
    }

    async fn delete_matching(
        &self,
        provider: ProviderId,
        sid: Option<&str>,
        sub: Option<&str>,
    ) -> Result<(), StoreError> {
        // With a `sub`, through the index by user; a `sid` alone: a scan (the index is by
        // user only, to keep the memory per session small).
        let doomed: Vec<SessionKey> = match sub {
            Some(sub) => (self.keys_of(sub).await.into_iter())
                .filter(|(_, s)| matches_logout(s, provider, sid, Some(sub)))
                .map(|(k, _)| k)
                .collect(),
            None => (self.cache.iter())
                .filter(|(_, s)| matches_logout(s, provider, sid, sub))
                .map(|(k, _)| *k)
                .collect(),
        };
        for key in doomed {
            self.delete(&key).await?;
        }
        Ok(())
    }

    /// One replica: the in-process single flight is all the coordination there is.
    async fn refresh_lease(&self, _key: &SessionKey) -> Result<RefreshLease, StoreError> {
        Ok(RefreshLease::local())
    }

    async fn is_claimed(&self, marker: &Marker) -> Result<bool, StoreError> {
        let now = self.clock.unix_millis();
        Ok((self.markers.get(marker).await).is_some_and(|held| now < held.until))
    }

    async fn claim_once(&self, marker: &Marker, ttl: Duration) -> Result<bool, StoreError> {
        let now = self.clock.unix_millis();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let held = Held {
            ttl,
            until: now.saturating_add(ms),
        };
        let result = (self.markers.entry(*marker))
            .and_compute_with(|current| {
                let op = match current {
                    Some(entry) if now < entry.value().until => Op::Nop,
                    _ => Op::Put(held),
                };
                std::future::ready(op)
            })
            .await;
        Ok(matches!(
            result,
            CompResult::Inserted(_) | CompResult::ReplacedWith(_)
        ))
    }

    fn live(&self) -> u64 {
        self.cache.entry_count()
    }

    async fn ready(&self) -> bool {
        true
    }
}

/// Back-channel logout (OpenID Back-Channel Logout 1.0 section 2.4): with a `sid`, the
/// sessions of that provider session; with only a `sub`, every session of that user. Only
/// sessions of `provider`: a `sub` names a user at one provider.
pub fn matches_logout(
    session: &Session,
    provider: ProviderId,
    sid: Option<&str>,
    sub: Option<&str>,
) -> bool {
    if session.provider != provider {
        return false;
    }
    let id = &session.identity;
    match (sid, sub) {
        (Some(sid), Some(sub)) => id.sid() == Some(sid) && id.sub() == sub,
        (Some(sid), None) => id.sid() == Some(sid),
        (None, Some(sub)) => id.sub() == sub,
        (None, None) => false,
    }
}

impl MemoryStore {
    /// Every session still live by the store's clock (for the snapshot file).
    pub fn live_sessions(&self) -> Vec<(SessionKey, Arc<Session>)> {
        let now = self.clock.unix_now();
        self.cache
            .iter()
            .filter(|(_, s)| !self.expired(s, now))
            .map(|(k, s)| (*k, s))
            .collect()
    }

    /// Put sessions read back from a snapshot, keeping their last-seen stamps (the idle
    /// timeout goes on counting from the last use before the restart). Expired ones are
    /// skipped; returns how many were kept.
    pub async fn restore(&self, sessions: Vec<(SessionKey, Session)>) -> usize {
        let now = self.clock.unix_now();
        let mut kept = 0;
        for (key, session) in sessions {
            if self.expired(&session, now) {
                continue;
            }
            self.cache.insert(key, Arc::new(session)).await;
            kept += 1;
        }
        self.cache.run_pending_tasks().await;
        kept
    }

    /// Past its absolute deadline, or idle (see the module doc).
    pub fn expired(&self, session: &Session, now: u64) -> bool {
        now >= session.absolute_deadline(self.absolute_timeout) || self.idle(session, now)
    }

    /// Unused for longer than `idle_timeout` by the store's clock (see the module doc).
    fn idle(&self, session: &Session, now: u64) -> bool {
        let seen = session.last_seen.get();
        seen != 0 && now.saturating_sub(seen) > self.idle_secs
    }
}

struct AbsoluteExpiry {
    absolute_timeout: Duration,
    clock: Clock,
}

impl AbsoluteExpiry {
    fn remaining(&self, session: &Session) -> Duration {
        let deadline = session.absolute_deadline(self.absolute_timeout);
        Duration::from_secs(deadline.saturating_sub(self.clock.unix_now()))
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

/// A marker lives for the duration stored with it (on moka's clock: reclamation only).
struct HeldDuration;

impl Expiry<Marker, Held> for HeldDuration {
    fn expire_after_create(&self, _: &Marker, held: &Held, _: Instant) -> Option<Duration> {
        Some(held.ttl)
    }

    fn expire_after_update(
        &self,
        _: &Marker,
        held: &Held,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(held.ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A marker's lifetime is judged by the store's clock, not moka's.
    #[tokio::test]
    async fn markers_expire_by_the_store_clock() {
        let (clock, hand) = Clock::adjustable();
        let store = MemoryStore::with_options(MemoryOptions {
            max_sessions: 10,
            idle_timeout: Duration::from_secs(60),
            absolute_timeout: Duration::from_secs(60),
            max_markers: 10,
            clock,
        });
        let marker = Marker {
            kind: "used",
            id: [3; 32],
        };
        let ttl = Duration::from_secs(600);
        assert!(store.claim_once(&marker, ttl).await.unwrap());
        assert!(!store.claim_once(&marker, ttl).await.unwrap(), "single use");
        hand.advance(Duration::from_secs(599));
        assert!(store.is_claimed(&marker).await.unwrap());
        hand.advance(Duration::from_secs(2));
        assert!(!store.is_claimed(&marker).await.unwrap(), "expired");
        assert!(
            store.claim_once(&marker, ttl).await.unwrap(),
            "claimed anew"
        );
        assert!(store.is_claimed(&marker).await.unwrap());
    }

    fn rss_kib() -> i64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    fn rules() -> crate::session::identity::IdentityRules {
        let headers = crate::config::HeadersConfig {
            authorization_bearer: true,
            user: Some(http::HeaderName::from_static("x-forwarded-user")),
            email: Some(http::HeaderName::from_static("x-forwarded-email")),
            preferred_username: None,
            groups: None,
            groups_claim: "groups".into(),
            claims: vec![],
        };
        crate::session::identity::IdentityRules::new(&headers, Vec::<String>::new())
    }

    fn session_of(rules: &crate::session::identity::IdentityRules, sub: &str, now: u64) -> Session {
        use crate::session::Tokens;
        let claims = serde_json::json!({"sub": sub, "email": format!("{sub}@example.test"), "sid": format!("sid-{sub}")});
        Session {
            tokens: Tokens {
                bearer: Tokens::bearer_value("at").unwrap(),
                access_expires_at: Some(now + 3600),
                refresh_token: None,
                id_token: None,
                more: Box::default(),
            },
            identity: Arc::new(rules.identity(claims.as_object().unwrap()).unwrap()),
            login_at: now,
            backoff: None,
            last_seen: Default::default(),
            provider: ProviderId::DEFAULT,
        }
    }

    /// The index by user forgets a session whatever removes it (a delete, a back-channel
    /// logout, an eviction for capacity), and keeps it across a replacement (a refresh).
    #[tokio::test]
    async fn the_index_by_user_follows_the_store() {
        let rules = rules();
        let store = MemoryStore::new(2, Duration::from_secs(3600), Duration::from_secs(7200));
        let now = store.clock.unix_now();
        let (a1, a2, b) = ([1; 16], [2; 16], [3; 16]);
        store
            .save(a1, Arc::new(session_of(&rules, "alice", now)))
            .await
            .unwrap();
        store
            .save(a2, Arc::new(session_of(&rules, "alice", now)))
            .await
            .unwrap();
        assert_eq!(store.sessions_of("alice").await.len(), 2);
        let read = store.load_for_update(&a1).await.unwrap().unwrap();
        let fresh = Arc::new(session_of(&rules, "alice", now));
        assert_eq!(
            store.replace(&a1, &read, fresh).await.unwrap(),
            Replaced::Done
        );
        store.sync().await;
        assert_eq!(
            store.sessions_of("alice").await.len(),
            2,
            "kept across a refresh"
        );
        store.delete(&a2).await.unwrap();
        store.sync().await;
        assert_eq!(store.sessions_of("alice").await.len(), 1);
        // Capacity 2: bob's login evicts alice's last session.
        store
            .save(b, Arc::new(session_of(&rules, "bob", now)))
            .await
            .unwrap();
        store
            .save([4; 16], Arc::new(session_of(&rules, "carol", now)))
            .await
            .unwrap();
        store.sync().await;
        store
            .delete_matching(ProviderId::DEFAULT, None, Some("carol"))
            .await
            .unwrap();
        store
            .delete_matching(ProviderId::DEFAULT, None, Some("bob"))
            .await
            .unwrap();
        store.sync().await;
        assert_eq!(store.live(), 0, "{}", store.live());
        assert_eq!(
            store.indexed_users(),
            0,
            "the index keeps nothing of ended sessions"
        );
    }

    /// What a scan of every session costs (back-channel logout by `sub`, the admin API
    /// without an index) at `AUTHGATE_SCAN_SESSIONS` sessions (default 1 M). Ignored: run by
    /// hand with `cargo test --lib scan_cost -- --ignored --nocapture` (say which profile).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore]
    async fn scan_cost() {
        let n: u64 = std::env::var("AUTHGATE_SCAN_SESSIONS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let rules = rules();
        let store = MemoryStore::new(n + 10, Duration::from_secs(3600), Duration::from_secs(7200));
        let now = store.clock.unix_now();
        let started = Instant::now();
        for i in 0..n {
            let session = session_of(&rules, &format!("user-{i:08}"), now);
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&i.to_le_bytes());
            key[8] = 0xa5;
            store.cache.insert(key, Arc::new(session)).await;
        }
        store.sync().await;
        eprintln!("{n} sessions stored in {:?}", started.elapsed());
        // The index's own cost: VmRSS before and after indexing every session.
        let rss_before = rss_kib();
        for (key, session) in store.cache.iter() {
            store.by_user.insert(session.identity.sub(), *key);
        }
        let rss_after = rss_kib();
        eprintln!(
            "index by user: {} KiB for {n} sessions = {:.1} bytes per session (VmRSS delta)",
            rss_after - rss_before,
            (rss_after - rss_before) as f64 * 1024.0 / n as f64
        );
        assert_eq!(store.live(), n);
        let started = Instant::now();
        store
            .delete_matching(ProviderId::DEFAULT, None, Some("user-00000007"))
            .await
            .unwrap();
        let logout = started.elapsed();
        let started = Instant::now();
        let listed = store.sessions_of("user-00000009").await;
        let list = started.elapsed();
        assert_eq!(listed.len(), 1);
        let started = Instant::now();
        let revoked = store
            .revoke(&Target::Sub("user-00000011".into()))
            .await
            .unwrap();
        let revoke = started.elapsed();
        assert_eq!(revoked.count, 1);
        eprintln!(
            "at {n} sessions: back-channel logout by sub {logout:?}, admin list {list:?}, \
             admin revoke by sub {revoke:?} (profile: {})",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
    }
}
