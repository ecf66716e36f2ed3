//! Turns an API subscription into the stored model, refusing what is invalid
//! (INVALID_ARGUMENT) or not yet supported (UNIMPLEMENTED), naming the field.

use std::collections::BTreeMap;
use std::time::Duration;

use hookrelay_core::event::check_token_path;
use hookrelay_core::retry::RetryPolicy;
use hookrelay_core::subscription::{
    check_header, check_pattern, DeliveryOrder, RequestSpec, SuccessRule,
};
use hookrelay_proto::v1 as pb;

use crate::error::ApiError;

/// The editable part of a subscription, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub tenant: String,
    pub name: String,
    pub description: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub label_filter: BTreeMap<String, String>,
    pub enabled: bool,
    pub headers: BTreeMap<String, String>,
    pub request: RequestSpec,
    pub success_rule: SuccessRule,
    pub timeout: Option<Duration>,
    pub max_in_flight: Option<u32>,
    pub retry_policy: Option<RetryPolicy>,
    pub circuit: Option<hookrelay_core::circuit::CircuitSpec>,
    pub rate_limit: Option<hookrelay_core::subscription::RateLimit>,
    pub batch: Option<hookrelay_core::subscription::BatchSpec>,
    pub ordering: DeliveryOrder,
}

const MAX_URL: usize = 2048;
const MAX_PATTERNS: usize = 64;
const MAX_LABELS: usize = 32;
const MAX_HEADERS: usize = 32;
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_IN_FLIGHT: u32 = 10_000;

/// What one subscription may hold of the dispatcher's request slots.
#[derive(Debug, Clone, Copy)]
pub struct InFlightBounds {
    /// `limits.max_in_flight_per_tenant`.
    pub tenant_cap: u32,
    pub default_max_in_flight: u32,
    pub default_timeout: Duration,
}

impl InFlightBounds {
    pub fn of(config: &hookrelay_core::Config) -> Self {
        Self {
            tenant_cap: config.limits.max_in_flight_per_tenant,
            default_max_in_flight: config.dispatcher.default_max_in_flight,
            default_timeout: config.dispatcher.default_timeout,
        }
    }

    /// Request-seconds a subscription may hold when its endpoint hangs:
    /// the tenant cap for the default timeout.
    fn budget_secs(&self) -> f64 {
        self.tenant_cap as f64 * self.default_timeout.as_secs_f64()
    }

    /// Refuses a `max_in_flight` over the tenant cap, and a `max_in_flight`
    /// × `timeout` that would let one hung endpoint hold more
    /// request-seconds than the tenant's whole cap at the default timeout.
    pub fn check(&self, spec: &Spec) -> Result<(), ApiError> {
        let in_flight = spec.max_in_flight.unwrap_or(self.default_max_in_flight);
        if in_flight > self.tenant_cap {
            return Err(ApiError::invalid(
                "subscription.max_in_flight",
                format!(
                    "at most {} (limits.max_in_flight_per_tenant: what one tenant may have in flight)",
                    self.tenant_cap
                ),
            ));
        }
        let timeout = spec.timeout.unwrap_or(self.default_timeout);
        let held = in_flight as f64 * timeout.as_secs_f64();
        if held > self.budget_secs() + 1e-9 {
            let most = (self.budget_secs() / timeout.as_secs_f64())
                .floor()
                .max(1.0);
            return Err(ApiError::invalid(
                "subscription.max_in_flight",
                format!(
                    "{in_flight} in flight × timeout {} holds {held:.0} request-seconds when the endpoint hangs; \
                     at most {:.0} are allowed (limits.max_in_flight_per_tenant {} × default timeout {}): \
                     with this timeout, max_in_flight may be at most {most:.0}",
                    humantime::format_duration(timeout),
                    self.budget_secs(),
                    self.tenant_cap,
                    humantime::format_duration(self.default_timeout),
                ),
            ));
        }
        Ok(())
    }
}

const MAX_RATE: u32 = 100_000;

fn rate_limit(limit: &pb::RateLimit) -> Result<hookrelay_core::subscription::RateLimit, ApiError> {
    if limit.per_second == 0 || limit.per_second > MAX_RATE {
        return Err(ApiError::invalid(
            "subscription.rate_limit.per_second",
            format!("must be between 1 and {MAX_RATE}"),
        ));
    }
    if limit.burst > MAX_RATE {
        return Err(ApiError::invalid(
            "subscription.rate_limit.burst",
            format!("at most {MAX_RATE} (0: one second's worth)"),
        ));
    }
    Ok(hookrelay_core::subscription::RateLimit {
        per_second: limit.per_second,
        burst: if limit.burst == 0 {
            limit.per_second
        } else {
            limit.burst
        },
    })
}

