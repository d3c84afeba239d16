//! Pending logins: what the gateway remembers between `/oauth2/start` and the callback.
//!
//! Kept server-side, keyed by the `state` sent to the provider, with a short lifetime and a
//! hard bound on their number, in a cache separate from sessions: a flood of `/oauth2/start`
//! can evict other pending logins but never a live session. Each one is bound to the browser
//! that started it by a separate signed cookie (`<cookie_name>_login`, SameSite=Lax so that
//! it comes back on the provider's top-level redirect) holding a random browser id. Several
//! tabs share that id, so they can log in at once; a `state` from another browser, or one
//! already used, fails.
//!
//! With `session.store = "redis"` pending logins live in Redis too (sealed like sessions,
//! expiring after `login_timeout`, taken with `GETDEL`), so the callback may land on any
//! replica. `max_pending_logins` bounds only the in-memory variant.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use http::HeaderValue;
use moka::sync::Cache;
use sha2::Sha256;

use crate::config::SessionConfig;
use crate::redirect::SafeRedirect;
use crate::session::redis::RedisStore;
use crate::session::{Store, StoreError};

const BINDING_CONTEXT: &[u8] = b"authgate login binding v1\0";

/// What the callback needs to finish a login.
pub struct PendingLogin {
    pub browser: [u8; 16],
    pub nonce: String,
    pub pkce_verifier: String,
    pub landing: SafeRedirect,
}

/// Where pending logins live: this process, or the shared store.
enum Pending {
    Memory(Cache<String, Arc<PendingLogin>>),
    Redis(RedisStore),
}

pub struct Logins {
    pending: Pending,
    cookie_name: String,
    keys: Vec<Hmac<Sha256>>,
    cookie_attributes: String,
    max_age_secs: u64,
}

impl Logins {
    pub fn new(cfg: &SessionConfig, store: &Store) -> Self {
        let pending = match store.redis() {
            Some(redis) => Pending::Redis(redis.clone()),
            None => Pending::Memory(
                Cache::builder()
                    .max_capacity(cfg.max_pending_logins)
                    .time_to_live(cfg.login_timeout)
                    .build(),
            ),
        };
        let mut attributes = "; Path=/; HttpOnly; SameSite=Lax".to_owned();
        if cfg.cookie_secure {
            attributes.push_str("; Secure");
        }
        Logins {
            pending,
            cookie_name: format!("{}_login", cfg.cookie_name),
            keys: cfg
                .cookie_secrets
                .iter()
                .filter_map(|s| Hmac::<Sha256>::new_from_slice(s.expose()).ok())
                .collect(),
            cookie_attributes: attributes,
            max_age_secs: cfg.login_timeout.as_secs().max(60),
        }
    }

    pub fn cookie_name(&self) -> &str {
        &self.cookie_name
    }

    /// The browser id from a valid binding cookie, if the browser has one.
    pub fn browser_id(&self, cookie_value: Option<&str>) -> Option<[u8; 16]> {
        let (id, mac) = cookie_value?.split_once('.')?;
        let mut browser = [0u8; 16];
        if URL_SAFE_NO_PAD.decode_slice(id, &mut browser).ok()? != 16 {
            return None;
        }
        let sig = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let valid = self.keys.iter().fold(false, |ok, key| {
            let mut m = key.clone();
            m.update(BINDING_CONTEXT);
            m.update(&browser);
            m.verify_slice(&sig).is_ok() | ok
        });
        valid.then_some(browser)
    }

    /// `Set-Cookie` binding `browser` to this browser for the login's lifetime.
    pub fn binding_cookie(&self, browser: &[u8; 16]) -> Option<HeaderValue> {
        let mut mac = self.keys.first()?.clone();
        mac.update(BINDING_CONTEXT);
        mac.update(browser);
        let value = format!(
            "{}={}.{}; Max-Age={}{}",
            self.cookie_name,
            URL_SAFE_NO_PAD.encode(browser),
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()),
            self.max_age_secs,
            self.cookie_attributes
        );
        HeaderValue::from_str(&value).ok()
    }

    pub async fn remember(&self, state: String, login: PendingLogin) -> Result<(), StoreError> {
        match &self.pending {
            Pending::Memory(cache) => {
                cache.insert(state, Arc::new(login));
                Ok(())
            }
            Pending::Redis(redis) => redis.remember_login(&state, &login).await,
        }
    }

    /// Take the pending login for `state` if it was started by `browser`. Single use: a
    /// replayed state finds nothing.
    pub async fn take(
        &self,
        state: &str,
        browser: Option<[u8; 16]>,
    ) -> Result<Option<Arc<PendingLogin>>, StoreError> {
        let pending = match &self.pending {
            Pending::Memory(cache) => cache.remove(state),
            Pending::Redis(redis) => redis.take_login(state).await?.map(Arc::new),
        };
        Ok(pending.filter(|p| Some(p.browser) == browser))
    }

    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.max_age_secs)
    }
}
