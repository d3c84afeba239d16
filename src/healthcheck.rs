//! `authgate healthcheck`: one `GET /healthz` to the running gateway, for a container
//! `HEALTHCHECK` in an image that has no shell and no curl (distroless).
//!
//! It reads the same configuration as the gateway (file and environment), so it probes the
//! address the gateway really listens on: a wildcard `listen` (`0.0.0.0`, `[::]`) is
//! reached on loopback. Healthy means a 200 within [`TIMEOUT`]; anything else is unhealthy.
//!
//! With `tls_cert_file`/`tls_key_file` the probe speaks TLS and does NOT verify the
//! certificate. The certificate names `public_url`'s host, which never matches the loopback
//! address probed, and pinning the file on disk would fail the probe (and get the container
//! restarted) whenever a renewed certificate is written before the gateway reloads it. The
//! probe sends no credential and reads only a status code, and it connects to a port that
//! the gateway itself holds: an unverified peer can at worst make it report "healthy".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::ServerConfig;

/// The whole probe (connect, TLS, request, response head) must finish within this.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Why the gateway is not healthy, for the health check's output.
#[derive(Debug, thiserror::Error)]
pub enum Unhealthy {
    #[error("no answer from {0} within {TIMEOUT:?}")]
    Timeout(SocketAddr),
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS client: {0}")]
    TlsConfig(rustls::Error),
    #[error("request: {0}")]
    Request(http::Error),
    #[error("HTTP exchange with {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("GET /healthz on {addr} answered {status}")]
    Status {
        addr: SocketAddr,
        status: StatusCode,
    },
}

/// Probe the gateway configured by `server`: `Ok` when `/healthz` answered 200 in time.
pub async fn probe(server: &ServerConfig) -> Result<(), Unhealthy> {
    let tls = server.tls.is_some();
    let mut last = None;
    for addr in targets(server.listen) {
        match tokio::time::timeout(TIMEOUT, probe_addr(addr, tls)).await {
            Ok(Ok(())) => return Ok(()),
            // Only a refused/unreachable address moves on to the next candidate: a gateway
            // that accepted the connection and then failed is unhealthy as it is.
            Ok(Err(e @ Unhealthy::Connect { .. })) => last = Some(e),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(Unhealthy::Timeout(addr)),
        }
    }
    Err(last.unwrap_or(Unhealthy::Timeout(server.listen)))
}

/// Where to connect for `listen`. A wildcard address is not connectable: use loopback.
/// For `[::]` IPv4 loopback comes first, because a dual-stack socket also accepts it and a
/// container with IPv6 disabled has no `::1`; `::1` is tried when 127.0.0.1 is refused
/// (an IPv6-only socket).
pub fn targets(listen: SocketAddr) -> Vec<SocketAddr> {
    let port = listen.port();
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))]
        }
        IpAddr::V6(ip) if ip.is_unspecified() => vec![
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
        ],
        _ => vec![listen],
    }
}

async fn probe_addr(addr: SocketAddr, tls: bool) -> Result<(), Unhealthy> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| Unhealthy::Connect { addr, source })?;
    if !tls {
        return get_healthz(tcp, addr).await;
    }
    let connector = TlsConnector::from(Arc::new(unverified_client()?));
    // An IP address as the name: rustls then sends no SNI, and nothing is verified anyway.
    let name = ServerName::IpAddress(addr.ip().into());
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|source| Unhealthy::Tls { addr, source })?;
    get_healthz(stream, addr).await
}

/// One HTTP/1.1 `GET /healthz` on `io`; only the response's status is read.
async fn get_healthz<T>(io: T, addr: SocketAddr) -> Result<(), Unhealthy>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |source| Unhealthy::Http { addr, source };
    let (mut sender, conn) = http1::handshake(TokioIo::new(io)).await.map_err(http)?;
    // The connection task ends with the process, right after the answer.
    tokio::spawn(conn);
    let request = Request::get("/healthz")
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "authgate-healthcheck")
        .body(Empty::<Bytes>::new())
        .map_err(Unhealthy::Request)?;
    let response = sender.send_request(request).await.map_err(http)?;
    match response.status() {
        StatusCode::OK => Ok(()),
        status => Err(Unhealthy::Status { addr, status }),
    }
}

/// A TLS client (HTTP/1.1 by ALPN) that accepts any certificate; why: see the module docs.
fn unverified_client() -> Result<rustls::ClientConfig, Unhealthy> {
    let provider = crate::tls::provider();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(Unhealthy::TlsConfig)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts every certificate, but still checks the handshake signatures: the TLS session
/// is a real one with whoever holds the port.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_addresses_are_probed_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:4180".parse().unwrap();
        assert_eq!(targets(v4), vec!["127.0.0.1:4180".parse().unwrap()]);
        let v6: SocketAddr = "[::]:4180".parse().unwrap();
        assert_eq!(
            targets(v6),
            vec![
                "127.0.0.1:4180".parse().unwrap(),
                "[::1]:4180".parse().unwrap()
            ]
        );
        let fixed: SocketAddr = "10.1.2.3:8443".parse().unwrap();
        assert_eq!(targets(fixed), vec![fixed]);
    }
}
