//! Tables for people, JSON for scripts.

use std::io::Write;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::Table;
use hookrelay_proto::v1 as pb;
use serde_json::{json, Value};

fn time(at: &Option<prost_types::Timestamp>) -> Value {
    at.as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
        .map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or("-").to_owned()
}

fn rule(rule: i32) -> &'static str {
    match pb::SuccessRule::try_from(rule) {
        Ok(pb::SuccessRule::Status200) => "status_200",
        _ => "any_2xx",
    }
}

pub fn subscription_json(sub: &pb::Subscription) -> Value {
    let request = sub.request.clone().unwrap_or_default();
    json!({
        "id": sub.id,
        "tenant": sub.tenant,
        "name": sub.name,
        "description": sub.description,
        "url": sub.url,
        "event_types": sub.event_types,
        "label_filter": sub.label_filter,
        "enabled": sub.enabled.unwrap_or(true),
        "headers": request.headers,
        "success_rule": rule(sub.success_rule),
        "retry": crate::retry::describe(&sub.retry_policy),
        "batch": sub.batch.as_ref().map(|_| batch(sub)),
        "timeout": sub.timeout.map(|d| humantime::format_duration(std::time::Duration::try_from(d).unwrap_or_default()).to_string()),
        "max_in_flight": sub.max_in_flight,
        "ordering": if sub.ordering == pb::Ordering::Fifo as i32 { "fifo" } else { "any" },
        "rate_limit": sub.rate_limit.as_ref().map(|r| json!({"per_second": r.per_second, "burst": r.burst})),
        "circuit": sub.circuit.as_ref().map(|c| json!({
            "failing_after": c.failing_after,
            "open_after": c.open_after,
            "disable_after": c.disable_after.map(|d| humantime::format_duration(std::time::Duration::try_from(d).unwrap_or_default()).to_string()),
        })),
        "created_at": time(&sub.created_at),
        "updated_at": time(&sub.updated_at),
        "revision": sub.revision,
    })
}

/// `50/s, burst 10` or `-`.
fn describe_rate(rate: &Value) -> String {
    match (rate["per_second"].as_u64(), rate["burst"].as_u64()) {
        (Some(per_second), Some(burst)) => format!("{per_second}/s, burst {burst}"),
        _ => "-".into(),
    }
}

/// `open after 20, disable after 0s` (zeros: the server's), or `server defaults`.
fn describe_circuit(circuit: &Value) -> String {
    if circuit.is_null() {
        return "server defaults".into();
    }
    let mut parts = Vec::new();
    for (field, label) in [
        ("failing_after", "failing after"),
        ("open_after", "open after"),
    ] {
        if let Some(n) = circuit[field].as_u64().filter(|n| *n > 0) {
            parts.push(format!("{label} {n}"));
        }
    }
    if let Some(after) = circuit["disable_after"].as_str() {
        parts.push(format!("disable after {after}"));
    }
    if parts.is_empty() {
        "server defaults".into()
    } else {
        parts.join(", ")
    }
}

/// `window 2s, at most 100, url …` or `-`.
fn batch(sub: &pb::Subscription) -> String {
    let Some(batch) = &sub.batch else {
        return "-".into();
    };
    let window = batch
        .window
        .and_then(|d| std::time::Duration::try_from(d).ok())
        .map(|d| humantime::format_duration(d).to_string())
        .unwrap_or_default();
    let mut text = format!("window {window}, at most {}", batch.max_size);
    if !batch.key.is_empty() {
        text.push_str(&format!(", key {}", batch.key));
    }
    if !batch.url_template.is_empty() {
        text.push_str(&format!(", url {}", batch.url_template));
    }
    text
}

