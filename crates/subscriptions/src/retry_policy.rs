//! Retry policies between the API and the stored model.

use std::time::Duration;

use hookrelay_core::retry::RetryPolicy;
use hookrelay_proto::v1 as pb;
use pb::retry_policy::Policy;

use crate::error::ApiError;

const FIELD: &str = "subscription.retry_policy";

fn duration(d: Option<prost_types::Duration>, name: &str) -> Result<Duration, ApiError> {
    let d = d.ok_or_else(|| ApiError::invalid(format!("{FIELD}.{name}"), "is required"))?;
    Duration::try_from(d)
        .map_err(|_| ApiError::invalid(format!("{FIELD}.{name}"), "must not be negative"))
}

fn optional(d: Option<prost_types::Duration>, name: &str) -> Result<Option<Duration>, ApiError> {
    d.map(|d| duration(Some(d), name)).transpose()
}

fn proto_duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}

/// The stored policy of an API policy; `None` when unset (the default applies).
pub fn from_proto(policy: Option<&pb::RetryPolicy>) -> Result<Option<RetryPolicy>, ApiError> {
    let Some(policy) = policy.and_then(|p| p.policy.clone()) else {
        return Ok(None);
    };
    let (kind, policy) = match policy {
        Policy::None(_) => ("none", RetryPolicy::None),
        Policy::Schedule(s) => (
            "schedule",
            RetryPolicy::Schedule {
                delays: s
                    .delays
                    .into_iter()
                    .enumerate()
                    .map(|(i, d)| duration(Some(d), &format!("schedule.delays[{i}]")))
                    .collect::<Result<_, _>>()?,
                jitter: s.jitter,
            },
        ),
        Policy::Exponential(e) => (
            "exponential",
            RetryPolicy::Exponential {
                initial: duration(e.initial, "exponential.initial")?,
                factor: e.factor,
                cap: duration(e.cap, "exponential.cap")?,
                max_attempts: (e.max_attempts > 0).then_some(e.max_attempts),
                max_age: optional(e.max_age, "exponential.max_age")?,
                jitter: e.jitter,
            },
        ),
        Policy::Interval(i) => (
            "interval",
            RetryPolicy::Interval {
                every: duration(i.every, "interval.every")?,
                for_: duration(i.r#for, "interval.for")?,
            },
        ),
        Policy::UntilSuccess(u) => (
            "until_success",
            RetryPolicy::UntilSuccess {
                initial: duration(u.initial, "until_success.initial")?,
                cap: duration(u.cap, "until_success.cap")?,
            },
        ),
    };
    policy.validate().map_err(|(field, message)| {
        ApiError::invalid(format!("{FIELD}.{kind}.{field}"), message)
    })?;
    Ok(Some(policy))
}

/// The API view of a stored policy.
pub fn to_proto(policy: &RetryPolicy) -> pb::RetryPolicy {
    let policy = match policy {
        RetryPolicy::None => Policy::None(pb::NoRetry {}),
        RetryPolicy::Schedule { delays, jitter } => Policy::Schedule(pb::ScheduleRetry {
            delays: delays.iter().filter_map(|d| proto_duration(*d)).collect(),
            jitter: *jitter,
        }),
        RetryPolicy::Exponential {
            initial,
            factor,
            cap,
            max_attempts,
            max_age,
            jitter,
        } => Policy::Exponential(pb::ExponentialRetry {
            initial: proto_duration(*initial),
            factor: *factor,
            cap: proto_duration(*cap),
            max_attempts: max_attempts.unwrap_or(0),
            max_age: max_age.and_then(proto_duration),
            jitter: *jitter,
        }),
        RetryPolicy::Interval { every, for_ } => Policy::Interval(pb::IntervalRetry {
            every: proto_duration(*every),
            r#for: proto_duration(*for_),
        }),
        RetryPolicy::UntilSuccess { initial, cap } => Policy::UntilSuccess(pb::UntilSuccessRetry {
            initial: proto_duration(*initial),
            cap: proto_duration(*cap),
        }),
    };
    pb::RetryPolicy {
        policy: Some(policy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: i64) -> Option<prost_types::Duration> {
        Some(prost_types::Duration {
            seconds: s,
            nanos: 0,
        })
    }

    #[test]
    fn policies_round_trip() {
        let policies = [
            Policy::None(pb::NoRetry {}),
            Policy::Schedule(pb::ScheduleRetry {
                delays: vec![secs(10).unwrap(), secs(20).unwrap()],
                jitter: 0.0,
            }),
            Policy::Interval(pb::IntervalRetry {
                every: secs(3600),
                r#for: secs(3 * 24 * 3600),
            }),
            Policy::UntilSuccess(pb::UntilSuccessRetry {
                initial: secs(1),
                cap: secs(60),
            }),
            Policy::Exponential(pb::ExponentialRetry {
                initial: secs(1),
                factor: 2.0,
                cap: secs(60),
                max_attempts: 5,
                max_age: None,
                jitter: 0.1,
            }),
        ];
        for policy in policies {
            let api = pb::RetryPolicy {
                policy: Some(policy),
            };
            let stored = from_proto(Some(&api)).unwrap().unwrap();
            assert_eq!(to_proto(&stored), api);
        }
        assert_eq!(from_proto(None).unwrap(), None);
    }

    #[test]
    fn bad_policies_name_the_field() {
        let cases = [
            (
                Policy::Schedule(pb::ScheduleRetry::default()),
                "subscription.retry_policy.schedule.delays",
            ),
            (
                Policy::Interval(pb::IntervalRetry {
                    every: secs(3600),
                    r#for: secs(60),
                }),
                "subscription.retry_policy.interval.for",
            ),
            (
                Policy::Interval(pb::IntervalRetry {
                    every: None,
                    r#for: secs(60),
                }),
                "subscription.retry_policy.interval.every",
            ),
            (
                Policy::Exponential(pb::ExponentialRetry {
                    initial: secs(1),
                    factor: 2.0,
                    cap: secs(60),
                    ..Default::default()
                }),
                "subscription.retry_policy.exponential.max_attempts",
            ),
            (
                Policy::Schedule(pb::ScheduleRetry {
                    delays: vec![secs(-1).unwrap()],
                    jitter: 0.0,
                }),
                "subscription.retry_policy.schedule.delays[0]",
            ),
        ];
        for (policy, field) in cases {
            let err = from_proto(Some(&pb::RetryPolicy {
                policy: Some(policy),
            }))
            .unwrap_err();
            assert!(err.to_string().starts_with(field), "{err} !~ {field}");
        }
    }
}
