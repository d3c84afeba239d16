//! Upgraded connections (WebSocket tunnels) end with their session.
//!
//! A tunnel opened with a session is registered under that session's id. A watcher task
//! (one per gateway, started with the first tunnel, gone with the registry) asks the store
//! every [`CHECK_EVERY`] whether each session that has tunnels still lives, and checks its
//! absolute deadline by the gateway's clock; a session that ended for any reason (sign-out,
//! back-channel logout, an admin revoke, a rejected refresh, idle or absolute timeout,
//! eviction) has its tunnels closed. With the Redis store the question goes to Redis (one
//! pipelined round trip per check), so a session ended on another replica closes this
//! replica's tunnels too. So a tunnel never outlives its session by more than one check plus
//! a store round trip, well under a second.
//!
//! Tunnel traffic does not count as use of the session: the idle timeout measures requests
//! (a WebSocket feed pushed by the server says nothing about a user being there), and a
//! checked session is never touched, so an open tunnel keeps no session alive. A store that
//! cannot answer a check closes nothing (an outage is never a logout).
//!
//! Cost: opening and closing a tunnel take one lock of one of [`SHARDS`] small maps; the
//! request path without an upgrade never touches the registry. An entry lives exactly as
//! long as a tunnel of its session is open (the last one to close removes it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::{SessionKey, Store};
use crate::clock::Clock;

/// How often the sessions of open tunnels are checked.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Shards of the registry (a power of two).
const SHARDS: usize = 16;
/// Sessions checked per store call.
const BATCH: usize = 512;

/// The tunnels open now, by session.
pub struct Tunnels {
    shards: Box<[Mutex<HashMap<SessionKey, Entry>>]>,
    store: Arc<Store>,
    clock: Clock,
    watcher: OnceLock<()>,
    /// Tunnels open now (registered and not yet dropped): `authgate_tunnels_open`.
    open: AtomicU64,
}

struct Entry {
    /// `true` once the session ended; every tunnel of the session holds a receiver.
    end: watch::Sender<bool>,
    /// Unix seconds: the session's absolute deadline.
    deadline: u64,
}

/// One open tunnel's registration; dropping it unregisters the tunnel.
pub struct Tunnel {
    registry: Arc<Tunnels>,
    key: SessionKey,
    ended: Option<watch::Receiver<bool>>,
}

// === impl Tunnels ===

impl Tunnels {
    pub fn new(store: Arc<Store>, clock: Clock) -> Arc<Self> {
        Arc::new(Tunnels {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            store,
            clock,
            watcher: OnceLock::new(),
            open: AtomicU64::new(0),
        })
    }

    /// Register a tunnel of session `key`, whose absolute deadline is `deadline` (Unix
    /// seconds). Starts the watcher on first use (needs a Tokio runtime).
    pub fn open(self: &Arc<Self>, key: SessionKey, deadline: u64) -> Tunnel {
        self.watcher.get_or_init(|| {
            tokio::spawn(watch_sessions(Arc::downgrade(self)));
        });
        self.open.fetch_add(1, Ordering::Relaxed);
        let mut shard = self.shard(&key);
        let entry = shard.entry(key).or_insert_with(|| Entry {
            end: watch::Sender::new(false),
            deadline,
        });
        Tunnel {
            registry: self.clone(),
            key,
            ended: Some(entry.end.subscribe()),
        }
    }

    /// Tunnels open now, whether or not their session already ended (one is counted until
    /// it is closed).
    pub fn open_tunnels(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Sessions with at least one open tunnel.
    pub fn sessions(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Close every tunnel of `key` now (its session ended).
    pub fn end(&self, key: &SessionKey) {
        if let Some(entry) = self.shard(key).remove(key) {
            entry.end.send_replace(true);
        }
    }

    fn shard(&self, key: &SessionKey) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Entry>> {
        // The key is random: its first byte spreads sessions evenly.
        lock(&self.shards[usize::from(key[0]) % SHARDS])
    }

    /// One check: every session with tunnels, its absolute deadline by our clock, then
    /// whether the store still has it.
    async fn check(&self) {
        let now = self.clock.unix_now();
        let mut keys = Vec::new();
        for shard in self.shards.iter() {
            for (key, entry) in lock(shard).iter() {
                keys.push((*key, entry.deadline));
            }
        }
        let mut live = Vec::with_capacity(keys.len());
        for (key, deadline) in keys {
            if now >= deadline {
                self.end(&key);
            } else {
                live.push(key);
            }
        }
        for batch in live.chunks(BATCH) {
            match self.store.alive(batch).await {
                Ok(alive) => {
                    for (key, alive) in batch.iter().zip(alive) {
                        if !alive {
                            self.end(key);
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %crate::error::Chain(&e), "tunnel check: store unavailable");
                }
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a shard lock leaves a consistent map (every write is one call).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The watcher: checks until the registry is dropped (the gateway with it).
async fn watch_sessions(registry: Weak<Tunnels>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(registry) = registry.upgrade() else {
            return;
        };
        if registry.sessions() > 0 {
            registry.check().await;
        }
    }
}

// === impl Tunnel ===

impl Tunnel {
    /// Resolves when the session ended (never, while it lives).
    pub async fn ended(&mut self) {
        if let Some(rx) = self.ended.as_mut() {
            // An error: the entry was dropped without a send, which only `end` does after
            // sending; treat it as ended too.
            let _ = rx.wait_for(|ended| *ended).await;
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.registry.open.fetch_sub(1, Ordering::Relaxed);
        drop(self.ended.take());
        let mut shard = self.registry.shard(&self.key);
        if shard
            .get(&self.key)
            .is_some_and(|entry| entry.end.receiver_count() == 0)
        {
            shard.remove(&self.key);
        }
    }
}
