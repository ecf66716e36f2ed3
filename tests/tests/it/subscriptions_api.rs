//! The Subscriptions gRPC API: validation, revisions, paging, health.

use hookrelay_proto::v1 as pb;
use hookrelay_tests::Harness;
use tonic::Code;

use crate::subscription;

fn custom(template: &str) -> pb::RequestSpec {
    pb::RequestSpec {
        envelope: pb::Envelope::Custom as i32,
        template: template.into(),
        ..Default::default()
    }
}

pub async fn create_err(hr: &Harness, sub: pb::Subscription) -> tonic::Status {
    hr.subscriptions()
        .await
        .create_subscription(pb::CreateSubscriptionRequest {
            subscription: Some(sub),
        })
        .await
        .expect_err("create should be refused")
}

#[tokio::test]
async fn bad_subscriptions_are_refused_naming_the_field() {
    let hr = Harness::start().await;
    let ok = || subscription("acme", "https://example.test/hook", &["user.*"]);
    let mut cases: Vec<(pb::Subscription, Code, &str)> = vec![
        (pb::Subscription { url: "ftp://example.test/".into(), ..ok() }, Code::InvalidArgument, "subscription.url: scheme \"ftp\" is not http or https"),
        (pb::Subscription { url: "".into(), ..ok() }, Code::InvalidArgument, "subscription.url: is required"),
        (pb::Subscription { tenant: "ac me".into(), ..ok() }, Code::InvalidArgument, "subscription.tenant"),
        (pb::Subscription { event_types: vec![], ..ok() }, Code::InvalidArgument, "subscription.event_types: at least one pattern"),
        (pb::Subscription { event_types: vec!["user.*".into(), "us*er".into()], ..ok() }, Code::InvalidArgument, "subscription.event_types[1]"),
        (pb::Subscription { label_filter: [("".to_owned(), "1".to_owned())].into(), ..ok() }, Code::InvalidArgument, "subscription.label_filter"),
        (pb::Subscription { id: "sub_mine".into(), ..ok() }, Code::InvalidArgument, "subscription.id: is minted by the server"),
        (
            pb::Subscription { request: Some(pb::RequestSpec { headers: [("Webhook-Signature".to_owned(), "x".to_owned())].into(), ..Default::default() }), ..ok() },
            Code::InvalidArgument,
            "subscription.request.headers[\"Webhook-Signature\"]: \"Webhook-Signature\" is set by hookrelay",
        ),
        (
            pb::Subscription {
                retry_policy: Some(pb::RetryPolicy {
                    policy: Some(pb::retry_policy::Policy::Interval(pb::IntervalRetry {
                        every: Some(prost_types::Duration { seconds: 3600, nanos: 0 }),
                        r#for: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
                    })),
                }),
                ..ok()
            },
            Code::InvalidArgument,
            "subscription.retry_policy.interval.for: must be at least every",
        ),
        (
            pb::Subscription {
                request: Some(pb::RequestSpec {
                    envelope: pb::Envelope::ChangesBatch as i32,
                    ..Default::default()
                }),
                ..ok()
            },
            Code::InvalidArgument,
            "subscription.request.envelope: ENVELOPE_CHANGES_BATCH needs a batch",
        ),
        (
            pb::Subscription {
                batch: Some(pb::BatchSpec {
                    max_size: 10,
                    ..Default::default()
                }),
                ..ok()
            },
            Code::InvalidArgument,
            "subscription.batch.window: is required, between 10ms and 1h",
        ),
        (
            pb::Subscription { request: Some(custom(r#"{"a": {"b": "{{ data.x | }}"}}"#)), ..ok() },
            Code::InvalidArgument,
            "subscription.request.template: $.a.b: syntax error",
        ),
        (
            pb::Subscription { request: Some(custom(r#"{"a": "{{ md6(data.x) }}"}"#)), ..ok() },
            Code::InvalidArgument,
            "subscription.request.template: does not render a sample event: rendering $.a: unknown function: md6 is unknown",
        ),
        (
            pb::Subscription { request: Some(custom(r#"{"a": 1"#)), ..ok() },
            Code::InvalidArgument,
            "subscription.request.template: line 1 column 7: not valid JSON",
        ),
        (
            pb::Subscription { request: Some(pb::RequestSpec { method: "DELETE".into(), ..Default::default() }), ..ok() },
            Code::InvalidArgument,
            "subscription.request.method: \"DELETE\" is not one of GET, POST, PUT",
        ),
        (
            pb::Subscription { request: Some(pb::RequestSpec { body_format: pb::BodyFormat::JsonRpc as i32, ..Default::default() }), ..ok() },
            Code::InvalidArgument,
            "subscription.request.jsonrpc_method: is required with the json_rpc body format",
        ),
        (
            pb::Subscription { request: Some(pb::RequestSpec { body_format: 42, ..Default::default() }), ..ok() },
            Code::InvalidArgument,
            "subscription.request.body_format: unknown value 42",
        ),
        (
            pb::Subscription { request: Some(pb::RequestSpec { headers: [("Content-Length".to_owned(), "1".to_owned())].into(), ..Default::default() }), ..ok() },
            Code::InvalidArgument,
            "subscription.request.headers[\"Content-Length\"]",
        ),
    ];
    // What one hung endpoint may hold: at most the tenant's cap (256) in
    // flight, and no more request-seconds than that cap at the default
    // timeout (2 s in tests: 512).
    cases.extend([
        (
            pb::Subscription { max_in_flight: 257, ..ok() },
            Code::InvalidArgument,
            "subscription.max_in_flight: at most 256 (limits.max_in_flight_per_tenant",
        ),
        (
            pb::Subscription { max_in_flight: 64, timeout: Some(prost_types::Duration { seconds: 9, nanos: 0 }), ..ok() },
            Code::InvalidArgument,
            "subscription.max_in_flight: 64 in flight × timeout 9s holds 576 request-seconds when the endpoint hangs; at most 512 are allowed (limits.max_in_flight_per_tenant 256 × default timeout 2s): with this timeout, max_in_flight may be at most 56",
        ),
        (
            pb::Subscription { circuit: Some(pb::CircuitSpec { failing_after: 5, open_after: 2, ..Default::default() }), ..ok() },
            Code::InvalidArgument,
            "subscription.circuit.open_after: must be at least failing_after (5)",
        ),
        (
            pb::Subscription { rate_limit: Some(pb::RateLimit { per_second: 0, burst: 5 }), ..ok() },
            Code::InvalidArgument,
            "subscription.rate_limit.per_second: must be between 1 and 100000",
        ),
    ]);
    for (sub, code, message) in cases {
        let status = create_err(&hr, sub).await;
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(
            status.message().starts_with(message),
            "{:?} !~ {message:?}",
            status.message()
        );
    }
    let status = hr
        .subscriptions()
        .await
        .create_subscription(pb::CreateSubscriptionRequest { subscription: None })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "subscription: is required")
    );
}

#[tokio::test]
async fn get_update_delete_with_revisions() {
    let hr = Harness::start().await;
    let mut client = hr.subscriptions().await;
    let mut input = subscription("acme", "https://example.test/a", &["user.created"]);
    input.name = "LMS".into();
    input.description = "course stats".into();
    let (created, _) = hr.create(input).await;
    assert!(created.id.starts_with("sub_"));
    assert_eq!(created.enabled, Some(true));
    assert!(created.revision > 0);

    let fetched = client
        .get_subscription(pb::GetSubscriptionRequest {
            tenant: "acme".into(),
            id: created.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(fetched, created);

    let mut changed = fetched.clone();
    changed.url = "https://example.test/b".into();
    changed.enabled = Some(false);
    changed.retry_policy = crate::retries::schedule(&[1000, 2000]);
    let updated = client
        .update_subscription(pb::UpdateSubscriptionRequest {
            subscription: Some(changed.clone()),
            expected_revision: fetched.revision,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.url, "https://example.test/b");
    assert_eq!(updated.enabled, Some(false));
    assert_eq!(
        updated.retry_policy,
        crate::retries::schedule(&[1000, 2000])
    );
    assert!(updated.revision > fetched.revision);
    assert_eq!(updated.created_at, created.created_at);

    // Writing again with the revision read before the update is stale.
    let stale = client
        .update_subscription(pb::UpdateSubscriptionRequest {
            subscription: Some(changed),
            expected_revision: fetched.revision,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
    assert!(
        stale.message().contains(&format!(
            "is at revision {}, not {}",
            updated.revision, fetched.revision
        )),
        "{}",
        stale.message()
    );

    let invalid = client
        .update_subscription(pb::UpdateSubscriptionRequest {
            subscription: Some(pb::Subscription {
                url: "gopher://x".into(),
                ..updated.clone()
            }),
            expected_revision: updated.revision,
        })
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert!(invalid.message().starts_with("subscription.url"));

    let stale_delete = client
        .delete_subscription(pb::DeleteSubscriptionRequest {
            tenant: "acme".into(),
            id: created.id.clone(),
            expected_revision: fetched.revision,
        })
        .await
        .unwrap_err();
    assert_eq!(stale_delete.code(), Code::FailedPrecondition);
    client
        .delete_subscription(pb::DeleteSubscriptionRequest {
            tenant: "acme".into(),
            id: created.id.clone(),
            expected_revision: updated.revision,
        })
        .await
        .unwrap();
    let gone = client
        .get_subscription(pb::GetSubscriptionRequest {
            tenant: "acme".into(),
            id: created.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(
        gone.message(),
        format!("subscription {} not found", created.id)
    );

    let malformed = client
        .get_subscription(pb::GetSubscriptionRequest {
            tenant: "acme".into(),
            id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn list_pages_through_every_subscription_of_a_tenant() {
    let hr = Harness::start().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let (sub, _) = hr
            .create(subscription(
                "acme",
                &format!("https://example.test/{n}"),
                &["*"],
            ))
            .await;
        ids.push(sub.id);
    }
    hr.create(subscription("globex", "https://example.test/g", &["*"]))
        .await;

    let mut client = hr.subscriptions().await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_subscriptions(pb::ListSubscriptionsRequest {
                tenant: "acme".into(),
                page_size: 2,
                page_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.subscriptions.len() <= 2);
        seen.extend(page.subscriptions.into_iter().map(|s| s.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids, "every acme subscription once, in creation order");
    // An admin lists one tenant at a time: naming none is refused.
    let globex = client
        .list_subscriptions(pb::ListSubscriptionsRequest {
            tenant: "globex".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(globex.subscriptions.len(), 1);
    assert!(globex.next_page_token.is_empty());
    let unnamed = client
        .list_subscriptions(pb::ListSubscriptionsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (unnamed.code(), unnamed.message()),
        (
            Code::InvalidArgument,
            "tenant: is required with an admin token (a tenant token may leave it empty)"
        )
    );
}

#[tokio::test]
async fn grpc_health_reports_serving() {
    let hr = Harness::start().await;
    let channel = tonic::transport::Endpoint::from_shared(hr.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in [
        "",
        "hookrelay.v1.Subscriptions",
        "hookrelay.v1.DeliveryLogs",
    ] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
}

#[tokio::test]
async fn grpc_reflection_lists_the_services() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let hr = Harness::start().await;
    let channel = tonic::transport::Endpoint::from_shared(hr.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(futures::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses
        .message()
        .await
        .unwrap()
        .expect("a reflection response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "hookrelay.v1.Subscriptions",
        "hookrelay.v1.DeliveryLogs",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} not in {names:?}"
        );
    }
}

#[tokio::test]
async fn the_tenant_limit_holds_under_concurrent_creates_and_frees_on_delete() {
    let mut env = hookrelay_tests::support::TestEnv::new();
    env.config.limits.max_subscriptions_per_tenant = 5;
    let hr = Harness::start_with(env, hookrelay::Role::All).await;
    let client = hr.subscriptions().await;
    let creates = (0..20).map(|n| {
        let mut client = client.clone();
        async move {
            client
                .create_subscription(pb::CreateSubscriptionRequest {
                    subscription: Some(subscription(
                        "acme",
                        &format!("http://127.0.0.1:9/{n}"),
                        &["*"],
                    )),
                })
                .await
        }
    });
    let results = futures::future::join_all(creates).await;
    let created: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(created.len(), 5, "{results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert!(
            refused
                .message()
                .contains("tenant acme has 5 subscriptions, the most allowed"),
            "{}",
            refused.message()
        );
    }
    // Another tenant is not counted against acme.
    hr.create(subscription("globex", "http://127.0.0.1:9/g", &["*"]))
        .await;
    let mut client = client.clone();
    let listed = client
        .list_subscriptions(pb::ListSubscriptionsRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subscriptions;
    assert_eq!(listed.len(), 5);
    assert!(listed.iter().all(|s| s.tenant == "acme"));

    let gone = created[0].get_ref().subscription.clone().unwrap();
    client
        .delete_subscription(pb::DeleteSubscriptionRequest {
            tenant: "acme".into(),
            id: gone.id.clone(),
            expected_revision: gone.revision,
        })
        .await
        .unwrap();
    hr.create(subscription("acme", "http://127.0.0.1:9/again", &["*"]))
        .await;

    // A subscription cannot move to another tenant: in globex, acme's
    // subscription is not found, as any id globex does not have.
    let mut moved = created[1].get_ref().subscription.clone().unwrap();
    moved.tenant = "globex".into();
    let status = client
        .update_subscription(pb::UpdateSubscriptionRequest {
            expected_revision: moved.revision,
            subscription: Some(moved.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message().to_owned()),
        (
            Code::NotFound,
            format!("subscription {} not found", moved.id)
        )
    );
    let kept = client
        .get_subscription(pb::GetSubscriptionRequest {
            tenant: "acme".into(),
            id: moved.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(kept.tenant, "acme");
}

#[tokio::test]
async fn subscriptions_stored_before_the_tenant_index_are_listed_and_counted() {
    let env = hookrelay_tests::support::TestEnv::new();
    // As an earlier version left them: in the subscriptions bucket only.
    let client = async_nats::connect(env.config.nats.servers())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    let bucket = hookrelay_core::nats::subscriptions_bucket(&js, &env.config)
        .await
        .unwrap();
    let mut old_ids = Vec::new();
    for n in 0..3 {
        let id = format!("sub_01J0000000000000000000000{n}");
        let value = serde_json::json!({
            "id": id, "tenant": "acme", "url": format!("http://127.0.0.1:9/old{n}"),
            "event_types": ["*"], "enabled": true, "secrets": [],
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
        });
        bucket
            .put(&id, serde_json::to_vec(&value).unwrap().into())
            .await
            .unwrap();
        old_ids.push(id);
    }
    let mut env = env;
    env.config.limits.max_subscriptions_per_tenant = 4;
    let hr = Harness::start_with(env, hookrelay::Role::All).await;
    let mut client = hr.subscriptions().await;
    let listed: Vec<String> = client
        .list_subscriptions(pb::ListSubscriptionsRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .subscriptions
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, old_ids);
    // They count: one more fits, the next does not.
    hr.create(subscription("acme", "http://127.0.0.1:9/new", &["*"]))
        .await;
    let status = create_err(&hr, subscription("acme", "http://127.0.0.1:9/over", &["*"])).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

#[tokio::test]
async fn a_subscription_an_older_replica_writes_during_an_upgrade_is_listed() {
    let hr = Harness::start().await;
    // The index is built: this replica has listed and created already.
    hr.create(subscription("acme", "http://127.0.0.1:9/new", &["*"]))
        .await;
    // A replica of the earlier version writes a subscription alone.
    let bucket = hookrelay_core::nats::subscriptions_bucket(&hr.js, &hr.env.config)
        .await
        .unwrap();
    let id = "sub_01J000000000000000000000ZZ".to_owned();
    let value = serde_json::json!({
        "id": id, "tenant": "acme", "url": "http://127.0.0.1:9/old",
        "event_types": ["*"], "enabled": true, "secrets": [],
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
    });
    bucket
        .put(&id, serde_json::to_vec(&value).unwrap().into())
        .await
        .unwrap();
    let client = hr.subscriptions().await;
    hookrelay_tests::support::eventually(
        "the older replica's subscription listed",
        std::time::Duration::from_secs(20),
        || {
            let mut client = client.clone();
            let id = id.clone();
            async move {
                let listed = client
                    .list_subscriptions(pb::ListSubscriptionsRequest {
                        tenant: "acme".into(),
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .subscriptions;
                (listed.len() == 2 && listed.iter().any(|s| s.id == id)).then_some(())
            }
        },
    )
    .await;
}

/// Every field of every retry policy has a default: an empty policy
/// message saves, and a read shows the policy in effect, defaults filled in.
#[tokio::test]
async fn retry_policies_left_empty_are_saved_with_their_defaults() {
    use pb::retry_policy::Policy;
    let hr = Harness::start().await;
    let secs = |s: i64| {
        Some(prost_types::Duration {
            seconds: s,
            nanos: 0,
        })
    };
    let hours = |h: i64| secs(h * 3600);
    let default_delays: Vec<prost_types::Duration> = [5, 300, 1800, 7200, 18000, 36000, 36000]
        .into_iter()
        .map(|s| secs(s).unwrap())
        .collect();
    let cases = [
        (
            Policy::UntilSuccess(pb::UntilSuccessRetry::default()),
            Policy::UntilSuccess(pb::UntilSuccessRetry {
                initial: secs(5),
                cap: hours(10),
            }),
        ),
        (
            Policy::UntilSuccess(pb::UntilSuccessRetry {
                initial: None,
                cap: secs(60),
            }),
            Policy::UntilSuccess(pb::UntilSuccessRetry {
                initial: secs(5),
                cap: secs(60),
            }),
        ),
        (
            Policy::Exponential(pb::ExponentialRetry::default()),
            Policy::Exponential(pb::ExponentialRetry {
                initial: secs(5),
                factor: 2.0,
                cap: hours(10),
                max_attempts: 8,
                max_age: None,
                jitter: 0.0,
            }),
        ),
        (
            Policy::Interval(pb::IntervalRetry::default()),
            Policy::Interval(pb::IntervalRetry {
                every: hours(1),
                r#for: hours(72),
            }),
        ),
        (
            Policy::Schedule(pb::ScheduleRetry::default()),
            Policy::Schedule(pb::ScheduleRetry {
                delays: default_delays,
                jitter: 0.0,
            }),
        ),
    ];
    let mut client = hr.subscriptions().await;
    for (given, effective) in cases {
        let mut input = subscription("acme", "https://example.test/retry", &["*"]);
        input.retry_policy = Some(pb::RetryPolicy {
            policy: Some(given.clone()),
        });
        let (created, _) = hr.create(input).await;
        let read = client
            .get_subscription(pb::GetSubscriptionRequest {
                tenant: "acme".into(),
                id: created.id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let effective = Some(pb::RetryPolicy {
            policy: Some(effective),
        });
        assert_eq!(created.retry_policy, effective, "created from {given:?}");
        assert_eq!(read.retry_policy, effective, "read after {given:?}");
    }
}
