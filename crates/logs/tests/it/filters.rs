//! ListAttempts' filters together (subscription, event, outcome, time,
//! within a tenant), and paging when a call reaches its budget of records.

use std::collections::HashSet;

use crate::common::{id_at, now_ms, record, Fixture};
use chrono::DateTime;
use hookrelay_logs::index::{examine_budget, Cursor, Filter, Page, Scope};

const HOUR: u64 = 3_600_000;

fn ids(page: &Page) -> Vec<&str> {
    page.records.iter().map(|r| r.id.as_str()).collect()
}

fn at(ms: u64) -> Option<DateTime<chrono::Utc>> {
    DateTime::from_timestamp_millis(ms as i64)
}

fn attempts(tenant: &str, subscription: Option<&str>, event: Option<&str>) -> Scope {
    Scope::Attempts {
        tenant: tenant.into(),
        subscription: subscription.map(Into::into),
        event: event.map(Into::into),
    }
}

/// Every page of a listing, with the size of each.
async fn all_pages(
    fx: &Fixture,
    scope: &Scope,
    filter: &Filter,
    limit: usize,
) -> (Vec<String>, Vec<usize>) {
    let mut listed = Vec::new();
    let mut sizes = Vec::new();
    let mut before: Option<Cursor> = None;
    for _ in 0..1000 {
        let page = fx.index.list(scope, filter, before, limit).await.unwrap();
        assert!(page.records.len() <= limit);
        sizes.push(page.records.len());
        listed.extend(page.records.iter().map(|r| r.id.clone()));
        match page.next {
            Some(next) => {
                assert!(before.is_none_or(|b| next < b), "the cursor moves on");
                before = Some(next);
            }
            None => return (listed, sizes),
        }
    }
    panic!("the listing did not end");
}

#[tokio::test]
async fn filters_combine_within_a_tenant() {
    let fx = Fixture::new().await;
    let start = now_ms() - 3 * HOUR;
    // evt-x to sub_a: failed twice, then delivered, over two hours; to
    // sub_b once. Other events to both, and evt-x of another tenant.
    let chain = [
        id_at(start),
        id_at(start + HOUR),
        id_at(start + HOUR + 30 * 60_000),
    ];
    let to_b = id_at(start + 1);
    fx.store(&[
        record(&chain[0], "acme", "sub_a", "evt-x", "http5xx", false),
        record(&to_b, "acme", "sub_b", "evt-x", "success", false),
        record(
            &id_at(start + 2),
            "acme",
            "sub_a",
            "evt-y",
            "http5xx",
            false,
        ),
        record(
            &id_at(start + 3),
            "globex",
            "sub_g",
            "evt-x",
            "http5xx",
            false,
        ),
    ])
    .await;
    fx.store(&[
        record(&chain[1], "acme", "sub_a", "evt-x", "http5xx", false),
        record(
            &id_at(start + HOUR + 1),
            "acme",
            "sub_b",
            "evt-y",
            "success",
            false,
        ),
        record(&chain[2], "acme", "sub_a", "evt-x", "success", false),
        record(
            &id_at(start + 2 * HOUR),
            "acme",
            "sub_a",
            "evt-z",
            "success",
            false,
        ),
    ])
    .await;
    let index = &fx.index;
    let list = |scope: Scope, filter: Filter| async move {
        index.list(&scope, &filter, None, 50).await.unwrap()
    };
    let newest_first = [&chain[2], &chain[1], &chain[0]];

    let page = list(
        attempts("acme", Some("sub_a"), Some("evt-x")),
        Filter::default(),
    )
    .await;
    assert_eq!(ids(&page), newest_first, "the attempt chain");
    assert!(page.next.is_none());
    let failed = Filter {
        outcome: Some("http_5xx".into()),
        ..Default::default()
    };
    let page = list(
        attempts("acme", Some("sub_a"), Some("evt-x")),
        failed.clone(),
    )
    .await;
    assert_eq!(ids(&page), [&chain[1], &chain[0]]);
    let second_hour = Filter {
        since: at(start + HOUR),
        until: at(start + 2 * HOUR),
        ..Default::default()
    };
    let page = list(
        attempts("acme", Some("sub_a"), Some("evt-x")),
        second_hour.clone(),
    )
    .await;
    assert_eq!(ids(&page), [&chain[2], &chain[1]]);
    let all = Filter {
        outcome: Some("http_5xx".into()),
        ..second_hour
    };
    let page = list(attempts("acme", Some("sub_a"), Some("evt-x")), all).await;
    assert_eq!(ids(&page), [&chain[1]]);

    // Any subset: the event to every subscription, a subscription's
    // failures, the tenant's; never another tenant's.
    let page = list(attempts("acme", None, Some("evt-x")), Filter::default()).await;
    assert_eq!(ids(&page), [&chain[2], &chain[1], &to_b, &chain[0]]);
    let page = list(attempts("acme", Some("sub_a"), None), failed.clone()).await;
    assert_eq!(page.records.len(), 3);
    assert!(page.records.iter().all(|r| r.subscription_id == "sub_a"));
    let page = list(attempts("acme", None, None), Filter::default()).await;
    assert_eq!(page.records.len(), 7);
    assert!(page.records.iter().all(|r| r.tenant == "acme"));
    let page = list(
        attempts("acme", Some("sub_g"), Some("evt-x")),
        Filter::default(),
    )
    .await;
    assert!(page.records.is_empty(), "sub_g is globex's");
    let page = list(attempts("globex", Some("sub_g"), Some("evt-x")), failed).await;
    assert_eq!(page.records.len(), 1);

    // Paged one at a time, the chain comes out whole and in order.
    let (paged, _) = all_pages(
        &fx,
        &attempts("acme", Some("sub_a"), Some("evt-x")),
        &Filter::default(),
        1,
    )
    .await;
    assert_eq!(paged, newest_first.map(|id| id.to_owned()));
}

