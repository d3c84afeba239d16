//! Verifying JWTs that are not ID tokens: bearer tokens of machine clients and back-channel
//! logout tokens. Signature against the provider's JWKS with an asymmetric algorithm the
//! provider advertises, then the claims of the token's kind ([`Expect`]), with one leeway
//! ([`LEEWAY_SECS`]) and saturating arithmetic (a forged `exp` of `u64::MAX` is just far
//! away). [`super::Oidc::verify_jwt`] puts the two together with the JWKS refetch.
//!
//! `alg=none` and every HMAC algorithm are refused outright: accepting `HS256` would let
//! anyone sign with the provider's *public* key as the HMAC secret. So is every token with a
//! `crit` header: RFC 7515 section 4.1.11 says a recipient MUST refuse
//! a JWS naming a critical extension it does not understand, and this gateway understands
//! none. (ID tokens are verified by openidconnect, which refuses any `crit` too.)

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use openidconnect::core::{CoreJsonWebKey, CoreJsonWebKeySet, CoreJwsSigningAlgorithm};
use openidconnect::{JsonWebKey, JsonWebKeyId};
use serde_json::{Map, Value};

/// Clock skew tolerated on every time claim (`exp`, `nbf`, `iat`) of the tokens verified
/// here: 60 s, the common default (the jsonwebtoken crate's).
pub const LEEWAY_SECS: u64 = 60;
/// A logout token is accepted only this long after its `iat` (plus leeway): 10 minutes.
pub const LOGOUT_TOKEN_MAX_AGE_SECS: u64 = 600;
/// The OpenID Back-Channel Logout event (section 2.4).
pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// The claims of a verified token.
pub type Claims = Map<String, Value>;

/// What a token must be, beyond a good signature.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// A machine client's access token on a passthrough route: `iss`, `aud` one of
    /// `audiences`, `exp` (required) and `nbf`; not shaped like an ID token
    /// (see `is_access_token`).
    AccessToken { audiences: &'a [String] },
    /// A back-channel logout token (Back-Channel Logout 1.0 section 2.6):
    /// `iss`, `aud` the client id, a recent `iat`, `exp` and `nbf` when present, a `jti`, the
    /// back-channel event as a JSON object, a `sid` or `sub` (strings), no `nonce`.
    LogoutToken,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the provider is not available yet")]
    NotReady,
    #[error("malformed token")]
    Malformed,
    #[error("signing algorithm not accepted")]
    Algorithm,
    #[error("no key for this token (unknown kid)")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("token issued in the future")]
    IssuedInFuture,
    #[error("token issued too long ago")]
    TooOld,
    #[error("not an access token")]
    NotAnAccessToken,
    #[error("a time claim is not a whole number of seconds")]
    NotANumericDate,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("critical header parameter not understood")]
    Critical,
    #[error("{0}")]
    Claim(&'static str),
}

/// A JWS whose signature verified: its header and its claims.
#[derive(Debug, PartialEq)]
pub struct Verified {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
}

/// The JSON payload of a compact JWT, WITHOUT verifying anything. Only for tokens already
/// verified, or for reading a timing hint (`exp`) from a token we hold anyway.
pub fn decode_payload(jwt: &str) -> Option<Map<String, Value>> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Whether a JWT's header names a `kid` that `jwks` lacks: then a JWKS refetch may help (the
/// provider rotated its keys).
pub fn names_unknown_kid(jwt: &str, jwks: &CoreJsonWebKeySet) -> bool {
    let kid = jwt
        .split('.')
        .next()
        .and_then(|header| URL_SAFE_NO_PAD.decode(header).ok())
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|header| header.get("kid")?.as_str().map(str::to_owned));
    kid.is_some_and(|kid| {
        let kid = JsonWebKeyId::new(kid);
        !jwks.keys().iter().any(|key| key.key_id() == Some(&kid))
    })
}

