//! The four products in shared/seeds, each reproduced by configuration
//! alone: a receiver asserts the exact method, path, query, headers and body.

use std::time::Duration;

use hookrelay_proto::v1 as pb;
use hookrelay_tests::support::{Receiver, Reply};
use hookrelay_tests::Harness;

use crate::logs::wait_attempts;
use crate::retries::schedule;
use crate::subscription;

const WAIT: Duration = Duration::from_secs(10);

fn request(envelope: pb::Envelope) -> Option<pb::RequestSpec> {
    Some(pb::RequestSpec {
        envelope: envelope as i32,
        ..Default::default()
    })
}

/// Seed 000 (Teachbase LMS statistics).
#[tokio::test]
async fn seed_000_typed_entity_events_per_type_urls_and_status_200() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    // course_stat events of course 42 only, to their own URL; quiz_stat of every quiz.
    let mut course = subscription(
        "school",
        &receiver.url("/hooks/course_stat"),
        &["course_stat.*"],
    );
    course.label_filter.insert("course_id".into(), "42".into());
    course.request = request(pb::Envelope::EntityEvent);
    course.success_rule = pb::SuccessRule::Status200 as i32;
    // The seed's "up to 5 times within 2 minutes" is [10s, 20s, 30s, 30s, 30s]; shortened here.
    course.retry_policy = schedule(&[50, 50, 50, 50, 50]);
    let (course, _) = hr.create(course).await;
    let mut quiz = subscription(
        "school",
        &receiver.url("/hooks/quiz_stat"),
        &["quiz_stat.*"],
    );
    quiz.request = request(pb::Envelope::EntityEvent);
    quiz.success_rule = pb::SuccessRule::Status200 as i32;
    hr.create(quiz).await;

    // A 201 is not the 200 the seed wants: that attempt is retried.
    receiver.push(Reply::status(201));
    hr.publish(
        "school",
        "course_stat.created",
        br#"{"labels":{"course_id":"42"},"data":{"id":1,"course_id":42,"progress":10}}"#,
    )
    .await;
    hr.publish(
        "school",
        "course_stat.updated",
        br#"{"labels":{"course_id":"7"},"data":{"id":2,"course_id":7}}"#,
    )
    .await;
    hr.publish(
        "school",
        "course_stat.updated",
        br#"{"labels":{"course_id":"42"},"data":{"id":1,"course_id":42,"progress":55}}"#,
    )
    .await;
    hr.publish(
        "school",
        "quiz_stat.created",
        br#"{"labels":{"quiz_id":"9"},"data":{"id":5,"quiz_id":9,"score":0.8}}"#,
    )
    .await;

    let requests = receiver.wait_for(4, WAIT).await;
    let mut course_bodies: Vec<String> = receiver
        .requests_to("/hooks/course_stat")
        .iter()
        .map(|r| r.body_str().to_owned())
        .collect();
    course_bodies.dedup();
    let created =
        r#"{"type":"course_stat","event":"created","data":{"id":1,"course_id":42,"progress":10}}"#;
    let updated =
        r#"{"type":"course_stat","event":"updated","data":{"id":1,"course_id":42,"progress":55}}"#;
    assert!(
        course_bodies.contains(&created.to_owned()),
        "{course_bodies:?}"
    );
    assert!(
        course_bodies.contains(&updated.to_owned()),
        "{course_bodies:?}"
    );
    assert!(
        course_bodies
            .iter()
            .all(|b| !b.contains(r#""course_id":7"#)),
        "course 7 is out of scope"
    );
    let quiz_request = &receiver.requests_to("/hooks/quiz_stat")[0];
    assert_eq!(quiz_request.method, "POST");
    assert_eq!(
        quiz_request.header("content-type"),
        Some("application/json")
    );
    assert_eq!(
        quiz_request.body_str(),
        r#"{"type":"quiz_stat","event":"created","data":{"id":5,"quiz_id":9,"score":0.8}}"#
    );
    assert!(requests.len() >= 4);

    let attempts = wait_attempts(&hr, &course.id, 3).await;
    let mut outcomes: Vec<(&str, u32)> = attempts
        .iter()
        .map(|a| (a.outcome.as_str(), a.attempt))
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [("http_other", 1), ("success", 1), ("success", 2)],
        "the 201 was retried"
    );
}

