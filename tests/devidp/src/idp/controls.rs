//! The provider's knobs and counters, in the spirit of mockoidc's `QueueCode`/`QueueError`:
//! tests (and the demo) change lifetimes, modes and faults while the provider runs, and read
//! back how often each endpoint was called. Everything here is thread-safe and takes `&self`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use super::grants::GrantStore;
use super::keys::KeyRing;

/// The form of the access tokens the token endpoint issues.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AccessTokenFormat {
    /// A random opaque string (the default).
    #[default]
    Opaque,
    /// An RS256 JWT with `exp`, `iat`, `iss`, `aud`, `sub`, `scope` and `client_id`; `aud` is
    /// the `resource` asked for (RFC 8707), else the client id.
    Jwt,
}

/// A fault the token endpoint answers with instead of doing its job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenFault {
    /// Answer this status with this body (JSON content type when the body starts with `{`).
    Status(u16, String),
    /// Never answer; the request ends only when the provider shuts down.
    Hang,
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Do the grant at once (a rotated refresh token is spent, a revocation that comes later
    /// does not stop it), and send the answer this long after.
    SlowAnswer(Duration),
    /// Answer 400 `{"error":"invalid_grant"}` (RFC 6749 §5.2).
    InvalidGrant,
    /// Close the connection without an answer (the grant is not done).
    Close,
}

/// A defect the provider builds into the ID tokens it issues (code and refresh grants), so
/// tests can check that the client rejects them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdTokenTamper {
    /// Signed with a key the JWKS never publishes (kid `dev-1`, so the signature is bad).
    ForeignKey,
    /// `aud` names another client.
    WrongAudience,
    /// `nonce` is not the one of the authorization request.
    WrongNonce,
    /// `exp` (and `iat`) an hour in the past.
    Expired,
    /// A `crit` header naming an extension (RFC 7515 section 4.1.11) nobody understands.
    CriticalHeader,
    /// `azp` (authorized party) names another client; `aud` is still the right one.
    AuthorizedPartyOther,
    /// `aud` lists the client and another audience, and there is no `azp`.
    TwoAudiencesNoAzp,
    /// `at_hash` is the hash of another access token.
    WrongAtHash,
    /// `iat` a week in the past, `exp` still an hour ahead.
    IssuedLongAgo,
}

/// The `iss` parameter of the authorization response (RFC 9207) the provider sends back
/// with the code (and with an error).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponseIss {
    /// The provider's issuer (the default).
    #[default]
    Correct,
    /// No `iss` parameter.
    Omit,
    /// Another provider's issuer (the mix-up attack).
    Wrong,
}

/// Which client authentication a token or revocation request used (RFC 6749 §2.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic with the form-urlencoded id and secret.
    SecretBasic,
    /// `client_id` and `client_secret` in the form body.
    SecretPost,
    /// Only `client_id` (a public client).
    None,
}

/// Signs an ID token's claims in place of the provider's own key (tests of several
/// providers: another provider's token on this provider's flow).
pub type IdTokenSigner = std::sync::Arc<dyn Fn(serde_json::Value) -> String + Send + Sync>;

#[derive(Default)]
struct SignerSlot(Mutex<Option<IdTokenSigner>>);

impl std::fmt::Debug for SignerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignerSlot")
    }
}

/// Knobs and counters of a running [`super::DevIdp`].
#[derive(Debug)]
pub struct Controls {
    settings: Mutex<Settings>,
    id_token_signer: SignerSlot,
    faults: Mutex<Faults>,
    records: Mutex<Records>,
    refresh_calls: AtomicUsize,
    code_calls: AtomicUsize,
    end_session_calls: AtomicUsize,
    authorize_calls: AtomicUsize,
    discovery_calls: AtomicUsize,
    jwks_calls: AtomicUsize,
    userinfo_calls: AtomicUsize,
    token_requests_with_resource: AtomicUsize,
    /// Milliseconds the provider's clock is ahead of the system clock ([`Controls::advance_clock`]).
    clock_offset_ms: AtomicU64,
    pub(crate) grants: GrantStore,
    pub(crate) keys: KeyRing,
}

