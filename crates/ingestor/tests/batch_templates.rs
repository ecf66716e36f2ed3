//! A batch's key and URL templates on events lacking the fields they name:
//! missing at any depth renders empty, and a key left empty (or failing on
//! the event's data) keys the change by default instead of lumping it with
//! every other such change.

use std::time::Duration;

use chrono::Utc;
use hookrelay_core::event::Event;
use hookrelay_core::subscription::{BatchSpec, Subscription};
use hookrelay_ingestor::batch::Batcher;
use hookrelay_test_support::TestEnv;

fn subscription(id: &str, key: &str, url: &str) -> (Subscription, BatchSpec) {
    let batch = BatchSpec {
        window: Duration::from_secs(60),
        max_size: 100,
        key: Some(key.into()),
        url_template: Some(url.into()),
    };
    let now = Utc::now();
    let sub: Subscription = serde_json::from_value(serde_json::json!({
        "id": id, "tenant": "acme", "url": "http://127.0.0.1:9/",
        "event_types": ["training.*"], "enabled": true, "secrets": [],
        "created_at": now, "updated_at": now,
    }))
    .unwrap();
    (sub, batch)
}

fn event(id: &str, entity: &str, data: &str) -> Event {
    let mut event = hookrelay_template::sample_event("acme", "training.update");
    event.id = id.into();
    event.entity_id = Some(entity.into());
    event.data = serde_json::value::RawValue::from_string(data.into()).unwrap();
    event
}

#[tokio::test]
async fn missing_fields_render_empty_and_an_empty_key_falls_back_to_the_default() {
    let env = TestEnv::new();
    let redis = hookrelay_core::redis::connect(&env.config).await.unwrap();
    let batcher = Batcher::new(env.config.names(), redis);
    let (sub, batch) = subscription(
        "sub_a",
        "{{ data.group.id }}",
        "http://api.test/{{ object }}s/{{ entity_id }}/{{ data.meta.slug }}",
    );

    let with = batcher
        .change(
            &sub,
            &batch,
            &event("e1", "5", r#"{"group":{"id":"g7"},"meta":{"slug":"rust"}}"#),
        )
        .unwrap();
    assert_eq!(with.key, "g7");
    assert_eq!(
        with.json,
        r#"{"action":"update","object":"training","id":5,"url":"http://api.test/trainings/5/rust"}"#
    );

    let without = batcher
        .change(&sub, &batch, &event("e2", "6", r#"{"group":{}}"#))
        .unwrap();
    assert_eq!(without.key, "training:6");
    assert_eq!(
        without.json,
        r#"{"action":"update","object":"training","id":6,"url":"http://api.test/trainings/6/"}"#
    );

    // A key failing on this event's data (arithmetic on a missing value)
    // keys by default too; the change is not dropped.
    let (sub, batch) = subscription(
        "sub_b",
        "{{ data.n * 2 }}",
        "http://api.test/t/{{ entity_id }}",
    );
    let failing = batcher
        .change(&sub, &batch, &event("e3", "7", r#"{}"#))
        .unwrap();
    assert_eq!(failing.key, "training:7");
    let fine = batcher
        .change(&sub, &batch, &event("e4", "8", r#"{"n":4}"#))
        .unwrap();
    assert_eq!(fine.key, "8");
}

#[tokio::test]
async fn a_url_failing_on_the_event_data_leaves_the_change_without_one() {
    let env = TestEnv::new();
    let redis = hookrelay_core::redis::connect(&env.config).await.unwrap();
    let batcher = Batcher::new(env.config.names(), redis);
    let (sub, batch) = subscription(
        "sub_c",
        "{{ entity_id }}",
        "http://api.test/p/{{ data.page * 2 }}",
    );

    let failing = batcher
        .change(&sub, &batch, &event("e5", "9", r#"{}"#))
        .unwrap();
    assert_eq!(failing.key, "9");
    assert_eq!(
        failing.json,
        r#"{"action":"update","object":"training","id":9}"#
    );
    let fine = batcher
        .change(&sub, &batch, &event("e6", "10", r#"{"page":3}"#))
        .unwrap();
    assert_eq!(
        fine.json,
        r#"{"action":"update","object":"training","id":10,"url":"http://api.test/p/6"}"#
    );
}
