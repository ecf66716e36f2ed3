//! Bad input, SSRF, tenants and tokens, secret rotation. No connection ever
//! leaves loopback: names resolve from a test table, and anything that got
//! past the guard would be recorded instead of dialed.

use std::time::Duration;

use hookrelay::Role;
use hookrelay_proto::v1 as pb;
use hookrelay_tests::support::{Receiver, TestEnv};
use hookrelay_tests::{Harness, TestNet};
use tonic::Code;

use crate::signature::verify;
use crate::subscription;

const WAIT: Duration = Duration::from_secs(10);

/// Loopback is allowed only at 127.0.0.2, where the receivers listen, so
/// 127.0.0.1 stands for "a loopback address nobody allowed".
async fn guarded() -> (Harness, TestNet) {
    let mut env = TestEnv::new();
    env.config.dispatcher.allow_private = vec!["127.0.0.2/32".into()];
    env.config.limits.max_event_bytes = 64 * 1024;
    let net = TestNet::default();
    net.set("internal.test", &["10.0.0.1"]);
    net.set("metadata.test", &["169.254.169.254"]);
    net.set("mixed.test", &["fd00::1", "192.168.0.7"]);
    net.set("receiver.test", &["127.0.0.2"]);
    let hr = Harness::start_net(env, &[Role::All], net.net()).await;
    (hr, net)
}

