//! Pending logins: what the gateway needs between `/oauth2/start` and the callback.
//!
//! The browser keeps them, sealed, in its own login cookies; the gateway keeps nothing when
//! a login starts. So no flood of `/oauth2/start` can evict, refuse or outnumber another
//! browser's login, nor fill memory or Redis, and the callback may land on any replica.
//!
//! - One cookie per login, `<cookie_name>_login_<tag>`, `tag` a hash of the login's `state`
//!   (several tabs log in at once, also when they start together). Its value is the state,
//!   the nonce, the PKCE verifier and the landing path, sealed with AES-256-GCM under keys
//!   derived from `session.cookie_secrets` for this purpose only (the first secret seals,
//!   every one opens), with the login's deadline (`login_timeout` after the start)
//!   authenticated beside it.
//! - Per browser at most [`MAX_PER_BROWSER`] of them, [`MAX_BYTES_PER_BROWSER`] bytes in
//!   all: `/oauth2/start` clears the oldest ones to make room, and dead ones (expired, or
//!   sealed with a secret no longer configured) as it sees them. A landing path is at most
//!   2048 bytes (`redirect`), so one login always fits.
//! - `Path=<public_url path>/oauth2/`, `HttpOnly`, `SameSite=Lax` whatever the session cookie
//!   says (the provider's redirect back is a cross-site top-level navigation), `Secure` and
//!   `Domain` as the session cookie's: it is sent to the gateway's login endpoints only,
//!   never to the app.
//! - The callback opens only the cookie named for its `state` and compares the sealed state
//!   with it (constant time): a callback replayed from another browser finds nothing, and
//!   nothing is consumed. The matched cookie is cleared once used.
//! - Single use: after a successful code redemption the state is remembered as used until it
//!   would have expired anyway, with a single-use marker of the session store
//!   ([`SessionStore::claim_once`]; memory: a bounded LRU cache, `max_pending_logins` used
//!   states beside the logout tokens' markers; Redis: `SET NX PX`, so every replica agrees),
//!   and a replay carrying the old cookie is refused. Only completed logins are recorded, so
//!   an anonymous flood cannot grow it.

pub mod preserve;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::digest::CtOutput;
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use url::Url;

use crate::clock::Clock;
use crate::config::{SameSite, SessionConfig};
use crate::cookie::{self, Sealed};
use crate::headers::cookie_pairs;
use crate::redirect::SafeRedirect;
use crate::session::{Marker, SessionStore, Store, StoreError};

/// Login cookies one browser holds at most.
pub const MAX_PER_BROWSER: usize = 4;
/// Bytes (names and values) of one browser's login cookies at most: with the session cookie
/// and the app's own, a request stays under the 8 KB header line many proxies allow.
pub const MAX_BYTES_PER_BROWSER: usize = 4096;
/// Login cookies looked at in one request (a browser never sends more than a few).
const MAX_SCANNED: usize = 16;
/// Characters of the tag that ends a login cookie's name.
const TAG_LEN: usize = 12;
/// Associated data of every sealed login: a login seal opens as nothing else. v2 holds the
/// provider the login was started at; v1 (before several providers) opens as `[oidc]`'s.
const CONTEXT: &[u8] = b"authgate login cookie v2";
const CONTEXT_V1: &[u8] = b"authgate login cookie v1";
const TAG_CONTEXT: &[u8] = b"authgate login cookie name v1\0";
/// Context of a used state's single-use marker: no other marker has this id.
const USED_CONTEXT: &[u8] = b"authgate used login state v1\0";

/// What the callback needs to finish a login.
pub struct PendingLogin {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub landing: SafeRedirect,
    /// The `[providers.NAME]` the login was started at (`None`: `[oidc]`): only that
    /// provider's callback may finish it.
    pub provider: Option<String>,
}

pub struct Logins {
    sealed: Sealed,
    /// Opens login cookies sealed before the provider was part of them.
    sealed_v1: Sealed,
    /// Where used states are marked.
    store: Arc<Store>,
    /// `<cookie_name>_login`: the binding cookie of earlier versions, and the prefix of ours.
    legacy_name: String,
    /// `<cookie_name>_login_`.
    prefix: String,
    attributes: String,
    lifetime: Duration,
    max_age_secs: u64,
    public_url: Url,
    /// `server.allowed_redirect_hosts`: the landing URL may be on one of them.
    redirect_hosts: Vec<String>,
    clock: Clock,
}

