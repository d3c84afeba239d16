//! The OpenID provider, as the gateway sees it: discovery, keys, and the HTTP client.
//!
//! Discovery runs in the background at start and is retried with backoff until it succeeds
//! (`/readyz` says 503 meanwhile; public routes are served). The discovered provider lives
//! behind an `ArcSwap`, so readers never lock; a JWKS refetch (an ID token naming an unknown
//! `kid`: key rotation at the provider) swaps in a new one, at most once per
//! [`JWKS_REFETCH_INTERVAL`]. The HTTP client never follows redirects (SSRF) and has timeouts.

pub mod checks;
pub mod flows;
pub mod jwt;
pub mod probe;
pub mod providers;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod, CoreGrantType,
    CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType,
    CoreSubjectIdentifierType,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthType, ClientId, ClientSecret, DiscoveryError, EndSessionUrl,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, JsonWebKeySet, ProviderMetadata,
    RedirectUrl, RevocationUrl,
};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::clock::Clock;
use crate::config::{OidcConfig, ProviderId, TokenEndpointAuth};
use crate::error::{Chain, OidcSetupError};
use crate::logging::log_safe;

pub use openidconnect::reqwest::Client as HttpClient;
pub use providers::Providers;

/// The provider HTTP client's error.
pub type HttpError = openidconnect::HttpClientError<openidconnect::reqwest::Error>;

/// Least time between two JWKS refetches triggered by unknown key ids.
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(10);

/// Discovery fields openidconnect does not model on `ProviderMetadata` itself.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ExtraMetadata {
    pub revocation_endpoint: Option<RevocationUrl>,
    pub end_session_endpoint: Option<EndSessionUrl>,
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// RFC 9207 section 3: the provider puts `iss` in every authorization response.
    pub authorization_response_iss_parameter_supported: Option<bool>,
}
impl AdditionalProviderMetadata for ExtraMetadata {}

pub type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

pub type DiscoveredClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A discovered provider: metadata, keys and a configured client.
pub struct Provider {
    pub metadata: Metadata,
    pub client: DiscoveredClient,
    /// Asymmetric algorithms the provider advertises for ID tokens (RS256 when it lists none).
    pub algorithms: Vec<CoreJwsSigningAlgorithm>,
}

impl Provider {
    pub fn jwks(&self) -> &CoreJsonWebKeySet {
        self.metadata.jwks()
    }

    pub fn issuer(&self) -> &str {
        self.metadata.issuer().as_str()
    }

    pub fn revocation_endpoint(&self) -> Option<&RevocationUrl> {
        self.metadata
            .additional_metadata()
            .revocation_endpoint
            .as_ref()
    }

    /// Whether the provider advertises the authorization response's `iss` parameter (RFC
    /// 9207): then a response without one is refused.
    pub fn advertises_response_iss(&self) -> bool {
        self.metadata
            .additional_metadata()
            .authorization_response_iss_parameter_supported
            == Some(true)
    }

    /// RFC 9207: the `iss` values of an authorization response, judged against this
    /// provider (see [`checks::response_issuer`]).
    pub fn check_response_issuer(&self, iss: &[String]) -> Result<(), checks::ResponseIssuerError> {
        checks::response_issuer(self.issuer(), self.advertises_response_iss(), iss)
    }

    pub fn end_session_endpoint(&self) -> Option<&EndSessionUrl> {
        self.metadata
            .additional_metadata()
            .end_session_endpoint
            .as_ref()
    }
}

/// One discovery request that failed.
pub type DiscoveryAttemptError = DiscoveryError<HttpError>;

/// Discovery that did not work; print it with [`Chain`] (the useful part is in the causes).
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryFailed {
    #[error(transparent)]
    Attempt(DiscoveryAttemptError),
    /// The discovered issuer was not the configured one, and the other trailing-slash
    /// spelling failed too (its error is the source).
    #[error("{mismatch}; with a trailing slash")]
    BothSpellings {
        mismatch: String,
        #[source]
        with_slash: DiscoveryAttemptError,
    },
}

/// The gateway's handle on one provider.
pub struct Oidc {
    /// Which provider this is; `name` is its `[providers.NAME]` (`None`: `[oidc]`).
    pub id: ProviderId,
    pub name: Option<String>,
    pub cfg: OidcConfig,
    pub redirect_url: RedirectUrl,
    /// `post_logout_redirect_uri`, default `public_url + "/"`.
    pub post_logout_url: Url,
    /// `session.max_token_age`: expiry of a token that states none.
    pub max_token_age: Option<Duration>,
    http: HttpClient,
    /// Same client with the refresh timeout.
    refresh_http: HttpClient,
    current: ArcSwapOption<Provider>,
    /// What token expiries, ID-token checks and the JWKS refetch interval are judged by.
    clock: Clock,
    started: Instant,
    /// Milliseconds since `started` of the last JWKS fetch (0 = never refetched).
    last_jwks_fetch_ms: AtomicU64,
    /// Failed discovery attempts (the JWKS fetched with it included), for `/metrics`.
    discovery_failures: AtomicU64,
    /// Failed JWKS refetches, for `/metrics`.
    jwks_failures: AtomicU64,
}

