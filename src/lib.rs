//! authgate: a reverse-proxy OpenID Connect auth gateway.

pub mod policy;
pub mod redirect;
