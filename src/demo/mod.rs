//! Everything `authgate demo` runs next to the gateway: an in-process development OpenID
//! Connect provider ([`idp::DevIdp`], also the integration tests' fake provider) and a tiny
//! echo upstream ([`echo::serve_echo`]) that shows what the gateway forwarded.

pub mod echo;
mod html;
pub mod idp;
mod run;

pub use run::run;
