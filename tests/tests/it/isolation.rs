//! A receiver that never answers does not starve a healthy one.

use std::time::{Duration, Instant};

use hookrelay_tests::support::{Receiver, Reply};
use hookrelay_tests::Harness;

use crate::subscription;

const EVENTS: usize = 300;

async fn publish_burst(hr: &Harness, from: usize) {
    for n in from..from + EVENTS {
        hr.publish(
            "acme",
            "load.tick",
            format!(r#"{{"data":{{"n":{n}}}}}"#).as_bytes(),
        )
        .await;
    }
}

#[tokio::test]
async fn a_hung_receiver_does_not_slow_a_healthy_one() {
    let hr = Harness::start().await;
    let healthy = Receiver::start().await;
    hr.create(subscription("acme", &healthy.url("/ok"), &["load.*"]))
        .await;

    let solo = Instant::now();
    publish_burst(&hr, 0).await;
    healthy.wait_for(EVENTS, Duration::from_secs(30)).await;
    let solo = solo.elapsed();

    let hung = Receiver::start().await;
    hung.set_default(Reply::status(200).delay(Duration::from_secs(30)));
    let mut stuck = subscription("acme", &hung.url("/never"), &["load.*"]);
    stuck.timeout = Some(prost_types::Duration {
        seconds: 0,
        nanos: 500_000_000,
    });
    stuck.max_in_flight = 4;
    hr.create(stuck).await;

    let shared = Instant::now();
    publish_burst(&hr, EVENTS).await;
    healthy.wait_for(2 * EVENTS, Duration::from_secs(30)).await;
    let shared = shared.elapsed();
    // Four at a time, each abandoned after 500 ms (the receiver keeps its
    // side open, so its own in-flight count is no measure).
    let rounds = (shared.as_millis() / 500 + 2) as usize;
    assert!(
        hung.requests().len() <= 4 * rounds,
        "{} requests to the hung receiver in {shared:?}: its limit of 4 did not hold",
        hung.requests().len()
    );
    // Generous: the precise ratio is the benchmark's business.
    assert!(
        shared <= solo * 4 + Duration::from_secs(1),
        "healthy deliveries took {shared:?} beside a hung receiver, {solo:?} alone"
    );
}