pub fn attempt_json(a: &pb::Attempt) -> Value {
    let headers = |h: &[pb::Header]| {
        h.iter()
            .map(|h| json!([h.name, h.value]))
            .collect::<Vec<_>>()
    };
    json!({
        "id": a.id,
        "event_id": a.event_id,
        "subscription_id": a.subscription_id,
        "tenant": a.tenant,
        "event_type": a.event_type,
        "webhook_id": a.webhook_id,
        "attempt": a.attempt,
        "outcome": a.outcome,
        "status": a.status,
        "error": a.error,
        "reason": a.reason,
        "started_at": time(&a.started_at),
        "duration_ms": a.duration_ms,
        "next_attempt_at": time(&a.next_attempt_at),
        "give_up_reason": (!a.give_up_reason.is_empty()).then_some(&a.give_up_reason),
        "redelivery": a.redelivery,
        "event_seq": a.event_seq,
        "event_source": a.event_source,
        "request": a.request.as_ref().map(|r| json!({
            "method": r.method, "url": r.url, "headers": headers(&r.headers),
            "body": String::from_utf8_lossy(&r.body), "body_truncated": r.body_truncated,
            "body_size": r.body_size, "body_sha256": r.body_sha256,
        })),
        "response": a.response.as_ref().map(|r| json!({
            "status": r.status, "headers": headers(&r.headers),
            "body": String::from_utf8_lossy(&r.body), "body_truncated": r.body_truncated,
        })),
    })
}

pub fn print_json(out: &mut impl Write, value: &Value) -> anyhow::Result<()> {
    writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    table
}

fn pairs(map: &std::collections::HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = map.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(", ")
}

/// One subscription, a field per row.
pub fn subscription_table(out: &mut impl Write, sub: &pb::Subscription) -> anyhow::Result<()> {
    let v = subscription_json(sub);
    let mut t = table(&["FIELD", "VALUE"]);
    let headers = sub
        .request
        .as_ref()
        .map(|r| pairs(&r.headers))
        .unwrap_or_default();
    for (field, value) in [
        ("id", sub.id.clone()),
        ("tenant", sub.tenant.clone()),
        ("name", sub.name.clone()),
        ("description", sub.description.clone()),
        ("url", sub.url.clone()),
        ("event types", sub.event_types.join(", ")),
        ("labels", pairs(&sub.label_filter)),
        ("headers", headers),
        ("enabled", sub.enabled.unwrap_or(true).to_string()),
        ("success rule", rule(sub.success_rule).to_owned()),
        ("retry", crate::retry::describe(&sub.retry_policy)),
        ("batch", batch(sub)),
        (
            "timeout",
            v["timeout"].as_str().unwrap_or("default").to_owned(),
        ),
        (
            "max in flight",
            if sub.max_in_flight == 0 {
                "default".into()
            } else {
                sub.max_in_flight.to_string()
            },
        ),
        ("ordering", text(&v["ordering"])),
        ("rate limit", describe_rate(&v["rate_limit"])),
        ("circuit", describe_circuit(&v["circuit"])),
        ("created", text(&v["created_at"])),
        ("updated", text(&v["updated_at"])),
        ("revision", sub.revision.to_string()),
    ] {
        t.add_row(vec![field.to_owned(), value]);
    }
    writeln!(out, "{t}")?;
    Ok(())
}

pub fn subscriptions_table(out: &mut impl Write, subs: &[pb::Subscription]) -> anyhow::Result<()> {
    let mut t = table(&[
        "ID",
        "TENANT",
        "NAME",
        "URL",
        "EVENT TYPES",
        "ENABLED",
        "REVISION",
    ]);
    for sub in subs {
        t.add_row(vec![
            sub.id.clone(),
            sub.tenant.clone(),
            sub.name.clone(),
            sub.url.clone(),
            sub.event_types.join(", "),
            sub.enabled.unwrap_or(true).to_string(),
            sub.revision.to_string(),
        ]);
    }
    writeln!(out, "{t}")?;
    Ok(())
}