/// Seed 002 (Ringostat telephony): several actions on one event, each with
/// its own method, format, parameters, hashes and date format.
#[tokio::test]
async fn seed_002_actions_with_methods_formats_parameters_and_hashes() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let action = |path: &str, method: &str, format: pb::BodyFormat, template: &str| {
        let mut sub = subscription("pbx", &receiver.url(path), &["call.ended"]);
        sub.request = Some(pb::RequestSpec {
            method: method.into(),
            body_format: format as i32,
            envelope: pb::Envelope::Custom as i32,
            template: template.into(),
            jsonrpc_method: "call.ended".into(),
            date_format: "%d.%m.%Y %H:%M:%S".into(),
            ..Default::default()
        });
        sub.retry_policy = Some(pb::RetryPolicy {
            policy: Some(pb::retry_policy::Policy::None(pb::NoRetry {})),
        });
        sub
    };
    hr.create(action(
        "/get",
        "GET",
        pb::BodyFormat::Json,
        r#"{"phone":"{{ data.caller }}","duration":"{{ data.duration }}","hash":"{{ data.caller | md5 }}"}"#,
    ))
    .await;
    let mut post = action(
        "/post",
        "POST",
        pb::BodyFormat::Json,
        r#"{"call":{"from":"{{ data.caller }}","to":"{{ data.callee }}","tags":"{{ data.tags }}"},"started":"{{ data.started_at | date }}","sig":"{{ data.caller | sha256 }}","text":"{{ data.caller }} called"}"#,
    );
    sub_header(&mut post, "X-Api-Token", "t0k3n");
    hr.create(post).await;
    hr.create(action(
        "/put",
        "PUT",
        pb::BodyFormat::Form,
        r#"{"call":{"id":"{{ data.call_id }}","crc":"{{ data.call_id | crc32 }}","sha1":"{{ data.call_id | sha1 }}"},"agents":"{{ data.agents }}"}"#,
    ))
    .await;
    hr.create(action(
        "/rpc",
        "POST",
        pb::BodyFormat::JsonRpc,
        r#"{"caller":"{{ data.caller }}"}"#,
    ))
    .await;
    hr.create(action(
        "/raw",
        "POST",
        pb::BodyFormat::Raw,
        r#""{{ data.caller }};{{ data.duration }}""#,
    ))
    .await;
    // Content-Type follows the format unless the action sets its own.
    let mut csv = action(
        "/csv",
        "POST",
        pb::BodyFormat::Raw,
        r#""{{ data.caller }},{{ data.duration }}""#,
    );
    sub_header(&mut csv, "Content-Type", "text/csv");
    hr.create(csv).await;
    let (broken, _) = hr
        .create(action(
            "/broken",
            "POST",
            pb::BodyFormat::Json,
            r#"{"caller":"{{ data.caller }}"}"#,
        ))
        .await;
    receiver.respond_with(|request, _| {
        if request.path == "/broken" {
            Reply::status(500).body("crm is down")
        } else {
            Reply::status(200)
        }
    });

    hr.publish(
        "pbx",
        "call.ended",
        br#"{"id":"77","seq":1,"data":{"call_id":"c-1001","caller":"+380441234567","callee":"+380442222222","duration":31,"tags":["sales","vip"],"agents":["ann","bob"],"started_at":"2026-11-20T09:15:00Z"}}"#,
    )
    .await;
    receiver.wait_for(7, WAIT).await;
    let one = |path: &str| receiver.requests_to(path).remove(0);

    let get = one("/get");
    assert_eq!(get.method, "GET");
    assert_eq!(
        get.query.as_deref(),
        Some("phone=%2B380441234567&duration=31&hash=f3566f5000899dd3c81df3c5c8e60a0b")
    );
    assert!(get.body.is_empty());

    let post = one("/post");
    assert_eq!(post.method, "POST");
    assert_eq!(post.header("content-type"), Some("application/json"));
    assert_eq!(post.header("x-api-token"), Some("t0k3n"));
    assert_eq!(
        post.body_str(),
        r#"{"call":{"from":"+380441234567","to":"+380442222222","tags":["sales","vip"]},"started":"20.11.2026 09:15:00","sig":"058c8c9b21279a6ac6b126dfab4f118ff63465c89c0bb95e98fda03378f442ce","text":"+380441234567 called"}"#
    );

    let put = one("/put");
    assert_eq!(put.method, "PUT");
    assert_eq!(
        put.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        put.body_str(),
        "call[id]=c-1001&call[crc]=e4977b7f&call[sha1]=570943bc492f3f5ef1e00e7c710e1433909047ba&agents[0]=ann&agents[1]=bob"
    );

    let rpc = one("/rpc");
    assert_eq!(
        rpc.body_str(),
        r#"{"jsonrpc":"2.0","method":"call.ended","params":{"caller":"+380441234567"},"id":1}"#
    );
    let csv = one("/csv");
    assert_eq!(
        (csv.header("content-type"), csv.body_str()),
        (Some("text/csv"), "+380441234567,31")
    );
    let raw = one("/raw");
    assert_eq!(raw.body_str(), "+380441234567;31");
    assert_eq!(
        raw.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    for request in [&get, &post, &put, &rpc, &raw] {
        assert!(request
            .header("webhook-signature")
            .is_some_and(|s| s.starts_with("v1,")));
    }

    // No retry: the failed action is one request, listed as an error.
    let attempts = wait_attempts(&hr, &broken.id, 1).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "http_5xx");
    assert_eq!(attempts[0].reason, "status 500");
    assert_eq!(attempts[0].give_up_reason, "no_retry");
    let response = attempts[0].response.as_ref().unwrap();
    assert_eq!(
        (response.status, response.body.as_slice()),
        (500, b"crm is down".as_slice())
    );
    assert_eq!(receiver.requests_to("/broken").len(), 1);
}