/// A snapshot of the modes, taken once per request.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) access_ttl: Duration,
    pub(crate) rotation: bool,
    pub(crate) omit_expires_in: bool,
    pub(crate) access_token_format: AccessTokenFormat,
    pub(crate) issue_id_token_on_refresh: bool,
    pub(crate) refresh_returns_refresh_token: bool,
    pub(crate) discovery_unavailable: bool,
    pub(crate) jwks_unavailable: bool,
    /// Discovery's `scopes_supported`: `None` = the default list (with `offline_access`).
    pub(crate) scopes_supported: Option<Vec<String>>,
    pub(crate) auto_login: Option<String>,
    pub(crate) user_claims: HashMap<String, serde_json::Value>,
    pub(crate) id_token_tamper: Option<IdTokenTamper>,
    pub(crate) response_iss: ResponseIss,
    pub(crate) advertise_response_iss: bool,
    pub(crate) acr: Option<String>,
    pub(crate) authenticated_ago: Duration,
    pub(crate) acr_values_supported: Vec<String>,
}

#[derive(Debug, Default)]
struct Faults {
    queue: VecDeque<TokenFault>,
    sticky: Option<TokenFault>,
}

#[derive(Debug, Default)]
struct Records {
    revoked_tokens: Vec<String>,
    last_authorize_query: HashMap<String, Vec<String>>,
    last_token_request_form: HashMap<String, Vec<String>>,
    last_token_client_auth: Option<ClientAuth>,
    last_end_session_query: HashMap<String, Vec<String>>,
    last_issued_sid: Option<String>,
}

// === impl Controls ===

impl Controls {
    pub(crate) fn new(access_ttl: Duration, rotation: bool, keys: KeyRing) -> Self {
        let settings = Settings {
            access_ttl,
            rotation,
            omit_expires_in: false,
            access_token_format: AccessTokenFormat::Opaque,
            issue_id_token_on_refresh: true,
            refresh_returns_refresh_token: true,
            discovery_unavailable: false,
            jwks_unavailable: false,
            scopes_supported: None,
            auto_login: None,
            user_claims: HashMap::new(),
            id_token_tamper: None,
            response_iss: ResponseIss::Correct,
            advertise_response_iss: true,
            acr: None,
            authenticated_ago: Duration::ZERO,
            acr_values_supported: vec!["urn:devidp:pwd".into(), "urn:devidp:mfa".into()],
        };
        Self {
            settings: Mutex::new(settings),
            id_token_signer: SignerSlot::default(),
            faults: Mutex::default(),
            records: Mutex::default(),
            refresh_calls: AtomicUsize::new(0),
            code_calls: AtomicUsize::new(0),
            end_session_calls: AtomicUsize::new(0),
            authorize_calls: AtomicUsize::new(0),
            discovery_calls: AtomicUsize::new(0),
            jwks_calls: AtomicUsize::new(0),
            userinfo_calls: AtomicUsize::new(0),
            token_requests_with_resource: AtomicUsize::new(0),
            clock_offset_ms: AtomicU64::new(0),
            grants: GrantStore::default(),
            keys,
        }
    }

    // --- lifetimes and modes ---

    /// Move the provider's clock forward (mockoidc's `FastForward`): tokens issued from now on
    /// carry `iat`/`exp` of the moved time, and access tokens are judged by it. A test moves
    /// the gateway's clock by as much.
    pub fn advance_clock(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.clock_offset_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// Now, by the provider's clock.
    pub(crate) fn now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_millis(self.clock_offset_ms.load(Ordering::Relaxed))
    }

    /// Lifetime of access tokens issued from now on (`expires_in`, and `exp` of JWT ones).
    pub fn set_access_ttl(&self, ttl: Duration) {
        lock(&self.settings).access_ttl = ttl;
    }

    /// Refresh token rotation (Logto's default): on, every refresh returns a new refresh token
    /// and reusing an old one revokes the whole grant; off, the refresh token stays valid.
    pub fn set_rotation(&self, on: bool) {
        lock(&self.settings).rotation = on;
    }

    /// Token responses without `expires_in` (the client must fall back to the JWT `exp`).
    pub fn set_omit_expires_in(&self, omit: bool) {
        lock(&self.settings).omit_expires_in = omit;
    }

    /// Opaque (default) or JWT access tokens.
    pub fn set_access_token_format(&self, format: AccessTokenFormat) {
        lock(&self.settings).access_token_format = format;
    }

    /// Whether refresh responses carry a new ID token (default true).
    pub fn set_issue_id_token_on_refresh(&self, on: bool) {
        lock(&self.settings).issue_id_token_on_refresh = on;
    }

    /// Whether refresh responses carry a `refresh_token` (default true). False: the response
    /// has none and the presented refresh token stays valid, whatever the rotation mode.
    pub fn set_refresh_returns_refresh_token(&self, on: bool) {
        lock(&self.settings).refresh_returns_refresh_token = on;
    }

    /// Discovery answers 503 while set.
    pub fn set_discovery_unavailable(&self, unavailable: bool) {
        lock(&self.settings).discovery_unavailable = unavailable;
    }

