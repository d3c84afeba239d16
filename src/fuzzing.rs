//! Entry points for the coverage-guided fuzz targets of `tests/fuzz/` (compiled only with the
//! `fuzzing` feature; not a public API).
//!
//! Each function takes the fuzzer's bytes, hands them to the gateway's real parser (nothing
//! here re-implements one) and asserts what must hold whatever the input: a panic here is a
//! finding. The input formats are plain text where they can be, so that seeds stay readable:
//! a header map is `name: value` lines, a config is TOML then `\0` then `NAME=value` lines.
//!
//! Every target builds its fixture (configuration, keys, route table) once per process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, LazyLock};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use figment::Figment;
use figment::providers::{Format, Toml};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use openidconnect::core::{CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use serde_json::Value;
use url::Url;

use crate::clock::Clock;
use crate::config::{Config, EnvOverrides};
use crate::cookie::CookieCodec;
use crate::fold::fold_name;
use crate::headers::{self, InboundHeaders};
use crate::oidc::jwt::{self, Expect, Verified};
use crate::policy::RouteTable;
use crate::policy::path::normalize_path;
use crate::redirect::{MAX_TARGET_BYTES, SafeRedirect};
use crate::seal::Keyring;
use crate::session::identity::IdentityRules;
use crate::session::memory::MemoryStore;
use crate::session::{Store, redis};

/// The configuration every target shares: identity headers, claim headers, a stripped header
/// and a route table with every kind of matcher.
const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
public_url = "https://app.example.com"
strip_request_headers = ["X-App-Secret"]
[upstream]
url = "http://127.0.0.1:9"
[oidc]
issuer = "https://idp.example.com"
client_id = "the-client"
client_secret = "the-secret"
bearer_audiences = ["api"]
[session]
cookie_secrets = ["AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=", "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI="]
[headers]
claims = { "X-Auth-Tenant" = "tenant" }
[[route]]
path = "/"
match = "exact"
policy = "public"
[[route]]
path = "/admin"
policy = "deny"
[[route]]
path = "/public/"
policy = "public"
[[route]]
path = "^/api/v[0-9]+/items$"
match = "regex"
methods = ["POST"]
require_groups = ["writers"]
[[route]]
path = "/docs"
methods = ["GET"]
policy = "public"
"#;

/// A signing key the fuzzer cannot sign with: tokens reach the claim checks through
/// [`jwt_claims`], built as if verified.
const JWKS: &str = r#"{"keys":[{"kty":"RSA","use":"sig","kid":"k1","alg":"RS256","e":"AQAB",
"n":"6x44K0rEBpWbWYI4HJtKe1XtagD81qv3e0EP4J-wD24SQFofAlKMaC4hvXTcbxMRESVphhecmqsnpprQZxHN3dd7aQW_S2yPOuKw4C7zx4eeXgvktRUGBsLzuKqKBaaq22NABFwQQoxg3G1W_v-mv_oabreafVv3FkeKW12pm3CBYAYA6yG7s2sTo_JIqMJY9iWzqPfm7PrLcuL29EmJS5u5g4kYVkFKfgFGQphO4BmiI4tVf4GdI4S6V7r-_48PgMprjUcqB55rEzSh8BQ7NHBg6I69e2K7-66ZnIuQC51KArSjbFE2h_w9NQFb5SL_WmAKGP0Jk89YPC06XbTq0Q"},
{"kty":"EC","use":"sig","kid":"k2","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;

struct Fixture {
    config: Config,
    public_url: Url,
    routes: RouteTable,
    rules: IdentityRules,
    inbound: InboundHeaders,
    cookie: CookieCodec,
    logins: crate::login::Logins,
    keyring: Keyring,
    jwks: CoreJsonWebKeySet,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let config = Config::from_figment(Figment::from(Toml::string(CONFIG)))
        .unwrap_or_else(|e| panic!("the fuzzing configuration is invalid:\n{e}"));
    let rules = IdentityRules::for_config(&config);
    let store = Arc::new(Store::Memory(MemoryStore::new(
        16,
        config.session.idle_timeout,
        config.session.absolute_timeout,
    )));
    let public_url = config.server.public_url.clone();
    Fixture {
        public_url: public_url.clone(),
        routes: RouteTable::new(&config.routes, &config.provider_resources(), &[]),
        inbound: InboundHeaders::new(rules.claim_headers(), &config.server.strip_request_headers),
        cookie: CookieCodec::new(&config.session),
        logins: crate::login::Logins::new(&config.session, &public_url, store, Clock::system()),
        keyring: Keyring::new(&config.session.cookie_secrets).unwrap(),
        jwks: serde_json::from_str(JWKS).unwrap(),
        rules,
        config,
    }
});

