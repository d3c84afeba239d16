//! Every cookie the gateway sets, and the one place their attributes are written.
//!
//! - The session cookie ([`CookieCodec`]): `<base64url id>.<base64url HMAC-SHA256(id)>`. The
//!   first configured secret signs; every secret verifies (rotation without logging anybody
//!   out). MACs are compared in constant time (`Mac::verify_slice`). The HMAC states are
//!   keyed once at start and cloned per check, which saves two SHA-256 blocks a request.
//! - Login cookies ([`Sealed`]): a value sealed with AES-256-GCM under keys derived from the
//!   same secrets (`crate::seal`), with its deadline authenticated beside it.
//!
//! Both get their attributes from [`attributes`]: `Path`, `HttpOnly`, `SameSite`, and
//! `Secure` and `Domain` as `[session]` says.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderValue};
use sha2::Sha256;

use crate::config::{SameSite, SessionConfig};
use crate::seal::Keyring;
use crate::secret::Secret;

/// What the session cookie carries: a session id (`session::SessionKey`).
pub type SignedId = [u8; 16];

type HmacSha256 = Hmac<Sha256>;

/// Domain separation: a MAC made for one purpose never verifies for another.
const SESSION_CONTEXT: &[u8] = b"authgate session v1\0";
const ID_LEN: usize = 22; // base64url of 16 bytes, unpadded
const MAC_LEN: usize = 43; // base64url of 32 bytes, unpadded
/// Cookies named like ours checked per request at most (each well-formed one costs a MAC).
const MAX_CANDIDATES: usize = 4;

/// The session cookie.
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
            attributes: attributes(cfg, "/", cfg.cookie_samesite),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cookie value for a session id.
    pub fn encode(&self, key: &SignedId) -> String {
        let mac = self.mac(0, key).unwrap_or_default();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(key),
            URL_SAFE_NO_PAD.encode(mac)
        )
    }

    /// The session id, when `value` carries a valid signature by any configured secret.
    pub fn decode(&self, value: &str) -> Option<SignedId> {
        let (id, mac) = value.split_once('.')?;
        if id.len() != ID_LEN || mac.len() != MAC_LEN {
            return None;
        }
        let mut key = SignedId::default();
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
    pub fn session_key(&self, headers: &HeaderMap) -> Option<SignedId> {
        crate::headers::cookie_values(headers, &self.name)
            .take(MAX_CANDIDATES)
            .find_map(|value| self.decode(value))
    }

    /// `Set-Cookie` that installs the session cookie.
    pub fn set_cookie(&self, key: &SignedId, max_age_secs: u64) -> Option<HeaderValue> {
        set_cookie(
            &self.name,
            &self.encode(key),
            max_age_secs,
            &self.attributes,
        )
    }

    /// `Set-Cookie` that deletes it: empty value and `Max-Age=0`.
    pub fn clear_cookie(&self) -> HeaderValue {
        clear_cookie(&self.name, &self.attributes)
            .unwrap_or_else(|| HeaderValue::from_static("x=; Max-Age=0"))
    }

    fn mac(&self, index: usize, key: &SignedId) -> Option<Vec<u8>> {
        let mut mac = self.keys.get(index)?.clone();
        mac.update(SESSION_CONTEXT);
        mac.update(key);
        Some(mac.finalize().into_bytes().to_vec())
    }
}

// === impl Sealed ===

/// Values sealed into cookies (login cookies): AES-256-GCM under keys derived from the cookie
/// secrets for this purpose only (the first secret seals, every one opens), bound to
/// `context` and to a deadline.
pub struct Sealed {
    keys: Option<Keyring>,
    context: &'static [u8],
}

impl Sealed {
    /// The sealing of login cookies; `context`: what a seal made here opens as, only.
    pub fn login_cookies(secrets: &[Secret<Vec<u8>>], context: &'static [u8]) -> Self {
        Sealed {
            keys: Keyring::for_login_cookies(secrets),
            context,
        }
    }

    /// `plain` sealed with `deadline` (Unix seconds), as a cookie value (base64url). `None`
    /// without a usable secret (validation prevents it).
    pub fn seal(&self, deadline: u64, plain: &[u8]) -> Option<String> {
        let sealed = self.keys.as_ref()?.seal(self.context, deadline, plain)?;
        Some(URL_SAFE_NO_PAD.encode(sealed))
    }

    /// The plaintext and deadline of a cookie value sealed here (by any configured secret),
    /// or `None`. The caller checks the deadline.
    pub fn open(&self, value: &str) -> Option<(Vec<u8>, u64)> {
        let sealed = URL_SAFE_NO_PAD.decode(value).ok()?;
        self.keys.as_ref()?.open(self.context, &sealed)
    }
}

/// `Set-Cookie: <name>=<value>; Max-Age=<max_age><attributes>`.
pub fn set_cookie(name: &str, value: &str, max_age: u64, attributes: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{name}={value}; Max-Age={max_age}{attributes}")).ok()
}

/// `Set-Cookie` that deletes a cookie: empty value and `Max-Age=0`, with the attributes it
/// was set with (a browser deletes only the cookie of the same name, path and domain).
pub fn clear_cookie(name: &str, attributes: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("{name}=; Max-Age=0{attributes}")).ok()
}

/// `; Path=<path>; HttpOnly; SameSite=..[; Secure][; Domain=..]`: the attributes of every
/// cookie the gateway sets. `same_site`: the session cookie's is configured; a login cookie's
/// is always `Lax` (it must come back on the provider's top-level redirect).
pub fn attributes(cfg: &SessionConfig, path: &str, same_site: SameSite) -> String {
    let same_site = match same_site {
        SameSite::Lax => "Lax",
        SameSite::Strict => "Strict",
        SameSite::None => "None",
    };
    let mut attrs = format!("; Path={path}; HttpOnly; SameSite={same_site}");
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
            snapshot_file: None,
            login_timeout: Duration::from_secs(600),
            max_pending_logins: 100,
            preserve_form_posts: true,
            max_preserved_body: 65_536,
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

    #[test]
    fn one_attribute_builder_for_every_cookie() {
        let mut cfg = session_cfg(&[A]);
        cfg.cookie_samesite = SameSite::Strict;
        cfg.cookie_domain = Some(".example.test".into());
        assert_eq!(
            attributes(&cfg, "/", cfg.cookie_samesite),
            "; Path=/; HttpOnly; SameSite=Strict; Secure; Domain=.example.test"
        );
        cfg.cookie_secure = false;
        assert_eq!(
            attributes(&cfg, "/base/oauth2/", SameSite::Lax),
            "; Path=/base/oauth2/; HttpOnly; SameSite=Lax; Domain=.example.test"
        );
    }

    #[test]
    fn sealed_values_open_only_in_their_context_and_keys() {
        let secrets = |b: u8| vec![Secret::new(vec![b; 32])];
        let sealed = Sealed::login_cookies(&secrets(1), b"ctx a");
        let value = sealed.seal(42, b"plain").unwrap();
        assert!(!value.contains('=') && !value.contains("plain"));
        assert_eq!(sealed.open(&value).unwrap(), (b"plain".to_vec(), 42));
        assert!(
            Sealed::login_cookies(&secrets(1), b"ctx b")
                .open(&value)
                .is_none()
        );
        assert!(
            Sealed::login_cookies(&secrets(2), b"ctx a")
                .open(&value)
                .is_none()
        );
        assert!(sealed.open("%%%").is_none());
    }
}