/// A login cookie found in a request that the gateway could open.
struct Live<'h> {
    state: String,
    name: &'h str,
    bytes: usize,
    /// When its login started (Unix milliseconds).
    started: u64,
}

impl Logins {
    pub fn new(cfg: &SessionConfig, public_url: &Url, store: Arc<Store>, clock: Clock) -> Self {
        let legacy_name = format!("{}_login", cfg.cookie_name);
        Logins {
            sealed: Sealed::login_cookies(&cfg.cookie_secrets, CONTEXT),
            sealed_v1: Sealed::login_cookies(&cfg.cookie_secrets, CONTEXT_V1),
            store,
            prefix: format!("{legacy_name}_"),
            legacy_name,
            attributes: attributes(cfg, public_url),
            lifetime: cfg.login_timeout,
            max_age_secs: cfg.login_timeout.as_secs().max(60),
            public_url: public_url.clone(),
            redirect_hosts: Vec::new(),
            clock,
        }
    }

    /// Landing URLs may also be absolute URLs on these hosts (`server.allowed_redirect_hosts`).
    pub fn with_redirect_hosts(mut self, hosts: &[String]) -> Self {
        self.redirect_hosts = hosts.to_vec();
        self
    }

    /// Whether a cookie of this name is one of ours (never forwarded upstream).
    pub fn is_login_cookie(&self, name: &str) -> bool {
        name == self.legacy_name || name.starts_with(&self.prefix)
    }

    /// `Set-Cookie` headers that start `login` in this browser: its sealed cookie, after the
    /// removal of the oldest and dead login cookies the browser sent. `None` when it cannot be
    /// sealed (no usable secret; validation prevents it).
    pub fn begin(&self, headers: &HeaderMap, login: &PendingLogin) -> Option<Vec<HeaderValue>> {
        self.begin_dropping(headers, login).map(|(set, _)| set)
    }

    /// [`Logins::begin`], and the states of the live logins it dropped to make room (their
    /// kept form posts go with them).
    pub fn begin_dropping(
        &self,
        headers: &HeaderMap,
        login: &PendingLogin,
    ) -> Option<(Vec<HeaderValue>, Vec<String>)> {
        let name = self.name_for(&login.state);
        let value = self.seal(login)?;
        let new_bytes = name.len() + value.len();
        let mut set = Vec::new();
        let mut live = Vec::new();
        for (found, cookie) in self.login_cookies(headers) {
            if found == name {
                continue; // replaced below
            }
            match self.open(cookie) {
                Some((pending, started)) => live.push(Live {
                    state: pending.state,
                    name: found,
                    bytes: found.len() + cookie.len(),
                    started,
                }),
                None => set.extend(self.clear(found)),
            }
        }
        // Oldest first out, until the new one fits.
        live.sort_by_key(|l| std::cmp::Reverse(l.started));
        let mut bytes: usize = live.iter().map(|l| l.bytes).sum();
        let mut dropped = Vec::new();
        while live.len() >= MAX_PER_BROWSER || bytes + new_bytes > MAX_BYTES_PER_BROWSER {
            let Some(oldest) = live.pop() else { break };
            bytes -= oldest.bytes;
            set.extend(self.clear(oldest.name));
            dropped.push(oldest.state);
        }
        set.push(cookie::set_cookie(
            &name,
            &value,
            self.max_age_secs,
            &self.attributes,
        )?);
        Some((set, dropped))
    }

    /// The pending login this browser started with `state`, if any: the cookie named for it,
    /// opened, live, and sealing exactly this state. Reads only; nothing is consumed.
    pub fn find(&self, headers: &HeaderMap, state: &str) -> Option<PendingLogin> {
        let name = self.name_for(state);
        self.login_cookies(headers)
            .filter(|(found, _)| *found == name)
            .filter_map(|(_, value)| self.open(value))
            .map(|(login, _)| login)
            .find(|login| same_secret(&login.state, state))
    }

