//! Verifying JWTs that are not ID tokens: bearer tokens of machine clients and back-channel
//! logout tokens. Signature against the provider's JWKS with an asymmetric algorithm the
//! provider advertises; the claim checks are the caller's.
//!
//! `alg=none` and every HMAC algorithm are refused outright: accepting `HS256` would let
//! anyone sign with the provider's *public* key as the HMAC secret. So is every token with a
//! `crit` header (contract Details 30): RFC 7515 section 4.1.11 says a recipient MUST refuse
//! a JWS naming a critical extension it does not understand, and this gateway understands
//! none. (ID tokens are verified by openidconnect, which refuses any `crit` too.)

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{JsonWebKey, JsonWebKeyId};
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("malformed token")]
    Malformed,
    #[error("signing algorithm not accepted")]
    Algorithm,
    #[error("no key for this token (unknown kid)")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("critical header parameter not understood")]
    Critical,
    #[error("{0}")]
    Claim(&'static str),
}

/// A JWS whose signature verified: its header and its claims.
#[derive(Debug, PartialEq)]
pub struct Verified {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
}

/// The JSON payload of a compact JWT, WITHOUT verifying anything. Only for tokens already
/// verified, or for reading a timing hint (`exp`) from a token we hold anyway.
pub fn decode_payload(jwt: &str) -> Option<Map<String, Value>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `kid` named in a JWT header, if any (to decide whether a JWKS refetch can help).
pub fn header_kid(jwt: &str) -> Option<String> {
    let header = jwt.split('.').next()?;
    let bytes = URL_SAFE_NO_PAD.decode(header).ok()?;
    let header: Value = serde_json::from_slice(&bytes).ok()?;
    header.get("kid")?.as_str().map(str::to_owned)
}

/// Check the header and the signature; return the header and the claims.
pub fn verify_signature(
    jwt: &str,
    jwks: &CoreJsonWebKeySet,
    allowed: &[CoreJwsSigningAlgorithm],
) -> Result<Verified, JwtError> {
    let mut parts = jwt.split('.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let Value::Object(header) = decode_json(header_b64)? else {
        return Err(JwtError::Malformed);
    };
    if header.contains_key("crit") {
        return Err(JwtError::Critical);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwtError::Malformed)?;
    let alg = accepted_algorithm(alg, allowed)?;
    let kid = header.get("kid").and_then(Value::as_str);
    let signature = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| JwtError::Malformed)?;
    let message = &jwt[..header_b64.len() + 1 + payload_b64.len()];
    let verified = {
        let mut candidates = candidate_keys(jwks, kid).peekable();
        if candidates.peek().is_none() {
            return Err(JwtError::UnknownKey);
        }
        candidates.any(|key| {
            key.verify_signature(&alg, message.as_bytes(), &signature)
                .is_ok()
        })
    };
    if !verified {
        return Err(JwtError::Signature);
    }
    match decode_json(payload_b64)? {
        Value::Object(claims) => Ok(Verified { header, claims }),
        _ => Err(JwtError::Malformed),
    }
}

/// Standard time and issuer/audience checks, with `leeway_secs` of clock skew.
pub fn check_claims(
    claims: &Map<String, Value>,
    issuer: &str,
    audiences: &[String],
    now: u64,
    leeway_secs: u64,
) -> Result<(), JwtError> {
    let exp = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(JwtError::Claim("no exp"))?;
    if now > exp.saturating_add(leeway_secs) {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_u64)
        && nbf > now.saturating_add(leeway_secs)
    {
        return Err(JwtError::NotYetValid);
    }
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(JwtError::Issuer);
    }
    if !audience_matches(claims.get("aud"), audiences) {
        return Err(JwtError::Audience);
    }
    Ok(())
}

fn audience_matches(aud: Option<&Value>, accepted: &[String]) -> bool {
    match aud {
        Some(Value::String(a)) => accepted.iter().any(|x| x == a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| accepted.iter().any(|x| x == a)),
        _ => false,
    }
}

