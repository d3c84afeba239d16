//! The calls the gateway makes to its provider: authorize URL, code exchange, refresh,
//! revocation, end-session URL. Each returns plain data; no session logic here.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use openidconnect::core::{CoreErrorResponseType, CoreIdToken, CoreResponseType};
use openidconnect::reqwest::header;
use openidconnect::{
    AccessToken, AuthenticationFlow, AuthorizationCode, CsrfToken, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RefreshToken, RequestTokenError, Scope, TokenResponse,
};
use serde_json::{Map, Value};
use url::Url;

use super::{Oidc, Provider, error_chain, jwt};
use crate::config::TokenEndpointAuth;
use crate::session::unix_now;

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
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the provider is not available yet")]
    NotReady,
    #[error("code exchange failed: {0}")]
    Exchange(String),
    #[error("the provider returned no ID token")]
    NoIdToken,
    #[error("ID token rejected: {0}")]
    IdToken(String),
}

/// How a refresh failed: definitive (the session is over) or transient (try again later).
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("refresh rejected by the provider: {0}")]
    Rejected(String),
    #[error("refresh failed transiently: {0}")]
    Transient(String),
}

impl Oidc {
    /// Authorization-code request with PKCE S256, state, nonce, scopes, resources and extra
    /// parameters (contract Details 6: `prompt=consent` with `offline_access`).
    pub fn authorize(&self, provider: &Provider) -> AuthRequest {
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
        for (key, value) in &self.cfg.extra_auth_params {
            request = request.add_extra_param(key.clone(), value.clone());
        }
        let (url, state, nonce) = request.url();
        AuthRequest {
            url,
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        }
    }

