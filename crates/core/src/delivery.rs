//! What flows between services: delivery tasks (ingestor → dispatcher) and
//! attempt records (dispatcher → log service).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One event to send to one subscription: a reference, published on
/// DELIVERIES or handed over in process. The payload stays where it was
/// stored once (EVENTS, or BATCHES for a flushed batch); the dispatcher
/// reads it by sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryTask {
    pub subscription_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Where the event is stored, and at which sequence.
    #[serde(default, skip_serializing_if = "Source::is_event")]
    pub source: Source,
    #[serde(default)]
    pub seq: u64,
    /// When this delivery began, in Unix milliseconds: the event's stream
    /// time for attempt 1, so every redelivery of attempt 1 (a crash, a
    /// lease expiry) continues one retry chain instead of forking another.
    #[serde(default)]
    pub first_attempt_ms: i64,
    /// How often this attempt was parked while its subscription was
    /// saturated: each park is a new schedule entry, so a re-published task
    /// is not mistaken for the one before it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parked: u32,
    /// Sent again on an operator's request (Redeliver, RecoverFailed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redelivery: bool,
    /// Tasks written by earlier versions embedded the whole event; only its
    /// sequence is read from them.
    #[serde(default, skip_serializing)]
    event: Option<LegacyEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct LegacyEvent {
    seq: u64,
    received_at: DateTime<Utc>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl DeliveryTask {
    /// Attempt 1 of the event stored at `seq` of `source` to `subscription_id`.
    pub fn first(
        subscription_id: &str,
        source: Source,
        seq: u64,
        stored_at: DateTime<Utc>,
    ) -> Self {
        DeliveryTask {
            subscription_id: subscription_id.to_owned(),
            attempt: 1,
            source,
            seq,
            first_attempt_ms: stored_at.timestamp_millis(),
            parked: 0,
            redelivery: false,
            event: None,
        }
    }

    /// Reads a task, in this format or the earlier one that embedded the event.
    pub fn parse(payload: &[u8]) -> Result<Self, serde_json::Error> {
        let mut task: DeliveryTask = serde_json::from_slice(payload)?;
        if let Some(legacy) = task.event.take() {
            task.seq = legacy.seq;
            if task.first_attempt_ms == 0 {
                task.first_attempt_ms = legacy.received_at.timestamp_millis();
            }
        }
        Ok(task)
    }

    /// The task as published.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("tasks serialize")
    }

    /// When attempt 1 was made (or, for attempt 1, is being made).
    pub fn first_attempt_at(&self) -> Option<DateTime<Utc>> {
        (self.first_attempt_ms > 0)
            .then(|| DateTime::from_timestamp_millis(self.first_attempt_ms))
            .flatten()
    }
}

/// JetStream dedup id of a first attempt: `<event id>:<subscription id>`.
pub fn dedup_id(event_id: &str, subscription_id: &str) -> String {
    format!("{event_id}:{subscription_id}")
}

/// The stream a task's event is stored in, read again for retries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// The event left the stream (past its max age) before this attempt.
    Expired,
    /// A permanent fault of the delivery itself: the stored event cannot be
    /// read, or the request cannot be built from it (a template failing on
    /// this event). Trying again would fail the same way.
    Invalid,
}

impl GiveUp {
    pub fn as_str(self) -> &'static str {
        match self {
            GiveUp::Exhausted => "exhausted",
            GiveUp::Gone => "gone",
            GiveUp::Disabled => "disabled",
            GiveUp::NoRetry => "no_retry",
            GiveUp::Expired => "expired",
            GiveUp::Invalid => "invalid",
        }
    }
}

/// Bytes of a request body an attempt record keeps.
pub const REQUEST_EXCERPT_BYTES: usize = 4096;

/// The request as sent (signature headers included; they are not secrets):
/// the body's size and SHA-256, and at most its first
/// [`REQUEST_EXCERPT_BYTES`], so a record stays small whatever the event's
/// size. The whole body can be rendered again from the event it came from.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// The first bytes of the body (cut on a character boundary).
    pub body: String,
    #[serde(default)]
    pub body_size: u64,
    /// Hex SHA-256 of the whole body.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub body_sha256: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_truncated: bool,
}

