//! The session record: token set, identity, login time, refresh backoff.
//!
//! Kept compact: the access token is stored once, already formatted as the upstream
//! `Authorization` value, so the hot path clones a refcounted `HeaderValue` instead of
//! formatting a string per request. Every live session holds one record (issue 8: 1 M of
//! them), so its shape counts too: a boxed slice for the extra resource tokens, a niche in
//! `RefreshBackoff` and its retry time in 32 bits keep `Session` at 136 bytes (a 160-byte
//! allocation with its `Arc` counts, instead of 176), its last-seen stamp included.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http::HeaderValue;

use super::Identity;
use crate::config::ProviderId;

#[derive(Debug, Clone)]
pub struct Session {
    pub tokens: Tokens,
    pub identity: Arc<Identity>,
    /// Unix seconds of the login; `absolute_timeout` counts from here, whatever happens.
    pub login_at: u64,
    /// Set after a transient refresh failure: no new attempt before `retry_at`.
    pub backoff: Option<RefreshBackoff>,
    /// When the session was last used (the memory store's idle timeout).
    pub last_seen: LastSeen,
    /// The provider the user logged in at: a route of another provider treats the session
    /// as none. One byte, in what was padding.
    pub provider: ProviderId,
}

/// Unix seconds of a session's last use, by the gateway's clock (0: not yet). Written by a
/// load at most once a second, so most requests only read it. Not part of what a session
/// is: a clone starts over, and a shared store keeps idleness itself.
#[derive(Default)]
pub struct LastSeen(AtomicU32);

impl LastSeen {
    pub fn get(&self) -> u64 {
        u64::from(self.0.load(Ordering::Relaxed))
    }

    /// Stamp `now` (Unix seconds, saturated to 32 bits: year 2106).
    pub fn set(&self, now: u64) {
        let now = u32::try_from(now).unwrap_or(u32::MAX);
        if self.0.load(Ordering::Relaxed) != now {
            self.0.store(now, Ordering::Relaxed);
        }
    }
}

impl Clone for LastSeen {
    fn clone(&self) -> Self {
        LastSeen(AtomicU32::new(self.0.load(Ordering::Relaxed)))
    }
}

impl std::fmt::Debug for LastSeen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.get().fmt(f)
    }
}

#[derive(Clone)]
pub struct Tokens {
    /// `Bearer <access token>`, marked sensitive.
    pub bearer: HeaderValue,
    /// Unix seconds; `None` = unknown (used until the session's absolute deadline).
    pub access_expires_at: Option<u64>,
    pub refresh_token: Option<Box<str>>,
    /// Kept for `id_token_hint` at sign-out.
    pub id_token: Option<Box<str>>,
    /// Access tokens for `oidc.resource[1..]`, in configuration order (Logto issues one
    /// token per resource; `bearer` is the first resource's). `None`: not obtained yet, so
    /// the next request refreshes. Empty with zero or one resource: no allocation. A boxed
    /// slice: its length never changes, and it is 8 bytes smaller than a `Vec`.
    pub more: Box<[Option<ResourceToken>]>,
}

/// The access token of one additional resource.
#[derive(Clone)]
pub struct ResourceToken {
    pub bearer: HeaderValue,
    pub expires_at: Option<u64>,
}

impl ResourceToken {
    /// The provider's new tokens where it gave one, else the previous token (if any).
    pub fn merge(
        fresh: Vec<Option<(String, Option<u64>)>>,
        previous: &[Option<ResourceToken>],
    ) -> Box<[Option<ResourceToken>]> {
        fresh
            .into_iter()
            .enumerate()
            .map(|(i, new)| match new {
                Some((token, expires_at)) => {
                    Tokens::bearer_value(&token).map(|bearer| ResourceToken { bearer, expires_at })
                }
                None => previous.get(i).cloned().flatten(),
            })
            .collect()
    }
}

/// Tokens never print.
impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("access_expires_at", &self.access_expires_at)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshBackoff {
    /// At least one, by definition: the zero niche makes `Option<RefreshBackoff>` 8 bytes
    /// instead of 12.
    pub failures: NonZeroU32,
    /// Unix seconds before which no new refresh is attempted (32 bits: year 2106).
    pub retry_at: u32,
}

impl RefreshBackoff {
    /// Starts at 1 s, doubles up to 30 s.
    pub fn after_failure(previous: Option<RefreshBackoff>, now: u64) -> RefreshBackoff {
        let failures = previous.map_or(NonZeroU32::MIN, |b| b.failures.saturating_add(1));
        let delay = 1u64 << (failures.get() - 1).min(5);
        let retry_at = now.saturating_add(delay.min(30));
        RefreshBackoff {
            failures,
            retry_at: u32::try_from(retry_at).unwrap_or(u32::MAX),
        }
    }

