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

fn custom(format: BodyFormat, template: &str) -> RequestSpec {
    RequestSpec {
        body_format: format,
        envelope: Envelope::Custom,
        template: Some(template.into()),
        ..Default::default()
    }
}

fn render_data(template: &str, data: &str) -> Result<serde_json::Value, RenderError> {
    Template::compile(template)
        .unwrap()
        .render(&context(&event("call.ended", data), ""))
}

#[test]
fn missing_fields_are_null_at_any_depth() {
    let template = r#"{"abc":"{{ data.a.b.c }}","sku":"{{ data.items[0].sku }}","sku9":"{{ data.items[9].sku }}","deep":"{{ data.contact.address.city.name }}","under_null":"{{ data.none.x }}","under_number":"{{ data.n.x }}","lit":1}"#;
    let full = render_data(
        template,
        r#"{"a":{"b":{"c":3}},"items":[{"sku":"X-1"}],"contact":{"address":{"city":{"name":"Kyiv"}}},"none":null,"n":5}"#,
    )
    .unwrap();
    assert_eq!(
        full,
        serde_json::json!({"abc":3,"sku":"X-1","sku9":null,"deep":"Kyiv","under_null":null,"under_number":null,"lit":1})
    );
    // Missing at the first, second and third level alike.
    for data in [
        r#"{}"#,
        r#"{"a":{},"items":[],"contact":{}}"#,
        r#"{"a":{"b":{}},"items":[{}],"contact":{"address":{"city":{}}}}"#,
    ] {
        let out = render_data(template, data).unwrap();
        for key in ["abc", "sku", "sku9", "deep", "under_null", "under_number"] {
            assert_eq!(out[key], serde_json::Value::Null, "{key} of {data}");
        }
    }
}

#[test]
fn missing_fields_in_text_are_empty() {
    let out = render_data(
        r#"{"t":"to {{ data.contact.name }}!","n":"[{{ data.none }}]","i":"{{ data.items[3].sku }}-{{ data.items[0].sku }}"}"#,
        r#"{"none":null,"items":[{"sku":"a"}]}"#,
    )
    .unwrap();
    assert_eq!(out, serde_json::json!({"t":"to !","n":"[]","i":"-a"}));
}

