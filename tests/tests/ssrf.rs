//! SSRF with a proxy in the environment (a process of its own, so the
//! proxy variables reach no other test): every refused range is refused
//! when a subscription is saved, as an IP literal (http and https) and by
//! name, and when it is delivered to a name that changed since; nothing
//! reaches the proxy, the receiver, or anything outside loopback.

use std::net::IpAddr;
use std::time::Duration;

use hookrelay::Role;
use hookrelay_proto::v1 as pb;
use hookrelay_tests::support::{eventually, Receiver, TestEnv};
use hookrelay_tests::{Harness, TestNet};
use tonic::Code;

/// One address of every refused range.
const REFUSED: &[&str] = &[
    "127.0.0.1",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "192.0.0.8",
    "198.18.0.1",
    "240.0.0.1",
    "::1",
    "::",
    "fc00::1",
    "fd00::1",
    "fe80::1",
    "ff02::1",
    "fd00:ec2::254",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::7f00:1",
    "64:ff9b:1::1",
    "2002:a9fe:a9fe::1",
    "2002:7f00:1::",
    "::a9fe:a9fe",
    "::ffff:0:a9fe:a9fe",
    "2001::1",
    "2001:db8::1",
    "100::1",
];

fn literal_url(scheme: &str, ip: &str) -> String {
    match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V4(_) => format!("{scheme}://{ip}/hook"),
        IpAddr::V6(_) => format!("{scheme}://[{ip}]/hook"),
    }
}

fn no_retry(url: &str) -> pb::Subscription {
    pb::Subscription {
        tenant: "acme".into(),
        url: url.into(),
        event_types: vec!["ssrf.*".into()],
        retry_policy: Some(pb::RetryPolicy {
            policy: Some(pb::retry_policy::Policy::None(pb::NoRetry {})),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn every_refused_range_is_refused_at_save_and_at_connect_with_a_proxy_set() {
    // A recorder standing for a proxy: it must never be asked.
    let proxy = Receiver::start_on("127.0.0.2").await;
    let proxy_url = proxy.url("");
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        std::env::set_var(var, &proxy_url);
    }
    let mut env = TestEnv::new();
    env.config.dispatcher.allow_private = vec!["127.0.0.2/32".into()];
    let net = TestNet::default();
    let hr = Harness::start_net(env, &[Role::All], net.net()).await;
    let receiver = Receiver::start_on("127.0.0.2").await;
    let port = receiver
        .url("/")
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let mut client = hr.subscriptions().await;

    // At save: as a literal over http and https, and by a name.
    for (i, ip) in REFUSED.iter().enumerate() {
        let name = format!("saved-{i}.test");
        net.set(&name, &[ip]);
        for url in [
            literal_url("http", ip),
            literal_url("https", ip),
            format!("http://{name}/hook"),
            format!("https://{name}/hook"),
        ] {
            let status = client
                .create_subscription(pb::CreateSubscriptionRequest {
                    subscription: Some(no_retry(&url)),
                })
                .await
                .expect_err(&url);
            assert_eq!(status.code(), Code::InvalidArgument, "{url}: {status:?}");
            assert!(
                status.message().contains("destination blocked"),
                "{url}: {}",
                status.message()
            );
        }
    }

    // At connect: names that pointed at the receiver when saved point at a
    // refused address when the event comes.
    let mut subscriptions = Vec::new();
    for i in 0..REFUSED.len() {
        let name = format!("shifty-{i}.test");
        net.set(&name, &["127.0.0.2"]);
        let (sub, _) = hr
            .create(no_retry(&format!("http://{name}:{port}/c{i}")))
            .await;
        subscriptions.push(sub);
    }
    for (i, ip) in REFUSED.iter().enumerate() {
        net.set(&format!("shifty-{i}.test"), &[ip]);
    }
    hr.publish("acme", "ssrf.probe", br#"{"data":{}}"#).await;
    let logs = hr.logs().await;
    for (sub, ip) in subscriptions.iter().zip(REFUSED) {
        let attempt = eventually(
            &format!("the attempt to {ip}"),
            Duration::from_secs(30),
            || {
                let mut logs = logs.clone();
                async move {
                    logs.list_attempts(pb::ListAttemptsRequest {
                        tenant: "acme".into(),
                        subscription_id: sub.id.clone(),
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner()
                    .attempts
                    .pop()
                }
            },
        )
        .await;
        assert_eq!(attempt.outcome, "blocked", "{ip}: {attempt:?}");
        assert!(
            attempt.reason.contains("destination blocked"),
            "{ip}: {}",
            attempt.reason
        );
    }
    assert!(receiver.requests().is_empty(), "{:?}", receiver.requests());
    assert!(
        proxy.requests().is_empty(),
        "the proxy was asked: {:?}",
        proxy.requests()
    );
    assert!(
        net.dialed_outside().is_empty(),
        "dialed outside loopback: {:?}",
        net.dialed_outside()
    );
}
