//! Property test: event parsing never panics, whatever the bytes, and what it
//! accepts round-trips its data byte for byte.

use chrono::Utc;
use hookrelay_core::event::{Arrival, Event};
use proptest::prelude::*;

fn arrival<'a>(tenant: &'a str, event_type: &'a str) -> Arrival<'a> {
    Arrival {
        tenant,
        event_type,
        msg_id: None,
        seq: 1,
        received_at: Utc::now(),
    }
}

/// JSON-ish bodies: random text, and objects with random members.
fn bodies() -> impl Strategy<Value = Vec<u8>> {
    let json = prop::collection::vec(
        (
            prop::sample::select(vec![
                "data",
                "id",
                "entity_id",
                "labels",
                "occurred_at",
                "x",
            ]),
            prop::sample::select(vec![
                "{}",
                "{\"a\":1}",
                "[]",
                "1",
                "\"s\"",
                "null",
                "true",
                "{\"k\":\"v\"}",
                "\"2024-01-01T00:00:00Z\"",
                "\"\\u0000\"",
            ]),
        ),
        0..6,
    )
    .prop_map(|members| {
        let body: Vec<String> = members
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", body.join(",")).into_bytes()
    });
    prop_oneof![prop::collection::vec(any::<u8>(), 0..256), json]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parsing_never_panics(body in bodies(), tenant in "[a-z\\\\.\\\\* -]{0,8}", event_type in "[a-z.*>_-]{0,12}") {
        if let Ok(event) = Event::parse(arrival(&tenant, &event_type), &body, 1 << 20) {
            let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
            prop_assert_eq!(serde_json::from_str::<serde_json::Value>(event.data.get()).unwrap(), value["data"].clone());
        }
    }
}
