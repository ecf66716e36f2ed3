//! The internals of the `hookrelay-bench` binary (an application, so errors
//! are `anyhow`): it starts hookrelay as a child process (this binary run as
//! `serve`, the same code as `hookrelay`), a minimal HTTP receiver, and a
//! publisher, then reports throughput, latency, CPU, memory and the ratio to
//! a bare reqwest-to-receiver ceiling measured in the same run.
#![forbid(unsafe_code)]

mod admin;
mod ceiling;
mod procs;
mod publisher;
mod receiver;
mod report;
mod scenarios;
mod server;

use std::time::Duration;

use clap::Parser;

pub use report::Report;

#[derive(Parser, Debug)]
#[command(version, about = "End-to-end benchmark of hookrelay on this machine")]
pub struct Cli {
    /// What to run, in this order (`all`: every scenario).
    #[arg(value_enum, required = true)]
    pub scenarios: Vec<Scenario>,
    /// NATS with JetStream.
    #[arg(
        long,
        env = "HOOKRELAY_NATS__URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats: String,
    /// Redis.
    #[arg(
        long,
        env = "HOOKRELAY_REDIS__URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis: String,
    /// Multiplies every count (events, subscriptions, retries) and so every
    /// duration; e.g. 0.1 for a quick look. The documented figures use 1.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Events per second of the `latency` scenario's open loop.
    #[arg(long, default_value_t = 5000)]
    pub rate: u64,
    /// Prints the reports as JSON on stdout instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// One subscription, 200k events, as fast as they are published.
    Throughput,
    /// One event type, 1,000 subscriptions: 200 events, 200k deliveries.
    Fanout,
    /// Open loop at --rate events/s for 20 s: latency without coordinated
    /// omission.
    Latency,
    /// A receiver that never answers beside a healthy one: how much of its
    /// solo rate the healthy one keeps.
    Isolation,
    /// 1M pending retries: Redis bytes per entry, and how fast they drain
    /// once due.
    Retries,
    /// Seed 001's debounced batches: changes per second.
    Batching,
    /// Events of 64 KiB, 512 KiB and the largest NATS takes, each to 100
    /// subscriptions: MB/s delivered, peak RSS, bodies intact.
    Large,
    /// A subscription whose circuit is open: CPU per event held, next to a
    /// delivery's.
    Circuit,
    /// 100,000 subscriptions across 1,000 tenants: listing and creating
    /// for one tenant, p99.
    Admin,
    /// 1,000,000 attempt records indexed: ListAttempts by outcome, p99.
    AttemptLog,
    /// ~1 KiB events with a 20-property schema, validation off and reject
    /// in turn: what validating at ingest costs.
    Validation,
    /// No hookrelay: what one JetStream hop and one bare HTTP request cost,
    /// the least CPU any delivery needs on this machine.
    Floor,
    /// Every scenario, one after the other.
    All,
    /// Runs hookrelay itself (all-in-one): the benchmark's child process.
    #[value(hide = true)]
    Serve,
}

/// Runs the command line.
pub fn main(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if cli.scenarios == [Scenario::Serve] {
        return Ok(runtime.block_on(hookrelay::serve(None, hookrelay::Role::All))?);
    }
    let reports = runtime.block_on(async {
        let reports = run(&cli).await;
        if reports.is_err() {
            server::clean_up_unfinished(&opts(&cli)).await;
        }
        reports
    })?;
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

fn opts(cli: &Cli) -> Opts {
    Opts {
        nats: cli.nats.clone(),
        redis: cli.redis.clone(),
        scale: cli.scale,
    }
}

async fn run(cli: &Cli) -> anyhow::Result<Vec<Report>> {
    let opts = opts(cli);
    let chosen: Vec<Scenario> = cli
        .scenarios
        .iter()
        .flat_map(|&scenario| match scenario {
            Scenario::All => vec![
                Scenario::Throughput,
                Scenario::Fanout,
                Scenario::Latency,
                Scenario::Isolation,
                Scenario::Retries,
                Scenario::Batching,
                Scenario::Large,
                Scenario::Circuit,
                Scenario::Admin,
                Scenario::AttemptLog,
                Scenario::Validation,
                Scenario::Floor,
            ],
            one => vec![one],
        })
        .collect();
    let mut reports: Vec<Report> = Vec::new();
    for scenario in chosen {
        let mut report = match scenario {
            Scenario::Throughput => scenarios::throughput(&opts).await?,
            Scenario::Fanout => scenarios::fanout(&opts).await?,
            Scenario::Latency => scenarios::latency(&opts, cli.rate).await?,
            Scenario::Isolation => scenarios::isolation(&opts).await?,
            Scenario::Retries => scenarios::retries(&opts).await?,
            Scenario::Batching => scenarios::batching(&opts).await?,
            Scenario::Large => scenarios::large(&opts).await?,
            Scenario::Floor => scenarios::floor(&opts).await?,
            Scenario::Circuit => scenarios::circuit(&opts).await?,
            Scenario::Admin => scenarios::admin(&opts).await?,
            Scenario::AttemptLog => scenarios::attempt_log(&opts).await?,
            Scenario::Validation => scenarios::validation(&opts).await?,
            Scenario::All | Scenario::Serve => anyhow::bail!("`serve` runs alone"),
        };
        compare_fanout(&mut report, &reports);
        if !cli.json {
            println!("{report}");
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Fan-out must sustain at least the single-subscription rate; judged when
/// `throughput` ran earlier in the same invocation.
fn compare_fanout(report: &mut Report, earlier: &[Report]) {
    let throughput = earlier
        .iter()
        .filter(|r| r.scenario == "throughput")
        .find_map(|r| r.get("deliveries_per_sec"));
    if let (Some(throughput), "fanout", Some(fanout)) = (
        throughput,
        report.scenario,
        report.get("deliveries_per_sec"),
    ) {
        report.target(
            format!("fan-out deliveries/s at least the throughput figure ({fanout:.0} vs {throughput:.0})"),
            fanout >= throughput,
        );
    }
}
