//! `hookrelay`: every service in one process, or one of them for scale-out.

use std::path::PathBuf;

use clap::Parser;
use hookrelay::Role;

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
    hookrelay::serve(args.config.as_deref(), args.role).await?;
    Ok(())
}