impl RecordedRequest {
    /// Keeps `body`'s size, hash and excerpt.
    pub fn with_body(mut self, body: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        let (excerpt, truncated) = excerpt(body, REQUEST_EXCERPT_BYTES);
        self.body = excerpt;
        self.body_truncated = truncated;
        self.body_size = body.len() as u64;
        self.body_sha256 = hex::encode(Sha256::digest(body));
        self
    }
}

/// At most `max` bytes of `bytes` as text, cut on a character boundary, and
/// whether anything was cut.
pub fn excerpt(bytes: &[u8], max: usize) -> (String, bool) {
    if bytes.len() <= max {
        return (String::from_utf8_lossy(bytes).into_owned(), false);
    }
    let mut end = max;
    // A UTF-8 character is at most 4 bytes: step back over a cut one.
    while end > 0 && end > max.saturating_sub(3) && (bytes[end] & 0b1100_0000) == 0b1000_0000 {
        end -= 1;
    }
    (String::from_utf8_lossy(&bytes[..end]).into_owned(), true)
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
    /// What the outcome means (`status 500`, `timed out after 10s`, with
    /// any note the dispatcher adds: the retry not scheduled, order).
    pub reason: String,
    /// Why no response came: the transport's error (timeout, connect, DNS,
    /// TLS), the blocked destination, the request that could not be built,
    /// the event no longer readable. Empty when a response came.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
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
    /// The W3C trace the request continued (the event's `traceparent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The first way the event's `data` breaks its type's current schema,
    /// when the type validates in `warn` mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_violation: Option<String>,
}

impl AttemptRecord {
    /// The HTTP status answered, 0 when no response came.
    pub fn status(&self) -> u16 {
        self.response.as_ref().map_or(0, |response| response.status)
    }

    /// Why no response came, empty when one did; for records of earlier
    /// versions (without `error`), the reason, which then said it.
    pub fn error(&self) -> &str {
        match (self.error.as_str(), &self.response) {
            ("", None) => &self.reason,
            (error, _) => error,
        }
    }

    /// The record as published, at most `max` bytes: when the response (its
    /// headers, then its body) would take it over, the response is cut and
    /// marked truncated, so a record can always be stored.
    pub fn to_json_within(&mut self, max: usize) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("records serialize");
        if json.len() <= max {
            return json;
        }
        let over = json.len() - max;
        if let Some(response) = &mut self.response {
            // Escaping can take six bytes for one: cut generously.
            let keep = response.body.len().saturating_sub(over * 6 + 1024);
            response.body = excerpt(response.body.as_bytes(), keep).0;
            response.body_truncated = true;
        }
        let json = serde_json::to_vec(self).expect("records serialize");
        if json.len() <= max {
            return json;
        }
        if let Some(response) = &mut self.response {
            response.headers.clear();
            response.body.clear();
        }
        self.request.headers.clear();
        self.request.body.clear();
        self.request.body_truncated = true;
        self.reason = excerpt(self.reason.as_bytes(), 1024).0;
        self.error = excerpt(self.error.as_bytes(), 1024).0;
        serde_json::to_vec(self).expect("records serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_cut_on_character_boundaries() {
        assert_eq!(excerpt(b"abc", 4), ("abc".to_owned(), false));
        assert_eq!(excerpt(b"abcdef", 4), ("abcd".to_owned(), true));
        // "é" is two bytes: a cut inside it keeps the character out.
        assert_eq!(excerpt("abcé".as_bytes(), 4), ("abc".to_owned(), true));
        let request = RecordedRequest::default().with_body(&vec![b'x'; 10_000]);
        assert_eq!(request.body.len(), REQUEST_EXCERPT_BYTES);
        assert_eq!(request.body_size, 10_000);
        assert!(request.body_truncated);
        assert_eq!(request.body_sha256.len(), 64);
    }

