//! Every scenario runs end to end at a tiny scale and reports its figures,
//! so the benchmark cannot rot. How fast is not asserted here: speed lives
//! in the benchmark's own output (README, Performance).

use std::process::Command;

use serde_json::Value;

/// Runs `scenario` at 1/2000 of its size; returns its report.
fn run(scenario: &str) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_hookrelay-bench"))
        .args(["--scale", "0.0005", "--json", scenario])
        .output()
        .expect("run hookrelay-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{scenario} failed ({}): {stderr}",
        output.status
    );
    let reports: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{scenario}: stdout is not JSON ({e}): {stderr}"));
    let report = reports
        .as_array()
        .and_then(|r| r.first())
        .unwrap_or_else(|| panic!("{scenario}: no report in {reports}"))
        .clone();
    assert_eq!(report["scenario"], scenario);
    report
}

/// The figure `name` of `report`, checked to be a finite number.
fn figure(report: &Value, name: &str) -> f64 {
    let value = report["figures"]
        .as_array()
        .expect("figures")
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no figure {name} in {report}"))["value"]
        .as_f64()
        .unwrap_or_else(|| panic!("{name} is not a number in {report}"));
    assert!(value.is_finite(), "{name} = {value} in {report}");
    value
}

/// The figure `name` of `report`, checked to be positive.
fn positive(report: &Value, name: &str) -> f64 {
    let value = figure(report, name);
    assert!(value > 0.0, "{name} = {value} in {report}");
    value
}

/// Every scenario reports hookrelay's CPU and peak RSS, and judges the RSS target.
fn common(report: &Value) {
    // CPU is counted in 10 ms ticks: at this size it may read 0.
    assert!(figure(report, "hookrelay_cpu") >= 0.0);
    let rss = positive(report, "hookrelay_peak_rss");
    assert!(rss > 1.0, "peak RSS of {rss} MiB is not a real reading");
    positive(report, "redis_used_memory");
    let targets = report["targets"].as_array().expect("targets");
    assert!(
        targets
            .iter()
            .any(|t| t["goal"].as_str().unwrap().contains("peak RSS") && t["met"].is_boolean()),
        "{report}"
    );
}

/// Delivery scenarios report CPU per delivery of hookrelay, nats-server and
/// Redis, or say in a note why a server's share could not be read.
fn cpu_per_delivery(report: &Value, prefix: &str) {
    assert!(figure(report, &format!("{prefix}cpu_ms_per_delivery_hookrelay")) >= 0.0);
    let notes = report["notes"].as_array().expect("notes");
    for name in ["nats", "redis"] {
        let name = format!("{prefix}cpu_ms_per_delivery_{name}");
        let noted = notes.iter().any(|n| n.as_str().unwrap().contains(&name));
        if !noted {
            assert!(figure(report, &name) >= 0.0);
        }
    }
    if notes.is_empty() {
        let sum = figure(report, &format!("{prefix}cpu_ms_per_delivery"));
        let parts: f64 = ["hookrelay", "nats", "redis"]
            .iter()
            .map(|p| figure(report, &format!("{prefix}cpu_ms_per_delivery_{p}")))
            .sum();
        assert!((sum - parts).abs() < 1e-9, "{report}");
    }
}

#[test]
fn throughput_reports_rate_ceiling_and_latency() {
    let report = run("throughput");
    let delivered = positive(&report, "deliveries_per_sec");
    let ceiling = positive(&report, "ceiling_per_sec");
    let ratio = positive(&report, "ratio_to_ceiling");
    assert!((ratio - 100.0 * delivered / ceiling).abs() < 0.01);
    positive(&report, "latency_p99");
    cpu_per_delivery(&report, "");
    let targets = report["targets"].as_array().expect("targets");
    assert!(
        targets.iter().any(|t| t["goal"]
            .as_str()
            .unwrap()
            .starts_with("CPU per delivery of hookrelay + nats-server + Redis")),
        "{report}"
    );
    common(&report);
}

#[test]
fn fanout_reports_deliveries_to_every_subscription() {
    let report = run("fanout");
    positive(&report, "deliveries_per_sec");
    positive(&report, "ratio_to_ceiling");
    assert!(report["setup"]
        .as_str()
        .unwrap()
        .contains("3 subscriptions"));
    cpu_per_delivery(&report, "");
    common(&report);
}

