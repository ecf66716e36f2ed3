//! Request shaping: turns an event into the body (or query) a subscription
//! asked for — an envelope preset or its own JSON-shaped template, encoded
//! as JSON, raw text, JSON-RPC or a URL-encoded form — with one engine
//! (minijinja) and no code path per product.
#![forbid(unsafe_code)]

pub mod context;
pub mod functions;
pub mod template;

use hookrelay_core::event::Event;
use hookrelay_core::subscription::{BodyFormat, Envelope, Method, RequestSpec};
use serde_json::Value as Json;

pub use context::context;
pub use template::{Cause, RenderError, Template, TemplateError};

/// The presets, as templates of the same engine.
pub fn preset(envelope: Envelope) -> Option<&'static str> {
    match envelope {
        Envelope::Standard => {
            Some(r#"{"type":"{{ type }}","timestamp":"{{ timestamp }}","data":"{{ data }}"}"#)
        }
        Envelope::EntityEvent => {
            Some(r#"{"type":"{{ object }}","event":"{{ action }}","data":"{{ data }}"}"#)
        }
        Envelope::ForumEvent => Some(
            r#"{"api_version":"1","data":{"object":"{{ data }}"},"object":"event","id":"{{ id_number }}","type":"{{ type }}","mode":"live"}"#,
        ),
        // A batch's data is already `{"changes": [...]}`.
        Envelope::ChangesBatch => Some(r#""{{ data }}""#),
        Envelope::Custom => None,
    }
}

/// A request spec that cannot be used, naming its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ShapeError {
    pub field: &'static str,
    pub message: String,
}

/// What to send, before headers and signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shaped {
    pub method: Method,
    /// Appended to the URL's query (GET).
    pub query: Option<String>,
    /// `None` for a request without a body.
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

/// A subscription's compiled request shape.
#[derive(Debug)]
pub struct Shaper {
    spec: RequestSpec,
    /// `None`: the `standard` envelope as JSON, built byte for byte.
    template: Option<Template>,
}

impl Shaper {
    /// Compiles `spec`, checking every part of it.
    pub fn new(spec: &RequestSpec) -> Result<Shaper, ShapeError> {
        let err = |field, message: String| ShapeError { field, message };
        if let Some(format) = spec.date_format.as_deref() {
            functions::check_date_format(format).map_err(|m| err("date_format", m))?;
        }
        if spec.body_format == BodyFormat::JsonRpc
            && spec
                .jsonrpc_method
                .as_deref()
                .is_none_or(|m| m.trim().is_empty())
        {
            return Err(err(
                "jsonrpc_method",
                "is required with the json_rpc body format".into(),
            ));
        }
        if spec.envelope != Envelope::Custom && spec.template.is_some() {
            return Err(err(
                "template",
                "is used only with the custom envelope".into(),
            ));
        }
        let fast = spec.envelope == Envelope::Standard
            && spec.body_format == BodyFormat::Json
            && spec.method != Method::Get;
        let template = if fast {
            None
        } else {
            let source = match spec.envelope {
                Envelope::Custom => spec.template.as_deref().ok_or_else(|| {
                    err("template", "is required with the custom envelope".into())
                })?,
                other => preset(other).expect("presets have templates"),
            };
            Some(Template::compile(source).map_err(|e| err("template", e.to_string()))?)
        };
        Ok(Shaper {
            spec: spec.clone(),
            template,
        })
    }

    /// Checks the spec against a sample event, as a save does: fails only
    /// on what would fail for every event (see [`Template::check`]); a
    /// well-formed path to a field the sample lacks renders `null`, and what
    /// fails on the sample's data alone is left to real events, whose
    /// attempts report it.
    pub fn check(&self, sample: &Event) -> Result<(), RenderError> {
        match self.shape(sample) {
            Ok(_) => Ok(()),
            Err(e) if e.cause == Cause::Data => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The request for `event`.
    pub fn shape(&self, event: &Event) -> Result<Shaped, RenderError> {
        let Some(template) = &self.template else {
            return Ok(Shaped {
                method: self.spec.method,
                query: None,
                content_type: Some("application/json"),
                body: standard_envelope(event),
            });
        };
        let date_format = self.spec.date_format.as_deref().unwrap_or("");
        let value = template.render(&context(event, date_format))?;
        self.encode(value, event.seq)
    }

    fn encode(&self, value: Json, seq: u64) -> Result<Shaped, RenderError> {
        // A template that is one expression renders what the event holds;
        // any other renders the same shape for every event.
        let cause = match &self.template {
            Some(template) if template.is_expression() => Cause::Data,
            _ => Cause::Template,
        };
        let fail = |message: String| RenderError {
            path: "$".into(),
            message,
            cause,
        };
        if self.spec.method == Method::Get {
            return Ok(Shaped {
                method: Method::Get,
                query: Some(form(&value).map_err(fail)?),
                content_type: None,
                body: Vec::new(),
            });
        }
        let (content_type, body) = match self.spec.body_format {
            BodyFormat::Json => (
                "application/json",
                serde_json::to_vec(&value).expect("JSON values serialize"),
            ),
            BodyFormat::Raw => (
                "text/plain; charset=utf-8",
                match value {
                    Json::String(text) => text.into_bytes(),
                    other => serde_json::to_vec(&other).expect("JSON values serialize"),
                },
            ),
            BodyFormat::JsonRpc => {
                let mut call = serde_json::Map::new();
                call.insert("jsonrpc".into(), "2.0".into());
                call.insert(
                    "method".into(),
                    self.spec.jsonrpc_method.clone().unwrap_or_default().into(),
                );
                call.insert("params".into(), value);
                call.insert("id".into(), seq.into());
                (
                    "application/json",
                    serde_json::to_vec(&call).expect("JSON values serialize"),
                )
            }
            BodyFormat::Form => (
                "application/x-www-form-urlencoded",
                form(&value).map_err(fail)?.into_bytes(),
            ),
        };
        Ok(Shaped {
            method: self.spec.method,
            query: None,
            content_type: Some(content_type),
            body,
        })
    }
}

/// URL-encoded pairs of an object, nested keys as `a[b]=`, arrays as `a[0]=`.
fn form(value: &Json) -> Result<String, String> {
    if !value.is_object() {
        return Err("a form or query string needs the template to render an object".into());
    }
    serde_qs::to_string(value).map_err(|e| format!("cannot URL-encode: {e}"))
}

/// The `standard` envelope: `{"type","timestamp","data"}`, `data` byte for
/// byte as published.
pub fn standard_envelope(event: &Event) -> Vec<u8> {
    let event_type = serde_json::to_string(&event.event_type).expect("strings serialize");
    let timestamp = serde_json::to_string(&event.timestamp()).expect("strings serialize");
    let data = event.data.get();
    let mut body = Vec::with_capacity(40 + event_type.len() + timestamp.len() + data.len());
    body.extend_from_slice(b"{\"type\":");
    body.extend_from_slice(event_type.as_bytes());
    body.extend_from_slice(b",\"timestamp\":");
    body.extend_from_slice(timestamp.as_bytes());
    body.extend_from_slice(b",\"data\":");
    body.extend_from_slice(data.as_bytes());
    body.push(b'}');
    body
}

/// A concrete event type for a subscription's patterns: the first pattern,
/// with `*` made `sample` (`deal.*` → `deal.sample`, `*` → `sample.created`).
pub fn sample_event_type(patterns: &[String]) -> String {
    match patterns.first().map(String::as_str) {
        None | Some("*") => "sample.created".into(),
        Some(pattern) => match pattern.strip_suffix(".*") {
            Some(stem) => format!("{stem}.sample"),
            None => pattern.to_owned(),
        },
    }
}

/// An event to test-render templates against when a subscription is saved
/// (with [`Shaper::check`] or [`Template::check`], which a field it lacks
/// cannot fail).
pub fn sample_event(tenant: &str, event_type: &str) -> Event {
    Event {
        id: "evt_sample".into(),
        tenant: tenant.into(),
        event_type: event_type.into(),
        data: serde_json::value::RawValue::from_string(r#"{"id":1,"name":"sample"}"#.into())
            .expect("valid JSON"),
        entity_id: Some("1".into()),
        labels: Default::default(),
        occurred_at: None,
        received_at: chrono::Utc::now(),
        seq: 1,
        traceparent: None,
    }
}

#[cfg(test)]
mod tests;
