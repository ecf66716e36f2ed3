//! Attempts are recorded, listed, fetched and counted in `/metrics`.

use std::time::Duration;

use hookrelay_proto::v1 as pb;
use hookrelay_tests::support::{eventually, Receiver, Reply, TestEnv};
use hookrelay_tests::Harness;
use tonic::Code;

use crate::subscription;

/// The tenant of subscription `id`, read from the subscriptions bucket (a
/// listing names its tenant; the helpers below are given only the id).
pub async fn tenant_of(hr: &Harness, id: &str) -> String {
    let bucket = hr
        .js
        .get_key_value(hr.env.config.names().subscriptions_bucket())
        .await
        .unwrap();
    let entry = bucket.get(id).await.unwrap().expect("the subscription");
    let subscription: serde_json::Value = serde_json::from_slice(&entry).unwrap();
    subscription["tenant"].as_str().unwrap().to_owned()
}

/// Waits until `subscription_id` has `n` attempts; returns them newest first.
pub async fn wait_attempts(hr: &Harness, subscription_id: &str, n: usize) -> Vec<pb::Attempt> {
    let tenant = tenant_of(hr, subscription_id).await;
    let request = pb::ListAttemptsRequest {
        tenant,
        subscription_id: subscription_id.into(),
        page_size: n.clamp(50, 1000) as u32,
        ..Default::default()
    };
    let logs = hr.logs().await;
    eventually(
        &format!("{n} attempts of {subscription_id}"),
        Duration::from_secs(30),
        || {
            let request = request.clone();
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
    .await
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
            tenant: "acme".into(),
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

/// What an admin token gets when it names no tenant.
const TENANT_REQUIRED: &str =
    "tenant: is required with an admin token (a tenant token may leave it empty)";

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
        (Code::InvalidArgument, TENANT_REQUIRED)
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
    let refused = |request: pb::ListAttemptsRequest| {
        let mut logs = logs.clone();
        async move {
            let status = logs.list_attempts(request).await.unwrap_err();
            (status.code(), status.message().to_owned())
        }
    };
    let invalid = |message: &str| (Code::InvalidArgument, message.to_owned());
    // An admin names the tenant, whatever else the request narrows to.
    for request in [
        pb::ListAttemptsRequest::default(),
        pb::ListAttemptsRequest {
            subscription_id: "sub_x".into(),
            event_id: "e-1".into(),
            ..Default::default()
        },
    ] {
        assert_eq!(refused(request).await, invalid(TENANT_REQUIRED));
    }
    assert_eq!(
        refused(pb::ListAttemptsRequest {
            tenant: "acme".into(),
            outcome: "5xx".into(),
            ..Default::default()
        })
        .await,
        invalid("outcome: \"5xx\" is not an outcome (one of success, http_other, http_4xx, http_5xx, redirect, timeout, connect_error, dns_error, tls_error, blocked, disabled, error)")
    );
    let at = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
    assert_eq!(
        refused(pb::ListAttemptsRequest {
            tenant: "acme".into(),
            since: at(1_800_000_000),
            until: at(1_800_000_000),
            ..Default::default()
        })
        .await,
        invalid("until: must be after since (the window is [since, until))")
    );
    assert_eq!(
        refused(pb::ListAttemptsRequest {
            tenant: "acme".into(),
            subscription_id: "sub_x".into(),
            event_id: "e-1".into(),
            ..Default::default()
        })
        .await,
        (Code::NotFound, "subscription sub_x not found".to_owned())
    );
    let missing = logs
        .get_attempt(pb::GetAttemptRequest {
            tenant: "acme".into(),
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
            tenant: "acme".into(),
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
                tenant: "acme".into(),
                id: attempt.id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
    }
    let listed = logs
        .list_attempts(pb::ListAttemptsRequest {
            tenant: "acme".into(),
            subscription_id: sub.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .attempts;
    assert!(listed.is_empty(), "expired records drop out of listings");
}

/// Every page of `request`'s listing, until its token runs out; the size of
/// each page too.
async fn every_page(
    hr: &Harness,
    request: pb::ListAttemptsRequest,
) -> (Vec<pb::Attempt>, Vec<usize>) {
    let mut logs = hr.logs().await;
    let (mut listed, mut sizes) = (Vec::new(), Vec::new());
    let mut page_token = String::new();
    for _ in 0..500 {
        let page = logs
            .list_attempts(pb::ListAttemptsRequest {
                page_token: page_token.clone(),
                ..request.clone()
            })
            .await
            .unwrap()
            .into_inner();
        let page_size = match request.page_size {
            0 => 50,
            n => n as usize,
        };
        assert!(page.attempts.len() <= page_size);
        sizes.push(page.attempts.len());
        listed.extend(page.attempts);
        if page.next_page_token.is_empty() {
            return (listed, sizes);
        }
        page_token = page.next_page_token;
    }
    panic!("the listing did not end");
}

#[tokio::test]
async fn subscription_event_outcome_and_time_filters_combine() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    // evt-target fails twice at /a and is then delivered; everything else
    // is answered 200 at once.
    receiver.respond_with(|request, earlier| {
        let target = |r: &hookrelay_tests::support::Recorded| {
            r.path == "/a" && r.body_str().contains("\"target\"")
        };
        if target(request) && earlier.iter().filter(|r| target(r)).count() < 2 {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    });
    let mut a = subscription("acme", &receiver.url("/a"), &["order.*"]);
    a.retry_policy = crate::retries::schedule(&[50, 50]);
    let (a, _) = hr.create(a).await;
    let (b, _) = hr
        .create(subscription("acme", &receiver.url("/b"), &["order.*"]))
        .await;
    let (g, _) = hr
        .create(subscription("globex", &receiver.url("/g"), &["order.*"]))
        .await;
    for (tenant, id, mark) in [
        ("acme", "evt-1", "other"),
        ("acme", "evt-target", "target"),
        ("acme", "evt-2", "other"),
        ("globex", "evt-target", "other"),
    ] {
        let body = format!(r#"{{"id":"{id}","data":{{"mark":"{mark}"}}}}"#);
        hr.publish(tenant, "order.paid", body.as_bytes()).await;
    }
    wait_attempts(&hr, &a.id, 5).await;
    wait_attempts(&hr, &b.id, 3).await;
    wait_attempts(&hr, &g.id, 1).await;

    let list = |request: pb::ListAttemptsRequest| {
        let hr = &hr;
        async move {
            let (attempts, _) = every_page(hr, request).await;
            attempts
        }
    };
    let chain_request = pb::ListAttemptsRequest {
        tenant: "acme".into(),
        subscription_id: a.id.clone(),
        event_id: "evt-target".into(),
        ..Default::default()
    };
    let chain = list(chain_request.clone()).await;
    let seen: Vec<(&str, &str, u32, &str, u32)> = chain
        .iter()
        .map(|a| {
            (
                a.subscription_id.as_str(),
                a.event_id.as_str(),
                a.attempt,
                a.outcome.as_str(),
                a.status,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (a.id.as_str(), "evt-target", 3, "success", 200),
            (a.id.as_str(), "evt-target", 2, "http_5xx", 500),
            (a.id.as_str(), "evt-target", 1, "http_5xx", 500),
        ],
        "the attempt chain of one event to one subscription, newest first"
    );
    // A tenant token asks the same without naming its tenant.
    let own = hr
        .logs_as(TestEnv::ACME_TOKEN)
        .await
        .list_attempts(pb::ListAttemptsRequest {
            tenant: String::new(),
            ..chain_request.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        own.attempts.iter().map(|a| &a.id).collect::<Vec<_>>(),
        chain.iter().map(|a| &a.id).collect::<Vec<_>>()
    );

    // + outcome.
    let failed = list(pb::ListAttemptsRequest {
        outcome: "http_5xx".into(),
        ..chain_request.clone()
    })
    .await;
    assert_eq!(failed.iter().map(|a| a.attempt).collect::<Vec<_>>(), [2, 1]);
    // + a window from the second attempt's start to the third's: the
    // second only.
    let window = list(pb::ListAttemptsRequest {
        since: chain[1].started_at,
        until: chain[0].started_at,
        ..chain_request.clone()
    })
    .await;
    assert_eq!(window.iter().map(|a| a.attempt).collect::<Vec<_>>(), [2]);
    let none = list(pb::ListAttemptsRequest {
        outcome: "timeout".into(),
        ..chain_request.clone()
    })
    .await;
    assert!(none.is_empty());

    // The event to every subscription of the tenant; the other tenant's
    // evt-target is not acme's.
    let event = list(pb::ListAttemptsRequest {
        tenant: "acme".into(),
        event_id: "evt-target".into(),
        ..Default::default()
    })
    .await;
    let mut subs: Vec<&str> = event.iter().map(|a| a.subscription_id.as_str()).collect();
    subs.sort();
    let mut expected = vec![a.id.as_str(), a.id.as_str(), a.id.as_str(), b.id.as_str()];
    expected.sort();
    assert_eq!(subs, expected);
    let globex = list(pb::ListAttemptsRequest {
        tenant: "globex".into(),
        event_id: "evt-target".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(
        globex
            .iter()
            .map(|a| a.subscription_id.as_str())
            .collect::<Vec<_>>(),
        [g.id.as_str()]
    );
    // Another tenant's subscription is not found within acme.
    let status = hr
        .logs()
        .await
        .list_attempts(pb::ListAttemptsRequest {
            subscription_id: g.id.clone(),
            ..chain_request.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message().to_owned()),
        (Code::NotFound, format!("subscription {} not found", g.id))
    );
    let status = hr
        .logs_as(TestEnv::ACME_TOKEN)
        .await
        .list_attempts(pb::ListAttemptsRequest {
            tenant: "globex".into(),
            subscription_id: g.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn pages_of_a_sparse_filter_reach_every_match_once() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    // evt-wide goes to `a` and to 45 other subscriptions; then 45 other
    // events go to `a` only. Asked for `a` and evt-wide a page of one at a
    // time, a call reads at most 40 records: more than that of other
    // events sit before the match.
    let (a, _) = hr
        .create(subscription("acme", &receiver.url("/a"), &["*"]))
        .await;
    let mut wide = Vec::new();
    for n in 0..45 {
        let path = format!("/w{n}");
        wide.push(
            hr.create(subscription("acme", &receiver.url(&path), &["wide.*"]))
                .await
                .0,
        );
    }
    hr.publish("acme", "wide.sent", br#"{"id":"evt-wide","data":{}}"#)
        .await;
    // Recorded before the others (a wide fan-out goes through DELIVERIES,
    // a narrow one straight to the dispatcher, which could overtake it).
    wait_attempts(&hr, &a.id, 1).await;
    for n in 0..45 {
        let body = format!(r#"{{"id":"evt-{n}","data":{{}}}}"#);
        hr.publish("acme", "other.sent", body.as_bytes()).await;
    }
    receiver
        .wait_for(45 + 1 + 45, Duration::from_secs(30))
        .await;
    wait_attempts(&hr, &a.id, 46).await;
    for sub in &wide {
        wait_attempts(&hr, &sub.id, 1).await;
    }

    let sparse = pb::ListAttemptsRequest {
        tenant: "acme".into(),
        subscription_id: a.id.clone(),
        event_id: "evt-wide".into(),
        page_size: 1,
        ..Default::default()
    };
    let first = hr
        .logs()
        .await
        .list_attempts(sparse.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(
        first.attempts.is_empty() && !first.next_page_token.is_empty(),
        "a call that read its budget answers with none yet and a token: {first:?}"
    );
    let (listed, sizes) = every_page(&hr, sparse.clone()).await;
    assert_eq!(
        listed
            .iter()
            .map(|a| (a.subscription_id.as_str(), a.event_id.as_str()))
            .collect::<Vec<_>>(),
        [(a.id.as_str(), "evt-wide")]
    );
    assert!(sizes.len() >= 2, "{sizes:?}");

    // The event's own attempts, to 46 subscriptions, a page of one at a
    // time: each once.
    let (listed, _) = every_page(
        &hr,
        pb::ListAttemptsRequest {
            tenant: "acme".into(),
            event_id: "evt-wide".into(),
            outcome: "success".into(),
            page_size: 1,
            ..Default::default()
        },
    )
    .await;
    let ids: std::collections::HashSet<&str> = listed.iter().map(|a| a.id.as_str()).collect();
    assert_eq!((listed.len(), ids.len()), (46, 46));

    // A token continues only the listing that issued it.
    let mut logs = hr.logs().await;
    for other in [
        pb::ListAttemptsRequest {
            outcome: "success".into(),
            ..sparse.clone()
        },
        pb::ListAttemptsRequest {
            event_id: "evt-1".into(),
            ..sparse.clone()
        },
        pb::ListAttemptsRequest {
            subscription_id: String::new(),
            ..sparse.clone()
        },
    ] {
        let status = logs
            .list_attempts(pb::ListAttemptsRequest {
                page_token: first.next_page_token.clone(),
                ..other
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status.message().starts_with("page_token: "),
            "{}",
            status.message()
        );
    }
}

#[tokio::test]
async fn an_attempt_says_its_status_or_its_error() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::status(500).body("down"));
    let mut answered = subscription("acme", &receiver.url("/down"), &["order.*"]);
    answered.retry_policy = crate::retries::no_retry();
    let (answered, _) = hr.create(answered).await;
    // Nothing listens there: the connection is refused.
    let closed = format!(
        "http://127.0.0.1:{}/closed",
        hookrelay_tests::support::servers::free_port()
    );
    let mut refused = subscription("acme", &closed, &["order.*"]);
    refused.retry_policy = crate::retries::no_retry();
    let (refused, _) = hr.create(refused).await;
    hr.publish("acme", "order.paid", br#"{"id":"o-1","data":{}}"#)
        .await;

    let failed = wait_attempts(&hr, &answered.id, 1).await.remove(0);
    assert_eq!(
        (
            failed.outcome.as_str(),
            failed.status,
            failed.error.as_str()
        ),
        ("http_5xx", 500, "")
    );
    assert_eq!(failed.reason, "status 500");
    assert_eq!(failed.response.as_ref().map(|r| r.status), Some(500));

    let unanswered = wait_attempts(&hr, &refused.id, 1).await.remove(0);
    assert_eq!(
        (unanswered.outcome.as_str(), unanswered.status),
        ("connect_error", 0)
    );
    assert!(unanswered.response.is_none());
    assert!(
        unanswered.error.contains("Connection refused") && unanswered.error.contains("/closed"),
        "{}",
        unanswered.error
    );
    assert_eq!(unanswered.reason, unanswered.error, "nothing more to say");

    // The outcome filter sees the same.
    let by_outcome = hr
        .logs()
        .await
        .list_attempts(pb::ListAttemptsRequest {
            tenant: "acme".into(),
            event_id: "o-1".into(),
            outcome: "connect_error".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .attempts;
    assert_eq!(
        by_outcome
            .iter()
            .map(|a| (a.id.as_str(), a.status, a.error.as_str()))
            .collect::<Vec<_>>(),
        [(unanswered.id.as_str(), 0, unanswered.error.as_str())]
    );
}
