//! Configuration: a TOML file plus `AUTHGATE_<SECTION>__<KEY>` environment overrides, parsed
//! and validated once at start into the typed [`Config`].
//!
//! The pipeline (each step in its own module):
//! 1. [`figment_for`]: the file (`Toml::file_exact`: it must exist) merged with the environment
//!    overrides of `env.rs` (string keys stay strings; `AUTHGATE_CONFIG` is ignored).
//! 2. `extract.rs`: each section, and each `[[route]]`, deserialized on its own into the raw
//!    serde structs of `raw.rs` (`deny_unknown_fields`, documented defaults), so the serde
//!    errors of every section are reported together, each with its key path.
//! 3. `validate.rs` (and `routes.rs`): raw -> typed, resolving `*_file` secrets, decoding cookie secrets,
//!    parsing URLs, durations, CIDRs, header names and regexes, and the rules that span keys.
//!
//! Every problem found is returned at once in [`ConfigErrors`]; each names its key
//! (`oidc.issuer`, `route[2].path`, `session.cookie_secrets[0]`) and never a secret's value.

use std::fmt;
use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Toml};

mod check;
mod env;
mod extract;
mod lenient;
mod raw;
mod routes;
mod schema;
mod ser;
mod types;
mod validate;

pub use env::EnvOverrides;
pub use types::*;

/// One configuration problem: the key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path, e.g. `oidc.issuer`, `route[2].path`, `headers.claims."X-Bad Name"`.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem of one load, in the order found (file order within a section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The error for `key`, if any (tests and callers that care about one key).
    pub fn find(&self, key: &str) -> Option<&ConfigError> {
        self.0.iter().find(|e| e.key == key)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// File (must exist) + environment overrides, then validation. Reports ALL problems.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::from_figment(figment_for(path))
    }

    /// Same from an already-built figment (tests use this).
    pub fn from_figment(figment: Figment) -> Result<Config, ConfigErrors> {
        let mut checker = check::Checker::default();
        let raw = extract::extract(&figment, &mut checker.errors);
        let found_by_serde = checker.errors.len();
        let config = raw.and_then(|raw| validate::validate(&raw, &mut checker));
        extract::name_env_sources(&figment, &mut checker.errors[found_by_serde..]);
        match config {
            Some(config) if checker.errors.is_empty() => Ok(config),
            // Defensive: a rejected config always says why.
            _ if checker.errors.is_empty() => Err(ConfigErrors(vec![ConfigError::new(
                "config",
                "invalid configuration",
            )])),
            _ => Err(ConfigErrors(checker.errors)),
        }
    }

    /// The effective config as TOML, every secret replaced by "[redacted]" (for `authgate check`):
    /// its `Serialize`, so under the file's keys, in the typed config's field order.
    pub fn redacted_toml(&self) -> String {
        // Every helper in `ser.rs` is total; should serialization still fail, say so in the
        // printout rather than print a partial config.
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }
}

/// `Toml::file_exact(path)` merged with the environment overrides (which win).
pub fn figment_for(path: &Path) -> Figment {
    Figment::new()
        .merge(Toml::file_exact(path))
        .merge(EnvOverrides::new())
}
