//! The development OpenID Connect provider of authgate, a crate of its own so that the
//! gateway's release binary and container image never contain it: an in-process provider
//! ([`idp::DevIdp`], the integration tests' fake provider, with fault-injection
//! [`idp::Controls`]) and a tiny echo upstream ([`echo::serve_echo`]) that shows what the
//! gateway forwarded. `authgate demo` (cargo feature `demo`, on by default) runs both next to
//! the gateway; the tests and benchmarks use them as a dev-dependency.
//!
//! Never meant for production: any user name logs in, and its signing keys are public. It
//! does not depend on authgate (the dependency goes one way: authgate's `demo` → devidp).

pub mod echo;
mod html;
pub mod idp;

use std::fmt::Display;

/// `value` for a log field, control characters escaped, so that a logged error never forges
/// or breaks a log line (the rule authgate's `logging::log_safe` enforces in the gateway;
/// this crate does not depend on authgate). Only connection errors go through it: an
/// allocation there does not matter.
pub(crate) fn log_safe(value: impl Display) -> String {
    value.to_string().escape_debug().to_string()
}
