//! Configuration reload (SIGHUP): the configuration is loaded exactly as at start (file,
//! environment, `*_file` secrets), and everything built from it is built anew and checked
//! (TLS certificate and key, upstream CA files, the provider client) before anything
//! changes. Then one pointer is swapped: requests that start after it run on the new
//! runtime, requests in flight finish on the old one.
//!
//! What a reload keeps:
//! - the session store (every session), and with it the keys that shape it;
//! - the provider clients, when nothing of `[oidc]` and `[providers.NAME]` (nor
//!   `public_url`) changed; otherwise each provider whose issuer stays takes over the
//!   discovered metadata and keys (no request to the provider), and a new issuer is
//!   discovered before the swap (a failed discovery fails the reload). Adding, removing or
//!   renaming a `[providers.NAME]` needs a restart (sessions in memory name their provider by
//!   its position): such a reload fails and changes nothing;
//! - the upstream connection pools, when no upstream setting changed and none names a CA
//!   file (a CA file is read again, so its pools are new); otherwise new connections go to
//!   new pools and the old ones close with the old runtime;
//! - the metrics series, when the route labels and upstream names are the same;
//! - refreshes in flight: the new runtime joins them.
//!
//! Keys that need a restart (read once at start: the listeners, the connection limits, the
//! session store and its shape, logging; see `keep_restart_keys`) keep their running value,
//! with one warning naming each. A key added later that is read only at start needs its
//! line there.

use std::sync::Arc;

use super::{Gateway, Parts, Runtime};
use crate::config::{Config, ConfigErrors};
use crate::error::{Chain, StartupError};
use crate::oidc::{Oidc, Providers};
use crate::proxy::Upstreams;
use crate::session::identity::IdentityRules;
use crate::tls;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("invalid configuration ({0} problems, each logged)")]
    Invalid(usize),
    #[error(transparent)]
    Setup(#[from] StartupError),
    #[error("OIDC discovery of the new issuer failed: {0}")]
    Discovery(String),
    #[error("adding, removing or renaming a [providers.NAME] needs a restart")]
    ProvidersRenamed,
}