#[test]
fn nested_objects_form_encode_as_brackets_and_missing_as_empty() {
    // Seed 002's "form" action with a nested contact object.
    let spec = custom(
        BodyFormat::Form,
        r#"{"call":"{{ data.call_id }}","contact":{"name":"{{ data.contact.name }}","phones":["{{ data.contact.phones[0] }}"]}}"#,
    );
    let with = shape(
        spec.clone(),
        &event(
            "call.ended",
            r#"{"call_id":7,"contact":{"name":"Ann","phones":["+380441234567"]}}"#,
        ),
    );
    assert_eq!(
        text(&with),
        "call=7&contact[name]=Ann&contact[phones][0]=%2B380441234567"
    );
    let without = shape(spec, &event("call.ended", r#"{"call_id":8}"#));
    assert_eq!(text(&without), "call=8&contact[name]=&contact[phones][0]=");
    // As JSON, the same paths are null.
    let json = shape(
        custom(
            BodyFormat::Json,
            r#"{"contact":{"name":"{{ data.contact.name }}"}}"#,
        ),
        &event("call.ended", r#"{"call_id":8}"#),
    );
    assert_eq!(text(&json), r#"{"contact":{"name":null}}"#);
}

#[test]
fn a_sample_cannot_refuse_a_path_but_refuses_what_fails_on_every_event() {
    let sample = sample_event("acme", "call.ended");
    let check = |format, template: &str| {
        Shaper::new(&custom(format, template))
            .unwrap()
            .check(&sample)
    };
    for template in [
        r#"{"c":"{{ data.a.b.c }}"}"#,
        r#"{"sku":"{{ data.items[0].sku }}"}"#,
        r#"{"contact":{"name":"{{ data.contact.name }}"}}"#,
        // Fail on the sample's data only: real events may have it.
        r#"{"n":"{{ data.amount + 1 }}"}"#,
        r#"{"n":"{{ data.amount | round }}"}"#,
        r#"{"s":"{{ data.csv | split(',') }}"}"#,
        r#"{"u":"{{ data.x | upper }}"}"#,
    ] {
        assert_eq!(check(BodyFormat::Json, template), Ok(()), "{template}");
        assert_eq!(check(BodyFormat::Form, template), Ok(()), "{template}");
    }
    // A form of one expression depends on the event too.
    assert_eq!(check(BodyFormat::Form, r#""{{ data.contact }}""#), Ok(()));
    for (format, template, expected) in [
        (
            BodyFormat::Json,
            r#"{"a":"{{ md6(data) }}"}"#,
            "rendering $.a: unknown function",
        ),
        (
            BodyFormat::Json,
            r#"{"a":{"b":"{{ data.x | nope }}"}}"#,
            "rendering $.a.b: unknown filter",
        ),
        (
            BodyFormat::Json,
            r#"{"a":"{{ data.x is nope }}"}"#,
            "rendering $.a: unknown test",
        ),
        (
            BodyFormat::Json,
            r#"{"a":"{{ md5(data, 1) }}"}"#,
            "rendering $.a: too many arguments",
        ),
        (
            BodyFormat::Form,
            r#"["{{ data.x }}"]"#,
            "rendering $: a form or query string needs",
        ),
    ] {
        let err = check(format, template).unwrap_err();
        assert_eq!(err.cause, Cause::Template, "{template}");
        assert!(err.to_string().starts_with(expected), "{err} !~ {expected}");
    }
}

#[test]
fn data_errors_fail_the_event_naming_the_path_and_are_permanent() {
    let shaper = Shaper::new(&custom(
        BodyFormat::Json,
        r#"{"order":{"total":"{{ data.amount | round }}"}}"#,
    ))
    .unwrap();
    let ok = shaper.shape(&event("o.paid", r#"{"amount":2.6}"#)).unwrap();
    assert_eq!(text(&ok), r#"{"order":{"total":3.0}}"#);
    let err = shaper.shape(&event("o.paid", r#"{}"#)).unwrap_err();
    assert_eq!(err.path, "$.order.total");
    assert_eq!(err.cause, Cause::Data);
    assert_eq!(err.kind(), hookrelay_core::failure::FailureKind::Permanent);
    assert!(
        err.to_string()
            .starts_with("rendering $.order.total: invalid operation: cannot round value"),
        "{err}"
    );
}

#[test]
fn batch_key_and_url_templates_render_missing_fields_empty() {
    // As the batcher renders them: one string template, as text.
    let as_text = |source: &str, data: &str| {
        let template = Template::from_json(serde_json::Value::String(source.into())).unwrap();
        let mut e = event("training.update", data);
        e.entity_id = Some("345".into());
        match template.render(&context(&e, "")).unwrap() {
            serde_json::Value::String(text) => text,
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        }
    };
    let url = "http://api.test/{{ object }}s/{{ entity_id }}/{{ data.meta.slug }}";
    assert_eq!(
        as_text(url, r#"{"meta":{"slug":"rust"}}"#),
        "http://api.test/trainings/345/rust"
    );
    assert_eq!(as_text(url, r#"{}"#), "http://api.test/trainings/345/");
    assert_eq!(
        as_text(url, r#"{"meta":null}"#),
        "http://api.test/trainings/345/"
    );
    let key = "{{ data.group.id }}";
    assert_eq!(as_text(key, r#"{"group":{"id":9}}"#), "9");
    assert_eq!(as_text(key, r#"{"group":{}}"#), "");
    assert_eq!(
        as_text("{{ object }}:{{ data.group.id }}", r#"{}"#),
        "training:"
    );
    // And the sample check lets them save.
    let sample = context(&sample_event("acme", "training.update"), "");
    for source in [url, key, "{{ data.items[2].sku }}", "{{ data.n * 2 }}"] {
        let template = Template::from_json(serde_json::Value::String(source.into())).unwrap();
        assert!(template.check(&sample).is_ok(), "{source}");
    }
}
