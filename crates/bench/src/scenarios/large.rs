//! Large events fanned out: 64 KiB, 512 KiB and the largest NATS carries,
//! each to 100 subscriptions of one receiver, checked to arrive whole and
//! once. Each size runs on its own hookrelay, so its peak RSS is its own.

use std::sync::atomic::Ordering;

use anyhow::Context;
use bytes::Bytes;

use super::{bar, Run};
use crate::admin;
use crate::procs::Cpu;
use crate::publisher;
use crate::receiver::now_us;
use crate::report::{Report, RSS_TARGET_BYTES};
use crate::server::redis_used_memory;
use crate::Opts;

/// Subscriptions every event goes to (all to one receiver).
const SUBSCRIPTIONS: u64 = 100;
const KIB: usize = 1024;
/// Room left under NATS's `max_payload` for headers and the event wrapper.
const HEADROOM: usize = KIB;
/// Bytes of events published and not yet acknowledged, at most.
const BYTES_IN_FLIGHT: usize = 32 << 20;
/// Events of each size at `--scale 1`: about the same bytes delivered for
/// each.
const EVENTS_64K: u64 = 600;
const EVENTS_512K: u64 = 80;
const EVENTS_LARGEST: u64 = 40;
const EVENT_TYPE: &str = "blob.stored";

/// What one size's phase used, for the scenario's totals.
struct Phase {
    cpu: Cpu,
    deliveries: u64,
    cpu_seconds: f64,
    peak_rss: u64,
    redis_after: u64,
}

pub async fn large(opts: &Opts) -> anyhow::Result<Report> {
    let max_payload = async_nats::connect(&opts.nats)
        .await
        .with_context(|| format!("cannot connect to NATS at {}", opts.nats))?
        .server_info()
        .max_payload;
    let largest = max_payload.saturating_sub(HEADROOM);
    let mut sizes = vec![
        (64 * KIB, opts.count(EVENTS_64K, 1)),
        (512 * KIB, opts.count(EVENTS_512K, 1)),
    ];
    sizes.retain(|(size, _)| *size < largest);
    sizes.push((largest, opts.count(EVENTS_LARGEST, 1)));
    let listed: Vec<String> = sizes
        .iter()
        .map(|(size, events)| format!("{events} of {size} B"))
        .collect();
    let mut report = Report::new(
        "large",
        format!(
            "events ({}; NATS max_payload {max_payload} B) each to {SUBSCRIPTIONS} subscriptions of one receiver",
            listed.join(", ")
        ),
    );
    let mut phases = Vec::new();
    for (size, events) in sizes {
        phases.push(one_size(opts, &mut report, size, events).await?);
    }
    let cpu = phases
        .iter()
        .skip(1)
        .fold(phases[0].cpu.clone(), |sum, p| sum.plus(&p.cpu));
    let deliveries = phases.iter().map(|p| p.deliveries).sum();
    let peak = phases.iter().map(|p| p.peak_rss).max().unwrap_or(0);
    let redis_after = phases.last().map_or(0, |p| p.redis_after);
    report.cpu_per_delivery("", &cpu, deliveries);
    report.figure(
        "hookrelay_cpu",
        phases.iter().map(|p| p.cpu_seconds).sum(),
        "s",
    );
    report.figure("hookrelay_peak_rss", peak as f64 / 1_048_576.0, "MiB");
    report.figure("redis_used_memory", redis_after as f64 / 1_048_576.0, "MiB");
    report.target(
        format!(
            "hookrelay peak RSS under 150 MiB at every size (was at most {:.1} MiB)",
            peak as f64 / 1_048_576.0
        ),
        peak < RSS_TARGET_BYTES,
    );
    Ok(report)
}

