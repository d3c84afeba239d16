//! authgate: a reverse-proxy auth gateway.
//!
//! It logs users in with OpenID Connect, keeps each user's token set server-side behind an
//! opaque signed cookie, refreshes the access token before it expires (one refresh per
//! session, whatever the concurrency), and forwards every request upstream with
//! `Authorization: Bearer <access token>` and identity headers.
//!
//! A request flows one way (see `gateway`): route -> policy -> session -> refresh -> header
//! rewrite -> upstream. [`serve`] runs the whole gateway on a listener, so tests run it
//! in-process.

pub mod auth;
pub mod claims;
pub mod clock;
pub mod config;
pub mod cookie;
#[cfg(feature = "demo")]
pub mod demo;
pub mod endpoints;
pub mod error;
pub mod fold;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod headers;
pub mod healthcheck;
pub mod host;
pub mod lint;
pub mod logging;
pub mod login;
pub mod metrics;
pub mod oidc;
pub mod policy;
pub mod proxy;
pub mod redirect;
pub mod refresh;
pub mod reply;
pub mod seal;
pub mod secret;
pub mod server;
pub mod session;
pub mod sessions_cli;
pub mod tls;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::{Config, StoreConfig};
use crate::error::StartupError;
use crate::gateway::Gateway;
use crate::oidc::Providers;
use crate::proxy::Upstreams;
use crate::session::Store;
use crate::session::identity::IdentityRules;
use crate::session::memory::{MAX_LOGOUT_MARKERS, MemoryOptions, MemoryStore};
use crate::session::redis::{RedisOptions, RedisStore};

/// Build the gateway's state from a validated configuration. Starts nothing.
pub fn build(config: Config) -> Result<Arc<Gateway>, StartupError> {
    build_with(config, Clock::system())
}

/// [`build`], with the clock every decision against a deadline reads (tests move it with
/// [`Clock::adjustable`]).
pub fn build_with(config: Config, clock: Clock) -> Result<Arc<Gateway>, StartupError> {
    let config = Arc::new(config);
    let rules = Arc::new(IdentityRules::for_config(&config));
    let store = match &config.session.store {
        StoreConfig::Memory => Store::Memory(MemoryStore::with_options(MemoryOptions {
            max_sessions: config.session.max_sessions,
            idle_timeout: config.session.idle_timeout,
            absolute_timeout: config.session.absolute_timeout,
            max_markers: (config.session.max_pending_logins).saturating_add(MAX_LOGOUT_MARKERS),
            clock: clock.clone(),
        })),
        StoreConfig::Redis {
            topology,
            key_prefix,
            timeout,
        } => {
            // Connects lazily (on the first call), so `build` stays synchronous and a gateway
            // whose Redis is down starts anyway: `/readyz` says 503 until Redis answers.
            let s = &config.session;
            let opts = RedisOptions {
                topology: topology.clone(),
                key_prefix: key_prefix.clone(),
                timeout: *timeout,
                idle_timeout: s.idle_timeout,
                absolute_timeout: s.absolute_timeout,
                cache_capacity: s.max_sessions,
                cache_ttl: session::redis::CACHE_TTL,
                lease: session::redis::LEASE,
                lease_wait: config.oidc.refresh_timeout + session::redis::LEASE,
                identity_rules: rules.clone(),
                // Only the admin API opens them; its address needs a restart, as the store.
                revocation_envelopes: config.server.admin_listen.is_some(),
            };
            let store = RedisStore::with_clock(opts, &s.cookie_secrets, clock.clone());
            Store::Redis(store.map_err(StartupError::Store)?)
        }
    };
    let providers = Providers::for_config(&config, clock.clone())?;
    let upstream = Upstreams::new(&config.upstream, &config.upstreams)?;
    let tls = match &config.server.tls {
        Some(files) => Some(Arc::new(tls::ServerCert::load(&files.cert, &files.key)?)),
        None => None,
    };
    Ok(Gateway::new(
        config,
        Arc::new(store),
        Arc::new(providers),
        upstream,
        rules,
        clock,
        tls,
    ))
}

/// Run the gateway on `listener` until `shutdown` resolves, then drain in-flight requests
/// for up to `server.shutdown_grace`. Discovery runs in the background (retried until it
/// succeeds); `server.metrics_listen`, when set, is bound here too.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartupError> {
    let gateway = build(config)?;
    serve_gateway(gateway, listener, shutdown).await
}