/// Parse a header map from `name: value` lines (`\n`-separated; a line that is no valid
/// header is skipped, so every input yields a map). Repeated names append.
pub fn header_map(data: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            map.append(name, value);
        }
    }
    map
}

// === path normalization and route matching ===

/// `normalize_path` then the route table, on an arbitrary request path. Asserts: no panic;
/// the result is a fixed point; no dot segment, empty segment (but a trailing one), encoded
/// slash or backslash, backslash or NUL survives; the route table takes any path.
pub fn path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let fixture = &*FIXTURE;
    for method in [Method::GET, Method::POST] {
        fixture.routes.find(&method, None, raw);
    }
    let Ok(normal) = normalize_path(raw) else {
        return;
    };
    assert_normal_path(&normal);
    for method in [Method::GET, Method::POST, Method::DELETE] {
        fixture.routes.find(&method, None, &normal);
    }
}

/// What every accepted, normalized path satisfies.
fn assert_normal_path(normal: &str) {
    let again = normalize_path(normal).unwrap_or_else(|e| panic!("{normal:?} refused: {e}"));
    assert_eq!(again, normal, "normalization is not idempotent");
    assert!(
        matches!(again, std::borrow::Cow::Borrowed(_)),
        "a normal path was copied"
    );
    assert!(normal.starts_with('/'), "{normal:?}");
    let upper = normal.to_ascii_uppercase();
    for bad in ["%2F", "%5C", "%00", "\\", "\0"] {
        assert!(!upper.contains(bad), "{bad:?} survived in {normal:?}");
    }
    let rest = &normal[1..];
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        assert!(
            segment != "." && segment != ".." && (last || !segment.is_empty()),
            "a dot or empty segment survived in {normal:?}"
        );
    }
}

// === redirect targets ===

/// `SafeRedirect::parse` on an arbitrary target. Asserts: the result is a path starting with
/// exactly one `/` that a browser resolves against the public URL to the same origin, bounded
/// in length, a valid header value, and a fixed point.
pub fn redirect(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let public_url = &FIXTURE.public_url;
    let target = SafeRedirect::parse(raw, public_url);
    assert_safe_redirect(target.as_str(), public_url);
}

fn assert_safe_redirect(target: &str, public_url: &Url) {
    assert!(target.len() <= MAX_TARGET_BYTES, "{} bytes", target.len());
    assert!(target.starts_with('/'), "{target:?}");
    let second = target.as_bytes().get(1);
    assert!(
        second != Some(&b'/') && second != Some(&b'\\'),
        "{target:?} reads as an authority"
    );
    assert!(HeaderValue::from_str(target).is_ok(), "{target:?}");
    let resolved = public_url.join(target).unwrap();
    assert_eq!(resolved.origin(), public_url.origin(), "{target:?}");
    assert_eq!(
        SafeRedirect::parse(target, public_url).as_str(),
        target,
        "not a fixed point"
    );
}

// === session and login cookies ===

