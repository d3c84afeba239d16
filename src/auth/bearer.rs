//! Bearer passthrough for machine clients (opt-in per route, `bearer = "passthrough"`).
//!
//! A request with `Authorization: Bearer <JWT>` and no session is accepted when the JWT
//! verifies against the provider's JWKS (an advertised asymmetric algorithm; `iss`; `aud` one
//! of `oidc.bearer_audiences`; `exp` and `nbf` with a small leeway). It is then forwarded with
//! that same token, and identity headers from its claims.
//!
//! Only access tokens (contract Details 29). An ID token is signed by the same provider, and
//! its audience is the client id; it also reaches the browser (the sign-out redirect carries
//! it as `id_token_hint`, so it lands in the browser history). A token shaped like one is
//! refused whatever its audience: a `nonce`, `at_hash` or `c_hash` claim (only ID tokens carry
//! them), or a `typ` header other than `at+jwt` (RFC 9068) or `JWT`. And `bearer_audiences`
//! has no default when a route uses passthrough (the configuration says which APIs' tokens
//! are meant for the upstream).

use serde_json::Value;

use super::{Authenticated, Authenticator};
use crate::oidc::jwt::{self, JwtError, Verified};
use crate::session::Tokens;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum BearerError {
    #[error("the provider is not available yet")]
    NotReady,
    #[error("{0}")]
    Jwt(#[from] JwtError),
    #[error("token has no subject")]
    NoSubject,
    #[error("not an access token")]
    NotAnAccessToken,
}

impl BearerError {
    /// The `error_description` of the `WWW-Authenticate` challenge.
    pub fn description(&self) -> &'static str {
        match self {
            BearerError::NotReady => "the identity provider is not available yet",
            BearerError::NoSubject => "the token has no subject",
            BearerError::NotAnAccessToken => "the token is not an access token",
            BearerError::Jwt(e) => match e {
                JwtError::Malformed => "the token is not a well-formed JWT",
                JwtError::Algorithm => "the token's signing algorithm is not accepted",
                JwtError::UnknownKey => "the token was signed by an unknown key",
                JwtError::Signature => "the token signature is invalid",
                JwtError::Expired => "the token has expired",
                JwtError::NotYetValid => "the token is not valid yet",
                JwtError::Issuer => "the token was issued by another issuer",
                JwtError::Audience => "the token is not meant for this audience",
                JwtError::Critical => {
                    "the token has a critical header this gateway does not understand"
                }
                JwtError::Claim(_) => "the token lacks a required claim",
            },
        }
    }
}

pub async fn verify(auth: &Authenticator, token: &str) -> Result<Authenticated, BearerError> {
    let provider = auth.oidc.provider().ok_or(BearerError::NotReady)?;
    let verified = match jwt::verify_signature(token, provider.jwks(), &provider.algorithms) {
        Err(JwtError::UnknownKey) => {
            let refreshed = auth.oidc.refetch_jwks().await.ok_or(JwtError::UnknownKey)?;
            jwt::verify_signature(token, refreshed.jwks(), &refreshed.algorithms)?
        }
        other => other?,
    };
    if !is_access_token(&verified) {
        return Err(BearerError::NotAnAccessToken);
    }
    let claims = verified.claims;
    jwt::check_claims(
        &claims,
        provider.issuer(),
        &auth.bearer_audiences,
        auth.clock.unix_now(),
        LEEWAY_SECS,
    )?;
    let identity = auth
        .identities
        .identity(&claims)
        .ok_or(BearerError::NoSubject)?;
    let value = Tokens::bearer_value(token).ok_or(JwtError::Malformed)?;
    Ok(Authenticated::Bearer(value, Box::new(identity)))
}

/// Not shaped like an ID token (see the module doc). `typ` compares case-insensitively, with
/// or without the `application/` prefix (RFC 7515 section 4.1.9, RFC 8725 section 3.11).
fn is_access_token(jws: &Verified) -> bool {
    const ID_TOKEN_CLAIMS: [&str; 3] = ["nonce", "at_hash", "c_hash"];
    if ID_TOKEN_CLAIMS.iter().any(|c| jws.claims.contains_key(*c)) {
        return false;
    }
    match jws.header.get("typ") {
        None => true,
        Some(Value::String(typ)) => {
            let typ = typ.to_ascii_lowercase();
            let typ = typ.strip_prefix("application/").unwrap_or(&typ);
            typ == "at+jwt" || typ == "jwt"
        }
        Some(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jws(header: Value, claims: Value) -> Verified {
        let (Value::Object(header), Value::Object(claims)) = (header, claims) else {
            panic!("objects only")
        };
        Verified { header, claims }
    }

    #[test]
    fn id_token_shapes_are_not_access_tokens() {
        let plain = json!({"sub": "svc", "aud": "api"});
        let accepted = [
            "JWT",
            "jwt",
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/JWT",
        ];
        assert!(
            is_access_token(&jws(json!({"alg": "RS256"}), plain.clone())),
            "no typ"
        );
        for typ in accepted {
            let header = json!({"alg": "RS256", "typ": typ});
            assert!(is_access_token(&jws(header, plain.clone())), "{typ}");
        }
        let refused = [
            json!("id_token+jwt"),
            json!("logout+jwt"),
            json!("JOSE"),
            json!("application/jwt+x"),
            json!("xat+jwt"),
            json!(""),
            json!(7),
        ];
        for typ in refused {
            let header = json!({"alg": "RS256", "typ": typ});
            assert!(!is_access_token(&jws(header, plain.clone())), "{typ}");
        }
        for claim in ["nonce", "at_hash", "c_hash"] {
            let claims = json!({"sub": "svc", claim: "x"});
            let header = json!({"alg": "RS256", "typ": "at+jwt"});
            assert!(!is_access_token(&jws(header, claims)), "{claim}");
        }
    }
}
