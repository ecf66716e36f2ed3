//! Each service runs alone, as when scaled out, and together they deliver.

use std::time::Duration;

use hookrelay::Role;
use hookrelay_tests::support::{Receiver, TestEnv};
use hookrelay_tests::Harness;

use crate::subscription;

#[tokio::test]
async fn services_started_separately_deliver_together() {
    let roles = [
        Role::Subscriptions,
        Role::Logs,
        Role::Ingestor,
        Role::Dispatcher,
    ];
    let hr = Harness::start_roles(TestEnv::new(), &roles).await;
    assert_ne!(hr.grpc_addr, hr.logs_addr);
    let receiver = Receiver::start().await;
    let (sub, _) = hr
        .create(subscription("acme", &receiver.url("/split"), &["*"]))
        .await;
    hr.publish("acme", "user.created", br#"{"data":{"split":true}}"#)
        .await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let attempts = crate::logs::wait_attempts(&hr, &sub.id, 1).await;
    assert_eq!(attempts[0].outcome, "success");
    // The ingestor alone serves no gRPC, only its admin endpoints.
    let metrics = reqwest::get(format!("http://{}/metrics", hr.http_addrs[2]))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"hookrelay_events_ingested_total{event_type="user.created",tenant="acme"} 1"#
        ),
        "{metrics}"
    );
}
