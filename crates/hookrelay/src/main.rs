//! `hookrelay`: every service in one process, or one of them for scale-out;
//! `hookrelay healthcheck` asks a running one whether it is ready.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hookrelay::Role;

#[derive(Parser)]
#[command(version, about = "Webhook delivery from NATS to HTTP")]
struct Args {
    /// TOML file layered over the built-in defaults (HOOKRELAY_* env wins).
    #[arg(long, env = "HOOKRELAY_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Which services to run.
    #[arg(value_enum, default_value = "all")]
    role: Role,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Exit 0 if the hookrelay at this config's server.http_listen answers
    /// 200 on /readyz (/healthz with --live), 1 otherwise: for container
    /// health checks, no curl needed.
    Healthcheck(hookrelay::healthcheck::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Command::Healthcheck(check)) => {
            hookrelay::healthcheck::run(args.config.as_deref(), &check).await
        }
        None => match hookrelay::serve(args.config.as_deref(), args.role).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                // One line, each cause once; no backtrace whatever RUST_BACKTRACE.
                eprintln!("error: {}", hookrelay_core::telemetry::error_line(&error));
                ExitCode::FAILURE
            }
        },
    }
}
