//! Inputs the fuzz targets of `tests/fuzz/` found failing, replayed through the same public
//! functions the targets call (`authgate::fuzzing` asserts the same properties), so that the
//! normal suite keeps them fixed. Each test names its target and what the input broke.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use authgate::headers::{cookie_pairs, remove_cookies};
use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

fn cookies(values: &[&[u8]]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for v in values {
        h.append(COOKIE, HeaderValue::from_bytes(v).unwrap());
    }
    h
}

fn pairs(h: &HeaderMap) -> Vec<(String, String)> {
    cookie_pairs(h)
        .map(|(n, v)| {
            (
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

/// Target `cookie_header`: a nameless cookie whose value holds `=` (`=authgate_session=x`)
/// was written back without its `=`, as `authgate_session=x`: once the gateway had removed
/// its own cookies, the upstream received a session cookie the client had chosen.
#[test]
fn a_nameless_cookie_is_not_rewritten_into_ours() {
    let ours = |name: &str| name == "authgate_session";
    let mut h = cookies(&[b"authgate_session=real; =authgate_session=forged; a=1"]);
    remove_cookies(&mut h, ours);
    let after = pairs(&h);
    assert!(after.iter().all(|(n, _)| !ours(n)), "{after:?}");
    assert_eq!(
        after,
        [
            (String::new(), "authgate_session=forged".to_owned()),
            ("a".to_owned(), "1".to_owned())
        ]
    );
}

/// Target `cookie_header`, its first crash (`=: a=1` beside one of ours): the same rewrite
/// turned a nameless cookie into one named `: a`; an empty nameless pair (`=`) vanished.
#[test]
fn other_cookies_read_the_same_after_ours_are_removed() {
    let ours =
        |name: &str| name == "authgate_session" || name.starts_with("authgate_session_login_");
    for header in [
        &b"authgate_session_login_abc=1; =: a=1; ;authgate_ie: a==1kie: authgateld"[..],
        b"authgate_session=1; =; b=2",
        b"=x=y; authgate_session=1; noequals",
    ] {
        let mut h = cookies(&[header]);
        let before: Vec<_> = pairs(&h).into_iter().filter(|(n, _)| !ours(n)).collect();
        remove_cookies(&mut h, ours);
        assert_eq!(pairs(&h), before, "{}", String::from_utf8_lossy(header));
    }
}

const MINIMAL: &str = r#"
[server]
public_url = "https://app.example.com"
[upstream]
url = "http://127.0.0.1:8080"
[oidc]
issuer = "https://idp.example.com"
client_id = "c"
client_secret = "s"
[session]
cookie_secrets = ["AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="]
"#;

fn load(vars: &[(&str, &str)]) -> Result<authgate::config::Config, authgate::config::ConfigErrors> {
    use figment::Figment;
    use figment::providers::{Format, Toml};
    let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let figment =
        Figment::from(Toml::string(MINIMAL)).merge(authgate::config::EnvOverrides::from_vars(vars));
    authgate::config::Config::from_figment(figment)
}

/// Target `config`: an override of a key that is not plain text, whose value is a quoted
/// string with an escape after a non-ASCII character, panicked in figment's value parser
/// (it slices the string at a character index). Now it is an error naming the key.
#[test]
fn a_quoted_override_with_an_escape_after_non_ascii_is_an_error_not_a_panic() {
    for (name, value) in [
        (
            "AUTHGATE_SERVER__PUBLILISSUER",
            "\"https://id\u{fffd}.\\example_id = \"c\"",
        ),
        ("AUTHGATE_SERVER__MAX_CONNECTIONS", "\"é\\n\""),
        ("AUTHGATE_OIDC__EXTRA_AUTH_PARAMS", "{ prompt = \"é\\t\" }"),
    ] {
        let errors = load(&[(name, value)]).expect_err(name);
        assert!(!errors.0.is_empty(), "{name}");
    }
    // The same escapes without a non-ASCII character still parse as figment reads them.
    let config = load(&[("AUTHGATE_SERVER__MAX_CONNECTIONS", "12")]).unwrap();
    assert_eq!(config.server.max_connections, 12);
}
