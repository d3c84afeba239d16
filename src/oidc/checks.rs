//! Checks beyond openidconnect's: the authorization response's `iss` parameter (RFC 9207),
//! and the ID-token claims openidconnect leaves to its caller (`azp`, `at_hash`, the age of
//! `iat`). Pure functions of their inputs, so each rule is unit-tested here; the callback and
//! [`super::flows`] apply them.
//!
//! - RFC 9207 section 2.4: when the authorization response carries `iss`, it must equal the
//!   provider's issuer (simple string comparison); when the provider advertises
//!   `authorization_response_iss_parameter_supported`, it must be there. A repeated `iss` is
//!   refused (which one would count?). This is the mix-up defence: a code meant for another
//!   provider is never redeemed here.
//! - OpenID Connect Core 3.1.3.7 steps 4 and 5: an `azp` must be the client id, and an ID
//!   token with several audiences must have one.
//! - Core 3.1.3.8 / 3.2.2.9: `at_hash`, when present, is the left half of the hash of the
//!   access token issued with it, the hash being the one of the ID token's `alg`.
//! - Core 3.1.3.7 step 10: `iat` no older than `oidc.id_token_max_age` (plus
//!   [`LEEWAY_SECS`]), and not ahead of the clock by more than the leeway. A week-old ID
//!   token whose `exp` is still ahead is refused.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::CoreJwsSigningAlgorithm;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

use super::jwt::LEEWAY_SECS;

/// Why an authorization response's `iss` parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseIssuerError {
    #[error(
        "the provider advertises the authorization response `iss` parameter, and it is missing"
    )]
    Missing,
    #[error("the authorization response names another issuer")]
    Wrong,
    #[error("the authorization response has more than one `iss` parameter")]
    Repeated,
}

/// Why an ID token that verified (signature, iss, aud, exp, nonce) is still refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenCheckError {
    #[error("`azp` names another client")]
    AuthorizedParty,
    #[error("several audiences and no `azp`")]
    NoAuthorizedParty,
    #[error("`at_hash` does not match the access token")]
    AccessTokenHash,
    #[error("no usable `iat`")]
    NoIssueTime,
    #[error("issued too long ago (`iat` older than oidc.id_token_max_age)")]
    IssuedTooLongAgo,
    #[error("issued in the future")]
    IssuedInFuture,
}

/// RFC 9207: `iss` holds every `iss` value of the authorization response's query.
pub fn response_issuer(
    issuer: &str,
    advertised: bool,
    iss: &[String],
) -> Result<(), ResponseIssuerError> {
    match iss {
        [] if advertised => Err(ResponseIssuerError::Missing),
        [] => Ok(()),
        [one] if one == issuer => Ok(()),
        [_] => Err(ResponseIssuerError::Wrong),
        _ => Err(ResponseIssuerError::Repeated),
    }
}

/// What an ID token's claims are judged against.
#[derive(Debug, Clone, Copy)]
pub struct IdTokenContext<'a> {
    pub client_id: &'a str,
    /// The access token of the same token response.
    pub access_token: &'a str,
    /// The ID token's (verified) signing algorithm: it picks `at_hash`'s hash.
    pub alg: &'a CoreJwsSigningAlgorithm,
    /// Unix seconds.
    pub now: u64,
    /// `oidc.id_token_max_age`.
    pub max_age: Duration,
}

/// The checks of this module's head on a verified ID token's claims.
pub fn id_token_claims(
    claims: &Map<String, Value>,
    ctx: &IdTokenContext<'_>,
) -> Result<(), IdTokenCheckError> {
    authorized_party(claims, ctx.client_id)?;
    access_token_hash(claims, ctx.access_token, ctx.alg)?;
    issue_time(claims, ctx.now, ctx.max_age)
}

fn authorized_party(claims: &Map<String, Value>, client_id: &str) -> Result<(), IdTokenCheckError> {
    let several = matches!(claims.get("aud"), Some(Value::Array(list)) if list.len() > 1);
    match claims.get("azp") {
        Some(Value::String(azp)) if azp == client_id => Ok(()),
        Some(_) => Err(IdTokenCheckError::AuthorizedParty),
        None if several => Err(IdTokenCheckError::NoAuthorizedParty),
        None => Ok(()),
    }
}

