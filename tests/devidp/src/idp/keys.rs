//! The provider's RS256 keys and JWT signing. `dev-1` (the embedded demo key) signs until
//! [`KeyRing::rotate`] switches to `dev-2`; from then on the JWKS publishes both, so a client
//! that cached the old JWKS sees an unknown `kid` (RFC 7517 §4.5). A third, never-published
//! key signs the bad-signature tokens tests ask for.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{
    CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm, CoreRsaPrivateSigningKey,
};
use openidconnect::{JsonWebKeyId, PrivateSigningKey, SigningError};

const PRIMARY_PEM: &str = include_str!("../../keys/dev-1.pem");
const SECONDARY_PEM: &str = include_str!("../../keys/dev-2.pem");
const FOREIGN_PEM: &str = include_str!("../../keys/foreign.pem");

/// The signing keys of one provider.
pub(crate) struct KeyRing {
    primary: CoreRsaPrivateSigningKey,
    secondary: CoreRsaPrivateSigningKey,
    foreign: CoreRsaPrivateSigningKey,
    rotated: AtomicBool,
    /// Only `dev-2`, published and signing: a provider whose keys differ from another
    /// instance's (tests of several providers).
    second_only: AtomicBool,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("rotated", &self.rotated.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

// === impl KeyRing ===

impl KeyRing {
    /// Parses the embedded keys; an error here means a broken build, reported, not panicked.
    pub(crate) fn load() -> io::Result<Self> {
        Ok(Self {
            primary: parse(PRIMARY_PEM, "dev-1")?,
            secondary: parse(SECONDARY_PEM, "dev-2")?,
            foreign: parse(FOREIGN_PEM, "foreign")?,
            rotated: AtomicBool::new(false),
            second_only: AtomicBool::new(false),
        })
    }

    /// Sign with `dev-2` from now on and publish both keys.
    pub(crate) fn rotate(&self) {
        self.rotated.store(true, Ordering::SeqCst);
    }

    /// Publish and sign with `dev-2` only, never `dev-1`.
    pub(crate) fn use_second_key_only(&self) {
        self.second_only.store(true, Ordering::SeqCst);
    }

    /// The public keys as a JWKS document.
    pub(crate) fn jwks(&self) -> CoreJsonWebKeySet {
        if self.second_only.load(Ordering::SeqCst) {
            return CoreJsonWebKeySet::new(vec![self.secondary.as_verification_key()]);
        }
        let mut keys: Vec<CoreJsonWebKey> = vec![self.primary.as_verification_key()];
        if self.rotated.load(Ordering::SeqCst) {
            keys.push(self.secondary.as_verification_key());
        }
        CoreJsonWebKeySet::new(keys)
    }

    /// A compact RS256 JWS of `claims` with the active key.
    pub(crate) fn sign(&self, claims: &serde_json::Value) -> Result<String, SigningError> {
        if self.rotated.load(Ordering::SeqCst) || self.second_only.load(Ordering::SeqCst) {
            sign_with(&self.secondary, "dev-2", claims)
        } else {
            sign_with(&self.primary, "dev-1", claims)
        }
    }

    /// Like [`Self::sign`], with the members of `extra` added to the header (`alg`, `kid`
    /// and `typ` included: they replace the usual ones).
    pub(crate) fn sign_with_header(
        &self,
        claims: &serde_json::Value,
        extra: &serde_json::Value,
    ) -> Result<String, SigningError> {
        if self.rotated.load(Ordering::SeqCst) {
            sign_with_extra(&self.secondary, "dev-2", claims, extra)
        } else {
            sign_with_extra(&self.primary, "dev-1", claims, extra)
        }
    }

    /// A compact RS256 JWS of `claims` with the unpublished key, claiming `kid`.
    pub(crate) fn sign_foreign(
        &self,
        claims: &serde_json::Value,
        kid: &str,
    ) -> Result<String, SigningError> {
        sign_with(&self.foreign, kid, claims)
    }
}

fn parse(pem: &str, kid: &str) -> io::Result<CoreRsaPrivateSigningKey> {
    CoreRsaPrivateSigningKey::from_pem(pem, Some(JsonWebKeyId::new(kid.to_owned()))).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("signing key {kid}: {e}"),
        )
    })
}

/// RFC 7515 §3.1 compact serialization: `b64(header).b64(payload).b64(signature)`.
fn sign_with(
    key: &CoreRsaPrivateSigningKey,
    kid: &str,
    claims: &serde_json::Value,
) -> Result<String, SigningError> {
    sign_with_extra(key, kid, claims, &serde_json::Value::Null)
}

/// [`sign_with`], the members of `extra` (an object) merged over the header.
fn sign_with_extra(
    key: &CoreRsaPrivateSigningKey,
    kid: &str,
    claims: &serde_json::Value,
    extra: &serde_json::Value,
) -> Result<String, SigningError> {
    let mut header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "kid": kid });
    if let (Some(header), Some(extra)) = (header.as_object_mut(), extra.as_object()) {
        header.extend(extra.clone());
    }
    let signing_input = format!("{}.{}", b64_json(&header), b64_json(claims));
    let signature = key.sign(
        &CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        signing_input.as_bytes(),
    )?;
    Ok(format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

fn b64_json(value: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}
