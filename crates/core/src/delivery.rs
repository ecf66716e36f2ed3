//! What flows between services: delivery tasks (ingestor → dispatcher) and
//! attempt records (dispatcher → log service).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Event;

/// One event to send to one subscription, published on DELIVERIES.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryTask {
    pub subscription_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When attempt 1 was made; absent on attempt 1 itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt_at: Option<DateTime<Utc>>,
    /// Where `event.seq` points: EVENTS, or BATCHES for a flushed batch.
    #[serde(default, skip_serializing_if = "Source::is_event")]
    pub source: Source,
    /// Sent again on an operator's request (Redeliver, RecoverFailed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redelivery: bool,
    pub event: Event,
}

/// The stream a task's event is stored in, read again for retries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    #[default]
    Event,
    /// A batch of changes, `event.data` = `{"changes": [...]}`.
    Batch,
}

impl Source {
    pub fn is_event(&self) -> bool {
        *self == Source::Event
    }
}

impl DeliveryTask {
    /// JetStream dedup id of a task: `<event id>:<subscription id>`.
    pub fn dedup_id(&self) -> String {
        format!("{}:{}", self.event.id, self.subscription_id)
    }
}

/// How an attempt ended; the metric label of deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    /// A 1xx or 2xx status that the success rule does not accept.
    HttpOther,
    Http4xx,
    Http5xx,
    Redirect,
    Timeout,
    ConnectError,
    DnsError,
    TlsError,
    Blocked,
    /// The subscription was deleted or disabled before the attempt.
    Disabled,
    /// Any other failure to send or read.
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::HttpOther => "http_other",
            Outcome::Http4xx => "http_4xx",
            Outcome::Http5xx => "http_5xx",
            Outcome::Redirect => "redirect",
            Outcome::Timeout => "timeout",
            Outcome::ConnectError => "connect_error",
            Outcome::DnsError => "dns_error",
            Outcome::TlsError => "tls_error",
            Outcome::Blocked => "blocked",
            Outcome::Disabled => "disabled",
            Outcome::Error => "error",
        }
    }

    pub fn is_success(self) -> bool {
        self == Outcome::Success
    }
}

/// Why no further attempt follows a failed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GiveUp {
    Exhausted,
    Gone,
    Disabled,
    NoRetry,
}

impl GiveUp {
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUp::Exhausted => "exhausted",
            GiveUp::Gone => "gone",
            GiveUp::Disabled => "disabled",
            GiveUp::NoRetry => "no_retry",
        }
    }
}

/// The request as sent (signature headers included; they are not secrets).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// The response as received, body capped.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecordedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub body_truncated: bool,
}

/// One attempt, published on ATTEMPTS.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub id: String,
    pub event_id: String,
    pub subscription_id: String,
    pub tenant: String,
    pub event_type: String,
    pub webhook_id: String,
    pub attempt: u32,
    pub outcome: Outcome,
    pub reason: String,
    pub request: RecordedRequest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<RecordedResponse>,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    /// When the event reached hookrelay, for publish→delivery latency.
    pub event_received_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub give_up: Option<GiveUp>,
    /// Where the event is stored, for replay.
    #[serde(default)]
    pub event_seq: u64,
    #[serde(default, skip_serializing_if = "Source::is_event")]
    pub source: Source,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redelivery: bool,
}
