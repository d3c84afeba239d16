//! The calls the gateway makes to its provider: authorize URL, code exchange, refresh,
//! revocation, end-session URL. Each returns plain data; no session logic here.

use openidconnect::core::{
    CoreErrorResponseType, CoreIdToken, CoreResponseType, CoreTokenResponse,
};
use openidconnect::{
    AccessToken, AuthenticationFlow, AuthorizationCode, ClaimsVerificationError,
    ConfigurationError, CsrfToken, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RefreshToken, RequestTokenError, Scope, StandardErrorResponse, TokenResponse,
};
use serde_json::{Map, Value};
use url::Url;

use super::checks::{self, IdTokenCheckError, IdTokenContext};
use super::{HttpError, Oidc, Provider, error_chain, jwt};
use crate::clock::Clock;
use crate::config::TokenEndpointAuth;
use crate::error::Chain;
use crate::logging::log_safe;
use crate::secret::Secret;

/// A login to start: where to send the browser, and what to remember until the callback.
pub struct AuthRequest {
    pub url: Url,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// Tokens and verified ID-token claims from a code exchange or a refresh.
pub struct TokenSet {
    pub access_token: String,
    /// Unix seconds; from `expires_in`, else the access token's JWT `exp`, else
    /// `session.max_token_age`, else unknown.
    pub access_expires_at: Option<u64>,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
    /// Claims of the verified ID token (`None` when the response had none).
    pub claims: Option<Map<String, Value>>,
    /// Access tokens (and expiries) of `oidc.resource[1..]`, in order; `None` where the
    /// provider could not be asked this time (keep the previous one).
    pub more: Vec<Option<(String, Option<u64>)>>,
}

/// A token request's failure, as oauth2 reports it (the provider's error code, or why its
/// answer could not be had or read).
pub type TokenRequestError =
    RequestTokenError<HttpError, StandardErrorResponse<CoreErrorResponseType>>;

/// Why a login's code exchange failed. Each keeps its cause as `source`.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the provider is not available yet")]
    NotReady,
    #[error("the token endpoint cannot be used")]
    Config(#[source] ConfigurationError),
    #[error("code exchange failed")]
    Exchange(#[source] TokenRequestError),
    #[error("the provider returned no ID token")]
    NoIdToken,
    #[error("ID token rejected")]
    IdToken(#[source] IdTokenError),
    /// The grant is unusable right after login (`oidc.resource[1..]`).
    #[error("the access token of another resource was refused")]
    Resources(#[source] RefreshError),
}

impl LoginError {
    /// Whether trying the login again may succeed without anything changing on our side or
    /// the user's: the token endpoint could not be reached, timed out, or answered without an
    /// OAuth error (a 5xx page, an unreadable body). An OAuth error answer (`invalid_grant`,
    /// `invalid_client`, ...) and a refused ID token are not transient. Mirrors how a refresh
    /// tells a rejection from a transient failure.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            LoginError::Exchange(
                RequestTokenError::Request(_)
                    | RequestTokenError::Parse(..)
                    | RequestTokenError::Other(_)
            )
        )
    }
}

/// Why an ID token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum IdTokenError {
    #[error("provider not discovered")]
    NotReady,
    /// Signature, iss, aud, exp or nonce (openidconnect's checks).
    #[error("claims not accepted")]
    Claims(#[source] ClaimsVerificationError),
    /// `azp`, `at_hash` or the age of `iat` (see [`checks`]).
    #[error("claims not accepted")]
    Check(#[source] IdTokenCheckError),
    #[error("unreadable claims")]
    Unreadable,
}

/// How a refresh failed: definitive (the session is over) or transient (try again later).
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("refresh rejected by the provider")]
    Rejected(#[source] Rejection),
    #[error("refresh failed transiently")]
    Transient(#[source] RefreshFailure),
    /// The provider did the grant but its answer cannot be used (the new ID token failed
    /// verification): transient like the above, except that the presented refresh token may
    /// be spent now. `rotated` is the one the provider returned with the answer: with
    /// rotation the session must keep it, or its next refresh would present a used token,
    /// which revokes the whole grant (a logout).
    #[error("refreshed tokens not usable")]
    Unusable {
        rotated: Option<Secret<String>>,
        #[source]
        reason: RefreshFailure,
    },
}

/// Why the provider ended a session's grant.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// RFC 6749 section 5.2: revoked, expired or reused.
    #[error("{0}")]
    InvalidGrant(StandardErrorResponse<CoreErrorResponseType>),
    /// OIDC Core 12.2: `sub` must not change.
    #[error("the refreshed ID token names another subject")]
    OtherSubject,
}

/// Why a refresh could not be done this time.
#[derive(Debug, thiserror::Error)]
pub enum RefreshFailure {
    #[error("provider not discovered yet")]
    NotReady,
    #[error("the token endpoint cannot be used")]
    Config(#[source] ConfigurationError),
    #[error("token request failed")]
    Request(#[source] TokenRequestError),
    #[error("refreshed ID token rejected")]
    IdToken(#[source] IdTokenError),
}

impl Oidc {
    /// Authorization-code request with PKCE S256, state, nonce, scopes, resources and extra
    /// parameters (`prompt=consent` with `offline_access`).
    /// `step_up`: `acr_values` / `max_age` a route requires (RFC 9470); they replace
    /// configured extra parameters of the same name.
    pub fn authorize(
        &self,
        provider: &Provider,
        step_up: &[(&'static str, String)],
    ) -> AuthRequest {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = provider
            .client
            .authorize_url(
                AuthenticationFlow::<CoreResponseType>::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge)
            .add_scopes(
                self.cfg
                    .scopes
                    .iter()
                    .filter(|s| s.as_str() != "openid") // added by openidconnect itself
                    .map(|s| Scope::new(s.clone())),
            );
        for resource in &self.cfg.resource {
            request = request.add_extra_param("resource", resource.clone());
        }
        let has_prompt = self
            .cfg
            .extra_auth_params
            .iter()
            .any(|(k, _)| k == "prompt");
        if !has_prompt && self.cfg.scopes.iter().any(|s| s == "offline_access") {
            request = request.add_extra_param("prompt", "consent");
        }
        // An empty value suppresses a parameter: `prompt = ""` sends no prompt at all (Entra ID
        // shows a consent screen on every login with `prompt=consent`).
        for (key, value) in self
            .cfg
            .extra_auth_params
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .filter(|(k, _)| !step_up.iter().any(|(name, _)| k == name))
        {
            request = request.add_extra_param(key.clone(), value.clone());
        }
        for (key, value) in step_up {
            request = request.add_extra_param(*key, value.clone());
        }
        let (url, state, nonce) = request.url();
        AuthRequest {
            url,
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        }
    }

    /// Exchange the authorization code and verify the ID token (signature, iss, aud, exp,
    /// nonce, then azp, at_hash and the age of iat).
    pub async fn exchange_code(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<TokenSet, LoginError> {
        let provider = self.provider().ok_or(LoginError::NotReady)?;
        let mut request = provider
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(LoginError::Config)?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()));
        // One resource per token request (Logto and oidc-provider refuse several); the other
        // resources' tokens come from refresh grants, below.
        if let Some(first) = self.cfg.resource.first() {
            request = request.add_extra_param("resource", first.clone());
        }
        let response = request
            .request_async(self.http())
            .await
            .map_err(LoginError::Exchange)?;
        let id_token = response.id_token().ok_or(LoginError::NoIdToken)?;
        let expected = Nonce::new(nonce.to_owned());
        let claims = self
            .verify_id_token(id_token, Some(&expected), response.access_token())
            .await
            .map_err(LoginError::IdToken)?;
        let mut set = self.token_set(
            response.access_token(),
            response.expires_in(),
            response.refresh_token(),
            Some((id_token, claims)),
        );
        if let Err(e) = self.fetch_more_resources(&provider, &mut set).await {
            // The grant is unusable right after login: refuse the login rather than keep a
            // session that cannot refresh.
            return Err(LoginError::Resources(e));
        }
        Ok(set)
    }

    /// Use a refresh token. `invalid_grant` (RFC 6749 section 5.2: revoked, expired, reused)
    /// is definitive; every other failure is transient (oauth2 drops the HTTP status, so a
    /// 5xx is `Parse`/`Other`/a non-`invalid_grant` code). `sub` must not change (OIDC Core
    /// 12.2).
    pub async fn refresh(&self, refresh_token: &str, sub: &str) -> Result<TokenSet, RefreshError> {
        let provider = self
            .provider()
            .ok_or(RefreshError::Transient(RefreshFailure::NotReady))?;
        let first = self.cfg.resource.first().map(String::as_str);
        let response = self.refresh_grant(&provider, refresh_token, first).await?;
        let id = match response.id_token() {
            Some(id_token) => {
                let claims = self
                    .verify_id_token(id_token, None, response.access_token())
                    .await
                    .map_err(|e| RefreshError::Unusable {
                        rotated: response
                            .refresh_token()
                            .map(|t| Secret::new(t.secret().clone())),
                        reason: RefreshFailure::IdToken(e),
                    })?;
                if claims.get("sub").and_then(Value::as_str) != Some(sub) {
                    return Err(RefreshError::Rejected(Rejection::OtherSubject));
                }
                Some((id_token, claims))
            }
            None => None,
        };
        let mut set = self.token_set(
            response.access_token(),
            response.expires_in(),
            response.refresh_token(),
            id,
        );
        // The first grant may have rotated the refresh token: `set` now carries the one to
        // use next, and losing it would lose the session. So a transient failure below keeps
        // `set` (with `None` for the missing tokens) instead of failing the refresh.
        self.fetch_more_resources(&provider, &mut set).await?;
        Ok(set)
    }

    /// One refresh-token grant, for one resource at most, classified.
    async fn refresh_grant(
        &self,
        provider: &Provider,
        refresh_token: &str,
        resource: Option<&str>,
    ) -> Result<CoreTokenResponse, RefreshError> {
        let token = RefreshToken::new(refresh_token.to_owned());
        let mut request = provider
            .client
            .exchange_refresh_token(&token)
            .map_err(|e| RefreshError::Transient(RefreshFailure::Config(e)))?;
        if let Some(resource) = resource {
            request = request.add_extra_param("resource", resource.to_owned());
        }
        match request.request_async(self.refresh_http()).await {
            Ok(response) => Ok(response),
            Err(RequestTokenError::ServerResponse(e))
                if *e.error() == CoreErrorResponseType::InvalidGrant =>
            {
                Err(RefreshError::Rejected(Rejection::InvalidGrant(e)))
            }
            Err(e) => Err(RefreshError::Transient(RefreshFailure::Request(e))),
        }
    }

    /// Tokens for `oidc.resource[1..]`: one refresh grant each, chaining rotated refresh
    /// tokens so a used one is never sent again. A transient failure stops the chain (the
    /// token it sent may or may not have been used) and leaves `None` for the rest; only
    /// `invalid_grant` is an error.
    async fn fetch_more_resources(
        &self,
        provider: &Provider,
        set: &mut TokenSet,
    ) -> Result<(), RefreshError> {
        let extra = self.cfg.resource.get(1..).unwrap_or_default();
        set.more = vec![None; extra.len()];
        let Some(mut refresh_token) = set.refresh_token.clone() else {
            return Ok(()); // no refresh token: only the first resource's token exists
        };
        for (slot, resource) in set.more.iter_mut().zip(extra) {
            match self
                .refresh_grant(provider, &refresh_token, Some(resource))
                .await
            {
                Ok(response) => {
                    if let Some(rotated) = response.refresh_token() {
                        refresh_token = rotated.secret().clone();
                    }
                    let access = response.access_token().secret().clone();
                    let expires_at = self.expiry(&access, response.expires_in());
                    *slot = Some((access, expires_at));
                }
                Err(RefreshError::Transient(reason)) => {
                    tracing::warn!(
                        %resource,
                        reason = %log_safe(Chain(&reason)),
                        "could not get the access token of a resource"
                    );
                    break;
                }
                Err(rejected) => return Err(rejected),
            }
        }
        set.refresh_token = Some(refresh_token);
        Ok(())
    }

    /// RFC 7009 revocation of a refresh token, when the provider has an endpoint. Best effort:
    /// sign-out goes on whatever the provider says. `true` when the provider accepted it
    /// (a 2xx answer); `false` without an endpoint, or when it refused or failed.
    ///
    /// Written by hand rather than through oauth2's `revoke_token`, which refuses a non-https
    /// endpoint and so silently skipped revocation for http issuers (development, in-cluster
    /// providers). Client authentication follows `token_endpoint_auth`, as for the token
    /// endpoint (RFC 7009 section 2.1).
    pub async fn revoke(&self, refresh_token: &str) -> bool {
        let Some(provider) = self.provider() else {
            return false;
        };
        let Some(url) = provider.revocation_endpoint() else {
            return false;
        };
        let mut form = vec![
            ("token", refresh_token),
            ("token_type_hint", "refresh_token"),
        ];
        let secret = self.cfg.client_secret.as_ref().map(|s| s.expose().as_str());
        let mut request = self.http().post(url.url().as_str());
        match (self.cfg.token_endpoint_auth, secret) {
            (TokenEndpointAuth::ClientSecretBasic, Some(secret)) => {
                request = request.header(
                    http::header::AUTHORIZATION,
                    basic_auth(&self.cfg.client_id, secret),
                );
            }
            (TokenEndpointAuth::ClientSecretPost, Some(secret)) => {
                form.push(("client_id", &self.cfg.client_id));
                form.push(("client_secret", secret));
            }
            (_, None) => form.push(("client_id", &self.cfg.client_id)),
        }
        match request.form(&form).send().await {
            Ok(response) if response.status().is_success() => true,
            Ok(response) => {
                tracing::warn!(status = %response.status(), "refresh token revocation refused");
                false
            }
            Err(e) => {
                tracing::warn!(
                    error = %log_safe(error_chain(&e)),
                    "refresh token revocation failed"
                );
                false
            }
        }
    }

    /// RP-initiated logout URL, when the provider has an end-session
    /// endpoint.
    pub fn end_session_url(&self, id_token_hint: Option<&str>) -> Option<Url> {
        let provider = self.provider()?;
        let mut url = provider.end_session_endpoint()?.url().clone();
        {
            let mut query = url.query_pairs_mut();
            if let Some(hint) = id_token_hint {
                query.append_pair("id_token_hint", hint);
            }
            query.append_pair("client_id", &self.cfg.client_id);
            query.append_pair("post_logout_redirect_uri", self.post_logout_url.as_str());
        }
        Some(url)
    }

    /// Verify an ID token that came with `access_token`; on an unknown key id, refetch the
    /// JWKS once and try again.
    async fn verify_id_token(
        &self,
        id_token: &CoreIdToken,
        nonce: Option<&Nonce>,
        access_token: &AccessToken,
    ) -> Result<Map<String, Value>, IdTokenError> {
        let provider = self.provider().ok_or(IdTokenError::NotReady)?;
        let (_, claims) = self
            .with_key_refetch(
                provider,
                |p| verify_with(p, id_token, nonce, self.clock()),
                |p, _| jwt::names_unknown_kid(&id_token.to_string(), p.jwks()),
            )
            .await?;
        // The signing algorithm was one of `provider.algorithms` (openidconnect checked it).
        let alg = id_token
            .signing_alg()
            .map_err(|e| IdTokenError::Claims(ClaimsVerificationError::SignatureVerification(e)))?;
        let context = IdTokenContext {
            client_id: &self.cfg.client_id,
            access_token: access_token.secret(),
            alg,
            now: self.clock().unix_now(),
            max_age: self.cfg.id_token_max_age,
        };
        checks::id_token_claims(&claims, &context).map_err(IdTokenError::Check)?;
        Ok(claims)
    }

    fn token_set(
        &self,
        access_token: &AccessToken,
        expires_in: Option<std::time::Duration>,
        refresh_token: Option<&RefreshToken>,
        id: Option<(&CoreIdToken, Map<String, Value>)>,
    ) -> TokenSet {
        let access = access_token.secret().clone();
        let access_expires_at = self.expiry(&access, expires_in);
        let (id_token, claims) = match id {
            Some((token, claims)) => (Some(token.to_string()), Some(claims)),
            None => (None, None),
        };
        TokenSet {
            access_token: access,
            access_expires_at,
            refresh_token: refresh_token.map(|t| t.secret().clone()),
            id_token,
            claims,
            more: Vec::new(),
        }
    }

    /// Unix expiry: `expires_in`, else the JWT `exp`, else `session.max_token_age`, else
    /// unknown (the token is then used until the session's absolute timeout).
    fn expiry(&self, access_token: &str, expires_in: Option<std::time::Duration>) -> Option<u64> {
        let now = self.clock().unix_now();
        expires_in
            .map(|d| now.saturating_add(d.as_secs()))
            .or_else(|| jwt_exp(access_token))
            .or_else(|| {
                self.max_token_age
                    .map(|age| now.saturating_add(age.as_secs()))
            })
    }
}

/// `nonce`: the one sent at login; `None` for a refreshed ID token, which carries none
/// (OIDC Core 12.2).
fn verify_with(
    provider: &Provider,
    id_token: &CoreIdToken,
    nonce: Option<&Nonce>,
    clock: &Clock,
) -> Result<Map<String, Value>, IdTokenError> {
    let clock = clock.clone();
    let verifier = provider
        .client
        .id_token_verifier()
        .set_allowed_algs(provider.algorithms.clone())
        // `exp` (and `iat`) by the gateway's clock.
        .set_time_fn(move || clock.system_time().into());
    let checked = match nonce {
        Some(nonce) => id_token.claims(&verifier, nonce).map(drop),
        None => id_token
            .claims(&verifier, |_: Option<&Nonce>| Ok(()))
            .map(drop),
    };
    checked.map_err(IdTokenError::Claims)?;
    // openidconnect checked signature, iss, aud, exp and nonce (not azp, at_hash nor iat:
    // [`checks`] does); read every claim.
    jwt::decode_payload(&id_token.to_string()).ok_or(IdTokenError::Unreadable)
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 section 2.3.1).
fn basic_auth(client_id: &str, secret: &str) -> String {
    use base64::Engine;
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!("{}:{}", encode(client_id), encode(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// The `exp` of a JWT access token, read without verification (only a timing hint: the
/// upstream verifies the token itself).
fn jwt_exp(access_token: &str) -> Option<u64> {
    jwt::decode_payload(access_token)?.get("exp")?.as_u64()
}
