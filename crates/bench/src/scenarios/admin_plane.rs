//! The admin plane at scale: with 100,000 subscriptions across 1,000
//! tenants in the bucket, how long listing and creating take for one tenant
//! with 100 of them (the tenant index reads only that tenant's).

use std::time::Instant;

use futures::StreamExt;
use hdrhistogram::Histogram;
use hookrelay_proto::v1 as pb;

use super::{bar, Run};
use crate::admin;
use crate::report::Report;
use crate::Opts;

/// Subscriptions each tenant gets.
const PER_TENANT: u64 = 100;

fn of(tenant: u64, n: u64) -> pb::Subscription {
    let mut subscription =
        admin::subscription(&format!("http://127.0.0.1:9/t{tenant}/{n}"), "order.*");
    subscription.tenant = format!("t{tenant}");
    subscription
}

pub async fn admin(opts: &Opts) -> anyhow::Result<Report> {
    let tenants = opts.count(1_000, 2);
    // Calls of each kind timed.
    let calls = opts.count(300, 20);
    let total = tenants * PER_TENANT;
    let mut run = Run::start(opts, &[]).await?;
    let mut report = Report::new(
        "admin",
        format!(
            "{total} subscriptions across {tenants} tenants ({PER_TENANT} each), then {calls} ListSubscriptions and {calls} CreateSubscription calls for one tenant"
        ),
    );
    let client = admin::client(&run.server).await?;
    let progress = bar("creating subscriptions", total);
    let started = Instant::now();
    let created: Vec<anyhow::Result<String>> = futures::stream::iter(0..total)
        .map(|i| {
            let mut client = client.clone();
            let progress = progress.clone();
            async move {
                let id = admin::create(&mut client, of(i % tenants, i / tenants)).await;
                progress.inc(1);
                id
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    progress.finish_and_clear();
    created.into_iter().try_for_each(|id| id.map(drop))?;
    report.figure(
        "creates_per_sec_while_seeding",
        total as f64 / started.elapsed().as_secs_f64(),
        "/s",
    );
    run.mark().await?;

    let mut listing = Histogram::<u64>::new(3)?;
    let mut client = client.clone();
    for _ in 0..calls {
        let started = Instant::now();
        let page = client
            .list_subscriptions(pb::ListSubscriptionsRequest {
                tenant: "t0".into(),
                page_size: PER_TENANT as u32,
                ..Default::default()
            })
            .await?
            .into_inner();
        listing.record(started.elapsed().as_micros() as u64)?;
        anyhow::ensure!(
            page.subscriptions.len() as u64 == PER_TENANT,
            "listed {} of tenant t0's {PER_TENANT} subscriptions",
            page.subscriptions.len()
        );
    }
    let mut creating = Histogram::<u64>::new(3)?;
    for n in 0..calls {
        let started = Instant::now();
        admin::create(&mut client, of(1, PER_TENANT + n)).await?;
        creating.record(started.elapsed().as_micros() as u64)?;
    }
    let p99 = |h: &Histogram<u64>| h.value_at_quantile(0.99) as f64 / 1000.0;
    for (name, histogram) in [("list", &listing), ("create", &creating)] {
        report.figure(
            format!("{name}_p50"),
            histogram.value_at_quantile(0.5) as f64 / 1000.0,
            "ms",
        );
        report.figure(format!("{name}_p99"), p99(histogram), "ms");
    }
    report.target(
        format!(
            "listing a tenant's {PER_TENANT} subscriptions beside {total} others, p99 under 20 ms ({:.1} ms)",
            p99(&listing)
        ),
        p99(&listing) < 20.0,
    );
    report.target(
        format!(
            "creating a subscription for a tenant with {PER_TENANT}, p99 under 20 ms ({:.1} ms)",
            p99(&creating)
        ),
        p99(&creating) < 20.0,
    );
    run.finish(report).await
}