impl Gateway {
    /// Apply a configuration loaded as at start ([`Config::load`]): on success, requests
    /// that start from now on use it, and the keys that changed are returned (and logged);
    /// on failure every problem is logged and the running configuration stays. Both are
    /// counted in `authgate_config_reloads_total`. The SIGHUP handler calls this.
    pub async fn reload(
        &self,
        loaded: Result<Config, ConfigErrors>,
    ) -> Result<Vec<String>, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let result = self.try_reload(loaded).await;
        match &result {
            Ok(changed) => {
                self.reloads.succeeded(self.clock.unix_now());
                tracing::info!(
                    changed = %if changed.is_empty() { "nothing".to_owned() } else { changed.join(", ") },
                    "configuration reloaded"
                );
            }
            Err(e) => {
                self.reloads.failed();
                tracing::error!(
                    error = %Chain(e),
                    "configuration reload failed: the running configuration stays"
                );
            }
        }
        result
    }

    async fn try_reload(
        &self,
        loaded: Result<Config, ConfigErrors>,
    ) -> Result<Vec<String>, ReloadError> {
        let mut cfg = match loaded {
            Ok(cfg) => cfg,
            Err(errors) => {
                for e in &errors.0 {
                    tracing::error!(key = %e.key, problem = %e.message, "invalid configuration");
                }
                return Err(ReloadError::Invalid(errors.0.len()));
            }
        };
        let old = self.runtime.load_full();
        let kept = keep_restart_keys(&old.config, &mut cfg);
        for key in &kept {
            tracing::warn!(
                key,
                "configuration key changed but needs a restart: the running value stays"
            );
        }
        // Everything that can fail first, before anything changes.
        let certificate = match (&cfg.server.tls, &self.tls) {
            (Some(files), Some(_)) => {
                Some(tls::certified_key(&files.cert, &files.key).map_err(StartupError::from)?)
            }
            _ => None,
        };
        let providers = self.reloaded_providers(&old, &cfg).await?;
        let upstreams = if same(&old.config.upstream, &cfg.upstream)
            && same(&old.config.upstreams, &cfg.upstreams)
            && !names_ca_file(&cfg)
        {
            old.upstreams.clone()
        } else {
            Arc::new(Upstreams::new(&cfg.upstream, &cfg.upstreams)?)
        };
        let mut changed = changed_keys(&old.config, &cfg);
        if let (Some(new), Some(running)) = (&certificate, &self.tls)
            && running.current().cert != new.cert
            && !changed.iter().any(|k| k == "server.tls_cert_file")
        {
            changed.push("server.tls_cert_file".to_owned());
        }
        let cfg = Arc::new(cfg);
        let parts = Parts {
            store: self.store.clone(),
            providers,
            upstreams,
            rules: Arc::new(IdentityRules::for_config(&cfg)),
            clock: self.clock.clone(),
            connections: self.connections.clone(),
            reloads: self.reloads.clone(),
            tunnels: self.tunnels.clone(),
            preserved: self.preserved.clone(),
        };
        let runtime = Runtime::new(cfg, parts, Some(&old));
        // The swap: one pointer for the whole configuration, then the certificate.
        self.runtime.store(Arc::new(runtime));
        if let (Some(certificate), Some(running)) = (certificate, &self.tls) {
            running.replace(certificate);
        }
        Ok(changed)
    }

    /// The provider clients for `cfg`: the running ones when nothing they are built from
    /// changed.
    async fn reloaded_providers(
        &self,
        old: &Runtime,
        cfg: &Config,
    ) -> Result<Arc<Providers>, ReloadError> {
        let was = &old.config;
        if was.provider_names() != cfg.provider_names() {
            return Err(ReloadError::ProvidersRenamed);
        }
        let same_client = |a: &crate::config::OidcConfig, b: &crate::config::OidcConfig| {
            same(a, b) && secret_eq(&a.client_secret, &b.client_secret)
        };
        let unchanged = (was.provider_configs().zip(cfg.provider_configs()))
            .all(|((_, _, a), (_, _, b))| same_client(a, b))
            && was.server.public_url == cfg.server.public_url
            && was.session.max_token_age == cfg.session.max_token_age;
        if unchanged {
            return Ok(old.providers.clone());
        }
        let providers =
            Providers::for_config(cfg, self.clock.clone()).map_err(StartupError::from)?;
        for (oidc, previous) in providers.iter().zip(old.providers.iter()) {
            self.take_over_or_discover(oidc, previous).await?;
        }
        Ok(Arc::new(providers))
    }

    /// A provider with the same issuer as before takes over its discovery; another one is
    /// discovered now (a failure fails the reload).
    async fn take_over_or_discover(
        &self,
        oidc: &Arc<Oidc>,
        previous: &Arc<Oidc>,
    ) -> Result<(), ReloadError> {
        if oidc.cfg.issuer == previous.cfg.issuer {
            // Same provider, other client settings: its metadata and keys stay good.
            if !oidc.adopt_discovery(previous) {
                tokio::spawn(oidc.clone().discover_until_ready());
            }
            return Ok(());
        }
        let provider = oidc
            .discover()
            .await
            .map_err(|e| ReloadError::Discovery(Chain(&e).to_string()))?;
        oidc.install(provider);
        Ok(())
    }
}

