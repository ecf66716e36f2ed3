//! Builds the HTTP request for one delivery: the envelope, the subscription's
//! headers and the Standard Webhooks signature headers.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hookrelay_core::event::Event;
use hookrelay_core::signing::{signature_header, webhook_id};
use hookrelay_core::subscription::{Subscription, PROTECTED_HEADERS};
use http::{HeaderName, HeaderValue};

use crate::sender::OutboundRequest;

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

/// A request could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("subscription has no usable signing secret: {0}")]
    Secret(#[from] hookrelay_core::signing::SecretError),
}

/// The signed request of `event` to `subscription`, sent at `now`.
pub fn build(
    subscription: &Subscription,
    event: &Event,
    now: DateTime<Utc>,
) -> Result<OutboundRequest, BuildError> {
    let body = Bytes::from(standard_envelope(event));
    let msg_id = webhook_id(&event.id, &subscription.id);
    let timestamp = now.timestamp();
    let keys = subscription.signing_keys(now)?;
    let signature = signature_header(&keys, &msg_id, timestamp, &body);
    let mut headers = Vec::with_capacity(5 + subscription.headers.len());
    headers.push((
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    ));
    for (name, value) in &subscription.headers {
        // Validated when saved; checked again so a hand-edited record cannot
        // override what hookrelay owns.
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            continue;
        };
        if PROTECTED_HEADERS.contains(&name.as_str()) {
            continue;
        }
        headers.retain(|(existing, _)| *existing != name);
        headers.push((name, value));
    }
    headers.push((HeaderName::from_static("webhook-id"), header_value(&msg_id)));
    headers.push((
        HeaderName::from_static("webhook-timestamp"),
        HeaderValue::from(timestamp),
    ));
    headers.push((
        HeaderName::from_static("webhook-signature"),
        header_value(&signature),
    ));
    Ok(OutboundRequest {
        method: http::Method::POST,
        url: subscription.url.clone(),
        headers,
        body,
    })
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("ids and signatures are visible ASCII")
}

/// Header values worth hiding in logs: credentials a subscription sends.
pub fn redact(name: &str, value: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let secret = [
        "authorization",
        "cookie",
        "token",
        "secret",
        "key",
        "password",
        "auth",
    ]
    .iter()
    .any(|s| lower.contains(s));
    if secret && lower != "webhook-signature" {
        "<redacted>".to_owned()
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(occurred_at: Option<&str>) -> Event {
        Event {
            id: "e1".into(),
            tenant: "acme".into(),
            event_type: "user.created".into(),
            data: serde_json::value::RawValue::from_string(r#"{"b": 1,"a":"é"}"#.into()).unwrap(),
            entity_id: None,
            labels: Default::default(),
            occurred_at: occurred_at.map(str::to_owned),
            received_at: DateTime::from_timestamp(1_700_000_000, 5_000_000).unwrap(),
            seq: 1,
        }
    }

    #[test]
    fn standard_envelope_keeps_data_bytes() {
        assert_eq!(
            String::from_utf8(standard_envelope(&event(None))).unwrap(),
            r#"{"type":"user.created","timestamp":"2023-11-14T22:13:20.005Z","data":{"b": 1,"a":"é"}}"#
        );
        assert!(
            String::from_utf8(standard_envelope(&event(Some("2024-01-01T00:00:00+02:00"))))
                .unwrap()
                .contains(r#""timestamp":"2024-01-01T00:00:00+02:00""#)
        );
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(redact("Authorization", "Bearer x"), "<redacted>");
        assert_eq!(redact("X-Api-Key", "k"), "<redacted>");
        assert_eq!(redact("webhook-signature", "v1,abc"), "v1,abc");
        assert_eq!(
            redact("content-type", "application/json"),
            "application/json"
        );
    }
}
