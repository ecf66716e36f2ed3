//! The scenarios. Each starts its own hookrelay (fresh prefix, fresh
//! process, so peak RSS is the scenario's own), its own receiver, measures,
//! then deletes everything it created.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream;
use indicatif::{ProgressBar, ProgressStyle};

use hookrelay_proto::v1 as pb;

use crate::admin::{self, TENANT};
use crate::procs::{Cpu, Meter};
use crate::publisher;
use crate::receiver::{Receiver, Stats};
use crate::report::{Report, RSS_TARGET_BYTES};
use crate::server::{redis_connection, redis_used_memory, Hookrelay};
use crate::Opts;

mod admin_plane;
mod attempt_log;
mod delivery;
mod floor;
mod large;
mod retries;
mod validation;

pub use admin_plane::admin;
pub use attempt_log::attempt_log;
pub use delivery::{batching, circuit, fanout, isolation, latency, throughput};
pub use floor::floor;
pub use large::large;
pub use retries::retries;
pub use validation::validation;

/// Requests in flight per subscription: hookrelay's default, and the
/// concurrency of the bare ceiling.
const CONCURRENCY: usize = 64;
/// About the size of the standard envelope of [`publisher::order_event`].
const DELIVERED_BODY_LEN: usize = 420;
/// A run with no progress for this long has failed.
const STALL: Duration = Duration::from_secs(60);
/// hookrelay resident above this is stopped before it takes the machine
/// down with it (the target is far lower).
const RSS_SAFETY_BYTES: u64 = 4 << 30;

/// A scenario's hookrelay, receiver and connections, and the readings taken
/// when measuring began.
struct Run {
    server: Hookrelay,
    receiver: Receiver,
    js: jetstream::Context,
    redis: redis::aio::MultiplexedConnection,
    redis_before: u64,
    meter: Meter,
    cpu_before: Cpu,
}

impl Run {
    async fn start(opts: &Opts, settings: &[(&str, String)]) -> anyhow::Result<Self> {
        let receiver = Receiver::start().await?;
        let server = Hookrelay::start(opts, settings).await?;
        Self::with(opts, server, receiver).await
    }

    async fn with(opts: &Opts, server: Hookrelay, receiver: Receiver) -> anyhow::Result<Self> {
        let client = async_nats::connect(&opts.nats)
            .await
            .with_context(|| format!("cannot connect to NATS at {}", opts.nats))?;
        let mut redis = redis_connection(&opts.redis).await?;
        let redis_before = redis_used_memory(&mut redis).await?;
        let meter = Meter::new(server.pid(), opts);
        let cpu_before = meter.read()?;
        Ok(Self {
            server,
            receiver,
            js: jetstream::new(client),
            redis,
            redis_before,
            meter,
            cpu_before,
        })
    }

    fn subject(&self, event_type: &str) -> String {
        self.server.config.names().event_subject(TENANT, event_type)
    }

    /// Creates `subscription`; returns its id.
    async fn subscribe(&self, subscription: pb::Subscription) -> anyhow::Result<String> {
        admin::create(&mut admin::client(&self.server).await?, subscription).await
    }

