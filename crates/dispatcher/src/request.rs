//! Builds the HTTP request for one delivery: the envelope, the subscription's
//! headers and the Standard Webhooks signature headers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hookrelay_core::delivery::RecordedRequest;
use hookrelay_core::event::Event;
use hookrelay_core::signing::{signature_header, webhook_id};
use hookrelay_core::subscription::{Method, Subscription, PROTECTED_HEADERS};
use hookrelay_template::{RenderError, ShapeError, Shaper};
use http::{HeaderName, HeaderValue};

use crate::sender::OutboundRequest;

/// A request could not be built. Always permanent: the same subscription
/// and event build the same way, so the attempt's outcome is `error` and
/// the delivery is given up at once (recorded, then dead-lettered).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("subscription has no usable signing secret: {0}")]
    Secret(#[from] hookrelay_core::signing::SecretError),
    #[error("request.{0}")]
    Shape(#[from] ShapeError),
    /// The template failed on this event (`template: rendering $.path: …`);
    /// a missing field is not a failure, it renders `null`.
    #[error("template: {0}")]
    Render(#[from] RenderError),
}

/// Compiled request shapes by subscription, recompiled when its revision changes.
#[derive(Default)]
pub struct Shapers {
    cache: Mutex<HashMap<String, (u64, Arc<Shaper>)>>,
}

impl Shapers {
    pub fn get(&self, subscription: &Subscription) -> Result<Arc<Shaper>, ShapeError> {
        let mut cache = self.cache.lock().expect("shaper cache lock");
        if let Some((revision, shaper)) = cache.get(&subscription.id) {
            if *revision == subscription.revision {
                return Ok(shaper.clone());
            }
        }
        let shaper = Arc::new(Shaper::new(&subscription.request)?);
        cache.insert(
            subscription.id.clone(),
            (subscription.revision, shaper.clone()),
        );
        Ok(shaper)
    }

    pub fn forget(&self, subscription_id: &str) {
        self.cache
            .lock()
            .expect("shaper cache lock")
            .remove(subscription_id);
    }
}

/// The signed request of `event` to `subscription`, sent at `now`, in the
/// trace `traceparent` names (the request's span, see
/// [`hookrelay_core::otlp::RequestSpan`]).
pub fn build(
    subscription: &Subscription,
    shaper: &Shaper,
    event: &Event,
    now: DateTime<Utc>,
    traceparent: Option<&str>,
) -> Result<OutboundRequest, BuildError> {
    let shaped = shaper.shape(event)?;
    let body = Bytes::from(shaped.body);
    let msg_id = webhook_id(&event.id, &subscription.id);
    let timestamp = now.timestamp();
    let keys = subscription.signing_keys(now)?;
    let signature = signature_header(&keys, &msg_id, timestamp, &body);
    let mut headers = Vec::with_capacity(5 + subscription.headers.len());
    if let Some(content_type) = shaped.content_type {
        headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        ));
    }
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
    // The event's trace continues in this request, as a span of its own;
    // a custom header of that name gives way.
    if let Some(traceparent) = traceparent {
        headers.retain(|(name, _)| name.as_str() != hookrelay_core::trace::HEADER);
        headers.push((
            HeaderName::from_static(hookrelay_core::trace::HEADER),
            header_value(traceparent),
        ));
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
    let url = match &shaped.query {
        Some(query) if !query.is_empty() => {
            let separator = if subscription.url.contains('?') {
                '&'
            } else {
                '?'
            };
            format!("{}{separator}{query}", subscription.url)
        }
        _ => subscription.url.clone(),
    };
    Ok(OutboundRequest {
        method: match shaped.method {
            Method::Get => http::Method::GET,
            Method::Post => http::Method::POST,
            Method::Put => http::Method::PUT,
        },
        url,
        headers,
        body,
    })
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("ids and signatures are visible ASCII")
}

/// The request as logged: credential headers redacted, the body's size and
/// hash with at most its first 4 KiB.
pub fn recorded(request: &OutboundRequest) -> RecordedRequest {
    RecordedRequest {
        method: request.method.to_string(),
        url: request.url.clone(),
        headers: request
            .headers
            .iter()
            .map(|(k, v)| {
                let value = String::from_utf8_lossy(v.as_bytes());
                (k.as_str().to_owned(), redact(k.as_str(), &value))
            })
            .collect(),
        ..RecordedRequest::default()
    }
    .with_body(&request.body)
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
