//! What schema validation at ingest costs: the same ~1 KiB events with a
//! 20-property schema, to the same subscription, through two catalogued
//! types that differ only in their validation mode (`off` and `reject`),
//! published in alternating phases.

use std::time::Instant;

use hookrelay_proto::v1 as pb;

use super::{rate, Run};
use crate::admin::{self, TENANT};
use crate::publisher::{course_stat_event, course_stat_schema};
use crate::receiver::now_us;
use crate::report::Report;
use crate::Opts;

/// Phases, `off` first and last so both modes see the same drift of the
/// machine (one phase's rate varies by about 10% from the next identical
/// one on a shared two-core machine).
const PHASES: usize = 7;
/// The unchecked type and the checked one.
const OFF: &str = "course_stat.unchecked";
const REJECT: &str = "course_stat.checked";

pub async fn validation(opts: &Opts) -> anyhow::Result<Report> {
    let events = opts.count(20_000, 50);
    let mut run = Run::start(opts, &[]).await?;
    let schema = course_stat_schema();
    let sample = course_stat_event(0, 0);
    let mut report = Report::new(
        "validation",
        format!(
            "{PHASES} phases of {events} events of {} bytes to one subscription, in turn of a type with validation off and one with reject and a 20-property schema",
            sample.len()
        ),
    );
    let mut catalog = admin::event_types_client(&run.server).await?;
    for (name, mode) in [
        (OFF, pb::SchemaValidation::Off),
        (REJECT, pb::SchemaValidation::Reject),
    ] {
        catalog
            .create_event_type(pb::CreateEventTypeRequest {
                tenant: TENANT.into(),
                name: name.into(),
                validation: mode as i32,
                schema: schema.clone(),
                ..Default::default()
            })
            .await
            .map_err(|status| anyhow::anyhow!("CreateEventType {name}: {status}"))?;
    }
    report.figure("check_us_per_event", check_micros(&schema, &sample)?, "µs");
    run.subscribe(admin::subscription(
        &run.receiver.url("/ok"),
        "course_stat.*",
    ))
    .await?;
    // Warm both types (connections, caches, the streams' first blocks).
    let mut delivered = 0;
    for event_type in [OFF, REJECT] {
        run.publish(event_type, events, course_stat_event, "warming up")
            .await?;
        delivered += events;
        run.delivered("warmed up", delivered).await?;
    }
    run.mark().await?;
    let (mut off, mut reject) = (Vec::new(), Vec::new());
    for phase in 0..PHASES {
        let (event_type, mode) = match phase % 2 {
            0 => (OFF, "off"),
            _ => (REJECT, "reject"),
        };
        let what = format!("phase {} ({mode})", phase + 1);
        let start = now_us();
        run.publish(event_type, events, course_stat_event, &what)
            .await?;
        delivered += events;
        run.delivered(&what, delivered).await?;
        let rate = rate(events, start, &run.receiver.stats);
        report.figure(format!("phase_{}_{mode}_per_sec", phase + 1), rate, "/s");
        match phase % 2 {
            0 => off.push(rate),
            _ => reject.push(rate),
        }
    }
    let mean = |rates: &[f64]| rates.iter().sum::<f64>() / rates.len().max(1) as f64;
    let (off, reject) = (mean(&off), mean(&reject));
    report.figure("off_per_sec", off, "/s");
    report.figure("reject_per_sec", reject, "/s");
    report.figure("kept_with_validation", 100.0 * reject / off, "%");
    report.latency(&run.receiver.stats.take_latency());
    report.target(
        format!(
            "validating a 1 KiB event against a 20-property schema keeps at least 90% of the throughput (kept {:.1}%)",
            100.0 * reject / off
        ),
        reject >= 0.9 * off,
    );
    run.cpu_per_delivery(&mut report, PHASES as u64 * events)
        .await?;
    run.finish(report).await
}

/// Microseconds one check of `event`'s `data` against `schema` takes in
/// this process, the way ingest runs it (parse, then validate).
fn check_micros(schema: &str, event: &[u8]) -> anyhow::Result<f64> {
    #[derive(serde::Deserialize)]
    struct Event<'a> {
        #[serde(borrow)]
        data: &'a serde_json::value::RawValue,
    }
    let schema = hookrelay_catalog::schema::compile(schema)?;
    let data = serde_json::from_slice::<Event>(event)?.data;
    schema
        .check(data)
        .map_err(|violation| anyhow::anyhow!("the sample event is invalid: {violation}"))?;
    let rounds = 20_000u32;
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(schema.check(std::hint::black_box(data)).is_ok());
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds))
}
