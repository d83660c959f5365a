//! `portcullis`: the command line. Only this crate knows about argv, the terminal and exit
//! codes: 0 success, 64 bad usage or bad policy (EX_USAGE), 69 cannot bind (EX_UNAVAILABLE),
//! 70 internal error.

mod demo;
mod lint;
mod scan;
mod token;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "API security gateway, scanner and linter"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

/// The policy file argument shared by `serve` and `check`.
#[derive(Debug, clap::Args)]
struct PolicyArg {
    /// The policy file.
    #[arg(
        short,
        long,
        env = "PORTCULLIS_CONFIG",
        default_value = "portcullis.yaml"
    )]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the security gateway in front of an upstream API.
    Serve {
        #[command(flatten)]
        policy: PolicyArg,
        /// Log line format (one line per request).
        #[arg(long, value_enum, default_value = "json")]
        log_format: LogFormat,
    },
    /// Validate a policy file and the OpenAPI description it names; print every problem.
    Check {
        #[command(flatten)]
        policy: PolicyArg,
    },
    /// Mint a JWT from a local key, or print a key's JWKS (for tests, the demo, your own checks).
    Token {
        #[command(subcommand)]
        command: Box<token::TokenCommand>,
    },
    /// Audit an OpenAPI description for the design flaws behind the OWASP API Top 10.
    Lint(lint::LintArgs),
    /// Attack a running API (loopback by default) with two or more identities and report
    /// what was proven.
    Scan(Box<scan::ScanArgs>),
    /// Start the demo shop (every weakness on) and a gateway in front of it, on loopback.
    Demo {
        /// Port of the gateway.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Port of the shop.
        #[arg(long, default_value_t = 8081)]
        shop_port: u16,
    },
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: cannot start the async runtime: {e}");
            return ExitCode::from(70);
        }
    };
    match cli.command {
        Command::Check { policy } => check(&policy.config),
        Command::Serve { policy, log_format } => {
            init_logs(log_format);
            runtime.block_on(serve(&policy.config))
        }
        Command::Token { command } => token::run(*command),
        Command::Lint(args) => lint::run(args),
        Command::Scan(args) => scan::run(*args, &runtime),
        Command::Demo { port, shop_port } => {
            init_logs(LogFormat::Text);
            runtime.block_on(demo::run(port, shop_port))
        }
    }
}

fn check(config: &Path) -> ExitCode {
    match portcullis_policy::load(config) {
        Ok(loaded) => {
            eprint!("{}", loaded.warnings);
            // What only the gateway can tell: keys it can use, schemas it can compile.
            let routes = loaded.policy.inventory.len();
            let metrics = portcullis_gateway::metrics::Metrics::new(1);
            if let Err((key, e)) =
                portcullis_gateway::runtime::Runtime::new(loaded.policy, &metrics)
            {
                eprintln!("{}: error: {key}: {e}", config.display());
                eprintln!("{}: 1 error(s); the policy is refused", config.display());
                return ExitCode::from(64);
            }
            eprintln!(
                "{}: ok ({routes} routes, {} warnings)",
                config.display(),
                loaded.warnings.0.len()
            );
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprint!("{problems}");
            let errors = problems.iter().filter(|p| p.is_error()).count();
            eprintln!(
                "{}: {errors} error(s); the policy is refused",
                config.display()
            );
            ExitCode::from(64)
        }
    }
}

/// Waits for SIGINT or SIGTERM.
pub(crate) async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn serve(config: &Path) -> ExitCode {
    let loaded = match portcullis_policy::load(config) {
        Ok(l) => l,
        Err(problems) => {
            eprint!("{problems}");
            eprintln!("portcullis: {}: the policy is refused", config.display());
            return ExitCode::from(64);
        }
    };
    for w in loaded.warnings.iter() {
        tracing::warn!(target: "portcullis::policy", "{w}");
    }
    let gateway = match portcullis_gateway::Gateway::start(loaded.policy).await {
        Ok(g) => Arc::new(g),
        Err(e @ portcullis_gateway::StartError::Bind { .. }) => {
            eprintln!("portcullis: {e}");
            return ExitCode::from(69);
        }
        Err(e) => {
            eprintln!("portcullis: {}: {e}", config.display());
            return ExitCode::from(64);
        }
    };
    portcullis_gateway::reload::watch(&gateway);
    terminated().await;
    tracing::info!(target: "portcullis::gateway", "shutting down");
    match Arc::try_unwrap(gateway) {
        Ok(g) => g.stop().await,
        Err(g) => {
            let _ = g.shutdown_handle().send(true);
        }
    }
    ExitCode::SUCCESS
}