/// A subscription's health.
pub fn health(
    out: &mut impl Write,
    as_json: bool,
    h: &pb::SubscriptionHealth,
) -> anyhow::Result<()> {
    let value = json!({
        "subscription_id": h.subscription_id,
        "state": h.state,
        "success_rate": h.success_rate,
        "recent_attempts": h.recent_attempts,
        "consecutive_failures": h.consecutive_failures,
        "last_success_at": time(&h.last_success_at),
        "last_failure_at": time(&h.last_failure_at),
        "failing_since": time(&h.failing_since),
        "opened_at": time(&h.opened_at),
        "next_probe_at": time(&h.next_probe_at),
        "held_deliveries": h.held_deliveries,
        "ordered_queued": h.ordered_queued,
    });
    if as_json {
        return print_json(out, &value);
    }
    let mut t = table(&["FIELD", "VALUE"]);
    t.add_row(vec!["subscription".to_owned(), h.subscription_id.clone()]);
    t.add_row(vec!["state".to_owned(), h.state.clone()]);
    t.add_row(vec![
        "success rate".to_owned(),
        format!(
            "{:.1}% of the last {} attempts",
            h.success_rate * 100.0,
            h.recent_attempts
        ),
    ]);
    t.add_row(vec![
        "failures in a row".to_owned(),
        h.consecutive_failures.to_string(),
    ]);
    t.add_row(vec![
        "last success".to_owned(),
        text(&value["last_success_at"]),
    ]);
    t.add_row(vec![
        "last failure".to_owned(),
        text(&value["last_failure_at"]),
    ]);
    for (label, field) in [
        ("failing since", "failing_since"),
        ("circuit opened", "opened_at"),
        ("next probe", "next_probe_at"),
    ] {
        if !value[field].is_null() {
            t.add_row(vec![label.to_owned(), text(&value[field])]);
        }
    }
    t.add_row(vec![
        "held deliveries".to_owned(),
        h.held_deliveries.to_string(),
    ]);
    if h.ordered_queued > 0 {
        t.add_row(vec![
            "queued in order".to_owned(),
            h.ordered_queued.to_string(),
        ]);
    }
    writeln!(out, "{t}")?;
    Ok(())
}

/// A page of attempts as a table (with the next page's token) or JSON.
pub fn attempts_page(
    out: &mut impl Write,
    json: bool,
    page: &pb::ListAttemptsResponse,
) -> anyhow::Result<()> {
    attempts_page_as(out, json, page, attempts_table)
}

/// A page of failures as a table with the give-up reason, or JSON.
pub fn failures_page(
    out: &mut impl Write,
    json: bool,
    page: &pb::ListAttemptsResponse,
) -> anyhow::Result<()> {
    attempts_page_as(out, json, page, |out, attempts| {
        failures_table(out, attempts, terminal_width())
    })
}

fn attempts_page_as<W: Write>(
    out: &mut W,
    json: bool,
    page: &pb::ListAttemptsResponse,
    table: impl FnOnce(&mut W, &[pb::Attempt]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if json {
        let list: Vec<_> = page.attempts.iter().map(attempt_json).collect();
        return print_json(
            out,
            &json!({"attempts": list, "next_page_token": page.next_page_token}),
        );
    }
    table(out, &page.attempts)?;
    if !page.next_page_token.is_empty() {
        writeln!(out, "more: --page-token {}", page.next_page_token)?;
    }
    Ok(())
}

pub fn attempts_table(out: &mut impl Write, attempts: &[pb::Attempt]) -> anyhow::Result<()> {
    let header = [
        "ID",
        "STARTED",
        "EVENT",
        "SUBSCRIPTION",
        "ATTEMPT",
        "OUTCOME",
        "STATUS",
        "DURATION",
        "REASON",
        "ERROR",
    ];
    let rows = attempts
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                text(&time(&a.started_at)),
                a.event_id.clone(),
                a.subscription_id.clone(),
                a.attempt.to_string(),
                a.outcome.clone(),
                status(a),
                if a.duration_ms == 0 {
                    "<1ms".into()
                } else {
                    format!("{}ms", a.duration_ms)
                },
                reason_beside_error(a),
                if a.error.is_empty() {
                    "-".into()
                } else {
                    a.error.clone()
                },
            ]
        })
        .collect();
    fitted_table(
        out,
        &header,
        rows,
        terminal_width(),
        REASONS_CUT,
        Layout::Bordered,
    )
}

/// The HTTP status, `-` when no response came.
pub fn status(a: &pb::Attempt) -> String {
    match a.status {
        0 => "-".into(),
        status => status.to_string(),
    }
}

/// The reason, less the error it repeats (an attempt without a response
/// says why in `error`; its reason adds at most a note).
fn reason_beside_error(a: &pb::Attempt) -> String {
    let rest = match a.reason.strip_prefix(a.error.as_str()) {
        Some(rest) if !a.error.is_empty() => rest.trim_start_matches(';').trim(),
        _ => a.reason.as_str(),
    };
    if rest.is_empty() {
        "-".into()
    } else {
        rest.to_owned()
    }
}

