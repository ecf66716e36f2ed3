//! The presets and body formats, byte for byte.

use chrono::DateTime;
use hookrelay_core::event::Event;
use hookrelay_core::subscription::{BodyFormat, Envelope, Method, RequestSpec};

use super::*;

fn event(event_type: &str, data: &str) -> Event {
    Event {
        id: "1534".into(),
        tenant: "acme".into(),
        event_type: event_type.into(),
        data: serde_json::value::RawValue::from_string(data.into()).unwrap(),
        entity_id: None,
        labels: Default::default(),
        occurred_at: Some("2024-03-05T06:07:08Z".into()),
        received_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        seq: 77,
        traceparent: None,
    }
}

fn shape(spec: RequestSpec, event: &Event) -> Shaped {
    Shaper::new(&spec).unwrap().shape(event).unwrap()
}

fn text(shaped: &Shaped) -> &str {
    std::str::from_utf8(&shaped.body).unwrap()
}

#[test]
fn standard_is_byte_exact_and_the_preset_agrees() {
    let e = event("user.created", r#"{"b": 1,"a":2}"#);
    let fast = shape(RequestSpec::default(), &e);
    assert_eq!(
        text(&fast),
        r#"{"type":"user.created","timestamp":"2024-03-05T06:07:08Z","data":{"b": 1,"a":2}}"#
    );
    let form = shape(
        RequestSpec {
            body_format: BodyFormat::Form,
            ..Default::default()
        },
        &e,
    );
    assert_eq!(
        text(&form),
        "type=user.created&timestamp=2024-03-05T06:07:08Z&data[b]=1&data[a]=2"
    );
}

#[test]
fn entity_event_splits_the_type() {
    let e = event("course_stat.created", r#"{"course_id":42,"progress":0.5}"#);
    let shaped = shape(
        RequestSpec {
            envelope: Envelope::EntityEvent,
            ..Default::default()
        },
        &e,
    );
    assert_eq!(
        text(&shaped),
        r#"{"type":"course_stat","event":"created","data":{"course_id":42,"progress":0.5}}"#
    );
}

#[test]
fn forum_event_matches_the_seed() {
    let e = event(
        "user.created",
        r#"{"name":"John Doe","userGroups":[7440,2452],"allowEmails":false,"object":"User"}"#,
    );
    let shaped = shape(
        RequestSpec {
            envelope: Envelope::ForumEvent,
            ..Default::default()
        },
        &e,
    );
    assert_eq!(
        text(&shaped),
        r#"{"api_version":"1","data":{"object":{"name":"John Doe","userGroups":[7440,2452],"allowEmails":false,"object":"User"}},"object":"event","id":1534,"type":"user.created","mode":"live"}"#
    );
}

#[test]
fn body_formats() {
    let e = event("call.ended", r#"{"phone":"+380441234567","duration":31}"#);
    let custom = |format, template: &str| RequestSpec {
        body_format: format,
        envelope: Envelope::Custom,
        template: Some(template.into()),
        jsonrpc_method: Some("calls.ended".into()),
        ..Default::default()
    };
    let raw = shape(
        custom(
            BodyFormat::Raw,
            r#""call {{ data.phone }} {{ data.duration }}s""#,
        ),
        &e,
    );
    assert_eq!(text(&raw), "call +380441234567 31s");
    assert_eq!(raw.content_type, Some("text/plain; charset=utf-8"));
    let rpc = shape(
        custom(BodyFormat::JsonRpc, r#"{"phone":"{{ data.phone }}"}"#),
        &e,
    );
    assert_eq!(
        text(&rpc),
        r#"{"jsonrpc":"2.0","method":"calls.ended","params":{"phone":"+380441234567"},"id":77}"#
    );
    let form = shape(
        custom(
            BodyFormat::Form,
            r#"{"call":{"phone":"{{ data.phone }}","tags":["a","b"]}}"#,
        ),
        &e,
    );
    assert_eq!(
        text(&form),
        "call[phone]=%2B380441234567&call[tags][0]=a&call[tags][1]=b"
    );
    assert_eq!(form.content_type, Some("application/x-www-form-urlencoded"));
    let get = shape(
        RequestSpec {
            method: Method::Get,
            ..custom(
                BodyFormat::Json,
                r#"{"phone":"{{ data.phone }}","d":"{{ data.duration }}"}"#,
            )
        },
        &e,
    );
    assert_eq!(get.query.as_deref(), Some("phone=%2B380441234567&d=31"));
    assert!(get.body.is_empty());
    assert_eq!(get.content_type, None);
}

#[test]
fn bad_specs_name_the_field() {
    let cases = [
        (
            RequestSpec {
                envelope: Envelope::Custom,
                ..Default::default()
            },
            "template: is required",
        ),
        (
            RequestSpec {
                template: Some("{}".into()),
                ..Default::default()
            },
            "template: is used only",
        ),
        (
            RequestSpec {
                body_format: BodyFormat::JsonRpc,
                ..Default::default()
            },
            "jsonrpc_method: is required",
        ),
        (
            RequestSpec {
                date_format: Some("%Q".into()),
                ..Default::default()
            },
            "date_format",
        ),
        (
            RequestSpec {
                envelope: Envelope::Custom,
                template: Some(r#"{"a": "{{ x | }}"}"#.into()),
                ..Default::default()
            },
            "template: $.a: syntax error",
        ),
        (
            RequestSpec {
                envelope: Envelope::Custom,
                template: Some("{".into()),
                ..Default::default()
            },
            "template: line 1 column 1",
        ),
    ];
    for (spec, expected) in cases {
        let err = Shaper::new(&spec).unwrap_err().to_string();
        assert!(err.starts_with(expected), "{err} !~ {expected}");
    }
}