    /// [`RefreshBackoff::retry_at`] as a Unix time.
    pub fn retry_at(&self) -> u64 {
        u64::from(self.retry_at)
    }
}

impl Tokens {
    /// The raw access token (the bytes after `Bearer `).
    pub fn access_token(&self) -> &[u8] {
        self.bearer.as_bytes().get(7..).unwrap_or_default()
    }

    /// The `Authorization` value for resource `index` (0 = the first resource, or none).
    /// `None` when that resource's token could not be obtained (yet).
    pub fn bearer_for(&self, index: usize) -> Option<&HeaderValue> {
        match index.checked_sub(1) {
            None => Some(&self.bearer),
            Some(i) => self.more.get(i)?.as_ref().map(|t| &t.bearer),
        }
    }

    /// The earliest expiry over every token; `Some(0)` when a resource token is missing.
    pub fn earliest_expiry(&self) -> Option<u64> {
        self.more
            .iter()
            .fold(self.access_expires_at, |earliest, token| {
                let expiry = token.as_ref().map_or(Some(0), |t| t.expires_at);
                match (earliest, expiry) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            })
    }

    pub fn bearer_value(access_token: &str) -> Option<HeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Bearer {access_token}")).ok()?;
        value.set_sensitive(true);
        // Its bytes are a "promotable" `Bytes`: the first clone (the session's first
        // proxied request) would allocate their shared refcount header. Done here, once, so
        // a session's memory does not grow on its first request, and the memory benchmark
        // (whose sessions mostly never see one) measures the steady state.
        drop(value.clone());
        Some(value)
    }
}

impl Session {
    /// Unix seconds at which the session ends no matter what.
    pub fn absolute_deadline(&self, absolute_timeout: Duration) -> u64 {
        self.login_at.saturating_add(absolute_timeout.as_secs())
    }

    /// Whether every access token is still usable at `now` (unknown expiry counts as usable).
    pub fn access_valid(&self, now: u64) -> bool {
        self.tokens.earliest_expiry().is_none_or(|exp| now < exp)
    }

    /// Whether the tokens should be refreshed now: one expires within `before` (or a
    /// resource's token is missing).
    pub fn needs_refresh(&self, now: u64, before: Duration) -> bool {
        self.tokens
            .earliest_expiry()
            .is_some_and(|exp| now.saturating_add(before.as_secs()) >= exp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_thirty_seconds() {
        let mut b = None;
        let delays: Vec<u64> = (0..8)
            .map(|_| {
                let next = RefreshBackoff::after_failure(b, 100);
                b = Some(next);
                next.retry_at() - 100
            })
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    /// The sizes the module doc promises (64-bit targets).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn records_stay_compact() {
        assert_eq!(size_of::<Option<RefreshBackoff>>(), 8);
        assert!(size_of::<Session>() <= 136, "{}", size_of::<Session>());
    }

    #[test]
    fn bearer_roundtrip_and_debug_hides_tokens() {
        let tokens = Tokens {
            bearer: Tokens::bearer_value("abc.def").unwrap(),
            access_expires_at: Some(10),
            refresh_token: Some("rt-secret".into()),
            id_token: None,
            more: Box::default(),
        };
        assert_eq!(tokens.access_token(), b"abc.def");
        let printed = format!("{tokens:?}");
        assert!(!printed.contains("abc.def") && !printed.contains("rt-secret"));
    }

    #[test]
    fn resource_tokens_drive_expiry_and_choice() {
        let token = |t: &str, exp| ResourceToken {
            bearer: Tokens::bearer_value(t).unwrap(),
            expires_at: exp,
        };
        let mut tokens = Tokens {
            bearer: Tokens::bearer_value("first").unwrap(),
            access_expires_at: Some(100),
            refresh_token: None,
            id_token: None,
            more: vec![Some(token("second", Some(50))), Some(token("third", None))].into(),
        };
        assert_eq!(tokens.earliest_expiry(), Some(50));
        assert_eq!(tokens.bearer_for(0).unwrap(), "Bearer first");
        assert_eq!(tokens.bearer_for(2).unwrap(), "Bearer third");
        assert!(tokens.bearer_for(3).is_none());
        tokens.more[0] = None;
        assert_eq!(
            tokens.earliest_expiry(),
            Some(0),
            "a missing token forces a refresh"
        );
        assert!(tokens.bearer_for(1).is_none());
        tokens.access_expires_at = None;
        tokens.more = Box::default();
        assert_eq!(tokens.earliest_expiry(), None);
    }
}