fn access_token_hash(
    claims: &Map<String, Value>,
    access_token: &str,
    alg: &CoreJwsSigningAlgorithm,
) -> Result<(), IdTokenCheckError> {
    let Some(claimed) = claims.get("at_hash") else {
        return Ok(());
    };
    let expected = at_hash(access_token, alg).ok_or(IdTokenCheckError::AccessTokenHash)?;
    match claimed {
        Value::String(claimed) if *claimed == expected => Ok(()),
        _ => Err(IdTokenCheckError::AccessTokenHash),
    }
}

/// base64url of the left half of the hash of `access_token`, with the hash of `alg`
/// (EdDSA: Ed25519's SHA-512, the only curve openidconnect verifies). `None` for an
/// algorithm without one.
pub fn at_hash(access_token: &str, alg: &CoreJwsSigningAlgorithm) -> Option<String> {
    use CoreJwsSigningAlgorithm as A;
    let digest: Vec<u8> = match alg {
        A::RsaSsaPkcs1V15Sha256 | A::RsaSsaPssSha256 | A::EcdsaP256Sha256 => {
            Sha256::digest(access_token.as_bytes()).to_vec()
        }
        A::RsaSsaPkcs1V15Sha384 | A::RsaSsaPssSha384 | A::EcdsaP384Sha384 => {
            Sha384::digest(access_token.as_bytes()).to_vec()
        }
        A::RsaSsaPkcs1V15Sha512 | A::RsaSsaPssSha512 | A::EcdsaP521Sha512 | A::EdDsa => {
            Sha512::digest(access_token.as_bytes()).to_vec()
        }
        // HMAC and `none` are never accepted for ID tokens; anything newer has no known hash.
        _ => return None,
    };
    Some(URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2]))
}

