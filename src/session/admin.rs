//! What the admin API asks of the stores: one user's sessions, and ending sessions by user
//! or by id.
//!
//! A session is named by a short opaque id, never by its cookie value: with the memory store
//! the first 8 bytes of SHA-256 of the session id (16 hex digits), with Redis the keyed hash
//! its record is stored under (64 hex digits). Neither leads back to a cookie.

use sha2::{Digest, Sha256};

use super::{Session, SessionKey};
use crate::config::ProviderId;

/// One session, as the admin API lists it. Times in Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub login_at: u64,
    pub last_used_at: u64,
    pub expires_at: u64,
}

/// Which sessions an admin revoke ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every session of this user (the ID token's `sub`).
    Sub(String),
    /// The session with this short id.
    Id(String),
}

/// What a revoke ended: how many sessions, and the refresh tokens it found (each with its
/// session's provider, where it is then revoked). The memory store reads them from its
/// records; the Redis store from the records' revocation envelopes (when the admin API is
/// on), so a record without one that opens is counted but has no token here.
#[derive(Default)]
pub struct Revoked {
    pub count: u64,
    pub refresh_tokens: Vec<(ProviderId, String)>,
}

impl Revoked {
    /// Count `session` as ended, keeping its refresh token.
    pub fn ended(&mut self, session: &Session) {
        self.count += 1;
        if let Some(token) = session.tokens.refresh_token.as_deref() {
            self.refresh_tokens
                .push((session.provider, token.to_owned()));
        }
    }
}

/// The memory store's short id of a session.
pub fn short_id(key: &SessionKey) -> String {
    let digest = Sha256::digest([b"authgate session id\0".as_slice(), key].concat());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// An id as the admin API accepts it: 16 (memory store), 64 (Redis) or 68 (Redis Cluster:
/// the slot tag, then the record's hash) lowercase hex digits.
pub fn valid_id(id: &str) -> bool {
    matches!(id.len(), 16 | 64 | 68) && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
