//! The event publishers send, and how a NATS message becomes one.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Why a published message is not an event; the text goes to the DLQ.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("event is {size} bytes, over the {max} byte limit")]
    TooLarge { size: usize, max: usize },
    #[error("subject {0:?} is not <prefix>.events.<tenant>.<event type>")]
    Subject(String),
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body must be a JSON object with a \"data\" object")]
    NotObject,
    #[error("missing field \"data\"")]
    MissingData,
    #[error("field \"data\" must be a JSON object")]
    DataNotObject,
    #[error("field {field:?}: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    /// Refused by its type's schema, the type validating in `reject` mode.
    #[error("data does not match the schema of {event_type} v{version}: {violation}")]
    Schema {
        event_type: String,
        version: u32,
        /// The first violation: `data.course_id: "42" is not of type "integer"`.
        violation: String,
    },
}

impl EventError {
    /// Bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            EventError::TooLarge { .. } => "too_large",
            EventError::Subject(_) => "bad_subject",
            EventError::NotJson(_) | EventError::NotObject => "not_json_object",
            EventError::MissingData | EventError::DataNotObject => "bad_data",
            EventError::Field { .. } => "bad_field",
            EventError::Schema { .. } => "schema",
        }
    }
}

/// An accepted event, as carried inside delivery tasks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    pub tenant: String,
    #[serde(rename = "type")]
    pub event_type: String,
    /// The publisher's `data`, byte for byte.
    pub data: Box<RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// As the publisher wrote it (RFC 3339), if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<String>,
    pub received_at: DateTime<Utc>,
    /// Sequence of the event in the EVENTS stream.
    pub seq: u64,
    /// The publisher's valid W3C `traceparent` header, if it sent one
    /// (see [`crate::trace`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

/// Where and when a message arrived, besides its body.
pub struct Arrival<'a> {
    pub tenant: &'a str,
    pub event_type: &'a str,
    /// The `Nats-Msg-Id` header, if any.
    pub msg_id: Option<&'a str>,
    pub seq: u64,
    /// When the EVENTS stream stored it: the same on every redelivery, so a
    /// redelivered event renders the same request.
    pub received_at: DateTime<Utc>,
}

impl Event {
    /// Parses and validates a published body.
    pub fn parse(arrival: Arrival<'_>, body: &[u8], max_bytes: usize) -> Result<Event, EventError> {
        if body.len() > max_bytes {
            return Err(EventError::TooLarge {
                size: body.len(),
                max: max_bytes,
            });
        }
        check_token_path(arrival.tenant, false)
            .and_then(|_| check_token_path(arrival.event_type, true))
            .map_err(|_| {
                EventError::Subject(format!("{}.{}", arrival.tenant, arrival.event_type))
            })?;
        let fields: HashMap<String, &RawValue> = serde_json::from_slice(body).map_err(|e| {
            if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
                EventError::NotObject
            } else {
                EventError::NotJson(e.to_string())
            }
        })?;
        fn field<'a, T: Deserialize<'a>>(
            fields: &HashMap<String, &'a RawValue>,
            name: &'static str,
            expected: &str,
        ) -> Result<Option<T>, EventError> {
            match fields.get(name) {
                None => Ok(None),
                Some(raw) if raw.get() == "null" => Ok(None),
                Some(raw) => {
                    serde_json::from_str(raw.get())
                        .map(Some)
                        .map_err(|_| EventError::Field {
                            field: name,
                            message: format!("must be {expected}"),
                        })
                }
            }
        }
        let data = *fields.get("data").ok_or(EventError::MissingData)?;
        if !data.get().starts_with('{') {
            return Err(EventError::DataNotObject);
        }
        let wire_id: Option<String> = field(&fields, "id", "a string")?;
        let labels: Option<BTreeMap<String, String>> =
            field(&fields, "labels", "an object of string values")?;
        let occurred_at: Option<String> =
            field(&fields, "occurred_at", "an RFC 3339 timestamp string")?;
        let entity_id: Option<serde_json::Value> =
            field(&fields, "entity_id", "a string or a number")?;
        let id = match wire_id.or_else(|| arrival.msg_id.map(str::to_owned)) {
            Some(id) if id.is_empty() || id.len() > 256 => {
                return Err(EventError::Field {
                    field: "id",
                    message: "must be 1 to 256 characters".into(),
                })
            }
            Some(id) => id,
            // Derived from where the stream stored it, so a redelivery keeps
            // the id, and with it the dedup ids and `webhook-id`s.
            None => format!(
                "evt_{}",
                ulid::Ulid::from_parts(
                    arrival.received_at.timestamp_millis() as u64,
                    arrival.seq as u128
                )
            ),
        };
        let entity_id = match entity_id {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            Some(_) => {
                return Err(EventError::Field {
                    field: "entity_id",
                    message: "must be a string or a number".into(),
                })
            }
        };
        if let Some(at) = &occurred_at {
            DateTime::parse_from_rfc3339(at).map_err(|e| EventError::Field {
                field: "occurred_at",
                message: format!("not an RFC 3339 timestamp: {e}"),
            })?;
        }
        Ok(Event {
            id,
            tenant: arrival.tenant.to_owned(),
            event_type: arrival.event_type.to_owned(),
            data: data.to_owned(),
            entity_id,
            labels: labels.unwrap_or_default(),
            occurred_at,
            received_at: arrival.received_at,
            seq: arrival.seq,
            traceparent: None,
        })
    }

    /// The event stored at `seq` of the EVENTS stream under `subject`, as
    /// the ingestor reads it and as retries read it again.
    pub fn from_stored(
        names: &crate::Names,
        subject: &str,
        msg_id: Option<&str>,
        payload: &[u8],
        seq: u64,
        stored_at: DateTime<Utc>,
        max_bytes: usize,
    ) -> Result<Event, EventError> {
        let (tenant, event_type) = names
            .parse_event_subject(subject)
            .ok_or_else(|| EventError::Subject(subject.to_owned()))?;
        let arrival = Arrival {
            tenant,
            event_type,
            msg_id,
            seq,
            received_at: stored_at,
        };
        Event::parse(arrival, payload, max_bytes)
    }

    /// When the event happened: the publisher's `occurred_at`, else arrival.
    pub fn timestamp(&self) -> String {
        match &self.occurred_at {
            Some(at) => at.clone(),
            None => self
                .received_at
                .to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }
}

