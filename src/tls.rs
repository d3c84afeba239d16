//! rustls configuration for the listener (server) and for outgoing connections (client).
//!
//! One crypto provider, ring, passed explicitly: if another dependency ever enables
//! aws-lc-rs too, nothing depends on a process-wide default being installed.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::TlsSetupError;

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Server config from PEM files, offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsSetupError> {
    server_config_for(Arc::new(ServerCert::load(cert, key)?))
}

/// Server config whose certificate is `cert`'s current one, offering HTTP/2 and HTTP/1.1.
pub fn server_config_for(cert: Arc<ServerCert>) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Versions)?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The listener's certificate and key: every handshake takes the current one, and a reload
/// replaces it (connections already open keep theirs).
#[derive(Debug)]
pub struct ServerCert(ArcSwap<CertifiedKey>);

impl ServerCert {
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsSetupError> {
        Ok(ServerCert(ArcSwap::new(certified_key(cert, key)?)))
    }

    /// The certificate handshakes get now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.0.load_full()
    }

    /// Serve `certified` from the next handshake on.
    pub fn replace(&self, certified: Arc<CertifiedKey>) {
        self.0.store(certified);
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The certificate chain and key of PEM files, checked to fit each other.
pub fn certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsSetupError> {
    let certs = read_certificates(cert, "server.tls_cert_file")?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificate {
            key: "server.tls_cert_file",
            path: cert.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsSetupError::Read {
        key: "server.tls_key_file",
        path: key.to_owned(),
        source,
    })?;
    let certified =
        CertifiedKey::from_der(certs, key, &provider()).map_err(TlsSetupError::KeyMismatch)?;
    Ok(Arc::new(certified))
}

/// Client config trusting the webpki roots plus, optionally, a CA bundle of the operator's.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let certs = read_certificates(path, "upstream.ca_file")?;
        // A bundle with no certificate in it is a mistake (the wrong file, a key): trusting
        // only the public roots then would fail later, far from the cause.
        if certs.is_empty() {
            return Err(TlsSetupError::NoCertificate {
                key: "upstream.ca_file",
                path: path.to_owned(),
            });
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|source| TlsSetupError::TrustAnchor {
                    path: path.to_owned(),
                    source,
                })?;
        }
    }
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Versions)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Every certificate of a PEM file (`key` names the setting, for the error).
fn read_certificates(
    path: &Path,
    key: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsSetupError::Read {
            key,
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Chain, StartupError};
    use std::error::Error;

    /// A file of its own in the temporary directory (removed on drop).
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("authgate-tls-unit-{}-{name}", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn errors_name_the_setting_and_the_file_and_keep_their_cause() {
        let one = rcgen::generate_simple_self_signed(vec!["a.example".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["b.example".to_owned()]).unwrap();
        let cert = TempFile::new("one.crt", &one.cert.pem());
        let key = TempFile::new("one.key", &one.key_pair.serialize_pem());
        let wrong_key = TempFile::new("other.key", &other.key_pair.serialize_pem());
        let missing = std::env::temp_dir().join("authgate-tls-unit-missing.crt");
        assert!(server_config(&cert.0, &key.0).is_ok());

        let e = StartupError::from(server_config(&cert.0, &wrong_key.0).unwrap_err());
        let cause = e.source().and_then(Error::source);
        assert!(
            cause.is_some_and(|c| c.downcast_ref::<rustls::Error>().is_some()),
            "{e:?}"
        );
        assert!(
            Chain(&e)
                .to_string()
                .starts_with("TLS: certificate and key do not fit: "),
            "{}",
            Chain(&e)
        );

        let e = StartupError::from(server_config(&key.0, &key.0).unwrap_err());
        assert_eq!(
            Chain(&e).to_string(),
            format!(
                "TLS: server.tls_cert_file {}: no certificate found",
                key.0.display()
            )
        );

        let e = StartupError::from(server_config(&cert.0, &missing).unwrap_err());
        let text = Chain(&e).to_string();
        let expected = format!(
            "TLS: server.tls_key_file {}: I/O error: ",
            missing.display()
        );
        assert!(text.starts_with(&expected), "{text}");

        let e = StartupError::from(client_config(Some(&missing)).unwrap_err());
        let text = Chain(&e).to_string();
        let expected = format!("TLS: upstream.ca_file {}: I/O error: ", missing.display());
        assert!(text.starts_with(&expected), "{text}");
        assert!(client_config(Some(&cert.0)).is_ok());
    }
}
