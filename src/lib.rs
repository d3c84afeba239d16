//! authgate: a reverse-proxy auth gateway (OpenID Connect login, server-side sessions,
//! correct token refresh). This worktree carries only the development provider and the
//! secret newtype; the lead reconciles the module list on merge.

pub mod demo;
pub mod secret;
