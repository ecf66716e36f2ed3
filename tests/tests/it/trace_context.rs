//! W3C Trace Context: a publisher's `traceparent` on the event's NATS
//! headers continues in every webhook request (same trace, a span of each
//! request's own) and in the attempt records; without one, none is sent.

use std::time::Duration;

use hookrelay_proto::v1 as pb;
use hookrelay_test_support::{Receiver, Reply};
use hookrelay_tests::Harness;

use crate::retries::schedule;
use crate::subscription;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

async fn publish_with_traceparent(hr: &Harness, id: &str, traceparent: &str) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", traceparent);
    let subject = hr.env.config.names().event_subject("acme", "order.paid");
    hr.js
        .publish_with_headers(
            subject,
            headers,
            format!(r#"{{"id":"{id}","data":{{}}}}"#).into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn attempts_of(hr: &Harness, event_id: &str) -> Vec<pb::Attempt> {
    hookrelay_tests::support::eventually("the attempts logged", Duration::from_secs(30), || async {
        let attempts = hr
            .logs()
            .await
            .list_attempts(pb::ListAttemptsRequest {
                event_id: event_id.into(),
                tenant: "acme".into(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .attempts;
        (attempts.len() == 2).then_some(attempts)
    })
    .await
}

#[tokio::test]
async fn a_published_traceparent_continues_in_every_request_and_record() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    // Each event's first request fails: its retry must stay in the trace.
    for _ in 0..2 {
        receiver.push(Reply::status(500));
        receiver.push(Reply::status(200));
    }
    let mut sub = subscription("acme", &receiver.url("/hook"), &["order.*"]);
    sub.retry_policy = schedule(&[50]);
    hr.create(sub).await;

    publish_with_traceparent(&hr, "traced", &format!("00-{TRACE}-{PARENT}-01")).await;
    let requests = receiver.wait_for(2, Duration::from_secs(30)).await;
    let mut spans = Vec::new();
    for request in &requests {
        let header = request.header("traceparent").expect("a traceparent");
        let parts: Vec<&str> = header.split('-').collect();
        assert_eq!(parts.len(), 4, "{header}");
        assert_eq!(
            (parts[0], parts[1], parts[3]),
            ("00", TRACE, "01"),
            "{header}"
        );
        assert_ne!(parts[2], PARENT, "a span of the request's own");
        spans.push(parts[2].to_owned());
    }
    assert_ne!(spans[0], spans[1], "each attempt is its own span");
    for attempt in attempts_of(&hr, "traced").await {
        assert_eq!(attempt.trace_id, TRACE);
        let sent = attempt.request.unwrap().headers;
        assert!(
            sent.iter()
                .any(|h| h.name == "traceparent" && h.value.contains(TRACE)),
            "the record shows the header sent: {sent:?}"
        );
    }

    // An invalid one (all-zero trace id) is ignored, as W3C says.
    publish_with_traceparent(
        &hr,
        "untraced",
        &format!("00-{}-{PARENT}-01", "0".repeat(32)),
    )
    .await;
    let requests = receiver.wait_for(4, Duration::from_secs(30)).await;
    for request in &requests[2..] {
        assert_eq!(request.header("traceparent"), None);
    }
    for attempt in attempts_of(&hr, "untraced").await {
        assert_eq!(attempt.trace_id, "");
    }
}
