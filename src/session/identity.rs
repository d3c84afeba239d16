//! Who the user is: the claims the gateway needs, and the upstream headers derived from them.
//!
//! Built once per login or refresh (from the ID token), and held by every
//! live session, so an identity is compact (issue 8: 1 M sessions). All of its text lives in
//! ONE buffer; its fields and its upstream header values are spans of it, so the user header
//! IS the `sub` text, the email header the email text, and so on: nothing is stored twice.
//! Header names are the same for every session: they are held once, by [`IdentityRules`],
//! and each identity keeps a shared handle to that list. A proxied request turns each header
//! span into a `HeaderValue` that shares the buffer (a refcount bump: no copy, no allocation).

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde_json::{Map, Value};

use crate::claims::{groups, str_claim};
use crate::config::{Config, HeadersConfig, ProviderId};
use crate::headers::ClaimHeaders;

/// A range of an identity's text. Two `u32`s: half a `Range<usize>` (a text is refused at
/// `u32::MAX` bytes, far beyond any real set of claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    /// No value (an absent claim, a header that is not set). Out of range of every text, so
    /// reading it gives `None`, and it takes no more room than a span (`Option<Span>` would).
    const ABSENT: Span = Span {
        start: u32::MAX,
        end: u32::MAX,
    };

    fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// Who the user is. Build one with [`IdentityRules::identity`] (from claims) or
/// [`IdentityRules::restore`] (from a stored record).
#[derive(Clone)]
pub struct Identity {
    /// Every string of this identity, UTF-8, each once. Already promoted to its shared form
    /// (see [`TextBuilder::finish`]), so handing out header values never allocates.
    text: Bytes,
    /// The upstream header names, in configuration order: normally the list of the rules
    /// that built it, shared by every identity.
    names: Arc<[HeaderName]>,
    /// `names.len()` header values (`Span::ABSENT`: that header is not set), then the groups.
    /// One allocation for both.
    spans: Box<[Span]>,
    sub: Span,
    email: Span,
    preferred_username: Span,
    /// OpenID session id at the provider (back-channel logout by `sid`).
    sid: Span,
    /// Only the claims that routes (`require_claims`) or `[headers.claims]` refer to. `None`
    /// when there are none, the usual case: 8 bytes instead of an empty map's 24.
    claims: Option<Box<Map<String, Value>>>,
}

/// What [`Identity::claims`] answers when the identity keeps no claim.
static NO_CLAIMS: LazyLock<Map<String, Value>> = LazyLock::new(Map::new);

impl Identity {
    pub fn sub(&self) -> &str {
        // Always present: only `ABSENT` or a broken span reads as `None`, and neither is ever
        // stored for `sub`.
        self.text(self.sub).unwrap_or_default()
    }

    /// [`Identity::sub`] sharing the identity's text (a refcount bump, no copy): kept by the
    /// gateway for the access log line after the session is let go.
    pub fn sub_shared(&self) -> Bytes {
        self.shared(self.sub).unwrap_or_default()
    }

    pub fn email(&self) -> Option<&str> {
        self.text(self.email)
    }

    pub fn preferred_username(&self) -> Option<&str> {
        self.text(self.preferred_username)
    }

    pub fn sid(&self) -> Option<&str> {
        self.text(self.sid)
    }

    /// The group names, in claim order.
    pub fn groups(&self) -> impl Iterator<Item = &str> + Clone + '_ {
        let groups = self.spans.get(self.names.len()..).unwrap_or_default();
        groups.iter().filter_map(|&span| self.text(span))
    }

    /// The kept claims (see [`IdentityRules::new`]).
    pub fn claims(&self) -> &Map<String, Value> {
        self.claims.as_deref().unwrap_or(&NO_CLAIMS)
    }

    /// The identity headers for the upstream, in configuration order. Each value shares the
    /// identity's text: a refcount bump, no copy, no allocation.
    pub fn upstream_headers(&self) -> impl Iterator<Item = (&HeaderName, HeaderValue)> + '_ {
        let values = self.spans.get(..self.names.len()).unwrap_or_default();
        self.names.iter().zip(values).filter_map(|(name, &span)| {
            // Every value was checked when the identity was built, so this cannot fail; if
            // it did, leaving the header out is the safe answer.
            let value = HeaderValue::from_maybe_shared(self.shared(span)?).ok()?;
            Some((name, value))
        })
    }

    fn text(&self, span: Span) -> Option<&str> {
        std::str::from_utf8(self.text.get(span.range())?).ok()
    }

    /// The span as a `Bytes` sharing the text; `None` when absent (never a panic).
    fn shared(&self, span: Span) -> Option<Bytes> {
        let range = span.range();
        (range.start <= range.end && range.end <= self.text.len()).then(|| self.text.slice(range))
    }
}

