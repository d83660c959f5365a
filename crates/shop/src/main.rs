//! `portcullis-shop`: run the demo shop on loopback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser};
use portcullis_shop::{AppState, ShopConfig, Vuln, VulnSet};

/// The Portcullis demo shop: secure by default, each OWASP API weakness switchable with --vuln.
#[derive(Debug, Parser)]
#[command(name = "portcullis-shop", version)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8081", env = "SHOP_LISTEN")]
    listen: SocketAddr,
    /// SQLite database file (created and migrated if missing); in memory when absent.
    #[arg(long, env = "SHOP_DB")]
    db: Option<PathBuf>,
    /// Weaknesses to switch on: `all` or a comma-separated list of the names below.
    #[arg(long = "vuln", value_name = "NAME[,NAME...]")]
    vulns: Vec<String>,
    /// Environment variable holding the administrator password (at least 12 characters);
    /// when unset a random one is generated and printed once.
    #[arg(long, default_value = "SHOP_ADMIN_PASSWORD")]
    admin_password_env: String,
    /// Environment variable holding the token signing secret; random per process when unset.
    #[arg(long, default_value = "SHOP_JWT_SECRET")]
    jwt_secret_env: String,
    /// Sign tokens with a per-process RSA key (RS256), published at /.well-known/jwks.json,
    /// instead of the HMAC secret.
    #[arg(long)]
    jwt_rsa: bool,
    /// Origin allowed by CORS (repeatable).
    #[arg(long = "cors-origin", default_value = "https://shop.example")]
    cors_origins: Vec<String>,
    /// Host the avatar fetch may reach (repeatable).
    #[arg(long = "avatar-host", default_value = "images.shop.example")]
    avatar_hosts: Vec<String>,
    /// Allow listening on a non-loopback address while weaknesses are switched on.
    #[arg(long)]
    dangerous_allow_public: bool,
}

fn vuln_help() -> String {
    let mut s = String::from("Weaknesses (--vuln):\n");
    for v in Vuln::ALL {
        s.push_str(&format!("  {:<20} {}\n", v.name(), v.describe()));
    }
    s.push_str("  all                  every one of the above");
    s
}

fn main() -> ExitCode {
    let matches = Cli::command().after_help(vuln_help()).get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let vulns = match VulnSet::parse(cli.vulns.iter().map(String::as_str)) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("portcullis-shop: --vuln: {e}");
            return ExitCode::from(64);
        }
    };
    if vulns != VulnSet::secure() && !cli.listen.ip().is_loopback() && !cli.dangerous_allow_public {
        eprintln!(
            "portcullis-shop: --listen {}: weaknesses are switched on; listen on loopback or pass --dangerous-allow-public",
            cli.listen
        );
        return ExitCode::from(64);
    }
    let admin_password = match std::env::var(&cli.admin_password_env) {
        Ok(p) => p,
        Err(_) => {
            let p = portcullis_shop::state::hex(&portcullis_shop::state::random_bytes(12));
            eprintln!(
                "portcullis-shop: administrator admin@shop.example, generated password {p} (set {} to choose one)",
                cli.admin_password_env
            );
            p
        }
    };
    let config = ShopConfig {
        vulns,
        db_path: cli.db,
        jwt_secret: std::env::var(&cli.jwt_secret_env)
            .ok()
            .map(String::into_bytes),
        jwt_rsa: cli.jwt_rsa,
        admin_password,
        cors_origins: cli.cors_origins,
        avatar_hosts: cli.avatar_hosts,
        ..ShopConfig::default()
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis-shop: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    runtime.block_on(run(cli.listen, config))
}

async fn run(listen: SocketAddr, config: ShopConfig) -> ExitCode {
    let names: Vec<_> = config.vulns.iter().map(Vuln::name).collect();
    let state = match AppState::new(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("portcullis-shop: {e}");
            return ExitCode::from(64);
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("portcullis-shop: cannot listen on {listen}: {e}");
            return ExitCode::from(69);
        }
    };
    let bound = listener
        .local_addr()
        .map_or_else(|_| listen.to_string(), |a| a.to_string());
    tracing::info!(
        listen = %bound,
        weaknesses = if names.is_empty() { "none".to_owned() } else { names.join(",") },
        "portcullis-shop listening"
    );
    let shutdown = async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    };
    match portcullis_shop::serve(listener, state, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis-shop: {e}");
            ExitCode::from(70)
        }
    }
}
