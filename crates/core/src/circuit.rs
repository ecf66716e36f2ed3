//! Endpoint health as a circuit breaker, as stored in Redis for every
//! dispatcher replica and the log service to read:
//!
//! healthy → failing (`failing_after` failures in a row) → open
//! (`open_after` in a row: no requests; tasks wait in a held set in Redis;
//! one probe at a backed-off interval) → half-open (the probe in flight) →
//! healthy on the probe's success, open again (interval doubled, up to
//! `probe_max`) on its failure. A subscription failing for `disable_after`
//! is disabled and announced on `<prefix>.system.<tenant>.subscription.disabled`.
//!
//! Keys (all under the installation's prefix, in the `{schedule}` slot with
//! the retry schedule): `{schedule}:circuit:<subscription>` a hash of
//! [`CircuitRecord`] (absent while healthy), `{schedule}:circuits` a sorted
//! set of open subscriptions scored by their next probe (ms),
//! `{schedule}:held:<subscription>` the held tasks (retry-schedule members)
//! scored by when they were held.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::names::{Names, SCHEDULE_SLOT};

/// Where a subscription's circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    #[default]
    Healthy,
    Failing,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Healthy => "healthy",
            CircuitState::Failing => "failing",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "healthy" => CircuitState::Healthy,
            "failing" => CircuitState::Failing,
            "open" => CircuitState::Open,
            "half_open" => CircuitState::HalfOpen,
            _ => return None,
        })
    }

    pub const ALL: [CircuitState; 4] = [
        CircuitState::Healthy,
        CircuitState::Failing,
        CircuitState::Open,
        CircuitState::HalfOpen,
    ];
}

/// Thresholds of one circuit: the server's (`dispatcher.circuit`), each
/// replaceable per subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitLimits {
    /// Failures in a row from which the endpoint counts as failing.
    pub failing_after: u32,
    /// Failures in a row from which no more requests are sent.
    pub open_after: u32,
    /// First wait before a probe; doubled after each failed probe.
    #[serde(with = "humantime_serde")]
    pub probe_after: Duration,
    /// The longest wait between probes.
    #[serde(with = "humantime_serde")]
    pub probe_max: Duration,
    /// Failing this long disables the subscription; zero: never.
    #[serde(with = "humantime_serde")]
    pub disable_after: Duration,
}

/// A subscription's own thresholds; each absent one is the server's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CircuitSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_after: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_after: Option<u32>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde::option"
    )]
    pub disable_after: Option<Duration>,
}

impl CircuitLimits {
    /// These limits with `spec`'s overrides.
    pub fn with(self, spec: Option<&CircuitSpec>) -> Self {
        let Some(spec) = spec else { return self };
        Self {
            failing_after: spec.failing_after.unwrap_or(self.failing_after),
            open_after: spec.open_after.unwrap_or(self.open_after),
            disable_after: spec.disable_after.unwrap_or(self.disable_after),
            ..self
        }
    }
}

/// The stored state of a circuit that is not healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitRecord {
    pub state: CircuitState,
    pub consecutive_failures: u32,
    /// First failure of the current run.
    pub failing_since: DateTime<Utc>,
    pub opened_at: Option<DateTime<Utc>>,
    pub next_probe_at: Option<DateTime<Utc>>,
    /// The current wait between probes.
    pub probe_interval: Duration,
}

fn ms(at: DateTime<Utc>) -> String {
    at.timestamp_millis().to_string()
}

fn at(ms: &str) -> Option<DateTime<Utc>> {
    Utc.timestamp_millis_opt(ms.parse().ok()?).single()
}

impl CircuitRecord {
    /// Field-value pairs of the Redis hash.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("state", self.state.as_str().to_owned()),
            (
                "consecutive_failures",
                self.consecutive_failures.to_string(),
            ),
            ("failing_since_ms", ms(self.failing_since)),
            (
                "probe_interval_ms",
                self.probe_interval.as_millis().to_string(),
            ),
        ];
        if let Some(opened) = self.opened_at {
            fields.push(("opened_at_ms", ms(opened)));
        }
        if let Some(next) = self.next_probe_at {
            fields.push(("next_probe_ms", ms(next)));
        }
        fields
    }

    /// Reads the hash; `None` when empty (healthy) or unreadable.
    pub fn from_fields(fields: &HashMap<String, String>) -> Option<Self> {
        let get = |name: &str| fields.get(name).map(String::as_str);
        Some(Self {
            state: CircuitState::parse(get("state")?)?,
            consecutive_failures: get("consecutive_failures")?.parse().ok()?,
            failing_since: at(get("failing_since_ms")?)?,
            opened_at: get("opened_at_ms").and_then(at),
            next_probe_at: get("next_probe_ms").and_then(at),
            probe_interval: Duration::from_millis(
                get("probe_interval_ms").and_then(|v| v.parse().ok())?,
            ),
        })
    }
}

/// The Redis keys of circuits.
#[derive(Debug, Clone)]
pub struct CircuitKeys {
    names: Names,
}

/// All in [`SCHEDULE_SLOT`]: a circuit's change moves it in or out of the
/// open set, and its release moves held tasks into the retry schedule.
impl CircuitKeys {
    pub fn new(names: &Names) -> Self {
        Self {
            names: names.clone(),
        }
    }

    /// The hash of a subscription's circuit.
    pub fn circuit(&self, subscription_id: &str) -> String {
        self.names
            .redis_tagged(SCHEDULE_SLOT, &["circuit", subscription_id])
    }

    /// Open circuits by next probe.
    pub fn open(&self) -> String {
        self.names.redis_tagged(SCHEDULE_SLOT, &["circuits"])
    }

    /// Tasks held while a subscription's circuit is open.
    pub fn held(&self, subscription_id: &str) -> String {
        self.names
            .redis_tagged(SCHEDULE_SLOT, &["held", subscription_id])
    }
}

/// The subject a disabled subscription is announced on.
pub fn disabled_subject(names: &Names, tenant: &str) -> String {
    format!("{}.system.{tenant}.subscription.disabled", names.prefix())
}

/// The body of that announcement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubscriptionDisabled {
    pub subscription_id: String,
    pub tenant: String,
    pub url: String,
    pub reason: String,
    pub failing_since: DateTime<Utc>,
    pub consecutive_failures: u32,
    pub disabled_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_their_hash() {
        let record = CircuitRecord {
            state: CircuitState::Open,
            consecutive_failures: 12,
            failing_since: Utc.timestamp_millis_opt(1_700_000_000_123).unwrap(),
            opened_at: Some(Utc.timestamp_millis_opt(1_700_000_100_000).unwrap()),
            next_probe_at: Some(Utc.timestamp_millis_opt(1_700_000_105_000).unwrap()),
            probe_interval: Duration::from_secs(5),
        };
        let fields: HashMap<String, String> = record
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        assert_eq!(CircuitRecord::from_fields(&fields), Some(record));
        assert_eq!(CircuitRecord::from_fields(&HashMap::new()), None);
    }

    #[test]
    fn a_subscription_replaces_only_the_thresholds_it_sets() {
        let server = CircuitLimits {
            failing_after: 3,
            open_after: 10,
            probe_after: Duration::from_secs(5),
            probe_max: Duration::from_secs(300),
            disable_after: Duration::from_secs(5 * 86_400),
        };
        let spec = CircuitSpec {
            open_after: Some(2),
            ..Default::default()
        };
        let limits = server.with(Some(&spec));
        assert_eq!(limits.open_after, 2);
        assert_eq!(limits.failing_after, 3);
        assert_eq!(limits.disable_after, server.disable_after);
    }
}
