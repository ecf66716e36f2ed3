//! The six scenarios. Each starts its own hookrelay (fresh prefix, fresh
//! process, so peak RSS is the scenario's own), its own receiver, measures,
//! then deletes everything it created.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream;
use futures::StreamExt;
use hookrelay_dispatcher::schedule::{RetryEntry, RetrySchedule};
use hookrelay_proto::v1 as pb;
use indicatif::{ProgressBar, ProgressStyle};

use crate::admin::{self, TENANT};
use crate::publisher;
use crate::receiver::{now_us, Receiver, Stats};
use crate::report::{Report, RSS_TARGET_BYTES};
use crate::server::{redis_connection, redis_used_memory, Hookrelay};
use crate::{ceiling, Opts};

/// Requests in flight per subscription: hookrelay's default, and the
/// concurrency of the bare ceiling.
const CONCURRENCY: usize = 64;
/// About the size of the standard envelope of [`publisher::order_event`].
const DELIVERED_BODY_LEN: usize = 420;
/// A run with no progress for this long has failed.
const STALL: Duration = Duration::from_secs(60);

/// A scenario's hookrelay, receiver and connections, and the readings taken
/// when measuring began.
struct Run {
    server: Hookrelay,
    receiver: Receiver,
    js: jetstream::Context,
    redis: redis::aio::MultiplexedConnection,
    redis_before: u64,
    cpu_before: f64,
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
        let cpu_before = server.cpu_seconds()?;
        Ok(Self {
            server,
            receiver,
            js: jetstream::new(client),
            redis,
            redis_before,
            cpu_before,
        })
    }

    fn subject(&self, event_type: &str) -> String {
        self.server.config.names().event_subject(TENANT, event_type)
    }

    /// Restarts the CPU and Redis readings (after a setup phase).
    async fn mark(&mut self) -> anyhow::Result<()> {
        self.cpu_before = self.server.cpu_seconds()?;
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
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Adds CPU, memory and Redis figures and the RSS target, then stops
    /// hookrelay and deletes what it created.
    async fn finish(mut self, mut report: Report) -> anyhow::Result<Report> {
        let cpu = self.server.cpu_seconds()? - self.cpu_before;
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

pub async fn throughput(opts: &Opts) -> anyhow::Result<Report> {
    let events = opts.count(200_000, 50);
    let mut run = Run::start(opts, &[]).await?;
    let mut report = Report::new(
        "throughput",
        format!("one subscription, {events} events published with pipelined acks"),
    );
    let ceiling = ceiling::measure(
        &run.receiver,
        events.min(100_000),
        CONCURRENCY,
        DELIVERED_BODY_LEN,
    )
    .await?;
    let mut client = admin::client(&run.server).await?;
    admin::create(
        &mut client,
        admin::subscription(&run.receiver.url("/ok"), "order.*"),
    )
    .await?;
    run.mark().await?;
    let start = now_us();
    let subject = run.subject("order.paid");
    publisher::closed_loop(
        &run.js,
        &subject,
        events,
        publisher::order_event,
        &bar("publishing", events),
    )
    .await?;
    let published = events as f64 * 1e6 / (now_us() - start) as f64;
    run.wait_for("delivered", events, |s| s.ok.load(Ordering::Relaxed))
        .await?;
    let delivered = rate(events, start, &run.receiver.stats);
    report.figure("deliveries_per_sec", delivered, "/s");
    report.figure("ceiling_per_sec", ceiling, "/s");
    report.figure("ratio_to_ceiling", 100.0 * delivered / ceiling, "%");
    report.figure("publish_per_sec", published, "/s");
    report.latency(&run.receiver.stats.take_latency());
    report.target(
        format!(
            "deliveries at least 40% of the bare ceiling (was {:.1}%)",
            100.0 * delivered / ceiling
        ),
        delivered >= 0.4 * ceiling,
    );
    run.finish(report).await
}

pub async fn fanout(opts: &Opts) -> anyhow::Result<Report> {
    let subscriptions = opts.count(1000, 3);
    let events = opts.count(200, 5);
    let total = subscriptions * events;
    let mut run = Run::start(opts, &[]).await?;
    let mut report = Report::new(
        "fanout",
        format!(
            "one event type, {subscriptions} subscriptions, {events} events: {total} deliveries"
        ),
    );
    let ceiling = ceiling::measure(
        &run.receiver,
        total.min(100_000),
        CONCURRENCY,
        DELIVERED_BODY_LEN,
    )
    .await?;
    let client = admin::client(&run.server).await?;
    let url = run.receiver.url("/ok");
    let created: Vec<anyhow::Result<String>> = futures::stream::iter(0..subscriptions)
        .map(|_| {
            let mut client = client.clone();
            let subscription = admin::subscription(&url, "order.*");
            async move { admin::create(&mut client, subscription).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    created.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    run.mark().await?;
    let start = now_us();
    publisher::closed_loop(
        &run.js,
        &run.subject("order.paid"),
        events,
        publisher::order_event,
        &bar("publishing", events),
    )
    .await?;
    run.wait_for("delivered", total, |s| s.ok.load(Ordering::Relaxed))
        .await?;
    let delivered = rate(total, start, &run.receiver.stats);
    report.figure("deliveries_per_sec", delivered, "/s");
    report.figure("ceiling_per_sec", ceiling, "/s");
    report.figure("ratio_to_ceiling", 100.0 * delivered / ceiling, "%");
    report.latency(&run.receiver.stats.take_latency());
    run.finish(report).await
}

pub async fn latency(opts: &Opts, rate_per_sec: u64) -> anyhow::Result<Report> {
    let events = opts.count(rate_per_sec * 20, 50);
    let mut run = Run::start(opts, &[]).await?;
    let mut report = Report::new(
        "latency",
        format!(
            "open loop, {rate_per_sec} events/s for {:.1} s ({events} events), one subscription",
            events as f64 / rate_per_sec as f64
        ),
    );
    let mut client = admin::client(&run.server).await?;
    admin::create(
        &mut client,
        admin::subscription(&run.receiver.url("/ok"), "order.*"),
    )
    .await?;
    run.mark().await?;
    let start = now_us();
    publisher::open_loop(
        &run.js,
        &run.subject("order.paid"),
        events,
        rate_per_sec,
        publisher::order_event,
        &bar("publishing", events),
    )
    .await?;
    run.wait_for("delivered", events, |s| s.ok.load(Ordering::Relaxed))
        .await?;
    report.figure("target_rate", rate_per_sec as f64, "/s");
    report.figure(
        "deliveries_per_sec",
        rate(events, start, &run.receiver.stats),
        "/s",
    );
    let latency = run.receiver.stats.take_latency();
    report.latency(&latency);
    let p99 = latency.value_at_quantile(0.99) as f64 / 1000.0;
    report.target(
        format!("p99 publish-to-receipt under 25 ms at {rate_per_sec}/s (was {p99:.1} ms)"),
        p99 < 25.0,
    );
    run.finish(report).await
}

pub async fn isolation(opts: &Opts) -> anyhow::Result<Report> {
    let events = opts.count(50_000, 50);
    let mut run = Run::start(opts, &[]).await?;
    let mut report = Report::new(
        "isolation",
        format!(
            "{events} events to a healthy receiver alone, then {events} more with a second subscription whose receiver never answers"
        ),
    );
    let mut client = admin::client(&run.server).await?;
    admin::create(
        &mut client,
        admin::subscription(&run.receiver.url("/ok"), "order.*"),
    )
    .await?;
    let subject = run.subject("order.paid");
    // Warm (connections, caches) before either phase is timed.
    let warm = events / 10;
    publisher::closed_loop(
        &run.js,
        &subject,
        warm,
        publisher::order_event,
        &bar("warming up", warm),
    )
    .await?;
    run.wait_for("warmed up", warm, |s| s.ok.load(Ordering::Relaxed))
        .await?;
    run.receiver.stats.take_latency();
    run.mark().await?;
    let start = now_us();
    publisher::closed_loop(
        &run.js,
        &subject,
        events,
        publisher::order_event,
        &bar("publishing (solo)", events),
    )
    .await?;
    run.wait_for("delivered (solo)", warm + events, |s| {
        s.ok.load(Ordering::Relaxed)
    })
    .await?;
    let solo = rate(events, start, &run.receiver.stats);
    let solo_latency = run.receiver.stats.take_latency();

    admin::create(
        &mut client,
        admin::subscription(&run.receiver.url("/hang"), "order.*"),
    )
    .await?;
    let start = now_us();
    publisher::closed_loop(
        &run.js,
        &subject,
        events,
        publisher::order_event,
        &bar("publishing (beside)", events),
    )
    .await?;
    run.wait_for("delivered (beside)", warm + 2 * events, |s| {
        s.ok.load(Ordering::Relaxed)
    })
    .await?;
    let beside = rate(events, start, &run.receiver.stats);
    report.figure("healthy_solo_per_sec", solo, "/s");
    report.figure("healthy_beside_hung_per_sec", beside, "/s");
    report.figure("kept_of_solo_rate", 100.0 * beside / solo, "%");
    report.figure(
        "requests_to_hung_receiver",
        run.receiver.stats.hung.load(Ordering::Relaxed) as f64,
        "",
    );
    report.figure(
        "healthy_solo_latency_p99",
        solo_latency.value_at_quantile(0.99) as f64 / 1000.0,
        "ms",
    );
    // Latency of the healthy receiver beside the hung one.
    report.latency(&run.receiver.stats.take_latency());
    report.target(
        format!(
            "the healthy receiver keeps at least 90% of its solo rate (kept {:.1}%)",
            100.0 * beside / solo
        ),
        beside >= 0.9 * solo,
    );
    run.finish(report).await
}

pub async fn retries(opts: &Opts) -> anyhow::Result<Report> {
    let pending = opts.count(1_000_000, 100);
    let mut report = Report::new(
        "retries",
        format!("{pending} pending retries of {pending} distinct events, then all due at once"),
    );
    // Phase 1: the events exist in EVENTS, with no subscription yet.
    let receiver = Receiver::start().await?;
    let first = Hookrelay::start(opts, &[]).await?;
    let names = first.config.names();
    let client = async_nats::connect(&opts.nats).await?;
    let js = jetstream::new(client);
    let subject = names.event_subject(TENANT, "order.paid");
    publisher::closed_loop(
        &js,
        &subject,
        pending,
        publisher::order_event,
        &bar("publishing events", pending),
    )
    .await?;
    let mut events = js.get_stream(names.events_stream()).await?;
    let last_seq = events.info().await?.state.last_sequence;
    // No event matches it: the retries are all it gets.
    let mut admin_client = admin::client(&first).await?;
    let subscription_id = admin::create(
        &mut admin_client,
        admin::subscription(&receiver.url("/ok"), "retried.only"),
    )
    .await?;
    wait_consumed(&js, &names.events_stream(), &names.consumer("ingestor")).await?;
    let prefix = first.config.prefix.clone();
    first.kill().await;

    // Phase 2: the schedule is filled with hookrelay stopped.
    let mut redis = redis_connection(&opts.redis).await?;
    let before = redis_used_memory(&mut redis).await?;
    let schedule = RetrySchedule::new(
        &names,
        hookrelay_core::redis::connect(&Hookrelay::config_for(opts, &prefix)).await?,
    );
    let now = chrono::Utc::now();
    let filling = bar("scheduling retries", pending);
    let first_seq = last_seq + 1 - pending;
    let results: Vec<redis::RedisResult<()>> = futures::stream::iter(0..pending)
        .map(|i| {
            let schedule = schedule.clone();
            let entry = RetryEntry {
                seq: first_seq + i,
                subscription_id: subscription_id.clone(),
                attempt: 2,
                first_attempt_ms: now.timestamp_millis(),
                source: Default::default(),
            };
            let filling = filling.clone();
            async move {
                let added = schedule.add(&entry, now).await;
                filling.inc(1);
                added
            }
        })
        .buffer_unordered(512)
        .collect()
        .await;
    filling.finish_and_clear();
    results
        .into_iter()
        .collect::<redis::RedisResult<Vec<_>>>()?;
    let after = redis_used_memory(&mut redis).await?;
    let per_entry = (after as f64 - before as f64) / pending as f64;
    let (waiting, _) = schedule.stats().await?;
    anyhow::ensure!(
        waiting == pending,
        "{waiting} of {pending} retries scheduled"
    );

    // Phase 3: hookrelay starts with all of them due.
    let spawned = now_us();
    let server = Hookrelay::start_on(opts, Some(prefix), &[]).await?;
    let started = Instant::now();
    let mut run = Run::with(opts, server, receiver).await?;
    let draining = bar("retries drained", pending);
    let mut last_change = Instant::now();
    let mut last_left = pending;
    loop {
        let (left, _) = schedule.stats().await?;
        draining.set_position(pending - left);
        if left == 0 {
            break;
        }
        if left != last_left {
            (last_left, last_change) = (left, Instant::now());
        } else if last_change.elapsed() > STALL {
            bail!("retries: stalled with {left} of {pending} still scheduled");
        }
        run.server.check_alive()?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    draining.finish_and_clear();
    // From ready (every entry due) until the schedule is empty.
    let drain_secs = started.elapsed().as_secs_f64();
    let drained = pending as f64 / drain_secs;
    // And every retry reaches the receiver: none was dropped on the way.
    run.wait_for("retries delivered", pending, |s| {
        s.ok.load(Ordering::Relaxed)
    })
    .await?;
    report.figure("redis_bytes_per_retry", per_entry, "B");
    report.figure("drained_per_sec", drained, "/s");
    report.figure("drain_time", drain_secs, "s");
    report.figure(
        "retries_delivered_per_sec",
        rate(pending, spawned, &run.receiver.stats),
        "/s",
    );
    report.target(
        format!("at most 150 bytes of Redis per pending retry (was {per_entry:.0})"),
        per_entry <= 150.0,
    );
    report.target(
        format!("due retries drain at 50k/s or more (was {drained:.0}/s)"),
        drained >= 50_000.0,
    );
    run.finish(report).await
}

pub async fn batching(opts: &Opts) -> anyhow::Result<Report> {
    let changes = opts.count(100_000, 50);
    let mut run = Run::start(opts, &[]).await?;
    let mut report = Report::new(
        "batching",
        format!(
            "seed 001: {changes} changes to distinct trainings, debounced 1 s, up to 1000 per batch"
        ),
    );
    let mut subscription = admin::subscription(&run.receiver.url("/batch"), "training.*");
    subscription.request = Some(pb::RequestSpec {
        envelope: pb::Envelope::ChangesBatch as i32,
        ..Default::default()
    });
    subscription.batch = Some(pb::BatchSpec {
        window: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        max_size: 1000,
        url_template: "https://api.example.com/{{ object }}s/{{ entity_id }}".into(),
        ..Default::default()
    });
    let mut client = admin::client(&run.server).await?;
    admin::create(&mut client, subscription).await?;
    run.mark().await?;
    let start = now_us();
    publisher::closed_loop(
        &run.js,
        &run.subject("training.update"),
        changes,
        publisher::change_event,
        &bar("publishing changes", changes),
    )
    .await?;
    run.wait_for("changes delivered", changes, |s| {
        s.changes.load(Ordering::Relaxed)
    })
    .await?;
    let stats = &run.receiver.stats;
    let batches = stats.batches.load(Ordering::Relaxed);
    report.figure("changes_per_sec", rate(changes, start, stats), "/s");
    report.figure("batches", batches as f64, "");
    report.figure(
        "changes_per_batch",
        changes as f64 / batches.max(1) as f64,
        "",
    );
    run.finish(report).await
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
