//! OpenID Connect Discovery 1.0 §4 (`/.well-known/openid-configuration`) and the JWKS
//! document (RFC 7517 §5). Discovery can be switched to 503 to test a provider that is down
//! at the gateway's start.

use http::{Response, StatusCode};

use super::Shared;
use super::web::{self, Body};

/// `GET /.well-known/openid-configuration`.
pub(crate) fn configuration(shared: &Shared) -> Response<Body> {
    let controls = &shared.controls;
    controls.count_discovery();
    if controls.settings().discovery_unavailable {
        return web::text(StatusCode::SERVICE_UNAVAILABLE, "discovery unavailable");
    }
    let issuer = &shared.issuer;
    let scopes = (controls.settings().scopes_supported.clone()).unwrap_or_else(|| {
        ["openid", "profile", "email", "offline_access", "groups"]
            .map(String::from)
            .to_vec()
    });
    let mut document = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "end_session_endpoint": format!("{issuer}/end_session"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported":
            ["client_secret_basic", "client_secret_post", "none"],
        "scopes_supported": scopes,
        "claims_supported":
            ["sub", "iss", "aud", "exp", "iat", "nonce", "sid", "auth_time", "acr", "email", "preferred_username", "groups"],
        "backchannel_logout_supported": true,
        "backchannel_logout_session_supported": true,
    });
    let settings = controls.settings();
    if settings.advertise_response_iss {
        document["authorization_response_iss_parameter_supported"] = serde_json::json!(true);
    }
    if !settings.acr_values_supported.is_empty() {
        document["acr_values_supported"] = serde_json::json!(settings.acr_values_supported);
    }
    web::json(StatusCode::OK, &document)
}

/// `GET /jwks`.
pub(crate) fn jwks(shared: &Shared) -> Response<Body> {
    shared.controls.count_jwks();
    if shared.controls.settings().jwks_unavailable {
        return web::text(StatusCode::SERVICE_UNAVAILABLE, "JWKS unavailable");
    }
    match serde_json::to_value(shared.controls.keys.jwks()) {
        Ok(document) => web::json(StatusCode::OK, &document),
        Err(e) => web::text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}
