//! The floor: what the durable work every delivery must do costs on this
//! machine by itself, with no hookrelay at all. One JetStream hop (publish
//! with pipelined acks, pull consume, ack) of an event-sized message, the
//! same hop for attempt-record-sized messages stored one per message and
//! many per message, and the bare HTTP request of the ceiling. Added up
//! they bound from below what hookrelay can reach; a target under the floor
//! cannot be met by any code on top of the same servers.

use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use futures::StreamExt;
use indicatif::ProgressBar;
use rand::distr::{Alphanumeric, SampleString};

use super::{CONCURRENCY, DELIVERED_BODY_LEN};
use crate::ceiling;
use crate::procs::{Cpu, Meter};
use crate::publisher::{self, WINDOW};
use crate::receiver::Receiver;
use crate::report::Report;
use crate::Opts;

/// An event of the delivery scenarios, as stored (about 1 KiB).
const EVENT_BYTES: usize = 1024;
/// An attempt record of such an event: request headers and body excerpt,
/// response, identifiers.
const RECORD_BYTES: usize = 2048;
/// Records per message when they are written batched.
const RECORDS_PER_MESSAGE: usize = 50;
/// Logical cores the servers and hookrelay share (the bench host's).
fn cores() -> f64 {
    std::thread::available_parallelism().map_or(2.0, |n| n.get() as f64)
}

/// CPU milliseconds per item of one JetStream hop: the publishing
/// client's, the consuming client's (both this process) and nats-server's.
struct Hop {
    publish_ms: f64,
    consume_ms: f64,
    nats_ms: f64,
}

impl Hop {
    fn client_ms(&self) -> f64 {
        self.publish_ms + self.consume_ms
    }
}

pub async fn floor(opts: &Opts) -> anyhow::Result<Report> {
    // Never so few that CPU time, read in 10 ms ticks, rounds to nothing.
    let items = opts.count(100_000, 5_000);
    let mut report = Report::new(
        "floor",
        format!(
            "no hookrelay: {items} JetStream hops of {EVENT_BYTES} B, of {RECORD_BYTES} B, \
             of {RECORD_BYTES} B × {RECORDS_PER_MESSAGE} per message, and the bare HTTP ceiling"
        ),
    );
    let meter = Meter::new(std::process::id() as i32, opts);
    let client = async_nats::connect(&opts.nats)
        .await
        .context("connecting to NATS")?;
    let js = jetstream::new(client);
    let name = format!(
        "BENCHFLOOR{}",
        Alphanumeric
            .sample_string(&mut rand::rng(), 8)
            .to_ascii_uppercase()
    );
    let hops = async {
        let event = hop(&js, &meter, &name, items, EVENT_BYTES, 1).await?;
        let record = hop(&js, &meter, &name, items, RECORD_BYTES, 1).await?;
        let batched = hop(&js, &meter, &name, items, RECORD_BYTES, RECORDS_PER_MESSAGE).await?;
        anyhow::Ok((event, record, batched))
    }
    .await;
    let _ = js.delete_stream(&name).await;
    let (event, record, batched) = hops?;

    let receiver = Receiver::start().await?;
    let before = meter.read()?;
    let ceiling_per_sec =
        ceiling::measure(&receiver, items, CONCURRENCY, DELIVERED_BODY_LEN).await?;
    // Client and receiver both run in this process: about half is the
    // client's, the half hookrelay would spend on a request.
    let ceiling_ms = meter.read()?.since(&before).hookrelay * 1000.0 / items as f64;

    for (label, hop) in [
        ("event", &event),
        ("record", &record),
        ("record_batched", &batched),
    ] {
        report.figure(format!("{label}_hop_nats_cpu_ms"), hop.nats_ms, "ms");
        report.figure(format!("{label}_hop_client_cpu_ms"), hop.client_ms(), "ms");
    }
    report.figure("ceiling_per_sec", ceiling_per_sec, "/s");
    report.figure("ceiling_cpu_ms_per_request", ceiling_ms, "ms");
    // What one delivery cannot do without: the event read from EVENTS and
    // acked, its record stored (batched, the cheaper way) and read by the
    // log service, and the client side of one HTTP request. No matching,
    // rendering, signing, scheduling or indexing counted.
    let floor_ms =
        event.nats_ms + event.consume_ms + batched.nats_ms + batched.client_ms() + ceiling_ms / 2.0;
    report.figure("floor_cpu_ms_per_delivery", floor_ms, "ms");
    // The whole machine per delivery adds the publisher's half of the event
    // hop and the receiver's half of the request.
    let machine_ms = floor_ms + event.publish_ms + ceiling_ms / 2.0;
    let bound = cores() * 1000.0 / machine_ms.max(f64::EPSILON);
    report.figure("floor_deliveries_per_sec", bound, "/s");
    report.figure(
        "floor_ratio_to_ceiling",
        100.0 * bound / ceiling_per_sec,
        "%",
    );
    report.target(
        format!("the floor is under 0.07 ms of CPU per delivery (is {floor_ms:.3} ms)"),
        floor_ms <= 0.07,
    );
    report.target(
        format!(
            "the floor allows 40% of the ceiling (allows {:.1}%)",
            100.0 * bound / ceiling_per_sec
        ),
        bound >= 0.4 * ceiling_per_sec,
    );
    Ok(report)
}

/// Publishes `items` payloads of `bytes` each, `per_message` to a message,
/// with pipelined acks, then consumes and acks them one message at a time;
/// CPU per item.
async fn hop(
    js: &jetstream::Context,
    meter: &Meter,
    name: &str,
    items: u64,
    bytes: usize,
    per_message: usize,
) -> anyhow::Result<Hop> {
    let _ = js.delete_stream(name).await;
    let subjects = format!("{}.>", name.to_ascii_lowercase());
    let created = js
        .create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subjects.clone()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .context("creating the floor stream")?;
    let messages = (items as usize).div_ceil(per_message);
    let payload = Bytes::from(vec![b'x'; bytes * per_message]);
    let subject = subjects.trim_end_matches('>').to_owned() + "x";

    let before = meter.read()?;
    publisher::closed_loop(
        js,
        &subject,
        messages as u64,
        WINDOW,
        |_, _| payload.clone(),
        &ProgressBar::hidden(),
    )
    .await?;
    let published = meter.read()?.since(&before);

    let consumer = created
        .create_consumer(pull::Config {
            durable_name: Some("floor".into()),
            ..Default::default()
        })
        .await
        .context("creating the floor consumer")?;
    let before = meter.read()?;
    let mut stream = consumer
        .stream()
        .max_messages_per_batch(1000)
        .messages()
        .await?;
    for _ in 0..messages {
        let message = stream.next().await.context("floor consumer ended")??;
        message
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
    }
    let consumed = meter.read()?.since(&before);
    let per_item = |seconds: f64| seconds * 1000.0 / items as f64;
    Ok(Hop {
        publish_ms: per_item(published.hookrelay),
        consume_ms: per_item(consumed.hookrelay),
        nats_ms: per_item(nats_seconds(&published.plus(&consumed))?),
    })
}

fn nats_seconds(cpu: &Cpu) -> anyhow::Result<f64> {
    cpu.nats
        .clone()
        .map_err(|why| anyhow::anyhow!("the floor needs nats-server's CPU time: {why}"))
}
