//! Templates reach any depth: a field the event lacks renders `null` (JSON)
//! or empty (form, text) however deep the path, a save cannot be refused for
//! a well-formed path, and what fails only on real data is reported on the
//! attempt, given up at once and dead-lettered.

use std::time::Duration;

use hookrelay_proto::v1 as pb;
use hookrelay_tests::support::Receiver;
use hookrelay_tests::Harness;

use crate::logs::wait_attempts;
use crate::subscription;

const WAIT: Duration = Duration::from_secs(10);

/// A seed 002 action (Ringostat): its own method, format and template, no retries.
fn action(
    receiver: &Receiver,
    path: &str,
    format: pb::BodyFormat,
    template: &str,
) -> pb::Subscription {
    let mut sub = subscription("pbx", &receiver.url(path), &["call.ended"]);
    sub.request = Some(pb::RequestSpec {
        method: "POST".into(),
        body_format: format as i32,
        envelope: pb::Envelope::Custom as i32,
        template: template.into(),
        ..Default::default()
    });
    sub.retry_policy = Some(pb::RetryPolicy {
        policy: Some(pb::retry_policy::Policy::None(pb::NoRetry {})),
    });
    sub
}

/// Seed 002's nested object parameter: `contact` with fields of the event's
/// `data.contact`, two levels deep.
const CONTACT: &str = r#"{"call":"{{ data.call_id }}","contact":{"name":"{{ data.contact.name }}","phone":"{{ data.contact.phones[0] }}"}}"#;

#[tokio::test]
async fn a_nested_contact_saves_and_renders_empty_in_a_form_and_null_in_json_when_missing() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    // Both save: the sample event has no contact, which is no longer an error.
    hr.create(action(&receiver, "/form", pb::BodyFormat::Form, CONTACT))
        .await;
    hr.create(action(&receiver, "/json", pb::BodyFormat::Json, CONTACT))
        .await;

    hr.publish(
        "pbx",
        "call.ended",
        br#"{"id":"c-1","data":{"call_id":"c-1","contact":{"name":"Ann","phones":["+380441234567"]}}}"#,
    )
    .await;
    hr.publish(
        "pbx",
        "call.ended",
        br#"{"id":"c-2","data":{"call_id":"c-2"}}"#,
    )
    .await;
    receiver.wait_for(4, WAIT).await;

    let mut forms: Vec<String> = receiver
        .requests_to("/form")
        .iter()
        .map(|r| {
            assert_eq!(
                r.header("content-type"),
                Some("application/x-www-form-urlencoded")
            );
            r.body_str().to_owned()
        })
        .collect();
    forms.sort();
    assert_eq!(
        forms,
        [
            // contact[name]=Ann, contact[phone]=+380441234567 once decoded.
            "call=c-1&contact[name]=Ann&contact[phone]=%2B380441234567",
            // No contact: empty values, the keys still there.
            "call=c-2&contact[name]=&contact[phone]=",
        ]
    );
    let mut jsons: Vec<String> = receiver
        .requests_to("/json")
        .iter()
        .map(|r| r.body_str().to_owned())
        .collect();
    jsons.sort();
    assert_eq!(
        jsons,
        [
            r#"{"call":"c-1","contact":{"name":"Ann","phone":"+380441234567"}}"#,
            r#"{"call":"c-2","contact":{"name":null,"phone":null}}"#,
        ]
    );
}

#[tokio::test]
async fn paths_the_sample_lacks_save_on_create_and_update_and_unknown_functions_do_not() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let (created, _) = hr
        .create(action(
            &receiver,
            "/a",
            pb::BodyFormat::Json,
            r#"{"c":"{{ data.a.b.c }}"}"#,
        ))
        .await;
    let mut client = hr.subscriptions().await;
    let mut changed = created.clone();
    changed.request.as_mut().unwrap().template =
        r#"{"sku":"{{ data.items[0].sku }}","city":"{{ data.contact.address.city }}","n":"{{ data.amount * 2 }}"}"#.into();
    let updated = client
        .update_subscription(pb::UpdateSubscriptionRequest {
            subscription: Some(changed.clone()),
            expected_revision: created.revision,
        })
        .await
        .expect("a template reaching into missing branches saves")
        .into_inner();
    assert_eq!(
        updated.request.unwrap().template,
        changed.request.as_ref().unwrap().template
    );
    // What fails on every event is still refused, saying where.
    changed.request.as_mut().unwrap().template = r#"{"a":{"b":"{{ md6(data.a.b) }}"}}"#.into();
    let refused = client
        .update_subscription(pb::UpdateSubscriptionRequest {
            subscription: Some(changed),
            expected_revision: updated.revision,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        "subscription.request.template: does not render a sample event: rendering $.a.b: unknown function: md6 is unknown"
    );
}

#[tokio::test]
async fn a_filter_failing_on_an_event_is_one_recorded_attempt_given_up_and_dead_lettered() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    // Saves: the sample has no amount, and real events may.
    let (sub, _) = hr
        .create(action(
            &receiver,
            "/order",
            pb::BodyFormat::Json,
            r#"{"order":{"total":"{{ data.amount | round }}"}}"#,
        ))
        .await;
    hr.publish("pbx", "call.ended", br#"{"id":"e-missing","data":{}}"#)
        .await;
    hr.publish(
        "pbx",
        "call.ended",
        br#"{"id":"e-ok","data":{"amount":2.6}}"#,
    )
    .await;

    let attempts = wait_attempts(&hr, &sub.id, 2).await;
    let failed = attempts
        .iter()
        .find(|a| a.event_id == "e-missing")
        .expect("an attempt of the event the template failed on");
    assert_eq!(failed.outcome, "error");
    assert_eq!(failed.give_up_reason, "invalid");
    assert_eq!(
        failed.reason,
        "template: rendering $.order.total: invalid operation: cannot round value (undefined)"
    );
    let ok = attempts.iter().find(|a| a.event_id == "e-ok").unwrap();
    assert_eq!(ok.outcome, "success");

    // Not lost: the give-up is in the DLQ with the same reason.
    let entry = crate::first_dlq_entry(&hr).await;
    let reason = entry.headers.get("Hookrelay-Dlq-Reason").unwrap().as_str();
    assert_eq!(
        reason,
        "gave up (invalid) after attempt 1: template: rendering $.order.total: invalid operation: cannot round value (undefined)"
    );
    // Never retried: one attempt for it, while the other event's request arrived.
    let requests = receiver.wait_for(1, WAIT).await;
    assert_eq!(requests[0].body_str(), r#"{"order":{"total":3.0}}"#);
    assert_eq!(
        attempts
            .iter()
            .filter(|a| a.event_id == "e-missing")
            .count(),
        1
    );
    assert_eq!(receiver.requests_to("/order").len(), 1);
}
