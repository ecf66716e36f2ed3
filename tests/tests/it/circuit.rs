//! Endpoint health as a circuit: an endpoint that keeps failing gets no
//! requests but one probe at a time, its deliveries wait in Redis and all
//! arrive once it is back; one failing for too long is disabled and
//! announced on NATS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hookrelay_proto::v1 as pb;
use hookrelay_tests::support::{eventually, Receiver, Reply, TestEnv};
use hookrelay_tests::Harness;

use crate::retries::schedule;
use crate::subscription;

const EVENTS: u64 = 8;

pub async fn health(hr: &Harness, id: &str) -> pb::SubscriptionHealth {
    hr.logs()
        .await
        .get_subscription_health(pb::GetSubscriptionHealthRequest {
            tenant: "acme".into(),
            subscription_id: id.to_owned(),
        })
        .await
        .expect("GetSubscriptionHealth")
        .into_inner()
}

#[tokio::test]
async fn an_open_circuit_sends_only_probes_and_delivers_everything_once_closed() {
    let hr = Harness::start_with(quick_circuit(), hookrelay::Role::All).await;

    // Down until told otherwise; every answer noted as (event n, status).
    let receiver = Receiver::start().await;
    let down = Arc::new(AtomicBool::new(true));
    let answered: Arc<Mutex<Vec<(u64, u16)>>> = Arc::default();
    {
        let (down, answered) = (down.clone(), answered.clone());
        receiver.respond_with(move |request, _| {
            let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
            let n = body["data"]["n"].as_u64().unwrap();
            let status = if down.load(Ordering::SeqCst) {
                503
            } else {
                200
            };
            answered.lock().unwrap().push((n, status));
            Reply::status(status)
        });
    }
    let mut sub = subscription("acme", &receiver.url("/hook"), &["*"]);
    // Retried every 200 ms for long enough: without a circuit that is five
    // requests per event per second.
    sub.retry_policy = schedule(&[200; 100]);
    let (sub, _) = hr.create(sub).await;
    for n in 0..EVENTS {
        hr.publish(
            "acme",
            "order.paid",
            format!(r#"{{"data":{{"n":{n}}}}}"#).as_bytes(),
        )
        .await;
    }

    let open = eventually("the circuit open", Duration::from_secs(20), || async {
        let health = health(&hr, &sub.id).await;
        (health.state == "open" && health.held_deliveries > 0).then_some(health)
    })
    .await;
    assert!(
        open.next_probe_at.is_some() && open.opened_at.is_some(),
        "{open:?}"
    );
    assert!(open.failing_since.is_some(), "{open:?}");
    assert!(
        hr.metric(r#"hookrelay_circuit_transitions_total{state="open"}"#)
            .await
            .unwrap_or(0.0)
            >= 1.0
    );

    // While open: probes only, one a second (with slack for a busy machine),
    // where the retry policy alone would send about 40 a second.
    let before = receiver.requests().len();
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await;
    let during = receiver.requests().len() - before;
    assert!(
        during <= 5,
        "{during} requests in {window:?} to an endpoint whose circuit is open"
    );

    down.store(false, Ordering::SeqCst);
    eventually(
        "every event delivered once the endpoint is back",
        Duration::from_secs(30),
        || async {
            let delivered: std::collections::HashSet<u64> = answered
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, status)| *status == 200)
                .map(|(n, _)| *n)
                .collect();
            (delivered.len() as u64 == EVENTS).then_some(())
        },
    )
    .await;
    let healthy = eventually("the circuit closed", Duration::from_secs(10), || async {
        let health = health(&hr, &sub.id).await;
        (health.state == "healthy").then_some(health)
    })
    .await;
    assert_eq!(healthy.held_deliveries, 0);
    assert_eq!(healthy.next_probe_at, None);
    let mut successes: HashMap<u64, usize> = HashMap::new();
    for (n, status) in answered.lock().unwrap().iter() {
        if *status == 200 {
            *successes.entry(*n).or_default() += 1;
        }
    }
    assert!(
        successes.values().all(|&count| count == 1),
        "each event succeeded once: {successes:?}"
    );
}

