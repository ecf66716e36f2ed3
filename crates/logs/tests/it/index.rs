//! What the log service's listings see from the attempt index: order,
//! filters, paging, lookups by id and event, redelivered and expired records.

use crate::common::{id_at, now_ms, record, Fixture};
use chrono::DateTime;
use hookrelay_logs::index::{Cursor, Filter, Scope};

const HOUR: u64 = 3_600_000;

fn ids(page: &hookrelay_logs::index::Page) -> Vec<&str> {
    page.records.iter().map(|r| r.id.as_str()).collect()
}

fn by_event(tenant: &str, event_id: &str) -> Scope {
    Scope::Attempts {
        tenant: tenant.into(),
        subscription: None,
        event: Some(event_id.into()),
    }
}

fn by_subscription(tenant: &str, id: &str) -> Scope {
    Scope::Attempts {
        tenant: tenant.into(),
        subscription: Some(id.into()),
        event: None,
    }
}

fn by_tenant(tenant: &str) -> Scope {
    Scope::Attempts {
        tenant: tenant.into(),
        subscription: None,
        event: None,
    }
}

fn at(ms: u64) -> Option<DateTime<chrono::Utc>> {
    DateTime::from_timestamp_millis(ms as i64)
}

/// Ten attempts of `sub_a` (tenant acme) over three hours, one of `sub_b`;
/// returns the ids of `sub_a`'s newest first and the time of the oldest.
async fn ten_attempts(fx: &Fixture) -> (Vec<String>, u64) {
    let start = now_ms() - 2 * HOUR - 60_000;
    let mut made = Vec::new();
    let mut records = Vec::new();
    for i in 0..10u64 {
        let id = id_at(start + i * 15 * 60_000);
        let failed = i % 3 == 2;
        records.push(record(
            &id,
            "acme",
            "sub_a",
            &format!("evt-{i}"),
            if failed { "http5xx" } else { "success" },
            failed && i != 8,
        ));
        made.push(id);
    }
    records.push(record(
        &id_at(start - 1),
        "acme",
        "sub_b",
        "evt-0",
        "success",
        false,
    ));
    // Indexed out of time order, in two batches.
    let (newer, older) = records.split_at(6);
    assert!(fx.store(older).await.iter().all(|n| *n));
    assert!(fx.store(newer).await.iter().all(|n| *n));
    made.reverse();
    (made, start)
}