/// A subscription's own circuit thresholds; zero and absent fields are the
/// server's.
fn circuit_spec(spec: &pb::CircuitSpec) -> Result<hookrelay_core::circuit::CircuitSpec, ApiError> {
    let disable_after = spec
        .disable_after
        .map(|d| {
            Duration::try_from(d).map_err(|_| {
                ApiError::invalid(
                    "subscription.circuit.disable_after",
                    "must not be negative (zero: never disable)",
                )
            })
        })
        .transpose()?;
    let some = |n: u32| (n > 0).then_some(n);
    let (failing_after, open_after) = (some(spec.failing_after), some(spec.open_after));
    if let (Some(failing), Some(open)) = (failing_after, open_after) {
        if open < failing {
            return Err(ApiError::invalid(
                "subscription.circuit.open_after",
                format!("must be at least failing_after ({failing})"),
            ));
        }
    }
    Ok(hookrelay_core::circuit::CircuitSpec {
        failing_after,
        open_after,
        disable_after,
    })
}

/// Validates `sub` (prefixing field names with `subscription.`).
pub fn spec(sub: &pb::Subscription) -> Result<Spec, ApiError> {
    let f = |name: &str| format!("subscription.{name}");
    check_token_path(&sub.tenant, false).map_err(|m| ApiError::invalid(f("tenant"), m))?;
    if sub.name.chars().count() > 256 {
        return Err(ApiError::invalid(f("name"), "at most 256 characters"));
    }
    if sub.description.chars().count() > 4096 {
        return Err(ApiError::invalid(
            f("description"),
            "at most 4096 characters",
        ));
    }
    check_url(&sub.url).map_err(|m| ApiError::invalid(f("url"), m))?;
    if sub.event_types.is_empty() {
        return Err(ApiError::invalid(
            f("event_types"),
            "at least one pattern is required (\"*\" for every type)",
        ));
    }
    if sub.event_types.len() > MAX_PATTERNS {
        return Err(ApiError::invalid(
            f("event_types"),
            format!("at most {MAX_PATTERNS} patterns"),
        ));
    }
    for (i, pattern) in sub.event_types.iter().enumerate() {
        check_pattern(pattern)
            .map_err(|m| ApiError::invalid(format!("subscription.event_types[{i}]"), m))?;
    }
    if sub.label_filter.len() > MAX_LABELS {
        return Err(ApiError::invalid(
            f("label_filter"),
            format!("at most {MAX_LABELS} labels"),
        ));
    }
    for (key, value) in &sub.label_filter {
        if key.is_empty() || key.len() > 64 || value.len() > 256 {
            return Err(ApiError::invalid(
                format!("subscription.label_filter[{key:?}]"),
                "keys are 1-64 bytes and values at most 256 bytes",
            ));
        }
    }
    let request = sub.request.clone().unwrap_or_default();
    let headers = request_headers(&request)?;
    let request = crate::request_spec::from_proto(&request, &sub.tenant, &sub.event_types)?;
    let success_rule = match pb::SuccessRule::try_from(sub.success_rule) {
        Ok(pb::SuccessRule::Unspecified | pb::SuccessRule::Any2xx) => SuccessRule::Any2xx,
        Ok(pb::SuccessRule::Status200) => SuccessRule::Status200,
        Err(_) => {
            return Err(ApiError::invalid(
                f("success_rule"),
                format!("unknown value {}", sub.success_rule),
            ))
        }
    };
    let retry_policy = crate::retry_policy::from_proto(sub.retry_policy.as_ref())?;
    let circuit = sub.circuit.as_ref().map(circuit_spec).transpose()?;
    let rate_limit = sub.rate_limit.as_ref().map(rate_limit).transpose()?;
    let batch = crate::batch_spec::from_proto(sub.batch.as_ref())?;
    if request.envelope == hookrelay_core::subscription::Envelope::ChangesBatch && batch.is_none() {
        return Err(ApiError::invalid(
            "subscription.request.envelope",
            "ENVELOPE_CHANGES_BATCH needs a batch (subscription.batch.window)",
        ));
    }
    let timeout = match &sub.timeout {
        None => None,
        Some(d) => {
            let timeout = Duration::try_from(*d)
                .ok()
                .filter(|t| !t.is_zero() && *t <= MAX_TIMEOUT)
                .ok_or_else(|| ApiError::invalid(f("timeout"), "must be between 1ms and 5m"))?;
            Some(timeout)
        }
    };
    let max_in_flight = match sub.max_in_flight {
        0 => None,
        n if n > MAX_IN_FLIGHT => {
            return Err(ApiError::invalid(
                f("max_in_flight"),
                format!("at most {MAX_IN_FLIGHT}"),
            ))
        }
        n => Some(n),
    };
    let ordering = match pb::Ordering::try_from(sub.ordering) {
        Ok(pb::Ordering::Unspecified) => DeliveryOrder::Any,
        Ok(pb::Ordering::Fifo) => DeliveryOrder::Fifo,
        Err(_) => {
            return Err(ApiError::invalid(
                f("ordering"),
                format!("unknown value {}", sub.ordering),
            ))
        }
    };
    if ordering == DeliveryOrder::Fifo {
        if batch.is_some() {
            return Err(ApiError::invalid(
                f("ordering"),
                "ORDERING_FIFO cannot be combined with batch: a batch already goes out as one request per window",
            ));
        }
        if max_in_flight.is_some_and(|n| n > 1) {
            return Err(ApiError::invalid(
                f("max_in_flight"),
                "must be 0 or 1 with ORDERING_FIFO (one request in flight, in stream order)",
            ));
        }
    }
    Ok(Spec {
        ordering,
        tenant: sub.tenant.clone(),
        name: sub.name.clone(),
        description: sub.description.clone(),
        url: sub.url.clone(),
        event_types: sub.event_types.clone(),
        label_filter: sub.label_filter.clone().into_iter().collect(),
        enabled: sub.enabled.unwrap_or(true),
        headers,
        request,
        success_rule,
        timeout,
        max_in_flight,
        retry_policy,
        circuit,
        rate_limit,
        batch,
    })
}

