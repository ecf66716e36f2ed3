//! `hookctl tail`: follows attempts live, a line each, as they are
//! recorded (the `TailAttempts` stream, scoped by the token like every
//! other call).

use std::io::Write;

use clap::Args;
use hookrelay_proto::v1 as pb;
use hookrelay_proto::v1::delivery_logs_client::DeliveryLogsClient;

use crate::connect::{channel, status};
use crate::output;

#[derive(Debug, Args)]
pub struct TailArgs {
    /// The tenant (default: the global --tenant, else a tenant token's
    /// own; required with an admin token).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Only this subscription's attempts (one of the tenant's).
    #[arg(long)]
    pub subscription: Option<String>,
}

pub async fn run(
    server: &crate::connect::Server,
    json: bool,
    args: TailArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let tenant = server.tenant(args.tenant);
    let mut client = DeliveryLogsClient::new(channel(server).await?);
    let mut attempts = client
        .tail_attempts(pb::TailAttemptsRequest {
            tenant: tenant.clone(),
            subscription_id: args.subscription.clone().unwrap_or_default(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let scope = match (tenant.as_str(), &args.subscription) {
        (_, Some(subscription)) => format!("subscription {subscription}"),
        ("", None) => "this token's tenant".to_owned(),
        (tenant, None) => format!("tenant {tenant}"),
    };
    writeln!(out, "following {scope} (Ctrl-C to stop)")?;
    out.flush()?;
    while let Some(attempt) = attempts.message().await.map_err(status)? {
        if json {
            writeln!(out, "{}", output::attempt_json(&attempt))?;
        } else {
            let status = output::status(&attempt);
            // Without a response, the error says why (the reason repeats it).
            let why = if attempt.error.is_empty() {
                &attempt.reason
            } else {
                &attempt.error
            };
            let started = attempt
                .started_at
                .as_ref()
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
                .map_or("-".to_owned(), |t| t.format("%H:%M:%S%.3f").to_string());
            writeln!(
                out,
                "{started} {} {} event={} attempt={} {} {status} {}ms {}",
                attempt.tenant,
                attempt.subscription_id,
                attempt.event_id,
                attempt.attempt,
                attempt.outcome,
                attempt.duration_ms,
                why
            )?;
        }
        out.flush()?;
    }
    Ok(())
}