/// Deliveries that gave up: why they gave up and the last attempt's
/// outcome, one line each within `width` columns (the reason cut to fit).
pub fn failures_table(
    out: &mut impl Write,
    attempts: &[pb::Attempt],
    width: Option<usize>,
) -> anyhow::Result<()> {
    // The reason names the status where there was one.
    let header = ["ID", "EVENT", "OUTCOME", "GAVE UP", "REASON"];
    let rows = attempts
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                a.event_id.clone(),
                a.outcome.clone(),
                if a.give_up_reason.is_empty() {
                    "-".to_owned()
                } else {
                    a.give_up_reason.clone()
                },
                a.reason.clone(),
            ]
        })
        .collect();
    fitted_table(out, &header, rows, width, REASONS_CUT, Layout::Bordered)
}

/// The width tables fit: `COLUMNS`, else the terminal's; none when stdout
/// is not a terminal (a pipe gets whole reasons).
pub fn terminal_width() -> Option<usize> {
    if let Some(columns) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
    {
        return Some(columns);
    }
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    Table::new().width().map(usize::from)
}

/// The narrowest a cut last column gets, however wide the others are.
const MIN_LAST_COLUMN: usize = 12;

const REASONS_CUT: &str =
    "reasons cut to fit: `hookctl attempts get <ID>` or --json shows them whole";

/// How a fitted table is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// As every table: borders, a space either side of each cell.
    Bordered,
    /// No borders, two spaces between columns: six columns of a list and
    /// some of the last still fit 80.
    Plain,
}

/// A table whose last column (a reason: reqwest's whole error chain can
/// run to hundreds of characters; a description) is cut with `…` so each
/// line fits `width`; `note` says where the whole text is.
fn fitted_table(
    out: &mut impl Write,
    header: &[&str],
    mut rows: Vec<Vec<String>>,
    width: Option<usize>,
    note: &str,
    layout: Layout,
) -> anyhow::Result<()> {
    let mut cut = false;
    // Around each cell: a space either side and a border, or two spaces
    // after it (none after the last).
    let (outer, around, last_around, min_last) = match layout {
        Layout::Bordered => (1, 3, 3, MIN_LAST_COLUMN),
        Layout::Plain => (0, 2, 0, MIN_LAST_COLUMN - 2),
    };
    if let Some(width) = width {
        let last = header.len() - 1;
        let others: usize = outer
            + (0..last)
                .map(|i| {
                    rows.iter()
                        .map(|r| r[i].chars().count())
                        .chain([header[i].chars().count()])
                        .max()
                        .unwrap_or(0)
                        + around
                })
                .sum::<usize>();
        let room = width
            .saturating_sub(others + last_around)
            .max(min_last)
            .max(header[last].chars().count());
        for row in &mut rows {
            if row[last].chars().count() > room {
                row[last] = row[last].chars().take(room - 1).collect::<String>() + "…";
                cut = true;
            }
        }
    }
    let mut t = table(header);
    if layout == Layout::Plain {
        t.load_preset(comfy_table::presets::NOTHING);
        for column in t.column_iter_mut() {
            column.set_padding((0, 2));
        }
        if let Some(column) = t.column_mut(header.len() - 1) {
            column.set_padding((0, 0));
        }
    }
    for row in rows {
        t.add_row(row);
    }
    let text = t.to_string();
    for line in text.lines() {
        writeln!(out, "{}", line.trim_end())?;
    }
    if cut {
        writeln!(out, "{note}")?;
    }
    Ok(())
}