/// Equal when everything the gateway uses is: the layout of the text does not matter.
impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        self.sub() == other.sub()
            && self.email() == other.email()
            && self.preferred_username() == other.preferred_username()
            && self.sid() == other.sid()
            && self.groups().eq(other.groups())
            && self.claims() == other.claims()
            && self.upstream_headers().eq(other.upstream_headers())
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("sub", &self.sub())
            .field("email", &self.email())
            .field("preferred_username", &self.preferred_username())
            .field("groups", &self.groups().collect::<Vec<_>>())
            .field("sid", &self.sid())
            .field("claims", self.claims())
            .field(
                "upstream_headers",
                &self.upstream_headers().collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// An identity as a store kept it (see [`IdentityRules::restore`]).
pub struct IdentityParts<'a> {
    pub sub: &'a str,
    pub email: Option<&'a str>,
    pub preferred_username: Option<&'a str>,
    pub groups: &'a [String],
    pub sid: Option<&'a str>,
    pub claims: Map<String, Value>,
    /// The upstream headers as they were when stored: (name, value).
    pub headers: &'a [(String, String)],
}

/// How to turn claims into an [`Identity`]: built once from the configuration.
#[derive(Debug, Clone)]
pub struct IdentityRules {
    /// The identity headers and how their values come from claims. Every identity built
    /// here shares its name list.
    headers: ClaimHeaders,
    /// Claim names kept in `Identity::claims`.
    kept: Vec<String>,
    /// The names of `[providers.NAME]` by provider id minus one: how a stored record names
    /// the provider of its session.
    providers: Vec<String>,
}

impl IdentityRules {
    /// `route_claims`: claim names used by `require_claims` of any route.
    pub fn new(headers: &HeadersConfig, route_claims: impl IntoIterator<Item = String>) -> Self {
        let headers = ClaimHeaders::new(headers);
        let mut kept: Vec<String> = route_claims.into_iter().collect();
        kept.extend(headers.claim_names().map(str::to_owned));
        kept.sort();
        kept.dedup();
        IdentityRules {
            headers,
            kept,
            providers: Vec::new(),
        }
    }

    /// The same rules, with the names of `[providers.NAME]` in provider id order.
    pub fn with_providers(mut self, names: Vec<String>) -> Self {
        self.providers = names;
        self
    }

    /// The name of a session's provider (`None`: `[oidc]`, or an id no name has).
    pub fn provider_name(&self, id: ProviderId) -> Option<&str> {
        let i = id.index().checked_sub(1)?;
        self.providers.get(i).map(String::as_str)
    }