fn issue_time(
    claims: &Map<String, Value>,
    now: u64,
    max_age: Duration,
) -> Result<(), IdTokenCheckError> {
    // openidconnect accepted the value as a NumericDate (fractions allowed); whole seconds
    // are enough here.
    let iat = claims
        .get("iat")
        .and_then(Value::as_f64)
        .filter(|t| t.is_finite() && *t >= 0.0)
        .ok_or(IdTokenCheckError::NoIssueTime)?;
    let iat = iat as u64; // saturating cast
    if iat > now.saturating_add(LEEWAY_SECS) {
        return Err(IdTokenCheckError::IssuedInFuture);
    }
    let oldest = now.saturating_sub(max_age.as_secs().saturating_add(LEEWAY_SECS));
    if iat < oldest {
        return Err(IdTokenCheckError::IssuedTooLongAgo);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ISSUER: &str = "https://idp.example";
    const CLIENT: &str = "gw";
    const NOW: u64 = 1_800_000_000;
    const TEN_MINUTES: Duration = Duration::from_secs(600);
    const RS256: CoreJwsSigningAlgorithm = CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256;

    fn iss(values: &[&str]) -> Vec<String> {
        values.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn response_issuer_rules() {
        use ResponseIssuerError as E;
        for advertised in [true, false] {
            assert_eq!(response_issuer(ISSUER, advertised, &iss(&[ISSUER])), Ok(()));
            let wrong = iss(&["https://attacker.example"]);
            assert_eq!(response_issuer(ISSUER, advertised, &wrong), Err(E::Wrong));
            // Simple string comparison: no normalisation of a trailing slash or case.
            let slash = iss(&["https://idp.example/"]);
            assert_eq!(response_issuer(ISSUER, advertised, &slash), Err(E::Wrong));
            let upper = iss(&["HTTPS://idp.example"]);
            assert_eq!(response_issuer(ISSUER, advertised, &upper), Err(E::Wrong));
            let twice = iss(&[ISSUER, ISSUER]);
            assert_eq!(
                response_issuer(ISSUER, advertised, &twice),
                Err(E::Repeated)
            );
        }
        assert_eq!(response_issuer(ISSUER, true, &[]), Err(E::Missing));
        assert_eq!(response_issuer(ISSUER, false, &[]), Ok(()));
    }

    fn ctx<'a>(access_token: &'a str, alg: &'a CoreJwsSigningAlgorithm) -> IdTokenContext<'a> {
        IdTokenContext {
            client_id: CLIENT,
            access_token,
            alg,
            now: NOW,
            max_age: TEN_MINUTES,
        }
    }

    fn claims(extra: Value) -> Map<String, Value> {
        let mut base = json!({ "iss": ISSUER, "aud": CLIENT, "sub": "alice", "iat": NOW })
            .as_object()
            .cloned()
            .unwrap();
        base.extend(extra.as_object().cloned().unwrap());
        base
    }

    #[test]
    fn azp_must_be_the_client_and_is_required_with_several_audiences() {
        use IdTokenCheckError as E;
        let c = ctx("at", &RS256);
        assert_eq!(id_token_claims(&claims(json!({})), &c), Ok(()));
        assert_eq!(
            id_token_claims(&claims(json!({ "azp": CLIENT })), &c),
            Ok(())
        );
        let other = claims(json!({ "azp": "other" }));
        assert_eq!(id_token_claims(&other, &c), Err(E::AuthorizedParty));
        let not_a_string = claims(json!({ "azp": [CLIENT] }));
        assert_eq!(id_token_claims(&not_a_string, &c), Err(E::AuthorizedParty));
        let two = claims(json!({ "aud": [CLIENT, "other"] }));
        assert_eq!(id_token_claims(&two, &c), Err(E::NoAuthorizedParty));
        let two_with_azp = claims(json!({ "aud": [CLIENT, "other"], "azp": CLIENT }));
        assert_eq!(id_token_claims(&two_with_azp, &c), Ok(()));
        let one_in_a_list = claims(json!({ "aud": [CLIENT] }));
        assert_eq!(id_token_claims(&one_in_a_list, &c), Ok(()));
    }

    #[test]
    fn at_hash_is_checked_when_present() {
        use IdTokenCheckError as E;
        // OpenID Connect Core's example (A.3): this access token and RS256.
        let token = "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y";
        assert_eq!(
            at_hash(token, &RS256).as_deref(),
            Some("77QmUPtjPfzWtF2AnpK9RQ")
        );
        let c = ctx(token, &RS256);
        let good = claims(json!({ "at_hash": "77QmUPtjPfzWtF2AnpK9RQ" }));
        assert_eq!(id_token_claims(&good, &c), Ok(()));
        let bad = claims(json!({ "at_hash": "77QmUPtjPfzWtF2AnpK9RA" }));
        assert_eq!(id_token_claims(&bad, &c), Err(E::AccessTokenHash));
        let not_a_string = claims(json!({ "at_hash": 1 }));
        assert_eq!(id_token_claims(&not_a_string, &c), Err(E::AccessTokenHash));
        // The hash follows the algorithm: SHA-256's half is not SHA-512's.
        let es512 = CoreJwsSigningAlgorithm::EcdsaP521Sha512;
        assert_eq!(
            id_token_claims(&good, &ctx(token, &es512)),
            Err(E::AccessTokenHash)
        );
        let hs256 = CoreJwsSigningAlgorithm::HmacSha256;
        assert_eq!(at_hash(token, &hs256), None);
        assert_eq!(at_hash(token, &es512).map(|h| h.len()), Some(43));
    }

    #[test]
    fn iat_must_be_recent_and_not_ahead() {
        use IdTokenCheckError as E;
        let c = ctx("at", &RS256);
        let at = |iat: Value| id_token_claims(&claims(json!({ "iat": iat })), &c);
        assert_eq!(at(json!(NOW)), Ok(()));
        assert_eq!(at(json!(NOW - 600 - LEEWAY_SECS)), Ok(()));
        assert_eq!(
            at(json!(NOW - 600 - LEEWAY_SECS - 1)),
            Err(E::IssuedTooLongAgo)
        );
        assert_eq!(at(json!(NOW - 7 * 24 * 3600)), Err(E::IssuedTooLongAgo));
        assert_eq!(at(json!(NOW + LEEWAY_SECS)), Ok(()));
        assert_eq!(at(json!(NOW + LEEWAY_SECS + 1)), Err(E::IssuedInFuture));
        assert_eq!(at(json!(NOW as f64 + 0.5)), Ok(()));
        assert_eq!(at(json!(u64::MAX)), Err(E::IssuedInFuture));
        assert_eq!(at(json!(-1)), Err(E::NoIssueTime));
        assert_eq!(at(json!("now")), Err(E::NoIssueTime));
        let mut none = claims(json!({}));
        none.remove("iat");
        assert_eq!(id_token_claims(&none, &c), Err(E::NoIssueTime));
        // A longer configured age lets the same token in.
        let week = Duration::from_secs(8 * 24 * 3600);
        let lenient = IdTokenContext { max_age: week, ..c };
        let old = claims(json!({ "iat": NOW - 7 * 24 * 3600 }));
        assert_eq!(id_token_claims(&old, &lenient), Ok(()));
    }
}
