//! Sealing under keys derived from the cookie secrets: the Redis store's records and key
//! names, and the login cookies (`crate::cookie::Sealed`).
//!
//! Every cookie secret yields two keys by HKDF-SHA256 (RFC 5869; ring, already in the tree
//! through rustls), each under its own `info` label so that neither can stand in for the
//! other or for the cookie signature:
//!
//! - an AES-256-GCM key: records are sealed with the FIRST secret's key and a random 96-bit
//!   nonce per write, and opened with whichever key works (secret rotation keeps sessions);
//! - an HMAC-SHA256 key for key NAMES: a Redis key is `HMAC(name key, label || id)` in hex, so
//!   whoever reads Redis learns neither a session id (to forge a cookie from) nor a token.
//!   Names depend on the secret, so a reader looks under the name of every secret (one
//!   round trip, `MGET`-like) and the store moves a record found under an old name.
//!
//! The same construction seals pending logins in the browser's login cookies, under keys of
//! their own ([`Keyring::for_login_cookies`]: another HKDF `info` label), so a login cookie
//! never opens as a stored record, nor the other way round. The memory store's snapshot
//! ([`Keyring::for_snapshot`]) and the Redis store's revocation envelopes
//! ([`Keyring::for_revocation`]) have labels of their own too.
//!
//! A sealed value is `[version][deadline: u64 BE][nonce][ciphertext || tag]`. The deadline
//! (Unix seconds after which the record is dead whatever its TTL; 0 = none) is plain so that
//! the load script can cap the idle TTL at it, and it is authenticated (associated data with
//! the caller's context, the session id): a changed deadline, a record copied under another
//! id, or a wrong key all fail to open, and a record that fails to open is treated as absent.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, Salt};
use ring::hmac;

use crate::secret::Secret;

const VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 8;
const SALT: &[u8] = b"authgate redis store";
const ENCRYPTION_INFO: &[u8] = b"authgate redis record encryption v1";
const NAMES_INFO: &[u8] = b"authgate redis key names v1";
const LOGIN_COOKIE_INFO: &[u8] = b"authgate login cookie encryption v1";
const SNAPSHOT_INFO: &[u8] = b"authgate session snapshot encryption v1";
const REVOCATION_INFO: &[u8] = b"authgate redis revocation envelope v1";

struct Keys {
    aead: LessSafeKey,
    names: hmac::Key,
}

/// The keys of every configured cookie secret, the first one current.
pub struct Keyring {
    keys: Vec<Keys>,
}

impl Keyring {
    /// The keys of the Redis store. `None` when there is no secret (validation guarantees one).
    pub fn new(secrets: &[Secret<Vec<u8>>]) -> Option<Keyring> {
        Self::derive(secrets, ENCRYPTION_INFO)
    }

    /// The keys that seal login cookies (only [`Keyring::seal`] and [`Keyring::open`] apply).
    pub fn for_login_cookies(secrets: &[Secret<Vec<u8>>]) -> Option<Keyring> {
        Self::derive(secrets, LOGIN_COOKIE_INFO)
    }

    /// The keys that seal the memory store's snapshot file (only [`Keyring::seal`] and
    /// [`Keyring::open`] apply): neither a Redis record nor a login cookie opens as one.
    pub fn for_snapshot(secrets: &[Secret<Vec<u8>>]) -> Option<Keyring> {
        Self::derive(secrets, SNAPSHOT_INFO)
    }

    /// The keys that seal the Redis store's revocation envelopes (a session's refresh token,
    /// readable by the admin API without the session id; only [`Keyring::seal`] and
    /// [`Keyring::open`] apply): neither a record nor a login cookie opens as one.
    pub fn for_revocation(secrets: &[Secret<Vec<u8>>]) -> Option<Keyring> {
        Self::derive(secrets, REVOCATION_INFO)
    }

    fn derive(secrets: &[Secret<Vec<u8>>], encryption_info: &[u8]) -> Option<Keyring> {
        let salt = Salt::new(HKDF_SHA256, SALT);
        let info = [encryption_info];
        let keys = secrets
            .iter()
            .map(|secret| {
                let prk = salt.extract(secret.expose());
                let aead = prk.expand(&info, &AES_256_GCM).ok()?;
                let names = prk.expand(&[NAMES_INFO], hmac::HMAC_SHA256).ok()?;
                Some(Keys {
                    aead: LessSafeKey::new(UnboundKey::from(aead)),
                    names: hmac::Key::from(names),
                })
            })
            .collect::<Option<Vec<Keys>>>()?;
        (!keys.is_empty()).then_some(Keyring { keys })
    }

    /// Number of secrets, so of candidate names per id (never 0).
    pub fn secrets(&self) -> usize {
        self.keys.len()
    }

    /// The name of `id` under `label` for every secret, the current one first (hex).
    pub fn names(&self, label: &str, id: &[u8]) -> Vec<String> {
        self.keys.iter().map(|k| name(k, label, id)).collect()
    }

