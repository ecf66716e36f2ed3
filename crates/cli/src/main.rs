//! `hookctl`: every hookrelay gRPC call as a command, plus `publish`.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = hookctl::Cli::parse();
    if let Err(error) = hookctl::run(cli).await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