/// The session cookie's decoding, and the login cookie's opening and decoding. The first 16
/// bytes (when there are) also make a session id that must round-trip. Asserts: a value that
/// decodes has no malleable second form (id and MAC in canonical base64url); a login
/// cookie's landing URL is a safe redirect.
pub fn session_cookie(data: &[u8]) {
    let fixture = &*FIXTURE;
    if let Some(id) = data.first_chunk::<16>() {
        let encoded = fixture.cookie.encode(id);
        assert_eq!(fixture.cookie.decode(&encoded), Some(*id));
    }
    if let Ok(value) = std::str::from_utf8(data) {
        if let Some(id) = fixture.cookie.decode(value) {
            // Signed by any configured secret (rotation), but written in one form only: the
            // id as base64url of its bytes, the MAC canonical base64url.
            let (id_text, mac_text) = value.split_once('.').unwrap();
            assert_eq!(
                id_text,
                URL_SAFE_NO_PAD.encode(id),
                "a second form verifies"
            );
            let mac = URL_SAFE_NO_PAD.decode(mac_text).unwrap();
            assert_eq!(
                mac_text,
                URL_SAFE_NO_PAD.encode(mac),
                "a second form verifies"
            );
        }
        // A sealed login cookie the fuzzer cannot forge: this exercises the opening only.
        let name = format!("{}_login_x", fixture.config.session.cookie_name);
        let mut headers = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(&format!("{name}={value}")) {
            headers.insert(http::header::COOKIE, v);
            assert!(fixture.logins.find(&headers, "x").is_none());
        }
    }
    // The sealed plaintext of a login cookie, as if it had opened.
    if let Some((login, _)) = crate::login::decode(data, &fixture.public_url, &[]) {
        assert_safe_redirect(login.landing.as_str(), &fixture.public_url);
    }
    let _ = fixture.cookie.session_key(&header_map(data));
}

// === the Cookie header ===

/// Cookie parsing and the removal of the gateway's cookies before a request goes upstream,
/// on an arbitrary header map. Asserts: no cookie the gateway owns survives, however the
/// others are written, and every other cookie is kept, in order.
pub fn cookie_header(data: &[u8]) {
    let fixture = &*FIXTURE;
    let mut map = header_map(data);
    let ours = |name: &str| name == fixture.cookie.name() || fixture.logins.is_login_cookie(name);
    let others_before: Vec<(Vec<u8>, Vec<u8>)> = headers::cookie_pairs(&map)
        .filter(|(n, _)| !std::str::from_utf8(n).is_ok_and(ours))
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    let _ = headers::find_cookie(&map, fixture.cookie.name()).map(str::len);
    let _ = fixture.cookie.session_key(&map);
    headers::remove_cookies(&mut map, ours);
    let after: Vec<(Vec<u8>, Vec<u8>)> = headers::cookie_pairs(&map)
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect();
    for (name, _) in &after {
        assert!(
            !std::str::from_utf8(name).is_ok_and(ours),
            "our cookie {:?} survived",
            String::from_utf8_lossy(name)
        );
    }
    assert_eq!(after, others_before, "other cookies changed");
}

// === identity headers ===

/// `InboundHeaders::sanitize` on an arbitrary header map, from a trusted and an untrusted
/// peer, with and without an upgrade. Asserts: no `Authorization` and no identity header (in
/// any spelling that folds to one) survives; from an untrusted peer no `X-Forwarded-*`,
/// `Forwarded` or configured strip header either.
pub fn identity_headers(data: &[u8]) {
    let fixture = &*FIXTURE;
    let identity: Vec<String> = std::iter::once("authorization".to_owned())
        .chain(
            fixture
                .rules
                .header_names()
                .iter()
                .map(|n| fold_name(n.as_str())),
        )
        .collect();
    let map = header_map(data);
    for (trusted, upgrade) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut headers = map.clone();
        fixture.inbound.sanitize(&mut headers, trusted, upgrade);
        for name in headers.keys() {
            let folded = fold_name(name.as_str());
            assert!(
                !identity.contains(&folded),
                "{name} survived (trusted: {trusted})"
            );
            if !trusted {
                assert!(
                    !folded.starts_with("x-forwarded-")
                        && folded != "forwarded"
                        && folded != "x-app-secret",
                    "{name} survived from an untrusted peer"
                );
            }
        }
    }
}