/// Everything about one attempt, request and response included.
pub fn attempt_details(out: &mut impl Write, a: &pb::Attempt) -> anyhow::Result<()> {
    let v = attempt_json(a);
    writeln!(
        out,
        "attempt      {} (#{} of event {} to {})",
        a.id, a.attempt, a.event_id, a.subscription_id
    )?;
    writeln!(out, "outcome      {}: {}", a.outcome, a.reason)?;
    writeln!(out, "status       {}", status(a))?;
    if !a.error.is_empty() {
        writeln!(out, "error        {}", a.error)?;
    }
    writeln!(
        out,
        "started      {} ({} ms)",
        text(&v["started_at"]),
        a.duration_ms
    )?;
    if !a.give_up_reason.is_empty() {
        writeln!(out, "gave up      {}", a.give_up_reason)?;
    }
    if a.next_attempt_at.is_some() {
        writeln!(out, "next attempt {}", text(&v["next_attempt_at"]))?;
    }
    writeln!(out, "webhook-id   {}", a.webhook_id)?;
    exchange(out, a)
}

/// The request sent and the response received, or the outcome line first
/// when there is no more to it.
pub fn exchange(out: &mut impl Write, a: &pb::Attempt) -> anyhow::Result<()> {
    if a.id.is_empty() {
        writeln!(
            out,
            "outcome      {}: {} ({} ms)",
            a.outcome, a.reason, a.duration_ms
        )?;
    }
    if let Some(r) = &a.request {
        writeln!(out, "\n> {} {}", r.method, r.url)?;
        for h in &r.headers {
            writeln!(out, "> {}: {}", h.name, h.value)?;
        }
        // A record keeps the first 4 KiB; say what the whole was.
        let more = if r.body_truncated {
            format!(
                " [first {} of {} bytes, sha256 {}; rendered from {} #{}]",
                r.body.len(),
                r.body_size,
                r.body_sha256,
                a.event_source,
                a.event_seq
            )
        } else {
            String::new()
        };
        writeln!(out, ">\n{}{more}", String::from_utf8_lossy(&r.body))?;
    }
    match &a.response {
        Some(r) => {
            writeln!(out, "\n< {}", r.status)?;
            for h in &r.headers {
                writeln!(out, "< {}: {}", h.name, h.value)?;
            }
            let more = if r.body_truncated { " [truncated]" } else { "" };
            writeln!(out, "<\n{}{more}", String::from_utf8_lossy(&r.body))?;
        }
        None => writeln!(out, "\n(no response)")?,
    }
    Ok(())
}

/// `global`, or `tenant <name>`.
fn scope_of(t: &pb::EventType) -> String {
    if t.global {
        "global".into()
    } else {
        format!("tenant {}", t.tenant)
    }
}

/// A schema or example as the API holds it (JSON text), as JSON; text
/// that is not JSON stays a string, an empty schema is null.
fn embedded(text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Null;
    }
    crate::catalog::parse_text(text).unwrap_or_else(|| Value::String(text.to_owned()))
}

pub fn event_type_json(t: &pb::EventType) -> Value {
    let current = t.versions.last().map(|v| v.version);
    let versions: Vec<Value> = t
        .versions
        .iter()
        .map(|v| {
            json!({
                "version": v.version,
                "current": Some(v.version) == current,
                "schema": embedded(&v.schema),
                "examples": v.examples.iter().map(|e| embedded(e)).collect::<Vec<_>>(),
                "created_at": time(&v.created_at),
            })
        })
        .collect();
    json!({
        "name": t.name,
        "scope": if t.global { "global" } else { "tenant" },
        "tenant": t.tenant,
        "global": t.global,
        "description": t.description,
        "validation": crate::catalog::Validation::of(t.validation).as_str(),
        "archived": t.archived,
        "current_version": current,
        "versions": versions,
        "created_at": time(&t.created_at),
        "updated_at": time(&t.updated_at),
        "revision": t.revision,
    })
}

fn pretty(text: &str) -> String {
    match crate::catalog::parse_text(text) {
        Some(value) => serde_json::to_string_pretty(&value).unwrap_or_else(|_| text.to_owned()),
        None => text.to_owned(),
    }
}

