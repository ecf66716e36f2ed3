//! SendTestEvent: render a sample (or given) event with a subscription's
//! shape, send it now, and show what went out and what came back.

use chrono::Utc;
use hookrelay_core::event::Event;
use hookrelay_core::subscription::Subscription;
use hookrelay_dispatcher::request::{self, Shapers};
use hookrelay_dispatcher::sender::Sender;
use hookrelay_proto::v1 as pb;
use hookrelay_template::{sample_event, sample_event_type};

use crate::error::ApiError;

/// The event to send: `event_type` and `data` if given; else the type's
/// first example from the catalog (current version), else a sample.
pub fn event_for(
    subscription: &Subscription,
    event_type: &str,
    data: &str,
    catalog: &hookrelay_catalog::CatalogIndex,
) -> Result<Event, ApiError> {
    let event_type = if event_type.is_empty() {
        sample_event_type(&subscription.event_types)
    } else {
        hookrelay_core::event::check_token_path(event_type, true)
            .map_err(|m| ApiError::invalid("event_type", m))?;
        event_type.to_owned()
    };
    let mut event = sample_event(&subscription.tenant, &event_type);
    event.id = format!("evt_test_{}", ulid::Ulid::new());
    let example = catalog
        .lookup(&subscription.tenant, &event_type)
        .and_then(|known| known.examples.first().cloned());
    let data = match (data.is_empty(), &example) {
        (true, Some(example)) => example.as_str(),
        _ => data,
    };
    if !data.is_empty() {
        let value: Box<serde_json::value::RawValue> = serde_json::from_str(data)
            .map_err(|e| ApiError::invalid("data", format!("not valid JSON: {e}")))?;
        if !value.get().trim_start().starts_with('{') {
            return Err(ApiError::invalid("data", "must be a JSON object"));
        }
        event.data = value;
    }
    event.received_at = Utc::now();
    Ok(event)
}

/// Sends `event` to `subscription` as a delivery would.
pub async fn send(
    sender: &Sender,
    timeout: std::time::Duration,
    subscription: &Subscription,
    event: &Event,
) -> Result<pb::SendTestEventResponse, ApiError> {
    let shaper = Shapers::default()
        .get(subscription)
        .map_err(|e| ApiError::invalid(format!("subscription.request.{}", e.field), e.message))?;
    let outbound = request::build(subscription, &shaper, event, Utc::now(), None)
        .map_err(|e| ApiError::invalid("subscription.request", e.to_string()))?;
    let recorded = request::recorded(&outbound);
    let timeout = subscription.timeout.unwrap_or(timeout);
    let result = sender
        .send(outbound, timeout, subscription.success_rule)
        .await;
    Ok(pb::SendTestEventResponse {
        request: Some(hookrelay_proto::http_request(recorded)),
        response: result.response.map(hookrelay_proto::http_response),
        outcome: result.outcome.as_str().to_owned(),
        reason: result.reason,
        duration_ms: result.duration.as_millis() as u64,
    })
}