    /// `Set-Cookie` that clears the login cookie of `state` (once the callback used it).
    pub fn clear_for(&self, state: &str) -> Option<HeaderValue> {
        self.clear(&self.name_for(state))
    }

    /// Whether a login with this state was already completed (a replayed callback).
    pub async fn was_used(&self, state: &str) -> Result<bool, StoreError> {
        self.store.is_claimed(&used_marker(state)).await
    }

    /// Remember `state` as used until its login would have expired anyway. `false` when it
    /// already was (a replay that raced the first use).
    pub async fn mark_used(&self, state: &str) -> Result<bool, StoreError> {
        (self.store)
            .claim_once(&used_marker(state), self.lifetime)
            .await
    }

    /// The login cookies of a request, by name and value (the first [`MAX_SCANNED`]): names
    /// of the form we set; anything else is not ours to read or clear.
    fn login_cookies<'h>(
        &self,
        headers: &'h HeaderMap,
    ) -> impl Iterator<Item = (&'h str, &'h str)> {
        cookie_pairs(headers)
            .filter(|(name, _)| {
                name.strip_prefix(self.prefix.as_bytes())
                    .is_some_and(|tag| {
                        tag.len() == TAG_LEN
                            && tag
                                .iter()
                                .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
                    })
            })
            .filter_map(|(name, value)| {
                Some((
                    std::str::from_utf8(name).ok()?,
                    std::str::from_utf8(value).ok()?,
                ))
            })
            .take(MAX_SCANNED)
    }

    /// `<cookie_name>_login_<12 base64url characters of a hash of the state>`.
    fn name_for(&self, state: &str) -> String {
        let digest = Sha256::new()
            .chain_update(TAG_CONTEXT)
            .chain_update(state.as_bytes())
            .finalize();
        let tag = URL_SAFE_NO_PAD.encode(digest.get(..TAG_LEN * 3 / 4).unwrap_or_default());
        format!("{}{tag}", self.prefix)
    }

    fn seal(&self, login: &PendingLogin) -> Option<String> {
        let plain = encode(login, self.clock.unix_millis())?;
        let deadline = (self.clock.unix_now()).saturating_add(self.lifetime.as_secs().max(1));
        self.sealed.seal(deadline, &plain)
    }

    /// The login in a cookie value and when it started (Unix milliseconds), when it opens
    /// and has not expired.
    fn open(&self, value: &str) -> Option<(PendingLogin, u64)> {
        if value.len() > MAX_BYTES_PER_BROWSER {
            return None;
        }
        let (plain, deadline, current) = match self.sealed.open(value) {
            Some((plain, deadline)) => (plain, deadline, true),
            None => {
                let (plain, deadline) = self.sealed_v1.open(value)?;
                (plain, deadline, false)
            }
        };
        if deadline <= self.clock.unix_now() {
            return None;
        }
        match current {
            true => decode(&plain, &self.public_url, &self.redirect_hosts),
            false => decode_v1(&plain, &self.public_url, &self.redirect_hosts),
        }
    }

    fn clear(&self, name: &str) -> Option<HeaderValue> {
        cookie::clear_cookie(name, &self.attributes)
    }
}

/// `; Path=<public_url path>/oauth2/; HttpOnly; SameSite=Lax[; Secure][; Domain=..]`: Lax
/// whatever the session cookie says (see the module doc).
fn attributes(cfg: &SessionConfig, public_url: &Url) -> String {
    let base = public_url.path().trim_end_matches('/');
    // A path that cannot be an attribute value falls back to the whole site.
    let path = if base.bytes().all(|b| b.is_ascii_graphic() && b != b';') {
        format!("{base}/oauth2/")
    } else {
        "/".to_owned()
    };
    cookie::attributes(cfg, &path, SameSite::Lax)
}

/// Equality of two secrets in time independent of where they differ (hashed first, so of
/// their lengths too).
fn same_secret(a: &str, b: &str) -> bool {
    CtOutput::<Sha256>::new(Sha256::digest(a.as_bytes()))
        == CtOutput::<Sha256>::new(Sha256::digest(b.as_bytes()))
}

