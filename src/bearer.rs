//! Bearer passthrough for machine clients (opt-in per route, `bearer = "passthrough"`).
//!
//! A request with `Authorization: Bearer <JWT>` and no session is accepted when the JWT
//! verifies against the provider's JWKS (an advertised asymmetric algorithm; `iss`; `aud` one
//! of `oidc.bearer_audiences`; `exp` and `nbf` with a small leeway). It is then forwarded with
//! that same token, and identity headers from its claims.

use crate::gateway::{Authenticated, Gateway};
use crate::oidc::jwt::{self, JwtError};
use crate::session::{Tokens, unix_now};

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
}

impl BearerError {
    /// The `error_description` of the `WWW-Authenticate` challenge.
    pub fn description(&self) -> &'static str {
        match self {
            BearerError::NotReady => "the identity provider is not available yet",
            BearerError::NoSubject => "the token has no subject",
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

pub async fn verify(gateway: &Gateway, token: &str) -> Result<Authenticated, BearerError> {
    let provider = gateway.oidc.provider().ok_or(BearerError::NotReady)?;
    let verified = match jwt::verify_signature(token, provider.jwks(), &provider.algorithms) {
        Err(JwtError::UnknownKey) => {
            let refreshed = gateway
                .oidc
                .refetch_jwks()
                .await
                .ok_or(JwtError::UnknownKey)?;
            jwt::verify_signature(token, refreshed.jwks(), &refreshed.algorithms)?
        }
        other => other?,
    };
    let claims = verified.claims;
    jwt::check_claims(
        &claims,
        provider.issuer(),
        &gateway.cfg.oidc.bearer_audiences,
        unix_now(),
        LEEWAY_SECS,
    )?;
    let identity = gateway
        .rules
        .identity(&claims)
        .ok_or(BearerError::NoSubject)?;
    let value = Tokens::bearer_value(token).ok_or(JwtError::Malformed)?;
    Ok(Authenticated::Bearer(value, Box::new(identity)))
}