/// One event type: its fields, then each version (oldest first, the
/// current marked) with its schema and examples pretty-printed.
pub fn event_type_details(out: &mut impl Write, t: &pb::EventType) -> anyhow::Result<()> {
    let v = event_type_json(t);
    let mut table = table(&["FIELD", "VALUE"]);
    for (field, value) in [
        ("name", t.name.clone()),
        ("scope", scope_of(t)),
        ("description", t.description.clone()),
        ("validation", text(&v["validation"])),
        ("archived", t.archived.to_string()),
        (
            "current version",
            v["current_version"]
                .as_u64()
                .map_or("-".into(), |n| n.to_string()),
        ),
        ("created", text(&v["created_at"])),
        ("updated", text(&v["updated_at"])),
        ("revision", t.revision.to_string()),
    ] {
        table.add_row(vec![field.to_owned(), value]);
    }
    writeln!(out, "{table}")?;
    let current = t.versions.last().map(|v| v.version);
    for version in &t.versions {
        let mark = if Some(version.version) == current {
            " (current)"
        } else {
            ""
        };
        writeln!(
            out,
            "\nversion {}{mark}, created {}",
            version.version,
            text(&time(&version.created_at))
        )?;
        if version.schema.trim().is_empty() {
            writeln!(out, "schema: none (any object)")?;
        } else {
            writeln!(out, "schema:\n{}", pretty(&version.schema))?;
        }
        if version.examples.is_empty() {
            writeln!(out, "examples: none")?;
        }
        for (i, example) in version.examples.iter().enumerate() {
            writeln!(out, "example {}:\n{}", i + 1, pretty(example))?;
        }
    }
    Ok(())
}

/// Event types, a line each within `width` columns (the description cut
/// to fit), without borders: bordered, the six headers alone leave no room
/// for a description in 80 columns.
pub fn event_types_table(
    out: &mut impl Write,
    types: &[pb::EventType],
    width: Option<usize>,
) -> anyhow::Result<()> {
    let header = [
        "NAME",
        "SCOPE",
        "VERSION",
        "VALIDATION",
        "ARCHIVED",
        "DESCRIPTION",
    ];
    let rows = types
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                if t.global { "global" } else { "tenant" }.to_owned(),
                t.versions
                    .last()
                    .map_or("-".into(), |v| v.version.to_string()),
                crate::catalog::Validation::of(t.validation)
                    .as_str()
                    .to_owned(),
                if t.archived { "yes" } else { "no" }.to_owned(),
                t.description.clone(),
            ]
        })
        .collect();
    fitted_table(
        out,
        &header,
        rows,
        width,
        "descriptions cut: `hookctl event-type get NAME` or --json shows them whole",
        Layout::Plain,
    )
}

