//! `hookctl attempts list|get`.

use std::io::Write;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use hookrelay_proto::v1 as pb;
use hookrelay_proto::v1::delivery_logs_client::DeliveryLogsClient;

use crate::connect::{channel, status};
use crate::output;
use crate::time::timestamp;

#[derive(Debug, Subcommand)]
pub enum AttemptsCommand {
    /// A tenant's attempts, newest first; --subscription, --event,
    /// --outcome, --since and --until narrow them, any of them together
    /// (`--subscription S --event E`: that event's attempt chain to S).
    List {
        /// Only attempts to this subscription (one of the tenant's).
        #[arg(long)]
        subscription: Option<String>,
        /// Only attempts of this event (event ids are unique only within a
        /// tenant).
        #[arg(long)]
        event: Option<String>,
        /// The tenant (default: the global --tenant, else a tenant token's
        /// own; required with an admin token).
        #[arg(long)]
        tenant: Option<String>,
        /// Only this outcome: success, http_4xx, http_5xx, redirect,
        /// timeout, connect_error, dns_error, tls_error, blocked, disabled,
        /// http_other, error.
        #[arg(long)]
        outcome: Option<String>,
        /// Only attempts started at or after: RFC 3339 or a duration ago
        /// (`1h`).
        #[arg(long, value_parser = crate::time::parse)]
        since: Option<DateTime<Utc>>,
        /// Only attempts started before: RFC 3339 or a duration ago.
        #[arg(long, value_parser = crate::time::parse)]
        until: Option<DateTime<Utc>>,
        /// At most this many; a page may hold fewer (even none) while a
        /// next page token follows: the server examines a bounded number
        /// of records per call.
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
            let page = client
                .list_attempts(pb::ListAttemptsRequest {
                    subscription_id: subscription.unwrap_or_default(),
                    event_id: event.unwrap_or_default(),
                    tenant: server.tenant(tenant),
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
                .get_attempt(pb::GetAttemptRequest {
                    tenant: server.tenant(None),
                    id,
                })
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
