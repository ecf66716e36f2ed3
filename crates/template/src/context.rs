//! What a template can refer to, built from an event.

use std::collections::BTreeMap;

use hookrelay_core::event::Event;
use minijinja::value::Serde;
use minijinja::Value;
use serde::Serialize;

#[derive(Serialize)]
struct Context<'a> {
    data: serde_json::Value,
    id: &'a str,
    /// The event id as a number when it is one, else the stream sequence.
    id_number: u64,
    #[serde(rename = "type")]
    event_type: &'a str,
    /// `course_stat` of `course_stat.created`.
    object: &'a str,
    /// `created` of `course_stat.created`.
    action: &'a str,
    tenant: &'a str,
    entity_id: Option<&'a str>,
    labels: &'a BTreeMap<String, String>,
    occurred_at: Option<&'a str>,
    /// `occurred_at`, else when hookrelay received the event (RFC 3339).
    timestamp: String,
    /// Sequence of the event in the EVENTS stream.
    seq: u64,
    #[serde(rename = "__date_format")]
    date_format: &'a str,
}

/// The template context of `event`, dates formatted with `date_format`
/// (empty for RFC 3339).
pub fn context(event: &Event, date_format: &str) -> Value {
    let (object, action) = event
        .event_type
        .rsplit_once('.')
        .unwrap_or((&event.event_type, ""));
    let context = Context {
        data: serde_json::from_str(event.data.get()).unwrap_or(serde_json::Value::Null),
        id: &event.id,
        id_number: event.id.parse().unwrap_or(event.seq),
        event_type: &event.event_type,
        object,
        action,
        tenant: &event.tenant,
        entity_id: event.entity_id.as_deref(),
        labels: &event.labels,
        occurred_at: event.occurred_at.as_deref(),
        timestamp: event.timestamp(),
        seq: event.seq,
        date_format,
    };
    Value::from(Serde(context))
}
