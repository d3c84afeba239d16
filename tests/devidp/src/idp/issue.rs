//! Building token responses (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3): the access token
//! (opaque or an RS256 JWT whose `aud` is the requested RFC 8707 resource), the ID token with
//! the user's claims, `sid`, `at_hash`, `auth_time` and the login's `acr`, and the optional
//! parts the controls switch off.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::SigningError;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::Shared;
use super::controls::{AccessTokenFormat, IdTokenTamper, Settings};
use super::grants::{GrantView, random_token};

/// Lifetime of ID tokens; independent of the access token's so short test lifetimes do not
/// make a fresh ID token fail verification.
const ID_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// What goes into one token response besides the access token.
#[derive(Debug)]
pub(crate) struct Issue<'a> {
    pub(crate) grant: &'a GrantView,
    pub(crate) settings: &'a Settings,
    /// `resource` parameters of the token request; empty = those of the authorization.
    pub(crate) resources: &'a [String],
    pub(crate) refresh_token: Option<String>,
    pub(crate) id_token: bool,
}

/// Mints the tokens, records the access token, and returns the JSON response body.
pub(crate) fn token_response(shared: &Shared, issue: &Issue<'_>) -> Result<Value, SigningError> {
    let settings = issue.settings;
    let now = shared.controls.now();
    let access_token = access_token(shared, issue, now)?;
    let expires = now + settings.access_ttl;
    shared
        .controls
        .grants
        .add_access(&access_token, issue.grant.id, expires);

    let mut body = Map::new();
    body.insert("access_token".into(), json!(access_token));
    body.insert("token_type".into(), json!("Bearer"));
    if !settings.omit_expires_in {
        body.insert("expires_in".into(), json!(settings.access_ttl.as_secs()));
    }
    if let Some(refresh) = &issue.refresh_token {
        body.insert("refresh_token".into(), json!(refresh));
    }
    if issue.id_token && has_scope(&issue.grant.scope, "openid") {
        body.insert(
            "id_token".into(),
            json!(id_token(shared, issue, &access_token, now)?),
        );
    }
    body.insert("scope".into(), json!(issue.grant.scope));
    Ok(Value::Object(body))
}

/// The claims of `user`: defaults, then whatever `set_user_claims` put over them.
pub(crate) fn user_claims(settings: &Settings, user: &str) -> Map<String, Value> {
    let mut claims = Map::new();
    claims.insert("sub".into(), json!(user));
    claims.insert("email".into(), json!(format!("{user}@example.test")));
    claims.insert("preferred_username".into(), json!(user));
    claims.insert("groups".into(), json!([]));
    if let Some(Value::Object(extra)) = settings.user_claims.get(user) {
        claims.extend(extra.clone());
    }
    claims
}

/// Whether the space-separated `scope` contains `wanted`.
pub(crate) fn has_scope(scope: &str, wanted: &str) -> bool {
    scope.split_whitespace().any(|s| s == wanted)
}

fn access_token(
    shared: &Shared,
    issue: &Issue<'_>,
    now: SystemTime,
) -> Result<String, SigningError> {
    if issue.settings.access_token_format == AccessTokenFormat::Opaque {
        return Ok(random_token());
    }
    let resources = if issue.resources.is_empty() {
        &issue.grant.resources[..]
    } else {
        issue.resources
    };
    let aud = match resources {
        [] => json!(shared.options.client_id),
        [one] => json!(one),
        many => json!(many),
    };
    let sub = user_claims(issue.settings, &issue.grant.user)
        .get("sub")
        .cloned();
    let claims = json!({
        "iss": shared.issuer,
        "sub": sub,
        "aud": aud,
        "iat": unix(now),
        "exp": unix(now + issue.settings.access_ttl),
        "scope": issue.grant.scope,
        "client_id": shared.options.client_id,
        "jti": random_token(),
    });
    shared.controls.keys.sign(&claims)
}

fn id_token(
    shared: &Shared,
    issue: &Issue<'_>,
    access_token: &str,
    now: SystemTime,
) -> Result<String, SigningError> {
    let mut claims = user_claims(issue.settings, &issue.grant.user);
    claims.insert("iss".into(), json!(shared.issuer));
    claims.insert("aud".into(), json!(shared.options.client_id));
    claims.insert("iat".into(), json!(unix(now)));
    claims.insert("exp".into(), json!(unix(now + ID_TOKEN_TTL)));
    claims.insert("sid".into(), json!(issue.grant.sid));
    claims.insert("auth_time".into(), json!(issue.grant.auth_time));
    if let Some(acr) = &issue.grant.acr {
        claims.insert("acr".into(), json!(acr));
    }
    claims.insert("at_hash".into(), json!(at_hash(access_token)));
    match &issue.grant.nonce {
        Some(nonce) => claims.insert("nonce".into(), json!(nonce)),
        None => claims.remove("nonce"),
    };
    shared.controls.record_issued_sid(&issue.grant.sid);
    if let Some(signer) = shared.controls.id_token_signer() {
        return Ok(signer(Value::Object(claims)));
    }
    match issue.settings.id_token_tamper {
        None => {}
        Some(IdTokenTamper::ForeignKey) => {
            return shared
                .controls
                .keys
                .sign_foreign(&Value::Object(claims), "dev-1");
        }
        Some(IdTokenTamper::WrongAudience) => {
            claims.insert("aud".into(), json!("some-other-client"));
        }
        Some(IdTokenTamper::WrongNonce) => {
            claims.insert("nonce".into(), json!("not-the-nonce-you-sent"));
        }
        Some(IdTokenTamper::Expired) => {
            let past = now
                .checked_sub(Duration::from_secs(2 * 3600))
                .unwrap_or(UNIX_EPOCH);
            claims.insert("iat".into(), json!(unix(past)));
            claims.insert("exp".into(), json!(unix(past + ID_TOKEN_TTL / 2)));
        }
        Some(IdTokenTamper::CriticalHeader) => {
            let header = json!({ "crit": ["urn:example:unknown"], "urn:example:unknown": 1 });
            return shared
                .controls
                .keys
                .sign_with_header(&Value::Object(claims), &header);
        }
        Some(IdTokenTamper::AuthorizedPartyOther) => {
            claims.insert("azp".into(), json!("some-other-client"));
        }
        Some(IdTokenTamper::TwoAudiencesNoAzp) => {
            let aud = json!([shared.options.client_id, "some-other-client"]);
            claims.insert("aud".into(), aud);
            claims.remove("azp");
        }
        Some(IdTokenTamper::WrongAtHash) => {
            claims.insert("at_hash".into(), json!(at_hash("another-access-token")));
        }
        Some(IdTokenTamper::IssuedLongAgo) => {
            let week_ago = now
                .checked_sub(Duration::from_secs(7 * 24 * 3600))
                .unwrap_or(UNIX_EPOCH);
            claims.insert("iat".into(), json!(unix(week_ago)));
            claims.insert("exp".into(), json!(unix(now + Duration::from_secs(3600))));
        }
    }
    shared.controls.keys.sign(&Value::Object(claims))
}

/// OpenID Connect Core §3.1.3.6: base64url of the left half of SHA-256 of the token.
fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..digest.len() / 2])
}

fn unix(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