    /// Every provider's id: `[oidc]`'s, then each `[providers.NAME]`'s.
    pub fn provider_ids(&self) -> impl Iterator<Item = ProviderId> + '_ {
        (0..=self.providers.len()).filter_map(|i| u8::try_from(i).ok().map(ProviderId))
    }

    /// The id of the provider called `name`; `None` when no `[providers.NAME]` has it.
    pub fn provider_id(&self, name: &str) -> Option<ProviderId> {
        let i = self.providers.iter().position(|n| n == name)?;
        Some(ProviderId(u8::try_from(i + 1).ok()?))
    }

    /// The rules of a configuration: its `[headers]`, and the claims its routes require
    /// (`email_verified` too when a route has email rules, `acr` and `auth_time` when one
    /// has a step-up requirement).
    pub fn for_config(cfg: &Config) -> Self {
        let route_claims =
            (cfg.routes.iter()).flat_map(|r| r.require_claims.iter().map(|(name, _)| name.clone()));
        let email_rules = (cfg.routes.iter())
            .any(|r| !(r.require_email_domains.is_empty() && r.require_emails.is_empty()));
        let verified = email_rules.then(|| "email_verified".to_owned());
        // Step-up routes judge a session by how and when its user logged in.
        let step_up =
            (cfg.routes.iter()).any(|r| !r.require_acr.is_empty() || r.max_auth_age.is_some());
        let login = (step_up.then(|| ["acr".to_owned(), "auth_time".to_owned()])).into_iter();
        IdentityRules::new(
            &cfg.headers,
            route_claims.chain(verified).chain(login.flatten()),
        )
        .with_providers(cfg.provider_names())
    }

    /// The configured identity headers (their names: the list identities share).
    pub fn claim_headers(&self) -> &ClaimHeaders {
        &self.headers
    }

    /// The configured identity header names, in configuration order (the list identities
    /// share).
    pub fn header_names(&self) -> &Arc<[HeaderName]> {
        self.headers.names()
    }

    /// `None` when the claims lack a `sub` (no identity to vouch for).
    pub fn identity(&self, claims: &Map<String, Value>) -> Option<Identity> {
        let sub = str_claim(claims, "sub").filter(|s| !s.is_empty())?;
        let mut text = TextBuilder::default();
        let sub = text.push(sub)?;
        let email = text.intern_opt(str_claim(claims, "email"))?;
        let preferred_username = text.intern_opt(str_claim(claims, "preferred_username"))?;
        let sid = text.intern_opt(str_claim(claims, "sid"))?;
        let group_names = groups(claims.get(self.headers.groups_claim()));
        let groups = (group_names.iter())
            .map(|g| text.push(g))
            .collect::<Option<Vec<Span>>>()?;
        let mut spans = Vec::with_capacity(self.headers.names().len() + groups.len());
        // Interned: a header that is the `sub`, the email or one plain group is that text's
        // span, nothing stored twice.
        for value in self.headers.values(claims, &group_names) {
            spans.push(match value {
                Some(value) => text.intern(&value)?,
                None => Span::ABSENT,
            });
        }
        let text = text.finish();
        // A header whose claim is absent or empty is not set. CR/LF
        // and other control characters are refused by `HeaderValue`, so no header injection.
        for span in &mut spans {
            if !is_header_value(&text, *span) || span.start == span.end {
                *span = Span::ABSENT;
            }
        }
        spans.extend(groups); // after the header values, as `Identity::spans` says
        let kept: Map<String, Value> = (self.kept.iter())
            .filter_map(|name| Some((name.clone(), claims.get(name)?.clone())))
            .collect();
        Some(Identity {
            text,
            names: self.headers.names().clone(),
            spans: spans.into(),
            sub,
            email,
            preferred_username,
            sid,
            claims: (!kept.is_empty()).then(|| Box::new(kept)),
        })
    }

    /// An identity read back from a store, with its upstream headers exactly as they were
    /// stored, whatever the configuration says now (what a record promised stays true until
    /// its next refresh rebuilds it). When the stored header names are the configured ones
    /// (or some of them, in order: headers whose claim was absent are not stored), the
    /// identity shares the rules' name list; otherwise (the configuration changed since) it
    /// gets its own list. `None` when a stored header is not a valid header.
    pub fn restore(&self, stored: IdentityParts<'_>) -> Option<Identity> {
        let mut text = TextBuilder::default();
        let sub = text.push(stored.sub)?;
        let email = text.intern_opt(stored.email)?;
        let preferred_username = text.intern_opt(stored.preferred_username)?;
        let sid = text.intern_opt(stored.sid)?;
        let groups = (stored.groups.iter())
            .map(|g| text.push(g))
            .collect::<Option<Vec<Span>>>()?;
        let mut stored_names = Vec::with_capacity(stored.headers.len());
        let mut values = Vec::with_capacity(stored.headers.len());
        for (name, value) in stored.headers {
            stored_names.push(HeaderName::from_bytes(name.as_bytes()).ok()?);
            values.push(text.intern(value)?);
        }
        let text = text.finish();
        if !values.iter().all(|&span| is_header_value(&text, span)) {
            return None;
        }
        let (names, mut spans) = match self.place(&stored_names, &values) {
            Some(spans) => (self.headers.names().clone(), spans),
            None => (Arc::from(stored_names), values),
        };
        spans.extend(groups);
        let claims = (!stored.claims.is_empty()).then(|| Box::new(stored.claims));
        Some(Identity {
            text,
            names,
            spans: spans.into(),
            sub,
            email,
            preferred_username,
            sid,
            claims,
        })
    }

    /// The header spans laid out by the configured names, when the stored `names` are a
    /// subsequence of them (each matched to the first configured one left that fits, so the
    /// headers come out in the stored order); `None` otherwise.
    fn place(&self, names: &[HeaderName], values: &[Span]) -> Option<Vec<Span>> {
        let names_now = self.headers.names();
        let mut spans = vec![Span::ABSENT; names_now.len()];
        let mut next = 0;
        for (name, &value) in names.iter().zip(values) {
            let found = names_now.get(next..)?.iter().position(|n| n == name)?;
            *spans.get_mut(next + found)? = value;
            next += found + 1;
        }
        Some(spans)
    }
}

