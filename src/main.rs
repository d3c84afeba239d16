//! The `authgate` command: run the gateway, check a configuration, probe a running gateway
//! (`healthcheck`), or run the demo (builds with the `demo` feature, the default).
//!
//! Exit codes: 0 clean shutdown, 2 bad configuration, 1 any other fatal error.
//! The configuration is loaded and validated before anything binds a port.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use authgate::config::{Config, LogFormat};
use authgate::error::Chain;

#[derive(Parser)]
#[command(
    name = "authgate",
    version,
    about = "Reverse-proxy auth gateway: OpenID Connect login, server-side sessions, correct token refresh"
)]
struct Cli {
    /// Configuration file. Default: $AUTHGATE_CONFIG, then ./gateway.toml
    #[arg(
        long,
        global = true,
        env = "AUTHGATE_CONFIG",
        default_value = "gateway.toml"
    )]
    config: PathBuf,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and print it with every secret redacted (exit 2 if invalid).
    Check {
        /// Also fetch the provider's discovery document and report what matters for authgate.
        #[arg(long)]
        probe: bool,
    },
    /// Exit 0 when GET /healthz on the configured `listen` address answers 200, else 1
    /// (a container HEALTHCHECK without a shell).
    Healthcheck,
    /// List or end sessions through the running gateway's admin API (server.admin_listen).
    Sessions {
        #[command(subcommand)]
        command: SessionsCommand,
    },
    // Only in builds with the `demo` feature (the default); the container image has none.
    /// A self-contained demo: gateway + development OpenID provider + echo upstream.
    #[cfg(feature = "demo")]
    Demo {
        /// Where the demo gateway listens.
        #[arg(long, default_value = "127.0.0.1:4180")]
        listen: std::net::SocketAddr,
    },
}

#[derive(Subcommand)]
enum SessionsCommand {
    /// A user's sessions: short id, login time, last use, expiry (JSON).
    List {
        /// The user (the ID token's `sub`).
        #[arg(long)]
        sub: String,
    },
    /// End every session of a user, or one session by its short id; prints {"revoked": N,
    /// "revoked_at_provider": M}.
    Revoke {
        #[arg(long, conflicts_with = "sid", required_unless_present = "sid")]
        sub: Option<String>,
        /// A session id from `authgate sessions list`.
        #[arg(long)]
        sid: Option<String>,
    },
}

const EXIT_CONFIG: u8 = 2;
const EXIT_FATAL: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("authgate: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FATAL);
        }
    };
    match cli.command {
        Some(Command::Check { probe }) => runtime.block_on(check(&cli.config, probe)),
        Some(Command::Healthcheck) => runtime.block_on(healthcheck(&cli.config)),
        Some(Command::Sessions { command }) => runtime.block_on(sessions(&cli.config, command)),
        #[cfg(feature = "demo")]
        Some(Command::Demo { listen }) => {
            init_logging(LogFormat::Text);
            runtime.block_on(demo(listen))
        }
        None => runtime.block_on(run(&cli.config)),
    }
}

async fn run(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!(
                "authgate: invalid configuration ({}):\n{errors}",
                path.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    init_logging(config.server.log_format);
    let addr = config.server.listen;
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot listen");
            return ExitCode::from(EXIT_FATAL);
        }
    };
    tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), "authgate listening");
    match authgate::serve_reloadable(
        config,
        path.to_owned(),
        listener,
        authgate::shutdown_signal(),
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %Chain(&e), "authgate stopped");
            ExitCode::from(EXIT_FATAL)
        }
    }
}

async fn check(path: &std::path::Path, probe: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!(
                "authgate: invalid configuration ({}):\n{errors}",
                path.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Files the gateway would refuse at start are configuration errors here too.
    let file_errors = authgate::lint::file_errors(&config);
    if !file_errors.is_empty() {
        let lines: Vec<String> = file_errors.iter().map(ToString::to_string).collect();
        eprintln!(
            "authgate: invalid configuration ({}):\n{}",
            path.display(),
            lines.join("\n")
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    #[allow(clippy::print_stdout)]
    {
        print!("{}", config.redacted_toml());
    }
    for warning in authgate::lint::warnings(&config) {
        eprintln!("warning: {warning}");
    }
    if probe {
        return match authgate::oidc::probe::run(&config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("probe: {}", Chain(&e));
                ExitCode::from(EXIT_FATAL)
            }
        };
    }
    ExitCode::SUCCESS
}

/// Exit 1 on every failure, a configuration that does not load included: 2 is not a
/// health state for Docker (it is reserved), and an unloadable configuration means the
/// gateway cannot be running with it either.
async fn healthcheck(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!(
                "authgate healthcheck: invalid configuration ({}):\n{errors}",
                path.display()
            );
            return ExitCode::from(EXIT_FATAL);
        }
    };
    match authgate::healthcheck::probe(&config.server).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authgate healthcheck: unhealthy: {e}");
            ExitCode::from(EXIT_FATAL)
        }
    }
}

/// `authgate sessions ...`: 2 when the configuration does not load or the admin API is off
/// in it, 1 when the call fails (unreachable, wrong token), 0 with the answer on stdout.
async fn sessions(path: &std::path::Path, command: SessionsCommand) -> ExitCode {
    use authgate::sessions_cli::{Call, CallError, call};
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!(
                "authgate sessions: invalid configuration ({}):\n{errors}",
                path.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let what = match command {
        SessionsCommand::List { sub } => Call::List { sub },
        SessionsCommand::Revoke { sub: Some(sub), .. } => Call::RevokeSub(sub),
        SessionsCommand::Revoke { sid: Some(sid), .. } => Call::RevokeSid(sid),
        SessionsCommand::Revoke { .. } => {
            eprintln!("authgate sessions revoke: give --sub or --sid");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match call(&config.server, &what).await {
        Ok(answer) => {
            #[allow(clippy::print_stdout)]
            {
                println!("{answer}");
            }
            ExitCode::SUCCESS
        }
        Err(e @ CallError::Off) => {
            eprintln!("authgate sessions: {e} ({})", path.display());
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("authgate sessions: {e}");
            ExitCode::from(EXIT_FATAL)
        }
    }
}

#[cfg(feature = "demo")]
async fn demo(listen: std::net::SocketAddr) -> ExitCode {
    match authgate::demo::run(listen, authgate::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %Chain(&e), "demo stopped");
            ExitCode::from(EXIT_FATAL)
        }
    }
}

/// `RUST_LOG` filters (default `info`); `log_format = "json"` for Kubernetes log pipelines.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or collector gets no escape sequences at all.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(authgate::logging::wants_colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
