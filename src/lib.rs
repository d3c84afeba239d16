//! authgate: a reverse-proxy OpenID Connect auth gateway.

pub mod config;
pub mod secret;
