//! Who the user is: the claims the gateway needs, and the upstream headers derived from them.
//!
//! Built once per login or refresh (contract Details 7: from the ID token), so a proxied
//! request only clones ready-made header values.

use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::config::HeadersConfig;

#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub sub: String,
    pub email: Option<String>,
    pub preferred_username: Option<String>,
    pub groups: Vec<String>,
    /// OpenID session id at the provider (back-channel logout by `sid`).
    pub sid: Option<String>,
    /// Only the claims that routes (`require_claims`) or `[headers.claims]` refer to.
    pub claims: Map<String, Value>,
    /// The identity headers for the upstream, in configuration order.
    pub upstream_headers: Vec<(HeaderName, HeaderValue)>,
}

/// How to turn claims into an [`Identity`]: built once from the configuration.
#[derive(Debug, Clone)]
pub struct IdentityRules {
    headers: HeadersConfig,
    /// Claim names kept in `Identity::claims`.
    kept: Vec<String>,
}

impl IdentityRules {
    /// `route_claims`: claim names used by `require_claims` of any route.
    pub fn new(headers: &HeadersConfig, route_claims: impl IntoIterator<Item = String>) -> Self {
        let mut kept: Vec<String> = route_claims.into_iter().collect();
        kept.extend(headers.claims.iter().map(|(_, claim)| claim.clone()));
        kept.sort();
        kept.dedup();
        IdentityRules {
            headers: headers.clone(),
            kept,
        }
    }

    /// `None` when the claims lack a `sub` (no identity to vouch for).
    pub fn identity(&self, claims: &Map<String, Value>) -> Option<Identity> {
        let sub = string_claim(claims, "sub").filter(|s| !s.is_empty())?;
        let groups = groups(claims.get(&self.headers.groups_claim));
        let kept = self
            .kept
            .iter()
            .filter_map(|name| claims.get(name).map(|v| (name.clone(), v.clone())))
            .collect();
        let mut identity = Identity {
            sub,
            email: string_claim(claims, "email"),
            preferred_username: string_claim(claims, "preferred_username"),
            groups,
            sid: string_claim(claims, "sid"),
            claims: kept,
            upstream_headers: Vec::new(),
        };
        identity.upstream_headers = self.upstream_headers(&identity);
        Some(identity)
    }

    fn upstream_headers(&self, id: &Identity) -> Vec<(HeaderName, HeaderValue)> {
        let h = &self.headers;
        let joined_groups = id.groups.join(",");
        let standard = [
            (&h.user, Some(id.sub.as_str())),
            (&h.email, id.email.as_deref()),
            (&h.preferred_username, id.preferred_username.as_deref()),
            (&h.groups, Some(joined_groups.as_str())),
        ];
        let mut out: Vec<(HeaderName, HeaderValue)> = standard
            .into_iter()
            .filter_map(|(name, value)| header(name.as_ref()?, value?))
            .collect();
        for (name, claim) in &h.claims {
            if let Some(value) = id.claims.get(claim).and_then(claim_text) {
                out.extend(header(name, &value));
            }
        }
        out
    }
}

/// A header whose claim is absent or empty is not set (contract Details 10). CR/LF and
/// other control characters are refused by `HeaderValue`, so no header injection.
fn header(name: &HeaderName, value: &str) -> Option<(HeaderName, HeaderValue)> {
    if value.is_empty() {
        return None;
    }
    let value = HeaderValue::from_bytes(value.as_bytes()).ok()?;
    Some((name.clone(), value))
}

fn string_claim(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).map(str::to_owned)
}

/// Groups as a list, or as one string separated by commas or spaces.
pub fn groups(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(claim_text)
            .filter(|s| !s.is_empty())
            .collect(),
        Some(Value::String(s)) => s
            .split([',', ' '])
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// A claim rendered for a header or a comparison: strings as they are, numbers and bools
/// printed, lists comma-joined; objects and null are not rendered.
pub fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(claim_text)
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Object(_) | Value::Null => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> IdentityRules {
        let headers = HeadersConfig {
            authorization_bearer: true,
            user: Some(HeaderName::from_static("x-forwarded-user")),
            email: Some(HeaderName::from_static("x-forwarded-email")),
            preferred_username: None,
            groups: Some(HeaderName::from_static("x-forwarded-groups")),
            groups_claim: "groups".into(),
            claims: vec![(HeaderName::from_static("x-tenant"), "tenant_id".into())],
        };
        IdentityRules::new(&headers, ["department".to_string()])
    }

    #[test]
    fn builds_headers_from_claims() {
        let claims = json!({"sub": "u1", "email": "u1@x", "groups": ["a", "b"],
            "tenant_id": 42, "department": "ops", "secret_claim": "dropped"});
        let id = rules().identity(claims.as_object().unwrap()).unwrap();
        let headers: Vec<(String, String)> = id
            .upstream_headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        assert_eq!(
            headers,
            [
                ("x-forwarded-user".into(), "u1".into()),
                ("x-forwarded-email".into(), "u1@x".into()),
                ("x-forwarded-groups".into(), "a,b".into()),
                ("x-tenant".into(), "42".into()),
            ]
        );
        assert!(id.claims.contains_key("department"));
        assert!(!id.claims.contains_key("secret_claim"));
    }

    #[test]
    fn absent_or_empty_claims_set_no_header_and_sub_is_required() {
        let id = rules()
            .identity(json!({"sub": "u", "email": ""}).as_object().unwrap())
            .unwrap();
        assert_eq!(id.upstream_headers.len(), 1);
        assert!(
            rules()
                .identity(json!({"email": "x"}).as_object().unwrap())
                .is_none()
        );
    }

    #[test]
    fn groups_from_string_or_list() {
        assert_eq!(groups(Some(&json!("a, b c"))), ["a", "b", "c"]);
        assert_eq!(groups(Some(&json!(["a", 1]))), ["a", "1"]);
        assert!(groups(None).is_empty());
    }

    #[test]
    fn header_injection_refused() {
        let id = rules()
            .identity(
                json!({"sub": "u", "email": "a@b\r\nX-Evil: 1"})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
        assert!(
            id.upstream_headers
                .iter()
                .all(|(n, _)| n != "x-forwarded-email")
        );
    }
}
