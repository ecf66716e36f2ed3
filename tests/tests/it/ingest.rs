//! Malformed events go to the DLQ with their reason and stop nothing.

use std::time::Duration;

use hookrelay_tests::support::Receiver;
use hookrelay_tests::Harness;

use crate::subscription;

/// Every DLQ message: (reason header, original subject header, body).
async fn dlq(hr: &Harness) -> Vec<(String, String, Vec<u8>)> {
    let stream = hr
        .js
        .get_stream(hr.env.config.names().dlq_stream())
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut seq = 1;
    while let Ok(message) = stream.get_raw_message(seq).await {
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default()
        };
        out.push((
            header("Hookrelay-Dlq-Reason"),
            header("Hookrelay-Dlq-Subject"),
            message.payload.to_vec(),
        ));
        seq += 1;
    }
    out
}

#[tokio::test]
async fn malformed_events_land_in_the_dlq_with_their_reason_and_good_ones_still_flow() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    hr.create(subscription("acme", &receiver.url("/ok"), &["*"]))
        .await;

    let bad: &[(&str, &[u8], &str)] = &[
        ("user.created", b"{not json", "body is not valid JSON"),
        (
            "user.created",
            br#"{"id":"no-data"}"#,
            "missing field \"data\"",
        ),
        (
            "user.created",
            br#"{"data":"text"}"#,
            "field \"data\" must be a JSON object",
        ),
        (
            "user.created",
            br#"{"data":{},"labels":{"course_id":42}}"#,
            "field \"labels\"",
        ),
    ];
    for (event_type, body, _) in bad {
        hr.publish("acme", event_type, body).await;
    }
    hr.publish("acme", "user.created", br#"{"data":{"good":true}}"#)
        .await;

    let request = receiver
        .wait_for(1, Duration::from_secs(10))
        .await
        .remove(0);
    assert!(request.body_str().ends_with(r#""data":{"good":true}}"#));
    let dead = dlq(&hr).await;
    assert_eq!(dead.len(), bad.len(), "{dead:?}");
    for ((reason, subject, body), (event_type, original, expected)) in dead.iter().zip(bad) {
        assert!(
            reason.contains(expected),
            "{reason:?} should mention {expected:?}"
        );
        assert_eq!(
            subject,
            &hr.env.config.names().event_subject("acme", event_type)
        );
        assert_eq!(body, original, "the DLQ keeps the original bytes");
    }
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn an_oversized_event_is_refused_into_the_dlq() {
    let mut env = hookrelay_tests::support::TestEnv::new();
    env.config.limits.max_event_bytes = 1024;
    let hr = Harness::start_with(env, hookrelay::Role::All).await;
    let receiver = Receiver::start().await;
    hr.create(subscription("acme", &receiver.url("/ok"), &["*"]))
        .await;
    let big = format!(r#"{{"data":{{"blob":"{}"}}}}"#, "x".repeat(2000));
    hr.publish("acme", "file.uploaded", big.as_bytes()).await;
    hr.publish("acme", "file.uploaded", br#"{"data":{}}"#).await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let dead = dlq(&hr).await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].0.contains("over the 1024 byte limit"),
        "{}",
        dead[0].0
    );
}

#[tokio::test]
async fn a_backlog_fanning_out_to_more_tasks_than_publish_permits_is_delivered_in_full() {
    // 12,000 tasks from one fetch: more than the 5,000 publish acks a
    // JetStream context lets be outstanding. The ingestor once published
    // them all before awaiting any ack, and waited forever for a permit.
    const SUBSCRIPTIONS: usize = 600;
    const EVENTS: usize = 20;
    let env = hookrelay_tests::support::TestEnv::new();
    let ingestor_env = hookrelay_tests::support::TestEnv {
        config: env.config.clone(),
    };
    // Everything but the ingestor, so the events wait in EVENTS and its
    // first fetch takes them together.
    let hr = Harness::start_roles(
        env,
        &[
            hookrelay::Role::Subscriptions,
            hookrelay::Role::Dispatcher,
            hookrelay::Role::Logs,
        ],
    )
    .await;
    let receiver = Receiver::start().await;
    let (created, _) = hr
        .create(subscription("acme", &receiver.url("/fan"), &["order.*"]))
        .await;
    // The rest are copies written straight to KV (the API checks the
    // tenant's limit against every subscription, slow at this count).
    let bucket = hr
        .js
        .get_key_value(hr.env.config.names().subscriptions_bucket())
        .await
        .unwrap();
    let stored = bucket.get(&created.id).await.unwrap().expect("stored");
    let stored = String::from_utf8(stored.to_vec()).unwrap();
    for n in 1..SUBSCRIPTIONS {
        let id = format!("{}{n:04}", &created.id[..created.id.len() - 4]);
        let copy = stored.replace(&created.id, &id);
        bucket.put(&id, copy.into_bytes().into()).await.unwrap();
    }
    for n in 0..EVENTS {
        hr.publish(
            "acme",
            "order.paid",
            format!(r#"{{"data":{{"n":{n}}}}}"#).as_bytes(),
        )
        .await;
    }
    let _ingestor = Harness::start_roles(ingestor_env, &[hookrelay::Role::Ingestor]).await;
    let total = SUBSCRIPTIONS * EVENTS;
    hookrelay_tests::support::eventually(
        &format!("{total} deliveries"),
        Duration::from_secs(120),
        || async { (receiver.requests().len() >= total).then_some(()) },
    )
    .await;
}
