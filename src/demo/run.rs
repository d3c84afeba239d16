//! `authgate demo`: the gateway, the development provider and the echo upstream in one
//! process, so a new user sees login, identity headers and refresh without configuring
//! anything. Access tokens live 30 s and refresh-token rotation is on, so the refresh is
//! visible on the echo page.

use std::future::Future;
use std::net::SocketAddr;

use base64::Engine;
use devidp::echo::serve_echo;
use devidp::idp::{DevIdp, DevIdpOptions};
use figment::Figment;
use figment::providers::{Format, Toml};
use rand::RngCore;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::error::StartupError;

const CLIENT_ID: &str = "authgate-demo";

pub async fn run(
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), StartupError> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let client_secret = random_b64(24);
    let idp = DevIdp::start(
        TcpListener::bind(loopback).await?,
        DevIdpOptions::demo(CLIENT_ID, Some(client_secret.clone())),
    )
    .await?;
    let echo_listener = TcpListener::bind(loopback).await?;
    let echo_addr = echo_listener.local_addr()?;
    let echo = tokio::spawn(serve_echo(echo_listener));
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| StartupError::Bind {
            addr: listen,
            source,
        })?;
    let public = public_origin(listener.local_addr()?);
    let config = demo_config(&public, &idp.issuer(), &client_secret, echo_addr)?;
    tracing::info!(provider = %idp.issuer(), upstream = %echo_addr, "demo provider and echo upstream started");
    eprintln!(
        "\n  authgate demo is running: open {public}/ in a browser.\n  \
         Log in with any user name at the development provider. Access tokens live 30 s and\n  \
         are refreshed once less than 10 s are left: reload 20 s after logging in and the\n  \
         echo page shows a new bearer token.\n  \
         Ctrl-C stops it.\n"
    );
    let result = crate::serve(config, listener, shutdown).await;
    idp.shutdown();
    echo.abort();
    result
}

/// The configuration a user would write, made for the demo (validated like any other).
fn demo_config(
    public: &str,
    issuer: &str,
    client_secret: &str,
    upstream: SocketAddr,
) -> Result<Config, StartupError> {
    let toml = format!(
        r#"
        [server]
        listen = "127.0.0.1:0"
        public_url = "{public}"
        shutdown_grace = "2s"
        [upstream]
        url = "http://{upstream}"
        [oidc]
        issuer = "{issuer}"
        client_id = "{CLIENT_ID}"
        client_secret = "{client_secret}"
        [session]
        cookie_secrets = ["{cookie_secret}"]
        cookie_secure = false
        refresh_before_expiry = "10s"
        [[route]]
        path = "/favicon.ico"
        match = "exact"
        policy = "public"
        "#,
        cookie_secret = random_b64(32),
    );
    Config::from_figment(Figment::from(Toml::string(&toml)))
        .map_err(|e| StartupError::Demo(Box::new(e)))
}

/// Browsers reach a wildcard listener on loopback.
fn public_origin(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        addr.ip().to_string()
    };
    format!("http://{host}:{}", addr.port())
}

fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::STANDARD.encode(buf)
}