/// [`serve`], reloading the configuration from `path` on SIGHUP (what the `authgate` command
/// runs). A reload that fails leaves the running configuration as it is.
pub async fn serve_reloadable(
    config: Config,
    path: std::path::PathBuf,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartupError> {
    let watch = config.server.watch_config;
    let gateway = build(config)?;
    let watcher = watch.then(|| tokio::spawn(reload_on_change(gateway.clone(), path.clone())));
    let reloads = tokio::spawn(reload_on_sighup(gateway.clone(), path));
    let served = serve_gateway(gateway, listener, shutdown).await;
    reloads.abort();
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    served
}

/// How often `server.watch_config` looks at the files.
const WATCH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// `server.watch_config`: reload when the configuration file, or a file it names (secrets,
/// certificate, key, CA files), changes: a poll of their metadata, followed through symlinks
/// (Kubernetes swaps a `..data` symlink when it updates a mounted Secret or ConfigMap). A
/// change is reloaded once, whether the reload succeeds or not; the next change is tried
/// again.
async fn reload_on_change(gateway: Arc<Gateway>, path: std::path::PathBuf) {
    let fingerprint = |gateway: &Gateway| {
        let mut files = vec![path.clone()];
        files.extend(gateway.config().files_read.iter().cloned());
        files
            .iter()
            .map(|f| {
                let meta = std::fs::metadata(f).ok()?;
                #[cfg(unix)]
                let inode = std::os::unix::fs::MetadataExt::ino(&meta);
                #[cfg(not(unix))]
                let inode = 0u64;
                Some((meta.modified().ok(), meta.len(), inode))
            })
            .collect::<Vec<_>>()
    };
    let mut seen = fingerprint(&gateway);
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let now = fingerprint(&gateway);
        if now == seen {
            continue;
        }
        tracing::info!(path = %path.display(), "a configuration file changed: reloading");
        let _ = gateway.reload(Config::load(&path)).await;
        // The files of the configuration now running (a reload may name others).
        seen = fingerprint(&gateway);
    }
}

/// Reload from `path` on every SIGHUP, one after the other.
async fn reload_on_sighup(gateway: Arc<Gateway>, path: std::path::PathBuf) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: no configuration reload");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            tracing::info!(path = %path.display(), "SIGHUP: reloading the configuration");
            let _ = gateway.reload(Config::load(&path)).await;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (gateway, path);
    }
}

/// [`serve`] for an already built gateway (tests keep a handle on its state).
pub async fn serve_gateway(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartupError> {
    let server_cfg = gateway.server_config();
    let tls = match gateway.tls() {
        Some(cert) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config_for(
            cert.clone(),
        )?)),
        None => None,
    };
    // The sessions of the last shutdown, before the first request is served.
    let snapshot = snapshot_target(&gateway);
    if let Some((store, path)) = &snapshot {
        let cfg = gateway.config();
        let rules = gateway.identity_rules();
        session::snapshot::restore_at_start(store, &cfg.session.cookie_secrets, &rules, path).await;
    }
    let metrics_listener = match server_cfg.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartupError::Bind { addr, source })?,
        ),
        None => None,
    };
    let admin_listener = match (server_cfg.admin_listen, gateway.admin()) {
        (Some(addr), Some(admin)) => Some((
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartupError::Bind { addr, source })?,
            admin,
        )),
        _ => None,
    };
    let discovery = tokio::spawn(gateway.providers().clone().discover_until_ready());
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics_task = metrics_listener.map(|listener| {
        let handler = Arc::new(gateway.metrics_only());
        let cfg = server_cfg.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            server::run(handler, listener, None, &cfg, Arc::default(), stopped).await;
        })
    });
    // The admin API: plain HTTP on its own listener (bind it to loopback or a private
    // network), never TLS-terminated here.
    let admin_task = admin_listener.map(|(listener, handler)| {
        let cfg = server_cfg.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            server::run(handler, listener, None, &cfg, Arc::default(), stopped).await;
        })
    });
    let stats = gateway.connections().clone();
    server::run(gateway.clone(), listener, tls, &server_cfg, stats, shutdown).await;
    let _ = stop_tx.send(true);
    for task in [metrics_task, admin_task].into_iter().flatten() {
        let _ = task.await;
    }
    discovery.abort();
    // After the drain: the sessions as the last requests left them, sealed with the secrets
    // configured now (a reload may have rotated them).
    if let Some((store, path)) = &snapshot {
        let cfg = gateway.config();
        let rules = gateway.identity_rules();
        session::snapshot::write_at_shutdown(store, &cfg.session.cookie_secrets, &rules, path);
    }
    Ok(())
}

/// The memory store and `session.snapshot_file`, when both are there.
fn snapshot_target(gateway: &Gateway) -> Option<(&MemoryStore, std::path::PathBuf)> {
    let path = gateway.config().session.snapshot_file.clone()?;
    match gateway.store().as_ref() {
        Store::Memory(store) => Some((store, path)),
        Store::Redis(_) => None,
    }
}

/// Resolves on SIGTERM (what Kubernetes sends) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {},
                    _ = interrupt => {},
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
