//! Server-side sessions: the record, the store behind a trait, and the signed cookie.
//!
//! The browser holds only `<random id>.<HMAC>`; the token set lives here. The cookie never
//! changes during a session (a refresh rewrites the record, not the cookie), so it works
//! behind forward-auth proxies that drop `Set-Cookie`, and tokens never meet a size limit.

pub mod admin;
mod by_user;
pub mod identity;
pub mod memory;
pub mod record;
pub mod redis;
mod sessions;
pub mod snapshot;
pub mod tunnels;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use crate::config::ProviderId;
pub use crate::cookie::CookieCodec;
pub use identity::Identity;
pub use record::{LastSeen, RefreshBackoff, ResourceToken, Session, Tokens};
pub use sessions::{Lookup, Sessions};

/// A single-use marker ([`SessionStore::claim_once`]): what kind of thing it marks (a short
/// lowercase name, part of its key in a shared store), and a hash the caller made of the
/// thing itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Marker {
    pub kind: &'static str,
    pub id: [u8; 32],
}

/// A session id: 128 random bits. The map key in every store; what the session cookie
/// carries, signed.
pub type SessionKey = [u8; 16];

/// A fresh, unguessable session id (OS randomness).
pub fn new_key() -> SessionKey {
    use rand::RngCore;
    let mut key = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut key);
    key
}

/// The store could not answer (a shared store being down; the memory store never fails).
/// The cause is kept as the error's `source` (log it with `error::Chain`); no message
/// quotes the store's URL, which may hold a password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis answered with an error, or the connection failed. Boxed: every store call
    /// returns this error type, the hot path's `load` included.
    #[error("session store unavailable: redis {what} failed")]
    Redis {
        what: &'static str,
        #[source]
        source: Box<::redis::RedisError>,
    },
    #[error("session store unavailable: redis {what}: no answer within {timeout:?}")]
    Timeout {
        what: &'static str,
        timeout: Duration,
    },
    /// Another replica moved the record under a new name again and again while it was read.
    #[error("session store unavailable: a session record kept changing while read")]
    Contended,
    /// Another replica held the refresh lease longer than the wait allows.
    #[error("session store unavailable: the refresh lease is held by another replica for too long")]
    LeaseHeld,
    #[error("session store unavailable: cannot seal a session record")]
    Seal,
}

#[cfg(test)]
#[cfg(target_pointer_width = "64")]
#[test]
fn store_errors_stay_small() {
    assert!(size_of::<StoreError>() <= 32, "{}", size_of::<StoreError>());
}

/// A record read for a later [`SessionStore::replace`]: the session, and what identifies this
/// version of it in its store.
#[derive(Clone)]
pub struct Versioned {
    pub session: Arc<Session>,
    version: Version,
}

/// What identifies one version of a record.
#[derive(Clone)]
enum Version {
    /// The memory store: the record is `Versioned::session` itself (the same allocation).
    Local,
    /// The Redis store: the sealed value, under this key name. Every write seals with a fresh
    /// random nonce, so equal bytes mean the very same write.
    Sealed { name: String, value: Arc<[u8]> },
}

impl Versioned {
    fn local(session: Arc<Session>) -> Self {
        Versioned {
            session,
            version: Version::Local,
        }
    }

    fn sealed(session: Arc<Session>, name: String, value: Arc<[u8]>) -> Self {
        Versioned {
            session,
            version: Version::Sealed { name, value },
        }
    }
}

/// What a conditional [`SessionStore::replace`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// The new record is stored.
    Done,
    /// The record is still there, but another write changed it since it was read: nothing
    /// was written.
    Changed,
    /// The record is gone (sign-out, back-channel logout, rejected refresh, expiry): nothing
    /// was written, and the record was not re-created.
    Gone,
}

