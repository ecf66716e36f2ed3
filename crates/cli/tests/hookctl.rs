//! hookctl as a user runs it, against a real hookrelay.

use std::time::Duration;

use hookrelay_tests::support::{eventually, Receiver, Reply, TestEnv};
use hookrelay_tests::Harness;

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn hookctl(hr: &Harness, args: &[&str]) -> Output {
    hookctl_with(hr, &[], args).await
}

/// hookctl with these environment variables set too.
async fn hookctl_with(hr: &Harness, env: &[(&str, &str)], args: &[&str]) -> Output {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookctl"))
        .envs(env.iter().copied())
        .env("HOOKCTL_SERVER", hr.grpc_url())
        .env("HOOKCTL_TOKEN", TestEnv::ADMIN_TOKEN)
        .env("HOOKCTL_NATS", &hr.env.config.nats.url)
        .env("HOOKCTL_PREFIX", &hr.env.config.prefix)
        .args(args)
        .output()
        .await
        .expect("run hookctl");
    Output {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn create_publish_and_see_the_attempt() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/hooks");
    let created = hookctl(
        &hr,
        &[
            "subscription",
            "create",
            "--tenant",
            "acme",
            "--url",
            &url,
            "--event-type",
            "user.*",
            "--name",
            "CRM",
            "--open-after",
            "20",
            "--disable-after",
            "0s",
            "--rate-limit",
            "50",
            "--ordering",
            "fifo",
        ],
    )
    .await;
    assert!(created.ok, "{}", created.stderr);
    assert!(created.stdout.contains(&url), "{}", created.stdout);
    let secret_line = created
        .stdout
        .lines()
        .find(|l| l.starts_with("secret: whsec_"));
    assert!(secret_line.is_some(), "{}", created.stdout);

    let listed = hookctl(&hr, &["--json", "subscription", "list", "--tenant", "acme"]).await;
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).expect("JSON list");
    let id = listed["subscriptions"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(listed["subscriptions"][0]["name"], "CRM");
    assert_eq!(listed["subscriptions"][0]["ordering"], "fifo");
    assert_eq!(
        listed["subscriptions"][0]["circuit"],
        serde_json::json!({"failing_after": 0, "open_after": 20, "disable_after": "0s"})
    );
    assert_eq!(
        listed["subscriptions"][0]["rate_limit"],
        serde_json::json!({"per_second": 50, "burst": 50})
    );

    let published = hookctl(
        &hr,
        &[
            "publish",
            "acme",
            "user.created",
            r#"{"n":1}"#,
            "--id",
            "e-1",
        ],
    )
    .await;
    assert!(published.ok, "{}", published.stderr);
    assert_eq!(
        published.stdout.trim(),
        "published acme/user.created as event e-1 (stream sequence 1)"
    );
    let request = receiver
        .wait_for(1, Duration::from_secs(10))
        .await
        .remove(0);
    assert!(request.body_str().ends_with(r#""data":{"n":1}}"#));
    // Without --id, the id made for the event is printed: the one to look
    // its attempts up by.
    let minted = hookctl(&hr, &["--json", "publish", "acme", "user.created", "{}"]).await;
    assert!(minted.ok, "{}", minted.stderr);
    let minted: serde_json::Value = serde_json::from_str(&minted.stdout).unwrap();
    let minted = minted["id"].as_str().unwrap().to_owned();
    assert!(minted.starts_with("evt_"), "{minted}");
    receiver.wait_for(2, Duration::from_secs(10)).await;
    eventually(
        "the minted id's attempt",
        Duration::from_secs(10),
        || async {
            let out = hookctl(
                &hr,
                &["attempts", "list", "--event", &minted, "--tenant", "acme"],
            )
            .await;
            out.stdout.contains("success").then_some(())
        },
    )
    .await;

    let table = eventually(
        "the attempt listed by hookctl",
        Duration::from_secs(10),
        || async {
            let out = hookctl(
                &hr,
                &[
                    "attempts",
                    "list",
                    "--tenant",
                    "acme",
                    "--subscription",
                    &id,
                ],
            )
            .await;
            out.stdout.contains("success").then_some(out.stdout)
        },
    )
    .await;
    assert!(table.contains("e-1") && table.contains("200"), "{table}");
    // By event: within the tenant, which the admin names.
    let by_event = hookctl(
        &hr,
        &["attempts", "list", "--event", "e-1", "--tenant", "acme"],
    )
    .await;
    assert!(by_event.ok, "{}", by_event.stderr);
    assert!(
        by_event.stdout.contains(&id) && by_event.stdout.contains("success"),
        "{}",
        by_event.stdout
    );
    let elsewhere = hookctl(
        &hr,
        &["attempts", "list", "--event", "e-1", "--tenant", "globex"],
    )
    .await;
    assert!(
        elsewhere.ok && !elsewhere.stdout.contains(&id),
        "{}",
        elsewhere.stdout
    );
    let no_tenant = hookctl(&hr, &["attempts", "list", "--event", "e-1"]).await;
    assert!(!no_tenant.ok);
    assert_eq!(
        no_tenant.stderr.trim(),
        "error: invalid argument: tenant: is required with an admin token (a tenant token may leave it empty)"
    );
    // Every filter at once: this event's attempts to this subscription,
    // delivered within the last hour.
    let narrowed = |outcome: &'static str| {
        let id = id.clone();
        let hr = &hr;
        async move {
            hookctl(
                hr,
                &[
                    "--json",
                    "attempts",
                    "list",
                    "--tenant",
                    "acme",
                    "--subscription",
                    &id,
                    "--event",
                    "e-1",
                    "--outcome",
                    outcome,
                    "--since",
                    "1h",
                    "--until",
                    "2099-01-01T00:00:00Z",
                ],
            )
            .await
        }
    };
    let delivered = narrowed("success").await;
    assert!(delivered.ok, "{}", delivered.stderr);
    let delivered: serde_json::Value = serde_json::from_str(&delivered.stdout).unwrap();
    let attempts = delivered["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{delivered}");
    assert_eq!(
        (
            &attempts[0]["event_id"],
            &attempts[0]["status"],
            &attempts[0]["error"]
        ),
        (
            &serde_json::json!("e-1"),
            &serde_json::json!(200),
            &serde_json::json!("")
        )
    );
    let failed = narrowed("http_5xx").await;
    assert!(failed.ok, "{}", failed.stderr);
    assert!(
        failed.stdout.contains(r#""attempts": []"#),
        "{}",
        failed.stdout
    );

    let updated = hookctl(
        &hr,
        &[
            "subscription",
            "update",
            &id,
            "--tenant",
            "acme",
            "--disable",
            "--label",
            "course_id=42",
            "--retry",
            "interval=1h,3days",
        ],
    )
    .await;
    assert!(updated.ok, "{}", updated.stderr);
    // The global --tenant, before the command or after it.
    let got = hookctl(
        &hr,
        &["--tenant", "acme", "--json", "subscription", "get", &id],
    )
    .await;
    let got: serde_json::Value = serde_json::from_str(&got.stdout).unwrap();
    assert_eq!(got["enabled"], false);
    assert_eq!(got["label_filter"]["course_id"], "42");
    assert_eq!(got["retry"], "interval=1h,3days");
    let bad = hookctl(
        &hr,
        &[
            "subscription",
            "update",
            &id,
            "--retry",
            "interval=1h,1m",
            "--tenant",
            "acme",
        ],
    )
    .await;
    assert_eq!(
        bad.stderr.trim(),
        "error: invalid argument: subscription.retry_policy.interval.for: must be at least every"
    );

    let rotated = hookctl(
        &hr,
        &[
            "subscription",
            "rotate",
            &id,
            "--grace",
            "1h",
            "--tenant",
            "acme",
        ],
    )
    .await;
    assert!(
        rotated.stdout.starts_with("secret: whsec_"),
        "{}",
        rotated.stdout
    );
    assert!(
        rotated.stdout.contains("previous secrets sign until"),
        "{}",
        rotated.stdout
    );

    let deleted = hookctl(&hr, &["subscription", "delete", &id, "--tenant", "acme"]).await;
    assert_eq!(deleted.stdout.trim(), format!("deleted {id}"));
}

#[tokio::test]
async fn errors_are_one_clear_line() {
    let hr = Harness::start().await;
    let invalid = hookctl(
        &hr,
        &[
            "subscription",
            "create",
            "--tenant",
            "acme",
            "--url",
            "ftp://x/",
            "--event-type",
            "*",
        ],
    )
    .await;
    assert!(!invalid.ok);
    assert_eq!(
        invalid.stderr.trim(),
        r#"error: invalid argument: subscription.url: scheme "ftp" is not http or https"#
    );
    // An admin token names the tenant: the server says so when it does not.
    let unnamed = hookctl(
        &hr,
        &["subscription", "get", "sub_01JAAAAAAAAAAAAAAAAAAAAAAA"],
    )
    .await;
    assert!(!unnamed.ok);
    assert_eq!(
        unnamed.stderr.trim(),
        "error: invalid argument: tenant: is required with an admin token (a tenant token may leave it empty)"
    );
    let missing = hookctl(
        &hr,
        &[
            "subscription",
            "get",
            "sub_01JAAAAAAAAAAAAAAAAAAAAAAA",
            "--tenant",
            "acme",
        ],
    )
    .await;
    assert_eq!(
        missing.stderr.trim(),
        "error: not found: subscription sub_01JAAAAAAAAAAAAAAAAAAAAAAA not found"
    );
    let not_object = hookctl(&hr, &["publish", "acme", "user.created", "[1]"]).await;
    assert!(
        not_object.stderr.contains("data must be a JSON object"),
        "{}",
        not_object.stderr
    );

    // host:port, as the README and grpcurl write it, means http://host:port.
    let bare = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookctl"))
        .env("HOOKCTL_TOKEN", TestEnv::ADMIN_TOKEN)
        .args([
            "--server",
            &hr.grpc_addr.to_string(),
            "subscription",
            "list",
            "--tenant",
            "acme",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        bare.status.success(),
        "{}",
        String::from_utf8_lossy(&bare.stderr)
    );
    let bad = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookctl"))
        .args(["--server", "ftp://127.0.0.1:1", "subscription", "list"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr).trim(),
        r#"error: --server "ftp://127.0.0.1:1" is not a hookrelay gRPC address (scheme "ftp" is not http or https); give host:port or a URL, e.g. --server 127.0.0.1:50051 or --server https://hookrelay.example.com"#
    );

    let unreachable = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookctl"))
        .args(["--server", "http://127.0.0.1:1", "subscription", "list"])
        .output()
        .await
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(
        stderr.starts_with("error: cannot reach hookrelay at http://127.0.0.1:1"),
        "{stderr}"
    );

    let unauthenticated = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookctl"))
        .args([
            "--server",
            &hr.grpc_url(),
            "--token",
            "wrong",
            "subscription",
            "list",
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&unauthenticated.stderr);
    assert!(
        stderr.starts_with("error: unauthenticated: unknown bearer token (pass --token"),
        "{stderr}"
    );
}

#[tokio::test]
async fn shape_a_request_and_send_a_test_event() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/calls");
    let created = hookctl(
        &hr,
        &[
            "--json",
            "subscription",
            "create",
            "--tenant",
            "pbx",
            "--url",
            &url,
            "--event-type",
            "call.ended",
            "--method",
            "put",
            "--body-format",
            "form",
            "--template",
            r#"{"call":{"from":"{{ data.caller }}","h":"{{ data.caller | crc32 }}"}}"#,
        ],
    )
    .await;
    assert!(created.ok, "{}", created.stderr);
    let created: serde_json::Value = serde_json::from_str(&created.stdout).unwrap();
    let id = created["id"].as_str().unwrap();

    let sent = hookctl(
        &hr,
        &[
            "subscription",
            "test",
            id,
            "--tenant",
            "pbx",
            "--data",
            r#"{"caller":"+380441234567"}"#,
        ],
    )
    .await;
    assert!(sent.ok, "{}", sent.stderr);
    assert!(
        sent.stdout.contains("outcome      success: status 200"),
        "{}",
        sent.stdout
    );
    assert!(sent.stdout.contains("> PUT http://"), "{}", sent.stdout);
    let received = receiver.wait_for(1, Duration::from_secs(5)).await.remove(0);
    assert_eq!(received.method, "PUT");
    assert_eq!(
        received.body_str(),
        "call[from]=%2B380441234567&call[h]=7d1b04f9"
    );
    assert!(
        sent.stdout
            .contains("call[from]=%2B380441234567&call[h]=7d1b04f9"),
        "{}",
        sent.stdout
    );

    // A failed test delivery is shown, and exits non-zero.
    receiver.push(Reply::status(503));
    let failed = hookctl(&hr, &["subscription", "test", id, "--tenant", "pbx"]).await;
    assert!(!failed.ok);
    assert!(
        failed.stdout.contains("outcome      http_5xx: status 503"),
        "{}",
        failed.stdout
    );
    assert_eq!(
        failed.stderr.trim(),
        "error: the test delivery failed: http_5xx: status 503"
    );

    let bad = hookctl(
        &hr,
        &[
            "subscription",
            "create",
            "--tenant",
            "pbx",
            "--url",
            &url,
            "--event-type",
            "*",
            "--template",
            r#"{"a":"{{ data. }}"}"#,
        ],
    )
    .await;
    assert!(
        bad.stderr.starts_with(
            "error: invalid argument: subscription.request.template: $.a: syntax error"
        ),
        "{}",
        bad.stderr
    );
}

#[tokio::test]
async fn a_batched_subscription_from_the_command_line() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/feed");
    let created = hookctl(
        &hr,
        &[
            "--json",
            "subscription",
            "create",
            "--tenant",
            "springest",
            "--url",
            &url,
            "--event-type",
            "training.*",
            "--name",
            "Partner feed",
            "--description",
            "catalogue changes",
            "--envelope",
            "changes_batch",
            "--batch-window",
            "200ms",
            "--batch-max",
            "50",
            "--batch-url",
            "http://api.springest.nl/{{ object }}s/{{ entity_id }}",
            "--retry",
            "until-success=1s,1m",
        ],
    )
    .await;
    assert!(created.ok, "{}", created.stderr);
    let created: serde_json::Value = serde_json::from_str(&created.stdout).unwrap();
    assert_eq!(
        created["batch"],
        "window 200ms, at most 50, url http://api.springest.nl/{{ object }}s/{{ entity_id }}"
    );
    assert_eq!(created["description"], "catalogue changes");
    for (kind, id) in [("training.update", "1"), ("training.destroy", "2")] {
        let out = hookctl(
            &hr,
            &["publish", "springest", kind, "{}", "--entity-id", id],
        )
        .await;
        assert!(out.ok, "{}", out.stderr);
    }
    let request = receiver
        .wait_for(1, Duration::from_secs(10))
        .await
        .remove(0);
    assert_eq!(
        request.body_str(),
        r#"{"changes":[{"action":"update","object":"training","id":1,"url":"http://api.springest.nl/trainings/1"},{"action":"destroy","object":"training","id":2}]}"#
    );
    let shown = hookctl_with(
        &hr,
        &[("HOOKCTL_TENANT", "springest")],
        &["subscription", "get", created["id"].as_str().unwrap()],
    )
    .await;
    assert!(
        shown.stdout.contains("Partner feed") && shown.stdout.contains("catalogue changes"),
        "{}",
        shown.stdout
    );
}

#[tokio::test]
async fn tail_shows_a_delivery_within_a_second() {
    use tokio::io::AsyncBufReadExt;

    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let created = hookctl(
        &hr,
        &[
            "--json",
            "subscription",
            "create",
            "--tenant",
            "acme",
            "--url",
            &receiver.url("/t"),
            "--event-type",
            "*",
        ],
    )
    .await;
    let created: serde_json::Value = serde_json::from_str(&created.stdout).unwrap();
    // With acme's own token, through the server (no NATS access needed).
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookctl"))
        .env("HOOKCTL_SERVER", hr.grpc_url())
        .env("HOOKCTL_TOKEN", TestEnv::ACME_TOKEN)
        .args(["tail"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(tail.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.starts_with("following "), "{first}");

    hr.publish("acme", "user.created", br#"{"id":"e-tail","data":{}}"#)
        .await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    let delivered = std::time::Instant::now();
    let line = tokio::time::timeout(Duration::from_secs(1), lines.next_line())
        .await
        .expect("tail shows the attempt within a second")
        .unwrap()
        .unwrap();
    assert!(delivered.elapsed() < Duration::from_secs(1));
    assert!(
        line.contains("event=e-tail") && line.contains("success 200"),
        "{line}"
    );
    assert!(line.contains(created["id"].as_str().unwrap()), "{line}");
}

#[tokio::test]
async fn failures_redeliver_events_and_health_from_the_command_line() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    receiver.push(Reply::status(500).body("nope"));
    let created = hookctl(
        &hr,
        &[
            "--json",
            "subscription",
            "create",
            "--tenant",
            "acme",
            "--url",
            &receiver.url("/x"),
            "--event-type",
            "*",
            "--retry",
            "none",
        ],
    )
    .await;
    let created: serde_json::Value = serde_json::from_str(&created.stdout).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    hookctl(
        &hr,
        &[
            "publish",
            "acme",
            "order.paid",
            r#"{"total":5}"#,
            "--id",
            "o-1",
        ],
    )
    .await;
    let failures = eventually("the failure listed", Duration::from_secs(10), || async {
        let out = hookctl(&hr, &["failures", "--tenant", "acme"]).await;
        out.stdout.contains("o-1").then_some(out.stdout)
    })
    .await;
    assert!(
        failures.contains("http_5xx") && failures.contains("500"),
        "{failures}"
    );
    // Why it gave up, in a table that fits 80 columns.
    let narrow = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookctl"))
        .env("HOOKCTL_SERVER", hr.grpc_url())
        .env("HOOKCTL_TOKEN", TestEnv::ADMIN_TOKEN)
        .env("COLUMNS", "80")
        .args(["failures", "--tenant", "acme"])
        .output()
        .await
        .unwrap();
    let narrow = String::from_utf8_lossy(&narrow.stdout);
    assert!(
        narrow.contains("GAVE UP") && narrow.contains("no_retry"),
        "{narrow}"
    );
    assert!(narrow.lines().all(|l| l.chars().count() <= 80), "{narrow}");

    // The token file is found from any directory: here, the user's config.
    let config = std::env::temp_dir().join(format!("hookctl-xdg-{}", std::process::id()));
    std::fs::create_dir_all(config.join("hookctl")).unwrap();
    std::fs::write(config.join("hookctl/token"), TestEnv::ADMIN_TOKEN).unwrap();
    let listed = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookctl"))
        .env("HOOKCTL_SERVER", hr.grpc_url())
        .env_remove("HOOKCTL_TOKEN")
        .env_remove("HOOKCTL_TOKEN_FILE")
        .env("XDG_CONFIG_HOME", &config)
        .current_dir(std::env::temp_dir())
        .args(["subscription", "list", "--tenant", "acme"])
        .output()
        .await
        .unwrap();
    std::fs::remove_dir_all(&config).ok();
    assert!(
        listed.status.success() && String::from_utf8_lossy(&listed.stdout).contains(&id),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );

    // HOOKCTL_TENANT names the tenant of every command.
    let in_acme = [("HOOKCTL_TENANT", "acme")];
    let redelivered = hookctl_with(&hr, &in_acme, &["redeliver", "o-1", &id]).await;
    assert!(
        redelivered
            .stdout
            .starts_with(&format!("redelivering o-1 to {id} (webhook-id msg_")),
        "{}",
        redelivered.stdout
    );
    receiver.wait_for(2, Duration::from_secs(10)).await;
    let recovered = hookctl_with(&hr, &in_acme, &["recover", &id, "--since", "1h"]).await;
    assert!(
        recovered.stdout.starts_with("redelivering 1 failed events"),
        "{}",
        recovered.stdout
    );

    let events = hookctl(
        &hr,
        &["--json", "events", "list", "acme", "--type", "order.*"],
    )
    .await;
    let same = hookctl_with(
        &hr,
        &in_acme,
        &["--json", "events", "list", "--type", "order.*"],
    )
    .await;
    assert_eq!(same.stdout, events.stdout);
    let events: serde_json::Value = serde_json::from_str(&events.stdout).unwrap();
    assert_eq!(events["events"][0]["id"], "o-1");
    assert_eq!(events["events"][0]["data"]["total"], 5);

    let health = eventually(
        "health after the redelivery",
        Duration::from_secs(10),
        || async {
            let out = hookctl_with(&hr, &in_acme, &["--json", "subscription", "health", &id]).await;
            let value: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
            (value["recent_attempts"] == 3).then_some(value)
        },
    )
    .await;
    assert_eq!(health["state"], "healthy");
    assert_eq!(health["consecutive_failures"], 0);
    assert_eq!(health["held_deliveries"], 0);
    assert!(health["next_probe_at"].is_null(), "{health}");
}
