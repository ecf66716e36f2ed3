//! The shipped deployment files carry one configuration, and it loads.

use std::path::Path;

fn repo(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn kubernetes_carries_the_compose_config_and_it_is_valid() {
    let file = repo("deploy/hookrelay.toml");
    let manifest = repo("deploy/kubernetes/hookrelay.yaml");
    let start =
        manifest.find("hookrelay.toml: |\n").expect("ConfigMap key") + "hookrelay.toml: |\n".len();
    let embedded: String = manifest[start..]
        .lines()
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .map(|l| format!("{l}\n"))
        .collect();
    let without_comments = |toml: &str| -> String {
        toml.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    // One intended difference: Kubernetes runs NATS as a three-node cluster
    // (nats-cluster.yaml) and its streams at R3; compose has one server.
    let (r1, r3) = (
        "[nats]\nurl = \"nats://nats:4222\"\nreplicas = 1\n",
        "replicas = 3\n",
    );
    assert!(without_comments(&file).contains(r1), "compose: {file}");
    assert_eq!(
        without_comments(&embedded).matches(r3).count(),
        1,
        "{embedded}"
    );
    assert_eq!(
        without_comments(&embedded)
            .replace(r3, "replicas = 1\n")
            .trim(),
        without_comments(&file).trim(),
        "ConfigMap and deploy/hookrelay.toml differ in more than nats.replicas"
    );

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hookrelay.toml");
    let config = hookrelay_core::Config::load(Some(&path)).expect("deploy/hookrelay.toml loads");
    assert_eq!(config.nats.url, "nats://nats:4222");
    assert_eq!(config.nats.replicas, 1);
    assert_eq!(config.server.http_listen.port(), 9464);
    let configmap =
        std::env::temp_dir().join(format!("hookrelay-configmap-{}.toml", std::process::id()));
    std::fs::write(&configmap, &embedded).unwrap();
    let loaded = hookrelay_core::Config::load(Some(&configmap));
    std::fs::remove_file(&configmap).ok();
    let mut kubernetes = loaded.expect("the ConfigMap's hookrelay.toml loads");
    assert_eq!(kubernetes.nats.replicas, 3);
    kubernetes.nats.replicas = config.nats.replicas;
    assert_eq!(
        serde_json::to_value(&kubernetes).unwrap(),
        serde_json::to_value(&config).unwrap(),
        "the ConfigMap's settings differ from deploy/hookrelay.toml's beyond nats.replicas"
    );

    let compose = repo("docker-compose.yml");
    assert!(compose.contains("./deploy/hookrelay.toml:/etc/hookrelay/hookrelay.toml:ro"));
    assert!(
        manifest.contains("/etc/hookrelay/hookrelay.toml")
            && manifest.contains("mountPath: /etc/hookrelay")
    );
    // One Deployment per role, on a pinned image, none running `all`.
    for role in ["subscriptions", "logs", "ingestor", "dispatcher"] {
        assert!(
            manifest.contains(&format!("name: hookrelay-{role}\n"))
                && manifest.contains(&format!(
                    r#"args: ["--config", "/etc/hookrelay/hookrelay.toml", "{role}"]"#
                )),
            "no Deployment of role {role}"
        );
    }
    assert!(!manifest.contains(r#"hookrelay.toml", "all"]"#));
    assert!(!manifest.contains(":latest"));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        manifest
            .matches(&format!("image: hookrelay:{version}\n"))
            .count(),
        4,
        "every Deployment runs the image tagged with the workspace version {version}"
    );
}

/// `hookrelay_*` names in a text (histogram series reduced to the family).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(found) = text[i..].find("hookrelay_") {
        let start = i + found;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'_')
        {
            end += 1;
        }
        let name = &text[start..end];
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(family.to_owned());
        i = end;
    }
    names
}