/// Where session records live. The request path only ever talks to this trait, through
/// [`Store`], so a shared store drops in without touching it.
///
/// An ended session stays ended: only a login creates a record
/// ([`SessionStore::save`], under a fresh random id); everything that updates one (a refresh,
/// a refresh backoff) goes through [`SessionStore::replace`], which writes only over the very
/// version it read and never re-creates a deleted record.
pub trait SessionStore: Send + Sync + 'static {
    /// The session, or `None` when unknown or expired. Resets the idle timer.
    fn load(
        &self,
        key: &SessionKey,
    ) -> impl Future<Output = Result<Option<Arc<Session>>, StoreError>> + Send;
    /// Store a NEW session (a login, under a fresh id). Never used to update one.
    fn save(
        &self,
        key: SessionKey,
        session: Arc<Session>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Like `load`, but never from a replica-local cache, and with the record's version for a
    /// later [`SessionStore::replace`]. Called by a refresh flight under the refresh lease, so
    /// a replica that arrives late sees the winner's new tokens instead of replaying the used
    /// refresh token.
    fn load_for_update(
        &self,
        key: &SessionKey,
    ) -> impl Future<Output = Result<Option<Versioned>, StoreError>> + Send;
    /// Replace the record of `key` with `session`, only while it is still the version
    /// `expected` was read at. Never inserts: a session deleted meanwhile stays deleted.
    fn replace(
        &self,
        key: &SessionKey,
        expected: &Versioned,
        session: Arc<Session>,
    ) -> impl Future<Output = Result<Replaced, StoreError>> + Send;
    fn delete(&self, key: &SessionKey) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// End every session of `provider` with an OpenID `sid` (when given), else with a `sub`
    /// (back-channel logout: the same `sub` at another provider is another user).
    fn delete_matching(
        &self,
        provider: ProviderId,
        sid: Option<&str>,
        sub: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Cluster-wide single flight for a refresh, taken by the in-process flight before it
    /// calls the token endpoint. A shared store grants it to one replica at a time (and keeps
    /// it alive while the guard lives); the memory store always grants it.
    fn refresh_lease(
        &self,
        key: &SessionKey,
    ) -> impl Future<Output = Result<RefreshLease, StoreError>> + Send;
    /// Whether a single-use marker is set and has not expired yet: a completed login's state,
    /// a used logout token. A shared store shares its markers between replicas.
    fn is_claimed(&self, marker: &Marker) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Set a single-use marker for at least `ttl`: `true` when this call set it, `false` when
    /// it was set already (a replay, or a race lost), in which case the first expiry stays.
    fn claim_once(
        &self,
        marker: &Marker,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Number of live sessions (approximate; for metrics).
    fn live(&self) -> u64;
    /// Whether the store answers (for `/readyz`).
    fn ready(&self) -> impl Future<Output = bool> + Send;
}

/// Proof of holding the refresh lease of one session; released when dropped.
pub struct RefreshLease {
    /// Store-specific release/renewal handle (`None` for the memory store).
    _guard: Option<Box<dyn std::any::Any + Send>>,
}

impl RefreshLease {
    /// A lease that needs no coordination (one replica).
    pub fn local() -> Self {
        RefreshLease { _guard: None }
    }

    /// A lease whose guard renews it while alive and releases it on drop.
    pub fn guarded(guard: Box<dyn std::any::Any + Send>) -> Self {
        RefreshLease {
            _guard: Some(guard),
        }
    }
}

/// The configured store. An enum rather than `dyn` so the hot path does not box a future.
// One per gateway, built once and shared behind an `Arc`: its size is never copied around.
#[allow(clippy::large_enum_variant)]
pub enum Store {
    Memory(memory::MemoryStore),
    Redis(redis::RedisStore),
}

impl Store {
    /// The Redis store, when configured.
    pub fn redis(&self) -> Option<&redis::RedisStore> {
        match self {
            Store::Memory(_) => None,
            Store::Redis(s) => Some(s),
        }
    }

    /// Whether each session of `keys` still lives, without using it (no idle timer reset):
    /// what the tunnel watcher asks (`tunnels`).
    pub async fn alive(&self, keys: &[SessionKey]) -> Result<Vec<bool>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.alive(keys).await),
            Store::Redis(s) => s.alive(keys).await,
        }
    }

    /// The sessions of user `sub` (admin API).
    pub async fn sessions_of(&self, sub: &str) -> Result<Vec<admin::SessionInfo>, StoreError> {
        match self {
            Store::Memory(s) => Ok(s.sessions_of(sub).await),
            Store::Redis(s) => s.sessions_of(sub).await,
        }
    }

    /// End the sessions of `target` (admin API): dead on this replica at once, on the others
    /// within the Redis store's local cache lifetime.
    pub async fn revoke(&self, target: &admin::Target) -> Result<admin::Revoked, StoreError> {
        match self {
            Store::Memory(s) => s.revoke(target).await,
            Store::Redis(s) => s.revoke(target).await,
        }
    }

    /// Series of a shared store, rendered on `/metrics`.
    pub fn metrics(&self) -> Option<&crate::metrics::StoreMetrics> {
        self.redis().map(redis::RedisStore::metrics)
    }
}