#[tokio::test]
async fn listings_are_newest_first_filtered_and_paged() {
    let fx = Fixture::new().await;
    let (made, start) = ten_attempts(&fx).await;
    let index = &fx.index;
    let sub = by_subscription("acme", "sub_a");

    let all = index
        .list(&sub, &Filter::default(), None, 50)
        .await
        .unwrap();
    assert_eq!(ids(&all), made);
    assert!(all.next.is_none());

    // Paging through in threes gives the same, in order, then stops.
    let mut paged = Vec::new();
    let mut before: Option<Cursor> = None;
    loop {
        let page = index
            .list(&sub, &Filter::default(), before, 3)
            .await
            .unwrap();
        assert!(page.records.len() <= 3);
        paged.extend(page.records.iter().map(|r| r.id.clone()));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    assert_eq!(paged, made);

    // By outcome, and by time: since inclusive, until exclusive.
    let failed = Filter {
        outcome: Some("http_5xx".into()),
        ..Default::default()
    };
    let page = index.list(&sub, &failed, None, 50).await.unwrap();
    assert_eq!(ids(&page), [&made[1], &made[4], &made[7]]);
    assert!(page
        .records
        .iter()
        .all(|r| r.outcome.as_str() == "http_5xx"));
    let unknown = Filter {
        outcome: Some("teapot".into()),
        ..Default::default()
    };
    assert!(index
        .list(&sub, &unknown, None, 50)
        .await
        .unwrap()
        .records
        .is_empty());
    let window = Filter {
        since: at(start + 2 * 15 * 60_000),
        until: at(start + 6 * 15 * 60_000),
        ..Default::default()
    };
    let page = index.list(&sub, &window, None, 50).await.unwrap();
    assert_eq!(ids(&page), &made[4..8]);

    // The tenant sees both subscriptions; sub_b's attempt is the oldest.
    let tenant = index
        .list(&by_tenant("acme"), &Filter::default(), None, 50)
        .await
        .unwrap();
    assert_eq!(tenant.records.len(), 11);
    assert_eq!(tenant.records[10].subscription_id, "sub_b");
    assert!(index
        .list(&by_tenant("globex"), &Filter::default(), None, 50)
        .await
        .unwrap()
        .records
        .is_empty());

    // Final failures only (attempt 8 failed but will be retried).
    for scope in [
        Scope::SubscriptionFailures("sub_a".into()),
        Scope::TenantFailures("acme".into()),
    ] {
        let page = index
            .list(&scope, &Filter::default(), None, 50)
            .await
            .unwrap();
        assert_eq!(ids(&page), [&made[4], &made[7]], "{scope:?}");
        let first = index
            .list(&scope, &Filter::default(), None, 1)
            .await
            .unwrap();
        let rest = index
            .list(&scope, &Filter::default(), first.next, 1)
            .await
            .unwrap();
        assert_eq!(ids(&rest), [&made[7]]);
        assert!(rest.next.is_none());
    }
}

#[tokio::test]
async fn attempts_are_found_by_id_and_by_event() {
    let fx = Fixture::new().await;
    let (made, _) = ten_attempts(&fx).await;
    let index = &fx.index;
    for id in &made {
        assert_eq!(&index.get(id).await.unwrap().unwrap().id, id);
    }
    assert!(index.get(&id_at(now_ms())).await.unwrap().is_none());
    assert!(index.get("att_nonsense").await.unwrap().is_none());

    let event = index
        .list(&by_event("acme", "evt-0"), &Filter::default(), None, 50)
        .await
        .unwrap();
    let subs: Vec<&str> = event
        .records
        .iter()
        .map(|r| r.subscription_id.as_str())
        .collect();
    assert_eq!(subs, ["sub_a", "sub_b"], "newest first");
    assert!(event.records.iter().all(|r| r.event_id == "evt-0"));
    let page = index
        .list(&by_event("acme", "evt-0"), &Filter::default(), None, 1)
        .await
        .unwrap();
    let rest = index
        .list(&by_event("acme", "evt-0"), &Filter::default(), page.next, 1)
        .await
        .unwrap();
    assert_eq!(rest.records[0].subscription_id, "sub_b");
    assert!(index
        .list(&by_event("acme", "evt-none"), &Filter::default(), None, 50)
        .await
        .unwrap()
        .records
        .is_empty());
}

#[tokio::test]
async fn an_event_id_is_looked_up_within_its_tenant() {
    let fx = Fixture::new().await;
    let start = now_ms() - 2 * HOUR;
    // The same event id in two tenants, sub_a retried an hour later.
    let acme_first = id_at(start);
    let acme_retry = id_at(start + HOUR);
    let acme_other_sub = id_at(start + HOUR + 1);
    let globex = id_at(start + 2);
    fx.store(&[
        record(&acme_first, "acme", "sub_a", "evt-1", "http5xx", false),
        record(&globex, "globex", "sub_g", "evt-1", "success", false),
    ])
    .await;
    fx.store(&[
        record(&acme_retry, "acme", "sub_a", "evt-1", "success", false),
        record(&acme_other_sub, "acme", "sub_b", "evt-1", "success", false),
    ])
    .await;
    let index = &fx.index;
    let listed = |tenant: &'static str| async move {
        index
            .list(&by_event(tenant, "evt-1"), &Filter::default(), None, 50)
            .await
            .unwrap()
    };
    assert_eq!(
        ids(&listed("acme").await),
        [&acme_other_sub, &acme_retry, &acme_first]
    );
    assert_eq!(ids(&listed("globex").await), [&globex]);
    assert!(listed("initech").await.records.is_empty());

    // The last attempt to a subscription, within the tenant only.
    let last = |tenant: &'static str, sub: &'static str| async move {
        index
            .last_attempt(tenant, "evt-1", sub)
            .await
            .unwrap()
            .map(|r| r.id)
    };
    assert_eq!(last("acme", "sub_a").await, Some(acme_retry.clone()));
    assert_eq!(last("acme", "sub_b").await, Some(acme_other_sub.clone()));
    assert_eq!(last("globex", "sub_g").await, Some(globex.clone()));
    assert_eq!(last("globex", "sub_a").await, None);
    assert_eq!(last("acme", "sub_g").await, None);
    assert!(index
        .last_attempt("acme", "evt-2", "sub_a")
        .await
        .unwrap()
        .is_none());

    // Only the tenant-scoped keys are written.
    let mut redis = fx.redis.clone();
    let prefix = &fx.env.config.prefix;
    let (shard, _) = hookrelay_logs::index::layout::event_shard("evt-1");
    for (tenant, hour) in [("acme", start / HOUR), ("globex", start / HOUR)] {
        let key = format!("{prefix}:log:ev:{{{tenant}}}:{shard}:{hour}");
        let exists: bool = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        assert!(exists, "{key}");
    }
    let old_layout: bool = redis::cmd("EXISTS")
        .arg(format!("{prefix}:log:ev:{shard}:{}", start / HOUR))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!old_layout);
}

#[tokio::test]
async fn redelivered_records_are_indexed_once_and_purged_ones_drop_out() {
    let fx = Fixture::new().await;
    let id = id_at(now_ms());
    let first = record(&id, "acme", "sub_a", "evt-1", "success", false);
    let seq = fx.publish(&first).await;
    let batch = [
        (crate::common::keys(&first), seq),
        (crate::common::keys(&first), seq),
    ];
    assert_eq!(fx.index.store(&batch).await.unwrap(), [true, false]);
    assert_eq!(fx.index.store(&batch[..1]).await.unwrap(), [false]);
    let sub = by_subscription("acme", "sub_a");
    let listed = fx
        .index
        .list(&sub, &Filter::default(), None, 50)
        .await
        .unwrap();
    assert_eq!(ids(&listed), [id.as_str()]);
    let health = fx.index.health("sub_a").await.unwrap();
    assert_eq!(health.recent, [true], "counted once");

    // Past the stream's max age the record is gone, and so is its entry.
    fx.js
        .get_stream(fx.env.config.names().attempts_stream())
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    assert!(fx.index.get(&id).await.unwrap().is_none());
    let listed = fx
        .index
        .list(&sub, &Filter::default(), None, 50)
        .await
        .unwrap();
    assert!(listed.records.is_empty());
}
