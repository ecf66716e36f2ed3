//! A subscription created through one process matches an event published
//! the moment the create returns, though the ingestor that matches it runs
//! in another process and learns of the subscription from its KV watch.

use std::time::Duration;

use hookrelay::Role;
use hookrelay_proto::v1 as pb;
use hookrelay_test_support::{Receiver, TestEnv};
use hookrelay_tests::Harness;

mod common;

#[tokio::test]
async fn an_event_published_right_after_a_create_matches_it() {
    let env = TestEnv::new();
    let _ingestor = common::role_process(&env, "ingestor", &[]);
    let _dispatcher = common::role_process(&env, "dispatcher", &[]);
    let hr = Harness::start_roles(env, &[Role::Subscriptions]).await;
    let receiver = Receiver::start().await;
    const TENANTS: usize = 12;
    for n in 0..TENANTS {
        let tenant = format!("tenant{n}");
        hr.create(pb::Subscription {
            tenant: tenant.clone(),
            url: receiver.url(&format!("/{tenant}")),
            event_types: vec!["*".into()],
            ..Default::default()
        })
        .await;
        hr.publish(&tenant, "order.paid", br#"{"data":{}}"#).await;
    }
    let requests = receiver.wait_for(TENANTS, Duration::from_secs(60)).await;
    let mut paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    paths.sort_unstable();
    paths.dedup();
    assert_eq!(paths.len(), TENANTS, "{paths:?}");
}