#[tokio::test]
async fn a_subscription_failing_longer_than_disable_after_is_disabled_and_announced() {
    let hr = Harness::start().await;
    let announcements = hr
        .js
        .client()
        .subscribe(format!(
            "{}.system.acme.subscription.disabled",
            hr.env.config.prefix
        ))
        .await
        .expect("subscribe to announcements");
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(500));
    let mut sub = subscription("acme", &receiver.url("/down"), &["*"]);
    sub.retry_policy = schedule(&[200; 100]);
    sub.circuit = Some(pb::CircuitSpec {
        disable_after: Some(prost_types::Duration {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    });
    let (sub, _) = hr.create(sub).await;
    assert_eq!(
        sub.circuit.as_ref().and_then(|c| c.disable_after),
        Some(prost_types::Duration {
            seconds: 1,
            nanos: 0
        }),
        "the subscription's own threshold is stored and shown"
    );
    hr.publish("acme", "order.paid", br#"{"data":{"n":1}}"#)
        .await;

    let message = tokio::time::timeout(Duration::from_secs(20), announcements.take(1).next())
        .await
        .expect("an announcement within 20 s")
        .expect("subscription open");
    let announced: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(announced["subscription_id"], sub.id.as_str());
    assert_eq!(announced["tenant"], "acme");
    assert_eq!(announced["url"], receiver.url("/down").as_str());
    assert!(
        announced["reason"]
            .as_str()
            .unwrap()
            .contains("longer than disable_after (1s)"),
        "{announced}"
    );
    assert!(announced["consecutive_failures"].as_u64().unwrap() >= 2);
    let stored = hr
        .subscriptions()
        .await
        .get_subscription(pb::GetSubscriptionRequest {
            tenant: "acme".into(),
            id: sub.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.enabled, Some(false));
    assert_eq!(health(&hr, &sub.id).await.state, "disabled");
}

/// A circuit breaker with small thresholds and a probe a second.
fn quick_circuit() -> TestEnv {
    let mut env = TestEnv::new();
    let circuit = &mut env.config.dispatcher.circuit;
    circuit.failing_after = 2;
    circuit.open_after = 3;
    circuit.probe_after = Duration::from_secs(1);
    circuit.probe_max = Duration::from_secs(1);
    env
}

#[tokio::test]
async fn batched_and_ordered_subscriptions_go_through_the_same_circuit() {
    let hr = Harness::start_with(quick_circuit(), hookrelay::Role::All).await;
    let receiver = Receiver::start().await;
    let down = Arc::new(AtomicBool::new(true));
    // Every answer noted as (path, body, status).
    let answered: Arc<Mutex<Vec<(String, serde_json::Value, u16)>>> = Arc::default();
    {
        let (down, answered) = (down.clone(), answered.clone());
        receiver.respond_with(move |request, _| {
            let status = if down.load(Ordering::SeqCst) {
                503
            } else {
                200
            };
            let body = serde_json::from_slice(&request.body).unwrap();
            answered
                .lock()
                .unwrap()
                .push((request.path.clone(), body, status));
            Reply::status(status)
        });
    }
    // A batch of one change per entity, and an ordered subscription, both
    // retried every 200 ms: without a circuit, about ten requests a second.
    let mut batched = subscription("acme", &receiver.url("/batch"), &["training.*"]);
    batched.request = Some(pb::RequestSpec {
        envelope: pb::Envelope::ChangesBatch as i32,
        ..Default::default()
    });
    batched.batch = Some(pb::BatchSpec {
        window: Some(prost_types::Duration::try_from(Duration::from_millis(100)).unwrap()),
        max_size: 1,
        ..Default::default()
    });
    batched.retry_policy = schedule(&[200; 100]);
    let (batched, _) = hr.create(batched).await;
    let mut ordered = subscription("acme", &receiver.url("/ordered"), &["training.*"]);
    ordered.ordering = pb::Ordering::Fifo as i32;
    ordered.retry_policy = schedule(&[200; 100]);
    let (ordered, _) = hr.create(ordered).await;
    for entity in 0..EVENTS {
        hr.publish(
            "acme",
            "training.update",
            format!(r#"{{"entity_id":{entity},"data":{{"n":{entity}}}}}"#).as_bytes(),
        )
        .await;
    }

    for sub in [&batched, &ordered] {
        eventually("the circuit open", Duration::from_secs(20), || async {
            (health(&hr, &sub.id).await.state == "open").then_some(())
        })
        .await;
    }
    // Open: a probe a second each (with slack for a busy machine).
    let before = receiver.requests().len();
    let window = Duration::from_secs(3);
    tokio::time::sleep(window).await;
    let during = receiver.requests().len() - before;
    assert!(
        during <= 10,
        "{during} requests in {window:?} to two subscriptions whose circuits are open"
    );

    down.store(false, Ordering::SeqCst);
    let (changed, sent) = eventually("everything delivered", Duration::from_secs(30), || async {
        let answered = answered.lock().unwrap();
        let changed: std::collections::HashSet<u64> = answered
            .iter()
            .filter(|(path, _, status)| path == "/batch" && *status == 200)
            .flat_map(|(_, body, _)| body["changes"].as_array().cloned().unwrap_or_default())
            .map(|change| change["id"].as_u64().unwrap())
            .collect();
        let mut sent: Vec<u64> = answered
            .iter()
            .filter(|(path, _, _)| path == "/ordered")
            .map(|(_, body, _)| body["data"]["n"].as_u64().unwrap())
            .collect();
        sent.dedup();
        (changed.len() as u64 == EVENTS && sent.len() as u64 == EVENTS).then_some((changed, sent))
    })
    .await;
    assert_eq!(changed, (0..EVENTS).collect());
    // Only the head went (and was probed) while down; then all in order.
    assert_eq!(sent, (0..EVENTS).collect::<Vec<_>>());
}