impl Oidc {
    /// The default provider, `[oidc]`.
    pub fn new(
        cfg: &OidcConfig,
        public_url: &Url,
        max_token_age: Option<Duration>,
    ) -> Result<Self, OidcSetupError> {
        Self::named(ProviderId::DEFAULT, None, cfg, public_url, max_token_age)
    }

    /// Provider `id`: `[oidc]` (`name` `None`, callback `/oauth2/callback`) or
    /// `[providers.NAME]` (callback `/oauth2/callback/NAME`).
    pub fn named(
        id: ProviderId,
        name: Option<&str>,
        cfg: &OidcConfig,
        public_url: &Url,
        max_token_age: Option<Duration>,
    ) -> Result<Self, OidcSetupError> {
        let base = public_url.as_str().trim_end_matches('/');
        let callback = match name {
            Some(name) => format!("{base}/oauth2/callback/{name}"),
            None => format!("{base}/oauth2/callback"),
        };
        let redirect_url = RedirectUrl::new(callback).map_err(OidcSetupError::RedirectUri)?;
        let post_logout_url = match &cfg.post_logout_redirect_uri {
            Some(url) => url.clone(),
            None => Url::parse(&format!("{base}/")).map_err(OidcSetupError::PostLogoutUri)?,
        };
        Ok(Oidc {
            id,
            name: name.map(str::to_owned),
            cfg: cfg.clone(),
            redirect_url,
            post_logout_url,
            max_token_age,
            http: http_client(cfg.timeout)?,
            refresh_http: http_client(cfg.refresh_timeout)?,
            current: ArcSwapOption::empty(),
            clock: Clock::system(),
            started: Instant::now(),
            last_jwks_fetch_ms: AtomicU64::new(0),
            discovery_failures: AtomicU64::new(0),
            jwks_failures: AtomicU64::new(0),
        })
    }

