//! The serializable mirror of a session record (JSON, then sealed by `crate::seal`). Short field
//! names: a record is written on every login and refresh.
//!
//! The identity is stored with its ready-made upstream headers, so a record read back is
//! exactly the one written, whatever the replica's `[headers]` (replicas share a config).
//! The format predates the compact in-memory `Identity` and is kept as it was, so records
//! already in Redis still decode.

use std::num::NonZeroU32;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::ProviderId;
use crate::session::identity::{IdentityParts, IdentityRules};
use crate::session::{LastSeen, RefreshBackoff, ResourceToken, Session, Tokens};

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
    /// The `[providers.NAME]` the session belongs to; absent: `[oidc]` (so records written
    /// before several providers existed read back as the default provider's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prov: Option<String>,
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

/// `rules`: the configuration's, which name the session's provider.
pub fn encode_session(s: &Session, rules: &IdentityRules) -> Option<Vec<u8>> {
    let id = &s.identity;
    let prov = match s.provider.is_default() {
        true => None,
        // An id without a name is never made; a record that cannot say whose it is is not
        // written.
        false => Some(rules.provider_name(s.provider)?.to_owned()),
    };
    let stored = StoredSession {
        prov,
        at: String::from_utf8(s.tokens.access_token().to_vec()).ok()?,
        exp: s.tokens.access_expires_at,
        rt: s.tokens.refresh_token.as_deref().map(str::to_owned),
        idt: s.tokens.id_token.as_deref().map(str::to_owned),
        login: s.login_at,
        backoff: s.backoff.map(|b| (b.failures.get(), b.retry_at())),
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
            sub: id.sub().to_owned(),
            email: id.email().map(str::to_owned),
            username: id.preferred_username().map(str::to_owned),
            groups: id.groups().map(str::to_owned).collect(),
            sid: id.sid().map(str::to_owned),
            claims: id.claims().clone(),
            // Values were built from UTF-8 claims, so they read back as UTF-8.
            headers: id
                .upstream_headers()
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

/// `rules`: the current configuration's, whose header name list the identity shares when
/// the stored names are the configured ones (see [`IdentityRules::restore`]).
/// A record of a provider the configuration no longer has reads as no session.
pub fn decode_session(bytes: &[u8], rules: &IdentityRules) -> Option<Session> {
    let s: StoredSession = serde_json::from_slice(bytes).ok()?;
    let provider = match &s.prov {
        None => ProviderId::DEFAULT,
        Some(name) => rules.provider_id(name)?,
    };
    let identity = rules.restore(IdentityParts {
        sub: &s.id.sub,
        email: s.id.email.as_deref(),
        preferred_username: s.id.username.as_deref(),
        groups: &s.id.groups,
        sid: s.id.sid.as_deref(),
        claims: s.id.claims,
        headers: &s.id.headers,
    })?;
    Some(Session {
        tokens: Tokens {
            bearer: Tokens::bearer_value(&s.at)?,
            access_expires_at: s.exp,
            refresh_token: s.rt.map(Into::into),
            id_token: s.idt.map(Into::into),
            more: ResourceToken::merge(s.more, &[]),
        },
        identity: Arc::new(identity),
        login_at: s.login,
        // Never 0 failures as written; such a record would just have no backoff.
        backoff: s.backoff.and_then(|(failures, retry_at)| {
            Some(RefreshBackoff {
                failures: NonZeroU32::new(failures)?,
                retry_at: u32::try_from(retry_at).unwrap_or(u32::MAX),
            })
        }),
        last_seen: LastSeen::default(),
        provider,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HeadersConfig;
    use http::HeaderName;

    fn rules() -> IdentityRules {
        let headers = HeadersConfig {
            authorization_bearer: true,
            user: None,
            email: Some(HeaderName::from_static("x-forwarded-email")),
            preferred_username: None,
            groups: None,
            groups_claim: "groups".into(),
            claims: Vec::new(),
        };
        IdentityRules::new(&headers, ["tenant".to_string()])
    }

    /// A record as the gateway wrote it before `Identity` became compact.
    const RECORD: &str = concat!(
        r#"{"at":"at-1","exp":99,"rt":"rt-1","idt":null,"login":7,"backoff":[2,50],"#,
        r#""id":{"sub":"u1","email":"é@x","username":null,"groups":["a"],"sid":"s1","#,
        r#""claims":{"tenant":4},"headers":[["x-forwarded-email","é@x"]]},"#,
        r#""more":[null,["at-b",7]]}"#
    );

    #[test]
    fn session_roundtrip() {
        let rules = rules();
        let claims = serde_json::json!({"sub": "u1", "email": "é@x", "groups": ["a"],
            "sid": "s1", "tenant": 4});
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
                ]
                .into(),
            },
            identity: Arc::new(rules.identity(claims.as_object().unwrap()).unwrap()),
            login_at: 7,
            backoff: Some(RefreshBackoff {
                failures: NonZeroU32::new(2).unwrap(),
                retry_at: 50,
            }),
            last_seen: LastSeen::default(),
            provider: ProviderId::DEFAULT,
        };
        let encoded = encode_session(&session, &rules).unwrap();
        assert_eq!(std::str::from_utf8(&encoded).unwrap(), RECORD);
        let back = decode_session(&encoded, &rules).unwrap();
        assert_eq!(back.tokens.bearer, session.tokens.bearer);
        assert!(back.tokens.bearer.is_sensitive());
        assert_eq!(back.tokens.refresh_token.as_deref(), Some("rt-1"));
        assert_eq!(back.identity, session.identity);
        assert_eq!((back.login_at, back.backoff), (7, session.backoff));
        assert!(back.tokens.bearer_for(1).is_none());
        assert_eq!(back.tokens.bearer_for(2).unwrap(), "Bearer at-b");
        assert_eq!(back.tokens.more[1].as_ref().unwrap().expires_at, Some(7));
        assert!(decode_session(b"{}", &rules).is_none());
    }

    /// Found by the `redis_record` fuzz target: a float claim drifted by one ulp each time a
    /// record was read and written again (serde_json's fast float parsing is not exact
    /// without `float_roundtrip`).
    #[test]
    fn float_claims_read_back_exactly() {
        let rules = rules();
        for float in [
            "5.0666666666666667e63",
            "506666666666666666666666666666666666666666666666666666666666666666",
            "0.1",
            "1.7976931348623157e308",
        ] {
            let record = RECORD.replace(r#""tenant":4"#, &format!(r#""tenant":{float}"#));
            let once = encode_session(&decode_session(record.as_bytes(), &rules).unwrap(), &rules)
                .unwrap();
            let twice = encode_session(&decode_session(&once, &rules).unwrap(), &rules).unwrap();
            assert_eq!(
                String::from_utf8(once).unwrap(),
                String::from_utf8(twice).unwrap(),
                "{float}"
            );
        }
    }

    /// A record names its `[providers.NAME]`; one without a name is `[oidc]`'s (records
    /// written before several providers); one naming a provider no longer configured is none.
    #[test]
    fn records_carry_their_provider() {
        let rules = rules().with_providers(vec!["employees".into(), "partners".into()]);
        let mut session = decode_session(RECORD.as_bytes(), &rules).unwrap();
        assert_eq!(session.provider, ProviderId::DEFAULT);
        session.provider = ProviderId(2);
        let encoded = encode_session(&session, &rules).unwrap();
        let text = std::str::from_utf8(&encoded).unwrap();
        assert!(text.ends_with(r#","prov":"partners"}"#), "{text}");
        assert_eq!(
            decode_session(&encoded, &rules).unwrap().provider,
            ProviderId(2)
        );
        let fewer = IdentityRules::new(
            &HeadersConfig {
                authorization_bearer: true,
                user: None,
                email: Some(HeaderName::from_static("x-forwarded-email")),
                preferred_username: None,
                groups: None,
                groups_claim: "groups".into(),
                claims: Vec::new(),
            },
            ["tenant".to_string()],
        )
        .with_providers(vec!["employees".into()]);
        assert!(
            decode_session(&encoded, &fewer).is_none(),
            "unknown provider"
        );
        session.provider = ProviderId(9);
        assert!(
            encode_session(&session, &rules).is_none(),
            "an id without a name"
        );
    }

    #[test]
    fn records_keep_their_headers_when_the_configuration_changed() {
        let record = RECORD.replace("x-forwarded-email", "x-mail");
        let rules = rules();
        let back = decode_session(record.as_bytes(), &rules).unwrap();
        let headers: Vec<_> = back.identity.upstream_headers().collect();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].0, "x-mail");
        assert_eq!(headers[0].1, "é@x".as_bytes());
        assert_eq!(encode_session(&back, &rules).unwrap(), record.as_bytes());
    }
}
