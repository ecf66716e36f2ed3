//! Scenarios of events delivered as they come (or debounced): one
//! subscription, many, at a fixed rate, beside a hung receiver, in batches.

use std::sync::atomic::Ordering;

use hookrelay_proto::v1 as pb;

use super::{bar, rate, Run, CONCURRENCY, DELIVERED_BODY_LEN};
use crate::admin;
use crate::procs::Cpu;
use crate::publisher;
use crate::receiver::now_us;
use crate::report::Report;
use crate::{ceiling, Opts};

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
    run.subscribe(admin::subscription(&run.receiver.url("/ok"), "order.*"))
        .await?;
    run.mark().await?;
    let start = now_us();
    run.publish("order.paid", events, publisher::order_event, "publishing")
        .await?;
    let published = events as f64 * 1e6 / (now_us() - start) as f64;
    run.delivered("delivered", events).await?;
    let delivered = rate(events, start, &run.receiver.stats);
    report.against_ceiling(delivered, ceiling);
    report.figure("publish_per_sec", published, "/s");
    report.latency(&run.receiver.stats.take_latency());
    report.target(
        format!(
            "deliveries at least 40% of the bare ceiling (was {:.1}%)",
            100.0 * delivered / ceiling
        ),
        delivered >= 0.4 * ceiling,
    );
    run.redis_per_attempt(&mut report, events).await?;
    let cpu = run.cpu_per_delivery(&mut report, events).await?;
    report.target(
        match cpu {
            Some(ms) => format!(
                "CPU per delivery of hookrelay + nats-server + Redis ≤ 0.07 ms (was {ms:.3} ms)"
            ),
            None => "CPU per delivery of hookrelay + nats-server + Redis ≤ 0.07 ms (not measured: see notes)".into(),
        },
        cpu.is_some_and(|ms| ms <= 0.07),
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
    let url = run.receiver.url("/ok");
    run.subscribe_all((0..subscriptions).map(|_| admin::subscription(&url, "order.*")))
        .await?;
    run.mark().await?;
    let start = now_us();
    run.publish("order.paid", events, publisher::order_event, "publishing")
        .await?;
    run.delivered("delivered", total).await?;
    report.against_ceiling(rate(total, start, &run.receiver.stats), ceiling);
    report.latency(&run.receiver.stats.take_latency());
    run.cpu_per_delivery(&mut report, total).await?;
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
    run.subscribe(admin::subscription(&run.receiver.url("/ok"), "order.*"))
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
    run.delivered("delivered", events).await?;
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
    run.cpu_per_delivery(&mut report, events).await?;
    run.finish(report).await
}

/// Phases of the isolation scenario: solo and beside in turn, solo first
/// and last, so both kinds see the same drift of the machine.
const ISOLATION_PHASES: usize = 7;

