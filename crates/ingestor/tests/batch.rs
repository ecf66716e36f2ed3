//! The batch buffer's coalescing rules and flush claims, against the real Redis.

use std::time::Duration;

use chrono::Utc;
use hookrelay_core::subscription::BatchSpec;
use hookrelay_ingestor::batch::{Batcher, Change};
use hookrelay_test_support::TestEnv;

fn change(action: &str, object: &str, id: u64, note: &str) -> Change {
    Change {
        key: format!("{object}:{id}"),
        action: action.into(),
        json: format!(r#"{{"action":"{action}","object":"{object}","id":{id},"note":"{note}"}}"#),
        event_id: format!("evt-{object}-{id}-{note}"),
    }
}

/// The same change made again by a later event.
fn again(change: &Change, event_id: &str) -> Change {
    Change {
        event_id: event_id.into(),
        ..change.clone()
    }
}

fn spec(max_size: u32) -> BatchSpec {
    BatchSpec {
        window: Duration::from_secs(60),
        max_size,
        key: None,
        url_template: None,
    }
}

async fn batcher(env: &TestEnv) -> Batcher {
    let redis = hookrelay_core::redis::connect(&env.config).await.unwrap();
    Batcher::new(env.config.names(), redis)
}

/// Adds `changes` to subscription "s" and reads the buffer back, flushing it.
async fn coalesce(changes: &[Change]) -> Vec<String> {
    let env = TestEnv::new();
    let batcher = batcher(&env).await;
    let now = Utc::now();
    for c in changes {
        batcher.add("s", &spec(100), c, now).await.unwrap();
    }
    let flush = batcher.read("s", 100).await.unwrap();
    flush
        .values
        .iter()
        .map(|v| {
            let v: serde_json::Value = serde_json::from_str(Change::json_of(v)).unwrap();
            format!(
                "{} {}:{} {}",
                v["action"].as_str().unwrap(),
                v["object"].as_str().unwrap(),
                v["id"],
                v["note"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn a_later_update_replaces_an_import_or_update_in_place() {
    let got = coalesce(&[
        change("import", "institute", 1, "a"),
        change("update", "training", 2, "b"),
        change("update", "institute", 1, "c"),
        change("update", "training", 2, "d"),
    ])
    .await;
    assert_eq!(got, ["update institute:1 c", "update training:2 d"]);
}

#[tokio::test]
async fn a_destroy_supersedes_and_an_update_after_it_is_a_new_change() {
    let got = coalesce(&[
        change("update", "training", 2, "a"),
        change("update", "training", 3, "b"),
        change("destroy", "training", 2, "c"),
        change("update", "training", 2, "d"),
        change("update", "training", 2, "e"),
    ])
    .await;
    assert_eq!(
        got,
        [
            "destroy training:2 c",
            "update training:3 b",
            "update training:2 e"
        ]
    );
}

#[tokio::test]
async fn flushes_are_claimed_once_and_changes_made_meanwhile_stay() {
    let env = TestEnv::new();
    let batcher = batcher(&env).await;
    let now = Utc::now();
    batcher
        .add("s", &spec(100), &change("update", "training", 1, "a"), now)
        .await
        .unwrap();
    batcher
        .add("s", &spec(100), &change("update", "training", 2, "b"), now)
        .await
        .unwrap();
    let lease = Duration::from_secs(30);
    assert!(
        batcher.claim(now, lease, 10).await.unwrap().is_empty(),
        "not due before the window"
    );
    let due = now + chrono::Duration::seconds(61);
    assert_eq!(batcher.claim(due, lease, 10).await.unwrap(), ["s"]);
    assert!(
        batcher.claim(due, lease, 10).await.unwrap().is_empty(),
        "a claimed batch is not claimed twice"
    );

    let flush = batcher.read("s", 100).await.unwrap();
    // While it is being sent, training 1 changes again.
    batcher
        .add("s", &spec(100), &change("update", "training", 1, "c"), due)
        .await
        .unwrap();
    let remaining = batcher.commit("s", &flush, due).await.unwrap();
    assert_eq!(remaining, 1, "the newer change of training 1 stays");
    // It opened a window of its own when it arrived.
    assert!(batcher.claim(due, lease, 10).await.unwrap().is_empty());
    let later = due + chrono::Duration::seconds(61);
    assert_eq!(batcher.claim(later, lease, 10).await.unwrap(), ["s"]);
    let rest = batcher.read("s", 100).await.unwrap();
    assert_eq!(rest.values, [change("update", "training", 1, "c").value()]);
}

#[tokio::test]
async fn max_size_makes_a_batch_due_and_splits_it() {
    let env = TestEnv::new();
    let batcher = batcher(&env).await;
    let now = Utc::now();
    for id in 0..25 {
        batcher
            .add("s", &spec(10), &change("update", "training", id, "x"), now)
            .await
            .unwrap();
    }
    let lease = Duration::from_secs(30);
    assert_eq!(
        batcher.claim(now, lease, 10).await.unwrap(),
        ["s"],
        "full batches are due at once"
    );
    let mut seen = Vec::new();
    loop {
        let flush = batcher.read("s", 10).await.unwrap();
        assert!(flush.values.len() <= 10);
        seen.extend(flush.values.clone());
        let again = if flush.truncated {
            now
        } else {
            now + chrono::Duration::seconds(60)
        };
        if batcher.commit("s", &flush, again).await.unwrap() == 0 {
            break;
        }
        assert_eq!(batcher.claim(now, lease, 10).await.unwrap(), ["s"]);
    }
    let expected: Vec<String> = (0..25)
        .map(|id| change("update", "training", id, "x").value())
        .collect();
    assert_eq!(seen, expected, "every change once, in order");
}

#[tokio::test]
async fn the_same_change_from_a_later_event_is_a_new_batch_and_is_not_lost() {
    // Two `training.update` events for entity 5 make identical change JSON.
    // A batch's identity once hashed that JSON alone: the second batch had
    // the first one's id (JetStream dedup dropped it, receivers saw a
    // repeated webhook-id) and its change was deleted as already sent.
    let env = TestEnv::new();
    let batcher = batcher(&env).await;
    let now = Utc::now();
    let lease = Duration::from_secs(30);
    let first = change("update", "training", 5, "same");
    batcher.add("s", &spec(100), &first, now).await.unwrap();
    let due = now + chrono::Duration::seconds(61);
    assert_eq!(batcher.claim(due, lease, 10).await.unwrap(), ["s"]);
    let sent = batcher.read("s", 100).await.unwrap();
    // The second event arrives while the first batch is being sent.
    let second = again(&first, "evt-later");
    batcher.add("s", &spec(100), &second, due).await.unwrap();
    assert_eq!(
        batcher.commit("s", &sent, due).await.unwrap(),
        1,
        "the later event's change stays buffered"
    );
    let later = due + chrono::Duration::seconds(61);
    assert_eq!(batcher.claim(later, lease, 10).await.unwrap(), ["s"]);
    let next = batcher.read("s", 100).await.unwrap();
    assert_eq!(next.body(), sent.body(), "the same change, byte for byte");
    assert_ne!(next.id("s"), sent.id("s"), "but a batch of its own");
    // A flush repeated after a crash is the same batch.
    assert_eq!(batcher.read("s", 100).await.unwrap().id("s"), next.id("s"));
}
