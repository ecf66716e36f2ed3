//! `--retry` in one word: a retry policy as text, and back.

use std::time::Duration;

use hookrelay_proto::v1 as pb;
use pb::retry_policy::Policy;

fn duration(text: &str) -> Result<prost_types::Duration, String> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| format!("{text:?}: {e}"))?;
    prost_types::Duration::try_from(d).map_err(|e| e.to_string())
}

fn show(d: &Option<prost_types::Duration>) -> String {
    d.and_then(|d| Duration::try_from(d).ok())
        .map(|d| humantime::format_duration(d).to_string())
        .unwrap_or_else(|| "?".into())
}

/// Parses `none`, `schedule=…`, `interval=…`, `until-success=…`, `exponential=…`.
pub fn parse(text: &str) -> Result<pb::RetryPolicy, String> {
    let (kind, args) = text.split_once('=').unwrap_or((text, ""));
    let args: Vec<&str> = if args.is_empty() {
        Vec::new()
    } else {
        args.split(',').collect()
    };
    let want = |n: usize, form: &str| {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!("{kind} takes {form}"))
        }
    };
    let policy = match kind {
        "none" => {
            want(0, "no values")?;
            Policy::None(pb::NoRetry {})
        }
        "schedule" => Policy::Schedule(pb::ScheduleRetry {
            delays: args.iter().map(|a| duration(a)).collect::<Result<_, _>>()?,
            jitter: 0.0,
        }),
        "interval" => {
            want(2, "EVERY,FOR, e.g. interval=1h,72h")?;
            Policy::Interval(pb::IntervalRetry {
                every: Some(duration(args[0])?),
                r#for: Some(duration(args[1])?),
            })
        }
        // Values left out take the server's defaults (5s, 10h).
        "until-success" => {
            if args.len() > 2 {
                return Err("until-success takes [INITIAL[,CAP]], e.g. until-success=1s,1m".into());
            }
            let at = |i: usize| args.get(i).map(|a| duration(a)).transpose();
            Policy::UntilSuccess(pb::UntilSuccessRetry {
                initial: at(0)?,
                cap: at(1)?,
            })
        }
        "exponential" => {
            want(
                4,
                "INITIAL,FACTOR,CAP,MAX_ATTEMPTS, e.g. exponential=1s,2,1m,10",
            )?;
            Policy::Exponential(pb::ExponentialRetry {
                initial: Some(duration(args[0])?),
                factor: args[1]
                    .trim()
                    .parse()
                    .map_err(|_| format!("factor {:?} is not a number", args[1]))?,
                cap: Some(duration(args[2])?),
                max_attempts: args[3]
                    .trim()
                    .parse()
                    .map_err(|_| format!("max attempts {:?} is not a number", args[3]))?,
                max_age: None,
                jitter: 0.2,
            })
        }
        other => {
            return Err(format!(
                "{other:?} is not none, schedule, interval, until-success or exponential"
            ))
        }
    };
    Ok(pb::RetryPolicy {
        policy: Some(policy),
    })
}

/// The policy as `parse` reads it; `default` when unset.
pub fn describe(policy: &Option<pb::RetryPolicy>) -> String {
    match policy.as_ref().and_then(|p| p.policy.as_ref()) {
        None => "default (5s, 5m, 30m, 2h, 5h, 10h, 10h ±20%)".into(),
        Some(Policy::None(_)) => "none".into(),
        Some(Policy::Schedule(s)) => format!(
            "schedule={}",
            s.delays
                .iter()
                .map(|d| show(&Some(*d)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        Some(Policy::Interval(i)) => format!("interval={},{}", show(&i.every), show(&i.r#for)),
        Some(Policy::UntilSuccess(u)) => {
            format!("until-success={},{}", show(&u.initial), show(&u.cap))
        }
        Some(Policy::Exponential(e)) => format!(
            "exponential={},{},{},{}",
            show(&e.initial),
            e.factor,
            show(&e.cap),
            e.max_attempts
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_read_and_print_alike() {
        for text in [
            "none",
            "schedule=10s,20s,1m 30s",
            "interval=1h,3days",
            "until-success=1s,1m",
            "exponential=1s,2,1m,10",
        ] {
            let policy = parse(text).unwrap();
            let again = parse(&describe(&Some(policy.clone()))).unwrap();
            assert_eq!(again, policy, "{text}");
        }
        assert!(parse("sometimes").unwrap_err().contains("is not none"));
        assert!(parse("interval=1h").unwrap_err().contains("EVERY,FOR"));
        assert!(parse("schedule=soon").is_err());
        // The server fills in what is left out.
        assert_eq!(
            parse("until-success").unwrap(),
            pb::RetryPolicy {
                policy: Some(Policy::UntilSuccess(pb::UntilSuccessRetry::default()))
            }
        );
        assert!(parse("until-success=1s,1m,1h")
            .unwrap_err()
            .contains("[INITIAL[,CAP]]"));
    }
}