/// Whether `span` of `text` is a valid header value (the check `upstream_headers` repeats).
fn is_header_value(text: &Bytes, span: Span) -> bool {
    let range = span.range();
    range.start <= range.end
        && range.end <= text.len()
        && HeaderValue::from_maybe_shared(text.slice(range)).is_ok()
}

/// Lays out one identity's strings in one buffer.
#[derive(Default)]
struct TextBuilder {
    buf: Vec<u8>,
    /// Every span handed out, for [`TextBuilder::intern`].
    spans: Vec<Span>,
}

impl TextBuilder {
    /// Appends `s`. `None` only past `u32::MAX` bytes.
    fn push(&mut self, s: &str) -> Option<Span> {
        let start = u32::try_from(self.buf.len()).ok()?;
        let end = start.checked_add(u32::try_from(s.len()).ok()?)?;
        if end == u32::MAX {
            return None; // keeps `Span::ABSENT` out of range
        }
        self.buf.extend_from_slice(s.as_bytes());
        let span = Span { start, end };
        self.spans.push(span);
        Some(span)
    }

    /// The span of an equal string pushed before (say, a username that is the email), else
    /// appends `s`.
    fn intern(&mut self, s: &str) -> Option<Span> {
        let earlier =
            (self.spans.iter()).find(|span| self.buf.get(span.range()) == Some(s.as_bytes()));
        match earlier {
            Some(&span) => Some(span),
            None => self.push(s),
        }
    }

    /// `Span::ABSENT` for `None`; `None` only when the text is full.
    fn intern_opt(&mut self, s: Option<&str>) -> Option<Span> {
        match s {
            Some(s) => self.intern(s),
            None => Some(Span::ABSENT),
        }
    }

