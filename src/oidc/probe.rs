//! `authgate check --probe`: fetch the provider's discovery document and report what
//! matters for this gateway, before users find out the hard way.

use openidconnect::core::CoreGrantType;

use super::{DiscoveryFailed, Oidc};
use crate::config::{Config, OidcConfig};
use crate::error::OidcSetupError;
use crate::logging::log_safe;

/// One line of the probe's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Ok(String),
    Warning(String),
    /// A fact about the provider, neither good nor bad for this gateway.
    Info(String),
}

/// Why the probe could not assess the provider (print it with [`crate::error::Chain`]).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("OIDC client")]
    Setup(#[from] OidcSetupError),
    #[error("provider unreachable or discovery invalid")]
    Discovery(#[from] DiscoveryFailed),
}

/// Run the probe on every provider (`[oidc]`, then each `[providers.NAME]`) and print the
/// report on stderr. `Err` when a provider is unreachable (every other one is still probed).
pub async fn run(config: &Config) -> Result<(), ProbeError> {
    let mut failed = None;
    for (id, name, cfg) in config.provider_configs() {
        let section = match name {
            Some(name) => format!("providers.{name}"),
            None => "oidc".to_owned(),
        };
        let oidc = Oidc::named(id, name, cfg, &config.server.public_url, None)?;
        let provider = match oidc.discover().await {
            Ok(provider) => provider,
            Err(e) => {
                eprintln!("probe: [{section}] discovery failed");
                failed = Some(e);
                continue;
            }
        };
        match name {
            Some(_) => eprintln!("probe: [{section}] discovered {}", provider.issuer()),
            None => eprintln!("probe: discovered {}", provider.issuer()),
        }
        for finding in assess_provider(cfg, &section, &provider) {
            match finding {
                Finding::Ok(line) => eprintln!("  ok       {line}"),
                Finding::Warning(line) => eprintln!("  WARNING  {line}"),
                Finding::Info(line) => eprintln!("  info     {line}"),
            }
        }
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// The checks of `[oidc]`, as data (unit-testable without a provider).
pub fn assess(config: &Config, provider: &super::Provider) -> Vec<Finding> {
    assess_provider(&config.oidc, "oidc", provider)
}

/// The checks of one provider configured by `cfg` in `[section]`.
pub fn assess_provider(
    cfg: &OidcConfig,
    section: &str,
    provider: &super::Provider,
) -> Vec<Finding> {
    let meta = &provider.metadata;
    let extra = meta.additional_metadata();
    let mut out = Vec::new();
    let refresh = meta
        .grant_types_supported()
        .is_none_or(|grants| grants.contains(&CoreGrantType::RefreshToken));
    out.push(check(refresh, "refresh_token grant supported", "the provider does not list the refresh_token grant: sessions end at the first token expiry"));
    let s256 = extra
        .code_challenge_methods_supported
        .as_ref()
        .is_some_and(|m| m.iter().any(|x| x == "S256"));
    out.push(check(
        s256,
        "PKCE S256 supported",
        "the provider does not advertise PKCE S256 (code_challenge_methods_supported)",
    ));
    out.push(check(
        extra.revocation_endpoint.is_some(),
        "revocation endpoint present",
        "no revocation_endpoint: sign-out cannot revoke refresh tokens",
    ));
    out.push(check(
        extra.end_session_endpoint.is_some(),
        "end-session endpoint present",
        "no end_session_endpoint: sign-out cannot end the provider session",
    ));
    out.push(if provider.advertises_response_iss() {
        Finding::Ok("authorization response iss parameter (RFC 9207) advertised: a callback without it is refused".into())
    } else {
        Finding::Info("authorization response iss parameter (RFC 9207) not advertised: a callback without it is accepted, one naming another issuer is refused".into())
    });
    let acr: Vec<&str> = meta
        .acr_values_supported()
        .map(|values| values.iter().map(|v| v.as_str()).collect())
        .unwrap_or_default();
    out.push(Finding::Info(if acr.is_empty() {
        "acr_values_supported: none listed".into()
    } else {
        // The provider's text: escaped like every logged value (no terminal escapes).
        format!("acr_values_supported: {}", log_safe(acr.join(" ")))
    }));
    let scopes_supported: Option<Vec<&str>> = meta
        .scopes_supported()
        .map(|s| s.iter().map(|s| s.as_str()).collect());
    out.push(offline_access(
        provider.issuer(),
        scopes_supported.as_deref(),
        &cfg.scopes,
        &cfg.extra_auth_params,
    ));
    let logto = provider.issuer().contains("logto") || provider.issuer().ends_with("/oidc");
    if logto && cfg.resource.is_empty() {
        out.push(Finding::Warning(format!("{section}.resource is empty with a Logto-like issuer: access tokens will be opaque and the upstream cannot verify them")));
    }
    out
}

/// Whether the configuration will get refresh tokens, as far as `offline_access` goes.
///
/// OpenID Connect Core 11 makes `offline_access` the way to ask for a refresh token, and
/// most providers follow it (Logto, Auth0, Okta, Entra ID, Zitadel, the development
/// provider). Known exceptions, from their documentation:
/// - Keycloak (an issuer `.../realms/<realm>`) issues a refresh token tied to the SSO session
///   without it; `offline_access` asks for an offline token that outlives the SSO session.
/// - Google (`https://accounts.google.com`) does not know the scope (it lists none such and
///   refuses unknown scopes) and issues a refresh token with `access_type=offline` instead,
///   on the first consent, or on every login with `prompt=consent`.
///
/// Any other provider whose discovery lists `scopes_supported` without `offline_access`
/// decides by its own rules: not a warning, but worth a look.
pub fn offline_access(
    issuer: &str,
    scopes_supported: Option<&[&str]>,
    scopes: &[String],
    extra_auth_params: &[(String, String)],
) -> Finding {
    let requested = scopes.iter().any(|s| s == "offline_access");
    let listed = scopes_supported.map(|s| s.contains(&"offline_access"));
    let param = |name: &str| {
        (extra_auth_params.iter())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let url = url::Url::parse(issuer).ok();
    let host = url.as_ref().and_then(|u| u.host_str()).unwrap_or_default();
    let google = host == "accounts.google.com";
    let keycloak = url.as_ref().is_some_and(|u| {
        let mut segments = u.path_segments().into_iter().flatten();
        segments.any(|s| s == "realms")
    });
    if google {
        if requested {
            return Finding::Warning("Google does not support the offline_access scope (it refuses the login as invalid_scope): remove it from oidc.scopes and set extra_auth_params = { access_type = \"offline\", prompt = \"consent\" }".into());
        }
        return match (param("access_type"), param("prompt")) {
            (Some("offline"), Some(p)) if p.split(' ').any(|p| p == "consent") => {
                Finding::Ok("refresh tokens requested the Google way (access_type=offline, prompt=consent)".into())
            }
            (Some("offline"), _) => Finding::Warning("access_type=offline without prompt=consent: Google issues the refresh token only at a user's first consent, so users who consented before get none; add prompt = \"consent\" to extra_auth_params".into()),
            _ => Finding::Warning("Google issues refresh tokens only with extra_auth_params access_type = \"offline\" (and prompt = \"consent\"): without them users are logged out at the first expiry".into()),
        };
    }
    match (requested, listed) {
        (true, Some(false)) => Finding::Warning("offline_access is requested but the provider does not list it in scopes_supported: a provider may refuse a login that asks for a scope it does not know".into()),
        (true, _) => Finding::Ok("offline_access requested".into()),
        (false, _) if keycloak => Finding::Ok("offline_access not requested: Keycloak issues refresh tokens for the SSO session without it (they end with that session; offline_access asks for offline tokens that outlive it)".into()),
        (false, Some(false)) => Finding::Ok("offline_access not requested, and the provider does not list it in scopes_supported: it issues refresh tokens by its own rules (check that logins return one)".into()),
        (false, _) => Finding::Warning("offline_access is not among oidc.scopes: most providers then issue no refresh token and users are logged out at the first expiry".into()),
    }
}

fn check(ok: bool, good: &str, bad: &str) -> Finding {
    if ok {
        Finding::Ok(good.into())
    } else {
        Finding::Warning(bad.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(
        issuer: &str,
        supported: Option<&[&str]>,
        scopes: &[&str],
        extra: &[(&str, &str)],
    ) -> Finding {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let extra: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        offline_access(issuer, supported, &scopes, &extra)
    }

    fn ok(f: Finding) -> bool {
        matches!(f, Finding::Ok(_))
    }

    const STANDARD: Option<&[&str]> = Some(&["openid", "email", "offline_access"]);
    const GOOGLE: &str = "https://accounts.google.com";
    const GOOGLE_SCOPES: Option<&[&str]> = Some(&["openid", "email", "profile"]);
    const KEYCLOAK: &str = "https://sso.example.com/realms/staff";
    const KEYCLOAK_SCOPES: Option<&[&str]> = Some(&["openid", "offline_access", "profile"]);

    #[test]
    fn standard_providers_need_offline_access() {
        let logto = "https://tenant.logto.app/oidc";
        assert!(ok(decide(
            logto,
            STANDARD,
            &["openid", "offline_access"],
            &[]
        )));
        assert!(!ok(decide(logto, STANDARD, &["openid"], &[])));
        assert!(!ok(decide(logto, None, &["openid"], &[])));
        // Asked for, but the provider does not know it.
        assert!(!ok(decide(
            logto,
            Some(&["openid"]),
            &["openid", "offline_access"],
            &[]
        )));
        // Not asked for, and the provider does not know it: its own rules.
        assert!(ok(decide(logto, Some(&["openid"]), &["openid"], &[])));
    }

    #[test]
    fn keycloak_issues_refresh_tokens_without_offline_access() {
        assert!(ok(decide(KEYCLOAK, KEYCLOAK_SCOPES, &["openid"], &[])));
        assert!(ok(decide(
            KEYCLOAK,
            KEYCLOAK_SCOPES,
            &["openid", "offline_access"],
            &[]
        )));
        // Not Keycloak: a path segment that merely contains "realms".
        assert!(!ok(decide(
            "https://x.example/myrealms/a",
            STANDARD,
            &["openid"],
            &[]
        )));
    }

    #[test]
    fn google_wants_access_type_offline() {
        let consent = [("access_type", "offline"), ("prompt", "consent")];
        assert!(ok(decide(
            GOOGLE,
            GOOGLE_SCOPES,
            &["openid", "email"],
            &consent
        )));
        assert!(!ok(decide(
            GOOGLE,
            GOOGLE_SCOPES,
            &["openid"],
            &[("access_type", "offline")]
        )));
        assert!(!ok(decide(GOOGLE, GOOGLE_SCOPES, &["openid"], &[])));
        assert!(!ok(decide(
            GOOGLE,
            GOOGLE_SCOPES,
            &["openid", "offline_access"],
            &consent
        )));
    }
}
