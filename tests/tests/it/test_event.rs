//! SendTestEvent renders and sends an event now and reports both sides.

use hookrelay_proto::v1 as pb;
use hookrelay_tests::support::{Receiver, Reply};
use hookrelay_tests::Harness;
use tonic::Code;

use crate::subscription;

#[tokio::test]
async fn a_test_event_is_sent_with_the_subscription_shape() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    receiver.push(Reply::status(202).body("queued"));
    let mut sub = subscription("acme", &receiver.url("/crm"), &["deal.*"]);
    sub.request = Some(pb::RequestSpec {
        method: "PUT".into(),
        envelope: pb::Envelope::Custom as i32,
        template: r#"{"deal":"{{ data.id }}","kind":"{{ action }}","sig":"{{ data.id | md5 }}"}"#
            .into(),
        ..Default::default()
    });
    let (sub, _) = hr.create(sub).await;
    let mut client = hr.subscriptions().await;
    let sent = client
        .send_test_event(pb::SendTestEventRequest {
            tenant: "acme".into(),
            id: sub.id.clone(),
            event_type: "deal.won".into(),
            data: r#"{"id": 7}"#.into(),
        })
        .await
        .unwrap()
        .into_inner();

    let received = &receiver.requests()[0];
    assert_eq!(received.method, "PUT");
    assert_eq!(
        received.body_str(),
        r#"{"deal":7,"kind":"won","sig":"8f14e45fceea167a5a36dedd4bea2543"}"#
    );
    let request = sent.request.unwrap();
    assert_eq!(request.method, "PUT");
    assert_eq!(request.body, received.body.to_vec());
    assert!(request
        .headers
        .iter()
        .any(|h| h.name == "webhook-signature"));
    let response = sent.response.unwrap();
    assert_eq!(
        (response.status, response.body.as_slice()),
        (202, b"queued".as_slice())
    );
    assert_eq!(sent.outcome, "success");

    // The sample event when none is given.
    client
        .send_test_event(pb::SendTestEventRequest {
            tenant: "acme".into(),
            id: sub.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        receiver.requests()[1].body_str(),
        r#"{"deal":1,"kind":"sample","sig":"c4ca4238a0b923820dcc509a6f75849b"}"#
    );

    let bad = client
        .send_test_event(pb::SendTestEventRequest {
            tenant: "acme".into(),
            id: sub.id.clone(),
            data: "[1]".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (bad.code(), bad.message()),
        (Code::InvalidArgument, "data: must be a JSON object")
    );
    let missing = client
        .send_test_event(pb::SendTestEventRequest {
            tenant: "acme".into(),
            id: "sub_01JAAAAAAAAAAAAAAAAAAAAAAA".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}
