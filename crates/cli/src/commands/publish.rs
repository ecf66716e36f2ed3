//! `hookctl publish`: puts an event on NATS the way a service would.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;

#[derive(Debug, Args)]
pub struct PublishArgs {
    pub tenant: String,
    /// Event type, e.g. `course_stat.created`.
    pub event_type: String,
    /// The event's `data` object as JSON, or `-` to read it from stdin.
    pub data: String,
    /// Event id (also the Nats-Msg-Id, so a repeat is dropped by JetStream);
    /// one is made (evt_<ULID>) if not given. Printed either way.
    #[arg(long)]
    pub id: Option<String>,
    /// The entity the event is about (string or number).
    #[arg(long)]
    pub entity_id: Option<String>,
    /// Label `key=value` (repeatable).
    #[arg(long = "label", value_parser = super::key_value)]
    pub labels: Vec<(String, String)>,
    /// RFC 3339 time the event happened.
    #[arg(long)]
    pub occurred_at: Option<String>,
}

/// Builds the event body of the contract: `{"data", "id"?, "entity_id"?, "labels"?, "occurred_at"?}`.
pub fn event_body(args: &PublishArgs, data: &str) -> anyhow::Result<serde_json::Value> {
    let data: serde_json::Value = serde_json::from_str(data).context("data is not valid JSON")?;
    if !data.is_object() {
        bail!("data must be a JSON object, like '{{\"course_id\": 42}}'");
    }
    let mut body = serde_json::json!({ "data": data });
    if let Some(id) = &args.id {
        body["id"] = id.clone().into();
    }
    if let Some(entity_id) = &args.entity_id {
        body["entity_id"] = entity_id.clone().into();
    }
    if !args.labels.is_empty() {
        body["labels"] = serde_json::Value::Object(
            args.labels
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        );
    }
    if let Some(at) = &args.occurred_at {
        chrono::DateTime::parse_from_rfc3339(at)
            .map_err(|e| anyhow!("--occurred-at {at:?} is not RFC 3339: {e}"))?;
        body["occurred_at"] = at.clone().into();
    }
    Ok(body)
}

pub async fn run(
    nats: &str,
    prefix: &str,
    json: bool,
    args: PublishArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let data = if args.data == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading data from stdin")?;
        text
    } else {
        args.data.clone()
    };
    // The id is chosen here, not by hookrelay, so that it can be printed:
    // it is what `attempts list --event` and `redeliver` take.
    let mut args = args;
    let id = args
        .id
        .get_or_insert_with(|| format!("evt_{}", ulid::Ulid::new()))
        .clone();
    let body = event_body(&args, &data)?;
    hookrelay_core::Names::check_prefix(prefix).map_err(|e| anyhow!("--prefix {e}"))?;
    hookrelay_core::event::check_token_path(&args.tenant, false)
        .map_err(|e| anyhow!("tenant {e}"))?;
    hookrelay_core::event::check_token_path(&args.event_type, true)
        .map_err(|e| anyhow!("event type {e}"))?;
    let subject = hookrelay_core::Names::new(prefix).event_subject(&args.tenant, &args.event_type);
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(nats.split(',').map(str::trim).collect::<Vec<_>>())
        .await
        .map_err(|e| anyhow!("cannot reach NATS at {nats}: {e} (set --nats or HOOKCTL_NATS)"))?;
    let js = async_nats::jetstream::new(client);
    let mut publish = async_nats::jetstream::message::PublishMessage::build()
        .payload(bytes::Bytes::from(serde_json::to_vec(&body)?));
    publish = publish.message_id(&id);
    let ack = js
        .send_publish(subject.clone(), publish)
        .await
        .map_err(|e| anyhow!("publishing to {subject}: {e}"))?
        .await
        .map_err(|e| anyhow!("{subject} not accepted by JetStream: {e} (is hookrelay running with --prefix {prefix}?)"))?;
    if json {
        crate::output::print_json(
            out,
            &serde_json::json!({"id": id, "subject": subject, "stream": ack.stream, "sequence": ack.sequence, "duplicate": ack.duplicate}),
        )
    } else {
        let duplicate = if ack.duplicate {
            " (duplicate id: dropped)"
        } else {
            ""
        };
        writeln!(
            out,
            "published {}/{} as event {id} (stream sequence {}){duplicate}",
            args.tenant, args.event_type, ack.sequence
        )?;
        Ok(())
    }
}