#[tokio::test]
async fn bad_inputs_get_clear_errors_and_good_traffic_still_flows() {
    let (hr, net) = guarded().await;
    let ok = |url: &str| subscription("acme", url, &["*"]);
    let long_url = format!("https://example.test/{}", "a".repeat(3000));
    let many_headers = pb::RequestSpec {
        headers: (0..33)
            .map(|i| (format!("x-h{i}"), "v".to_owned()))
            .collect(),
        ..Default::default()
    };
    let big_template = pb::RequestSpec {
        envelope: pb::Envelope::Custom as i32,
        template: format!(r#"{{"a":"{}"}}"#, "x".repeat(70_000)),
        ..Default::default()
    };
    let cases: Vec<(pb::Subscription, Code, &str)> = vec![
        (ok("http://169.254.169.254/latest/meta-data"), Code::InvalidArgument, "subscription.url: destination blocked: 169.254.169.254 is a link-local (cloud metadata) address"),
        (ok("http://[::ffff:127.0.0.1]/"), Code::InvalidArgument, "subscription.url: destination blocked: 127.0.0.1 is a loopback address"),
        (ok("http://[::1]:8080/"), Code::InvalidArgument, "subscription.url: destination blocked: ::1 is a loopback address"),
        (ok("http://100.64.1.1/"), Code::InvalidArgument, "subscription.url: destination blocked: 100.64.1.1 is a CGNAT address"),
        (ok("http://internal.test/hook"), Code::InvalidArgument, "subscription.url: internal.test resolves to a refused address: destination blocked: 10.0.0.1 is a private address"),
        (ok("http://metadata.test/"), Code::InvalidArgument, "subscription.url: metadata.test resolves to a refused address: destination blocked: 169.254.169.254"),
        (ok("http://mixed.test/"), Code::InvalidArgument, "subscription.url: mixed.test resolves to a refused address: destination blocked: fd00::1 is a private (unique local) address"),
        (ok("http://nowhere.test/"), Code::InvalidArgument, "subscription.url: nowhere.test does not resolve"),
        (ok("gopher://example.test/"), Code::InvalidArgument, "subscription.url: scheme \"gopher\" is not http or https"),
        (ok(&long_url), Code::InvalidArgument, "subscription.url: at most 2048 bytes"),
        (pb::Subscription { request: Some(many_headers), ..ok("https://example.test/") }, Code::InvalidArgument, "subscription.request.headers: at most 32 headers"),
        (pb::Subscription { request: Some(big_template), ..ok("https://example.test/") }, Code::InvalidArgument, "subscription.request.template: at most 65536 bytes"),
        (pb::Subscription { event_types: vec!["a.>".into()], ..ok("https://example.test/") }, Code::InvalidArgument, "subscription.event_types[0]"),
    ];
    let mut client = hr.subscriptions().await;
    for (sub, code, message) in cases {
        let status = client
            .create_subscription(pb::CreateSubscriptionRequest {
                subscription: Some(sub),
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(
            status.message().starts_with(message),
            "{:?} !~ {message:?}",
            status.message()
        );
    }

    // Events: malformed bodies and subjects go to the DLQ with the reason.
    let names = hr.env.config.names();
    for (subject, body) in [
        (names.event_subject("acme", "x.y"), b"{oops".to_vec()),
        (names.event_subject("acme", "x.y"), vec![b' '; 100_000]),
        (
            format!("{}.events.acme", names.prefix()),
            br#"{"data":{}}"#.to_vec(),
        ),
    ] {
        hr.js
            .publish(subject, body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    // Good traffic still flows, by name and by address.
    let receiver = Receiver::start_on("127.0.0.2").await;
    let port = receiver
        .url("/")
        .split(':')
        .nth(2)
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    hr.create(ok(&format!("http://receiver.test:{port}/by-name")))
        .await;
    hr.create(ok(&receiver.url("/by-address"))).await;
    hr.publish("acme", "x.y", br#"{"data":{"good":true}}"#)
        .await;
    let requests = receiver.wait_for(2, WAIT).await;
    assert!(requests.iter().any(
        |r| r.path == "/by-name" && r.header("host") == Some(&format!("receiver.test:{port}"))
    ));
    assert!(requests.iter().any(|r| r.path == "/by-address"));

    let dlq = hr.js.get_stream(names.dlq_stream()).await.unwrap();
    let mut reasons = Vec::new();
    for seq in 1..=3 {
        let message = dlq.get_raw_message(seq).await.unwrap();
        reasons.push(
            message
                .headers
                .get("Hookrelay-Dlq-Reason")
                .unwrap()
                .as_str()
                .to_owned(),
        );
    }
    assert!(
        reasons[0].starts_with("body is not valid JSON"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("over the 65536 byte limit"),
        "{reasons:?}"
    );
    assert!(reasons[2].starts_with("subject"), "{reasons:?}");
    assert!(
        net.dialed_outside().is_empty(),
        "dialed outside loopback: {:?}",
        net.dialed_outside()
    );
}

#[tokio::test]
async fn a_name_that_changes_to_a_private_address_is_blocked_at_connect_time() {
    let (hr, net) = guarded().await;
    let receiver = Receiver::start_on("127.0.0.2").await;
    let port = receiver
        .url("/")
        .split(':')
        .nth(2)
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    net.set("shifty.test", &["127.0.0.2"]);
    let mut sub = subscription("acme", &format!("http://shifty.test:{port}/hook"), &["*"]);
    sub.retry_policy = Some(pb::RetryPolicy {
        policy: Some(pb::retry_policy::Policy::None(pb::NoRetry {})),
    });
    let (sub, _) = hr.create(sub).await;
    // DNS rebinding: after the check on save, the name points inside.
    net.set("shifty.test", &["10.0.0.1", "::ffff:192.168.1.1"]);
    hr.publish("acme", "x.y", br#"{"data":{}}"#).await;
    let attempt = crate::logs::wait_attempts(&hr, &sub.id, 1).await.remove(0);
    assert_eq!(attempt.outcome, "blocked");
    assert!(
        attempt
            .reason
            .contains("destination blocked: 10.0.0.1 is a private address"),
        "{}",
        attempt.reason
    );
    assert_eq!(attempt.give_up_reason, "no_retry");
    assert!(receiver.requests().is_empty());
    assert!(
        net.dialed_outside().is_empty(),
        "dialed outside loopback: {:?}",
        net.dialed_outside()
    );
}

/// Every RPC of `Subscriptions` and `DeliveryLogs`, called with acme's token
/// on globex's data, is refused without a trace of it; acme's own replies
/// hold nothing of globex's, even where both tenants use the same event id.
#[tokio::test]
async fn tenants_see_only_their_own_data_through_every_rpc() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let their_url = receiver.url("/g");
    let (theirs, _) = hr.create(subscription("globex", &their_url, &["*"])).await;
    hr.publish("globex", "x.y", br#"{"id":"g-1","data":{"who":"globex"}}"#)
        .await;
    let their_attempt = crate::logs::wait_attempts(&hr, &theirs.id, 1)
        .await
        .remove(0);

    let mut subs = hr.subscriptions_as(TestEnv::ACME_TOKEN).await;
    let mut logs = hr.logs_as(TestEnv::ACME_TOKEN).await;
    // Its own tenant works, and an empty tenant means its own.
    let mine = subs
        .create_subscription(pb::CreateSubscriptionRequest {
            subscription: Some(subscription("", &receiver.url("/a"), &["*"])),
        })
        .await
        .unwrap()
        .into_inner()
        .subscription
        .unwrap();
    assert_eq!(mine.tenant, "acme");

    // TailAttempts without a filter follows only acme's attempts: globex's
    // g-2, recorded between acme's two, never shows.
    let mut tailed = tail(&hr, TestEnv::ACME_TOKEN, "", "").await.unwrap();
    // The same event id as globex's.
    hr.publish("acme", "x.y", br#"{"id":"g-1","data":{"who":"acme"}}"#)
        .await;
    let my_attempt = crate::logs::wait_attempts(&hr, &mine.id, 1).await.remove(0);
    hr.publish("globex", "x.y", br#"{"id":"g-2","data":{"who":"globex"}}"#)
        .await;
    crate::logs::wait_attempts(&hr, &theirs.id, 2).await;
    hr.publish("acme", "x.y", br#"{"id":"a-2","data":{"who":"acme"}}"#)
        .await;
    let seen = [
        next_tailed(&mut tailed).await,
        next_tailed(&mut tailed).await,
    ]
    .map(|a| (a.tenant, a.subscription_id, a.event_id));
    assert_eq!(
        seen,
        [
            ("acme".to_owned(), mine.id.clone(), "g-1".to_owned()),
            ("acme".to_owned(), mine.id.clone(), "a-2".to_owned())
        ]
    );
    let my_attempts = crate::logs::wait_attempts(&hr, &mine.id, 2).await;

    // Nothing of globex's in a refusal: not its URL, not its attempts.
    let traceless = |rpc: &str, status: &tonic::Status| {
        for secret in [&their_url, &their_attempt.webhook_id, &their_attempt.id] {
            assert!(
                !status.message().contains(secret.as_str()),
                "{rpc}: {}",
                status.message()
            );
        }
    };
    let other = subscription("globex", &receiver.url("/x"), &["*"]);
    let created = subs
        .create_subscription(pb::CreateSubscriptionRequest {
            subscription: Some(other),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (created.code(), created.message()),
        (
            Code::PermissionDenied,
            "tenant \"globex\": this token is scoped to tenant \"acme\""
        )
    );

    // Naming globex's subscription: NOT_FOUND, as if it did not exist.
    let id = theirs.id.clone();
    let not_found = format!("subscription {id} not found");
    let mut taken_over = theirs.clone();
    taken_over.tenant = "acme".into();
    let checks: Vec<(&str, tonic::Status)> = vec![
        (
            "GetSubscription",
            subs.get_subscription(pb::GetSubscriptionRequest {
                id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "UpdateSubscription into its own tenant",
            subs.update_subscription(pb::UpdateSubscriptionRequest {
                subscription: Some(taken_over),
                expected_revision: theirs.revision,
            })
            .await
            .unwrap_err(),
        ),
        (
            "DeleteSubscription",
            subs.delete_subscription(pb::DeleteSubscriptionRequest {
                id: id.clone(),
                expected_revision: theirs.revision,
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "SendTestEvent",
            subs.send_test_event(pb::SendTestEventRequest {
                id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "RotateSecret",
            subs.rotate_secret(pb::RotateSecretRequest {
                id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "ListAttempts by subscription",
            logs.list_attempts(pb::ListAttemptsRequest {
                subscription_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "ListFailures by subscription",
            logs.list_failures(pb::ListFailuresRequest {
                subscription_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "Redeliver",
            logs.redeliver(pb::RedeliverRequest {
                event_id: "g-1".into(),
                subscription_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "RecoverFailed",
            logs.recover_failed(pb::RecoverFailedRequest {
                subscription_id: id.clone(),
                since: Some(prost_types::Timestamp::default()),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "GetSubscriptionHealth",
            logs.get_subscription_health(pb::GetSubscriptionHealthRequest {
                subscription_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "TailAttempts by subscription",
            tail(&hr, TestEnv::ACME_TOKEN, "", &id).await.unwrap_err(),
        ),
    ];
    for (rpc, status) in &checks {
        assert_eq!(
            (*rpc, status.code(), status.message()),
            (*rpc, Code::NotFound, not_found.as_str())
        );
        traceless(rpc, status);
    }
    let attempt = logs
        .get_attempt(pb::GetAttemptRequest {
            id: their_attempt.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (attempt.code(), attempt.message().to_owned()),
        (
            Code::NotFound,
            format!(
                "attempt {} not found (or older than the retention)",
                their_attempt.id
            )
        )
    );

    // Naming globex: PERMISSION_DENIED.
    let denied: Vec<(&str, tonic::Status)> = vec![
        (
            "UpdateSubscription",
            subs.update_subscription(pb::UpdateSubscriptionRequest {
                subscription: Some(theirs.clone()),
                expected_revision: theirs.revision,
            })
            .await
            .unwrap_err(),
        ),
        (
            "ListAttempts by tenant",
            logs.list_attempts(pb::ListAttemptsRequest {
                tenant: "globex".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "ListAttempts by event in a tenant",
            logs.list_attempts(pb::ListAttemptsRequest {
                event_id: "g-1".into(),
                tenant: "globex".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "ListFailures by tenant",
            logs.list_failures(pb::ListFailuresRequest {
                tenant: "globex".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "ListEvents",
            logs.list_events(pb::ListEventsRequest {
                tenant: "globex".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "ListSubscriptions",
            subs.list_subscriptions(pb::ListSubscriptionsRequest {
                tenant: "globex".into(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
        ),
        (
            "TailAttempts by tenant",
            tail(&hr, TestEnv::ACME_TOKEN, "globex", "")
                .await
                .unwrap_err(),
        ),
    ];
    for (rpc, status) in &denied {
        assert_eq!(
            (*rpc, status.code(), status.message()),
            (
                *rpc,
                Code::PermissionDenied,
                "tenant \"globex\": this token is scoped to tenant \"acme\""
            )
        );
        traceless(rpc, status);
    }

    // Its own listings hold only its own.
    let listed = subs
        .list_subscriptions(pb::ListSubscriptionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .subscriptions
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        [mine.id.as_str()]
    );
    let attempts = |request: pb::ListAttemptsRequest| {
        let mut logs = logs.clone();
        let mine = mine.clone();
        async move {
            let mut ids: Vec<String> = logs
                .list_attempts(request)
                .await
                .unwrap()
                .into_inner()
                .attempts
                .into_iter()
                .map(|a| {
                    assert_eq!((a.tenant.as_str(), &a.subscription_id), ("acme", &mine.id));
                    a.id
                })
                .collect();
            ids.sort();
            ids
        }
    };
    let mut all_mine: Vec<String> = my_attempts.iter().map(|a| a.id.clone()).collect();
    all_mine.sort();
    for tenant in ["", "acme"] {
        assert_eq!(
            attempts(pb::ListAttemptsRequest {
                event_id: "g-1".into(),
                tenant: tenant.into(),
                ..Default::default()
            })
            .await,
            [my_attempt.id.as_str()],
            "by event, tenant {tenant:?}"
        );
    }
    assert!(attempts(pb::ListAttemptsRequest {
        event_id: "g-2".into(),
        ..Default::default()
    })
    .await
    .is_empty());
    assert_eq!(
        attempts(pb::ListAttemptsRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await,
        all_mine
    );
    let failures = logs
        .list_failures(pb::ListFailuresRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(failures.attempts.is_empty(), "{:?}", failures.attempts);
    let events = logs
        .list_events(pb::ListEventsRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        events
            .iter()
            .map(|e| (e.tenant.as_str(), e.id.as_str(), e.data.as_slice()))
            .collect::<Vec<_>>(),
        [
            ("acme", "g-1", br#"{"who":"acme"}"#.as_slice()),
            ("acme", "a-2", br#"{"who":"acme"}"#.as_slice())
        ]
    );
    let own = logs
        .get_attempt(pb::GetAttemptRequest {
            id: my_attempt.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.tenant, "acme");
    let health = logs
        .get_subscription_health(pb::GetSubscriptionHealthRequest {
            subscription_id: mine.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.subscription_id, mine.id);

    // Globex's subscription is as it was, and its token sees it.
    let mut globex = hr.subscriptions_as(TestEnv::GLOBEX_TOKEN).await;
    let kept = globex
        .get_subscription(pb::GetSubscriptionRequest {
            id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (kept.revision, kept.tenant.as_str(), kept.url.as_str()),
        (theirs.revision, "globex", their_url.as_str())
    );
    assert_eq!(
        receiver.requests_to("/g").len(),
        2,
        "no test event or redelivery reached globex"
    );

    for token in ["", "not-a-token"] {
        let status = hr
            .subscriptions_as(token)
            .await
            .list_subscriptions(pb::ListSubscriptionsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
        let status = hr
            .logs_as(token)
            .await
            .list_attempts(pb::ListAttemptsRequest {
                tenant: "globex".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{}", status.message());
    }
}

#[tokio::test]
async fn during_a_rotation_old_and_new_secrets_both_verify() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let (sub, old) = hr
        .create(subscription("acme", &receiver.url("/r"), &["*"]))
        .await;
    let rotated = hr
        .subscriptions()
        .await
        .rotate_secret(pb::RotateSecretRequest {
            tenant: "acme".into(),
            id: sub.id.clone(),
            grace: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(rotated.secret.starts_with("whsec_") && rotated.secret != old);
    let expires = rotated.previous_expires_at.unwrap().seconds - chrono::Utc::now().timestamp();
    assert!((3590..=3600).contains(&expires), "{expires}");
    hr.publish("acme", "x.y", br#"{"data":{"n":1}}"#).await;
    let request = receiver.wait_for(1, WAIT).await.remove(0);
    let (id, ts, signature) = (
        request.header("webhook-id").unwrap(),
        request.header("webhook-timestamp").unwrap(),
        request.header("webhook-signature").unwrap(),
    );
    assert_eq!(signature.split(' ').count(), 2, "{signature}");
    assert!(
        verify(&old, id, ts, &request.body, signature),
        "a receiver still on the old secret accepts"
    );
    assert!(
        verify(&rotated.secret, id, ts, &request.body, signature),
        "a receiver on the new secret accepts"
    );
    // Neither secret appears anywhere the API returns.
    let shown = hr
        .subscriptions()
        .await
        .get_subscription(pb::GetSubscriptionRequest {
            tenant: "acme".into(),
            id: sub.id,
        })
        .await
        .unwrap();
    let text = format!("{:?}", shown.into_inner());
    assert!(!text.contains(&old[6..]) && !text.contains(&rotated.secret[6..]));
}

#[tokio::test]
async fn a_page_token_continues_only_the_listing_that_issued_it() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let (sub, _) = hr
        .create(subscription("acme", &receiver.url("/pages"), &["page.*"]))
        .await;
    for n in 0..3 {
        hr.publish(
            "acme",
            "page.turned",
            format!(r#"{{"data":{{"n":{n}}}}}"#).as_bytes(),
        )
        .await;
    }
    crate::logs::wait_attempts(&hr, &sub.id, 3).await;
    let by_tenant = |page_token: &str| pb::ListAttemptsRequest {
        tenant: "acme".into(),
        page_size: 1,
        page_token: page_token.into(),
        ..Default::default()
    };
    let mut acme = hr.logs_as(TestEnv::ACME_TOKEN).await;
    let first = acme
        .list_attempts(by_tenant(""))
        .await
        .unwrap()
        .into_inner();
    let token = first.next_page_token;
    assert!(!token.is_empty());
    assert!(
        !token.contains(&first.attempts[0].id) && !token.contains('.'),
        "the token is opaque: {token}"
    );
    let second = acme
        .list_attempts(by_tenant(&token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.attempts.len(), 1);
    assert_ne!(second.attempts[0].id, first.attempts[0].id);

    let refused = |status: tonic::Status| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(
            status
                .message()
                .starts_with("page_token: not a token returned by this listing"),
            "{}",
            status.message()
        );
    };
    // Another scope, another filter, another caller, another tenant, or a
    // token made up from a position: all refused.
    let mut by_subscription = by_tenant(&token);
    by_subscription.tenant.clear();
    by_subscription.subscription_id = sub.id.clone();
    refused(acme.list_attempts(by_subscription).await.unwrap_err());
    let mut filtered = by_tenant(&token);
    filtered.outcome = "success".into();
    refused(acme.list_attempts(filtered).await.unwrap_err());
    refused(
        hr.logs()
            .await
            .list_attempts(by_tenant(&token))
            .await
            .unwrap_err(),
    );
    let mut globex_listing = by_tenant(&token);
    globex_listing.tenant = "globex".into();
    refused(
        hr.logs_as(TestEnv::GLOBEX_TOKEN)
            .await
            .list_attempts(globex_listing)
            .await
            .unwrap_err(),
    );
    refused(
        acme.list_attempts(by_tenant("1796351852974.2"))
            .await
            .unwrap_err(),
    );

    // ListEvents the same way.
    let events = |tenant: &str, page_token: &str| pb::ListEventsRequest {
        tenant: tenant.into(),
        page_size: 1,
        page_token: page_token.into(),
        ..Default::default()
    };
    let page = acme
        .list_events(events("acme", ""))
        .await
        .unwrap()
        .into_inner();
    assert!(!page.next_page_token.is_empty());
    let next = acme
        .list_events(events("acme", &page.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(next.events[0].seq, page.events[0].seq);
    refused(
        hr.logs_as(TestEnv::GLOBEX_TOKEN)
            .await
            .list_events(events("globex", &page.next_page_token))
            .await
            .unwrap_err(),
    );
}

/// A `TailAttempts` call with `token` (empty: the admin's).
async fn tail(
    hr: &Harness,
    token: &str,
    tenant: &str,
    subscription_id: &str,
) -> Result<tonic::Streaming<pb::Attempt>, tonic::Status> {
    let request = pb::TailAttemptsRequest {
        tenant: tenant.into(),
        subscription_id: subscription_id.into(),
    };
    let mut logs = match token {
        "" => hr.logs().await,
        token => hr.logs_as(token).await,
    };
    Ok(logs.tail_attempts(request).await?.into_inner())
}

/// The next attempt of a tail, within [`WAIT`].
async fn next_tailed(stream: &mut tonic::Streaming<pb::Attempt>) -> pb::Attempt {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("an attempt in time")
        .expect("the stream goes on")
        .expect("an attempt")
}

#[tokio::test]
async fn a_tail_shows_a_tenant_only_its_own_attempts() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let (acme_sub, _) = hr
        .create(subscription("acme", &receiver.url("/acme"), &["tail.*"]))
        .await;
    let (globex_sub, _) = hr
        .create(subscription(
            "globex",
            &receiver.url("/globex"),
            &["tail.*"],
        ))
        .await;
    let mut globex = tail(&hr, TestEnv::GLOBEX_TOKEN, "", "").await.unwrap();
    // An admin follows one tenant at a time, as it reads one.
    let unnamed = tail(&hr, "", "", "").await.unwrap_err();
    assert_eq!(
        (unnamed.code(), unnamed.message()),
        (
            Code::InvalidArgument,
            "tenant: is required with an admin token (a tenant token may leave it empty)"
        )
    );
    let mut admin = tail(&hr, "", "acme", "").await.unwrap();

    // Another tenant, another tenant's subscription, a widened subject:
    // refused.
    let denied = tail(&hr, TestEnv::GLOBEX_TOKEN, "acme", "")
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let hidden = tail(&hr, TestEnv::GLOBEX_TOKEN, "", &acme_sub.id)
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound, "{hidden:?}");
    let widened = tail(&hr, "", "acme.>", "").await.unwrap_err();
    assert_eq!(widened.code(), Code::InvalidArgument, "{widened:?}");

    hr.publish("acme", "tail.one", br#"{"id":"acme-1","data":{}}"#)
        .await;
    hr.publish("globex", "tail.one", br#"{"id":"globex-1","data":{}}"#)
        .await;
    let seen = next_tailed(&mut globex).await;
    assert_eq!(
        (
            seen.tenant.as_str(),
            seen.subscription_id.as_str(),
            seen.event_id.as_str()
        ),
        ("globex", globex_sub.id.as_str(), "globex-1")
    );
    let seen = next_tailed(&mut admin).await;
    assert_eq!(
        (
            seen.tenant.as_str(),
            seen.subscription_id.as_str(),
            seen.event_id.as_str()
        ),
        ("acme", acme_sub.id.as_str(), "acme-1")
    );
    // Neither ever sees the other tenant's: each one's next is its own.
    hr.publish("globex", "tail.one", br#"{"id":"globex-2","data":{}}"#)
        .await;
    hr.publish("acme", "tail.one", br#"{"id":"acme-2","data":{}}"#)
        .await;
    assert_eq!(next_tailed(&mut globex).await.event_id, "globex-2");
    assert_eq!(next_tailed(&mut admin).await.event_id, "acme-2");
}

/// The calls of the tenant rule's table: every RPC of Subscriptions and
/// DeliveryLogs that acts on a tenant (EventTypes: catalog.rs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    GetSubscription,
    ListSubscriptions,
    UpdateSubscription,
    DeleteSubscription,
    RotateSecret,
    SendTestEvent,
    GetAttempt,
    Redeliver,
    RecoverFailed,
    GetSubscriptionHealth,
    ListFailures,
    ListEvents,
    TailAttempts,
}

impl Rpc {
    /// Update last: it points acme's subscription elsewhere.
    const ALL: [Rpc; 13] = [
        Rpc::GetSubscription,
        Rpc::ListSubscriptions,
        Rpc::DeleteSubscription,
        Rpc::RotateSecret,
        Rpc::SendTestEvent,
        Rpc::GetAttempt,
        Rpc::Redeliver,
        Rpc::RecoverFailed,
        Rpc::GetSubscriptionHealth,
        Rpc::ListFailures,
        Rpc::ListEvents,
        Rpc::TailAttempts,
        Rpc::UpdateSubscription,
    ];

    /// Whether the call names an object by id (a subscription; an attempt
    /// for GetAttempt).
    fn takes_id(self) -> bool {
        !matches!(self, Rpc::ListSubscriptions | Rpc::ListEvents)
    }

    /// Where the request holds its tenant.
    fn field(self) -> &'static str {
        match self {
            Rpc::UpdateSubscription => "subscription.tenant",
            _ => "tenant",
        }
    }

    /// Calls the RPC with `token` (empty: the admin's), naming `tenant` and
    /// the object `id`; Ok when the call did what it is for.
    async fn call(
        self,
        hr: &Harness,
        token: &str,
        tenant: &str,
        id: &str,
    ) -> Result<(), tonic::Status> {
        let (mut subs, mut logs) = match token {
            "" => (hr.subscriptions().await, hr.logs().await),
            token => (hr.subscriptions_as(token).await, hr.logs_as(token).await),
        };
        let tenant = tenant.to_owned();
        let id = id.to_owned();
        match self {
            Rpc::GetSubscription => subs
                .get_subscription(pb::GetSubscriptionRequest { tenant, id })
                .await
                .map(drop),
            Rpc::ListSubscriptions => subs
                .list_subscriptions(pb::ListSubscriptionsRequest {
                    tenant,
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::UpdateSubscription => subs
                .update_subscription(pb::UpdateSubscriptionRequest {
                    subscription: Some(pb::Subscription {
                        id,
                        name: "updated".into(),
                        ..subscription(&tenant, "https://example.test/updated", &["*"])
                    }),
                    expected_revision: 0,
                })
                .await
                .map(drop),
            Rpc::DeleteSubscription => subs
                .delete_subscription(pb::DeleteSubscriptionRequest {
                    tenant,
                    id,
                    expected_revision: 0,
                })
                .await
                .map(drop),
            Rpc::RotateSecret => subs
                .rotate_secret(pb::RotateSecretRequest {
                    tenant,
                    id,
                    grace: None,
                })
                .await
                .map(drop),
            Rpc::SendTestEvent => subs
                .send_test_event(pb::SendTestEventRequest {
                    tenant,
                    id,
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::GetAttempt => logs
                .get_attempt(pb::GetAttemptRequest { tenant, id })
                .await
                .map(drop),
            Rpc::Redeliver => logs
                .redeliver(pb::RedeliverRequest {
                    tenant,
                    event_id: "rule-1".into(),
                    subscription_id: id,
                })
                .await
                .map(drop),
            Rpc::RecoverFailed => logs
                .recover_failed(pb::RecoverFailedRequest {
                    tenant,
                    subscription_id: id,
                    since: Some(prost_types::Timestamp::default()),
                    until: None,
                })
                .await
                .map(drop),
            Rpc::GetSubscriptionHealth => logs
                .get_subscription_health(pb::GetSubscriptionHealthRequest {
                    tenant,
                    subscription_id: id,
                })
                .await
                .map(drop),
            Rpc::ListFailures => logs
                .list_failures(pb::ListFailuresRequest {
                    tenant,
                    subscription_id: id,
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::ListEvents => logs
                .list_events(pb::ListEventsRequest {
                    tenant,
                    ..Default::default()
                })
                .await
                .map(drop),
            Rpc::TailAttempts => logs
                .tail_attempts(pb::TailAttemptsRequest {
                    tenant,
                    subscription_id: id,
                })
                .await
                .map(drop),
        }
    }
}

/// The tenant rule, RPC by RPC: an admin token must name the tenant; a
/// tenant token may leave it empty (its own) and may not name another; an
/// id of another tenant is not found, word for word like an id that does
/// not exist.
#[tokio::test]
async fn every_rpc_follows_the_one_tenant_rule() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let acme_url = receiver.url("/acme");
    let (acme, _) = hr.create(subscription("acme", &acme_url, &["*"])).await;
    let (globex, _) = hr
        .create(subscription("globex", &receiver.url("/globex"), &["*"]))
        .await;
    hr.publish("acme", "rule.checked", br#"{"id":"rule-1","data":{}}"#)
        .await;
    hr.publish("globex", "rule.checked", br#"{"id":"rule-1","data":{}}"#)
        .await;
    let acme_attempt = crate::logs::wait_attempts(&hr, &acme.id, 1).await.remove(0);
    let globex_attempt = crate::logs::wait_attempts(&hr, &globex.id, 1)
        .await
        .remove(0);
    let unknown_sub = "sub_01JAAAAAAAAAAAAAAAAAAAAAAA";
    let unknown_attempt = "att_01JAAAAAAAAAAAAAAAAAAAAAAA";

    const ADMIN: &str = "";
    const ACME: &str = TestEnv::ACME_TOKEN;
    let missing = |field: &str| {
        format!("{field}: is required with an admin token (a tenant token may leave it empty)")
    };
    let foreign = "tenant \"globex\": this token is scoped to tenant \"acme\"";
    for rpc in Rpc::ALL {
        // Its object of acme's, of globex's, and one that does not exist.
        let (mine, theirs, unknown) = match rpc {
            Rpc::GetAttempt => (
                acme_attempt.id.clone(),
                globex_attempt.id.clone(),
                unknown_attempt,
            ),
            _ if rpc.takes_id() => (acme.id.clone(), globex.id.clone(), unknown_sub),
            _ => Default::default(),
        };
        // A deletion that works takes a subscription made for it.
        let own = || async {
            match rpc {
                Rpc::DeleteSubscription => {
                    hr.create(subscription("acme", &acme_url, &["*"]))
                        .await
                        .0
                        .id
                }
                _ => mine.clone(),
            }
        };

        // An admin token names no tenant: refused before any lookup.
        let status = rpc.call(&hr, ADMIN, "", &mine).await.unwrap_err();
        assert_eq!(
            (rpc, status.code(), status.message()),
            (rpc, Code::InvalidArgument, missing(rpc.field()).as_str())
        );
        // An admin token naming the tenant; a tenant token leaving it
        // empty, or naming its own.
        for (token, tenant) in [(ADMIN, "acme"), (ACME, ""), (ACME, "acme")] {
            let result = rpc.call(&hr, token, tenant, &own().await).await;
            assert!(
                result.is_ok(),
                "{rpc:?} with {} naming {tenant:?}: {result:?}",
                if token == ADMIN {
                    "admin"
                } else {
                    "acme's token"
                }
            );
        }
        // A tenant token naming another tenant, whatever the id.
        let status = rpc.call(&hr, ACME, "globex", &theirs).await.unwrap_err();
        assert_eq!(
            (rpc, status.code(), status.message()),
            (rpc, Code::PermissionDenied, foreign)
        );
        if !rpc.takes_id() {
            continue;
        }
        // Another tenant's id answers as an unknown one does.
        let not_found = rpc.call(&hr, ADMIN, "acme", unknown).await.unwrap_err();
        assert_eq!((rpc, not_found.code()), (rpc, Code::NotFound));
        let expected = not_found.message().replace(unknown, &theirs);
        for (token, tenant) in [(ADMIN, "acme"), (ACME, "")] {
            let status = rpc.call(&hr, token, tenant, &theirs).await.unwrap_err();
            assert_eq!(
                (rpc, tenant, status.code(), status.message()),
                (rpc, tenant, Code::NotFound, expected.as_str())
            );
        }
    }

    // Globex's subscription is as it was, and nothing reached it but its
    // one event.
    let kept = hr
        .subscriptions()
        .await
        .get_subscription(pb::GetSubscriptionRequest {
            tenant: "globex".into(),
            id: globex.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept, globex);
    assert_eq!(receiver.requests_to("/globex").len(), 1);
}