/// The healthy subscription takes every event; the hung one only the
/// `shared.*` ones. Solo phases publish events only the healthy one takes,
/// beside phases events both take, in turn: one phase's rate on a shared
/// two-core machine varies by about 10% from the next identical one, so a
/// single solo phase against a single beside phase cannot resolve 95%.
pub async fn isolation(opts: &Opts) -> anyhow::Result<Report> {
    let events = opts.count(20_000, 50);
    let mut run = Run::start(opts, &[]).await?;
    let mut report = Report::new(
        "isolation",
        format!(
            "{ISOLATION_PHASES} phases of {events} events to a healthy receiver, in turn alone and beside a second subscription (created before the first such phase) whose receiver never answers"
        ),
    );
    run.subscribe(admin::subscription(&run.receiver.url("/ok"), "*"))
        .await?;
    // Warm (connections, caches, the streams' first blocks) before any
    // phase is timed: a shorter warm-up left the first phase 20% faster
    // than every later one.
    let warm = events;
    run.publish("solo.paid", warm, publisher::order_event, "warming up")
        .await?;
    run.delivered("warmed up", warm).await?;
    run.receiver.stats.take_latency();
    run.mark().await?;
    let mut solo = Vec::new();
    let mut beside = Vec::new();
    let mut solo_latency = None;
    let mut delivered = warm;
    for phase in 0..ISOLATION_PHASES {
        let alone = phase % 2 == 0;
        if phase == 1 {
            solo_latency = Some(run.receiver.stats.take_latency());
            run.subscribe(admin::subscription(&run.receiver.url("/hang"), "shared.*"))
                .await?;
        }
        let (event_type, what) = match alone {
            true => ("solo.paid", format!("phase {} (solo)", phase + 1)),
            false => ("shared.paid", format!("phase {} (beside)", phase + 1)),
        };
        let start = now_us();
        run.publish(event_type, events, publisher::order_event, &what)
            .await?;
        delivered += events;
        run.delivered(&what, delivered).await?;
        let rate = rate(events, start, &run.receiver.stats);
        report.figure(
            format!(
                "phase_{}_{}_per_sec",
                phase + 1,
                if alone { "solo" } else { "beside" }
            ),
            rate,
            "/s",
        );
        match alone {
            true => solo.push(rate),
            false => beside.push(rate),
        }
    }
    let mean = |rates: &[f64]| rates.iter().sum::<f64>() / rates.len().max(1) as f64;
    let (solo, beside) = (mean(&solo), mean(&beside));
    report.figure("healthy_solo_per_sec", solo, "/s");
    report.figure("healthy_beside_hung_per_sec", beside, "/s");
    report.figure("kept_of_solo_rate", 100.0 * beside / solo, "%");
    report.figure(
        "requests_to_hung_receiver",
        run.receiver.stats.hung.load(Ordering::Relaxed) as f64,
        "",
    );
    if let Some(latency) = solo_latency {
        report.figure(
            "healthy_solo_latency_p99",
            latency.value_at_quantile(0.99) as f64 / 1000.0,
            "ms",
        );
    }
    // Latency of the healthy receiver from the first beside phase on.
    report.latency(&run.receiver.stats.take_latency());
    report.target(
        format!(
            "the healthy receiver keeps at least 95% of its solo rate (kept {:.1}%)",
            100.0 * beside / solo
        ),
        beside >= 0.95 * solo,
    );
    // Every phase: the healthy receiver's deliveries (the hung one gets none).
    run.cpu_per_delivery(&mut report, ISOLATION_PHASES as u64 * events)
        .await?;
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
    run.subscribe(subscription).await?;
    run.mark().await?;
    let start = now_us();
    run.publish(
        "training.update",
        changes,
        publisher::change_event,
        "publishing changes",
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
    // A delivery is a batch request; per change as well.
    if let Some(ms) = run.cpu_per_delivery(&mut report, batches).await? {
        report.figure(
            "cpu_ms_per_change",
            ms * batches as f64 / changes as f64,
            "ms",
        );
    }
    run.finish(report).await
}

/// What a subscription whose circuit is open adds to each event: the CPU
/// per event of phases with a healthy subscription alone and of phases
/// whose events also match a second one whose circuit is open, in turn
/// (one phase's CPU per delivery varies by 10-30% from the next identical
/// one on a shared machine, so a single pair cannot resolve 10%).
pub async fn circuit(opts: &Opts) -> anyhow::Result<Report> {
    let events = opts.count(20_000, 50);
    // No probe during the measured phases: only what holding costs.
    let settings = [
        (
            "HOOKRELAY_DISPATCHER__CIRCUIT__PROBE_AFTER",
            "1h".to_owned(),
        ),
        ("HOOKRELAY_DISPATCHER__CIRCUIT__PROBE_MAX", "1h".to_owned()),
    ];
    let mut run = Run::start(opts, &settings).await?;
    let mut report = Report::new(
        "circuit",
        format!(
            "{ISOLATION_PHASES} phases of {events} events to a healthy subscription, in turn alone and also matching a subscription whose circuit is open (its receiver answered 503)"
        ),
    );
    run.subscribe(admin::subscription(&run.receiver.url("/ok"), "*"))
        .await?;
    let mut failing = admin::subscription(&run.receiver.url("/fail"), "shared.*");
    failing.retry_policy = Some(pb::RetryPolicy {
        policy: Some(pb::retry_policy::Policy::None(pb::NoRetry {})),
    });
    run.subscribe(failing).await?;
    // Enough failures to open it (open_after is 10 by default), and a
    // warm-up of a phase's size.
    let opening = 20;
    run.publish(
        "shared.paid",
        opening,
        publisher::order_event,
        "opening the circuit",
    )
    .await?;
    run.wait_metric(r#"hookrelay_circuits{state="open"}"#, 1)
        .await?;
    let mut delivered = opening;
    run.publish("solo.paid", events, publisher::order_event, "warming up")
        .await?;
    delivered += events;
    run.delivered("warmed up", delivered).await?;
    let held_before = run
        .wait_metric("hookrelay_deliveries_held_total", 0)
        .await?;
    let failed_before = run.receiver.stats.failed.load(Ordering::Relaxed);
    let mut alone: Option<Cpu> = None;
    let mut beside: Option<Cpu> = None;
    for phase in 0..ISOLATION_PHASES {
        let solo = phase % 2 == 0;
        let (event_type, what) = match solo {
            true => ("solo.paid", format!("phase {} (alone)", phase + 1)),
            false => ("shared.paid", format!("phase {} (beside open)", phase + 1)),
        };
        run.mark().await?;
        run.publish(event_type, events, publisher::order_event, &what)
            .await?;
        delivered += events;
        run.delivered(&what, delivered).await?;
        let used = run.cpu_used().await?;
        let sum = if solo { &mut alone } else { &mut beside };
        *sum = Some(sum.as_ref().map_or_else(|| used.clone(), |s| s.plus(&used)));
    }
    let phases_alone = ISOLATION_PHASES.div_ceil(2) as u64;
    let phases_beside = (ISOLATION_PHASES / 2) as u64;
    let beside_phases = phases_beside * events;
    run.wait_metric(
        "hookrelay_deliveries_held_total",
        held_before + beside_phases,
    )
    .await?;
    let (alone, beside) = (alone.expect("phases ran"), beside.expect("phases ran"));
    let per_delivery = report.cpu_per_delivery("alone_", &alone, phases_alone * events);
    let per_beside = report.cpu_per_delivery("beside_open_", &beside, beside_phases);
    report.figure(
        "requests_while_open",
        (run.receiver.stats.failed.load(Ordering::Relaxed) - failed_before) as f64,
        "",
    );
    if let (Some(delivery), Some(beside)) = (per_delivery, per_beside) {
        let added = beside - delivery;
        report.figure("open_circuit_adds_cpu_ms_per_event", added, "ms");
        report.figure(
            "open_circuit_share_of_delivery",
            100.0 * added / delivery,
            "%",
        );
        report.target(
            format!(
                "a subscription whose circuit is open adds at most 10% of a delivery's CPU per event ({:.1}%)",
                100.0 * added / delivery
            ),
            added <= 0.1 * delivery,
        );
    }
    run.finish(report).await
}
