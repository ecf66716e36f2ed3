//! `hookctl`: every hookrelay gRPC call as a command, plus `publish`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = hookctl::Cli::parse();
    match hookctl::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line, each cause once; no backtrace whatever RUST_BACKTRACE.
            eprintln!(
                "error: {}",
                hookrelay_core::telemetry::error_line(error.as_ref())
            );
            std::process::ExitCode::FAILURE
        }
    }
}
