//! Retry policies: when the next attempt of a failed delivery is due, or why
//! there is none. Pure functions of the attempt number, the delivery's age
//! and a random source, so schedules are pinned by unit tests.

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::delivery::{GiveUp, Outcome};

/// How a subscription retries failed deliveries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RetryPolicy {
    /// A failure is final.
    None,
    /// Retry after each delay in turn, then give up.
    Schedule {
        #[serde(with = "duration_list")]
        delays: Vec<Duration>,
        /// Relative jitter, 0.0 to 1.0.
        #[serde(default)]
        jitter: f64,
    },
    /// `initial × factor^(n-1)`, capped, until attempts or age run out.
    Exponential {
        #[serde(with = "humantime_serde")]
        initial: Duration,
        factor: f64,
        #[serde(with = "humantime_serde")]
        cap: Duration,
        /// Attempts in all, the first included; unlimited if absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_attempts: Option<u32>,
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        max_age: Option<Duration>,
        #[serde(default)]
        jitter: f64,
    },
    /// Every `every` while the first attempt is less than `for` ago.
    Interval {
        #[serde(with = "humantime_serde")]
        every: Duration,
        #[serde(rename = "for", with = "humantime_serde")]
        for_: Duration,
    },
    /// Capped exponential backoff with no end but the event's retention.
    UntilSuccess {
        #[serde(with = "humantime_serde")]
        initial: Duration,
        #[serde(with = "humantime_serde")]
        cap: Duration,
    },
}

/// The default when a subscription names no policy: immediately, then 5 s,
/// 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, each with ±20% jitter.
pub fn default_policy() -> RetryPolicy {
    const MIN: u64 = 60;
    const HOUR: u64 = 60 * MIN;
    RetryPolicy::Schedule {
        delays: [
            5,
            5 * MIN,
            30 * MIN,
            2 * HOUR,
            5 * HOUR,
            10 * HOUR,
            10 * HOUR,
        ]
        .into_iter()
        .map(Duration::from_secs)
        .collect(),
        jitter: 0.2,
    }
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this delay.
    RetryIn(Duration),
    GiveUp(GiveUp),
}

impl RetryPolicy {
    /// After failed attempt number `attempt` (1 for the first) of a delivery
    /// whose first attempt was `age` ago: the delay before the next one, or
    /// `GiveUp::Exhausted`. `retention` bounds `until_success`.
    pub fn next(
        &self,
        attempt: u32,
        age: Duration,
        retention: Duration,
        rng: &mut impl Rng,
    ) -> Next {
        let exhausted = Next::GiveUp(GiveUp::Exhausted);
        match self {
            RetryPolicy::None => Next::GiveUp(GiveUp::NoRetry),
            RetryPolicy::Schedule { delays, jitter } => match delays.get(attempt as usize - 1) {
                Some(delay) => Next::RetryIn(jittered(*delay, *jitter, rng)),
                None => exhausted,
            },
            RetryPolicy::Exponential {
                initial,
                factor,
                cap,
                max_attempts,
                max_age,
                jitter,
            } => {
                if max_attempts.is_some_and(|max| attempt >= max) {
                    return exhausted;
                }
                let delay = jittered(backoff(*initial, *factor, *cap, attempt), *jitter, rng);
                if max_age.is_some_and(|max| age + delay > max) {
                    return exhausted;
                }
                Next::RetryIn(delay)
            }
            RetryPolicy::Interval { every, for_ } => {
                // On a grid from the first attempt: due at k × every, the
                // k-th retry, or the next grid point if that one has passed.
                let mut due = every.saturating_mul(attempt);
                if due <= age {
                    let passed = (age.as_nanos() / every.as_nanos()) as u32;
                    due = every.saturating_mul(passed + 1);
                }
                if due > *for_ {
                    return exhausted;
                }
                Next::RetryIn(due.saturating_sub(age))
            }
            RetryPolicy::UntilSuccess { initial, cap } => {
                let delay = backoff(*initial, 2.0, *cap, attempt);
                if age + delay >= retention {
                    return exhausted;
                }
                Next::RetryIn(delay)
            }
        }
    }