#[tokio::test]
async fn a_call_stops_at_its_budget_and_the_next_resumes() {
    let fx = Fixture::new().await;
    let budget = examine_budget(1);
    assert_eq!(budget, 40);
    let start = now_ms() - 2 * HOUR;
    // sub_a: 3 attempts of evt-wide among 100 of other events: newest
    // first, the matches sit behind two budgets of others.
    // evt-wide also went to 50 other subscriptions: more than a budget of
    // candidates, so the listing reads sub_a's entries instead.
    let mut records = Vec::new();
    let mut matches = Vec::new();
    for i in 0..100u64 {
        let id = id_at(start + i * 60_000);
        let event = if i % 5 == 0 && i < 20 && i > 0 {
            "evt-wide"
        } else {
            "evt-other"
        };
        if event == "evt-wide" {
            matches.push(id.clone());
        }
        records.push(record(&id, "acme", "sub_a", event, "success", false));
    }
    for i in 0..50u64 {
        let sub = format!("sub_{i}");
        records.push(record(
            &id_at(start + i * 60_000 + 7),
            "acme",
            &sub,
            "evt-wide",
            "http5xx",
            false,
        ));
    }
    for chunk in records.chunks(50) {
        fx.store(chunk).await;
    }
    matches.reverse();

    let scope = attempts("acme", Some("sub_a"), Some("evt-wide"));
    let first = fx
        .index
        .list(&scope, &Filter::default(), None, 1)
        .await
        .unwrap();
    assert!(first.records.is_empty(), "{:?}", ids(&first));
    assert!(first.next.is_some(), "a page of none, and more to come");
    let (listed, sizes) = all_pages(&fx, &scope, &Filter::default(), 1).await;
    assert_eq!(listed, matches, "every match once, newest first");
    assert!(sizes.iter().filter(|n| **n == 0).count() >= 2, "{sizes:?}");

    // The event's own index, read an hour at a time: 153 attempts of
    // evt-wide over two hours, 50 of them failures.
    let failed = Filter {
        outcome: Some("http_5xx".into()),
        ..Default::default()
    };
    let scope = attempts("acme", None, Some("evt-wide"));
    let (listed, _) = all_pages(&fx, &scope, &failed, 1).await;
    assert_eq!(listed.len(), 50);
    assert_eq!(
        listed.iter().collect::<HashSet<_>>().len(),
        50,
        "no repeats"
    );
    let whole = fx.index.list(&scope, &failed, None, 100).await.unwrap();
    assert_eq!(ids(&whole), listed, "the same order as one page");

    // Filters the index answers need no budget: a page is full.
    let scope = attempts("acme", Some("sub_a"), None);
    let page = fx
        .index
        .list(&scope, &Filter::default(), None, 60)
        .await
        .unwrap();
    assert_eq!(page.records.len(), 60);
}
