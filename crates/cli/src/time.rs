//! `--since` / `--until`: an RFC 3339 time, or a duration meaning that long ago.

use chrono::{DateTime, Utc};

/// Parses `2026-11-22T10:00:00Z` or `90m` (ago).
pub fn parse(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(text)
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor a duration like 90m"))?;
    Ok(Utc::now() - chrono::Duration::from_std(ago).map_err(|e| e.to_string())?)
}

pub fn timestamp(at: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    at.map(|at| prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_and_durations() {
        assert_eq!(
            super::parse("2026-11-22T10:00:00Z").unwrap().timestamp(),
            1795341600
        );
        let ago = super::parse("1h").unwrap();
        assert!((chrono::Utc::now() - ago).num_minutes() == 60);
        assert!(super::parse("yesterday-ish").is_err());
    }
}
