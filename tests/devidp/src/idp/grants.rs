//! The provider's memory: one *grant* per login (user, session id, scope, resources), the
//! authorization codes, refresh tokens and access tokens issued under it. Revoking a grant
//! invalidates every token of that login, which is what Logto does when a rotated refresh
//! token is replayed (RFC 9700 §4.14.2) and what RFC 6749 §4.1.2 suggests for a replayed code.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::controls::lock;

/// How long an authorization code may wait for its exchange (RFC 6749 §4.1.2: short).
const CODE_TTL: Duration = Duration::from_secs(600);

/// What the token endpoint needs to know about the login a token belongs to.
#[derive(Clone, Debug)]
pub(crate) struct GrantView {
    pub(crate) id: u64,
    pub(crate) user: String,
    pub(crate) sid: String,
    pub(crate) scope: String,
    pub(crate) resources: Vec<String>,
    /// Set only when the grant was just redeemed from a code.
    pub(crate) nonce: Option<String>,
    /// The `acr` of the login, if any.
    pub(crate) acr: Option<String>,
    /// When the user authenticated (Unix seconds, the provider's clock).
    pub(crate) auth_time: u64,
}

/// A login request the user completed, waiting to become a code.
#[derive(Clone, Debug)]
pub(crate) struct LoginRequest {
    pub(crate) user: String,
    pub(crate) scope: String,
    pub(crate) resources: Vec<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) redirect_uri: String,
    pub(crate) code_challenge: String,
    pub(crate) acr: Option<String>,
    pub(crate) auth_time: u64,
}

/// What a refresh does with the refresh token it was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefreshPolicy {
    /// Rotation: the old token is spent, a new one is returned.
    Rotate,
    /// No rotation: the same token is returned and stays valid.
    Keep,
    /// No `refresh_token` in the response; the old one stays valid.
    Omit,
}

/// Why a code or refresh token was refused: always `invalid_grant` (RFC 6749 §5.2).
#[derive(Debug)]
pub(crate) struct InvalidGrant(pub(crate) &'static str);

#[derive(Debug, Default)]
pub(crate) struct GrantStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    grants: HashMap<u64, Grant>,
    codes: HashMap<String, Code>,
    refresh: HashMap<String, Refresh>,
    access: HashMap<String, Access>,
}

#[derive(Debug)]
struct Grant {
    user: String,
    sid: String,
    scope: String,
    resources: Vec<String>,
    acr: Option<String>,
    auth_time: u64,
    revoked: bool,
}

#[derive(Debug)]
struct Code {
    grant: u64,
    nonce: Option<String>,
    redirect_uri: String,
    code_challenge: String,
    expires: Instant,
    used: bool,
}

#[derive(Debug)]
struct Refresh {
    grant: u64,
    used: bool,
    revoked: bool,
}

#[derive(Debug)]
struct Access {
    grant: u64,
    expires: SystemTime,
    revoked: bool,
}

// === impl GrantStore ===

impl GrantStore {
    /// Starts a grant for a completed login and returns its authorization code.
    pub(crate) fn issue_code(&self, login: LoginRequest) -> String {
        let mut inner = lock(&self.inner);
        inner.next_id += 1;
        let id = inner.next_id;
        let grant = Grant {
            user: login.user,
            sid: random_token(),
            scope: login.scope,
            resources: login.resources,
            acr: login.acr,
            auth_time: login.auth_time,
            revoked: false,
        };
        inner.grants.insert(id, grant);
        let code = random_token();
        let entry = Code {
            grant: id,
            nonce: login.nonce,
            redirect_uri: login.redirect_uri,
            code_challenge: login.code_challenge,
            expires: Instant::now() + CODE_TTL,
            used: false,
        };
        inner.codes.insert(code.clone(), entry);
        code
    }

    /// Redeems a code once: checks expiry, `redirect_uri` and the PKCE verifier (RFC 7636
    /// §4.6). A second use revokes everything the first one issued.
    pub(crate) fn redeem_code(
        &self,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
    ) -> Result<GrantView, InvalidGrant> {
        let mut inner = lock(&self.inner);
        let entry = inner
            .codes
            .get_mut(code)
            .ok_or(InvalidGrant("unknown code"))?;
        if entry.used {
            let grant = entry.grant;
            inner.revoke_grant(grant);
            return Err(InvalidGrant("code already used"));
        }
        entry.used = true;
        if entry.expires < Instant::now() {
            return Err(InvalidGrant("code expired"));
        }
        if redirect_uri != Some(entry.redirect_uri.as_str()) {
            return Err(InvalidGrant("redirect_uri does not match"));
        }
        let verifier = verifier.ok_or(InvalidGrant("code_verifier missing"))?;
        if s256_challenge(verifier) != entry.code_challenge {
            return Err(InvalidGrant("PKCE verification failed"));
        }
        let (grant, nonce) = (entry.grant, entry.nonce.clone());
        let mut view = inner.view(grant)?;
        view.nonce = nonce;
        Ok(view)
    }

