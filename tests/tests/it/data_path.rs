//! The data path keeps one copy of each payload: events of any size up to
//! the NATS max payload are delivered whole and recorded once, permanent
//! faults end in a final record and a DLQ entry, and a redelivered attempt
//! never forks its retry chain.

use std::time::Duration;

use hookrelay_proto::v1 as pb;
use hookrelay_tests::support::{eventually, Receiver, Reply, TestEnv};
use hookrelay_tests::Harness;
use sha2::{Digest, Sha256};

use crate::logs::wait_attempts;
use crate::retries::schedule;
use crate::subscription;

const WAIT: Duration = Duration::from_secs(30);

/// An event whose body is exactly `size` bytes.
fn event_of(size: usize) -> Vec<u8> {
    let head = r#"{"data":{"blob":""#;
    let tail = r#""}}"#;
    let mut body = head.as_bytes().to_vec();
    body.resize(size - tail.len(), b'x');
    body.extend_from_slice(tail.as_bytes());
    body
}

/// Waits until the ingestor's and the dispatcher's consumers hold nothing:
/// every event fetched was acked, every task settled.
async fn settled(hr: &Harness) {
    let names = hr.env.config.names();
    let consumers = [
        (names.events_stream(), names.consumer("ingestor")),
        (names.deliveries_stream(), names.consumer("dispatcher")),
    ];
    eventually("every message acked", WAIT, || {
        let consumers = consumers.clone();
        async move {
            for (stream, consumer) in consumers {
                let stream = hr.js.get_stream(&stream).await.ok()?;
                let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                    stream.get_consumer(&consumer).await.ok()?;
                let info = consumer.info().await.ok()?;
                if info.num_pending > 0 || info.num_ack_pending > 0 {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
}

/// The largest event body NATS takes on this server, less room for headers.
fn near_max_payload(hr: &Harness) -> usize {
    hr.js.client().server_info().max_payload - 512
}

/// Sizes up to the NATS max payload, through the in-process hand-over and
/// through DELIVERIES: each reaches the receiver whole, exactly once, and
/// its attempt record keeps size, hash and a 4 KiB excerpt.
async fn every_size_is_delivered_whole_and_recorded_once(handoff: bool) {
    let mut env = TestEnv::new();
    env.config.ingestor.handoff = handoff;
    let hr = Harness::start_with(env, hookrelay::Role::All).await;
    let receiver = Receiver::start().await;
    let (sub, _) = hr
        .create(subscription("acme", &receiver.url("/big"), &["*"]))
        .await;
    let sizes = [64 << 10, 800_011, near_max_payload(&hr)];
    for size in sizes {
        hr.publish("acme", "file.uploaded", &event_of(size)).await;
    }
    hr.publish("acme", "file.uploaded", br#"{"data":{"after":true}}"#)
        .await;
    let mut requests = receiver.wait_for(sizes.len() + 1, WAIT).await;
    // Sent concurrently: match them to the events by size.
    requests.sort_by_key(|r| std::cmp::Reverse(r.body.len()));
    requests.truncate(sizes.len());
    requests.reverse();
    settled(&hr).await;
    assert_eq!(
        receiver.requests().len(),
        sizes.len() + 1,
        "each event sent once"
    );
    let attempts = wait_attempts(&hr, &sub.id, sizes.len() + 1).await;
    assert_eq!(attempts.len(), sizes.len() + 1, "each recorded once");
    for (size, request) in sizes.iter().zip(&requests) {
        // The publisher's `data`, byte for byte, inside the envelope.
        let event = event_of(*size);
        let data = &event[r#"{"data":"#.len()..event.len() - 1];
        assert!(
            request.body.windows(data.len()).any(|w| w == data),
            "the {size}-byte event's data arrived intact"
        );
        let attempt = attempts
            .iter()
            .find(|a| a.request.as_ref().unwrap().body_size == request.body.len() as u64)
            .unwrap_or_else(|| panic!("no attempt of the {size}-byte event"));
        let recorded = attempt.request.as_ref().unwrap();
        assert_eq!(attempt.outcome, "success");
        assert_eq!(recorded.body.len(), 4096);
        assert!(recorded.body_truncated);
        assert_eq!(recorded.body[..], request.body[..4096]);
        assert_eq!(
            recorded.body_sha256,
            hex::encode(Sha256::digest(&request.body))
        );
        assert_eq!(attempt.event_source, "event");
        assert!(attempt.event_seq > 0);
    }
}

#[tokio::test]
async fn events_up_to_the_max_payload_are_delivered_whole_handed_over() {
    every_size_is_delivered_whole_and_recorded_once(true).await;
}

#[tokio::test]
async fn events_up_to_the_max_payload_are_delivered_whole_through_deliveries() {
    every_size_is_delivered_whole_and_recorded_once(false).await;
}

#[tokio::test]
async fn an_event_over_the_ingest_limit_goes_to_the_dlq_cut_to_fit() {
    // The event itself is near the NATS max payload: its DLQ copy (body plus
    // reason headers) would not fit, so the body is cut and says so.
    let mut env = TestEnv::new();
    env.config.limits.max_event_bytes = 512 << 10;
    let hr = Harness::start_with(env, hookrelay::Role::All).await;
    let receiver = Receiver::start().await;
    hr.create(subscription("acme", &receiver.url("/ok"), &["*"]))
        .await;
    let size = near_max_payload(&hr);
    hr.publish("acme", "file.uploaded", &event_of(size)).await;
    hr.publish("acme", "file.uploaded", br#"{"data":{}}"#).await;
    receiver.wait_for(1, WAIT).await;
    let entry = crate::first_dlq_entry(&hr).await;
    let header = |name: &str| entry.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(
        header("Hookrelay-Dlq-Reason").unwrap(),
        format!("event is {size} bytes, over the 524288 byte limit")
    );
    assert_eq!(
        header("Hookrelay-Dlq-Original-Size"),
        Some(size.to_string())
    );
    assert!(entry.payload.len() < size);
    assert!(entry.payload.starts_with(br#"{"data":{"blob":"xxx"#));
    settled(&hr).await;
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn a_redelivered_first_attempt_continues_one_retry_chain() {
    // Attempt 1's schedule entry once took its first-attempt time from when
    // it was sent, so every redelivery of attempt 1 started another chain.
    let mut env = TestEnv::new();
    env.config.ingestor.handoff = false;
    let hr = Harness::start_with(env, hookrelay::Role::All).await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(500));
    let mut sub = subscription("acme", &receiver.url("/down"), &["*"]);
    sub.retry_policy = schedule(&[3_600_000]);
    let (sub, _) = hr.create(sub).await;
    let seq = hr.publish("acme", "user.created", br#"{"data":{}}"#).await;
    wait_attempts(&hr, &sub.id, 1).await;
    // The same task again, twice, as JetStream redelivers it after a crash.
    let names = hr.env.config.names();
    let events = hr.js.get_stream(names.events_stream()).await.unwrap();
    let stored_at = events.get_raw_message(seq).await.unwrap().time;
    let task = hookrelay_core::delivery::DeliveryTask::first(
        &sub.id,
        hookrelay_core::delivery::Source::Event,
        seq,
        stored_at,
    );
    for n in 0..2 {
        let publish = async_nats::jetstream::message::PublishMessage::build()
            .payload(task.to_json().into())
            .message_id(format!("again-{n}"));
        hr.js
            .send_publish(names.delivery_subject("acme"), publish)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    wait_attempts(&hr, &sub.id, 3).await;
    settled(&hr).await;
    let retries: u64 = {
        let client = redis::Client::open(hr.env.config.redis.url.as_str()).unwrap();
        let mut redis = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("ZCARD")
            .arg(names.retries_key())
            .query_async(&mut redis)
            .await
            .unwrap()
    };
    assert_eq!(retries, 1, "one schedule entry for attempt 2");
}

#[tokio::test]
async fn a_retry_of_an_expired_event_leaves_a_final_record_and_a_dlq_entry() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(503));
    let mut sub = subscription("acme", &receiver.url("/down"), &["*"]);
    // Due after the dispatcher's event cache stops trusting its copy.
    sub.retry_policy = schedule(&[6_000]);
    let (sub, _) = hr.create(sub).await;
    let seq = hr
        .publish("acme", "order.paid", br#"{"id":"o-1","data":{}}"#)
        .await;
    wait_attempts(&hr, &sub.id, 1).await;
    // The event leaves the stream before its retry is due (as past max age).
    let events = hr
        .js
        .get_stream(hr.env.config.names().events_stream())
        .await
        .unwrap();
    events.delete_message(seq).await.unwrap();
    let attempts = wait_attempts(&hr, &sub.id, 2).await;
    let last = &attempts[0];
    assert_eq!(last.attempt, 2);
    assert_eq!(last.give_up_reason, "expired");
    assert_eq!(last.outcome, "error");
    assert!(
        last.reason.contains("no longer retained"),
        "{}",
        last.reason
    );
    assert_eq!(
        receiver.requests().len(),
        1,
        "nothing sent without the event"
    );
    let entry = crate::first_dlq_entry(&hr).await;
    let reason = entry.headers.get("Hookrelay-Dlq-Reason").unwrap().as_str();
    assert!(
        reason.starts_with("gave up (expired) after attempt 2: event"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_template_that_cannot_render_an_event_gives_up_at_once() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let mut sub = subscription("acme", &receiver.url("/t"), &["*"]);
    sub.request = Some(pb::RequestSpec {
        envelope: pb::Envelope::Custom as i32,
        template: r#"{"n": "{{ data.id + 1 }}"}"#.into(),
        ..Default::default()
    });
    let (sub, _) = hr.create(sub).await;
    hr.publish("acme", "x.y", br#"{"data":{"id":"text"}}"#)
        .await;
    hr.publish("acme", "x.y", br#"{"data":{"id":1}}"#).await;
    let attempts = wait_attempts(&hr, &sub.id, 2).await;
    let failed = attempts.iter().find(|a| a.outcome != "success").unwrap();
    assert_eq!(failed.give_up_reason, "invalid");
    assert_eq!(failed.outcome, "error");
    assert!(failed.reason.starts_with("template:"), "{}", failed.reason);
    settled(&hr).await;
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(receiver.requests()[0].body_str(), r#"{"n":2}"#);
}