/// Check the header and the signature; return the header and the claims.
pub fn verify_signature(
    jwt: &str,
    jwks: &CoreJsonWebKeySet,
    allowed: &[CoreJwsSigningAlgorithm],
) -> Result<Verified, JwtError> {
    let mut parts = jwt.split('.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let Value::Object(header) = decode_json(header_b64)? else {
        return Err(JwtError::Malformed);
    };
    if header.contains_key("crit") {
        return Err(JwtError::Critical);
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwtError::Malformed)?;
    let alg = accepted_algorithm(alg, allowed)?;
    let kid = header.get("kid").and_then(Value::as_str);
    let signature = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| JwtError::Malformed)?;
    let message = &jwt[..header_b64.len() + 1 + payload_b64.len()];
    let verified = {
        let mut candidates = candidate_keys(jwks, kid).peekable();
        if candidates.peek().is_none() {
            return Err(JwtError::UnknownKey);
        }
        candidates.any(|key| {
            key.verify_signature(&alg, message.as_bytes(), &signature)
                .is_ok()
        })
    };
    if !verified {
        return Err(JwtError::Signature);
    }
    match decode_json(payload_b64)? {
        Value::Object(claims) => Ok(Verified { header, claims }),
        _ => Err(JwtError::Malformed),
    }
}

/// The claim checks of a token of kind `expect` whose signature verified, at `now` (Unix
/// seconds). `issuer` is the provider's; `client_id` the logout tokens' audience.
pub fn check_claims(
    token: &Verified,
    expect: Expect<'_>,
    issuer: &str,
    client_id: &str,
    now: u64,
) -> Result<(), JwtError> {
    let claims = &token.claims;
    if matches!(expect, Expect::AccessToken { .. }) && !is_access_token(token) {
        return Err(JwtError::NotAnAccessToken);
    }
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(JwtError::Issuer);
    }
    let aud = claims.get("aud");
    let aud_ok = match expect {
        Expect::AccessToken { audiences } => {
            audience_matches(aud, |a| audiences.iter().any(|x| x == a))
        }
        Expect::LogoutToken => audience_matches(aud, |a| a == client_id),
    };
    if !aud_ok {
        return Err(JwtError::Audience);
    }
    check_times(claims, expect, now)?;
    if let Expect::LogoutToken = expect {
        check_logout_claims(claims)?;
    }
    Ok(())
}

/// `exp` not past, `nbf` not ahead, and for a logout token an `iat` neither ahead nor older
/// than [`LOGOUT_TOKEN_MAX_AGE_SECS`]: each with [`LEEWAY_SECS`], saturating.
fn check_times(claims: &Claims, expect: Expect<'_>, now: u64) -> Result<(), JwtError> {
    let logout = matches!(expect, Expect::LogoutToken);
    match numeric_date(claims, "exp")? {
        Some(exp) if now > exp.saturating_add(LEEWAY_SECS) => return Err(JwtError::Expired),
        Some(_) => {}
        // A logout token's life is bounded by its `iat` instead.
        None if logout => {}
        None => return Err(JwtError::Claim("no exp")),
    }
    if let Some(nbf) = numeric_date(claims, "nbf")?
        && nbf > now.saturating_add(LEEWAY_SECS)
    {
        return Err(JwtError::NotYetValid);
    }
    if logout {
        let iat = numeric_date(claims, "iat")?.ok_or(JwtError::Claim("no iat"))?;
        if iat > now.saturating_add(LEEWAY_SECS) {
            return Err(JwtError::IssuedInFuture);
        }
        let oldest = now.saturating_sub(LOGOUT_TOKEN_MAX_AGE_SECS.saturating_add(LEEWAY_SECS));
        if iat < oldest {
            return Err(JwtError::TooOld);
        }
    }
    Ok(())
}

/// A time claim: absent, or a whole, non-negative number of seconds. Anything else (a
/// string, a negative or fractional number, one past `u64`) is refused rather than ignored:
/// an `nbf` the gateway cannot read must not count as no `nbf`.
fn numeric_date(claims: &Claims, name: &str) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or(JwtError::NotANumericDate),
    }
}

