//! Retry policies between the API and the stored model.

use std::time::Duration;

use hookrelay_core::retry::RetryPolicy;
use hookrelay_proto::v1 as pb;
use pb::retry_policy::Policy;

use crate::error::ApiError;

const FIELD: &str = "subscription.retry_policy";

fn duration(d: prost_types::Duration, name: &str) -> Result<Duration, ApiError> {
    Duration::try_from(d)
        .map_err(|_| ApiError::invalid(format!("{FIELD}.{name}"), "must not be negative"))
}

fn optional(d: Option<prost_types::Duration>, name: &str) -> Result<Option<Duration>, ApiError> {
    d.map(|d| duration(d, name)).transpose()
}

/// `d`, or `default` when absent.
fn or(
    d: Option<prost_types::Duration>,
    name: &str,
    default: Duration,
) -> Result<Duration, ApiError> {
    Ok(optional(d, name)?.unwrap_or(default))
}

/// The defaults of every policy's fields, as the proto documents them:
/// taken from the default schedule where it has an answer.
pub mod defaults {
    use std::time::Duration;

    const HOUR: Duration = Duration::from_secs(3600);

    /// The default schedule's delays (`schedule.delays`).
    pub fn delays() -> Vec<Duration> {
        match hookrelay_core::retry::default_policy() {
            hookrelay_core::retry::RetryPolicy::Schedule { delays, .. } => delays,
            _ => unreachable!("the default policy is a schedule"),
        }
    }

    /// The default schedule's first delay (5s): `initial` of
    /// `exponential` and `until_success`.
    pub fn initial() -> Duration {
        delays()[0]
    }

    /// The default schedule's longest delay (10h), or `initial` if longer:
    /// `cap` of `exponential` and `until_success`.
    pub fn cap(initial: Duration) -> Duration {
        delays().into_iter().max().unwrap_or(10 * HOUR).max(initial)
    }

    /// `exponential.factor`.
    pub const FACTOR: f64 = 2.0;

    /// `exponential.max_attempts` without `max_age`: as many attempts as
    /// the default schedule makes (the first and one per delay).
    pub fn max_attempts() -> u32 {
        delays().len() as u32 + 1
    }

    /// `interval.every`.
    pub const EVERY: Duration = HOUR;

    /// `interval.for`: three days, or `every` if longer.
    pub fn for_(every: Duration) -> Duration {
        (72 * HOUR).max(every)
    }
}

fn proto_duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}

