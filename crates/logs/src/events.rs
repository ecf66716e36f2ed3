//! ListEvents: what publishers sent, read from the EVENTS stream with a
//! short-lived ordered consumer filtered by tenant and type.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use hookrelay_core::event::Event;
use hookrelay_core::Config;
use hookrelay_proto::v1 as pb;
use tonic::Status;

/// One page of events, oldest first, and the token of the next.
pub async fn list(
    js: &jetstream::Context,
    config: &Config,
    tokens: &crate::page_token::PageTokens,
    caller_tenant: &str,
    request: &pb::ListEventsRequest,
) -> Result<(Vec<pb::Event>, String), Status> {
    // A page token continues only the listing that issued it.
    let binding = format!(
        "events|{}|{}|{:?}|{:?}|{caller_tenant}",
        request.tenant,
        request.event_type,
        request.since.as_ref().map(|t| (t.seconds, t.nanos)),
        request.until.as_ref().map(|t| (t.seconds, t.nanos)),
    );
    hookrelay_core::event::check_token_path(&request.tenant, false)
        .map_err(|m| Status::invalid_argument(format!("tenant: {m}")))?;
    let names = config.names();
    let filter = match request.event_type.as_str() {
        "" | "*" => names.event_subject(&request.tenant, ">"),
        pattern => {
            hookrelay_core::subscription::check_pattern(pattern)
                .map_err(|m| Status::invalid_argument(format!("event_type: {m}")))?;
            names.event_subject(&request.tenant, &pattern.replace(".*", ".>"))
        }
    };
    let limit = match request.page_size {
        0 => 50,
        n if n > 1000 => return Err(Status::invalid_argument("page_size: at most 1000")),
        n => n as usize,
    };
    let deliver_policy = if !request.page_token.is_empty() {
        let [seq, _] = tokens
            .read(&binding, &request.page_token)
            .map_err(|e| Status::invalid_argument(format!("page_token: {e}")))?;
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: seq,
        }
    } else if let Some(since) = &request.since {
        let since = DateTime::from_timestamp(since.seconds, since.nanos.max(0) as u32)
            .ok_or_else(|| Status::invalid_argument("since: out of range"))?;
        consumer::DeliverPolicy::ByStartTime { start_time: since }
    } else {
        consumer::DeliverPolicy::All
    };
    let until: Option<DateTime<Utc>> = request
        .until
        .as_ref()
        .and_then(|u| DateTime::from_timestamp(u.seconds, u.nanos.max(0) as u32));
    let unavailable =
        |e: &dyn std::fmt::Display| Status::unavailable(format!("events stream: {e}"));
    let stream = js
        .get_stream(names.events_stream())
        .await
        .map_err(|e| unavailable(&e))?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
    let mut events = Vec::new();
    let mut next = String::new();
    loop {
        let message = match tokio::time::timeout(Duration::from_millis(300), messages.next()).await
        {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(error))) => return Err(unavailable(&error)),
            // Nothing more within the wait: the end of the stream.
            Ok(None) | Err(_) => break,
        };
        let info = message.info().map_err(|e| unavailable(&e))?;
        let (seq, published, pending) = (info.stream_sequence, info.published, info.pending);
        if until.is_some_and(|until| published >= until) {
            break;
        }
        if events.len() == limit {
            next = tokens.issue(&binding, [seq, 0]);
            break;
        }
        let msg_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned());
        if let Ok(event) = Event::from_stored(
            &names,
            &message.subject,
            msg_id.as_deref(),
            &message.payload,
            seq,
            published,
            usize::MAX,
        ) {
            events.push(to_proto(event));
        }
        if pending == 0 {
            break;
        }
    }
    Ok((events, next))
}

fn to_proto(event: Event) -> pb::Event {
    pb::Event {
        seq: event.seq,
        id: event.id,
        tenant: event.tenant,
        event_type: event.event_type,
        data: event.data.get().as_bytes().to_vec(),
        entity_id: event.entity_id.unwrap_or_default(),
        labels: event.labels.into_iter().collect(),
        occurred_at: event.occurred_at.unwrap_or_default(),
        received_at: Some(hookrelay_proto::timestamp(event.received_at)),
    }
}