impl SessionStore for Store {
    async fn load(&self, key: &SessionKey) -> Result<Option<Arc<Session>>, StoreError> {
        match self {
            Store::Memory(s) => s.load(key).await,
            // Boxed: the Redis client's future is large, and every request's future would
            // carry (and move) its size even with the memory store.
            Store::Redis(s) => Box::pin(s.load(key)).await,
        }
    }

    async fn save(&self, key: SessionKey, session: Arc<Session>) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => s.save(key, session).await,
            Store::Redis(s) => s.save(key, session).await,
        }
    }

    async fn load_for_update(&self, key: &SessionKey) -> Result<Option<Versioned>, StoreError> {
        match self {
            Store::Memory(s) => s.load_for_update(key).await,
            Store::Redis(s) => s.load_for_update(key).await,
        }
    }

    async fn replace(
        &self,
        key: &SessionKey,
        expected: &Versioned,
        session: Arc<Session>,
    ) -> Result<Replaced, StoreError> {
        match self {
            Store::Memory(s) => s.replace(key, expected, session).await,
            Store::Redis(s) => s.replace(key, expected, session).await,
        }
    }

    async fn delete(&self, key: &SessionKey) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => s.delete(key).await,
            Store::Redis(s) => s.delete(key).await,
        }
    }

    async fn delete_matching(
        &self,
        provider: ProviderId,
        sid: Option<&str>,
        sub: Option<&str>,
    ) -> Result<(), StoreError> {
        match self {
            Store::Memory(s) => s.delete_matching(provider, sid, sub).await,
            Store::Redis(s) => s.delete_matching(provider, sid, sub).await,
        }
    }

    async fn refresh_lease(&self, key: &SessionKey) -> Result<RefreshLease, StoreError> {
        match self {
            Store::Memory(s) => s.refresh_lease(key).await,
            Store::Redis(s) => s.refresh_lease(key).await,
        }
    }

    async fn is_claimed(&self, marker: &Marker) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => s.is_claimed(marker).await,
            Store::Redis(s) => s.is_claimed(marker).await,
        }
    }

    async fn claim_once(&self, marker: &Marker, ttl: Duration) -> Result<bool, StoreError> {
        match self {
            Store::Memory(s) => s.claim_once(marker, ttl).await,
            Store::Redis(s) => s.claim_once(marker, ttl).await,
        }
    }

    fn live(&self) -> u64 {
        match self {
            Store::Memory(s) => s.live(),
            Store::Redis(s) => s.live(),
        }
    }

    async fn ready(&self) -> bool {
        match self {
            Store::Memory(s) => s.ready().await,
            Store::Redis(s) => s.ready().await,
        }
    }
}

/// Seconds since the Unix epoch by the system clock (tests and tools; the stores and the
/// pipeline read their `Clock`).
pub use crate::clock::unix_now;