    /// The JWKS document answers 503 while set.
    pub fn set_jwks_unavailable(&self, unavailable: bool) {
        lock(&self.settings).jwks_unavailable = unavailable;
    }

    /// `Some(scopes)`: discovery advertises these in `scopes_supported` (like a provider that
    /// does not know `offline_access`); `None` (default): the usual list.
    pub fn set_scopes_supported(&self, scopes: Option<Vec<String>>) {
        lock(&self.settings).scopes_supported = scopes;
    }

    /// `Some(signer)`: every ID token issued from now on is the signer's output for the claims
    /// the provider would have signed; `None` (default): the provider signs them.
    pub fn set_id_token_signer(&self, signer: Option<IdTokenSigner>) {
        *lock(&self.id_token_signer.0) = signer;
    }

    pub(crate) fn id_token_signer(&self) -> Option<IdTokenSigner> {
        lock(&self.id_token_signer.0).clone()
    }

    /// `Some(defect)`: every ID token issued from now on has it; `None` (default): sound ones.
    pub fn set_id_token_tamper(&self, tamper: Option<IdTokenTamper>) {
        lock(&self.settings).id_token_tamper = tamper;
    }

    /// What the authorization response says in its `iss` parameter (RFC 9207); default:
    /// the issuer.
    pub fn set_response_iss(&self, iss: ResponseIss) {
        lock(&self.settings).response_iss = iss;
    }

    /// Whether discovery advertises `authorization_response_iss_parameter_supported`
    /// (default true).
    pub fn set_advertise_response_iss(&self, on: bool) {
        lock(&self.settings).advertise_response_iss = on;
    }

    /// `Some(acr)`: the `acr` of every login from now on, whatever the client asked for (a
    /// provider that cannot meet a step-up). `None` (default): the first `acr_values` value
    /// the authorization request asked for, and no `acr` claim when it asked for none.
    pub fn set_acr(&self, acr: Option<String>) {
        lock(&self.settings).acr = acr;
    }

    /// The `auth_time` of logins from now on is this long before the login (a provider that
    /// reuses an earlier authentication, ignoring `max_age`). Default zero: the user
    /// authenticates at every authorization request.
    pub fn set_authenticated_ago(&self, ago: Duration) {
        lock(&self.settings).authenticated_ago = ago;
    }

    /// The discovery document's `acr_values_supported` (default `urn:devidp:pwd`,
    /// `urn:devidp:mfa`); empty: not listed.
    pub fn set_acr_values_supported(&self, values: Vec<String>) {
        lock(&self.settings).acr_values_supported = values;
    }

    // --- users ---

    /// `Some(user)`: `GET /authorize` skips the form and redirects at once with a code for
    /// `user`. `None` (default): show the login form.
    pub fn set_auto_login(&self, user: Option<String>) {
        lock(&self.settings).auto_login = user;
    }

    /// Claims merged over the defaults (`sub`, `email`, `preferred_username`, `groups`) of
    /// `user`'s ID tokens and userinfo; a JSON object, other values are ignored.
    pub fn set_user_claims(&self, user: impl Into<String>, claims: serde_json::Value) {
        lock(&self.settings).user_claims.insert(user.into(), claims);
    }

    // --- grants and keys ---

    /// Revokes every login of `user`: their refresh tokens get `invalid_grant`, their access
    /// tokens stop working at `/userinfo`.
    pub fn revoke_grants_of(&self, user: &str) {
        self.grants.revoke_user(user);
    }

    /// Publish and sign with the second embedded key only (before any client fetched the
    /// JWKS): this provider's keys are then not another default instance's.
    pub fn use_second_key_only(&self) {
        self.keys.use_second_key_only();
    }

    /// Signs with the second key (kid `dev-2`) from now on; the JWKS publishes both keys.
    pub fn rotate_signing_key(&self) {
        self.keys.rotate();
    }

    // --- faults ---

    /// Queue a fault for one token request (code or refresh); queued faults go first.
    pub fn push_token_fault(&self, fault: TokenFault) {
        lock(&self.faults).queue.push_back(fault);
    }

    /// A fault for every token request until cleared with `None`.
    pub fn set_token_fault(&self, fault: Option<TokenFault>) {
        lock(&self.faults).sticky = fault;
    }

    // --- counters and records ---

    /// Token requests with `grant_type=refresh_token` (faulted ones included).
    pub fn refresh_calls(&self) -> usize {
        self.refresh_calls.load(Ordering::SeqCst)
    }

    /// Token requests with `grant_type=authorization_code` (faulted ones included).
    pub fn code_calls(&self) -> usize {
        self.code_calls.load(Ordering::SeqCst)
    }

