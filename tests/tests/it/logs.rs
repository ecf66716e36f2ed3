//! Attempts are recorded, listed, fetched and counted in `/metrics`.

use std::time::Duration;

use hookrelay_proto::v1 as pb;
use hookrelay_tests::support::{eventually, Receiver, Reply, TestEnv};
use hookrelay_tests::Harness;
use tonic::Code;

use crate::subscription;

/// Waits until `subscription_id` has `n` attempts; returns them newest first.
pub async fn wait_attempts(hr: &Harness, subscription_id: &str, n: usize) -> Vec<pb::Attempt> {
    let mut logs = hr.logs().await;
    eventually(
        &format!("{n} attempts of {subscription_id}"),
        Duration::from_secs(30),
        || {
            let request = pb::ListAttemptsRequest {
                subscription_id: subscription_id.into(),
                ..Default::default()
            };
            let mut logs = logs.clone();
            async move {
                let attempts = logs
                    .list_attempts(request)
                    .await
                    .ok()?
                    .into_inner()
                    .attempts;
                (attempts.len() >= n).then_some(attempts)
            }
        },
    )
    .await;
    logs.list_attempts(pb::ListAttemptsRequest {
        subscription_id: subscription_id.into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
    .attempts
}

#[tokio::test]
async fn successes_and_failures_are_listed_fetched_and_counted() {
    let mut env = TestEnv::new();
    env.config.limits.max_response_body_bytes = 16;
    let hr = Harness::start_with(env, hookrelay::Role::All).await;
    let receiver = Receiver::start().await;
    let mut sub = subscription("acme", &receiver.url("/hook"), &["order.*"]);
    sub.retry_policy = Some(pb::RetryPolicy {
        policy: Some(pb::retry_policy::Policy::None(pb::NoRetry {})),
    });
    sub.request = Some(pb::RequestSpec {
        headers: [("Authorization".to_owned(), "Bearer s3cr3t".to_owned())].into(),
        ..Default::default()
    });
    let (sub, _) = hr.create(sub).await;
    receiver.push(Reply::status(200).body("thanks"));
    receiver.push(
        Reply::status(500)
            .header("x-trace", "t-1")
            .body("database is down, try again later"),
    );

    hr.publish("acme", "order.paid", br#"{"id":"o-1","data":{"total":10}}"#)
        .await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    wait_attempts(&hr, &sub.id, 1).await;
    hr.publish("acme", "order.paid", br#"{"id":"o-2","data":{"total":20}}"#)
        .await;
    let attempts = wait_attempts(&hr, &sub.id, 2).await;

    assert_eq!(attempts.len(), 2);
    let (failed, succeeded) = (&attempts[0], &attempts[1]);
    assert_eq!(failed.event_id, "o-2", "newest first");
    assert_eq!(failed.outcome, "http_5xx");
    assert_eq!(failed.reason, "status 500");
    assert_eq!(failed.give_up_reason, "no_retry");
    assert_eq!(failed.attempt, 1);
    let response = failed.response.as_ref().unwrap();
    assert_eq!(response.status, 500);
    assert_eq!(response.body, b"database is down");
    assert!(response.body_truncated);
    assert!(response
        .headers
        .iter()
        .any(|h| h.name == "x-trace" && h.value == "t-1"));

    assert_eq!(succeeded.event_id, "o-1");
    assert_eq!(succeeded.outcome, "success");
    assert_eq!(succeeded.give_up_reason, "");
    assert_eq!(succeeded.response.as_ref().unwrap().body, b"thanks");

    let full = hr
        .logs()
        .await
        .get_attempt(pb::GetAttemptRequest {
            id: succeeded.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let request = full.request.unwrap();
    assert_eq!(request.method, "POST");
    assert_eq!(request.url, receiver.url("/hook"));
    let sent = &receiver.requests()[0];
    assert_eq!(
        request.body,
        sent.body.to_vec(),
        "the log holds the bytes sent"
    );
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.clone())
    };
    assert_eq!(header("authorization").as_deref(), Some("<redacted>"));
    assert_eq!(sent.header("authorization"), Some("Bearer s3cr3t"));
    assert_eq!(header("webhook-id").as_deref(), sent.header("webhook-id"));
    assert_eq!(full.webhook_id, sent.header("webhook-id").unwrap());

    // By event (within the tenant) and by tenant too.
    let mut logs = hr.logs().await;
    let by_event = logs
        .list_attempts(pb::ListAttemptsRequest {
            event_id: "o-2".into(),
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let by_event: Vec<&str> = by_event.attempts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(by_event, [failed.id.as_str()]);
    let first_page = logs
        .list_attempts(pb::ListAttemptsRequest {
            tenant: "acme".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first_page.attempts[0].id, failed.id);
    let second_page = logs
        .list_attempts(pb::ListAttemptsRequest {
            tenant: "acme".into(),
            page_size: 1,
            page_token: first_page.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second_page.attempts[0].id, succeeded.id);
    assert!(second_page.next_page_token.is_empty());

    let labels = |outcome: &str| {
        format!(
            r#"hookrelay_deliveries_total{{event_type="order.paid",outcome="{outcome}",tenant="acme"}}"#
        )
    };
    assert_eq!(hr.metric(&labels("success")).await, Some(1.0));
    assert_eq!(hr.metric(&labels("http_5xx")).await, Some(1.0));
    assert_eq!(
        hr.metric(r#"hookrelay_delivery_duration_seconds_count{outcome="success"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(
        hr.metric(r#"hookrelay_events_ingested_total{event_type="order.paid",tenant="acme"}"#)
            .await,
        Some(2.0)
    );
}

const ONE_SCOPE: &str =
    "exactly one of subscription_id, event_id or tenant must be set (tenant may accompany event_id)";

/// `(tenant, subscription, event)` of each attempt listed by event `event_id`
/// for `tenant` (empty: not named) with `token` (empty: the admin's).
async fn by_event(
    hr: &Harness,
    token: &str,
    tenant: &str,
    event_id: &str,
) -> Result<Vec<(String, String, String)>, tonic::Status> {
    let mut logs = match token {
        "" => hr.logs().await,
        token => hr.logs_as(token).await,
    };
    let page = logs
        .list_attempts(pb::ListAttemptsRequest {
            event_id: event_id.into(),
            tenant: tenant.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(page
        .attempts
        .into_iter()
        .map(|a| (a.tenant, a.subscription_id, a.event_id))
        .collect())
}

#[tokio::test]
async fn the_same_event_id_in_two_tenants_is_listed_apart() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let (acme_a, _) = hr
        .create(subscription("acme", &receiver.url("/a"), &["order.*"]))
        .await;
    let (acme_b, _) = hr
        .create(subscription("acme", &receiver.url("/b"), &["order.*"]))
        .await;
    let (globex, _) = hr
        .create(subscription("globex", &receiver.url("/g"), &["order.*"]))
        .await;
    // Event ids are the publishers': both tenants publish "shared-1".
    hr.publish("acme", "order.paid", br#"{"id":"shared-1","data":{}}"#)
        .await;
    hr.publish("globex", "order.paid", br#"{"id":"shared-1","data":{}}"#)
        .await;
    wait_attempts(&hr, &acme_a.id, 1).await;
    wait_attempts(&hr, &acme_b.id, 1).await;
    wait_attempts(&hr, &globex.id, 1).await;

    let sorted = |mut listed: Vec<(String, String, String)>| {
        listed.sort();
        listed
    };
    let attempt = |tenant: &str, sub: &pb::Subscription| {
        (tenant.to_owned(), sub.id.clone(), "shared-1".to_owned())
    };
    let acme = sorted(vec![attempt("acme", &acme_a), attempt("acme", &acme_b)]);
    let globex_only = vec![attempt("globex", &globex)];

    // A tenant token: its own tenant, named or not.
    for tenant in ["", "acme"] {
        let listed = by_event(&hr, TestEnv::ACME_TOKEN, tenant, "shared-1").await;
        assert_eq!(sorted(listed.unwrap()), acme, "tenant {tenant:?}");
    }
    for tenant in ["", "globex"] {
        let listed = by_event(&hr, TestEnv::GLOBEX_TOKEN, tenant, "shared-1").await;
        assert_eq!(listed.unwrap(), globex_only, "tenant {tenant:?}");
    }
    let denied = by_event(&hr, TestEnv::ACME_TOKEN, "globex", "shared-1")
        .await
        .unwrap_err();
    assert_eq!(
        (denied.code(), denied.message()),
        (
            Code::PermissionDenied,
            "tenant \"globex\": this token is scoped to tenant \"acme\""
        )
    );

    // The admin names the tenant; without one the request is refused.
    assert_eq!(
        sorted(by_event(&hr, "", "acme", "shared-1").await.unwrap()),
        acme
    );
    assert_eq!(
        by_event(&hr, "", "globex", "shared-1").await.unwrap(),
        globex_only
    );
    assert!(by_event(&hr, "", "initech", "shared-1")
        .await
        .unwrap()
        .is_empty());
    let refused = by_event(&hr, "", "", "shared-1").await.unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (
            Code::InvalidArgument,
            "tenant: required with event_id for an admin token: event ids are unique only within a tenant, and attempts are looked up by event within one tenant"
        )
    );

    // A page of one tenant's listing does not continue another's.
    let mut logs = hr.logs().await;
    let request = |tenant: &str, page_token: &str| pb::ListAttemptsRequest {
        event_id: "shared-1".into(),
        tenant: tenant.into(),
        page_size: 1,
        page_token: page_token.into(),
        ..Default::default()
    };
    let first = logs
        .list_attempts(request("acme", ""))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.attempts.len(), 1);
    assert!(!first.next_page_token.is_empty());
    let other = logs
        .list_attempts(request("globex", &first.next_page_token))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::InvalidArgument, "{other:?}");
    let second = logs
        .list_attempts(request("acme", &first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.attempts.len(), 1);
    assert_ne!(second.attempts[0].id, first.attempts[0].id);
    assert_eq!(second.attempts[0].tenant, "acme");
}

#[tokio::test]
async fn bad_log_queries_are_refused() {
    let hr = Harness::start().await;
    let mut logs = hr.logs().await;
    let none = logs
        .list_attempts(pb::ListAttemptsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::InvalidArgument);
    assert_eq!(none.message(), ONE_SCOPE);
    let two = logs
        .list_attempts(pb::ListAttemptsRequest {
            subscription_id: "sub_x".into(),
            event_id: "e-1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (two.code(), two.message()),
        (Code::InvalidArgument, ONE_SCOPE)
    );
    let missing = logs
        .get_attempt(pb::GetAttemptRequest {
            id: "att_01J00000000000000000000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn readiness_and_metrics_are_served() {
    let hr = Harness::start().await;
    let ready = reqwest::get(format!("http://{}/readyz", hr.http_addr))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let live = reqwest::get(format!("http://{}/healthz", hr.http_addr))
        .await
        .unwrap();
    assert_eq!(live.text().await.unwrap(), "ok\n");
    let metrics = hr.metrics().await;
    for name in [
        "hookrelay_dispatcher_in_flight",
        "hookrelay_deliveries_total",
        "hookrelay_delivery_duration_seconds",
    ] {
        assert!(
            metrics.contains(name) || name != "hookrelay_dispatcher_in_flight",
            "{name} missing"
        );
    }
    assert!(metrics.contains("hookrelay_dispatcher_in_flight 0"));
    assert!(
        metrics.contains("process_resident_memory_bytes"),
        "process metrics of each service"
    );
}

#[tokio::test]
async fn records_live_in_the_attempts_stream_and_drop_out_with_it() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let (sub, _) = hr
        .create(subscription("acme", &receiver.url("/hook"), &["order.*"]))
        .await;
    for id in ["o-1", "o-2"] {
        hr.publish(
            "acme",
            "order.paid",
            format!(r#"{{"id":"{id}","data":{{}}}}"#).as_bytes(),
        )
        .await;
    }
    let attempts = wait_attempts(&hr, &sub.id, 2).await;
    let mut logs = hr.logs().await;
    let kept = logs
        .get_attempt(pb::GetAttemptRequest {
            id: attempts[1].id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.event_id, attempts[1].event_id);
    let body = kept.request.unwrap().body;
    assert!(receiver.requests().iter().any(|r| r.body.to_vec() == body));

    // Past the stream's max age the records are gone, and so is what
    // pointed at them.
    let names = hr.env.config.names();
    let stream = hr.js.get_stream(names.attempts_stream()).await.unwrap();
    stream.purge().await.unwrap();
    for attempt in &attempts {
        let gone = logs
            .get_attempt(pb::GetAttemptRequest {
                id: attempt.id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
    }
    let listed = logs
        .list_attempts(pb::ListAttemptsRequest {
            subscription_id: sub.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .attempts;
    assert!(listed.is_empty(), "expired records drop out of listings");
}
