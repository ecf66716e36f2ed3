//! The subscription model as stored in the KV bucket, and event matching.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::retry::RetryPolicy;
use crate::signing::{SecretError, SigningKey};

/// A token bucket over a subscription's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub per_second: u32,
    /// Requests at once; at least 1.
    pub burst: u32,
}

/// What counts as a delivered request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuccessRule {
    /// Any 2xx status.
    #[default]
    Any2xx,
    /// Only 200.
    Status200,
}

impl SuccessRule {
    pub fn accepts(self, status: u16) -> bool {
        match self {
            SuccessRule::Any2xx => (200..300).contains(&status),
            SuccessRule::Status200 => status == 200,
        }
    }
}

/// The order a subscription's deliveries go out in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOrder {
    /// Concurrently, up to `max_in_flight`; a retry does not hold back
    /// later events.
    #[default]
    Any,
    /// One request in flight, in stream order: a failing event holds back
    /// the later ones until it succeeds or is given up.
    Fifo,
}

impl DeliveryOrder {
    pub fn is_any(&self) -> bool {
        *self == DeliveryOrder::Any
    }
}

/// HTTP method of a delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// Parameters in the query string, no body.
    Get,
    #[default]
    Post,
    Put,
}

/// How the rendered value is encoded in the body (or query, for GET).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyFormat {
    #[default]
    Json,
    /// A rendered string as is (anything else as JSON text).
    Raw,
    /// `{"jsonrpc":"2.0","method","params","id"}`
    JsonRpc,
    /// URL-encoded, nested keys as `a[b]=`.
    Form,
}

/// The named preset the request body starts from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Envelope {
    /// `{"type","timestamp","data"}`
    #[default]
    Standard,
    /// `{"type": "course_stat", "event": "created", "data"}` (seed 000)
    EntityEvent,
    /// `{"changes": [...]}` (seed 001)
    ChangesBatch,
    /// `{"api_version","data":{"object"},"object":"event","id","type","mode"}` (seed 003)
    ForumEvent,
    /// The subscription's own template.
    Custom,
}

/// How a subscription's requests are shaped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RequestSpec {
    pub method: Method,
    pub body_format: BodyFormat,
    pub envelope: Envelope,
    /// JSON-shaped template of the `custom` envelope.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Method name of the `json_rpc` body format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jsonrpc_method: Option<String>,
    /// strftime format used by the `date` template function.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_format: Option<String>,
}

/// Debounced batching: changes are buffered in Redis for `window`, coalesced
/// by `key`, and sent as one request of at most `max_size` changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchSpec {
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub max_size: u32,
    /// Template of the coalescing key; default `{{ object }}:{{ entity_id }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Template of each change's `url`; no `url` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_template: Option<String>,
}

/// A signing secret, kept beside the time after which it stops signing.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredSecret {
    pub secret: String,
    pub created_at: DateTime<Utc>,
    /// After this instant the secret no longer signs (end of a rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for StoredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSecret")
            .field("secret", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Every subscription id is this followed by a ULID.
pub const ID_PREFIX: &str = "sub_";

/// A subscription: which events go where, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub tenant: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub url: String,
    pub event_types: Vec<String>,
    #[serde(default)]
    pub label_filter: BTreeMap<String, String>,
    pub enabled: bool,
    /// Extra request headers (validated against the protected set).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Method, body format, envelope and template.
    #[serde(default)]
    pub request: RequestSpec,
    #[serde(default)]
    pub success_rule: SuccessRule,
    /// Request timeout; the dispatcher default when absent.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// In-flight limit; the dispatcher default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    /// Debounced batching, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSpec>,
    /// How failures are retried; the default schedule when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<RetryPolicy>,
    /// Requests per second at most, if limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// This subscription's own endpoint-health thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit: Option<crate::circuit::CircuitSpec>,
    /// Whether deliveries go out one at a time in stream order.
    #[serde(default, skip_serializing_if = "DeliveryOrder::is_any")]
    pub ordering: DeliveryOrder,
    pub secrets: Vec<StoredSecret>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// KV revision; not stored in the value, filled in when read.
    #[serde(skip)]
    pub revision: u64,
}

impl Subscription {
    /// Whether `event` goes to this subscription.
    pub fn matches(&self, event: &Event) -> bool {
        self.enabled
            && self.tenant == event.tenant
            && self
                .event_types
                .iter()
                .any(|p| pattern_matches(p, &event.event_type))
            && self
                .label_filter
                .iter()
                .all(|(k, v)| event.labels.get(k) == Some(v))
    }

    /// Keys that sign at `now`: every secret not yet expired.
    pub fn signing_keys(&self, now: DateTime<Utc>) -> Result<Vec<SigningKey>, SecretError> {
        self.secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|at| at > now))
            .map(|s| SigningKey::parse(&s.secret))
            .collect()
    }
}

/// `*` matches every type; `a.*` matches `a.` followed by one or more tokens;
/// anything else matches exactly.
pub fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(stem) => event_type
            .strip_prefix(stem)
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('.')),
        None => pattern == event_type,
    }
}

/// Checks a pattern's syntax: dot-separated tokens of letters, digits, `_`
/// and `-`, with `*` allowed only as the whole last token.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern == "*" {
        return Ok(());
    }
    let stem = pattern.strip_suffix(".*").unwrap_or(pattern);
    if stem.contains('*') || stem.contains('>') {
        return Err(format!(
            "{pattern:?}: '*' is allowed only as the whole last token (\"course_stat.*\") or alone"
        ));
    }
    crate::event::check_token_path(stem, true).map_err(|e| format!("pattern {e}"))
}

/// Headers a subscription may not set: the signature headers, `Host`,
/// `Content-Length` and hop-by-hop headers.
pub const PROTECTED_HEADERS: &[&str] = &[
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Checks a custom header: a valid name that is not protected, a valid value.
pub fn check_header(name: &str, value: &str) -> Result<(), String> {
    let header = http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    if PROTECTED_HEADERS.contains(&header.as_str()) {
        return Err(format!(
            "{name:?} is set by hookrelay and cannot be overridden"
        ));
    }
    if value.len() > 4096 {
        return Err("value is over 4096 bytes".into());
    }
    http::HeaderValue::from_str(value)
        .map_err(|_| format!("value of {name:?} is not a valid header value"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_documented() {
        assert!(pattern_matches("*", "user.created"));
        assert!(pattern_matches("course_stat.*", "course_stat.created"));
        assert!(pattern_matches("course_stat.*", "course_stat.a.b"));
        assert!(!pattern_matches("course_stat.*", "course_stat"));
        assert!(!pattern_matches("course_stat.*", "course_statx.created"));
        assert!(pattern_matches("user.created", "user.created"));
        assert!(!pattern_matches("user.created", "user.created.x"));
    }

    #[test]
    fn pattern_syntax_is_checked() {
        for ok in ["*", "a.*", "user.created", "a-b_c"] {
            check_pattern(ok).unwrap();
        }
        for bad in ["", "a.*.b", "a*", "a.>", "a..b", "has space", "*.x"] {
            assert!(check_pattern(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn success_rules() {
        assert!(SuccessRule::Any2xx.accepts(204));
        assert!(!SuccessRule::Status200.accepts(204));
        assert!(SuccessRule::Status200.accepts(200));
        assert!(!SuccessRule::Any2xx.accepts(302));
    }
}