    /// Validates a refresh token and applies `policy` to it. A rotated token presented
    /// again revokes the whole grant.
    pub(crate) fn use_refresh(
        &self,
        token: &str,
        policy: RefreshPolicy,
    ) -> Result<GrantView, InvalidGrant> {
        let mut inner = lock(&self.inner);
        let entry = inner
            .refresh
            .get_mut(token)
            .ok_or(InvalidGrant("unknown refresh token"))?;
        if entry.revoked {
            return Err(InvalidGrant("refresh token revoked"));
        }
        let grant = entry.grant;
        if entry.used {
            inner.revoke_grant(grant);
            return Err(InvalidGrant("refresh token reused; grant revoked"));
        }
        if policy == RefreshPolicy::Rotate {
            entry.used = true;
        }
        inner.view(grant)
    }

    /// Records a new refresh token of `grant`.
    pub(crate) fn add_refresh(&self, grant: u64) -> String {
        let token = random_token();
        let entry = Refresh {
            grant,
            used: false,
            revoked: false,
        };
        lock(&self.inner).refresh.insert(token.clone(), entry);
        token
    }

    /// Records an access token of `grant` valid until `expires`.
    pub(crate) fn add_access(&self, token: &str, grant: u64, expires: SystemTime) {
        let entry = Access {
            grant,
            expires,
            revoked: false,
        };
        lock(&self.inner).access.insert(token.to_owned(), entry);
    }

    /// RFC 7009 §2.1: a revoked refresh token takes its grant along; a revoked access token
    /// only itself. Unknown tokens are ignored.
    pub(crate) fn revoke_token(&self, token: &str) {
        let mut inner = lock(&self.inner);
        if let Some(grant) = inner.refresh.get(token).map(|r| r.grant) {
            inner.revoke_grant(grant);
        } else if let Some(access) = inner.access.get_mut(token) {
            access.revoked = true;
        }
    }

    /// Revokes every grant of `user`.
    pub(crate) fn revoke_user(&self, user: &str) {
        let mut inner = lock(&self.inner);
        let ids: Vec<u64> = inner
            .grants
            .iter()
            .filter(|(_, g)| g.user == user)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            inner.revoke_grant(id);
        }
    }

    /// The grant of an access token valid at `now` (the provider's clock).
    pub(crate) fn access_grant(&self, token: &str, now: SystemTime) -> Option<GrantView> {
        let inner = lock(&self.inner);
        let access = inner.access.get(token)?;
        if access.revoked || access.expires <= now {
            return None;
        }
        inner.view(access.grant).ok()
    }
}

// === impl Inner ===

impl Inner {
    fn view(&self, id: u64) -> Result<GrantView, InvalidGrant> {
        let grant = self.grants.get(&id).ok_or(InvalidGrant("unknown grant"))?;
        if grant.revoked {
            return Err(InvalidGrant("grant revoked"));
        }
        Ok(GrantView {
            id,
            user: grant.user.clone(),
            sid: grant.sid.clone(),
            scope: grant.scope.clone(),
            resources: grant.resources.clone(),
            nonce: None,
            acr: grant.acr.clone(),
            auth_time: grant.auth_time,
        })
    }

    fn revoke_grant(&mut self, id: u64) {
        if let Some(grant) = self.grants.get_mut(&id) {
            grant.revoked = true;
        }
        self.refresh
            .iter_mut()
            .filter(|(_, r)| r.grant == id)
            .for_each(|(_, r)| r.revoked = true);
        self.access
            .iter_mut()
            .filter(|(_, a)| a.grant == id)
            .for_each(|(_, a)| a.revoked = true);
    }
}

/// RFC 7636 §4.2: `BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`.
pub(crate) fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// 32 random bytes, base64url: codes, tokens, session ids.
pub(crate) fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> LoginRequest {
        LoginRequest {
            user: "alice".into(),
            scope: "openid offline_access".into(),
            resources: vec![],
            nonce: Some("n".into()),
            redirect_uri: "http://rp/cb".into(),
            code_challenge: s256_challenge("verifier"),
            acr: None,
            auth_time: 0,
        }
    }

    #[test]
    fn rfc7636_appendix_b_vector() {
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn code_is_single_use_and_replay_revokes_grant() {
        let store = GrantStore::default();
        let code = store.issue_code(login());
        let view = store.redeem_code(&code, Some("http://rp/cb"), Some("verifier"));
        let grant = view.unwrap().id;
        let refresh = store.add_refresh(grant);
        assert!(
            store
                .redeem_code(&code, Some("http://rp/cb"), Some("verifier"))
                .is_err()
        );
        assert!(store.use_refresh(&refresh, RefreshPolicy::Keep).is_err());
    }

    #[test]
    fn rotated_token_reuse_revokes_grant() {
        let store = GrantStore::default();
        let code = store.issue_code(login());
        let grant = store.redeem_code(&code, Some("http://rp/cb"), Some("verifier"));
        let grant = grant.unwrap().id;
        let first = store.add_refresh(grant);
        assert!(store.use_refresh(&first, RefreshPolicy::Rotate).is_ok());
        let second = store.add_refresh(grant);
        assert!(store.use_refresh(&first, RefreshPolicy::Rotate).is_err());
        assert!(store.use_refresh(&second, RefreshPolicy::Rotate).is_err());
    }
}
