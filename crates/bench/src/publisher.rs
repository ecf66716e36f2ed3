//! Publishing events the way a busy service would: many in flight, acks
//! awaited in a window rather than one round trip per event.

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use indicatif::ProgressBar;

use crate::receiver::now_us;

/// Publishes unacknowledged at most this far ahead of the acks (async-nats
/// lends 5,000 publish permits per context, held until the ack is awaited).
pub const WINDOW: usize = 4096;

/// A typical order event of about 300 bytes, carrying its publish time.
pub fn order_event(n: u64, sent_us: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"data":{{"order_id":"ord_{n:010}","status":"paid","amount_cents":4200,"currency":"EUR","customer":{{"id":"cus_{c:06}","email":"customer{c}@example.com","name":"Ada Lovelace"}},"items":[{{"sku":"BK-1843","qty":1}},{{"sku":"PN-0042","qty":2}}],"n":{n},"sent_us":{sent_us}}},"labels":{{"region":"eu"}}}}"#,
        c = n % 100_000
    ))
}

/// A change to entity `n` in the shape seed 001's publisher sends.
pub fn change_event(n: u64, _sent_us: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"entity_id":{n},"data":{{"title":"Training {n}","price":{p}}}}}"#,
        p = 100 + n % 900
    ))
}

/// Publishes `count` events to `subject` as fast as acks allow, at most
/// `window` unacknowledged; `body(n, sent_us)` makes event `n`.
pub async fn closed_loop(
    js: &jetstream::Context,
    subject: &str,
    count: u64,
    window: usize,
    body: impl Fn(u64, u64) -> Bytes,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut acks = FuturesUnordered::new();
    for n in 0..count {
        while acks.len() >= window.clamp(1, WINDOW) {
            ack(acks.next().await)?;
        }
        acks.push(send(js, subject, body(n, now_us())).await?);
        bar.inc(1);
    }
    while !acks.is_empty() {
        ack(acks.next().await)?;
    }
    Ok(())
}

/// Publishes `count` events at `rate` per second on a fixed timetable: each
/// event carries the time it was due, not the time it went out, so a stall
/// anywhere shows up in the latency instead of slowing the publisher down
/// (no coordinated omission).
pub async fn open_loop(
    js: &jetstream::Context,
    subject: &str,
    count: u64,
    rate: u64,
    body: fn(u64, u64) -> Bytes,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let start = now_us();
    let interval_us = 1_000_000.0 / rate as f64;
    let mut acks = FuturesUnordered::new();
    let mut n = 0;
    while n < count {
        let due = start + (n as f64 * interval_us) as u64;
        let now = now_us();
        if due > now {
            // Sleep to the next event's slot while collecting acks.
            let sleep = tokio::time::sleep(Duration::from_micros(due - now));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    Some(result) = acks.next(), if !acks.is_empty() => ack(Some(result))?,
                }
            }
        }
        // Everything due by now goes out, within the ack window.
        let now = now_us();
        while n < count && start + (n as f64 * interval_us) as u64 <= now {
            while acks.len() >= WINDOW {
                ack(acks.next().await)?;
            }
            let due = start + (n as f64 * interval_us) as u64;
            acks.push(send(js, subject, body(n, due)).await?);
            n += 1;
            bar.inc(1);
        }
    }
    while !acks.is_empty() {
        ack(acks.next().await)?;
    }
    Ok(())
}

async fn send(
    js: &jetstream::Context,
    subject: &str,
    body: Bytes,
) -> anyhow::Result<
    impl std::future::Future<
        Output = Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    >,
> {
    js.publish(subject.to_owned(), body)
        .await
        .with_context(|| format!("publishing to {subject}"))
        .map(std::future::IntoFuture::into_future)
}

fn ack(
    result: Option<Result<jetstream::publish::PublishAck, jetstream::context::PublishError>>,
) -> anyhow::Result<()> {
    result
        .context("no ack pending")?
        .map(|_| ())
        .context("publish not acknowledged")
}

/// The 20 properties of [`course_stat_event`]'s `data`, in order, with
/// their schemas: integers with bounds, bounded strings, date-times and
/// arrays of an enum, as a typical catalogued event carries (`n` and
/// `sent_us` are two of the integers).
fn course_stat_properties() -> Vec<(String, serde_json::Value)> {
    use serde_json::json;
    (0..20)
        .map(|i| match i {
            0 => ("n".to_owned(), json!({"type": "integer", "minimum": 0})),
            1 => ("sent_us".to_owned(), json!({"type": "integer", "minimum": 0})),
            _ => (
                format!("field_{i}"),
                match i % 4 {
                    0 => json!({"type": "integer", "minimum": 0}),
                    1 => json!({"type": "string", "maxLength": 256}),
                    2 => json!({"type": "string", "format": "date-time"}),
                    _ => json!({"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}}),
                },
            ),
        })
        .collect()
}

/// The JSON Schema of [`course_stat_event`]'s `data`: 20 properties, two
/// required, no others allowed.
pub fn course_stat_schema() -> String {
    serde_json::json!({
        "type": "object",
        "properties": serde_json::Map::from_iter(course_stat_properties()),
        "required": ["n", "sent_us"],
        "additionalProperties": false
    })
    .to_string()
}

/// A typical catalogued event of about 1 KiB whose `data` has 20
/// properties and matches [`course_stat_schema`].
pub fn course_stat_event(n: u64, sent_us: u64) -> Bytes {
    use serde_json::json;
    let data: serde_json::Map<String, serde_json::Value> = course_stat_properties()
        .into_iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let value = match (i, i % 4) {
                (0, _) => json!(n),
                (1, _) => json!(sent_us),
                (_, 0) => json!(n * 1000 + i as u64),
                (_, 1) => json!(format!(
                    "value {i} of event {n}, with some more text in it, padding the whole event out to about one kibibyte, as typical ones are"
                )),
                (_, 2) => json!("2026-01-02T03:04:05Z"),
                _ => json!(["a", "b", "c", "a"]),
            };
            (name, value)
        })
        .collect();
    Bytes::from(json!({"data": data, "labels": {"region": "eu"}}).to_string())
}