fn accepted_algorithm(
    alg: &str,
    allowed: &[CoreJwsSigningAlgorithm],
) -> Result<CoreJwsSigningAlgorithm, JwtError> {
    let alg: CoreJwsSigningAlgorithm =
        serde_json::from_value(Value::String(alg.to_owned())).map_err(|_| JwtError::Algorithm)?;
    if is_symmetric(&alg) || !allowed.contains(&alg) {
        return Err(JwtError::Algorithm);
    }
    Ok(alg)
}

/// HMAC algorithms (and `none`, which does not even parse) are never accepted here.
pub fn is_symmetric(alg: &CoreJwsSigningAlgorithm) -> bool {
    matches!(
        alg,
        CoreJwsSigningAlgorithm::HmacSha256
            | CoreJwsSigningAlgorithm::HmacSha384
            | CoreJwsSigningAlgorithm::HmacSha512
            | CoreJwsSigningAlgorithm::None
    )
}

fn candidate_keys<'k>(
    jwks: &'k CoreJsonWebKeySet,
    kid: Option<&'k str>,
) -> impl Iterator<Item = &'k CoreJsonWebKey> + 'k {
    jwks.keys().iter().filter(move |key| {
        let usable = key
            .key_use()
            .is_none_or(openidconnect::JsonWebKeyUse::allows_signature);
        let kid_ok = match (kid, key.key_id()) {
            (Some(kid), Some(id)) => id == &JsonWebKeyId::new(kid.to_owned()),
            (Some(_), None) => false,
            (None, _) => true,
        };
        usable && kid_ok
    })
}

fn decode_json(b64: &str) -> Result<Value, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claim_checks() {
        let c = json!({"exp": 100, "nbf": 50, "iss": "https://i", "aud": ["x", "api"]});
        let c = c.as_object().unwrap();
        let aud = ["api".to_string()];
        assert_eq!(check_claims(c, "https://i", &aud, 90, 0), Ok(()));
        assert_eq!(check_claims(c, "https://i", &aud, 105, 10), Ok(()));
        assert_eq!(
            check_claims(c, "https://i", &aud, 111, 10),
            Err(JwtError::Expired)
        );
        assert_eq!(
            check_claims(c, "https://i", &aud, 10, 10),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(
            check_claims(c, "https://j", &aud, 90, 0),
            Err(JwtError::Issuer)
        );
        let other = ["nope".to_string()];
        assert_eq!(
            check_claims(c, "https://i", &other, 90, 0),
            Err(JwtError::Audience)
        );
    }

    #[test]
    fn none_and_hmac_refused() {
        let allowed = [CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256];
        assert_eq!(
            accepted_algorithm("none", &allowed),
            Err(JwtError::Algorithm)
        );
        assert_eq!(
            accepted_algorithm("HS256", &allowed),
            Err(JwtError::Algorithm)
        );
        assert_eq!(
            accepted_algorithm("ES256", &allowed),
            Err(JwtError::Algorithm)
        );
        assert!(accepted_algorithm("RS256", &allowed).is_ok());
    }

    #[test]
    fn malformed_tokens() {
        let jwks = CoreJsonWebKeySet::new(vec![]);
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert_eq!(
                verify_signature(bad, &jwks, &[]),
                Err(JwtError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn any_crit_header_is_refused() {
        let jwks = CoreJsonWebKeySet::new(vec![]);
        let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let payload = b64(json!({"sub": "x"}));
        for crit in [json!(["exp"]), json!([]), json!("b64"), json!(null)] {
            let header = b64(json!({"alg": "RS256", "kid": "k", "crit": crit}));
            assert_eq!(
                verify_signature(&format!("{header}.{payload}.c2ln"), &jwks, &[]),
                Err(JwtError::Critical),
                "{crit}"
            );
        }
        let not_an_object = b64(json!(["alg", "RS256"]));
        assert_eq!(
            verify_signature(&format!("{not_an_object}.{payload}.c2ln"), &jwks, &[]),
            Err(JwtError::Malformed)
        );
    }
}