/// The rest of Back-Channel Logout 1.0 section 2.6 (the texts are the
/// 400 answer's `error_description`).
fn check_logout_claims(claims: &Claims) -> Result<(), JwtError> {
    match claims.get("jti") {
        Some(Value::String(jti)) if !jti.is_empty() => {}
        _ => return Err(JwtError::Claim("no jti")),
    }
    let event = claims
        .get("events")
        .and_then(Value::as_object)
        .ok_or(JwtError::Claim("events is not a JSON object"))?
        .get(BACKCHANNEL_EVENT)
        .ok_or(JwtError::Claim("not a back-channel logout event"))?;
    if !event.is_object() {
        return Err(JwtError::Claim(
            "the back-channel logout event is not a JSON object",
        ));
    }
    if claims.contains_key("nonce") {
        return Err(JwtError::Claim("a logout token must not carry a nonce"));
    }
    let mut named = false;
    for name in ["sid", "sub"] {
        match claims.get(name) {
            None => {}
            Some(Value::String(_)) => named = true,
            Some(_) => return Err(JwtError::Claim("sid and sub must be strings")),
        }
    }
    if !named {
        return Err(JwtError::Claim("neither sid nor sub"));
    }
    Ok(())
}

/// Not shaped like an ID token. An ID token is signed by the same
/// provider, and its audience is the client id; it also reaches the browser (the sign-out
/// redirect carries it as `id_token_hint`). So a token is refused whatever its audience when
/// it has a `nonce`, `at_hash` or `c_hash` claim (only ID tokens carry them), or a `typ`
/// header other than `at+jwt` (RFC 9068) or `JWT`. `typ` compares case-insensitively, with or
/// without the `application/` prefix (RFC 7515 section 4.1.9, RFC 8725 section 3.11).
fn is_access_token(jws: &Verified) -> bool {
    const ID_TOKEN_CLAIMS: [&str; 3] = ["nonce", "at_hash", "c_hash"];
    if ID_TOKEN_CLAIMS.iter().any(|c| jws.claims.contains_key(*c)) {
        return false;
    }
    match jws.header.get("typ") {
        None => true,
        Some(Value::String(typ)) => {
            let typ = typ.to_ascii_lowercase();
            let typ = typ.strip_prefix("application/").unwrap_or(&typ);
            typ == "at+jwt" || typ == "jwt"
        }
        Some(_) => false,
    }
}

/// `aud`, a string or a list of strings, names an accepted audience.
fn audience_matches(aud: Option<&Value>, accepted: impl Fn(&str) -> bool) -> bool {
    match aud {
        Some(Value::String(a)) => accepted(a),
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(accepted),
        _ => false,
    }
}

fn accepted_algorithm(
    alg: &str,
    allowed: &[CoreJwsSigningAlgorithm],
) -> Result<CoreJwsSigningAlgorithm, JwtError> {
    let alg: CoreJwsSigningAlgorithm =
        serde_json::from_value(Value::String(alg.to_owned())).map_err(|_| JwtError::Algorithm)?;
    if is_symmetric(&alg) || !allowed.contains(&alg) {
        return Err(JwtError::Algorithm);
    }
    Ok(alg)
}

/// HMAC algorithms (and `none`, which does not even parse) are never accepted here.
pub fn is_symmetric(alg: &CoreJwsSigningAlgorithm) -> bool {
    matches!(
        alg,
        CoreJwsSigningAlgorithm::HmacSha256
            | CoreJwsSigningAlgorithm::HmacSha384
            | CoreJwsSigningAlgorithm::HmacSha512
            | CoreJwsSigningAlgorithm::None
    )
}

fn candidate_keys<'k>(
    jwks: &'k CoreJsonWebKeySet,
    kid: Option<&'k str>,
) -> impl Iterator<Item = &'k CoreJsonWebKey> + 'k {
    jwks.keys().iter().filter(move |key| {
        let usable = key
            .key_use()
            .is_none_or(openidconnect::JsonWebKeyUse::allows_signature);
        let kid_ok = match (kid, key.key_id()) {
            (Some(kid), Some(id)) => id == &JsonWebKeyId::new(kid.to_owned()),
            (Some(_), None) => false,
            (None, _) => true,
        };
        usable && kid_ok
    })
}