    #[test]
    fn tasks_are_references_and_old_tasks_still_read() {
        let at = DateTime::from_timestamp_millis(1_795_361_029_000).unwrap();
        let task = DeliveryTask::first("sub_1", Source::Event, 42, at);
        let json = task.to_json();
        assert!(json.len() < 120, "{}", String::from_utf8_lossy(&json));
        assert_eq!(DeliveryTask::parse(&json).unwrap(), task);
        let old = br#"{"subscription_id":"sub_1","attempt":1,"event":{"id":"e","tenant":"t","type":"x","data":{},"received_at":"2026-11-23T10:03:49Z","seq":42}}"#;
        let old = DeliveryTask::parse(old).unwrap();
        assert_eq!(old.seq, 42);
        assert_eq!(old.first_attempt_ms, 1_795_428_229_000);
    }

    #[test]
    fn records_of_earlier_versions_read_with_a_status_and_an_error() {
        let answered = br#"{"id":"att_1","event_id":"e","subscription_id":"s","tenant":"t","event_type":"x","webhook_id":"msg_1","attempt":1,"outcome":"http5xx","reason":"status 503","request":{"method":"POST","url":"http://r/","headers":[],"body":""},"response":{"status":503,"headers":[],"body":"","body_truncated":false},"started_at":"2026-11-23T10:03:49Z","duration_ms":3,"event_received_at":"2026-11-23T10:03:49Z"}"#;
        let record: AttemptRecord = serde_json::from_slice(answered).unwrap();
        assert_eq!(record.error, "");
        assert_eq!((record.status(), record.error()), (503, ""));
        let refused = br#"{"id":"att_2","event_id":"e","subscription_id":"s","tenant":"t","event_type":"x","webhook_id":"msg_1","attempt":1,"outcome":"connect_error","reason":"connection refused","request":{"method":"POST","url":"http://r/","headers":[],"body":""},"started_at":"2026-11-23T10:03:49Z","duration_ms":3,"event_received_at":"2026-11-23T10:03:49Z"}"#;
        let record: AttemptRecord = serde_json::from_slice(refused).unwrap();
        assert_eq!((record.status(), record.error()), (0, "connection refused"));
        // Written by this version: both said, and read back as written.
        let mut record = record;
        record.error = "error sending request: connection refused".into();
        let back: AttemptRecord =
            serde_json::from_slice(&record.to_json_within(usize::MAX)).unwrap();
        assert_eq!(back.error(), "error sending request: connection refused");
        assert!(!String::from_utf8(serde_json::to_vec(&back).unwrap())
            .unwrap()
            .contains("\"status\""));
    }

    #[test]
    fn records_never_exceed_the_limit() {
        let mut record = AttemptRecord {
            id: "att_1".into(),
            event_id: "e".into(),
            subscription_id: "s".into(),
            tenant: "t".into(),
            event_type: "x".into(),
            webhook_id: "msg_1".into(),
            attempt: 1,
            outcome: Outcome::Http5xx,
            reason: "status 500".into(),
            error: String::new(),
            request: RecordedRequest::default().with_body(&[b'"'; 900_000]),
            response: Some(RecordedResponse {
                status: 500,
                headers: vec![("x".into(), "y".repeat(10_000))],
                body: "\u{1}".repeat(200_000),
                body_truncated: false,
            }),
            started_at: Utc::now(),
            duration_ms: 1,
            event_received_at: Utc::now(),
            next_attempt_at: None,
            give_up: None,
            event_seq: 1,
            source: Source::Event,
            redelivery: false,
            trace_id: None,
            schema_violation: None,
        };
        let json = record.to_json_within(100_000);
        assert!(json.len() <= 100_000, "{}", json.len());
        let back: AttemptRecord = serde_json::from_slice(&json).unwrap();
        assert!(back.response.unwrap().body_truncated);
        assert_eq!(back.request.body_size, 900_000);
    }
}
