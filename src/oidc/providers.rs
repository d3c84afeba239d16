//! Every configured provider, as one value: `[oidc]` (the default) and each
//! `[providers.NAME]`, each an [`Oidc`] of its own (discovery, keys, client, callback path).
//!
//! Built once from the configuration by [`Providers::for_config`]; whatever holds the
//! gateway's runtime configuration holds this next to it. A [`ProviderId`] (one byte: 0 is the
//! default, `n` the n-th named provider in name order) selects one; sessions, routes and
//! pending logins carry ids or names, never a provider itself.

use std::sync::Arc;

use serde_json::Value;

use super::{Oidc, jwt};
use crate::clock::Clock;
use crate::config::{Config, ProviderId};
use crate::error::OidcSetupError;

pub struct Providers {
    /// By [`ProviderId`]: `[oidc]` first, never empty.
    all: Vec<Arc<Oidc>>,
}

impl Providers {
    /// One [`Oidc`] per provider of `config`, judging time by `clock`.
    pub fn for_config(config: &Config, clock: Clock) -> Result<Self, OidcSetupError> {
        let all = config
            .provider_configs()
            .map(|(id, name, cfg)| {
                let oidc = Oidc::named(
                    id,
                    name,
                    cfg,
                    &config.server.public_url,
                    config.session.max_token_age,
                )?;
                Ok(Arc::new(oidc.with_clock(clock.clone())))
            })
            .collect::<Result<Vec<_>, OidcSetupError>>()?;
        Ok(Providers { all })
    }

    /// Only `[oidc]` (tools and tests that build a provider by hand).
    pub fn single(oidc: Arc<Oidc>) -> Self {
        Providers { all: vec![oidc] }
    }

    /// `[oidc]`.
    pub fn default_provider(&self) -> &Arc<Oidc> {
        // `all` is never empty: `for_config` and `single` put `[oidc]` first.
        &self.all[0]
    }

    /// Provider `id`; `None` for an id no provider has (none is ever made: ids come from the
    /// configuration that built this).
    pub fn get(&self, id: ProviderId) -> Option<&Arc<Oidc>> {
        self.all.get(id.index())
    }

    /// The `[providers.NAME]` called `name`.
    pub fn by_name(&self, name: &str) -> Option<&Arc<Oidc>> {
        self.all
            .iter()
            .skip(1)
            .find(|p| p.name.as_deref() == Some(name))
    }

    /// Every provider, `[oidc]` first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Oidc>> {
        self.all.iter()
    }

    /// Whether more than `[oidc]` is configured.
    pub fn several(&self) -> bool {
        self.all.len() > 1
    }

    /// Whether every provider has been discovered (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.all.iter().all(|p| p.is_ready())
    }

    /// Discover every provider, concurrently, each retried until it works (see
    /// [`Oidc::discover_until_ready`]); resolves when all are discovered. One future, not
    /// tasks: aborting it (shutdown) stops every retry.
    pub async fn discover_until_ready(self: Arc<Self>) {
        let each = self.all.iter().map(|p| p.clone().discover_until_ready());
        futures_util::future::join_all(each).await;
    }

    /// The providers a logout token may come from, by the `iss` and `aud` it claims (read
    /// WITHOUT verification: only to choose whose keys verify it; the chosen provider then
    /// checks signature, `iss` and `aud` in full). Empty for an unreadable token or an
    /// issuer no provider has.
    pub fn claimed_by(&self, token: &str) -> Vec<&Arc<Oidc>> {
        let Some(claims) = jwt::decode_payload(token) else {
            return Vec::new();
        };
        let Some(iss) = claims.get("iss").and_then(Value::as_str) else {
            return Vec::new();
        };
        let names_client = |client_id: &str| match claims.get("aud") {
            Some(Value::String(aud)) => aud == client_id,
            Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(client_id)),
            _ => false,
        };
        self.all
            .iter()
            .filter(|p| p.has_issuer(iss) && names_client(&p.cfg.client_id))
            .collect()
    }
}

impl Oidc {
    /// Whether `iss` is this provider's issuer: the discovered one, else (before discovery)
    /// the configured one, trailing slash aside.
    pub fn has_issuer(&self, iss: &str) -> bool {
        match self.provider() {
            Some(p) => p.issuer() == iss,
            None => self.cfg.issuer.as_str().trim_end_matches('/') == iss.trim_end_matches('/'),
        }
    }
}