fn request_headers(request: &pb::RequestSpec) -> Result<BTreeMap<String, String>, ApiError> {
    let f = |name: &str| format!("subscription.request.{name}");
    if request.headers.len() > MAX_HEADERS {
        return Err(ApiError::invalid(
            f("headers"),
            format!("at most {MAX_HEADERS} headers"),
        ));
    }
    let mut headers = BTreeMap::new();
    for (name, value) in &request.headers {
        check_header(name, value)
            .map_err(|m| ApiError::invalid(format!("subscription.request.headers[{name:?}]"), m))?;
        headers.insert(name.to_ascii_lowercase(), value.clone());
    }
    Ok(headers)
}

fn check_url(raw: &str) -> Result<(), String> {
    if raw.is_empty() {
        return Err("is required".into());
    }
    if raw.len() > MAX_URL {
        return Err(format!("at most {MAX_URL} bytes"));
    }
    let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a valid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; use request headers".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> pb::Subscription {
        pb::Subscription {
            tenant: "acme".into(),
            url: "https://example.test/hook".into(),
            event_types: vec!["user.*".into()],
            ..Default::default()
        }
    }

    type Edit = Box<dyn FnOnce(&mut pb::Subscription)>;

    fn refused(edit: impl FnOnce(&mut pb::Subscription)) -> ApiError {
        let mut sub = valid();
        edit(&mut sub);
        spec(&sub).unwrap_err()
    }

    #[test]
    fn a_minimal_subscription_is_enabled_with_defaults() {
        let spec = spec(&valid()).unwrap();
        assert!(spec.enabled);
        assert_eq!(spec.success_rule, SuccessRule::Any2xx);
        assert_eq!(spec.timeout, None);
    }

    #[test]
    fn invalid_fields_are_named() {
        let cases: Vec<(Edit, &str)> = vec![
            (Box::new(|s| s.tenant = "a b".into()), "subscription.tenant"),
            (
                Box::new(|s| s.url = "ftp://x/".into()),
                "subscription.url: scheme \"ftp\"",
            ),
            (Box::new(|s| s.url = "not a url".into()), "subscription.url"),
            (
                Box::new(|s| s.url = "http://u:p@x/".into()),
                "subscription.url: must not carry credentials",
            ),
            (
                Box::new(|s| s.event_types.clear()),
                "subscription.event_types: at least one",
            ),
            (
                Box::new(|s| s.event_types.push("a.*.b".into())),
                "subscription.event_types[1]",
            ),
            (
                Box::new(|s| {
                    s.label_filter.insert(String::new(), "x".into());
                }),
                "subscription.label_filter",
            ),
            (
                Box::new(|s| {
                    s.timeout = Some(prost_types::Duration {
                        seconds: 600,
                        nanos: 0,
                    })
                }),
                "subscription.timeout",
            ),
            (
                Box::new(|s| s.max_in_flight = 1_000_000),
                "subscription.max_in_flight",
            ),
            (
                Box::new(|s| {
                    s.request = Some(pb::RequestSpec {
                        method: "DELETE".into(),
                        ..Default::default()
                    })
                }),
                "subscription.request.method",
            ),
        ];
        for (edit, expected) in cases {
            let err = refused(edit);
            assert!(matches!(err, ApiError::Invalid { .. }), "{err}");
            assert!(err.to_string().starts_with(expected), "{err} !~ {expected}");
        }
    }

    #[test]
    fn protected_headers_are_refused() {
        for name in [
            "webhook-signature",
            "Host",
            "content-length",
            "Connection",
            "transfer-encoding",
        ] {
            let err = refused(|s| {
                s.request = Some(pb::RequestSpec {
                    headers: [(name.to_owned(), "x".to_owned())].into(),
                    ..Default::default()
                })
            });
            assert!(
                err.to_string().contains("subscription.request.headers"),
                "{err}"
            );
        }
    }

    #[test]
    fn batches_need_a_window_and_changes_batch_needs_a_batch() {
        let err = refused(|s| {
            s.batch = Some(pb::BatchSpec {
                max_size: 10,
                ..Default::default()
            })
        });
        assert!(
            err.to_string().starts_with("subscription.batch.window"),
            "{err}"
        );
        let err = refused(|s| {
            s.request = Some(pb::RequestSpec {
                envelope: pb::Envelope::ChangesBatch as i32,
                ..Default::default()
            })
        });
        assert!(
            err.to_string()
                .starts_with("subscription.request.envelope: ENVELOPE_CHANGES_BATCH needs a batch"),
            "{err}"
        );
    }

    #[test]
    fn templates_are_compiled_and_test_rendered() {
        let custom = |template: &str| {
            let template = template.to_owned();
            move |s: &mut pb::Subscription| {
                s.request = Some(pb::RequestSpec {
                    envelope: pb::Envelope::Custom as i32,
                    template,
                    ..Default::default()
                })
            }
        };
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(custom(r#"{"a": "{{ data.id "}"#)),
                "subscription.request.template: $.a: syntax error",
            ),
            (
                Box::new(custom(r#"{"a": 1,}"#)),
                "subscription.request.template: line 1 column 9",
            ),
            (
                Box::new(custom(r#"{"a": "{{ md6(data) }}"}"#)),
                "subscription.request.template: does not render a sample event: rendering $.a",
            ),
            (
                Box::new(custom("")),
                "subscription.request.template: is required",
            ),
            (
                Box::new(|s| {
                    s.request = Some(pb::RequestSpec {
                        body_format: pb::BodyFormat::JsonRpc as i32,
                        ..Default::default()
                    })
                }),
                "subscription.request.jsonrpc_method: is required",
            ),
            (
                Box::new(|s| {
                    s.request = Some(pb::RequestSpec {
                        method: "PATCH".into(),
                        ..Default::default()
                    })
                }),
                "subscription.request.method",
            ),
            (
                Box::new(|s| {
                    s.request = Some(pb::RequestSpec {
                        date_format: "%Q".into(),
                        ..Default::default()
                    })
                }),
                "subscription.request.date_format",
            ),
        ];
        for (edit, expected) in cases {
            let err = refused(edit);
            assert!(matches!(err, ApiError::Invalid { .. }), "{err}");
            assert!(err.to_string().starts_with(expected), "{err} !~ {expected}");
        }
        let mut ok = valid();
        custom(r#"{"who": "{{ data.name | upper }}", "h": "{{ data.id | sha256 }}"}"#)(&mut ok);
        assert_eq!(
            spec(&ok).unwrap().request.envelope,
            hookrelay_core::subscription::Envelope::Custom
        );
    }
}
