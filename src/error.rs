//! Errors that stop the process. Configuration errors live in `config` (exit 2); these are
//! everything else that can fail at start (exit 1).

/// A fatal error while starting or running the gateway (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("upstream: {0}")]
    Upstream(String),
    #[error("OIDC client: {0}")]
    Oidc(String),
    #[error("session store: {0}")]
    Store(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