    /// The current name of `id` under `label`.
    pub fn name(&self, label: &str, id: &[u8]) -> String {
        self.keys
            .first()
            .map(|k| name(k, label, id))
            .unwrap_or_default()
    }

    /// Encrypt `plaintext` bound to `context` and `deadline` with the current key.
    pub fn seal(&self, context: &[u8], deadline: u64, plaintext: &[u8]) -> Option<Vec<u8>> {
        use rand::RngCore;
        let key = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let mut out = Vec::with_capacity(HEADER_LEN + NONCE_LEN + plaintext.len() + 16);
        out.push(VERSION);
        out.extend_from_slice(&deadline.to_be_bytes());
        let aad = associated(&out, context);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        key.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    /// The plaintext and deadline of a sealed value, or `None` (wrong key, context or bytes).
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Option<(Vec<u8>, u64)> {
        if sealed.len() < HEADER_LEN + NONCE_LEN + 16 || sealed.first() != Some(&VERSION) {
            return None;
        }
        let (header, rest) = sealed.split_at(HEADER_LEN);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let deadline = u64::from_be_bytes(header.get(1..)?.try_into().ok()?);
        let aad = associated(header, context);
        self.keys.iter().find_map(|key| {
            let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
            let mut buf = body.to_vec();
            let plain = key
                .aead
                .open_in_place(nonce, Aad::from(&aad), &mut buf)
                .ok()?;
            Some((plain.to_vec(), deadline))
        })
    }
}

fn name(keys: &Keys, label: &str, id: &[u8]) -> String {
    let mut data = Vec::with_capacity(label.len() + 1 + id.len());
    data.extend_from_slice(label.as_bytes());
    data.push(0);
    data.extend_from_slice(id);
    let tag = hmac::sign(&keys.names, &data);
    let mut hex = String::with_capacity(64);
    for b in tag.as_ref() {
        use std::fmt::Write;
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

fn associated(header: &[u8], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(header.len() + context.len());
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(secrets: &[&[u8]]) -> Keyring {
        let secrets: Vec<_> = secrets.iter().map(|s| Secret::new(s.to_vec())).collect();
        Keyring::new(&secrets).unwrap()
    }

    #[test]
    fn seal_open_roundtrip_with_rotation() {
        let old = ring(&[&[1u8; 32]]);
        let rotated = ring(&[&[2u8; 32], &[1u8; 32]]);
        let sealed = old.seal(b"id-1", 42, b"token").unwrap();
        assert_eq!(
            rotated.open(b"id-1", &sealed).unwrap(),
            (b"token".to_vec(), 42)
        );
        assert!(
            ring(&[&[2u8; 32]]).open(b"id-1", &sealed).is_none(),
            "unknown key"
        );
        assert_ne!(old.names("s", b"x")[0], rotated.names("s", b"x")[0]);
        assert_eq!(old.names("s", b"x")[0], rotated.names("s", b"x")[1]);
    }

    #[test]
    fn tampering_fails() {
        let k = ring(&[&[1u8; 32]]);
        let sealed = k.seal(b"id-1", 42, b"token").unwrap();
        assert!(k.open(b"id-2", &sealed).is_none(), "other context");
        let mut later = sealed.clone();
        later[8] ^= 1; // the deadline, pushed away
        assert!(k.open(b"id-1", &later).is_none());
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(k.open(b"id-1", &flipped).is_none());
        assert!(k.open(b"id-1", &sealed[..10]).is_none());
        assert!(!sealed.windows(5).any(|w| w == b"token"));
        // Two writes of the same record differ (random nonce).
        assert_ne!(sealed, k.seal(b"id-1", 42, b"token").unwrap());
    }

    #[test]
    fn login_cookie_keys_are_separate() {
        let secrets = vec![Secret::new(vec![1u8; 32])];
        let store = Keyring::new(&secrets).unwrap();
        let logins = Keyring::for_login_cookies(&secrets).unwrap();
        let sealed = logins.seal(b"ctx", 0, b"login").unwrap();
        assert_eq!(logins.open(b"ctx", &sealed).unwrap().0, b"login");
        assert!(store.open(b"ctx", &sealed).is_none());
        let envelopes = Keyring::for_revocation(&secrets).unwrap();
        assert!(envelopes.open(b"ctx", &sealed).is_none());
        assert!(
            store
                .open(b"ctx", &envelopes.seal(b"ctx", 0, b"x").unwrap())
                .is_none()
        );
        assert!(
            logins
                .open(b"ctx", &store.seal(b"ctx", 0, b"x").unwrap())
                .is_none()
        );
    }

    #[test]
    fn names_are_keyed_and_labelled() {
        let k = ring(&[&[1u8; 32]]);
        assert_ne!(k.name("session", b"x"), k.name("sid", b"x"));
        assert_eq!(k.name("session", b"x").len(), 64);
        assert_ne!(
            k.name("session", b"x"),
            ring(&[&[3u8; 32]]).name("session", b"x")
        );
    }
}