/// Whether two sections print the same (secrets print redacted: compare them on their own).
fn same<T: serde::Serialize>(a: &T, b: &T) -> bool {
    match (toml::Value::try_from(a), toml::Value::try_from(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn secret_eq(
    a: &Option<crate::secret::Secret<String>>,
    b: &Option<crate::secret::Secret<String>>,
) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.expose() == b.expose(),
        (None, None) => true,
        _ => false,
    }
}

fn names_ca_file(cfg: &Config) -> bool {
    cfg.upstream.ca_file.is_some() || cfg.upstreams.iter().any(|(_, u)| u.ca_file.is_some())
}

/// Put the running value back into `new` for every key that needs a restart and changed;
/// returns those keys.
fn keep_restart_keys(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut kept = Vec::new();
    macro_rules! keep {
        ($key:literal, $($field:ident).+) => {
            if old.$($field).+ != new.$($field).+ {
                new.$($field).+ = old.$($field).+.clone();
                kept.push($key);
            }
        };
    }
    keep!("server.listen", server.listen);
    keep!("server.metrics_listen", server.metrics_listen);
    keep!("server.admin_listen", server.admin_listen);
    keep!("server.admin_token_file", server.admin_token);
    if old.server.tls.is_some() != new.server.tls.is_some() {
        new.server.tls = old.server.tls.clone();
        kept.push("server.tls_cert_file (TLS on or off)");
    }
    keep!("server.trusted_proxies", server.trusted_proxies);
    keep!("server.max_connections", server.max_connections);
    keep!("server.header_read_timeout", server.header_read_timeout);
    keep!("server.tls_handshake_timeout", server.tls_handshake_timeout);
    keep!("server.idle_timeout", server.idle_timeout);
    keep!("server.max_header_bytes", server.max_header_bytes);
    keep!("server.max_headers", server.max_headers);
    keep!("server.shutdown_grace", server.shutdown_grace);
    keep!("server.log_format", server.log_format);
    keep!("server.watch_config", server.watch_config);
    if !same(&old.session.store, &new.session.store) || topology(old) != topology(new) {
        new.session.store = old.session.store.clone();
        kept.push("session.store (and its redis_* keys)");
    }
    keep!("session.max_sessions", session.max_sessions);
    keep!("session.idle_timeout", session.idle_timeout);
    keep!("session.absolute_timeout", session.absolute_timeout);
    keep!("session.max_pending_logins", session.max_pending_logins);
    keep!("session.snapshot_file", session.snapshot_file);
    keep!("session.preserve_form_posts", session.preserve_form_posts);
    keep!("session.max_preserved_body", session.max_preserved_body);
    kept
}

fn topology(cfg: &Config) -> Option<&crate::config::RedisTopology> {
    match &cfg.session.store {
        crate::config::StoreConfig::Redis { topology, .. } => Some(topology),
        crate::config::StoreConfig::Memory => None,
    }
}

/// The keys whose value differs (never the values): `server.public_url`,
/// `route[1].policy`, `session.cookie_secrets`...
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let mut changed = Vec::new();
    if let (Ok(a), Ok(b)) = (toml::Value::try_from(old), toml::Value::try_from(new)) {
        diff("", &a, &b, &mut changed);
    }
    // Secrets print redacted.
    let secrets = |c: &Config| -> Vec<Vec<u8>> {
        (c.session.cookie_secrets.iter())
            .map(|s| s.expose().clone())
            .collect()
    };
    if secrets(old) != secrets(new) {
        changed.push("session.cookie_secrets".to_owned());
    }
    for ((_, name, a), (_, _, b)) in old.provider_configs().zip(new.provider_configs()) {
        if !secret_eq(&a.client_secret, &b.client_secret) {
            changed.push(match name {
                None => "oidc.client_secret".to_owned(),
                Some(name) => format!("providers.{name}.client_secret"),
            });
        }
    }
    changed.sort();
    changed.dedup();
    changed
}

fn diff(key: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
    use toml::Value;
    let join = |sub: &str| {
        if key.is_empty() {
            sub.to_owned()
        } else {
            format!("{key}.{sub}")
        }
    };
    match (a, b) {
        (Value::Table(a), Value::Table(b)) => {
            for (k, va) in a {
                match b.get(k) {
                    Some(vb) => diff(&join(k), va, vb, out),
                    None => out.push(join(k)),
                }
            }
            out.extend(b.keys().filter(|k| !a.contains_key(*k)).map(|k| join(k)));
        }
        (Value::Array(a), Value::Array(b))
            if a.iter().chain(b).all(|v| matches!(v, Value::Table(_))) =>
        {
            for i in 0..a.len().max(b.len()) {
                let at = format!("{key}[{i}]");
                match (a.get(i), b.get(i)) {
                    (Some(va), Some(vb)) => diff(&at, va, vb, out),
                    _ => out.push(at),
                }
            }
        }
        _ if a != b => out.push(key.to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> toml::Value {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_diff_names_keys_not_values() {
        let a = value(
            "[server]\nx = 1\ny = \"a\"\n[[route]]\npath = \"/a\"\n[[route]]\npath = \"/b\"\n",
        );
        let b = value(
            "[server]\nx = 2\ny = \"a\"\nz = 3\n[[route]]\npath = \"/a\"\n[[route]]\npath = \"/c\"\n[[route]]\npath = \"/d\"\n",
        );
        let mut out = Vec::new();
        diff("", &a, &b, &mut out);
        out.sort();
        assert_eq!(out, ["route[1].path", "route[2]", "server.x", "server.z"]);
    }
}
