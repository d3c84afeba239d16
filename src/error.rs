//! Errors that stop the process. Configuration errors live in `config` (exit 2); these are
//! everything else that can fail at start (exit 1).
//!
//! Each keeps what caused it as its `source()`, typed, instead of a message flattened into a
//! string: print one with [`Chain`] to show the whole story on one line (`TLS:
//! server.tls_cert_file /etc/tls.crt: I/O error: Permission denied (os error 13)`).

use std::error::Error;
use std::fmt;
use std::path::PathBuf;

/// A fatal error while starting or running the gateway (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS")]
    Tls(#[from] TlsSetupError),
    #[error("upstream: upstream.url")]
    Upstream(#[from] UpstreamSetupError),
    #[error("OIDC client")]
    Oidc(#[from] OidcSetupError),
    #[error("session store")]
    Store(#[from] StoreSetupError),
    /// The demo's own generated configuration did not load (a bug, not a user error).
    #[error("demo configuration")]
    Demo(#[source] Box<dyn Error + Send + Sync>),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A certificate, key or CA bundle that cannot be used. The variants name the configuration
/// key and the file, so the operator knows which one to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// Unreadable, or not PEM.
    #[error("{key} {}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{key} {}: no certificate found", path.display())]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("certificate and key do not fit")]
    KeyMismatch(#[source] rustls::Error),
    #[error("upstream.ca_file {}: not usable as a trust anchor", path.display())]
    TrustAnchor {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The crypto provider supports none of the safe default protocol versions (cannot
    /// happen with ring; kept rather than unwrapped).
    #[error("protocol versions")]
    Versions(#[source] rustls::Error),
}

/// `upstream.url` that the proxy cannot connect to (what validation does not already refuse).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("not a URI")]
    InvalidUri(#[source] http::uri::InvalidUri),
    #[error("needs a scheme and a host")]
    NoHost,
    #[error("the scheme must be http or https")]
    Scheme,
    #[error("host {host}")]
    ServerName {
        host: String,
        #[source]
        source: rustls_pki_types::InvalidDnsNameError,
    },
}

/// The provider client that cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum OidcSetupError {
    #[error("redirect URI")]
    RedirectUri(#[source] url::ParseError),
    #[error("post-logout URI")]
    PostLogoutUri(#[source] url::ParseError),
    #[error("HTTP client")]
    HttpClient(#[source] openidconnect::reqwest::Error),
}

/// The Redis session store that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum StoreSetupError {
    #[error("the Redis client needs a Tokio runtime")]
    NoRuntime,
    #[error("no usable cookie secret")]
    NoUsableSecret,
    /// Only the kind of the parse error, never the error itself: it can quote the URL, and
    /// with it the password.
    #[error(
        "invalid Redis URL in session.redis_url, redis_sentinels or redis_cluster_nodes ({0:?})"
    )]
    InvalidUrl(redis::ErrorKind),
    #[error("cannot set up the Redis client")]
    Client(#[source] redis::RedisError),
}

/// An error and its causes on one line, `outer: cause: root cause`. reqwest, hyper and
/// rustls keep the useful part (refused, timed out, unknown CA) in `source()`, which a plain
/// `{e}` does not show.
pub struct Chain<'a>(pub &'a dyn Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_shows_every_cause_in_order() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = StartupError::from(TlsSetupError::Read {
            key: "server.tls_key_file",
            path: "/etc/tls.key".into(),
            source: rustls_pki_types::pem::Error::Io(io),
        });
        assert_eq!(e.to_string(), "TLS");
        assert_eq!(
            Chain(&e).to_string(),
            "TLS: server.tls_key_file /etc/tls.key: I/O error: denied"
        );
        // The cause is kept, typed: a caller can still ask what went wrong.
        let cause = e.source().and_then(|s| s.downcast_ref::<TlsSetupError>());
        assert!(matches!(cause, Some(TlsSetupError::Read { .. })), "{e:?}");
    }

    #[test]
    fn a_bind_error_keeps_the_io_error() {
        let e = StartupError::Bind {
            addr: ([127, 0, 0, 1], 80).into(),
            source: std::io::ErrorKind::AddrInUse.into(),
        };
        assert_eq!(
            Chain(&e).to_string(),
            "cannot listen on 127.0.0.1:80: address in use"
        );
    }
}
