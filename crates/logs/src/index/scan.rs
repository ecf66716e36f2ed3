//! Reading hourly buckets newest first: the tail of each bucket, then
//! further back only as far as a listing needs.
//!
//! Entries are appended in the order the consumer indexes them, which is
//! close to but not exactly attempt time (concurrent dispatchers, batches,
//! redeliveries). A bucket is read back in chunks from its end and sorted;
//! reading stops early only once the entries read are [`SKEW_MS`] older
//! than the newest that the listing still wants.

use hookrelay_core::redis::Redis;

use super::layout::{scope_entries, Bucketed, Entry, Keys, HOUR_MS, SCOPE_ENTRY};
use super::IndexError;

/// How far out of time order entries of one bucket are assumed to be.
const SKEW_MS: u64 = 60_000;
/// Bytes read per GETRANGE.
const CHUNK: usize = SCOPE_ENTRY * 16_384;
/// Hourly buckets whose tails are read in one round trip.
const HOURS_PER_TRIP: u64 = 24;

/// What a listing wants from a scope's buckets.
pub struct Want<'a> {
    pub scope: Bucketed<'a>,
    /// Attempt time at or after (ms).
    pub since: u64,
    /// `(ms, seq)` strictly below.
    pub below: (u64, u64),
    /// Outcome code (without [`super::layout::GAVE_UP`]), if filtered.
    pub code: Option<u8>,
    /// The newest hour that may hold entries.
    pub newest_hour: u64,
    pub count: usize,
}

impl Want<'_> {
    fn accepts(&self, entry: &Entry) -> bool {
        entry.ms >= self.since
            && entry.key() < self.below
            && self
                .code
                .is_none_or(|c| entry.code & !super::layout::GAVE_UP == c)
    }
}

/// Up to `want.count` entries, newest first, and whether the buckets hold
/// no more.
pub async fn newest(
    redis: &Redis,
    keys: &Keys<'_>,
    want: &Want<'_>,
) -> Result<(Vec<Entry>, bool), IndexError> {
    let mut redis = redis.clone();
    let oldest_hour = want.since / HOUR_MS;
    let mut hour = want.newest_hour.min(want.below.0 / HOUR_MS);
    let mut found: Vec<Entry> = Vec::new();
    while hour >= oldest_hour && found.len() < want.count {
        let hours: Vec<u64> = (hour.saturating_sub(HOURS_PER_TRIP - 1).max(oldest_hour)..=hour)
            .rev()
            .collect();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for h in &hours {
            let key = keys.bucket(want.scope, *h);
            pipe.cmd("STRLEN").arg(&key);
            pipe.cmd("GETRANGE").arg(&key).arg(-(CHUNK as i64)).arg(-1);
        }
        let tails: Vec<(usize, Vec<u8>)> = {
            let flat: Vec<redis::Value> = pipe.query_async(&mut redis).await?;
            flat.chunks_exact(2)
                .map(|pair| {
                    let len: usize = redis::from_redis_value(&pair[0])?;
                    let tail: Vec<u8> = redis::from_redis_value(&pair[1])?;
                    Ok((len, tail))
                })
                .collect::<Result<_, redis::RedisError>>()?
        };
        for (h, (len, tail)) in hours.iter().zip(tails) {
            if found.len() >= want.count {
                break;
            }
            if len == 0 {
                continue;
            }
            let mut in_bucket: Vec<Entry> = Vec::new();
            let mut start = len - tail.len();
            let mut oldest_read = u64::MAX;
            let mut chunk = tail;
            loop {
                for entry in scope_entries(*h, &chunk) {
                    oldest_read = oldest_read.min(entry.ms);
                    if want.accepts(&entry) {
                        in_bucket.push(entry);
                    }
                }
                if start == 0 || enough(&mut in_bucket, want.count - found.len(), oldest_read) {
                    break;
                }
                let from = start.saturating_sub(CHUNK);
                chunk = redis::cmd("GETRANGE")
                    .arg(keys.bucket(want.scope, *h))
                    .arg(from)
                    .arg(start - 1)
                    .query_async(&mut redis)
                    .await?;
                start = from;
            }
            in_bucket.sort_unstable_by_key(|e| std::cmp::Reverse(e.key()));
            // A record appended again after a crash before it was marked
            // indexed (see `AttemptIndex::store`) is listed once.
            in_bucket.dedup_by_key(|e| e.key());
            found.extend(in_bucket);
        }
        if hours.last().copied().unwrap_or(0) == 0 {
            break;
        }
        hour = hours.last().copied().unwrap_or(0) - 1;
    }
    let exhausted = found.len() < want.count;
    found.truncate(want.count);
    Ok((found, exhausted))
}

/// Whether the `count` newest of `entries` are all newer, by [`SKEW_MS`],
/// than anything older in the bucket can be.
fn enough(entries: &mut Vec<Entry>, count: usize, oldest_read: u64) -> bool {
    // Counted once each: a record appended twice (see the dedup below)
    // must not end the reading of its bucket early.
    entries.sort_unstable_by_key(|e| std::cmp::Reverse(e.key()));
    entries.dedup_by_key(|e| e.key());
    if entries.len() < count || count == 0 {
        return count == 0;
    }
    entries[count - 1].ms > oldest_read.saturating_add(SKEW_MS)
}
