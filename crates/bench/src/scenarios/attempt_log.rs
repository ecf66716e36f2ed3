//! The attempt log at scale: 1,000,000 attempt records of ten tenants
//! (97% successes, 2% 5xx, 1% timeouts over the last five hours) published
//! straight to ATTEMPTS and indexed by the log service, then ListAttempts
//! with an outcome filter for one tenant and for one subscription.

use std::time::Instant;

use bytes::Bytes;
use chrono::{Duration, Utc};
use hdrhistogram::Histogram;
use hookrelay_core::delivery::{AttemptRecord, Outcome, RecordedRequest};
use hookrelay_proto::v1 as pb;

use super::{bar, wait_consumed, Run};
use crate::admin;
use crate::publisher;
use crate::report::Report;
use crate::Opts;

const TENANTS: u64 = 10;

fn record(tenant: u64, subscription_id: &str, n: u64, per_tenant: u64, base_ms: i64) -> Bytes {
    // Spread over five hours, oldest first, as the dispatcher writes them.
    let ms = base_ms + (n as i64 * 5 * 3_600_000) / per_tenant.max(1) as i64;
    let started_at = chrono::DateTime::from_timestamp_millis(ms).expect("in range");
    let outcome = match n % 100 {
        0 => Outcome::Timeout,
        1 | 51 => Outcome::Http5xx,
        _ => Outcome::Success,
    };
    let record = AttemptRecord {
        id: format!("att_{}", ulid::Ulid::from_parts(ms as u64, rand::random())),
        event_id: format!("evt-{tenant}-{n}"),
        subscription_id: subscription_id.to_owned(),
        tenant: format!("t{tenant}"),
        event_type: "order.paid".into(),
        webhook_id: format!("msg_{tenant}_{n}"),
        attempt: 1,
        outcome,
        reason: match outcome {
            Outcome::Success => "status 200".into(),
            Outcome::Timeout => "timed out after 10s".into(),
            _ => "status 503".into(),
        },
        error: match outcome {
            Outcome::Timeout => "timed out after 10s".into(),
            _ => String::new(),
        },
        request: RecordedRequest {
            method: "POST".into(),
            url: "http://127.0.0.1:9/hook".into(),
            ..Default::default()
        },
        response: None,
        started_at,
        duration_ms: 3,
        event_received_at: started_at,
        next_attempt_at: None,
        give_up: None,
        event_seq: n + 1,
        source: Default::default(),
        redelivery: false,
        trace_id: None,
        schema_violation: None,
    };
    Bytes::from(serde_json::to_vec(&record).expect("records serialize"))
}

pub async fn attempt_log(opts: &Opts) -> anyhow::Result<Report> {
    let total = opts.count(1_000_000, 200);
    let per_tenant = total / TENANTS;
    let calls = opts.count(300, 20);
    let mut run = Run::start(opts, &[]).await?;
    let mut report = Report::new(
        "attempt-log",
        format!(
            "{} attempt records of {TENANTS} tenants (1% timeouts, 2% 5xx) indexed, then {calls} ListAttempts by outcome for one tenant and for one subscription",
            per_tenant * TENANTS
        ),
    );
    let names = run.server.config.names();
    // Real subscriptions, one per tenant: ListAttempts checks the one it is
    // asked about exists.
    let mut subscriptions = Vec::new();
    let mut admin_client = admin::client(&run.server).await?;
    for tenant in 0..TENANTS {
        let mut subscription = admin::subscription("http://127.0.0.1:9/hook", "never.*");
        subscription.tenant = format!("t{tenant}");
        subscriptions.push(admin::create(&mut admin_client, subscription).await?);
    }
    let base_ms = (Utc::now() - Duration::hours(6)).timestamp_millis();
    let started = Instant::now();
    for tenant in 0..TENANTS {
        let id = &subscriptions[tenant as usize];
        let subject = names.attempt_subject(&format!("t{tenant}"), id);
        publisher::closed_loop(
            &run.js,
            &subject,
            per_tenant,
            publisher::WINDOW,
            |n, _| record(tenant, id, n, per_tenant, base_ms),
            &bar(&format!("recording tenant t{tenant}"), per_tenant),
        )
        .await?;
    }
    wait_consumed(&run.js, &names.attempts_stream(), &names.consumer("logs")).await?;
    report.figure(
        "indexed_per_sec",
        (per_tenant * TENANTS) as f64 / started.elapsed().as_secs_f64(),
        "/s",
    );
    run.mark().await?;

    let mut client = admin::logs_client(&run.server).await?;
    let mut by_tenant = Histogram::<u64>::new(3)?;
    let mut by_subscription = Histogram::<u64>::new(3)?;
    for i in 0..calls {
        let (histogram, request, outcome) = if i % 2 == 0 {
            (
                &mut by_tenant,
                pb::ListAttemptsRequest {
                    tenant: "t0".into(),
                    outcome: "timeout".into(),
                    ..Default::default()
                },
                "timeout",
            )
        } else {
            (
                &mut by_subscription,
                pb::ListAttemptsRequest {
                    tenant: "t1".into(),
                    subscription_id: subscriptions[1].clone(),
                    outcome: "http_5xx".into(),
                    ..Default::default()
                },
                "http_5xx",
            )
        };
        let started = Instant::now();
        let page = client.list_attempts(request).await?.into_inner();
        histogram.record(started.elapsed().as_micros() as u64)?;
        anyhow::ensure!(
            !page.attempts.is_empty() && page.attempts.iter().all(|a| a.outcome == outcome),
            "ListAttempts by {outcome} returned {} attempts, not all {outcome}",
            page.attempts.len()
        );
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for (name, histogram) in [
        ("by_tenant", &by_tenant),
        ("by_subscription", &by_subscription),
    ] {
        report.figure(format!("list_{name}_outcome_p50"), ms(histogram, 0.5), "ms");
        report.figure(
            format!("list_{name}_outcome_p99"),
            ms(histogram, 0.99),
            "ms",
        );
    }
    let worst = ms(&by_tenant, 0.99).max(ms(&by_subscription, 0.99));
    report.target(
        format!(
            "ListAttempts with an outcome filter over {} attempts, p99 under 50 ms ({worst:.1} ms)",
            per_tenant * TENANTS
        ),
        worst < 50.0,
    );
    run.finish(report).await
}