#[tokio::test]
async fn the_dashboard_and_alerts_query_only_exported_metrics() {
    use hookrelay_proto::v1 as pb;
    use hookrelay_tests::support::{Receiver, Reply};

    let dashboard: serde_json::Value =
        serde_json::from_str(&repo("deploy/grafana/dashboards/hookrelay.json"))
            .expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Deliveries per second by outcome",
        "Success rate",
        "Success rate by tenant",
        "Request outcomes",
        "Publish to delivery latency",
        "Publish to delivery latency by tenant",
        "Backlog by stream",
        "In flight vs concurrency",
        "Retries",
        "Dead letters",
        "Subscriptions by state",
        "Ready",
        "Dependencies",
        "gRPC requests by code",
        "gRPC latency",
        "Schema validation by type and result",
    ] {
        assert!(
            titles.contains(&wanted),
            "panel {wanted:?} missing from {titles:?}"
        );
    }
    // Variables, and every panel on the chosen data source, with a unit and
    // a description.
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(
        variables,
        ["datasource", "job", "instance", "tenant", "event_type"]
    );
    let graphs: Vec<&serde_json::Value> = panels.iter().filter(|p| p["type"] != "row").collect();
    for panel in &graphs {
        let title = panel["title"].as_str().unwrap_or("?");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        assert!(
            panel["description"].as_str().is_some_and(|d| d.len() > 20),
            "panel {title:?} has no description"
        );
        assert!(
            panel["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .is_some_and(|u| !u.is_empty()),
            "panel {title:?} has no unit"
        );
    }
    let exprs: Vec<(String, &str)> = graphs
        .iter()
        .flat_map(|p| {
            p["targets"].as_array().into_iter().flatten().map(move |t| {
                (
                    format!(
                        "dashboard:panel{}:{}",
                        p["id"],
                        t["refId"].as_str().unwrap_or("?")
                    ),
                    t["expr"].as_str().expect("expr"),
                )
            })
        })
        .collect();
    for (_, expr) in &exprs {
        assert!(
            !expr.contains("[1m]") && !expr.contains("[5m]"),
            "fixed window instead of $__rate_interval: {expr}"
        );
        assert!(expr.contains("job=~\"$job\""), "no $job filter: {expr}");
    }
    // promtool parses (and unit-tests) the queries from this copy: it must
    // be the dashboard's.
    let rules: String = exprs
        .iter()
        .map(|(record, expr)| {
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$job", "hookrelay")
                .replace("$instance", ".*")
                .replace("$tenant", ".*")
                .replace("$event_type", ".*");
            format!(
                "      - record: {record}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            )
        })
        .collect();
    let copy = repo("deploy/prometheus/tests/rules/dashboard.yml");
    let copied = &copy[copy.find("    rules:\n").expect("rules") + "    rules:\n".len()..];
    assert!(
        copied == rules,
        "deploy/prometheus/tests/rules/dashboard.yml differs from the dashboard; its rules should read:\n{rules}"
    );
    let queried: String = exprs
        .iter()
        .map(|(_, expr)| *expr)
        .collect::<Vec<_>>()
        .join("\n");
    let mut wanted = metric_names(&queried);
    wanted.extend(metric_names(&repo("deploy/prometheus/alerts.yml")));
    for new in [
        "hookrelay_build_info",
        "hookrelay_ready",
        "hookrelay_ready_check",
        "hookrelay_dependency_up",
        "hookrelay_grpc_server_requests_total",
        "hookrelay_grpc_server_request_duration_seconds",
        "hookrelay_fleet_exporter",
        "hookrelay_dispatcher_concurrency",
    ] {
        assert!(wanted.contains(new), "{new} is not queried");
    }
    assert!(wanted.len() >= 30, "{wanted:?}");

    // Every kind of traffic, so every metric family has samples.
    let hr = hookrelay_tests::Harness::start().await;
    let receiver = Receiver::start().await;
    receiver.respond_with(|r, _| {
        if r.body_str().contains("fail") {
            Reply::status(500)
        } else {
            Reply::status(200)
        }
    });
    let mut sub = crate::subscription("acme", &receiver.url("/m"), &["*"]);
    sub.retry_policy = Some(pb::RetryPolicy {
        policy: Some(pb::retry_policy::Policy::None(pb::NoRetry {})),
    });
    hr.create(sub).await;
    // A catalogued type, so schema validation has samples.
    hr.event_types()
        .await
        .create_event_type(pb::CreateEventTypeRequest {
            tenant: "acme".into(),
            name: "m.ok".into(),
            validation: pb::SchemaValidation::Warn as i32,
            schema: r#"{"type": "object"}"#.into(),
            ..Default::default()
        })
        .await
        .expect("create an event type");
    hr.publish("acme", "m.ok", br#"{"data":{}}"#).await;
    hr.publish("acme", "m.bad", br#"{"data":{"fail":1}}"#).await;
    hr.publish("acme", "m.bad", b"not json").await;
    receiver
        .wait_for(2, std::time::Duration::from_secs(10))
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let exported = metric_names(&hr.metrics().await);
        let missing: Vec<&String> = wanted.iter().filter(|m| !exported.contains(*m)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "queried but never exported: {missing:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Known label values start at 0 (a series created at 1 reads as no
    // increase); readiness, dependencies, the build and the gRPC calls made.
    let text = hr.metrics().await;
    for line in [
        r#"hookrelay_dlq_total{reason="too_large",source="events"} 0"#,
        r#"hookrelay_dlq_total{reason="not_json_object",source="events"} 1"#,
        r#"hookrelay_deliveries_given_up_total{reason="exhausted"} 0"#,
        r#"hookrelay_dispatcher_requests_total{outcome="timeout"} 0"#,
        r#"hookrelay_ready 1"#,
        r#"hookrelay_ready_check{check="nats"} 1"#,
        r#"hookrelay_dependency_up{dependency="nats"} 1"#,
        r#"hookrelay_dependency_up{dependency="redis"} 1"#,
        r#"hookrelay_fleet_exporter 1"#,
        r#"hookrelay_grpc_server_requests_total{code="OK",method="CreateSubscription",service="hookrelay.v1.Subscriptions"} 1"#,
        r#"hookrelay_grpc_server_requests_total{code="OK",method="GetAttempt",service="hookrelay.v1.DeliveryLogs"} 0"#,
        r#"hookrelay_grpc_server_in_flight{service="hookrelay.v1.Subscriptions"} 0"#,
    ] {
        assert!(text.contains(line), "{line:?} not in /metrics:\n{text}");
    }
    assert!(
        text.contains(r#"hookrelay_build_info{role="all",version=""#),
        "{text}"
    );
}
