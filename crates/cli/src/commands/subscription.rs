//! `hookctl subscription create|get|list|update|delete`.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use hookrelay_proto::v1 as pb;
use hookrelay_proto::v1::subscriptions_client::SubscriptionsClient;

use super::key_value;
use crate::connect::{channel, status};
use crate::output;

#[derive(Debug, Subcommand)]
pub enum SubscriptionCommand {
    /// Create a subscription; prints its secret once.
    Create(CreateArgs),
    /// Show one subscription.
    Get { id: String },
    /// List a tenant's subscriptions.
    List {
        /// The tenant (default: the global --tenant, else a tenant token's
        /// own; required with an admin token).
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 50)]
        page_size: u32,
        #[arg(long)]
        page_token: Option<String>,
        /// Follow every page.
        #[arg(long)]
        all: bool,
    },
    /// Change fields of a subscription (read, change, write with a revision check).
    Update(UpdateArgs),
    /// Mint a new signing secret; the old ones keep signing for the grace period.
    Rotate {
        id: String,
        /// How long the previous secrets keep signing (default 24h).
        #[arg(long, value_parser = humantime::parse_duration)]
        grace: Option<std::time::Duration>,
    },
    /// Recent success rate, failures in a row, last success and failure, state.
    Health { id: String },
    /// Send a sample (or given) event now; show the request and response.
    /// Exits 1 (after showing them) when the delivery did not succeed.
    Test {
        id: String,
        /// Event type to send; default from the subscription's patterns.
        #[arg(long)]
        event_type: Option<String>,
        /// The event's data as a JSON object.
        #[arg(long)]
        data: Option<String>,
    },
    /// Delete a subscription.
    Delete {
        id: String,
        /// Only if still at this revision.
        #[arg(long)]
        revision: Option<u64>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Rule {
    #[value(name = "any_2xx")]
    Any2xx,
    #[value(name = "status_200")]
    Status200,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Order {
    /// Concurrent, up to --max-in-flight.
    Any,
    /// One request in flight, in stream order.
    Fifo,
}

/// Fields settable on create and update.
#[derive(Debug, Args)]
pub struct Fields {
    /// A name for people, e.g. "LMS stats".
    #[arg(long)]
    pub name: Option<String>,
    /// What it is for, for people.
    #[arg(long)]
    pub description: Option<String>,
    /// Set from `--event-type` of create (required there) or update.
    #[arg(skip)]
    pub event_types: Vec<String>,
    /// Label scope `key=value` (repeatable).
    #[arg(long = "label", value_parser = key_value)]
    pub labels: Vec<(String, String)>,
    /// Extra request header `name=value` (repeatable).
    #[arg(long = "header", value_parser = key_value)]
    pub headers: Vec<(String, String)>,
    /// Which responses count as delivered: any 2xx (default) or only 200.
    #[arg(long, value_enum)]
    pub success_rule: Option<Rule>,
    /// Request timeout, e.g. `10s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Requests in flight at once to this endpoint (default: the server's
    /// `dispatcher.default_max_in_flight`).
    #[arg(long)]
    pub max_in_flight: Option<u32>,
    /// `fifo`: one request in flight, in stream order (a failing event
    /// holds back this subscription's later ones).
    #[arg(long, value_enum)]
    pub ordering: Option<Order>,
    /// Requests per second at most (token bucket).
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Requests at once within --rate-limit (default: one second's worth).
    #[arg(long, requires = "rate_limit")]
    pub burst: Option<u32>,
    /// Failed attempts in a row that mark the endpoint failing (0: the
    /// server's `dispatcher.circuit.failing_after`).
    #[arg(long)]
    pub failing_after: Option<u32>,
    /// Failed attempts in a row that open its circuit: no requests, one
    /// probe at a time (0: the server's).
    #[arg(long)]
    pub open_after: Option<u32>,
    /// Failing this long disables the subscription, e.g. `5d`; `0s` never.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub disable_after: Option<std::time::Duration>,
    /// Retry policy: `none`, `schedule=10s,20s,30s`, `interval=1h,72h`,
    /// `until-success=1s,1m` (initial, cap; default 5s, 10h) or
    /// `exponential=1s,2,1m,10` (initial, factor, cap, max attempts).
    #[arg(long, value_parser = crate::retry::parse)]
    pub retry: Option<hookrelay_proto::v1::RetryPolicy>,
    /// GET (parameters in the query string), POST or PUT.
    #[arg(long)]
    pub method: Option<String>,
    /// How the body is encoded (Content-Type follows unless a --header sets it).
    #[arg(long, value_enum)]
    pub body_format: Option<Format>,
    /// The body's shape: a preset, or `custom` with --template.
    #[arg(long, value_enum)]
    pub envelope: Option<EnvelopeName>,
    /// JSON-shaped template (implies `--envelope custom`); `@FILE` reads a file.
    #[arg(long)]
    pub template: Option<String>,
    /// The `method` of a `--body-format json-rpc` request (default: the event type).
    #[arg(long)]
    pub jsonrpc_method: Option<String>,
    /// strftime format for the template's `date` function, e.g. `%d.%m.%Y`.
    #[arg(long)]
    pub date_format: Option<String>,
    /// Debounce window of a batched subscription, e.g. `2s`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub batch_window: Option<std::time::Duration>,
    /// Most changes per batched request.
    #[arg(long)]
    pub batch_max: Option<u32>,
    /// Template of the coalescing key (default `{{ object }}:{{ entity_id or id }}`).
    #[arg(long)]
    pub batch_key: Option<String>,
    /// Template of each change's `url`, e.g. `https://api.example.com/{{ object }}s/{{ entity_id }}`.
    #[arg(long)]
    pub batch_url: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    Json,
    Raw,
    #[value(name = "json-rpc")]
    JsonRpc,
    Form,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EnvelopeName {
    Standard,
    #[value(name = "entity_event")]
    EntityEvent,
    #[value(name = "forum_event")]
    ForumEvent,
    #[value(name = "changes_batch")]
    ChangesBatch,
    Custom,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The tenant whose events it receives (default: the global --tenant,
    /// else a tenant token's own; required with an admin token).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Where requests go: http:// or https://.
    #[arg(long)]
    pub url: String,
    /// Event type pattern: exact, `prefix.*` or `*` (at least one; repeatable).
    #[arg(long = "event-type", value_name = "PATTERN", required = true)]
    pub event_types: Vec<String>,
    #[command(flatten)]
    pub fields: Fields,
    /// Create it disabled.
    #[arg(long)]
    pub disabled: bool,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The subscription's id (sub_...).
    pub id: String,
    /// Where requests go: http:// or https://.
    #[arg(long)]
    pub url: Option<String>,
    /// Event type pattern (repeatable): replaces the subscription's patterns.
    #[arg(long = "event-type", value_name = "PATTERN")]
    pub event_types: Vec<String>,
    #[command(flatten)]
    pub fields: Fields,
    /// Enable it.
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Disable it: events are not delivered to it meanwhile.
    #[arg(long)]
    pub disable: bool,
    /// Remove every label scope before adding `--label`s.
    #[arg(long)]
    pub clear_labels: bool,
    /// Remove every header before adding `--header`s.
    #[arg(long)]
    pub clear_headers: bool,
}

fn apply(sub: &mut pb::Subscription, fields: Fields) -> anyhow::Result<()> {
    if let Some(name) = fields.name {
        sub.name = name;
    }
    if let Some(description) = fields.description {
        sub.description = description;
    }
    if !fields.event_types.is_empty() {
        sub.event_types = fields.event_types;
    }
    sub.label_filter.extend(fields.labels);
    if !fields.headers.is_empty() {
        let request = sub.request.get_or_insert_with(Default::default);
        request.headers.extend(fields.headers);
    }
    if let Some(rule) = fields.success_rule {
        sub.success_rule = match rule {
            Rule::Any2xx => pb::SuccessRule::Any2xx,
            Rule::Status200 => pb::SuccessRule::Status200,
        } as i32;
    }
    if let Some(timeout) = fields.timeout {
        sub.timeout = prost_types::Duration::try_from(timeout).ok();
    }
    if let Some(max) = fields.max_in_flight {
        sub.max_in_flight = max;
    }
    if let Some(order) = fields.ordering {
        sub.ordering = match order {
            Order::Any => pb::Ordering::Unspecified,
            Order::Fifo => pb::Ordering::Fifo,
        } as i32;
    }
    if let Some(per_second) = fields.rate_limit {
        sub.rate_limit = Some(pb::RateLimit {
            per_second,
            burst: fields.burst.unwrap_or(0),
        });
    }
    if fields.failing_after.is_some()
        || fields.open_after.is_some()
        || fields.disable_after.is_some()
    {
        let circuit = sub.circuit.get_or_insert_with(Default::default);
        if let Some(n) = fields.failing_after {
            circuit.failing_after = n;
        }
        if let Some(n) = fields.open_after {
            circuit.open_after = n;
        }
        if let Some(d) = fields.disable_after {
            circuit.disable_after = prost_types::Duration::try_from(d).ok();
        }
    }
    if let Some(retry) = fields.retry {
        sub.retry_policy = Some(retry);
    }
    let request = sub.request.get_or_insert_with(Default::default);
    if let Some(method) = fields.method {
        request.method = method.to_ascii_uppercase();
    }
    if let Some(format) = fields.body_format {
        request.body_format = match format {
            Format::Json => pb::BodyFormat::Json,
            Format::Raw => pb::BodyFormat::Raw,
            Format::JsonRpc => pb::BodyFormat::JsonRpc,
            Format::Form => pb::BodyFormat::Form,
        } as i32;
    }
    if let Some(envelope) = fields.envelope {
        request.envelope = match envelope {
            EnvelopeName::Standard => pb::Envelope::Standard,
            EnvelopeName::EntityEvent => pb::Envelope::EntityEvent,
            EnvelopeName::ForumEvent => pb::Envelope::ForumEvent,
            EnvelopeName::ChangesBatch => pb::Envelope::ChangesBatch,
            EnvelopeName::Custom => pb::Envelope::Custom,
        } as i32;
    }
    if let Some(template) = fields.template {
        request.template = match template.strip_prefix('@') {
            Some(path) => {
                std::fs::read_to_string(path).with_context(|| format!("reading template {path}"))?
            }
            None => template,
        };
        request.envelope = pb::Envelope::Custom as i32;
    }
    if let Some(method) = fields.jsonrpc_method {
        request.jsonrpc_method = method;
    }
    if let Some(format) = fields.date_format {
        request.date_format = format;
    }
    if fields.batch_window.is_some()
        || fields.batch_max.is_some()
        || fields.batch_key.is_some()
        || fields.batch_url.is_some()
    {
        let batch = sub.batch.get_or_insert_with(Default::default);
        if let Some(window) = fields.batch_window {
            batch.window = prost_types::Duration::try_from(window).ok();
        }
        if let Some(max) = fields.batch_max {
            batch.max_size = max;
        }
        if let Some(key) = fields.batch_key {
            batch.key = key;
        }
        if let Some(url) = fields.batch_url {
            batch.url_template = url;
        }
    }
    Ok(())
}

pub async fn run(
    server: &crate::connect::Server,
    json: bool,
    command: SubscriptionCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut client = SubscriptionsClient::new(channel(server).await?);
    match command {
        SubscriptionCommand::Create(args) => {
            let mut sub = pb::Subscription {
                tenant: server.tenant(args.tenant),
                url: args.url,
                enabled: Some(!args.disabled),
                label_filter: HashMap::new(),
                ..Default::default()
            };
            let mut fields = args.fields;
            fields.event_types = args.event_types;
            apply(&mut sub, fields)?;
            let created = client
                .create_subscription(pb::CreateSubscriptionRequest {
                    subscription: Some(sub),
                })
                .await
                .map_err(status)?
                .into_inner();
            let sub = created
                .subscription
                .context("server returned no subscription")?;
            if json {
                let mut value = output::subscription_json(&sub);
                value["secret"] = created.secret.into();
                output::print_json(out, &value)
            } else {
                output::subscription_table(out, &sub)?;
                writeln!(out, "secret: {} (shown once, store it now)", created.secret)?;
                Ok(())
            }
        }
        SubscriptionCommand::Get { id } => {
            let sub = client
                .get_subscription(pb::GetSubscriptionRequest {
                    tenant: server.tenant(None),
                    id,
                })
                .await
                .map_err(status)?
                .into_inner();
            show(out, json, &sub)
        }
        SubscriptionCommand::List {
            tenant,
            page_size,
            page_token,
            all,
        } => {
            let mut subs = Vec::new();
            let mut token = page_token.unwrap_or_default();
            let tenant = server.tenant(tenant);
            loop {
                let page = client
                    .list_subscriptions(pb::ListSubscriptionsRequest {
                        tenant: tenant.clone(),
                        page_size,
                        page_token: token,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                subs.extend(page.subscriptions);
                token = page.next_page_token;
                if !all || token.is_empty() {
                    break;
                }
            }
            if json {
                let list: Vec<_> = subs.iter().map(output::subscription_json).collect();
                output::print_json(
                    out,
                    &serde_json::json!({"subscriptions": list, "next_page_token": token}),
                )
            } else {
                output::subscriptions_table(out, &subs)?;
                if !token.is_empty() {
                    writeln!(out, "more: --page-token {token} (or --all)")?;
                }
                Ok(())
            }
        }
        SubscriptionCommand::Update(args) => {
            let mut sub = client
                .get_subscription(pb::GetSubscriptionRequest {
                    tenant: server.tenant(None),
                    id: args.id.clone(),
                })
                .await
                .map_err(status)?
                .into_inner();
            let revision = sub.revision;
            if let Some(url) = args.url {
                sub.url = url;
            }
            if args.clear_labels {
                sub.label_filter.clear();
            }
            if args.clear_headers {
                if let Some(request) = sub.request.as_mut() {
                    request.headers.clear();
                }
            }
            if args.enable {
                sub.enabled = Some(true);
            }
            if args.disable {
                sub.enabled = Some(false);
            }
            let mut fields = args.fields;
            fields.event_types = args.event_types;
            apply(&mut sub, fields)?;
            let updated = client
                .update_subscription(pb::UpdateSubscriptionRequest {
                    subscription: Some(sub),
                    expected_revision: revision,
                })
                .await
                .map_err(status)?
                .into_inner();
            show(out, json, &updated)
        }
        SubscriptionCommand::Rotate { id, grace } => {
            let rotated = client
                .rotate_secret(pb::RotateSecretRequest {
                    tenant: server.tenant(None),
                    id,
                    grace: grace.and_then(|g| prost_types::Duration::try_from(g).ok()),
                })
                .await
                .map_err(status)?
                .into_inner();
            let expires = rotated
                .previous_expires_at
                .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
                .map(|t| t.to_rfc3339())
                .unwrap_or_default();
            if json {
                output::print_json(
                    out,
                    &serde_json::json!({"secret": rotated.secret, "previous_expires_at": expires}),
                )
            } else {
                writeln!(out, "secret: {} (shown once, store it now)", rotated.secret)?;
                writeln!(out, "previous secrets sign until {expires}")?;
                Ok(())
            }
        }
        SubscriptionCommand::Health { id } => {
            let channel = channel(server).await?;
            let mut logs =
                hookrelay_proto::v1::delivery_logs_client::DeliveryLogsClient::new(channel);
            let health = logs
                .get_subscription_health(pb::GetSubscriptionHealthRequest {
                    tenant: server.tenant(None),
                    subscription_id: id,
                })
                .await
                .map_err(status)?
                .into_inner();
            output::health(out, json, &health)
        }
        SubscriptionCommand::Test {
            id,
            event_type,
            data,
        } => {
            let sent = client
                .send_test_event(pb::SendTestEventRequest {
                    tenant: server.tenant(None),
                    id,
                    event_type: event_type.unwrap_or_default(),
                    data: data.unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            let attempt = pb::Attempt {
                outcome: sent.outcome,
                reason: sent.reason,
                duration_ms: sent.duration_ms,
                request: sent.request,
                response: sent.response,
                attempt: 1,
                ..Default::default()
            };
            if json {
                output::print_json(out, &output::attempt_json(&attempt))?;
            } else {
                output::exchange(out, &attempt)?;
            }
            // Scripts (and CI checks of an endpoint) read the exit status.
            if attempt.outcome != "success" {
                anyhow::bail!(
                    "the test delivery failed: {}: {}",
                    attempt.outcome,
                    attempt.reason
                );
            }
            Ok(())
        }
        SubscriptionCommand::Delete { id, revision } => {
            client
                .delete_subscription(pb::DeleteSubscriptionRequest {
                    tenant: server.tenant(None),
                    id: id.clone(),
                    expected_revision: revision.unwrap_or(0),
                })
                .await
                .map_err(status)?;
            if json {
                output::print_json(out, &serde_json::json!({"deleted": id}))
            } else {
                writeln!(out, "deleted {id}")?;
                Ok(())
            }
        }
    }
}

fn show(out: &mut impl Write, json: bool, sub: &pb::Subscription) -> anyhow::Result<()> {
    if json {
        output::print_json(out, &output::subscription_json(sub))
    } else {
        output::subscription_table(out, sub)
    }
}
