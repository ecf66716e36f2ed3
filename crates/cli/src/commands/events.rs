//! `hookctl events list`: what publishers sent.

use std::io::Write;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::Table;
use hookrelay_proto::v1 as pb;
use hookrelay_proto::v1::delivery_logs_client::DeliveryLogsClient;

use crate::connect::{channel, status};
use crate::output;
use crate::time::timestamp;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Events of a tenant, oldest first.
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The tenant (default: the global --tenant, else a tenant token's
    /// own; required with an admin token).
    #[arg(id = "tenant_arg", value_name = "TENANT")]
    pub tenant: Option<String>,
    /// Exact type or `prefix.*`.
    #[arg(long = "type")]
    pub event_type: Option<String>,
    #[arg(long, value_parser = crate::time::parse)]
    pub since: Option<DateTime<Utc>>,
    #[arg(long, value_parser = crate::time::parse)]
    pub until: Option<DateTime<Utc>>,
    #[arg(long, default_value_t = 50)]
    pub page_size: u32,
    #[arg(long)]
    pub page_token: Option<String>,
}

pub async fn run(
    server: &crate::connect::Server,
    json: bool,
    command: EventsCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let EventsCommand::List(args) = command;
    let mut client = DeliveryLogsClient::new(channel(server).await?);
    let page = client
        .list_events(pb::ListEventsRequest {
            tenant: server.tenant(args.tenant),
            event_type: args.event_type.unwrap_or_default(),
            since: timestamp(args.since),
            until: timestamp(args.until),
            page_size: args.page_size,
            page_token: args.page_token.unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    if json {
        let events: Vec<serde_json::Value> = page
            .events
            .iter()
            .map(|e| {
                serde_json::json!({
                    "seq": e.seq, "id": e.id, "tenant": e.tenant, "type": e.event_type,
                    "data": serde_json::from_slice::<serde_json::Value>(&e.data).unwrap_or_default(),
                    "entity_id": e.entity_id, "labels": e.labels, "occurred_at": e.occurred_at,
                })
            })
            .collect();
        return output::print_json(
            out,
            &serde_json::json!({"events": events, "next_page_token": page.next_page_token}),
        );
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(vec!["SEQ", "ID", "TYPE", "ENTITY", "DATA"]);
    for e in &page.events {
        table.add_row(vec![
            e.seq.to_string(),
            e.id.clone(),
            e.event_type.clone(),
            e.entity_id.clone(),
            String::from_utf8_lossy(&e.data).into_owned(),
        ]);
    }
    writeln!(out, "{table}")?;
    if !page.next_page_token.is_empty() {
        writeln!(out, "more: --page-token {}", page.next_page_token)?;
    }
    Ok(())
}
