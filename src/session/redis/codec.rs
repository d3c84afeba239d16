//! The serializable mirror of a session record and of a pending login (JSON, then sealed by
//! `crypto`). Short field names: a record is written on every login and refresh.
//!
//! The identity is stored with its ready-made upstream headers, so a record read back is
//! exactly the one written, whatever the replica's `[headers]` (replicas share a config).

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::login::PendingLogin;
use crate::redirect::SafeRedirect;
use crate::session::{Identity, RefreshBackoff, ResourceToken, Session, Tokens};

#[derive(Serialize, Deserialize)]
struct StoredSession {
    /// The access token (without `Bearer `).
    at: String,
    exp: Option<u64>,
    rt: Option<String>,
    idt: Option<String>,
    login: u64,
    backoff: Option<(u32, u64)>,
    id: StoredIdentity,
    /// Tokens of `oidc.resource[1..]`: (access token, expiry), `None` where missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    more: Vec<Option<(String, Option<u64>)>>,
}

#[derive(Serialize, Deserialize)]
struct StoredIdentity {
    sub: String,
    email: Option<String>,
    username: Option<String>,
    groups: Vec<String>,
    sid: Option<String>,
    claims: Map<String, Value>,
    headers: Vec<(String, String)>,
}

pub fn encode_session(s: &Session) -> Option<Vec<u8>> {
    let id = &s.identity;
    let stored = StoredSession {
        at: String::from_utf8(s.tokens.access_token().to_vec()).ok()?,
        exp: s.tokens.access_expires_at,
        rt: s.tokens.refresh_token.as_deref().map(str::to_owned),
        idt: s.tokens.id_token.as_deref().map(str::to_owned),
        login: s.login_at,
        backoff: s.backoff.map(|b| (b.failures, b.retry_at)),
        more: s
            .tokens
            .more
            .iter()
            .map(|t| match t {
                Some(t) => {
                    let token = t.bearer.as_bytes().get(7..)?;
                    Some(Some((
                        String::from_utf8(token.to_vec()).ok()?,
                        t.expires_at,
                    )))
                }
                None => Some(None),
            })
            .collect::<Option<_>>()?,
        id: StoredIdentity {
            sub: id.sub.clone(),
            email: id.email.clone(),
            username: id.preferred_username.clone(),
            groups: id.groups.clone(),
            sid: id.sid.clone(),
            claims: id.claims.clone(),
            // Values were built from UTF-8 claims, so they read back as UTF-8.
            headers: id
                .upstream_headers
                .iter()
                .map(|(n, v)| {
                    Some((
                        n.to_string(),
                        String::from_utf8(v.as_bytes().to_vec()).ok()?,
                    ))
                })
                .collect::<Option<_>>()?,
        },
    };
    serde_json::to_vec(&stored).ok()
}

pub fn decode_session(bytes: &[u8]) -> Option<Session> {
    let s: StoredSession = serde_json::from_slice(bytes).ok()?;
    let headers =
        s.id.headers
            .iter()
            .map(|(n, v)| {
                Some((
                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                    HeaderValue::from_bytes(v.as_bytes()).ok()?,
                ))
            })
            .collect::<Option<_>>()?;
    Some(Session {
        tokens: Tokens {
            bearer: Tokens::bearer_value(&s.at)?,
            access_expires_at: s.exp,
            refresh_token: s.rt.map(Into::into),
            id_token: s.idt.map(Into::into),
            more: ResourceToken::merge(s.more, &[]),
        },
        identity: Arc::new(Identity {
            sub: s.id.sub,
            email: s.id.email,
            preferred_username: s.id.username,
            groups: s.id.groups,
            sid: s.id.sid,
            claims: s.id.claims,
            upstream_headers: headers,
        }),
        login_at: s.login,
        backoff: s
            .backoff
            .map(|(failures, retry_at)| RefreshBackoff { failures, retry_at }),
    })
}

#[derive(Serialize, Deserialize)]
struct StoredLogin {
    browser: [u8; 16],
    nonce: String,
    pkce: String,
    landing: String,
}

pub fn encode_login(login: &PendingLogin) -> Option<Vec<u8>> {
    serde_json::to_vec(&StoredLogin {
        browser: login.browser,
        nonce: login.nonce.clone(),
        pkce: login.pkce_verifier.clone(),
        landing: login.landing.as_str().to_owned(),
    })
    .ok()
}

/// The landing path is parsed again (a fixed point of `SafeRedirect::parse`), so a record
/// can never smuggle an off-origin redirect.
pub fn decode_login(bytes: &[u8], public_url: &url::Url) -> Option<PendingLogin> {
    let s: StoredLogin = serde_json::from_slice(bytes).ok()?;
    Some(PendingLogin {
        browser: s.browser,
        nonce: s.nonce,
        pkce_verifier: s.pkce,
        landing: SafeRedirect::parse(&s.landing, public_url),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_roundtrip() {
        let session = Session {
            tokens: Tokens {
                bearer: Tokens::bearer_value("at-1").unwrap(),
                access_expires_at: Some(99),
                refresh_token: Some("rt-1".into()),
                id_token: None,
                more: vec![
                    None,
                    Some(ResourceToken {
                        bearer: Tokens::bearer_value("at-b").unwrap(),
                        expires_at: Some(7),
                    }),
                ],
            },
            identity: Arc::new(Identity {
                sub: "u1".into(),
                email: Some("é@x".into()),
                preferred_username: None,
                groups: vec!["a".into()],
                sid: Some("s1".into()),
                claims: serde_json::json!({"tenant": 4})
                    .as_object()
                    .unwrap()
                    .clone(),
                upstream_headers: vec![(
                    HeaderName::from_static("x-forwarded-email"),
                    HeaderValue::from_bytes("é@x".as_bytes()).unwrap(),
                )],
            }),
            login_at: 7,
            backoff: Some(RefreshBackoff {
                failures: 2,
                retry_at: 50,
            }),
        };
        let back = decode_session(&encode_session(&session).unwrap()).unwrap();
        assert_eq!(back.tokens.bearer, session.tokens.bearer);
        assert!(back.tokens.bearer.is_sensitive());
        assert_eq!(back.tokens.refresh_token.as_deref(), Some("rt-1"));
        assert_eq!(back.identity, session.identity);
        assert_eq!((back.login_at, back.backoff), (7, session.backoff));
        assert!(back.tokens.bearer_for(1).is_none());
        assert_eq!(back.tokens.bearer_for(2).unwrap(), "Bearer at-b");
        assert_eq!(back.tokens.more[1].as_ref().unwrap().expires_at, Some(7));
        assert!(decode_session(b"{}").is_none());
    }
}
