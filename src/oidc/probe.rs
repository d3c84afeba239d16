//! `authgate check --probe`: fetch the provider's discovery document and report what
//! matters for this gateway, before users find out the hard way.

use openidconnect::core::CoreGrantType;

use super::{DiscoveryFailed, Oidc};
use crate::config::Config;
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

/// Run the probe and print the report on stderr. `Err` when the provider is unreachable.
pub async fn run(config: &Config) -> Result<(), ProbeError> {
    let oidc = Oidc::new(&config.oidc, &config.server.public_url, None)?;
    let provider = oidc.discover().await?;
    eprintln!("probe: discovered {}", provider.issuer());
    for finding in assess(config, &provider) {
        match finding {
            Finding::Ok(line) => eprintln!("  ok       {line}"),
            Finding::Warning(line) => eprintln!("  WARNING  {line}"),
            Finding::Info(line) => eprintln!("  info     {line}"),
        }
    }
    Ok(())
}

/// The checks, as data (unit-testable without a provider).
pub fn assess(config: &Config, provider: &super::Provider) -> Vec<Finding> {
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
    let offline = config.oidc.scopes.iter().any(|s| s == "offline_access");
    out.push(check(offline, "offline_access requested", "offline_access is not among oidc.scopes: most providers then issue no refresh token and users are logged out at the first expiry"));
    let logto = provider.issuer().contains("logto") || provider.issuer().ends_with("/oidc");
    if logto && config.oidc.resource.is_empty() {
        out.push(Finding::Warning("oidc.resource is empty with a Logto-like issuer: access tokens will be opaque and the upstream cannot verify them".into()));
    }
    out
}

fn check(ok: bool, good: &str, bad: &str) -> Finding {
    if ok {
        Finding::Ok(good.into())
    } else {
        Finding::Warning(bad.into())
    }
}