    fn finish(self) -> Bytes {
        // A boxed slice holds no spare capacity. The `Bytes` made from it is "promotable":
        // its first clone or `slice` allocates the shared refcount header, and later ones
        // only bump it. Promote it now, once, so the identity's memory does not grow on its
        // first request (and the memory benchmark measures the steady state).
        let text = Bytes::from(self.buf.into_boxed_slice());
        drop(text.clone());
        text
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

    fn identity(claims: Value) -> Option<Identity> {
        rules().identity(claims.as_object().unwrap())
    }

    fn headers(id: &Identity) -> Vec<(String, String)> {
        id.upstream_headers()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn builds_headers_from_claims() {
        let id = identity(json!({"sub": "u1", "email": "u1@x", "groups": ["a", "b"],
            "tenant_id": 42, "department": "ops", "secret_claim": "dropped"}))
        .unwrap();
        assert_eq!(
            headers(&id),
            pairs(&[
                ("x-forwarded-user", "u1"),
                ("x-forwarded-email", "u1@x"),
                ("x-forwarded-groups", "a,b"),
                ("x-tenant", "42"),
            ])
        );
        assert_eq!(id.sub(), "u1");
        assert_eq!(id.email(), Some("u1@x"));
        assert_eq!(id.preferred_username(), None);
        assert_eq!(id.sid(), None);
        assert!(id.groups().eq(["a", "b"]));
        assert!(id.claims().contains_key("department"));
        assert!(!id.claims().contains_key("secret_claim"));
    }

    #[test]
    fn absent_or_empty_claims_set_no_header_and_sub_is_required() {
        let id = identity(json!({"sub": "u", "email": "", "groups": [], "tenant_id": ""}));
        let id = id.unwrap();
        assert_eq!(headers(&id), pairs(&[("x-forwarded-user", "u")]));
        assert_eq!(
            id.email(),
            Some(""),
            "an empty claim is kept, just not sent"
        );
        let id = identity(json!({"sub": "u", "tenant_id": null, "groups": "  "})).unwrap();
        assert_eq!(headers(&id), pairs(&[("x-forwarded-user", "u")]));
        assert!(id.claims().get("tenant_id").is_some_and(Value::is_null));
        assert!(identity(json!({"email": "x"})).is_none());
        assert!(identity(json!({"sub": ""})).is_none());
    }

    #[test]
    fn groups_containing_commas_survive() {
        let id = identity(json!({"sub": "u", "groups": ["a,b", "c d", "100%"]})).unwrap();
        assert!(id.groups().eq(["a,b", "c d", "100%"]));
        let groups = |id: &Identity| {
            headers(id)
                .into_iter()
                .find(|(n, _)| n == "x-forwarded-groups")
        };
        assert_eq!(
            groups(&id).unwrap().1,
            "a%2Cb,c d,100%25",
            "one group never reads as two"
        );
        let id = identity(json!({"sub": "u", "groups": ["x,y"]})).unwrap();
        assert!(id.groups().eq(["x,y"]));
        assert_eq!(
            headers(&id),
            pairs(&[("x-forwarded-user", "u"), ("x-forwarded-groups", "x%2Cy")])
        );
        // Already-encoded text is encoded again: %2C in a name is not a comma.
        let id = identity(json!({"sub": "u", "groups": ["a%2Cb"]})).unwrap();
        assert_eq!(groups(&id).unwrap().1, "a%252Cb");
    }

    #[test]
    fn header_values_share_the_text() {
        let id = identity(json!({"sub": "alice", "email": "alice", "groups": ["ops"],
            "tenant_id": "ops"}))
        .unwrap();
        // `email` equals `sub` and the tenant equals the only group: stored once each.
        assert_eq!(&id.text[..], b"aliceops");
        let text = id.text.as_ptr_range();
        for (name, value) in id.upstream_headers() {
            let at = value.as_bytes().as_ptr();
            assert!(text.contains(&at), "{name} is a copy");
        }
        // Several groups: their joined value is stored once, after them.
        let id = identity(json!({"sub": "u", "groups": ["a", "b"]})).unwrap();
        assert_eq!(&id.text[..], b"uaba,b");
    }

    #[test]
    fn header_injection_refused() {
        let id = identity(json!({"sub": "u", "email": "a@b\r\nX-Evil: 1",
            "tenant_id": "t\n1"}))
        .unwrap();
        assert_eq!(headers(&id), pairs(&[("x-forwarded-user", "u")]));
        assert_eq!(id.email(), Some("a@b\r\nX-Evil: 1"));
    }

    /// 104 bytes, 120 with the `Arc` counts: a 128-byte allocation (64-bit targets).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn identity_stays_compact() {
        assert!(size_of::<Identity>() <= 104, "{}", size_of::<Identity>());
    }

    #[test]
    fn restore_keeps_the_stored_headers_and_shares_the_names() {
        let rules = rules();
        let original = identity(json!({"sub": "u", "email": "e", "groups": ["a", "b"],
            "tenant_id": 7, "department": "ops", "sid": "s"}))
        .unwrap();
        let stored_headers = headers(&original);
        let groups: Vec<String> = original.groups().map(str::to_owned).collect();
        let stored = |headers| IdentityParts {
            sub: original.sub(),
            email: original.email(),
            preferred_username: original.preferred_username(),
            groups: &groups,
            sid: original.sid(),
            claims: original.claims().clone(),
            headers,
        };
        let back = rules.restore(stored(&stored_headers)).unwrap();
        assert_eq!(back, original);
        assert!(Arc::ptr_eq(&back.names, rules.header_names()));
        // Only some of the configured headers, in order: still the shared list.
        let some = pairs(&[("x-forwarded-user", "u"), ("x-tenant", "7")]);
        let back = rules.restore(stored(&some)).unwrap();
        assert_eq!(headers(&back), some);
        assert!(Arc::ptr_eq(&back.names, rules.header_names()));
        // Names the configuration no longer has (or in another order): kept as stored.
        let other = pairs(&[("x-tenant", "7"), ("x-old", "u"), ("x-forwarded-user", "")]);
        let back = rules.restore(stored(&other)).unwrap();
        assert_eq!(headers(&back), other);
        assert!(!Arc::ptr_eq(&back.names, rules.header_names()));
        // A header that is not one is refused, as before.
        let bad_value = pairs(&[("x-a", "1\r\n")]);
        assert!(rules.restore(stored(&bad_value)).is_none());
        let bad_name = pairs(&[("bad name", "1")]);
        assert!(rules.restore(stored(&bad_name)).is_none());
    }
}