fn sub_header(sub: &mut pb::Subscription, name: &str, value: &str) {
    sub.request
        .get_or_insert_with(Default::default)
        .headers
        .insert(name.into(), value.into());
}

/// Seed 003 (Website Toolbox forum).
#[tokio::test]
async fn seed_003_forum_events_any_2xx_and_redirects_fail() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let mut forum = subscription(
        "forum",
        &receiver.url("/webhook"),
        &["user.created", "post.created", "message.created"],
    );
    forum.request = request(pb::Envelope::ForumEvent);
    forum.success_rule = pb::SuccessRule::Any2xx as i32;
    forum.retry_policy = Some(pb::RetryPolicy {
        policy: Some(pb::retry_policy::Policy::Interval(pb::IntervalRetry {
            every: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
            r#for: Some(prost_types::Duration {
                seconds: 3 * 24 * 3600,
                nanos: 0,
            }),
        })),
    });
    let (forum, _) = hr.create(forum).await;
    receiver.push(Reply::status(204));
    receiver.push(Reply::status(301).header("location", &receiver.url("/elsewhere")));

    let user = r#"{"signature":"Thanks, John.","name":"John Doe","allowEmails":false,"lastPostTimestamp":0,"userGroups":[7440,2452,52423],"userTitle":"Power User","reputation":423,"username":"john","postCount":32,"userId":181855,"lastVisitTimestamp":1322811119,"instantMessagingType":"","instantMessagingId":"","object":"User","invisible":false,"email":"johnDoe@gmail.com","avatarUrl":"https://test.com/images/avatar.png","joinDateTimestamp":1322811119,"enableMessages":true}"#;
    hr.publish(
        "forum",
        "user.created",
        format!(r#"{{"id":"1534","data":{user}}}"#).as_bytes(),
    )
    .await;
    let first = receiver.wait_for(1, WAIT).await.remove(0);
    assert_eq!(
        first.body_str(),
        format!(
            r#"{{"api_version":"1","data":{{"object":{user}}},"object":"event","id":1534,"type":"user.created","mode":"live"}}"#
        )
    );
    hr.publish(
        "forum",
        "post.created",
        br#"{"id":"1535","data":{"postId":9,"object":"Post"}}"#,
    )
    .await;
    receiver.wait_for(2, WAIT).await;

    let attempts = wait_attempts(&hr, &forum.id, 2).await;
    assert_eq!(attempts[1].outcome, "success", "204 is a 2xx");
    assert_eq!(attempts[0].outcome, "redirect", "3xx is a failure");
    let next = attempts[0]
        .next_attempt_at
        .as_ref()
        .expect("retried in an hour");
    let started = attempts[0].started_at.as_ref().unwrap();
    assert!(
        (3590..=3610).contains(&(next.seconds - started.seconds)),
        "{next:?} vs {started:?}"
    );
    assert!(receiver.requests_to("/elsewhere").is_empty());
}
