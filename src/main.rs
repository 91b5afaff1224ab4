//! The `depot` command: `serve` runs the service, `token` issues a JWT.

use clap::{Parser, Subcommand};
use depot::config::{Config, Overrides};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "depot",
    version,
    about = "Self-hosted file upload and download service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Common {
    /// Config file (default: config/default.toml when present).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (blobs, metadata, signing key).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service.
    Serve {
        #[command(flatten)]
        common: Common,
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Print a signed token (HS256) for an account of an instance.
    Token {
        #[command(flatten)]
        common: Common,
        /// The account (`sub` claim).
        #[arg(long)]
        sub: String,
        /// The instance domain, as sent in `hypi-domain`.
        #[arg(long)]
        instance: String,
        /// Make the account an admin of the instance.
        #[arg(long)]
        admin: bool,
        /// Lifetime, e.g. 1h, 30d.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(cli: Cli) -> depot::error::Result<()> {
    match cli.command {
        Command::Serve { common, listen } => {
            let config = Config::load(&Overrides {
                config: common.config,
                listen,
                data_dir: common.data_dir,
            })?;
            init_logging(&config.log);
            actix_web::rt::System::new().block_on(depot::serve(config))
        }
        Command::Token {
            common,
            sub,
            instance,
            admin,
            ttl,
        } => {
            let config = Config::load(&Overrides {
                config: common.config,
                listen: None,
                data_dir: common.data_dir,
            })?;
            let keys = depot::auth::Keys::load(&config.auth, &config.data_dir)?;
            println!(
                "{}",
                keys.issue(&sub, &instance.to_ascii_lowercase(), admin, ttl)?
            );
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("depot: {e}");
            ExitCode::FAILURE
        }
    }
}