/// Publishes `events` of `size` bytes to a fresh hookrelay with
/// [`SUBSCRIPTIONS`] subscriptions, waits for every delivery, and adds the
/// figures of that size (named after it, e.g. `64k_events_per_sec`).
async fn one_size(
    opts: &Opts,
    report: &mut Report,
    size: usize,
    events: u64,
) -> anyhow::Result<Phase> {
    let label = format!("{}k", size / KIB);
    let mut run = Run::start(opts, &[]).await?;
    let pad = size - prefix(0, 0).len() - SUFFIX.len();
    run.subscribe_all((0..SUBSCRIPTIONS).map(|sub| {
        let url = run.receiver.url(&format!("/large?pad={pad}&sub={sub}"));
        admin::subscription(&url, "blob.*")
    }))
    .await?;
    run.mark().await?;

    let start = now_us();
    let subject = run.subject(EVENT_TYPE);
    publisher::closed_loop(
        &run.js,
        &subject,
        events,
        BYTES_IN_FLIGHT / size,
        |n, sent_us| event(size, n, sent_us),
        &bar(&format!("publishing {label}"), events),
    )
    .await?;
    let total = events * SUBSCRIPTIONS;
    run.wait_for(&format!("{label} delivered"), total, |s| {
        s.distinct.load(Ordering::Relaxed)
    })
    .await?;
    let stats = run.receiver.stats.clone();
    let bytes = stats.body_bytes.load(Ordering::Relaxed);
    let end = stats.last_us.load(Ordering::Relaxed).max(start + 1);
    let seconds = (end - start) as f64 / 1e6;
    report.figure(
        format!("{label}_events_per_sec"),
        events as f64 / seconds,
        "/s",
    );
    report.figure(
        format!("{label}_deliveries_per_sec"),
        total as f64 / seconds,
        "/s",
    );
    report.figure(
        format!("{label}_mb_per_sec"),
        bytes as f64 / seconds / 1e6,
        "MB/s",
    );
    let latency = stats.take_latency();
    report.figure(
        format!("{label}_latency_p99"),
        latency.value_at_quantile(0.99) as f64 / 1000.0,
        "ms",
    );

    // Counted once the log service has caught up, so late duplicates show.
    let cpu = run.cpu_used().await?;
    report.cpu_per_delivery(&format!("{label}_"), &cpu, total);
    let attempts = run
        .js
        .get_stream(run.server.config.names().attempts_stream())
        .await?
        .info()
        .await?
        .state
        .clone();
    report.figure(
        format!("{label}_attempt_record_bytes"),
        attempts.bytes as f64 / attempts.messages.max(1) as f64,
        "B",
    );
    let received = stats.large.load(Ordering::Relaxed);
    let damaged = stats.damaged.load(Ordering::Relaxed);
    report.figure(
        format!("{label}_duplicates"),
        received.saturating_sub(total) as f64,
        "",
    );
    report.figure(format!("{label}_damaged"), damaged as f64, "");
    report.target(
        format!(
            "every {label} delivery arrived once, body intact ({received} requests for {total} deliveries, {damaged} damaged)"
        ),
        received == total && damaged == 0,
    );
    let peak_rss = run.server.peak_rss()?;
    report.figure(
        format!("{label}_peak_rss"),
        peak_rss as f64 / 1_048_576.0,
        "MiB",
    );
    let redis_after = redis_used_memory(&mut run.redis).await?;
    let cpu_seconds = cpu.hookrelay;
    run.server.stop().await?;
    Ok(Phase {
        cpu,
        deliveries: total,
        cpu_seconds,
        peak_rss,
        redis_after,
    })
}

/// What precedes the padding of event `n`: the same length for every
/// event (numbers are padded with spaces, which JSON allows), so the
/// padding of a size is the same length in every event.
fn prefix(n: u64, sent_us: u64) -> String {
    format!(r#"{{"data":{{"sent_us":{sent_us:<20},"n":{n:<20},"pad":""#)
}

const SUFFIX: &str = r#""}}"#;

/// Event `n` of exactly `size` bytes, padded with `x`.
fn event(size: usize, n: u64, sent_us: u64) -> Bytes {
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(prefix(n, sent_us).as_bytes());
    body.resize(size - SUFFIX.len(), b'x');
    body.extend_from_slice(SUFFIX.as_bytes());
    Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_have_their_size_and_are_json() {
        for size in [64 * KIB, 1_047_552] {
            let body = event(size, 12, 3_456_789);
            assert_eq!(body.len(), size);
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(value["data"]["n"], 12);
            assert_eq!(value["data"]["sent_us"], 3_456_789);
            let pad = value["data"]["pad"].as_str().unwrap().len();
            assert_eq!(pad, size - prefix(0, 0).len() - SUFFIX.len());
        }
    }
}
