//! The internals of the `hookrelay-bench` binary (an application, so errors
//! are `anyhow`): it starts hookrelay as a child process (this binary run as
//! `serve`, the same code as `hookrelay`), a minimal HTTP receiver, and a
//! publisher, then reports throughput, latency, CPU, memory and the ratio to
//! a bare reqwest-to-receiver ceiling measured in the same run.
#![forbid(unsafe_code)]

mod admin;
mod ceiling;
mod publisher;
mod receiver;
mod report;
mod scenarios;
mod server;

use std::time::Duration;

use clap::{Parser, Subcommand};

pub use report::Report;

#[derive(Parser, Debug)]
#[command(version, about = "End-to-end benchmark of hookrelay on this machine")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// NATS with JetStream.
    #[arg(
        long,
        global = true,
        env = "HOOKRELAY_NATS__URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats: String,
    /// Redis.
    #[arg(
        long,
        global = true,
        env = "HOOKRELAY_REDIS__URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis: String,
    /// Multiplies every count (events, subscriptions, retries) and duration;
    /// e.g. 0.01 for a quick look. The documented figures use 1.
    #[arg(long, global = true, default_value_t = 1.0)]
    pub scale: f64,
    /// Prints the reports as JSON on stdout instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// One subscription, 200k events, as fast as they are published.
    Throughput,
    /// One event type, 1,000 subscriptions: 200 events, 200k deliveries.
    Fanout,
    /// Open loop at a fixed rate (5k events/s for 20 s): latency without
    /// coordinated omission.
    Latency {
        /// Events per second.
        #[arg(long, default_value_t = 5000)]
        rate: u64,
    },
    /// A receiver that never answers beside a healthy one: how much of its
    /// solo rate the healthy one keeps.
    Isolation,
    /// 1M pending retries: Redis bytes per entry, and how fast they drain
    /// once due.
    Retries,
    /// Seed 001's debounced batches: changes per second.
    Batching,
    /// Every scenario, one after the other.
    All,
    /// Runs hookrelay itself (all-in-one), as the benchmark's child process.
    #[command(hide = true)]
    Serve,
}

/// Runs the command line.
pub fn main(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if cli.command == Command::Serve {
        return Ok(runtime.block_on(hookrelay::serve(None, hookrelay::Role::All))?);
    }
    let reports = runtime.block_on(run(&cli))?;
    if cli.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    // Straggling connections (the receiver that never answers) must not
    // keep the process alive.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Options every scenario reads.
#[derive(Debug, Clone)]
pub struct Opts {
    pub nats: String,
    pub redis: String,
    pub scale: f64,
}

impl Opts {
    /// `n` scaled, never below `min`.
    pub fn count(&self, n: u64, min: u64) -> u64 {
        ((n as f64 * self.scale).round() as u64).max(min)
    }
}

async fn run(cli: &Cli) -> anyhow::Result<Vec<Report>> {
    let opts = Opts {
        nats: cli.nats.clone(),
        redis: cli.redis.clone(),
        scale: cli.scale,
    };
    let all = [
        Command::Throughput,
        Command::Fanout,
        Command::Latency { rate: 5000 },
        Command::Isolation,
        Command::Retries,
        Command::Batching,
    ];
    let chosen: Vec<Command> = match cli.command {
        Command::All => all.to_vec(),
        one => vec![one],
    };
    let mut reports = Vec::new();
    for command in chosen {
        let report = match command {
            Command::Throughput => scenarios::throughput(&opts).await?,
            Command::Fanout => scenarios::fanout(&opts).await?,
            Command::Latency { rate } => scenarios::latency(&opts, rate).await?,
            Command::Isolation => scenarios::isolation(&opts).await?,
            Command::Retries => scenarios::retries(&opts).await?,
            Command::Batching => scenarios::batching(&opts).await?,
            Command::All | Command::Serve => unreachable!("not a scenario"),
        };
        if !cli.json {
            println!("{report}");
        }
        reports.push(report);
    }
    Ok(reports)
}
