//! `hookctl attempts list|get`.

use std::io::Write;

use anyhow::bail;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use hookrelay_proto::v1 as pb;
use hookrelay_proto::v1::delivery_logs_client::DeliveryLogsClient;

use crate::connect::{channel, status};
use crate::output;
use crate::time::timestamp;

#[derive(Debug, Subcommand)]
pub enum AttemptsCommand {
    /// Attempts of a subscription, an event or a tenant, newest first.
    List {
        /// This subscription's attempts.
        #[arg(long, conflicts_with_all = ["event", "tenant"])]
        subscription: Option<String>,
        /// This event's attempts, within --tenant (event ids are unique only
        /// within a tenant).
        #[arg(long)]
        event: Option<String>,
        /// This tenant's attempts; with --event, the tenant that published
        /// the event (required with an admin token, a tenant token's own by
        /// default).
        #[arg(long)]
        tenant: Option<String>,
        /// Only this outcome: success, http_4xx, http_5xx, timeout, ...
        #[arg(long)]
        outcome: Option<String>,
        /// RFC 3339 or a duration ago (`1h`).
        #[arg(long, value_parser = crate::time::parse)]
        since: Option<DateTime<Utc>>,
        #[arg(long, value_parser = crate::time::parse)]
        until: Option<DateTime<Utc>>,
        #[arg(long, default_value_t = 50)]
        page_size: u32,
        #[arg(long)]
        page_token: Option<String>,
    },
    /// One attempt with its request and response.
    Get { id: String },
}

pub async fn run(
    server: &crate::connect::Server,
    json: bool,
    command: AttemptsCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut client = DeliveryLogsClient::new(channel(server).await?);
    match command {
        AttemptsCommand::List {
            subscription,
            event,
            tenant,
            outcome,
            since,
            until,
            page_size,
            page_token,
        } => {
            if subscription.is_none() && event.is_none() && tenant.is_none() {
                bail!(
                    "say whose attempts: --subscription ID, --event ID [--tenant T] or --tenant T"
                );
            }
            let page = client
                .list_attempts(pb::ListAttemptsRequest {
                    subscription_id: subscription.unwrap_or_default(),
                    event_id: event.unwrap_or_default(),
                    tenant: tenant.unwrap_or_default(),
                    page_size,
                    page_token: page_token.unwrap_or_default(),
                    outcome: outcome.unwrap_or_default(),
                    since: timestamp(since),
                    until: timestamp(until),
                })
                .await
                .map_err(status)?
                .into_inner();
            output::attempts_page(out, json, &page)
        }
        AttemptsCommand::Get { id } => {
            let attempt = client
                .get_attempt(pb::GetAttemptRequest { id })
                .await
                .map_err(status)?
                .into_inner();
            if json {
                output::print_json(out, &output::attempt_json(&attempt))
            } else {
                output::attempt_details(out, &attempt)
            }
        }
    }
}