// === configuration ===

/// TOML, then (after the first NUL byte) `NAME=value` environment lines, loaded as at start.
/// Asserts: an error or a configuration, never a panic; every error names a key; a
/// configuration prints (redacted) as TOML that loads again.
pub fn config(data: &[u8]) {
    let (toml, env) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let Ok(toml) = std::str::from_utf8(toml) else {
        return;
    };
    let vars = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect::<Vec<_>>();
    // `*_file` keys read the files they name: such inputs are skipped (a path is the
    // operator's choice, and `/dev/zero` never ends).
    let reads_files = |s: &str| s.to_ascii_lowercase().contains("_file");
    if reads_files(toml) || vars.iter().any(|(k, _)| reads_files(k)) {
        return;
    }
    let figment = Figment::new()
        .merge(Toml::string(toml))
        .merge(EnvOverrides::from_vars(vars));
    match Config::from_figment(figment) {
        Ok(config) => {
            let printed = config.redacted_toml();
            assert!(!printed.starts_with("# cannot print"), "{printed}");
        }
        Err(errors) => {
            assert!(!errors.0.is_empty());
            for e in &errors.0 {
                assert!(!e.key.is_empty(), "an error without a key: {e}");
            }
        }
    }
}

// === JWTs and logout tokens ===

/// A compact JWT through the signature check against a fixed JWKS (the fuzzer cannot sign:
/// this covers parsing and the algorithm and key choice), the unverified payload reader and
/// the key-rotation hint; then the bytes as a logout request body.
pub fn jwt(data: &[u8]) {
    let fixture = &*FIXTURE;
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let allowed = [
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
        CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        CoreJwsSigningAlgorithm::HmacSha256,
    ];
    let verified = jwt::verify_signature(token, &fixture.jwks, &allowed);
    assert!(verified.is_err(), "an unsigned token verified: {token:?}");
    let _ = jwt::decode_payload(token);
    let _ = jwt::names_unknown_kid(token, &fixture.jwks);
    if let Some(token) = crate::endpoints::logout_token_from_form(data) {
        let _ = jwt::verify_signature(&token, &fixture.jwks, &allowed);
    }
}

/// The claim checks, on a header and claims as if their signature had verified: the JWT's
/// header JSON, a NUL, its claims JSON (the rest of the input: `now` is fixed). Asserts what
/// an accepted token has: the issuer; the audience; for an access token no ID-token claims
/// and an `exp` not past; for a logout token a recent `iat`, a `jti`, the event, a `sid` or
/// `sub` and no `nonce`.
pub fn jwt_claims(data: &[u8]) {
    const NOW: u64 = 1_800_000_000;
    let (header, claims) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (&b"{}"[..], data),
    };
    let (Ok(Value::Object(header)), Ok(Value::Object(claims))) = (
        serde_json::from_slice::<Value>(header),
        serde_json::from_slice::<Value>(claims),
    ) else {
        return;
    };
    let token = Verified { header, claims };
    let issuer = "https://idp.example.com";
    let audiences = ["api".to_owned()];
    let claims = &token.claims;
    let aud_has = |want: &str| match claims.get("aud") {
        Some(Value::String(a)) => a == want,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(want)),
        _ => false,
    };
    if jwt::check_claims(
        &token,
        Expect::AccessToken {
            audiences: &audiences,
        },
        issuer,
        "the-client",
        NOW,
    )
    .is_ok()
    {
        assert_eq!(claims.get("iss").and_then(Value::as_str), Some(issuer));
        assert!(aud_has("api"));
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap();
        assert!(exp.saturating_add(jwt::LEEWAY_SECS) >= NOW);
        for id_token_claim in ["nonce", "at_hash", "c_hash"] {
            assert!(!claims.contains_key(id_token_claim));
        }
    }
    if jwt::check_claims(&token, Expect::LogoutToken, issuer, "the-client", NOW).is_ok() {
        assert_eq!(claims.get("iss").and_then(Value::as_str), Some(issuer));
        assert!(aud_has("the-client"));
        let iat = claims.get("iat").and_then(Value::as_u64).unwrap();
        assert!(iat <= NOW + jwt::LEEWAY_SECS);
        assert!(iat + jwt::LOGOUT_TOKEN_MAX_AGE_SECS + jwt::LEEWAY_SECS >= NOW);
        assert!(claims.get("jti").and_then(Value::as_str).is_some());
        assert!(!claims.contains_key("nonce"));
        let event = &claims["events"][jwt::BACKCHANNEL_EVENT];
        assert!(event.is_object());
        assert!(
            claims.get("sid").and_then(Value::as_str).is_some()
                || claims.get("sub").and_then(Value::as_str).is_some()
        );
    }
}

