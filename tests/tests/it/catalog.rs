//! The event-type catalog: schemas checked at ingest (`reject` dead-letters
//! with the path, `warn` delivers and flags the attempt, a valid event is
//! delivered unchanged), versions that keep compatibility, strict catalogs
//! for subscriptions, examples in test events, and tenant isolation.

use std::time::Duration;

use hookrelay_proto::v1 as pb;
use hookrelay_tests::support::{eventually, Receiver, TestEnv};
use hookrelay_tests::Harness;
use tonic::Code;

use crate::{first_dlq_entry, subscription};

const COURSE_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": {
    "course_id": {"type": "integer"},
    "progress": {"type": "number", "minimum": 0, "maximum": 1}
  },
  "required": ["course_id"]
}"#;

fn course_type(tenant: &str, validation: pb::SchemaValidation) -> pb::CreateEventTypeRequest {
    pb::CreateEventTypeRequest {
        tenant: tenant.into(),
        name: "course_stat.created".into(),
        description: "A course's statistics were created".into(),
        validation: validation as i32,
        schema: COURSE_SCHEMA.into(),
        examples: vec![r#"{"course_id": 42, "progress": 0.5}"#.into()],
        ..Default::default()
    }
}

async fn attempts_of(hr: &Harness, subscription_id: &str, n: usize) -> Vec<pb::Attempt> {
    eventually("the attempts logged", Duration::from_secs(30), || async {
        let attempts = hr
            .logs()
            .await
            .list_attempts(pb::ListAttemptsRequest {
                tenant: "acme".into(),
                subscription_id: subscription_id.into(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner()
            .attempts;
        (attempts.len() >= n).then_some(attempts)
    })
    .await
}

#[tokio::test]
async fn reject_dead_letters_an_invalid_event_with_its_path_and_delivers_a_valid_one_unchanged() {
    let hr = Harness::start().await;
    hr.event_types()
        .await
        .create_event_type(course_type("acme", pb::SchemaValidation::Reject))
        .await
        .unwrap();
    let receiver = Receiver::start().await;
    hr.create(subscription(
        "acme",
        &receiver.url("/lms"),
        &["course_stat.*"],
    ))
    .await;

    hr.publish(
        "acme",
        "course_stat.created",
        br#"{"id":"bad","data":{"course_id":"42"}}"#,
    )
    .await;
    hr.publish(
        "acme",
        "course_stat.created",
        br#"{"id":"good","data":{"course_id": 42,"progress":0.25,"extra":[1, 2]}}"#,
    )
    .await;

    let entry = first_dlq_entry(&hr).await;
    let reason = entry
        .headers
        .get("Hookrelay-Dlq-Reason")
        .map(|v| v.to_string())
        .unwrap_or_default();
    assert!(
        reason.starts_with(
            "data does not match the schema of course_stat.created v1: data.course_id: "
        ) && reason.contains(r#""42""#)
            && reason.contains("integer"),
        "{reason}"
    );
    assert!(String::from_utf8_lossy(&entry.payload).contains(r#""id":"bad""#));

    let requests = receiver.wait_for(1, Duration::from_secs(30)).await;
    // The valid event's data, byte for byte as published.
    assert!(
        requests[0]
            .body_str()
            .contains(r#""data":{"course_id": 42,"progress":0.25,"extra":[1, 2]}"#),
        "{}",
        requests[0].body_str()
    );
    let labels = r#"event_type="course_stat.created",result="#;
    assert_eq!(
        hr.metric(&format!(
            r#"hookrelay_schema_validations_total{{{labels}"rejected",tenant="acme"}}"#
        ))
        .await,
        Some(1.0)
    );
    assert_eq!(
        hr.metric(&format!(
            r#"hookrelay_schema_validations_total{{{labels}"valid",tenant="acme"}}"#
        ))
        .await,
        Some(1.0)
    );
    assert_eq!(
        hr.metric(r#"hookrelay_dlq_total{reason="schema",source="events"}"#)
            .await,
        Some(1.0)
    );
    // Nothing else arrives: the rejected event was not delivered.
    assert_eq!(receiver.requests().len(), 1);
}

#[tokio::test]
async fn warn_delivers_an_invalid_event_and_flags_its_attempt() {
    let hr = Harness::start().await;
    hr.event_types()
        .await
        .create_event_type(course_type("acme", pb::SchemaValidation::Warn))
        .await
        .unwrap();
    let receiver = Receiver::start().await;
    let (sub, _) = hr
        .create(subscription(
            "acme",
            &receiver.url("/lms"),
            &["course_stat.*"],
        ))
        .await;
    hr.publish(
        "acme",
        "course_stat.created",
        br#"{"id":"off","data":{"course_id":42,"progress":1.5}}"#,
    )
    .await;
    let requests = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert!(requests[0]
        .body_str()
        .contains(r#""data":{"course_id":42,"progress":1.5}"#));
    let attempts = attempts_of(&hr, &sub.id, 1).await;
    assert_eq!(attempts[0].outcome, "success");
    let violation = &attempts[0].schema_violation;
    assert!(
        violation.starts_with("course_stat.created v1: data.progress: ")
            && violation.contains("1.5"),
        "{violation}"
    );
    assert_eq!(
        hr.metric(r#"hookrelay_schema_validations_total{event_type="course_stat.created",result="invalid",tenant="acme"}"#)
            .await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_schema_edit_that_breaks_compatibility_needs_a_new_version() {
    let hr = Harness::start().await;
    let mut catalog = hr.event_types().await;
    let created = catalog
        .create_event_type(course_type("acme", pb::SchemaValidation::Reject))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.versions.len(), 1);
    assert_eq!(created.versions[0].version, 1);

    // Requiring a field that was optional refuses data v1 accepts.
    let narrower = COURSE_SCHEMA.replace(r#"["course_id"]"#, r#"["course_id", "progress"]"#);
    let update = pb::UpdateEventTypeRequest {
        tenant: "acme".into(),
        name: "course_stat.created".into(),
        description: created.description.clone(),
        validation: created.validation,
        schema: narrower.clone(),
        examples: created.versions[0].examples.clone(),
        expected_revision: created.revision,
        ..Default::default()
    };
    let refused = catalog.update_event_type(update.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("not backward compatible")
            && refused.message().contains("progress")
            && refused.message().contains("version 2"),
        "{}",
        refused.message()
    );

    // A new typed property narrows what an open schema accepted (a
    // "title" of any type): refused too.
    let titled = COURSE_SCHEMA.replace(
        r#""course_id": {"type": "integer"},"#,
        r#""course_id": {"type": "integer"}, "title": {"type": "string"},"#,
    );
    let refused = catalog
        .update_event_type(pb::UpdateEventTypeRequest {
            schema: titled,
            ..update.clone()
        })
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("data.title: type narrowed"),
        "{}",
        refused.message()
    );
    // A compatible edit (a looser bound) stays version 1.
    let wider = COURSE_SCHEMA.replace(r#""maximum": 1"#, r#""maximum": 100"#);
    let edited = catalog
        .update_event_type(pb::UpdateEventTypeRequest {
            schema: wider,
            ..update.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(edited.versions.len(), 1);
    assert!(edited.versions[0].schema.contains(r#""maximum": 100"#));

    // With new_version the narrower schema becomes version 2; v1 stays.
    let versioned = catalog
        .update_event_type(pb::UpdateEventTypeRequest {
            new_version: true,
            expected_revision: edited.revision,
            ..update.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        versioned
            .versions
            .iter()
            .map(|v| v.version)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(versioned.versions[1].schema, narrower);
    // A stale revision is refused, not lost.
    let stale = catalog
        .update_event_type(pb::UpdateEventTypeRequest {
            expected_revision: edited.revision,
            ..update
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);

    // Events are checked against the current version: progress required.
    let receiver = Receiver::start().await;
    hr.create(subscription(
        "acme",
        &receiver.url("/lms"),
        &["course_stat.*"],
    ))
    .await;
    hr.publish(
        "acme",
        "course_stat.created",
        br#"{"data":{"course_id":1}}"#,
    )
    .await;
    let entry = first_dlq_entry(&hr).await;
    let reason = entry
        .headers
        .get("Hookrelay-Dlq-Reason")
        .unwrap()
        .to_string();
    assert!(
        reason.contains("course_stat.created v2") && reason.contains("progress"),
        "{reason}"
    );
}

#[tokio::test]
async fn bad_schemas_and_examples_are_refused_by_name() {
    let hr = Harness::start().await;
    let mut catalog = hr.event_types().await;
    for (change, field, words) in [
        (
            pb::CreateEventTypeRequest {
                schema: "{not json".into(),
                ..course_type("acme", pb::SchemaValidation::Reject)
            },
            "schema: ",
            "JSON",
        ),
        (
            pb::CreateEventTypeRequest {
                schema: r#"{"$ref": "https://example.com/schema.json"}"#.into(),
                ..course_type("acme", pb::SchemaValidation::Reject)
            },
            "schema: ",
            "https://example.com/schema.json",
        ),
        (
            pb::CreateEventTypeRequest {
                examples: vec![r#"{"course_id": "x"}"#.into()],
                ..course_type("acme", pb::SchemaValidation::Reject)
            },
            "examples: ",
            "examples[0]",
        ),
        (
            pb::CreateEventTypeRequest {
                name: "course_stat.*".into(),
                ..course_type("acme", pb::SchemaValidation::Reject)
            },
            "name: ",
            "no wildcards",
        ),
    ] {
        let refused = catalog.create_event_type(change).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().starts_with(field) && refused.message().contains(words),
            "{}",
            refused.message()
        );
    }
    catalog
        .create_event_type(course_type("acme", pb::SchemaValidation::Reject))
        .await
        .unwrap();
    let twice = catalog
        .create_event_type(course_type("acme", pb::SchemaValidation::Reject))
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn the_catalog_is_isolated_by_tenant_and_the_global_one_is_shared() {
    let hr = Harness::start().await;
    let mut admin = hr.event_types().await;
    let mut acme = hr.event_types_as(TestEnv::ACME_TOKEN).await;
    let mut globex = hr.event_types_as(TestEnv::GLOBEX_TOKEN).await;

    // A tenant token writes its own catalog (tenant left empty) ...
    acme.create_event_type(course_type("", pb::SchemaValidation::Warn))
        .await
        .unwrap();
    // ... but neither another tenant's nor the global one.
    let denied = acme
        .create_event_type(course_type("globex", pb::SchemaValidation::Warn))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = acme
        .create_event_type(pb::CreateEventTypeRequest {
            global: true,
            name: "user.created".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    // An admin must say which catalog it means.
    let unnamed = admin
        .create_event_type(course_type("", pb::SchemaValidation::Warn))
        .await
        .unwrap_err();
    assert_eq!(unnamed.code(), Code::InvalidArgument);
    assert!(
        unnamed.message().starts_with("tenant: "),
        "{}",
        unnamed.message()
    );
    admin
        .create_event_type(pb::CreateEventTypeRequest {
            global: true,
            name: "user.created".into(),
            description: "shared".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let names = |list: pb::ListEventTypesResponse| {
        list.event_types
            .into_iter()
            .map(|t| (t.name, t.global))
            .collect::<Vec<_>>()
    };
    let acme_list = acme
        .list_event_types(pb::ListEventTypesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        names(acme_list),
        [
            ("course_stat.created".to_string(), false),
            ("user.created".to_string(), true)
        ]
    );
    let globex_list = globex
        .list_event_types(pb::ListEventTypesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(names(globex_list), [("user.created".to_string(), true)]);
    let hidden = globex
        .get_event_type(pb::GetEventTypeRequest {
            tenant: "acme".into(),
            name: "course_stat.created".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::PermissionDenied);
    let missing = globex
        .get_event_type(pb::GetEventTypeRequest {
            name: "course_stat.created".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        missing.message(),
        "event type course_stat.created not found in tenant globex"
    );
    let denied = globex
        .set_catalog_settings(pb::SetCatalogSettingsRequest {
            settings: Some(pb::CatalogSettings {
                tenant: "acme".into(),
                strict: true,
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_strict_catalog_admits_only_subscriptions_to_catalogued_types() {
    let hr = Harness::start().await;
    let mut catalog = hr.event_types().await;
    catalog
        .create_event_type(course_type("acme", pb::SchemaValidation::Off))
        .await
        .unwrap();
    catalog
        .set_catalog_settings(pb::SetCatalogSettingsRequest {
            settings: Some(pb::CatalogSettings {
                tenant: "acme".into(),
                strict: true,
            }),
        })
        .await
        .unwrap();
    let mut subscriptions = hr.subscriptions().await;
    let refused = subscriptions
        .create_subscription(pb::CreateSubscriptionRequest {
            subscription: Some(subscription(
                "acme",
                "http://127.0.0.1:9/hook",
                &["course_stat.*", "user.created"],
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused
            .message()
            .starts_with(r#"subscription.event_types[1]: "user.created" matches no event type of tenant acme's catalog, which is strict"#),
        "{}",
        refused.message()
    );
    subscriptions
        .create_subscription(pb::CreateSubscriptionRequest {
            subscription: Some(subscription(
                "acme",
                "http://127.0.0.1:9/hook",
                &["course_stat.*"],
            )),
        })
        .await
        .unwrap();
    // Archived types admit no new subscription; other tenants are not strict.
    catalog
        .archive_event_type(pb::ArchiveEventTypeRequest {
            tenant: "acme".into(),
            name: "course_stat.created".into(),
            archived: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = subscriptions
        .create_subscription(pb::CreateSubscriptionRequest {
            subscription: Some(subscription(
                "acme",
                "http://127.0.0.1:9/hook",
                &["course_stat.created"],
            )),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let archived = catalog
        .get_event_type(pb::GetEventTypeRequest {
            tenant: "acme".into(),
            name: "course_stat.created".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(archived.archived && archived.versions.len() == 1);
    subscriptions
        .create_subscription(pb::CreateSubscriptionRequest {
            subscription: Some(subscription(
                "globex",
                "http://127.0.0.1:9/hook",
                &["user.created"],
            )),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_test_event_sends_the_types_example() {
    let hr = Harness::start().await;
    hr.event_types()
        .await
        .create_event_type(course_type("acme", pb::SchemaValidation::Reject))
        .await
        .unwrap();
    let receiver = Receiver::start().await;
    let (sub, _) = hr
        .create(subscription(
            "acme",
            &receiver.url("/lms"),
            &["course_stat.created"],
        ))
        .await;
    let response = hr
        .subscriptions()
        .await
        .send_test_event(pb::SendTestEventRequest {
            tenant: "acme".into(),
            id: sub.id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.outcome, "success");
    let requests = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert!(
        requests[0]
            .body_str()
            .contains(r#""data":{"course_id": 42, "progress": 0.5}"#),
        "{}",
        requests[0].body_str()
    );
}