    /// Checks the policy's numbers, naming the offending one.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = |field: &'static str, d: &Duration| {
            if d.is_zero() {
                Err((field, "must be positive".to_owned()))
            } else {
                Ok(())
            }
        };
        let jitter_ok = |j: f64| {
            if (0.0..=1.0).contains(&j) {
                Ok(())
            } else {
                Err(("jitter", format!("{j} is not between 0 and 1")))
            }
        };
        match self {
            RetryPolicy::None => Ok(()),
            RetryPolicy::Schedule { delays, jitter } => {
                if delays.is_empty() || delays.len() > 100 {
                    return Err(("delays", "must hold 1 to 100 delays".into()));
                }
                jitter_ok(*jitter)
            }
            RetryPolicy::Exponential {
                initial,
                factor,
                cap,
                max_attempts,
                max_age,
                jitter,
            } => {
                positive("initial", initial)?;
                positive("cap", cap)?;
                if !(1.0..=10.0).contains(factor) {
                    return Err(("factor", format!("{factor} is not between 1 and 10")));
                }
                if cap < initial {
                    return Err(("cap", "must be at least initial".into()));
                }
                if max_attempts.is_none() && max_age.is_none() {
                    return Err((
                        "max_attempts",
                        "set max_attempts or max_age (or use until_success)".into(),
                    ));
                }
                if *max_attempts == Some(0) {
                    return Err(("max_attempts", "must be positive".into()));
                }
                jitter_ok(*jitter)
            }
            RetryPolicy::Interval { every, for_ } => {
                positive("every", every)?;
                if for_ < every {
                    return Err(("for", "must be at least every".into()));
                }
                Ok(())
            }
            RetryPolicy::UntilSuccess { initial, cap } => {
                positive("initial", initial)?;
                if cap < initial {
                    return Err(("cap", "must be at least initial".into()));
                }
                Ok(())
            }
        }
    }
}

/// `initial × factor^(attempt-1)`, at most `cap`.
fn backoff(initial: Duration, factor: f64, cap: Duration, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(64) as i32;
    let secs = initial.as_secs_f64() * factor.powi(exponent);
    if !secs.is_finite() || secs >= cap.as_secs_f64() {
        cap
    } else {
        Duration::from_secs_f64(secs)
    }
}

/// `delay` scaled by a uniform factor in [1 - jitter, 1 + jitter].
fn jittered(delay: Duration, jitter: f64, rng: &mut impl Rng) -> Duration {
    if jitter <= 0.0 || delay.is_zero() {
        return delay;
    }
    delay.mul_f64(rng.random_range(1.0 - jitter..=1.0 + jitter))
}

/// Whether a failed attempt may be retried at all, whatever the policy.
pub fn retryable(outcome: Outcome, status: Option<u16>) -> Result<(), GiveUp> {
    match (outcome, status) {
        (_, Some(410)) => Err(GiveUp::Gone),
        (Outcome::Disabled, _) => Err(GiveUp::Disabled),
        (Outcome::Blocked, _) => Err(GiveUp::NoRetry),
        _ => Ok(()),
    }
}

/// Honours `Retry-After` (of a 429 or 503) within [1×, 2×] the scheduled delay.
pub fn clamp_retry_after(scheduled: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(asked) => asked.clamp(scheduled, scheduled.saturating_mul(2)),
        None => scheduled,
    }
}

