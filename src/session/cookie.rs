//! The session cookie: `<base64url id>.<base64url HMAC-SHA256(id)>`.
//!
//! The first configured secret signs; every secret verifies (rotation without logging
//! anybody out). MACs are compared in constant time (`Mac::verify_slice`). The HMAC states
//! are keyed once at start and cloned per check, which saves two SHA-256 blocks a request.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use sha2::Sha256;

use super::SessionKey;
use crate::config::{SameSite, SessionConfig};

type HmacSha256 = Hmac<Sha256>;

/// Domain separation: a MAC made for one purpose never verifies for another.
const SESSION_CONTEXT: &[u8] = b"authgate session v1\0";
const ID_LEN: usize = 22; // base64url of 16 bytes, unpadded
const MAC_LEN: usize = 43; // base64url of 32 bytes, unpadded
/// Cookies named like ours checked per request at most (each well-formed one costs a MAC).
const MAX_CANDIDATES: usize = 4;

#[derive(Clone)]
pub struct CookieCodec {
    name: String,
    /// Keyed MAC states, first = signing key.
    keys: Vec<HmacSha256>,
    attributes: String,
}

impl CookieCodec {
    pub fn new(cfg: &SessionConfig) -> Self {
        let keys = cfg
            .cookie_secrets
            .iter()
            .filter_map(|secret| HmacSha256::new_from_slice(secret.expose()).ok())
            .collect();
        CookieCodec {
            name: cfg.cookie_name.clone(),
            keys,
            attributes: attributes(cfg),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cookie value for a session id.
    pub fn encode(&self, key: &SessionKey) -> String {
        let mac = self.mac(0, key).unwrap_or_default();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(key),
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// The session id, when `value` carries a valid signature by any configured secret.
    pub fn decode(&self, value: &str) -> Option<SessionKey> {
        let (id, mac) = value.split_once('.')?;
        if id.len() != ID_LEN || mac.len() != MAC_LEN {
            return None;
        }
        let mut key = SessionKey::default();
        let n = URL_SAFE_NO_PAD.decode_slice(id, &mut key).ok()?;
        let mut sig = [0u8; 32];
        let m = URL_SAFE_NO_PAD.decode_slice(mac, &mut sig).ok()?;
        if n != key.len() || m != sig.len() {
            return None;
        }
        // Try every key (no early exit on which one matched: the order leaks nothing useful,
        // and each comparison is constant-time).
        let valid = self.keys.iter().fold(false, |ok, k| {
            let mut mac = k.clone();
            mac.update(SESSION_CONTEXT);
            mac.update(&key);
            mac.verify_slice(&sig).is_ok() | ok
        });
        valid.then_some(key)
    }

    /// The session id of the request: the first cookie named ours whose signature verifies.
    /// A stale or foreign cookie of the same name (another app on the domain, an older path)
    /// never hides ours; at most [`MAX_CANDIDATES`] are checked.
    pub fn session_key(&self, headers: &HeaderMap) -> Option<SessionKey> {
        crate::headers::cookie_values(headers, &self.name)
            .take(MAX_CANDIDATES)
            .find_map(|value| self.decode(value))
    }

    /// `Set-Cookie` that installs the session cookie.
    pub fn set_cookie(&self, key: &SessionKey, max_age_secs: u64) -> Option<HeaderValue> {
        let value = format!(
            "{}={}; Max-Age={max_age_secs}{}",
            self.name,
            self.encode(key),
            self.attributes
        );
        HeaderValue::from_str(&value).ok()
    }

    /// `Set-Cookie` that deletes it: empty value and `Max-Age=0` (contract Details 13).
    pub fn clear_cookie(&self) -> HeaderValue {
        let value = format!("{}=; Max-Age=0{}", self.name, self.attributes);
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("x=; Max-Age=0"))
    }

    fn mac(&self, index: usize, key: &SessionKey) -> Option<Vec<u8>> {
        let mut mac = self.keys.get(index)?.clone();
        mac.update(SESSION_CONTEXT);
        mac.update(key);
        Some(mac.finalize().into_bytes().to_vec())
    }
}

/// `; Path=/; HttpOnly; SameSite=..[; Secure][; Domain=..]`, shared by every cookie we set.
pub fn attributes(cfg: &SessionConfig) -> String {
    let same_site = match cfg.cookie_samesite {
        SameSite::Lax => "Lax",
        SameSite::Strict => "Strict",
        SameSite::None => "None",
    };
    let mut attrs = format!("; Path=/; HttpOnly; SameSite={same_site}");
    if cfg.cookie_secure {
        attrs.push_str("; Secure");
    }
    if let Some(domain) = &cfg.cookie_domain {
        attrs.push_str("; Domain=");
        attrs.push_str(domain);
    }
    attrs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::secret::Secret;
    use std::time::Duration;

    pub fn session_cfg(secrets: &[&[u8]]) -> SessionConfig {
        SessionConfig {
            cookie_name: "authgate_session".into(),
            cookie_secrets: secrets.iter().map(|s| Secret::new(s.to_vec())).collect(),
            cookie_secure: true,
            cookie_samesite: SameSite::Lax,
            cookie_domain: None,
            idle_timeout: Duration::from_secs(3600),
            absolute_timeout: Duration::from_secs(86400),
            max_sessions: 100,
            refresh_before_expiry: Duration::from_secs(60),
            max_token_age: None,
            store: StoreConfig::Memory,
            login_timeout: Duration::from_secs(600),
            max_pending_logins: 100,
        }
    }

    const A: &[u8] = &[1u8; 32];
    const B: &[u8] = &[2u8; 32];

    #[test]
    fn roundtrip_and_rotation() {
        let old = CookieCodec::new(&session_cfg(&[A]));
        let rotated = CookieCodec::new(&session_cfg(&[B, A]));
        let dropped = CookieCodec::new(&session_cfg(&[B]));
        let key = [7u8; 16];
        let value = old.encode(&key);
        assert_eq!(old.decode(&value), Some(key));
        assert_eq!(
            rotated.decode(&value),
            Some(key),
            "second secret still verifies"
        );
        assert_eq!(
            dropped.decode(&value),
            None,
            "removed secret no longer verifies"
        );
        assert_eq!(rotated.decode(&rotated.encode(&key)), Some(key));
        assert_eq!(
            old.decode(&rotated.encode(&key)),
            None,
            "new cookies use the first secret"
        );
    }

    #[test]
    fn tampered_and_malformed_are_rejected() {
        let codec = CookieCodec::new(&session_cfg(&[A]));
        let value = codec.encode(&[9u8; 16]);
        let mut flipped = value.clone().into_bytes();
        flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
        for bad in [
            String::from_utf8(flipped).unwrap(),
            value[..value.len() - 1].to_string(),
            format!("{value}x"),
            value.replace('.', ""),
            String::new(),
            ".".into(),
            "💥".repeat(30),
        ] {
            assert_eq!(codec.decode(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn set_and_clear_attributes() {
        let codec = CookieCodec::new(&session_cfg(&[A]));
        let set = codec.set_cookie(&[0u8; 16], 60).unwrap();
        let set = set.to_str().unwrap();
        assert!(set.starts_with("authgate_session="));
        assert!(set.contains("Max-Age=60; Path=/; HttpOnly; SameSite=Lax; Secure"));
        assert_eq!(
            codec.clear_cookie().to_str().unwrap(),
            "authgate_session=; Max-Age=0; Path=/; HttpOnly; SameSite=Lax; Secure"
        );
    }
}