    /// Exchange the authorization code and verify the ID token (signature, iss, aud, azp,
    /// exp, iat, nonce).
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
            .map_err(|e| LoginError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_owned()));
        for resource in &self.cfg.resource {
            request = request.add_extra_param("resource", resource.clone());
        }
        let response = request
            .request_async(self.http())
            .await
            .map_err(|e| LoginError::Exchange(error_chain(&e)))?;
        let id_token = response.id_token().ok_or(LoginError::NoIdToken)?;
        let expected = Nonce::new(nonce.to_owned());
        let claims = self
            .verify_id_token(id_token, Some(&expected))
            .await
            .map_err(LoginError::IdToken)?;
        Ok(self.token_set(
            response.access_token(),
            response.expires_in(),
            response.refresh_token(),
            Some((id_token, claims)),
        ))
    }

    /// Use a refresh token. `invalid_grant` (RFC 6749 section 5.2: revoked, expired, reused)
    /// is definitive; every other failure is transient (oauth2 drops the HTTP status, so a
    /// 5xx is `Parse`/`Other`/a non-`invalid_grant` code). `sub` must not change (OIDC Core
    /// 12.2).
    pub async fn refresh(&self, refresh_token: &str, sub: &str) -> Result<TokenSet, RefreshError> {
        let provider = self
            .provider()
            .ok_or_else(|| RefreshError::Transient("provider not discovered yet".into()))?;
        let token = RefreshToken::new(refresh_token.to_owned());
        let mut request = provider
            .client
            .exchange_refresh_token(&token)
            .map_err(|e| RefreshError::Transient(e.to_string()))?;
        for resource in &self.cfg.resource {
            request = request.add_extra_param("resource", resource.clone());
        }
        let response = match request.request_async(self.refresh_http()).await {
            Ok(response) => response,
            Err(RequestTokenError::ServerResponse(e))
                if *e.error() == CoreErrorResponseType::InvalidGrant =>
            {
                return Err(RefreshError::Rejected(e.to_string()));
            }
            Err(e) => return Err(RefreshError::Transient(error_chain(&e))),
        };
        let id = match response.id_token() {
            Some(id_token) => {
                let claims = self
                    .verify_id_token(id_token, None)
                    .await
                    .map_err(RefreshError::Transient)?;
                if claims.get("sub").and_then(Value::as_str) != Some(sub) {
                    return Err(RefreshError::Rejected(
                        "refreshed ID token names another subject".into(),
                    ));
                }
                Some((id_token, claims))
            }
            None => None,
        };
        Ok(self.token_set(
            response.access_token(),
            response.expires_in(),
            response.refresh_token(),
            id,
        ))
    }

    /// RFC 7009 revocation of a refresh token, when the provider has an endpoint. Best effort:
    /// sign-out goes on whatever the provider says.
    ///
    /// The request is built here rather than with oauth2's `revoke_token`, which refuses every
    /// endpoint that is not `https://` (a configuration error before any request is made). The
    /// gateway accepts an `http://` issuer everywhere else, and the token endpoint already
    /// carries this very refresh token over it, so with such an issuer sign-out silently revoked
    /// nothing although the provider advertised a revocation endpoint (contract Details 13).
    /// Client authentication follows `token_endpoint_auth` as for the token endpoint (Details 20).
    pub async fn revoke(&self, refresh_token: &str) {
        let Some(provider) = self.provider() else {
            return;
        };
        let Some(url) = provider.revocation_endpoint() else {
            return;
        };
        let mut pairs = vec![
            ("token", refresh_token),
            ("token_type_hint", "refresh_token"),
        ];
        let mut request = self.http().post(url.url().clone());
        match (&self.cfg.client_secret, self.cfg.token_endpoint_auth) {
            (Some(secret), TokenEndpointAuth::ClientSecretBasic) => {
                // RFC 6749 section 2.3.1: id and secret form-urlencoded, then base64.
                let credentials = format!(
                    "{}:{}",
                    form_encode(&self.cfg.client_id),
                    form_encode(secret.expose())
                );
                let value = format!("Basic {}", STANDARD.encode(credentials));
                request = request.header(header::AUTHORIZATION, value);
            }
            (Some(secret), TokenEndpointAuth::ClientSecretPost) => {
                pairs.push(("client_id", &self.cfg.client_id));
                pairs.push(("client_secret", secret.expose()));
            }
            (None, _) => pairs.push(("client_id", &self.cfg.client_id)),
        }
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        let result = request
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await;
        match result {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                tracing::warn!(status = %response.status(), "refresh token revocation refused");
            }
            Err(e) => tracing::warn!(error = %error_chain(&e), "refresh token revocation failed"),
        }
    }

    /// RP-initiated logout URL (contract Details 13), when the provider has an end-session
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

    /// Verify an ID token; on an unknown key id, refetch the JWKS once and try again.
    async fn verify_id_token(
        &self,
        id_token: &CoreIdToken,
        nonce: Option<&Nonce>,
    ) -> Result<Map<String, Value>, String> {
        let provider = self.provider().ok_or("provider not discovered")?;
        match verify_with(&provider, id_token, nonce) {
            Ok(claims) => Ok(claims),
            Err(first) => {
                let raw = id_token.to_string();
                let unknown_kid =
                    jwt::header_kid(&raw).is_some_and(|kid| {
                        !provider.jwks().keys().iter().any(|k| {
                            openidconnect::JsonWebKey::key_id(k).is_some_and(|id| **id == kid)
                        })
                    });
                if !unknown_kid {
                    return Err(first);
                }
                let provider = self.refetch_jwks().await.ok_or(first)?;
                verify_with(&provider, id_token, nonce)
            }
        }
    }

    fn token_set(
        &self,
        access_token: &AccessToken,
        expires_in: Option<std::time::Duration>,
        refresh_token: Option<&RefreshToken>,
        id: Option<(&CoreIdToken, Map<String, Value>)>,
    ) -> TokenSet {
        let now = unix_now();
        let access = access_token.secret().clone();
        let access_expires_at = expires_in
            .map(|d| now.saturating_add(d.as_secs()))
            .or_else(|| jwt_exp(&access))
            .or_else(|| {
                self.max_token_age
                    .map(|age| now.saturating_add(age.as_secs()))
            });
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
        }
    }
}

/// `nonce`: the one sent at login; `None` for a refreshed ID token, which carries none
/// (OIDC Core 12.2).
fn verify_with(
    provider: &Provider,
    id_token: &CoreIdToken,
    nonce: Option<&Nonce>,
) -> Result<Map<String, Value>, String> {
    let verifier = provider
        .client
        .id_token_verifier()
        .set_allowed_algs(provider.algorithms.clone());
    let checked = match nonce {
        Some(nonce) => id_token.claims(&verifier, nonce).map(drop),
        None => id_token
            .claims(&verifier, |_: Option<&Nonce>| Ok(()))
            .map(drop),
    };
    checked.map_err(|e| e.to_string())?;
    // openidconnect checked signature, iss, aud, azp, exp, iat, nonce; read every claim.
    jwt::decode_payload(&id_token.to_string()).ok_or_else(|| "unreadable claims".to_owned())
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The `exp` of a JWT access token, read without verification (only a timing hint: the
/// upstream verifies the token itself).
fn jwt_exp(access_token: &str) -> Option<u64> {
    jwt::decode_payload(access_token)?.get("exp")?.as_u64()
}