/// The stored policy of an API policy; `None` when unset (the default applies).
pub fn from_proto(policy: Option<&pb::RetryPolicy>) -> Result<Option<RetryPolicy>, ApiError> {
    let Some(policy) = policy.and_then(|p| p.policy.clone()) else {
        return Ok(None);
    };
    // Each field left unset takes its documented default here, so the
    // stored policy (and every read of it) is the one in effect.
    let (kind, policy) = match policy {
        Policy::None(_) => ("none", RetryPolicy::None),
        Policy::Schedule(s) => (
            "schedule",
            RetryPolicy::Schedule {
                delays: if s.delays.is_empty() {
                    defaults::delays()
                } else {
                    s.delays
                        .into_iter()
                        .enumerate()
                        .map(|(i, d)| duration(d, &format!("schedule.delays[{i}]")))
                        .collect::<Result<_, _>>()?
                },
                jitter: s.jitter,
            },
        ),
        Policy::Exponential(e) => {
            let initial = or(e.initial, "exponential.initial", defaults::initial())?;
            let max_age = optional(e.max_age, "exponential.max_age")?;
            (
                "exponential",
                RetryPolicy::Exponential {
                    initial,
                    factor: if e.factor == 0.0 {
                        defaults::FACTOR
                    } else {
                        e.factor
                    },
                    cap: or(e.cap, "exponential.cap", defaults::cap(initial))?,
                    max_attempts: match (e.max_attempts, max_age) {
                        (0, Some(_)) => None,
                        (0, None) => Some(defaults::max_attempts()),
                        (n, _) => Some(n),
                    },
                    max_age,
                    jitter: e.jitter,
                },
            )
        }
        Policy::Interval(i) => {
            let every = or(i.every, "interval.every", defaults::EVERY)?;
            (
                "interval",
                RetryPolicy::Interval {
                    every,
                    for_: or(i.r#for, "interval.for", defaults::for_(every))?,
                },
            )
        }
        Policy::UntilSuccess(u) => {
            let initial = or(u.initial, "until_success.initial", defaults::initial())?;
            (
                "until_success",
                RetryPolicy::UntilSuccess {
                    initial,
                    cap: or(u.cap, "until_success.cap", defaults::cap(initial))?,
                },
            )
        }
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
                Policy::Schedule(pb::ScheduleRetry {
                    delays: vec![secs(1).unwrap(); 101],
                    jitter: 0.0,
                }),
                "subscription.retry_policy.schedule.delays: must hold 1 to 100 delays",
            ),
            (
                Policy::Interval(pb::IntervalRetry {
                    every: secs(3600),
                    r#for: secs(60),
                }),
                "subscription.retry_policy.interval.for: must be at least every",
            ),
            (
                Policy::Interval(pb::IntervalRetry {
                    every: secs(0),
                    r#for: secs(60),
                }),
                "subscription.retry_policy.interval.every: must be positive",
            ),
            (
                Policy::Exponential(pb::ExponentialRetry {
                    factor: 20.0,
                    ..Default::default()
                }),
                "subscription.retry_policy.exponential.factor",
            ),
            (
                Policy::UntilSuccess(pb::UntilSuccessRetry {
                    initial: secs(60),
                    cap: secs(1),
                }),
                "subscription.retry_policy.until_success.cap: must be at least initial",
            ),
            (
                Policy::Schedule(pb::ScheduleRetry {
                    delays: vec![secs(-1).unwrap()],
                    jitter: 0.0,
                }),
                "subscription.retry_policy.schedule.delays[0]: must not be negative",
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

    /// What an empty message of each policy is saved as: every field at
    /// the default the proto documents.
    #[test]
    fn every_field_has_a_default() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        let schedule = [5, 300, 1800, 7200, 18000, 36000, 36000].map(Duration::from_secs);
        let cases = [
            (
                Policy::Schedule(pb::ScheduleRetry::default()),
                RetryPolicy::Schedule {
                    delays: schedule.to_vec(),
                    jitter: 0.0,
                },
            ),
            (
                Policy::Exponential(pb::ExponentialRetry::default()),
                RetryPolicy::Exponential {
                    initial: Duration::from_secs(5),
                    factor: 2.0,
                    cap: h(10),
                    max_attempts: Some(8),
                    max_age: None,
                    jitter: 0.0,
                },
            ),
            (
                Policy::Exponential(pb::ExponentialRetry {
                    initial: secs(11 * 3600),
                    max_age: secs(48 * 3600),
                    ..Default::default()
                }),
                RetryPolicy::Exponential {
                    initial: h(11),
                    factor: 2.0,
                    cap: h(11),
                    max_attempts: None,
                    max_age: Some(h(48)),
                    jitter: 0.0,
                },
            ),
            (
                Policy::Interval(pb::IntervalRetry::default()),
                RetryPolicy::Interval {
                    every: h(1),
                    for_: h(72),
                },
            ),
            (
                Policy::Interval(pb::IntervalRetry {
                    every: secs(4 * 24 * 3600),
                    r#for: None,
                }),
                RetryPolicy::Interval {
                    every: h(96),
                    for_: h(96),
                },
            ),
            (
                Policy::UntilSuccess(pb::UntilSuccessRetry::default()),
                RetryPolicy::UntilSuccess {
                    initial: Duration::from_secs(5),
                    cap: h(10),
                },
            ),
            (
                Policy::UntilSuccess(pb::UntilSuccessRetry {
                    initial: None,
                    cap: secs(60),
                }),
                RetryPolicy::UntilSuccess {
                    initial: Duration::from_secs(5),
                    cap: Duration::from_secs(60),
                },
            ),
        ];
        for (api, stored) in cases {
            let api = pb::RetryPolicy { policy: Some(api) };
            assert_eq!(from_proto(Some(&api)).unwrap(), Some(stored), "{api:?}");
        }
    }
}