    /// Creates every one of `subscriptions`, 16 at a time.
    async fn subscribe_all(
        &self,
        subscriptions: impl Iterator<Item = pb::Subscription>,
    ) -> anyhow::Result<()> {
        use futures::StreamExt;
        let client = admin::client(&self.server).await?;
        let created: Vec<anyhow::Result<String>> = futures::stream::iter(subscriptions)
            .map(|subscription| {
                let mut client = client.clone();
                async move { admin::create(&mut client, subscription).await }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        created.into_iter().try_for_each(|id| id.map(drop))
    }

    /// Publishes `count` events of `event_type` (made by `body`) with
    /// pipelined acks, showing `what` as progress.
    async fn publish(
        &self,
        event_type: &str,
        count: u64,
        body: impl Fn(u64, u64) -> bytes::Bytes,
        what: &str,
    ) -> anyhow::Result<()> {
        let subject = self.subject(event_type);
        let window = publisher::WINDOW;
        publisher::closed_loop(&self.js, &subject, count, window, body, &bar(what, count)).await
    }

    /// Waits until the receiver has answered `total` requests on `/ok`.
    async fn delivered(&mut self, what: &str, total: u64) -> anyhow::Result<()> {
        self.wait_for(what, total, |s| s.ok.load(Ordering::Relaxed))
            .await
    }

    /// Restarts the CPU and Redis readings (after a setup phase).
    async fn mark(&mut self) -> anyhow::Result<()> {
        self.cpu_before = self.meter.read()?;
        self.redis_before = redis_used_memory(&mut self.redis).await?;
        Ok(())
    }

    /// Waits until `count` of the receiver's stats reaches `total`, showing
    /// progress; fails when nothing moves for a minute or hookrelay dies.
    async fn wait_for(
        &mut self,
        what: &str,
        total: u64,
        count: fn(&Stats) -> u64,
    ) -> anyhow::Result<()> {
        let bar = bar(what, total);
        let mut last = (0, Instant::now());
        loop {
            let now = count(&self.receiver.stats);
            bar.set_position(now.min(total));
            if now >= total {
                bar.finish_and_clear();
                return Ok(());
            }
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > STALL {
                bail!("{what}: stalled at {now} of {total}");
            }
            self.server.check_alive()?;
            let rss = self.server.rss()?;
            if rss > RSS_SAFETY_BYTES {
                bail!("{what}: hookrelay stopped at {} MiB resident", rss >> 20);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the counter `name` on hookrelay's `/metrics` reaches
    /// `at_least`; returns its value.
    async fn wait_metric(&mut self, name: &str, at_least: u64) -> anyhow::Result<u64> {
        let url = format!("http://{}/metrics", self.server.http);
        let bar = bar(name, at_least);
        let mut last = (0, Instant::now());
        loop {
            let text = reqwest::get(&url).await?.text().await?;
            let value = text
                .lines()
                .find_map(|line| {
                    line.strip_prefix(name)?
                        .strip_prefix(' ')?
                        .parse::<f64>()
                        .ok()
                })
                .unwrap_or(0.0) as u64;
            bar.set_position(value.min(at_least));
            if value >= at_least {
                bar.finish_and_clear();
                return Ok(value);
            }
            if value != last.0 {
                last = (value, Instant::now());
            } else if last.1.elapsed() > STALL {
                bail!("{name}: stalled at {value} of {at_least}");
            }
            self.server.check_alive()?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// CPU used by hookrelay, nats-server and Redis since [`Run::mark`],
    /// once the log service has indexed every attempt (that work is part
    /// of what a delivery costs).
    async fn cpu_used(&mut self) -> anyhow::Result<Cpu> {
        let names = self.server.config.names();
        wait_consumed(&self.js, &names.attempts_stream(), &names.consumer("logs")).await?;
        Ok(self.meter.read()?.since(&self.cpu_before))
    }

    /// [`Run::cpu_used`] per delivery, as figures; returns the sum.
    async fn cpu_per_delivery(
        &mut self,
        report: &mut Report,
        deliveries: u64,
    ) -> anyhow::Result<Option<f64>> {
        let used = self.cpu_used().await?;
        Ok(report.cpu_per_delivery("", &used, deliveries))
    }

    /// Redis memory grown since [`Run::mark`] per attempt, once the log
    /// service has indexed every attempt; and the target line for it.
    async fn redis_per_attempt(
        &mut self,
        report: &mut Report,
        attempts: u64,
    ) -> anyhow::Result<()> {
        let names = self.server.config.names();
        wait_consumed(&self.js, &names.attempts_stream(), &names.consumer("logs")).await?;
        let grown = redis_used_memory(&mut self.redis).await? as f64 - self.redis_before as f64;
        let per_attempt = grown / attempts.max(1) as f64;
        report.figure("redis_bytes_per_attempt", per_attempt, "B");
        report.target(
            format!("at most 100 bytes of Redis per retained attempt (was {per_attempt:.0} B)"),
            per_attempt <= 100.0,
        );
        Ok(())
    }

    /// Adds CPU, memory and Redis figures and the RSS target, then stops
    /// hookrelay and deletes what it created.
    async fn finish(mut self, mut report: Report) -> anyhow::Result<Report> {
        let cpu = self.meter.read()?.hookrelay - self.cpu_before.hookrelay;
        let rss = self.server.peak_rss()?;
        let redis_after = redis_used_memory(&mut self.redis).await?;
        report.figure("hookrelay_cpu", cpu, "s");
        report.figure("hookrelay_peak_rss", rss as f64 / 1_048_576.0, "MiB");
        report.figure("redis_used_memory", redis_after as f64 / 1_048_576.0, "MiB");
        report.figure(
            "redis_memory_growth",
            (redis_after as f64 - self.redis_before as f64) / 1_048_576.0,
            "MiB",
        );
        report.target(
            format!(
                "hookrelay peak RSS under 150 MiB (was {:.1} MiB)",
                rss as f64 / 1_048_576.0
            ),
            rss < RSS_TARGET_BYTES,
        );
        self.server.stop().await?;
        Ok(report)
    }
}

fn bar(what: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Events per second over `count` from `start_us` to the last receipt.
fn rate(count: u64, start_us: u64, stats: &Stats) -> f64 {
    let end = stats.last_us.load(Ordering::Relaxed).max(start_us + 1);
    count as f64 * 1e6 / (end - start_us) as f64
}

/// Waits until `consumer` has nothing left to process; fails when it makes
/// no progress for [`STALL`].
async fn wait_consumed(
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
) -> anyhow::Result<()> {
    let stream = js.get_stream(stream).await?;
    let mut last = (u64::MAX, Instant::now());
    loop {
        let mut pull: jetstream::consumer::PullConsumer = stream
            .get_consumer(consumer)
            .await
            .map_err(|e| anyhow::anyhow!("consumer {consumer}: {e}"))?;
        let info = pull.info().await?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            return Ok(());
        }
        if info.num_pending != last.0 {
            last = (info.num_pending, Instant::now());
        } else if last.1.elapsed() > STALL {
            bail!(
                "consumer {consumer} stalled with {} pending",
                info.num_pending
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