// === the Redis record codec ===

/// A stored record's plaintext decoded, and a sealed record opened. Asserts: arbitrary bytes
/// never panic; a record that decodes encodes again, and that encoding decodes to a record
/// that encodes to the same bytes (the round trip is stable); a sealed record round-trips;
/// the value layouts parse without panic (see [`redis_value_layout`]).
pub fn redis_record(data: &[u8]) {
    let fixture = &*FIXTURE;
    if let Some(session) = redis::codec::decode_session(data, &fixture.rules) {
        let encoded = redis::codec::encode_session(&session, &fixture.rules)
            .expect("a decoded record encodes");
        let again = redis::codec::decode_session(&encoded, &fixture.rules)
            .expect("an encoded record decodes");
        let twice = redis::codec::encode_session(&again, &fixture.rules).expect("re-encodes");
        assert_eq!(encoded, twice, "the round trip is not stable");
        let sealed = fixture.keyring.seal(b"ctx", 7, &encoded).unwrap();
        assert_eq!(fixture.keyring.open(b"ctx", &sealed), Some((encoded, 7)));
        assert!(fixture.keyring.open(b"other", &sealed).is_none());
    }
    assert!(
        fixture.keyring.open(b"ctx", data).is_none(),
        "forged a sealed record"
    );
    redis_value_layout(data);
}

/// A stored value's layout (the record alone, or after its revocation envelope), as the
/// store and the admin API take it apart. Asserts: arbitrary bytes never panic; a value that
/// parses as a record with an envelope is framed again from its parts into the same bytes;
/// no envelope is forged.
fn redis_value_layout(data: &[u8]) {
    let fixture = &*FIXTURE;
    let (record, envelope) = redis::envelope::split(data);
    if let Some(envelope) = envelope {
        let framed = redis::envelope::frame(record.into_owned(), Some(envelope))
            .expect("a value taken apart frames again");
        assert_eq!(framed, data, "framing a value taken apart changed it");
    }
    assert!(
        redis::envelope::open(&fixture.keyring, "session:x", data, &fixture.rules).is_none(),
        "forged an envelope"
    );
}

// === forward auth ===

/// How `/oauth2/auth` reads a trusted proxy's original request (`X-Forwarded-Method`,
/// `X-Forwarded-Uri` or `X-Original-URI`) from an arbitrary header map, then normalizes its
/// path and finds its route. Asserts: the URI is an origin-form path; its normalization (when
/// accepted) is a normal path.
pub fn forward_auth(data: &[u8]) {
    let fixture = &*FIXTURE;
    let map = header_map(data);
    let Ok((method, uri)) = crate::endpoints::original_request(&map) else {
        return;
    };
    assert!(uri.path().starts_with('/'), "{uri}");
    assert!(uri.scheme().is_none() && uri.authority().is_none(), "{uri}");
    if let Ok(path) = normalize_path(uri.path()) {
        assert_normal_path(&path);
        fixture.routes.find(&method, None, &path);
    }
}