/// The single-use marker of a used `state`.
fn used_marker(state: &str) -> Marker {
    let id = Sha256::new()
        .chain_update(USED_CONTEXT)
        .chain_update(state.as_bytes())
        .finalize();
    Marker {
        kind: "used",
        id: id.into(),
    }
}

/// `[started: u64 BE][len][state][len][nonce][len][verifier][len][provider][landing]`
/// (provider empty for `[oidc]`): short, so that the cookie is.
fn encode(login: &PendingLogin, started: u64) -> Option<Vec<u8>> {
    let landing = login.landing.as_str();
    let provider = login.provider.as_deref().unwrap_or_default();
    let mut out = Vec::with_capacity(
        12 + login.state.len()
            + login.nonce.len()
            + login.pkce_verifier.len()
            + provider.len()
            + landing.len(),
    );
    out.extend_from_slice(&started.to_be_bytes());
    for field in [&login.state, &login.nonce, &login.pkce_verifier, provider] {
        out.push(u8::try_from(field.len()).ok()?);
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(landing.as_bytes());
    Some(out)
}

/// The landing path is parsed again (a fixed point of `SafeRedirect::parse`), so even a
/// sealed value can never carry an off-origin redirect.
pub(crate) fn decode(
    bytes: &[u8],
    public_url: &Url,
    hosts: &[String],
) -> Option<(PendingLogin, u64)> {
    decode_fields(bytes, public_url, hosts, true)
}

/// A login sealed before the provider was part of it: `[oidc]`'s.
fn decode_v1(bytes: &[u8], public_url: &Url, hosts: &[String]) -> Option<(PendingLogin, u64)> {
    decode_fields(bytes, public_url, hosts, false)
}

fn decode_fields(
    bytes: &[u8],
    public_url: &Url,
    hosts: &[String],
    with_provider: bool,
) -> Option<(PendingLogin, u64)> {
    let (started, mut bytes) = bytes.split_first_chunk::<8>()?;
    let mut field = || {
        let (len, rest) = bytes.split_first()?;
        let (value, rest) = rest.split_at_checked(usize::from(*len))?;
        bytes = rest;
        String::from_utf8(value.to_vec()).ok()
    };
    let (state, nonce, pkce_verifier) = (field()?, field()?, field()?);
    let provider = match with_provider {
        true => Some(field()?).filter(|p| !p.is_empty()),
        false => None,
    };
    let landing = std::str::from_utf8(bytes).ok()?;
    let login = PendingLogin {
        state,
        nonce,
        pkce_verifier,
        landing: SafeRedirect::parse_allowing(landing, public_url, hosts),
        provider,
    };
    Some((login, u64::from_be_bytes(*started)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::secret::Secret;
    use http::header::COOKIE;

    fn cfg(secrets: &[u8]) -> SessionConfig {
        SessionConfig {
            cookie_name: "ag".into(),
            cookie_secrets: secrets.iter().map(|s| Secret::new(vec![*s; 32])).collect(),
            cookie_secure: true,
            cookie_samesite: SameSite::Strict,
            cookie_domain: None,
            idle_timeout: Duration::from_secs(3600),
            absolute_timeout: Duration::from_secs(86400),
            max_sessions: 100,
            refresh_before_expiry: Duration::from_secs(60),
            max_token_age: None,
            store: StoreConfig::Memory,
            snapshot_file: None,
            login_timeout: Duration::from_secs(600),
            max_pending_logins: 100,
            preserve_form_posts: true,
            max_preserved_body: 65_536,
        }
    }

    fn logins(secrets: &[u8]) -> Logins {
        let public: Url = "https://gw.test".parse().unwrap();
        let store = Store::Memory(crate::session::memory::MemoryStore::new(
            10,
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        Logins::new(&cfg(secrets), &public, Arc::new(store), Clock::system())
    }

    fn login(state: &str, landing: &str) -> PendingLogin {
        let public: Url = "https://gw.test".parse().unwrap();
        PendingLogin {
            state: state.into(),
            nonce: format!("nonce-{state}"),
            pkce_verifier: format!("verifier-{state}"),
            landing: SafeRedirect::parse(landing, &public),
            provider: None,
        }
    }

    /// The request a browser sends after these `Set-Cookie`s (a tiny cookie jar).
    fn jar(jar: &mut Vec<(String, String)>, set: &[HeaderValue]) -> HeaderMap {
        for line in set {
            let line = line.to_str().unwrap();
            let (pair, attrs) = line.split_once(';').unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            jar.retain(|(n, _)| n != name);
            if !attrs.contains("Max-Age=0") {
                jar.push((name.into(), value.into()));
            }
        }
        let mut headers = HeaderMap::new();
        let cookie = jar
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        headers.insert(COOKIE, HeaderValue::from_str(&cookie).unwrap());
        headers
    }

    #[test]
    fn a_login_round_trips_through_its_cookie() {
        let l = logins(&[1]);
        let mut cookies = Vec::new();
        let set = l
            .begin(&HeaderMap::new(), &login("s1", "/after?x=1"))
            .unwrap();
        assert_eq!(set.len(), 1);
        let line = set[0].to_str().unwrap();
        assert!(
            line.ends_with("; Max-Age=600; Path=/oauth2/; HttpOnly; SameSite=Lax; Secure"),
            "{line}"
        );
        assert!(
            !line.contains("verifier-s1") && !line.contains("after"),
            "{line}"
        );
        let headers = jar(&mut cookies, &set);
        let found = l.find(&headers, "s1").unwrap();
        assert_eq!(
            (found.nonce.as_str(), found.pkce_verifier.as_str()),
            ("nonce-s1", "verifier-s1")
        );
        assert_eq!(found.landing.as_str(), "/after?x=1");
        assert!(l.find(&headers, "s2").is_none(), "another state");
        assert!(l.find(&HeaderMap::new(), "s1").is_none(), "another browser");
        assert!(
            l.clear_for("s1")
                .unwrap()
                .to_str()
                .unwrap()
                .contains("Max-Age=0; Path=/oauth2/"),
        );
    }

    #[test]
    fn secrets_rotate_and_other_keys_do_not_open() {
        let old = logins(&[1]);
        let mut cookies = Vec::new();
        let headers = jar(
            &mut cookies,
            &old.begin(&HeaderMap::new(), &login("s", "/")).unwrap(),
        );
        assert!(
            logins(&[2, 1]).find(&headers, "s").is_some(),
            "old secret still opens"
        );
        assert!(logins(&[2]).find(&headers, "s").is_none(), "removed secret");
    }

    #[test]
    fn a_cookie_moved_to_another_state_name_does_not_match() {
        let l = logins(&[1]);
        let set = l.begin(&HeaderMap::new(), &login("victim", "/")).unwrap();
        let value = set[0].to_str().unwrap().split(';').next().unwrap();
        let value = value.split_once('=').unwrap().1;
        // The attacker's state, the victim's sealed login under the attacker's cookie name.
        let mut headers = HeaderMap::new();
        let forged = format!("{}={value}", l.name_for("attacker"));
        headers.insert(COOKIE, HeaderValue::from_str(&forged).unwrap());
        assert!(l.find(&headers, "attacker").is_none());
    }

    #[test]
    fn oldest_logins_make_room_per_browser() {
        let l = logins(&[1]);
        let mut cookies = Vec::new();
        let mut headers = HeaderMap::new();
        for i in 0..MAX_PER_BROWSER + 2 {
            let set = l.begin(&headers, &login(&format!("s{i}"), "/")).unwrap();
            headers = jar(&mut cookies, &set);
            std::thread::sleep(Duration::from_millis(2)); // distinct start times
        }
        assert_eq!(cookies.len(), MAX_PER_BROWSER);
        assert!(l.find(&headers, "s0").is_none() && l.find(&headers, "s1").is_none());
        for i in 2..MAX_PER_BROWSER + 2 {
            assert!(l.find(&headers, &format!("s{i}")).is_some(), "s{i}");
        }
    }

    #[test]
    fn long_landings_are_bounded_in_bytes() {
        let l = logins(&[1]);
        let mut cookies = Vec::new();
        let mut headers = HeaderMap::new();
        let long = format!("/{}", "a".repeat(2000));
        for i in 0..3 {
            let set = l.begin(&headers, &login(&format!("s{i}"), &long)).unwrap();
            headers = jar(&mut cookies, &set);
            let total: usize = cookies.iter().map(|(n, v)| n.len() + v.len()).sum();
            assert!(total <= MAX_BYTES_PER_BROWSER, "{total}");
        }
        assert!(l.find(&headers, "s2").is_some(), "the newest is kept");
    }

    #[test]
    fn dead_and_garbage_cookies_are_cleared_at_start() {
        let l = logins(&[1]);
        let mut headers = HeaderMap::new();
        let sealed_by_other = logins(&[9]).seal(&login("x", "/")).unwrap();
        let cookie = format!(
            "ag_login_junk12345678=%%%; ag_login_old456789012={sealed_by_other}; ag_session=1; \
             ag_login_other=x"
        );
        headers.insert(COOKIE, HeaderValue::from_str(&cookie).unwrap());
        let set = l.begin(&headers, &login("s", "/")).unwrap();
        let lines: Vec<&str> = set.iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(lines[0].starts_with("ag_login_junk12345678=; Max-Age=0"));
        assert!(lines[1].starts_with("ag_login_old456789012=; Max-Age=0"));
    }

    /// The provider a login was started at is sealed with it; a cookie sealed before
    /// providers were part of it opens as `[oidc]`'s.
    #[test]
    fn the_provider_is_sealed_with_the_login() {
        let l = logins(&[1]);
        let mut cookies = Vec::new();
        let mut partner = login("s", "/p");
        partner.provider = Some("partners".into());
        let headers = jar(&mut cookies, &l.begin(&HeaderMap::new(), &partner).unwrap());
        let found = l.find(&headers, "s").unwrap();
        assert_eq!(found.provider.as_deref(), Some("partners"));
        let headers = jar(
            &mut Vec::new(),
            &l.begin(&HeaderMap::new(), &login("d", "/")).unwrap(),
        );
        assert_eq!(l.find(&headers, "d").unwrap().provider, None);
        // v1: `[started][state][nonce][verifier][landing]` under the v1 context.
        let mut plain = 1u64.to_be_bytes().to_vec();
        for field in ["old", "n", "v"] {
            plain.push(field.len() as u8);
            plain.extend_from_slice(field.as_bytes());
        }
        plain.extend_from_slice(b"/landing");
        let deadline = l.clock.unix_now() + 60;
        let value = l.sealed_v1.seal(deadline, &plain).unwrap();
        let mut headers = HeaderMap::new();
        let cookie = format!("{}={value}", l.name_for("old"));
        headers.insert(COOKIE, HeaderValue::from_str(&cookie).unwrap());
        let old = l.find(&headers, "old").unwrap();
        assert_eq!((old.provider, old.landing.as_str()), (None, "/landing"));
    }

    #[test]
    fn login_cookie_names() {
        let l = logins(&[1]);
        assert!(l.is_login_cookie("ag_login"));
        assert!(l.is_login_cookie(&l.name_for("s")));
        assert!(!l.is_login_cookie("ag"));
        assert!(!l.is_login_cookie("ag_loginx"));
        assert_eq!(l.name_for("s").len(), "ag_login_".len() + 12);
    }

    #[test]
    fn domain_and_base_path_follow_the_configuration() {
        let mut c = cfg(&[1]);
        c.cookie_domain = Some(".example.test".into());
        c.cookie_secure = false;
        let public: Url = "https://gw.test/base".parse().unwrap();
        assert_eq!(
            attributes(&c, &public),
            "; Path=/base/oauth2/; HttpOnly; SameSite=Lax; Domain=.example.test"
        );
    }

    #[test]
    fn used_states_are_single_use() {
        let l = logins(&[1]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(!l.was_used("s").await.unwrap());
            assert!(l.mark_used("s").await.unwrap());
            assert!(l.was_used("s").await.unwrap());
            assert!(!l.mark_used("s").await.unwrap(), "second use");
            assert!(!l.was_used("t").await.unwrap());
        });
    }
}