    /// Number of `POST /revoke` calls that named a token.
    pub fn revocations(&self) -> usize {
        lock(&self.records).revoked_tokens.len()
    }

    /// Every token sent to `POST /revoke`, in order.
    pub fn revoked_tokens(&self) -> Vec<String> {
        lock(&self.records).revoked_tokens.clone()
    }

    /// `GET /end_session` calls.
    pub fn end_session_calls(&self) -> usize {
        self.end_session_calls.load(Ordering::SeqCst)
    }

    /// Query of the last `GET /end_session` (`id_token_hint`, `post_logout_redirect_uri`, ...).
    pub fn last_end_session_query(&self) -> HashMap<String, Vec<String>> {
        lock(&self.records).last_end_session_query.clone()
    }

    /// The `sid` claim of the last ID token issued (one per login, kept across refreshes).
    pub fn last_issued_sid(&self) -> Option<String> {
        lock(&self.records).last_issued_sid.clone()
    }

    /// `GET /authorize` calls.
    pub fn authorize_calls(&self) -> usize {
        self.authorize_calls.load(Ordering::SeqCst)
    }

    /// `GET /.well-known/openid-configuration` calls (503 ones included).
    pub fn discovery_calls(&self) -> usize {
        self.discovery_calls.load(Ordering::SeqCst)
    }

    /// `GET /jwks` calls.
    pub fn jwks_calls(&self) -> usize {
        self.jwks_calls.load(Ordering::SeqCst)
    }

    /// `GET /userinfo` calls.
    pub fn userinfo_calls(&self) -> usize {
        self.userinfo_calls.load(Ordering::SeqCst)
    }

    /// Query of the last `GET /authorize` (PKCE, state, nonce, scope, resource, prompt...).
    pub fn last_authorize_query(&self) -> HashMap<String, Vec<String>> {
        lock(&self.records).last_authorize_query.clone()
    }

    /// Form of the last token request, without `client_id` and `client_secret`.
    pub fn last_token_request_form(&self) -> HashMap<String, Vec<String>> {
        lock(&self.records).last_token_request_form.clone()
    }

    /// How the last token request authenticated the client.
    pub fn last_token_client_auth(&self) -> Option<ClientAuth> {
        lock(&self.records).last_token_client_auth
    }

    /// Token requests that carried at least one `resource` parameter (RFC 8707).
    pub fn token_requests_with_resource(&self) -> usize {
        self.token_requests_with_resource.load(Ordering::SeqCst)
    }
}

/// Recording side, used by the endpoints.
impl Controls {
    pub(crate) fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    pub(crate) fn next_token_fault(&self) -> Option<TokenFault> {
        let mut faults = lock(&self.faults);
        faults.queue.pop_front().or_else(|| faults.sticky.clone())
    }

    pub(crate) fn record_authorize(&self, query: HashMap<String, Vec<String>>) {
        self.authorize_calls.fetch_add(1, Ordering::SeqCst);
        lock(&self.records).last_authorize_query = query;
    }

    pub(crate) fn record_token_request(&self, form: &HashMap<String, Vec<String>>) {
        match form
            .get("grant_type")
            .and_then(|v| v.first())
            .map(String::as_str)
        {
            Some("refresh_token") => self.refresh_calls.fetch_add(1, Ordering::SeqCst),
            Some("authorization_code") => self.code_calls.fetch_add(1, Ordering::SeqCst),
            _ => 0,
        };
        if form.contains_key("resource") {
            self.token_requests_with_resource
                .fetch_add(1, Ordering::SeqCst);
        }
        let mut form = form.clone();
        form.remove("client_id");
        form.remove("client_secret");
        lock(&self.records).last_token_request_form = form;
    }

    pub(crate) fn record_token_client_auth(&self, auth: ClientAuth) {
        lock(&self.records).last_token_client_auth = Some(auth);
    }

    pub(crate) fn record_revocation(&self, token: &str) {
        lock(&self.records).revoked_tokens.push(token.to_owned());
    }

    pub(crate) fn record_issued_sid(&self, sid: &str) {
        lock(&self.records).last_issued_sid = Some(sid.to_owned());
    }

    pub(crate) fn record_end_session(&self, query: HashMap<String, Vec<String>>) {
        self.end_session_calls.fetch_add(1, Ordering::SeqCst);
        lock(&self.records).last_end_session_query = query;
    }

    pub(crate) fn count_discovery(&self) {
        self.discovery_calls.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn count_jwks(&self) {
        self.jwks_calls.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn count_userinfo(&self) {
        self.userinfo_calls.fetch_add(1, Ordering::SeqCst);
    }
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data valid.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