/// Checks a tenant (one token) or an event type (dot-separated tokens):
/// tokens of ASCII letters, digits, `_` and `-`.
pub fn check_token_path(value: &str, dotted: bool) -> Result<(), String> {
    let token_ok = |t: &str| {
        !t.is_empty()
            && t.len() <= 64
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let ok = if dotted {
        value.len() <= 255 && value.split('.').all(token_ok)
    } else {
        token_ok(value)
    };
    if ok {
        Ok(())
    } else if dotted {
        Err(format!(
            "{value:?} must be dot-separated tokens of letters, digits, '_' or '-'"
        ))
    } else {
        Err(format!(
            "{value:?} must be 1-64 letters, digits, '_' or '-'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival<'a>(msg_id: Option<&'a str>) -> Arrival<'a> {
        Arrival {
            tenant: "acme",
            event_type: "course_stat.created",
            msg_id,
            seq: 7,
            received_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        }
    }

    #[test]
    fn parses_a_full_event_keeping_data_bytes() {
        let body = br#"{"data": {"b":1, "a":[2]}, "id":"e1", "entity_id": 42, "labels":{"course_id":"7"}, "occurred_at":"2024-01-02T03:04:05Z"}"#;
        let event = Event::parse(arrival(None), body, 1024).unwrap();
        assert_eq!(event.id, "e1");
        assert_eq!(event.data.get(), r#"{"b":1, "a":[2]}"#);
        assert_eq!(event.entity_id.as_deref(), Some("42"));
        assert_eq!(event.labels["course_id"], "7");
        assert_eq!(event.timestamp(), "2024-01-02T03:04:05Z");
        assert_eq!(event.seq, 7);
    }

    #[test]
    fn id_falls_back_to_msg_id_then_is_minted() {
        let body = br#"{"data":{}}"#;
        assert_eq!(
            Event::parse(arrival(Some("m1")), body, 64).unwrap().id,
            "m1"
        );
        assert!(Event::parse(arrival(None), body, 64)
            .unwrap()
            .id
            .starts_with("evt_"));
        assert_eq!(
            Event::parse(arrival(None), body, 64).unwrap().timestamp(),
            "2023-11-14T22:13:20.000Z"
        );
    }

    #[test]
    fn bad_bodies_name_what_is_wrong() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "body is not valid JSON"),
            (b"[1]", "must be a JSON object"),
            (br#"{"id":"x"}"#, "missing field \"data\""),
            (br#"{"data":[1]}"#, "\"data\" must be a JSON object"),
            (br#"{"data":{},"labels":{"a":1}}"#, "field \"labels\""),
            (br#"{"data":{},"entity_id":[1]}"#, "field \"entity_id\""),
            (
                br#"{"data":{},"occurred_at":"yesterday"}"#,
                "field \"occurred_at\"",
            ),
            (br#"{"data":{},"id":""}"#, "field \"id\""),
        ];
        for (body, expected) in cases {
            let err = Event::parse(arrival(None), body, 1024)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{body:?}: {err}");
        }
        let err = Event::parse(arrival(None), &[b' '; 100], 10).unwrap_err();
        assert_eq!(
            err.to_string(),
            "event is 100 bytes, over the 10 byte limit"
        );
    }
}