/// A tenant's catalog settings.
pub fn catalog_settings(
    out: &mut impl Write,
    as_json: bool,
    s: &pb::CatalogSettings,
) -> anyhow::Result<()> {
    if as_json {
        return print_json(out, &json!({"tenant": s.tenant, "strict": s.strict}));
    }
    let mut t = table(&["FIELD", "VALUE"]);
    t.add_row(vec!["tenant".to_owned(), s.tenant.clone()]);
    t.add_row(vec![
        "strict".to_owned(),
        if s.strict {
            "true (subscriptions may name only catalogued, unarchived event types)"
        } else {
            "false (subscriptions may name any event type)"
        }
        .to_owned(),
    ]);
    writeln!(out, "{t}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_show_why_they_gave_up_within_80_columns() {
        let reason = "error sending request for url (http://127.0.0.1:9/x): client error (Connect): tcp connect error: Connection refused (os error 111)";
        let attempts = [pb::Attempt {
            id: "att_01JABCDEFGHJKMNPQRSTVWXYZ0".into(),
            event_id: "o-1".into(),
            outcome: "http_5xx".into(),
            reason: reason.into(),
            give_up_reason: "no_retry".into(),
            response: Some(pb::HttpResponse {
                status: 500,
                ..Default::default()
            }),
            ..Default::default()
        }];
        let mut out = Vec::new();
        failures_table(&mut out, &attempts, Some(80)).unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in text.lines() {
            assert!(
                line.chars().count() <= 80,
                "{} columns:\n{text}",
                line.chars().count()
            );
        }
        assert!(
            text.contains("GAVE UP") && text.contains("no_retry"),
            "{text}"
        );
        assert!(text.contains("┆ error sendin"), "{text}");
        assert!(
            text.contains('…') && text.contains("hookctl attempts get <ID>"),
            "{text}"
        );

        // Whole in JSON, and in a table without a width (a pipe).
        assert_eq!(attempt_json(&attempts[0])["reason"], reason);
        let mut out = Vec::new();
        failures_table(&mut out, &attempts, None).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(reason) && !text.contains('…'), "{text}");
    }

    fn sample() -> pb::Subscription {
        pb::Subscription {
            id: "sub_01".into(),
            tenant: "acme".into(),
            url: "https://example.test/h".into(),
            event_types: vec!["user.*".into()],
            label_filter: [("course_id".to_owned(), "42".to_owned())].into(),
            enabled: Some(true),
            created_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            revision: 3,
            ..Default::default()
        }
    }

    #[test]
    fn subscription_json_is_flat_and_readable() {
        let v = subscription_json(&sample());
        assert_eq!(v["id"], "sub_01");
        assert_eq!(v["label_filter"]["course_id"], "42");
        assert_eq!(v["created_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v["success_rule"], "any_2xx");
        assert_eq!(v["revision"], 3);
    }

    #[test]
    fn one_subscription_shows_its_ordering_rate_limit_and_circuit() {
        let mut sub = sample();
        sub.ordering = pb::Ordering::Fifo as i32;
        sub.rate_limit = Some(pb::RateLimit {
            per_second: 50,
            burst: 10,
        });
        sub.circuit = Some(pb::CircuitSpec {
            open_after: 20,
            ..Default::default()
        });
        let mut out = Vec::new();
        subscription_table(&mut out, &sub).unwrap();
        let text = String::from_utf8(out).unwrap();
        for expected in ["fifo", "50/s, burst 10", "open after 20"] {
            assert!(text.contains(expected), "{expected} missing in\n{text}");
        }
        let mut out = Vec::new();
        subscription_table(&mut out, &sample()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("server defaults"), "{text}");
    }

    #[test]
    fn tables_show_the_fields() {
        let mut out = Vec::new();
        subscriptions_table(&mut out, &[sample()]).unwrap();
        let text = String::from_utf8(out).unwrap();
        for expected in ["ID", "sub_01", "acme", "user.*", "https://example.test/h"] {
            assert!(text.contains(expected), "{expected} missing in\n{text}");
        }
        let attempt = pb::Attempt {
            id: "att_1".into(),
            outcome: "http_5xx".into(),
            reason: "status 500".into(),
            response: Some(pb::HttpResponse {
                status: 500,
                body: b"down".to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut out = Vec::new();
        attempt_details(&mut out, &attempt).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("outcome      http_5xx: status 500"), "{text}");
        assert!(text.contains("< 500"), "{text}");
    }

    #[test]
    fn attempts_show_their_status_and_error() {
        let error = "error sending request for url (http://127.0.0.1:9/x): tcp connect error: Connection refused (os error 111)";
        let attempts = [
            pb::Attempt {
                id: "att_1".into(),
                outcome: "http_5xx".into(),
                reason: "status 500".into(),
                status: 500,
                ..Default::default()
            },
            pb::Attempt {
                id: "att_2".into(),
                outcome: "connect_error".into(),
                reason: format!("{error}; the retry could not be scheduled"),
                error: error.into(),
                ..Default::default()
            },
        ];
        let mut out = Vec::new();
        attempts_table(&mut out, &attempts).unwrap();
        let text = String::from_utf8(out).unwrap();
        let line = |id: &str| text.lines().find(|l| l.contains(id)).unwrap().to_owned();
        assert!(text.contains("STATUS") && text.contains("ERROR"), "{text}");
        assert!(line("att_1").contains("┆ 500 ") && line("att_1").contains("status 500"));
        // The error once, the reason's note beside it.
        let refused = line("att_2");
        assert_eq!(refused.matches("Connection refused").count(), 1, "{text}");
        assert!(
            refused.contains("the retry could not be scheduled"),
            "{text}"
        );
        assert!(refused.contains("┆ - "), "no status: {text}");

        let json = attempt_json(&attempts[1]);
        assert_eq!(
            (&json["status"], &json["error"]),
            (&json!(0), &json!(error))
        );
        assert_eq!(attempt_json(&attempts[0])["status"], 500);
        let mut out = Vec::new();
        attempt_details(&mut out, &attempts[1]).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(&format!("error        {error}")), "{text}");
        assert!(text.contains("status       -"), "{text}");
    }
}