fn decode_json(b64: &str) -> Result<Value, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ISS: &str = "https://i";
    const CLIENT: &str = "the-client";
    const NOW: u64 = 1_800_000_000;

    fn jws(header: Value, claims: Value) -> Verified {
        let (Value::Object(header), Value::Object(claims)) = (header, claims) else {
            panic!("objects only")
        };
        Verified { header, claims }
    }

    /// `claims` over valid access-token claims (a `null` removes one), checked at `now`.
    fn access(patch: Value, now: u64) -> Result<(), JwtError> {
        let claims = patched(json!({"iss": ISS, "aud": ["x", "api"], "exp": NOW}), patch);
        let audiences = ["api".to_owned()];
        let expect = Expect::AccessToken {
            audiences: &audiences,
        };
        check_claims(
            &jws(json!({"alg": "RS256"}), claims),
            expect,
            ISS,
            CLIENT,
            now,
        )
    }

    /// `claims` over valid logout-token claims, checked at `now`.
    fn logout(patch: Value, now: u64) -> Result<(), JwtError> {
        let valid = json!({
            "iss": ISS, "aud": CLIENT, "iat": NOW, "jti": "j-1", "sub": "alice",
            "events": {BACKCHANNEL_EVENT: {}},
        });
        let token = jws(json!({"alg": "RS256"}), patched(valid, patch));
        check_claims(&token, Expect::LogoutToken, ISS, CLIENT, now)
    }

    fn patched(mut claims: Value, patch: Value) -> Value {
        for (k, v) in patch.as_object().unwrap() {
            match v {
                Value::Null => drop(claims.as_object_mut().unwrap().remove(k)),
                v => claims[k] = v.clone(),
            }
        }
        claims
    }

    #[test]
    fn access_token_claims_with_60_seconds_of_leeway() {
        let none = json!({});
        assert_eq!(access(none.clone(), NOW), Ok(()));
        assert_eq!(access(none.clone(), NOW + 59), Ok(()));
        assert_eq!(access(none.clone(), NOW + 60), Ok(()));
        assert_eq!(access(none.clone(), NOW + 61), Err(JwtError::Expired));
        let nbf = json!({"nbf": NOW});
        assert_eq!(access(nbf.clone(), NOW - 60), Ok(()));
        assert_eq!(access(nbf, NOW - 61), Err(JwtError::NotYetValid));
        assert_eq!(
            access(json!({"exp": null}), NOW),
            Err(JwtError::Claim("no exp"))
        );
        assert_eq!(
            access(json!({"iss": "https://j"}), NOW),
            Err(JwtError::Issuer)
        );
        assert_eq!(access(json!({"iss": null}), NOW), Err(JwtError::Issuer));
        assert_eq!(access(json!({"aud": "api"}), NOW), Ok(()));
        for aud in [json!("nope"), json!(["a", 7]), json!(7), Value::Null] {
            assert_eq!(
                access(json!({ "aud": aud }), NOW),
                Err(JwtError::Audience),
                "{aud}"
            );
        }
        // The access-token audiences, not the client id.
        assert_eq!(
            access(json!({ "aud": CLIENT }), NOW),
            Err(JwtError::Audience)
        );
    }

    /// A logout token's `iat` is within the last 10 minutes, plus the leeway either way.
    #[test]
    fn logout_tokens_are_recent() {
        let at = |iat: u64, exp: Option<u64>| logout(json!({"iat": iat, "exp": exp}), NOW);
        assert_eq!(at(NOW, None), Ok(()));
        assert_eq!(at(NOW - 659, None), Ok(()));
        assert_eq!(at(NOW - 660, None), Ok(()));
        assert_eq!(at(NOW - 661, None), Err(JwtError::TooOld));
        assert_eq!(at(NOW - 365 * 86400, None), Err(JwtError::TooOld));
        assert_eq!(at(NOW + 59, None), Ok(()));
        assert_eq!(at(NOW + 60, None), Ok(()));
        assert_eq!(at(NOW + 61, None), Err(JwtError::IssuedInFuture));
        assert_eq!(at(NOW, Some(NOW - 59)), Ok(()));
        assert_eq!(at(NOW, Some(NOW - 61)), Err(JwtError::Expired));
        let nbf = |nbf: u64| logout(json!({ "nbf": nbf }), NOW);
        assert_eq!(nbf(NOW + 59), Ok(()));
        assert_eq!(nbf(NOW + 61), Err(JwtError::NotYetValid));
        assert_eq!(
            logout(json!({"iat": null}), NOW),
            Err(JwtError::Claim("no iat"))
        );
    }

    #[test]
    fn logout_token_claims() {
        assert_eq!(logout(json!({"aud": [CLIENT, "x"]}), NOW), Ok(()));
        assert_eq!(logout(json!({"sub": null, "sid": "s"}), NOW), Ok(()));
        let refused = [
            (json!({"iss": "https://j"}), JwtError::Issuer),
            (json!({"aud": "api"}), JwtError::Audience),
            (json!({"jti": null}), JwtError::Claim("no jti")),
            (json!({"jti": ""}), JwtError::Claim("no jti")),
            (json!({"jti": 42}), JwtError::Claim("no jti")),
            (
                json!({"events": [BACKCHANNEL_EVENT]}),
                JwtError::Claim("events is not a JSON object"),
            ),
            (
                json!({"events": {"urn:other": {}}}),
                JwtError::Claim("not a back-channel logout event"),
            ),
            (
                json!({"events": {BACKCHANNEL_EVENT: true}}),
                JwtError::Claim("the back-channel logout event is not a JSON object"),
            ),
            (
                json!({"nonce": "n"}),
                JwtError::Claim("a logout token must not carry a nonce"),
            ),
            (
                json!({"sid": ["x"]}),
                JwtError::Claim("sid and sub must be strings"),
            ),
            (json!({"sub": null}), JwtError::Claim("neither sid nor sub")),
        ];
        for (patch, error) in refused {
            assert_eq!(logout(patch.clone(), NOW), Err(error), "{patch}");
        }
    }

    /// Saturating arithmetic: no claim value, however large, overflows (a panic in debug
    /// builds, a wrong answer in release ones), and neither does a clock at its end.
    #[test]
    fn huge_times_never_overflow() {
        let max = u64::MAX;
        assert_eq!(access(json!({ "exp": max }), NOW), Ok(()));
        assert_eq!(access(json!({ "exp": max }), max), Ok(()));
        assert_eq!(access(json!({ "exp": 0 }), max), Err(JwtError::Expired));
        assert_eq!(access(json!({ "exp": 0 }), 0), Ok(()));
        assert_eq!(
            access(json!({ "nbf": max }), NOW),
            Err(JwtError::NotYetValid)
        );
        assert_eq!(access(json!({ "nbf": max, "exp": max }), max), Ok(()));
        assert_eq!(
            logout(json!({ "iat": max }), NOW),
            Err(JwtError::IssuedInFuture)
        );
        assert_eq!(logout(json!({ "iat": max, "exp": max }), max), Ok(()));
        assert_eq!(logout(json!({ "iat": 0 }), max), Err(JwtError::TooOld));
        assert_eq!(logout(json!({ "iat": 0 }), 0), Ok(()));
        assert_eq!(
            logout(json!({ "iat": max, "exp": 0 }), max),
            Err(JwtError::Expired)
        );
    }

    /// A time claim the gateway cannot read is refused, never taken as absent.
    #[test]
    fn time_claims_are_whole_seconds() {
        let unreadable = [
            json!("tomorrow"),
            json!(-1),
            json!(1.5),
            json!(1e300),
            json!([1]),
        ];
        for bad in unreadable {
            for claim in ["exp", "nbf"] {
                let patch = json!({ claim: bad });
                assert_eq!(access(patch.clone(), NOW), Err(JwtError::NotANumericDate));
                assert_eq!(logout(patch, NOW), Err(JwtError::NotANumericDate));
            }
            assert_eq!(
                logout(json!({ "iat": bad }), NOW),
                Err(JwtError::NotANumericDate)
            );
        }
        // A JSON `null` claim is present, and not a number either.
        let mut claims = json!({"iss": ISS, "aud": "api", "exp": NOW});
        claims["nbf"] = Value::Null;
        let audiences = ["api".to_owned()];
        let expect = Expect::AccessToken {
            audiences: &audiences,
        };
        assert_eq!(
            check_claims(&jws(json!({}), claims), expect, ISS, CLIENT, NOW),
            Err(JwtError::NotANumericDate)
        );
    }

    #[test]
    fn id_token_shapes_are_not_access_tokens() {
        let plain = json!({"sub": "svc", "aud": "api"});
        let accepted = [
            "JWT",
            "jwt",
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/JWT",
        ];
        assert!(
            is_access_token(&jws(json!({"alg": "RS256"}), plain.clone())),
            "no typ"
        );
        for typ in accepted {
            let header = json!({"alg": "RS256", "typ": typ});
            assert!(is_access_token(&jws(header, plain.clone())), "{typ}");
        }
        let refused = [
            json!("id_token+jwt"),
            json!("logout+jwt"),
            json!("JOSE"),
            json!("application/jwt+x"),
            json!("xat+jwt"),
            json!(""),
            json!(7),
        ];
        for typ in refused {
            let header = json!({"alg": "RS256", "typ": typ});
            assert!(!is_access_token(&jws(header, plain.clone())), "{typ}");
        }
        for claim in ["nonce", "at_hash", "c_hash"] {
            let claims = json!({"sub": "svc", claim: "x"});
            let header = json!({"alg": "RS256", "typ": "at+jwt"});
            assert!(!is_access_token(&jws(header, claims)), "{claim}");
        }
        // Checked first, whatever the audience: an ID token for the client id.
        assert_eq!(
            access(json!({"nonce": "n", "aud": CLIENT}), NOW),
            Err(JwtError::NotAnAccessToken)
        );
        // Logout tokens are not held to it (their own rules refuse a nonce).
        let logout_typ = jws(
            json!({"alg": "RS256", "typ": "logout+jwt"}),
            patched(
                json!({"iss": ISS, "aud": CLIENT, "iat": NOW, "jti": "j", "sid": "s"}),
                json!({"events": {BACKCHANNEL_EVENT: {}}}),
            ),
        );
        assert_eq!(
            check_claims(&logout_typ, Expect::LogoutToken, ISS, CLIENT, NOW),
            Ok(())
        );
    }

    #[test]
    fn unknown_kids() {
        let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let empty = CoreJsonWebKeySet::new(vec![]);
        let with_kid = format!("{}.e30.c2ln", b64(json!({"alg": "RS256", "kid": "k"})));
        assert!(names_unknown_kid(&with_kid, &empty));
        let without = format!("{}.e30.c2ln", b64(json!({"alg": "RS256"})));
        assert!(!names_unknown_kid(&without, &empty));
        assert!(!names_unknown_kid("garbage", &empty));
    }

    #[test]
    fn none_and_hmac_refused() {
        let allowed = [CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256];
        assert_eq!(
            accepted_algorithm("none", &allowed),
            Err(JwtError::Algorithm)
        );
        assert_eq!(
            accepted_algorithm("HS256", &allowed),
            Err(JwtError::Algorithm)
        );
        assert_eq!(
            accepted_algorithm("ES256", &allowed),
            Err(JwtError::Algorithm)
        );
        assert!(accepted_algorithm("RS256", &allowed).is_ok());
    }

    #[test]
    fn malformed_tokens() {
        let jwks = CoreJsonWebKeySet::new(vec![]);
        for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert_eq!(
                verify_signature(bad, &jwks, &[]),
                Err(JwtError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn any_crit_header_is_refused() {
        let jwks = CoreJsonWebKeySet::new(vec![]);
        let b64 = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let payload = b64(json!({"sub": "x"}));
        for crit in [json!(["exp"]), json!([]), json!("b64"), json!(null)] {
            let header = b64(json!({"alg": "RS256", "kid": "k", "crit": crit}));
            assert_eq!(
                verify_signature(&format!("{header}.{payload}.c2ln"), &jwks, &[]),
                Err(JwtError::Critical),
                "{crit}"
            );
        }
        let not_an_object = b64(json!(["alg", "RS256"]));
        assert_eq!(
            verify_signature(&format!("{not_an_object}.{payload}.c2ln"), &jwks, &[]),
            Err(JwtError::Malformed)
        );
    }
}