    /// The same client, judging time by `clock` (see [`crate::clock`]).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// `default` for `[oidc]`, else the provider's name (logs and metrics labels).
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("default")
    }

    /// The discovered provider, or `None` while discovery has not yet succeeded.
    pub fn provider(&self) -> Option<Arc<Provider>> {
        self.current.load_full()
    }

    pub fn is_ready(&self) -> bool {
        self.current.load().is_some()
    }

    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    pub fn refresh_http(&self) -> &HttpClient {
        &self.refresh_http
    }

    /// Failed discovery attempts so far (each retry counts).
    pub fn discovery_failures(&self) -> u64 {
        self.discovery_failures.load(Ordering::Relaxed)
    }

    /// Failed JWKS refetches so far.
    pub fn jwks_failures(&self) -> u64 {
        self.jwks_failures.load(Ordering::Relaxed)
    }

    /// Discover until it works: 1 s backoff doubling up to 30 s.
    pub async fn discover_until_ready(self: Arc<Self>) {
        let mut delay = Duration::from_secs(1);
        loop {
            match self.discover().await {
                Ok(provider) => {
                    tracing::info!(
                        provider = self.label(),
                        issuer = %log_safe(provider.issuer()),
                        "OIDC discovery succeeded"
                    );
                    self.current.store(Some(Arc::new(provider)));
                    return;
                }
                Err(e) => {
                    self.discovery_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        provider = self.label(),
                        error = %log_safe(Chain(&e)),
                        retry_in = ?delay,
                        "OIDC discovery failed"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Take over what `previous` discovered (a reload that changed the client but not the
    /// issuer): the same provider metadata and keys, with this client's settings. `false`
    /// when `previous` has not discovered its provider yet.
    pub fn adopt_discovery(&self, previous: &Oidc) -> bool {
        let Some(provider) = previous.provider() else {
            return false;
        };
        self.current.store(Some(Arc::new(
            self.provider_from(provider.metadata.clone()),
        )));
        true
    }

    /// Use `provider`, found by [`Oidc::discover`] (a reload that changed the issuer).
    pub fn install(&self, provider: Provider) {
        self.current.store(Some(Arc::new(provider)));
    }

    /// One discovery attempt (also used by `authgate check --probe`).
    ///
    /// The discovered `issuer` must equal the configured one exactly (OpenID Discovery 4.3),
    /// and providers differ on a bare origin's trailing slash (Auth0 has one, Google none);
    /// the parsed URL cannot tell which the operator wrote, so on an issuer mismatch the
    /// other spelling is tried once.
    pub async fn discover(&self) -> Result<Provider, DiscoveryFailed> {
        let configured = self.cfg.issuer.as_str();
        let trimmed = configured.trim_end_matches('/');
        let first = self.discover_as(trimmed).await;
        let Err(DiscoveryError::Validation(mismatch)) = first else {
            return first.map_err(DiscoveryFailed::Attempt);
        };
        self.discover_as(&format!("{trimmed}/"))
            .await
            .map_err(|with_slash| DiscoveryFailed::BothSpellings {
                mismatch,
                with_slash,
            })
    }

    async fn discover_as(&self, issuer: &str) -> Result<Provider, DiscoveryAttemptError> {
        let issuer = IssuerUrl::new(issuer.to_owned()).map_err(DiscoveryError::UrlParse)?;
        let metadata = Metadata::discover_async(issuer, &self.http).await?;
        Ok(self.provider_from(metadata))
    }

    fn provider_from(&self, metadata: Metadata) -> Provider {
        let secret = self
            .cfg
            .client_secret
            .as_ref()
            .map(|s| ClientSecret::new(s.expose().clone()));
        let auth_type = match self.cfg.token_endpoint_auth {
            TokenEndpointAuth::ClientSecretBasic => AuthType::BasicAuth,
            TokenEndpointAuth::ClientSecretPost => AuthType::RequestBody,
        };
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(self.cfg.client_id.clone()),
            secret,
        )
        .set_redirect_uri(self.redirect_url.clone())
        .set_auth_type(auth_type);
        let mut algorithms: Vec<CoreJwsSigningAlgorithm> = metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .filter(|alg| !jwt::is_symmetric(alg))
            .cloned()
            .collect();
        if algorithms.is_empty() {
            algorithms.push(CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256);
        }
        Provider {
            metadata,
            client,
            algorithms,
        }
    }

    /// Refetch the provider's keys after a token named an unknown `kid`. Returns the new
    /// provider, or `None` when a refetch happened too recently or failed.
    pub async fn refetch_jwks(&self) -> Option<Arc<Provider>> {
        let since = self.clock.instant().saturating_duration_since(self.started);
        let now_ms = u64::try_from(since.as_millis()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.last_jwks_fetch_ms.load(Ordering::Relaxed);
        let interval = JWKS_REFETCH_INTERVAL.as_millis() as u64;
        if last != 0 && now_ms.saturating_sub(last) < interval {
            return None;
        }
        if self
            .last_jwks_fetch_ms
            .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return None; // another request is refetching right now
        }
        let current = self.provider()?;
        let jwks = JsonWebKeySet::fetch_async(current.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| {
                self.jwks_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %log_safe(error_chain(&e)), "JWKS refetch failed")
            })
            .ok()?;
        tracing::info!(keys = jwks.keys().len(), "refetched provider keys");
        let metadata = current.metadata.clone().set_jwks(jwks);
        let provider = Arc::new(self.provider_from(metadata));
        self.current.store(Some(provider.clone()));
        Some(provider)
    }

    /// Run `verify` against `provider`'s keys and, when it failed because the token names a
    /// key those keys lack (`unknown_key`), refetch the JWKS and run it once more against the
    /// new keys. Key rotation at the provider costs one fetch; a flood of tokens under
    /// made-up key ids costs at most one per [`JWKS_REFETCH_INTERVAL`] (see
    /// [`Oidc::refetch_jwks`]). Returns the provider whose keys were used, with the result.
    pub async fn with_key_refetch<T, E>(
        &self,
        provider: Arc<Provider>,
        verify: impl Fn(&Provider) -> Result<T, E>,
        unknown_key: impl FnOnce(&Provider, &E) -> bool,
    ) -> Result<(Arc<Provider>, T), E> {
        match verify(&provider) {
            Ok(verified) => Ok((provider, verified)),
            Err(e) if unknown_key(&provider, &e) => match self.refetch_jwks().await {
                Some(refetched) => {
                    let verified = verify(&refetched)?;
                    Ok((refetched, verified))
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// Verify a JWT that is not an ID token: the signature (an asymmetric algorithm the
    /// provider advertises, its keys, one JWKS refetch on an unknown `kid`, no `crit`), then
    /// the claims `expect` names, with [`jwt::LEEWAY_SECS`] of clock skew. Returns the claims.
    /// A logout token's single use is the caller's to check.
    pub async fn verify_jwt(
        &self,
        token: &str,
        expect: jwt::Expect<'_>,
    ) -> Result<jwt::Claims, jwt::JwtError> {
        let provider = self.provider().ok_or(jwt::JwtError::NotReady)?;
        let (provider, verified) = self
            .with_key_refetch(
                provider,
                |p| jwt::verify_signature(token, p.jwks(), &p.algorithms),
                |_, e| *e == jwt::JwtError::UnknownKey,
            )
            .await?;
        jwt::check_claims(
            &verified,
            expect,
            provider.issuer(),
            &self.cfg.client_id,
            self.clock.unix_now(),
        )?;
        Ok(verified.claims)
    }
}

fn http_client(timeout: Duration) -> Result<HttpClient, OidcSetupError> {
    HttpClient::builder()
        // Following redirects would open the client to SSRF.
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(OidcSetupError::HttpClient)
}

/// An error and its causes on one line (reqwest hides the useful part in `source()`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    Chain(e).to_string()
}
