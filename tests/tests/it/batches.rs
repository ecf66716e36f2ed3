//! Seed 001 (Springest): debounced, coalesced batches of changes, sent
//! until the receiver takes them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hookrelay_proto::v1 as pb;
use hookrelay_tests::support::{Receiver, Reply};
use hookrelay_tests::Harness;

use crate::subscription;

fn batched(url: &str, window_ms: u64, max_size: u32) -> pb::Subscription {
    let mut sub = subscription("springest", url, &["institute.*", "training.*"]);
    sub.name = "Partner feed".into();
    sub.description = "Training catalogue changes".into();
    sub.request = Some(pb::RequestSpec {
        envelope: pb::Envelope::ChangesBatch as i32,
        ..Default::default()
    });
    sub.batch = Some(pb::BatchSpec {
        window: Some(prost_types::Duration::try_from(Duration::from_millis(window_ms)).unwrap()),
        max_size,
        url_template: "http://api.springest.nl/{{ object }}s/{{ entity_id }}".into(),
        ..Default::default()
    });
    sub.retry_policy = Some(pb::RetryPolicy {
        policy: Some(pb::retry_policy::Policy::UntilSuccess(
            pb::UntilSuccessRetry {
                initial: Some(prost_types::Duration::try_from(Duration::from_millis(100)).unwrap()),
                cap: Some(prost_types::Duration::try_from(Duration::from_millis(300)).unwrap()),
            },
        )),
    });
    sub
}

async fn change(hr: &Harness, event_type: &str, entity: u64, note: &str) {
    let body = format!(r#"{{"entity_id":{entity},"data":{{"note":"{note}"}}}}"#);
    hr.publish("springest", event_type, body.as_bytes()).await;
}

#[tokio::test]
async fn seed_001_changes_arrive_as_one_coalesced_batch_after_the_window() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let window = Duration::from_millis(800);
    let (sub, _) = hr
        .create(batched(&receiver.url("/springest"), 800, 100))
        .await;
    assert_eq!(
        (sub.name.as_str(), sub.description.as_str()),
        ("Partner feed", "Training catalogue changes")
    );

    let first = Instant::now();
    change(&hr, "institute.import", 234234, "all trainings").await;
    change(&hr, "training.update", 345345, "title").await;
    change(&hr, "training.update", 345345, "price").await;
    change(&hr, "training.destroy", 34534, "gone").await;
    change(&hr, "training.update", 345345, "dates").await;

    let request = receiver
        .wait_for(1, Duration::from_secs(10))
        .await
        .remove(0);
    assert!(
        first.elapsed() >= window,
        "sent after the window, not before ({:?})",
        first.elapsed()
    );
    let documented = r#"{ "changes": [ { "action": "import", "object": "institute", "id": 234234, "url": "http://api.springest.nl/institutes/234234" }, { "action": "update", "object": "training", "id": 345345, "url": "http://api.springest.nl/trainings/345345" }, { "action": "destroy", "object": "training", "id": 34534 } ] }"#;
    let expected: serde_json::Value = serde_json::from_str(documented).unwrap();
    assert_eq!(
        request.body_str(),
        expected.to_string(),
        "the documented example, compact"
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert!(request.header("webhook-signature").is_some());
    assert_eq!(
        receiver.requests().len(),
        1,
        "one request for the whole window"
    );
}

#[tokio::test]
async fn max_size_splits_a_burst_with_nothing_lost_or_duplicated() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    hr.create(batched(&receiver.url("/feed"), 300, 10)).await;
    for id in 0..25 {
        change(&hr, "training.update", id, "x").await;
    }
    let requests = receiver.wait_for(3, Duration::from_secs(10)).await;
    let mut ids: Vec<u64> = Vec::new();
    for request in &requests {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let changes = body["changes"].as_array().unwrap();
        assert!(
            changes.len() <= 10,
            "{} changes in one request",
            changes.len()
        );
        ids.extend(changes.iter().map(|c| c["id"].as_u64().unwrap()));
    }
    ids.sort();
    assert_eq!(ids, (0..25).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_every_change_when_it_is_back() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    receiver.respond_with(|_, earlier| {
        if earlier.len() < 4 {
            Reply::status(503)
        } else {
            Reply::status(200)
        }
    });
    let (sub, _) = hr.create(batched(&receiver.url("/down"), 200, 100)).await;
    for id in 1..=5 {
        change(&hr, "training.update", id, "x").await;
    }
    let requests = receiver.wait_for(5, Duration::from_secs(15)).await;
    let ids: Vec<&str> = requests
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "a batch retries as a whole: {ids:?}"
    );
    let body: serde_json::Value = serde_json::from_slice(&requests[4].body).unwrap();
    let got: Vec<u64> = body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [1, 2, 3, 4, 5]);
    let attempts = crate::logs::wait_attempts(&hr, &sub.id, 5).await;
    let outcomes: HashMap<u32, &str> = attempts
        .iter()
        .map(|a| (a.attempt, a.outcome.as_str()))
        .collect();
    assert_eq!(outcomes[&5], "success");
    assert_eq!(outcomes[&1], "http_5xx");
    assert_eq!(receiver.requests().len(), 5);
}