#[test]
fn latency_reports_percentiles_of_an_open_loop() {
    let report = run("latency");
    let p50 = positive(&report, "latency_p50");
    let p99 = positive(&report, "latency_p99");
    assert!(p50 <= p99);
    cpu_per_delivery(&report, "");
    common(&report);
}

#[test]
fn isolation_compares_a_healthy_receiver_with_its_solo_rate() {
    let report = run("isolation");
    positive(&report, "healthy_solo_per_sec");
    positive(&report, "healthy_beside_hung_per_sec");
    positive(&report, "kept_of_solo_rate");
    positive(&report, "requests_to_hung_receiver");
    cpu_per_delivery(&report, "");
    common(&report);
}

#[test]
fn retries_reports_bytes_per_entry_and_drain_rate() {
    let report = run("retries");
    // Other tests share this Redis, so at this size the reading is noise;
    // it must only be there.
    figure(&report, "redis_bytes_per_retry");
    positive(&report, "drained_per_sec");
    // Every retry was delivered, or the run would have failed.
    positive(&report, "retries_delivered_per_sec");
    common(&report);
}

#[test]
fn batching_reports_changes_per_second() {
    let report = run("batching");
    positive(&report, "changes_per_sec");
    positive(&report, "batches");
    cpu_per_delivery(&report, "");
    common(&report);
}

#[test]
fn large_sends_every_size_and_checks_bodies() {
    let report = run("large");
    // At least one event of each size: 64 KiB, 512 KiB and the largest
    // NATS takes (1023k under the default max_payload of 1 MiB).
    let sizes: Vec<String> = report["figures"]
        .as_array()
        .expect("figures")
        .iter()
        .filter_map(|f| f["name"].as_str()?.strip_suffix("_events_per_sec"))
        .map(str::to_owned)
        .collect();
    assert_eq!(sizes.len(), 3, "{report}");
    assert_eq!(&sizes[..2], ["64k", "512k"], "{report}");
    for size in &sizes {
        positive(&report, &format!("{size}_events_per_sec"));
        positive(&report, &format!("{size}_deliveries_per_sec"));
        positive(&report, &format!("{size}_mb_per_sec"));
        positive(&report, &format!("{size}_peak_rss"));
        positive(&report, &format!("{size}_attempt_record_bytes"));
        assert_eq!(figure(&report, &format!("{size}_damaged")), 0.0, "{report}");
        figure(&report, &format!("{size}_duplicates"));
        cpu_per_delivery(&report, &format!("{size}_"));
    }
    cpu_per_delivery(&report, "");
    common(&report);
}

#[test]
fn floor_reports_the_cost_of_a_hop_and_of_a_request() {
    let report = run("floor");
    for hop in ["event", "record", "record_batched"] {
        positive(&report, &format!("{hop}_hop_nats_cpu_ms"));
        figure(&report, &format!("{hop}_hop_client_cpu_ms"));
    }
    positive(&report, "ceiling_per_sec");
    positive(&report, "floor_cpu_ms_per_delivery");
    positive(&report, "floor_deliveries_per_sec");
    positive(&report, "floor_ratio_to_ceiling");
    assert_eq!(
        report["targets"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
}

#[test]
fn circuit_compares_an_open_circuit_with_a_delivery() {
    let report = run("circuit");
    cpu_per_delivery(&report, "alone_");
    cpu_per_delivery(&report, "beside_open_");
    figure(&report, "open_circuit_adds_cpu_ms_per_event");
    figure(&report, "open_circuit_share_of_delivery");
    figure(&report, "requests_while_open");
    common(&report);
}

#[test]
fn admin_times_listing_and_creating_for_one_tenant() {
    let report = run("admin");
    positive(&report, "list_p99");
    positive(&report, "create_p99");
    positive(&report, "creates_per_sec_while_seeding");
    common(&report);
}

#[test]
fn attempt_log_times_listing_by_outcome() {
    let report = run("attempt-log");
    positive(&report, "indexed_per_sec");
    positive(&report, "list_by_tenant_outcome_p99");
    positive(&report, "list_by_subscription_outcome_p99");
    common(&report);
}

#[test]
fn validation_compares_reject_with_off() {
    let report = run("validation");
    positive(&report, "check_us_per_event");
    positive(&report, "off_per_sec");
    positive(&report, "reject_per_sec");
    positive(&report, "kept_with_validation");
    cpu_per_delivery(&report, "");
    common(&report);
}
