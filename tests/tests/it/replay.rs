//! The log service as the place to answer "what happened to my webhook?":
//! filtered listings, the failures page, replay, events, health, metrics.

use std::time::Duration;

use hookrelay_proto::v1 as pb;
use hookrelay_tests::support::{eventually, Receiver, Reply, TestEnv};
use hookrelay_tests::Harness;
use pb::retry_policy::Policy;

use crate::logs::wait_attempts;
use crate::subscription;

const WAIT: Duration = Duration::from_secs(10);

fn no_retry(mut sub: pb::Subscription) -> pb::Subscription {
    sub.retry_policy = Some(pb::RetryPolicy {
        policy: Some(Policy::None(pb::NoRetry {})),
    });
    sub
}

fn ts(at: chrono::DateTime<chrono::Utc>) -> Option<prost_types::Timestamp> {
    Some(hookrelay_proto::timestamp(at))
}

#[tokio::test]
async fn failures_replay_and_health_after_a_known_mix() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    // e-1 succeeds, e-2 and e-3 fail for good (no retries), e-4 succeeds.
    receiver.respond_with(|request, _| {
        if request.body_str().contains("\"fail\":true") {
            Reply::status(500).body("down")
        } else {
            Reply::status(200)
        }
    });
    let (sub, _) = hr
        .create(no_retry(subscription(
            "acme",
            &receiver.url("/orders"),
            &["order.*"],
        )))
        .await;
    let before = chrono::Utc::now();
    for (id, fail) in [("e-1", false), ("e-2", true), ("e-3", true)] {
        let body = format!(r#"{{"id":"{id}","data":{{"fail":{fail}}}}}"#);
        hr.publish("acme", "order.paid", body.as_bytes()).await;
    }
    wait_attempts(&hr, &sub.id, 3).await;
    // Deliveries run concurrently; e-4 goes last so it is the latest outcome.
    hr.publish(
        "acme",
        "order.paid",
        br#"{"id":"e-4","data":{"fail":false}}"#,
    )
    .await;
    wait_attempts(&hr, &sub.id, 4).await;
    let mut logs = hr.logs().await;

    // Filters: by outcome, by time.
    let failed = logs
        .list_attempts(pb::ListAttemptsRequest {
            tenant: "acme".into(),
            subscription_id: sub.id.clone(),
            outcome: "http_5xx".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Deliveries run concurrently: compare as sets.
    let mut ids: Vec<&str> = failed
        .attempts
        .iter()
        .map(|a| a.event_id.as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["e-2", "e-3"]);
    let none_yet = logs
        .list_attempts(pb::ListAttemptsRequest {
            tenant: "acme".into(),
            until: ts(before - chrono::Duration::seconds(1)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none_yet.attempts.is_empty());

    // The tenant's error page: what gave up, with status and message.
    let page = logs
        .list_failures(pb::ListFailuresRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut errors: Vec<(&str, u32, &str, &str)> = page
        .attempts
        .iter()
        .map(|a| {
            let response = a.response.as_ref().unwrap();
            (
                a.event_id.as_str(),
                response.status,
                a.reason.as_str(),
                a.give_up_reason.as_str(),
            )
        })
        .collect();
    errors.sort();
    assert_eq!(
        errors,
        [
            ("e-2", 500, "status 500", "no_retry"),
            ("e-3", 500, "status 500", "no_retry")
        ]
    );

    // Health after e-4 succeeded: healthy, 2 of 4 recent attempts good.
    let health = logs
        .get_subscription_health(pb::GetSubscriptionHealthRequest {
            tenant: "acme".into(),
            subscription_id: sub.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.state, "healthy");
    assert_eq!(
        (health.recent_attempts, health.consecutive_failures),
        (4, 0)
    );
    assert!((health.success_rate - 0.5).abs() < 1e-9);
    assert!(health.last_success_at.is_some() && health.last_failure_at.is_some());

    // The receiver is fixed: recover everything that failed since before.
    receiver.respond_with(|_, _| Reply::status(200));
    let recovered = logs
        .recover_failed(pb::RecoverFailedRequest {
            tenant: "acme".into(),
            subscription_id: sub.id.clone(),
            since: ts(before),
            until: None,
        })
        .await
        .unwrap()
        .into_inner();
    let mut recovered = recovered.event_ids;
    recovered.sort();
    assert_eq!(recovered, ["e-2", "e-3"]);
    let attempts = wait_attempts(&hr, &sub.id, 6).await;
    let replays: Vec<(&str, &str, bool)> = attempts
        .iter()
        .filter(|a| a.redelivery)
        .map(|a| (a.event_id.as_str(), a.outcome.as_str(), a.redelivery))
        .collect();
    assert_eq!(replays.len(), 2, "{replays:?}");
    assert!(replays.iter().all(|(_, outcome, _)| *outcome == "success"));
    let originals: Vec<&pb::Attempt> = attempts.iter().filter(|a| a.event_id == "e-2").collect();
    assert_eq!(originals.len(), 2);
    assert_eq!(
        originals[0].webhook_id, originals[1].webhook_id,
        "a replay keeps the webhook-id"
    );

    // Redeliver one event on request.
    let response = logs
        .redeliver(pb::RedeliverRequest {
            tenant: "acme".into(),
            event_id: "e-1".into(),
            subscription_id: sub.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let sent = receiver.wait_for(7, WAIT).await.remove(6);
    assert_eq!(
        sent.header("webhook-id"),
        Some(response.webhook_id.as_str())
    );
    assert!(sent.body_str().contains(r#""fail":false"#));
    let missing = logs
        .redeliver(pb::RedeliverRequest {
            tenant: "acme".into(),
            event_id: "e-404".into(),
            subscription_id: sub.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    // Counters match what happened.
    let count = |outcome: &str| {
        format!(
            r#"hookrelay_deliveries_total{{event_type="order.paid",outcome="{outcome}",tenant="acme"}}"#
        )
    };
    let hr = &hr;
    eventually("metrics to count every attempt", WAIT, || async move {
        (hr.metric(&count("success")).await == Some(5.0)
            && hr.metric(&count("http_5xx")).await == Some(2.0))
        .then_some(())
    })
    .await;
    eventually("fleet gauges", WAIT, || async move {
        let healthy = hr
            .metric(r#"hookrelay_subscriptions{state="healthy"}"#)
            .await;
        let pending = hr
            .metric(r#"hookrelay_consumer_pending{stream="deliveries"}"#)
            .await;
        (healthy == Some(1.0) && pending == Some(0.0)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn failing_subscriptions_say_so() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(503));
    let (sub, _) = hr
        .create(no_retry(subscription("acme", &receiver.url("/x"), &["*"])))
        .await;
    for n in 0..3 {
        hr.publish(
            "acme",
            "ping",
            format!(r#"{{"data":{{"n":{n}}}}}"#).as_bytes(),
        )
        .await;
    }
    wait_attempts(&hr, &sub.id, 3).await;
    let health = hr
        .logs()
        .await
        .get_subscription_health(pb::GetSubscriptionHealthRequest {
            tenant: "acme".into(),
            subscription_id: sub.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (health.state.as_str(), health.consecutive_failures),
        ("failing", 3)
    );
    assert_eq!(health.success_rate, 0.0);
}

#[tokio::test]
async fn events_are_listed_by_tenant_type_and_page() {
    let hr = Harness::start().await;
    for n in 0..5 {
        hr.publish(
            "acme",
            "user.created",
            format!(r#"{{"id":"u-{n}","data":{{"n":{n}}}}}"#).as_bytes(),
        )
        .await;
    }
    hr.publish("acme", "order.paid", br#"{"id":"o-1","data":{}}"#)
        .await;
    hr.publish("other", "user.created", br#"{"id":"x-1","data":{}}"#)
        .await;
    let mut logs = hr.logs().await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = logs
            .list_events(pb::ListEventsRequest {
                tenant: "acme".into(),
                event_type: "user.*".into(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.events.len() <= 2);
        seen.extend(page.events.iter().map(|e| e.id.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ["u-0", "u-1", "u-2", "u-3", "u-4"]);
    let all = logs
        .list_events(pb::ListEventsRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.events.len(), 6);
    assert_eq!(all.events[5].data, br#"{}"#);
    let bad = logs
        .list_events(pb::ListEventsRequest {
            tenant: "a b".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn redeliver_sends_the_event_of_the_subscriptions_tenant_and_only_to_it() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let (acme, _) = hr
        .create(subscription("acme", &receiver.url("/acme"), &["order.*"]))
        .await;
    let (globex, _) = hr
        .create(subscription(
            "globex",
            &receiver.url("/globex"),
            &["order.*"],
        ))
        .await;
    // The same event id in both tenants, with different data.
    hr.publish(
        "acme",
        "order.paid",
        br#"{"id":"shared-1","data":{"who":"acme"}}"#,
    )
    .await;
    hr.publish(
        "globex",
        "order.paid",
        br#"{"id":"shared-1","data":{"who":"globex"}}"#,
    )
    .await;
    hr.publish(
        "globex",
        "order.paid",
        br#"{"id":"globex-only","data":{"who":"globex"}}"#,
    )
    .await;
    wait_attempts(&hr, &acme.id, 1).await;
    wait_attempts(&hr, &globex.id, 2).await;
    let redeliver = |token: &'static str, event_id: &str, subscription_id: &str| {
        // A tenant token's own tenant; the admin acts on acme's.
        let request = pb::RedeliverRequest {
            tenant: if token.is_empty() { "acme" } else { "" }.into(),
            event_id: event_id.into(),
            subscription_id: subscription_id.into(),
        };
        let hr = &hr;
        async move {
            let mut logs = match token {
                "" => hr.logs().await,
                token => hr.logs_as(token).await,
            };
            logs.redeliver(request)
                .await
                .map(|r| r.into_inner().webhook_id)
        }
    };

    // Another tenant's subscription is not found, whatever the event.
    for (token, event_id, subscription_id) in [
        (TestEnv::GLOBEX_TOKEN, "shared-1", &acme.id),
        (TestEnv::ACME_TOKEN, "shared-1", &globex.id),
        (TestEnv::ACME_TOKEN, "globex-only", &globex.id),
    ] {
        let refused = redeliver(token, event_id, subscription_id)
            .await
            .unwrap_err();
        assert_eq!(
            (refused.code(), refused.message().to_owned()),
            (
                tonic::Code::NotFound,
                format!("subscription {subscription_id} not found")
            )
        );
    }
    // An event only another tenant published is not found for one's own.
    let missing = redeliver(TestEnv::ACME_TOKEN, "globex-only", &acme.id)
        .await
        .unwrap_err();
    assert_eq!(
        (missing.code(), missing.message().to_owned()),
        (
            tonic::Code::NotFound,
            format!(
                "no attempt of event globex-only to subscription {} (or older than the retention)",
                acme.id
            )
        )
    );

    // Each tenant's own redelivery sends its own event, to its own endpoint.
    let globex_webhook = redeliver(TestEnv::GLOBEX_TOKEN, "shared-1", &globex.id)
        .await
        .unwrap();
    let acme_webhook = redeliver("", "shared-1", &acme.id).await.unwrap();
    receiver.wait_for(5, WAIT).await;
    for (path, who, webhook_id) in [
        ("/globex", "globex", &globex_webhook),
        ("/acme", "acme", &acme_webhook),
    ] {
        let sent: Vec<_> = receiver
            .requests_to(path)
            .into_iter()
            .filter(|r| r.header("webhook-id") == Some(webhook_id.as_str()))
            .collect();
        assert_eq!(sent.len(), 2, "{path}: the original and the redelivery");
        assert!(
            sent.iter()
                .all(|r| r.body_str().contains(&format!(r#""who":"{who}""#))),
            "{path}"
        );
    }
    for (sub, n) in [(&globex, 3), (&acme, 2)] {
        let attempts = wait_attempts(&hr, &sub.id, n).await;
        assert_eq!(attempts.len(), n, "{}", sub.tenant);
        assert_eq!(
            (attempts[0].event_id.as_str(), attempts[0].redelivery),
            ("shared-1", true)
        );
    }
    // The refused redeliveries sent nothing.
    assert_eq!(receiver.requests().len(), 5);
}
