//! The memory store's index by user: `sub` -> the ids of that user's sessions, so that
//! back-channel logout by `sub` and the admin API find a user's sessions without scanning
//! every session (a scan of 1 M sessions takes seconds).
//!
//! Kept small, because every live session has an entry (the memory budget is 1 KiB per
//! session beyond its tokens): the key is a keyed 64-bit hash of the `sub` (per-process
//! random SipHash keys), not the string, and a user with one session (the usual case) holds
//! its id inline, without an allocation. A hash collision only adds candidates: every
//! lookup checks the record's own `sub`. Entries are added when a session is stored and
//! removed when moka removes it, for whatever reason (the store's removal listener).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use super::SessionKey;

/// Shards (a power of two): logins of different users rarely wait for each other.
const SHARDS: usize = 16;

pub struct ByUser {
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<u64, Keys>>]>,
}

/// A user's session ids: one inline, or several.
enum Keys {
    One(SessionKey),
    Many(Vec<SessionKey>),
}

impl Default for ByUser {
    fn default() -> Self {
        ByUser {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl ByUser {
    pub fn insert(&self, sub: &str, key: SessionKey) {
        let (hash, mut shard) = self.shard(sub);
        match shard.get_mut(&hash) {
            None => {
                shard.insert(hash, Keys::One(key));
            }
            Some(Keys::One(one)) if *one == key => {}
            Some(keys @ Keys::One(_)) => {
                if let Keys::One(one) = *keys {
                    *keys = Keys::Many(vec![one, key]);
                }
            }
            Some(Keys::Many(many)) => {
                if !many.contains(&key) {
                    many.push(key);
                }
            }
        }
    }

    pub fn remove(&self, sub: &str, key: &SessionKey) {
        let (hash, mut shard) = self.shard(sub);
        let Some(entry) = shard.get_mut(&hash) else {
            return;
        };
        let left = match entry {
            Keys::One(one) if one == key => Some(None),
            Keys::One(_) => None,
            Keys::Many(many) => {
                many.retain(|k| k != key);
                match many.len() {
                    0 => Some(None),
                    1 => Some(many.first().copied()),
                    _ => None,
                }
            }
        };
        match left {
            None => {}
            Some(None) => {
                shard.remove(&hash);
            }
            Some(Some(last)) => *entry = Keys::One(last),
        }
    }

    /// The ids stored under `sub`'s hash (check each record's `sub`: a collision is possible).
    pub fn keys(&self, sub: &str) -> Vec<SessionKey> {
        let (hash, shard) = self.shard(sub);
        match shard.get(&hash) {
            None => Vec::new(),
            Some(Keys::One(one)) => vec![*one],
            Some(Keys::Many(many)) => many.clone(),
        }
    }

    /// Users indexed (tests).
    pub fn users(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    fn shard(&self, sub: &str) -> (u64, MutexGuard<'_, HashMap<u64, Keys>>) {
        let hash = self.hasher.hash_one(sub);
        // The low bits pick the shard; the map rehashes the whole value.
        (hash, lock(&self.shards[(hash as usize) % SHARDS]))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every write is one call on a map: a panic elsewhere leaves it consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_and_go() {
        let index = ByUser::default();
        index.insert("alice", [1; 16]);
        index.insert("alice", [2; 16]);
        index.insert("alice", [2; 16]);
        index.insert("bob", [3; 16]);
        assert_eq!(index.keys("alice"), vec![[1; 16], [2; 16]]);
        assert_eq!(index.keys("bob"), vec![[3; 16]]);
        index.remove("alice", &[1; 16]);
        assert_eq!(index.keys("alice"), vec![[2; 16]]);
        index.remove("alice", &[2; 16]);
        index.remove("bob", &[9; 16]);
        assert!(index.keys("alice").is_empty());
        assert_eq!(index.users(), 1);
        index.remove("bob", &[3; 16]);
        assert_eq!(index.users(), 0, "nothing left behind");
    }
}
