//! Bearer passthrough for machine clients (opt-in per route, `bearer = "passthrough"`).
//!
//! A request with `Authorization: Bearer <JWT>` and no session is accepted when the JWT
//! verifies as an access token ([`crate::oidc::Oidc::verify_jwt`]: the provider's JWKS, an
//! advertised asymmetric algorithm, `iss`, `aud` one of `oidc.bearer_audiences`, `exp` and
//! `nbf` with the common leeway, and not shaped like an ID token). It is
//! then forwarded with that same token, and identity headers from its claims.
//! `bearer_audiences` has no default when a route uses passthrough (the configuration says
//! which APIs' tokens are meant for the upstream; the client id is the ID tokens' audience).

use super::{Authenticated, Authenticator};
use crate::config::ProviderId;
use crate::oidc::Oidc;
use crate::oidc::jwt::{Expect, JwtError};
use crate::session::Tokens;

#[derive(Debug, thiserror::Error)]
pub enum BearerError {
    #[error("{0}")]
    Jwt(#[from] JwtError),
    #[error("token has no subject")]
    NoSubject,
}

impl BearerError {
    /// The `error_description` of the `WWW-Authenticate` challenge.
    pub fn description(&self) -> &'static str {
        match self {
            BearerError::NoSubject => "the token has no subject",
            BearerError::Jwt(e) => match e {
                JwtError::NotReady => "the identity provider is not available yet",
                JwtError::Malformed => "the token is not a well-formed JWT",
                JwtError::Algorithm => "the token's signing algorithm is not accepted",
                JwtError::UnknownKey => "the token was signed by an unknown key",
                JwtError::Signature => "the token signature is invalid",
                JwtError::Expired => "the token has expired",
                JwtError::NotYetValid => "the token is not valid yet",
                JwtError::IssuedInFuture => "the token was issued in the future",
                JwtError::TooOld => "the token was issued too long ago",
                JwtError::NotANumericDate => "the token has a time claim that is not a number",
                JwtError::Issuer => "the token was issued by another issuer",
                JwtError::Audience => "the token is not meant for this audience",
                JwtError::NotAnAccessToken => "the token is not an access token",
                JwtError::Critical => {
                    "the token has a critical header this gateway does not understand"
                }
                JwtError::Claim(_) => "the token lacks a required claim",
            },
        }
    }
}

/// `oidc`: the route's provider (`provider` its id): its keys, issuer and audiences.
pub async fn verify(
    auth: &Authenticator,
    oidc: &Oidc,
    provider: ProviderId,
    token: &str,
) -> Result<Authenticated, BearerError> {
    let audiences = (auth.bearer_audiences.get(provider.index()))
        .map(Vec::as_slice)
        .unwrap_or_default();
    let claims = oidc
        .verify_jwt(token, Expect::AccessToken { audiences })
        .await?;
    let identity = auth
        .identities
        .identity(&claims)
        .ok_or(BearerError::NoSubject)?;
    let value = Tokens::bearer_value(token).ok_or(JwtError::Malformed)?;
    Ok(Authenticated::Bearer(value, Box::new(identity)))
}
