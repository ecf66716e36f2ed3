//! `hookctl tail`: follows attempts live, a line each, as the dispatcher
//! records them (a plain NATS subscription on the attempts subjects).

use std::io::Write;
use std::time::Duration;

use anyhow::anyhow;
use clap::Args;
use futures::StreamExt;
use hookrelay_core::delivery::AttemptRecord;

#[derive(Debug, Args)]
pub struct TailArgs {
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub subscription: Option<String>,
}

pub async fn run(
    nats: &str,
    prefix: &str,
    json: bool,
    args: TailArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let names = hookrelay_core::Names::new(prefix);
    let subject = names.attempt_subject(
        args.tenant.as_deref().unwrap_or("*"),
        args.subscription.as_deref().unwrap_or("*"),
    );
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(nats)
        .await
        .map_err(|e| anyhow!("cannot reach NATS at {nats}: {e} (set --nats or HOOKCTL_NATS)"))?;
    let mut attempts = client.subscribe(subject.clone()).await?;
    client.flush().await?;
    writeln!(out, "following {subject} (Ctrl-C to stop)")?;
    out.flush()?;
    while let Some(message) = attempts.next().await {
        let Ok(record) = serde_json::from_slice::<AttemptRecord>(&message.payload) else {
            continue;
        };
        if json {
            writeln!(out, "{}", String::from_utf8_lossy(&message.payload))?;
        } else {
            let status = record
                .response
                .as_ref()
                .map_or("-".to_owned(), |r| r.status.to_string());
            writeln!(
                out,
                "{} {} {} event={} attempt={} {} {} {}ms {}",
                record.started_at.format("%H:%M:%S%.3f"),
                record.tenant,
                record.subscription_id,
                record.event_id,
                record.attempt,
                record.outcome.as_str(),
                status,
                record.duration_ms,
                record.reason
            )?;
        }
        out.flush()?;
    }
    Ok(())
}
