//! `hookctl failures|redeliver|recover`: the error page and replay.

use std::io::Write;

use chrono::{DateTime, Utc};
use clap::Args;
use hookrelay_proto::v1 as pb;
use hookrelay_proto::v1::delivery_logs_client::DeliveryLogsClient;

use crate::connect::{channel, status};
use crate::output;
use crate::time::timestamp;

#[derive(Debug, Args)]
pub struct FailuresArgs {
    /// The tenant (default: the global --tenant, else a tenant token's
    /// own; required with an admin token).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this subscription's failures (one of the tenant's).
    #[arg(long)]
    pub subscription: Option<String>,
    /// RFC 3339 or a duration ago (`24h`).
    #[arg(long, value_parser = crate::time::parse)]
    pub since: Option<DateTime<Utc>>,
    #[arg(long, value_parser = crate::time::parse)]
    pub until: Option<DateTime<Utc>>,
    #[arg(long, default_value_t = 50)]
    pub page_size: u32,
    #[arg(long)]
    pub page_token: Option<String>,
}

/// Deliveries that gave up, newest first.
pub async fn failures(
    server: &crate::connect::Server,
    json: bool,
    args: FailuresArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut client = DeliveryLogsClient::new(channel(server).await?);
    let page = client
        .list_failures(pb::ListFailuresRequest {
            tenant: server.tenant(args.tenant),
            subscription_id: args.subscription.unwrap_or_default(),
            since: timestamp(args.since),
            until: timestamp(args.until),
            page_size: args.page_size,
            page_token: args.page_token.unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    output::failures_page(out, json, &page)
}

/// Sends one event to one subscription again.
pub async fn redeliver(
    server: &crate::connect::Server,
    json: bool,
    event: String,
    subscription: String,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut client = DeliveryLogsClient::new(channel(server).await?);
    let response = client
        .redeliver(pb::RedeliverRequest {
            tenant: server.tenant(None),
            event_id: event.clone(),
            subscription_id: subscription.clone(),
        })
        .await
        .map_err(status)?
        .into_inner();
    if json {
        output::print_json(
            out,
            &serde_json::json!({"event_id": event, "subscription_id": subscription, "webhook_id": response.webhook_id}),
        )
    } else {
        writeln!(
            out,
            "redelivering {event} to {subscription} (webhook-id {})",
            response.webhook_id
        )?;
        Ok(())
    }
}

/// Sends again every delivery of a subscription that gave up in a window.
pub async fn recover(
    server: &crate::connect::Server,
    json: bool,
    subscription: String,
    since: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut client = DeliveryLogsClient::new(channel(server).await?);
    let response = client
        .recover_failed(pb::RecoverFailedRequest {
            tenant: server.tenant(None),
            subscription_id: subscription.clone(),
            since: timestamp(Some(since)),
            until: timestamp(until),
        })
        .await
        .map_err(status)?
        .into_inner();
    if json {
        output::print_json(
            out,
            &serde_json::json!({"subscription_id": subscription, "event_ids": response.event_ids}),
        )
    } else {
        writeln!(
            out,
            "redelivering {} failed events to {subscription}",
            response.event_ids.len()
        )?;
        for id in response.event_ids {
            writeln!(out, "  {id}")?;
        }
        Ok(())
    }
}