/// Serde for a list of durations as humantime strings ("5s", "2h").
mod duration_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(delays: &[Duration], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            delays
                .iter()
                .map(|d| humantime::format_duration(*d).to_string()),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|s| humantime::parse_duration(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const MIN: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    /// Every retry delay of a policy, simulating the passage of time.
    fn schedule(policy: &RetryPolicy, retention: Duration) -> (Vec<Duration>, GiveUp) {
        let mut rng = rng();
        let mut age = Duration::ZERO;
        let mut delays = Vec::new();
        for attempt in 1.. {
            match policy.next(attempt, age, retention, &mut rng) {
                Next::RetryIn(delay) => {
                    delays.push(delay);
                    age += delay;
                }
                Next::GiveUp(reason) => return (delays, reason),
            }
        }
        unreachable!()
    }

    #[test]
    fn seed_000_retries_five_times_within_two_minutes() {
        let policy = RetryPolicy::Schedule {
            delays: [10, 20, 30, 30, 30]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            jitter: 0.0,
        };
        let (delays, reason) = schedule(&policy, 7 * 24 * HOUR);
        assert_eq!(delays.len(), 5);
        assert_eq!(delays.iter().sum::<Duration>(), 2 * MIN);
        assert_eq!(reason, GiveUp::Exhausted);
    }

    #[test]
    fn seed_003_retries_hourly_for_three_days() {
        let policy = RetryPolicy::Interval {
            every: HOUR,
            for_: 72 * HOUR,
        };
        let (delays, reason) = schedule(&policy, 7 * 24 * HOUR);
        assert_eq!(delays.len(), 72);
        assert!(delays.iter().all(|d| *d == HOUR));
        assert_eq!(reason, GiveUp::Exhausted);
        // A late attempt does not shift the grid: due at the next full hour.
        let next = policy.next(3, 3 * HOUR + 10 * MIN, HOUR, &mut rng());
        assert_eq!(next, Next::RetryIn(50 * MIN));
    }

    #[test]
    fn default_schedule_has_seven_retries_within_twenty_percent() {
        let nominal = [5, 300, 1800, 7200, 18000, 36000, 36000].map(Duration::from_secs);
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(seed);
            for (i, nominal) in nominal.iter().enumerate() {
                let Next::RetryIn(delay) =
                    default_policy().next(i as u32 + 1, Duration::ZERO, HOUR, &mut rng)
                else {
                    panic!("retry {i} missing");
                };
                assert!(
                    delay >= nominal.mul_f64(0.8) && delay <= nominal.mul_f64(1.2),
                    "{delay:?} vs {nominal:?}"
                );
            }
            assert_eq!(
                default_policy().next(8, Duration::ZERO, HOUR, &mut rng),
                Next::GiveUp(GiveUp::Exhausted)
            );
        }
    }

    #[test]
    fn exponential_caps_and_stops() {
        let policy = RetryPolicy::Exponential {
            initial: Duration::from_secs(1),
            factor: 2.0,
            cap: Duration::from_secs(10),
            max_attempts: Some(6),
            max_age: None,
            jitter: 0.0,
        };
        let (delays, reason) = schedule(&policy, HOUR);
        assert_eq!(delays, [1, 2, 4, 8, 10].map(Duration::from_secs));
        assert_eq!(reason, GiveUp::Exhausted);
        let by_age = RetryPolicy::Exponential {
            initial: Duration::from_secs(1),
            factor: 2.0,
            cap: Duration::from_secs(10),
            max_attempts: None,
            max_age: Some(Duration::from_secs(20)),
            jitter: 0.0,
        };
        assert_eq!(
            schedule(&by_age, HOUR).0,
            [1, 2, 4, 8].map(Duration::from_secs)
        );
    }

    #[test]
    fn until_success_ends_only_with_retention() {
        let policy = RetryPolicy::UntilSuccess {
            initial: Duration::from_secs(1),
            cap: MIN,
        };
        let (delays, reason) = schedule(&policy, 24 * HOUR);
        assert_eq!(
            &delays[..7],
            &[1, 2, 4, 8, 16, 32, 60].map(Duration::from_secs)
        );
        assert!(delays.len() > 1400, "{}", delays.len());
        assert!(delays.iter().sum::<Duration>() < 24 * HOUR);
        assert_eq!(reason, GiveUp::Exhausted);
    }

    #[test]
    fn none_gives_up_at_once() {
        assert_eq!(
            RetryPolicy::None.next(1, Duration::ZERO, HOUR, &mut rng()),
            Next::GiveUp(GiveUp::NoRetry)
        );
    }

    #[test]
    fn retry_after_is_clamped_to_one_to_two_times() {
        let scheduled = Duration::from_secs(10);
        assert_eq!(
            clamp_retry_after(scheduled, Some(Duration::from_secs(1))),
            scheduled
        );
        assert_eq!(
            clamp_retry_after(scheduled, Some(Duration::from_secs(15))),
            Duration::from_secs(15)
        );
        assert_eq!(
            clamp_retry_after(scheduled, Some(HOUR)),
            Duration::from_secs(20)
        );
        assert_eq!(clamp_retry_after(scheduled, None), scheduled);
    }

    #[test]
    fn gone_and_blocked_never_retry() {
        assert_eq!(retryable(Outcome::Http4xx, Some(410)), Err(GiveUp::Gone));
        assert_eq!(retryable(Outcome::Blocked, None), Err(GiveUp::NoRetry));
        assert_eq!(retryable(Outcome::Http5xx, Some(500)), Ok(()));
        assert_eq!(retryable(Outcome::Timeout, None), Ok(()));
    }

    #[test]
    fn policies_round_trip_as_json_and_validate() {
        let policy = default_policy();
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"schedule","delays":["5s","5m","30m","2h","5h","10h","10h"],"jitter":0.2}"#
        );
        assert_eq!(serde_json::from_str::<RetryPolicy>(&json).unwrap(), policy);
        policy.validate().unwrap();
        let bad = RetryPolicy::Interval {
            every: HOUR,
            for_: MIN,
        };
        assert_eq!(bad.validate().unwrap_err().0, "for");
    }
}
