//! `hookrelay`: every service in one process, or one of them for scale-out.

use std::path::PathBuf;

use clap::Parser;
use hookrelay::{Listeners, Role};

#[derive(Parser)]
#[command(version, about = "Webhook delivery from NATS to HTTP")]
struct Args {
    /// TOML file layered over the built-in defaults (HOOKRELAY_* env wins).
    #[arg(long, env = "HOOKRELAY_CONFIG")]
    config: Option<PathBuf>,
    /// Which services to run.
    #[arg(value_enum, default_value = "all")]
    role: Role,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = hookrelay_core::Config::load(args.config.as_deref())?;
    hookrelay_core::telemetry::init(&config.telemetry);
    let listeners = Listeners::bind(&config, args.role).await?;
    let shutdown = hookrelay_core::shutdown::on_signal();
    hookrelay::run(config, args.role, listeners, shutdown).await?;
    Ok(())
}
