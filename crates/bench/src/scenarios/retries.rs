//! A million pending retries: what they cost in Redis, and how fast they
//! drain once due.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;
use async_nats::jetstream;
use futures::StreamExt;
use hookrelay_dispatcher::schedule::{RetryEntry, RetrySchedule};

use super::{bar, rate, wait_consumed, Run, STALL};
use crate::admin::{self, TENANT};
use crate::publisher;
use crate::receiver::{now_us, Receiver};
use crate::report::Report;
use crate::server::{redis_connection, redis_used_memory, Hookrelay};
use crate::Opts;

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
        publisher::WINDOW,
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
                parked: 0,
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
        format!("due retries drain at 25k/s or more (was {drained:.0}/s)"),
        drained >= 25_000.0,
    );
    run.finish(report).await
}
