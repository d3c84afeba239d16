//! The identity headers: which ones the gateway vouches for, and the rules that turn claims
//! into their values.
//!
//! One list of names, built once from `[headers]`, both strips (`InboundHeaders`: no client
//! may send one) and sets (`set_identity`, from the values a session keeps).

use std::borrow::Cow;
use std::sync::Arc;

use http::HeaderName;
use serde_json::{Map, Value};

use crate::claims::{claim_text, str_claim};
use crate::config::HeadersConfig;

/// The configured identity headers, in configuration order (user, email,
/// preferred_username, groups, then `[headers.claims]`), and where each value comes from.
#[derive(Debug, Clone)]
pub struct ClaimHeaders {
    /// Shared by every identity built with these rules.
    names: Arc<[HeaderName]>,
    /// Parallel to `names`.
    sources: Box<[Source]>,
    groups_claim: String,
}

/// Where an identity header's value comes from.
#[derive(Debug, Clone)]
enum Source {
    Sub,
    Email,
    PreferredUsername,
    /// The groups comma-joined (see [`groups_header`]).
    Groups,
    /// `[headers.claims]`: the claim rendered by [`claim_text`].
    Claim(String),
}

// === impl ClaimHeaders ===

impl ClaimHeaders {
    pub fn new(cfg: &HeadersConfig) -> Self {
        let standard = [
            (&cfg.user, Source::Sub),
            (&cfg.email, Source::Email),
            (&cfg.preferred_username, Source::PreferredUsername),
            (&cfg.groups, Source::Groups),
        ];
        let custom =
            (cfg.claims.iter()).map(|(name, claim)| (name.clone(), Source::Claim(claim.clone())));
        let (names, sources): (Vec<HeaderName>, Vec<Source>) = standard
            .into_iter()
            .filter_map(|(name, source)| Some((name.clone()?, source)))
            .chain(custom)
            .unzip();
        ClaimHeaders {
            names: names.into(),
            sources: sources.into(),
            groups_claim: cfg.groups_claim.clone(),
        }
    }

    /// The header names, in configuration order.
    pub fn names(&self) -> &Arc<[HeaderName]> {
        &self.names
    }

    /// The claim that holds the groups (`headers.groups_claim`).
    pub fn groups_claim(&self) -> &str {
        &self.groups_claim
    }

    /// The claims `[headers.claims]` renders (an identity must keep them).
    pub fn claim_names(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().filter_map(|source| match source {
            Source::Claim(claim) => Some(claim.as_str()),
            _ => None,
        })
    }

    /// The value of each header for these `claims` (and their `groups`, as read from
    /// [`ClaimHeaders::groups_claim`]), parallel to [`ClaimHeaders::names`]: `None` where
    /// the claim is absent or not of a kind the header takes. Not yet checked as header
    /// values (the caller refuses control characters, and leaves empty values unset).
    pub fn values<'c>(
        &'c self,
        claims: &'c Map<String, Value>,
        groups: &'c [Cow<'c, str>],
    ) -> impl Iterator<Item = Option<Cow<'c, str>>> + 'c {
        self.sources.iter().map(move |source| match source {
            Source::Sub => str_claim(claims, "sub").map(Cow::Borrowed),
            Source::Email => str_claim(claims, "email").map(Cow::Borrowed),
            Source::PreferredUsername => str_claim(claims, "preferred_username").map(Cow::Borrowed),
            Source::Groups if groups.is_empty() => None,
            Source::Groups => Some(Cow::Owned(groups_header(groups))),
            Source::Claim(claim) => claims.get(claim).and_then(claim_text).map(Cow::Owned),
        })
    }
}

/// The `X-Forwarded-Groups` value: the names comma-joined, with a `,` or `%` inside a name
/// percent-encoded (`%2C`, `%25`), so that one group never reads as two, and the
/// encoding itself stays unambiguous.
fn groups_header(names: &[Cow<'_, str>]) -> String {
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for c in name.chars() {
            match c {
                ',' => out.push_str("%2C"),
                '%' => out.push_str("%25"),
                c => out.push(c),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers() -> ClaimHeaders {
        ClaimHeaders::new(&HeadersConfig {
            authorization_bearer: true,
            user: Some(HeaderName::from_static("x-forwarded-user")),
            email: None,
            preferred_username: Some(HeaderName::from_static("x-forwarded-preferred-username")),
            groups: Some(HeaderName::from_static("x-forwarded-groups")),
            groups_claim: "roles".into(),
            claims: vec![(HeaderName::from_static("x-tenant"), "tenant".into())],
        })
    }

    #[test]
    fn names_in_configuration_order_and_values_from_claims() {
        let h = headers();
        let names: Vec<&str> = h.names().iter().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            [
                "x-forwarded-user",
                "x-forwarded-preferred-username",
                "x-forwarded-groups",
                "x-tenant"
            ]
        );
        assert_eq!(h.groups_claim(), "roles");
        assert!(h.claim_names().eq(["tenant"]));
        let claims = json!({"sub": "u", "preferred_username": 7, "tenant": 42});
        let groups = [Cow::Borrowed("a,b"), Cow::Borrowed("c")];
        let values: Vec<Option<Cow<str>>> =
            h.values(claims.as_object().unwrap(), &groups).collect();
        assert_eq!(
            values,
            [
                Some("u".into()),
                None,
                Some("a%2Cb,c".into()),
                Some("42".into())
            ]
        );
        let values: Vec<_> = h.values(claims.as_object().unwrap(), &[]).collect();
        assert_eq!(values[2], None, "no groups, no header");
    }

    #[test]
    fn group_names_are_encoded_unambiguously() {
        let names = [Cow::Borrowed("a,b"), Cow::Borrowed("100%"), "c d".into()];
        assert_eq!(groups_header(&names), "a%2Cb,100%25,c d");
        assert_eq!(groups_header(&[Cow::Borrowed("a%2Cb")]), "a%252Cb");
    }
}
