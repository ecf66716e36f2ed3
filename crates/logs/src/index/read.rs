//! Listing and fetching attempts: positions from the Redis index, records
//! from the ATTEMPTS stream.

use chrono::Utc;
use futures::StreamExt;
use hookrelay_core::delivery::AttemptRecord;
use hookrelay_core::nats::ReadError;

use super::layout::{self, Bucketed, Cursor, HOUR_MS, MINUTE_MS};
use super::scan::{self, Want};
use super::{AttemptIndex, Filter, IndexError, Scope};

/// Records read back from ATTEMPTS at once.
const READS_IN_FLIGHT: usize = 64;
/// Index reads per page when records keep turning out to be gone.
const MAX_ROUNDS: usize = 20;
/// Event buckets read per pipeline.
const KEYS_PER_TRIP: usize = 256;
/// Records read at once while looking for an event's last attempt to one
/// subscription.
const LAST_ATTEMPT_READS: usize = 16;

/// One page of a listing, and where the next begins.
#[derive(Debug)]
pub struct Page {
    pub records: Vec<AttemptRecord>,
    pub next: Option<Cursor>,
}

impl AttemptIndex {
    /// Attempts of `scope` passing `filter`, newest first, after `before`
    /// if given; at most `limit`.
    pub async fn list(
        &self,
        scope: &Scope,
        filter: &Filter,
        before: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, IndexError> {
        let code = match filter.outcome.as_deref() {
            // An outcome hookrelay never records matches nothing.
            Some(name) => match layout::outcome_code(name) {
                Some(code) => Some(code),
                None => {
                    return Ok(Page {
                        records: Vec::new(),
                        next: None,
                    })
                }
            },
            None => None,
        };
        let mut below = filter
            .until
            .map_or((u64::MAX, 0), |until| (layout::ms_of(until), 0));
        if let Some(cursor) = before {
            below = below.min((cursor.ms, cursor.seq));
        }
        let now = layout::ms_of(Utc::now());
        let since = filter
            .since
            .map_or(0, layout::ms_of)
            .max(now.saturating_sub(self.retention_ms() + HOUR_MS));
        let bucketed = match scope {
            Scope::Event { tenant, event_id } => {
                return self
                    .list_event(tenant, event_id, code, since, below, limit)
                    .await
            }
            Scope::Subscription(id) => Bucketed::Subscription(id),
            Scope::Tenant(id) => Bucketed::Tenant(id),
            Scope::SubscriptionFailures(id) => Bucketed::SubscriptionFailures(id),
            Scope::TenantFailures(id) => Bucketed::TenantFailures(id),
        };
        let mut found: Vec<(Cursor, AttemptRecord)> = Vec::new();
        for _ in 0..MAX_ROUNDS {
            let want = Want {
                scope: bucketed,
                since,
                below,
                code,
                // Dispatchers' clocks may run a little ahead.
                newest_hour: now / HOUR_MS + 1,
                count: limit + 1 - found.len(),
            };
            let (entries, exhausted) = scan::newest(&self.redis, &self.keys(), &want).await?;
            if let Some(last) = entries.last() {
                below = last.key();
            }
            let records = self.read_records(entries.iter().map(|e| e.seq)).await?;
            for (entry, record) in entries.iter().zip(records) {
                let Some(record) = record else { continue };
                let owner = match bucketed {
                    Bucketed::Subscription(id) | Bucketed::SubscriptionFailures(id) => {
                        record.subscription_id == *id
                    }
                    Bucketed::Tenant(id) | Bucketed::TenantFailures(id) => record.tenant == *id,
                };
                if owner && layout::id_ms(&record.id).is_none_or(|ms| ms == entry.ms) {
                    found.push((
                        Cursor {
                            ms: entry.ms,
                            seq: entry.seq,
                        },
                        record,
                    ));
                }
            }
            if found.len() > limit || exhausted {
                break;
            }
        }
        Ok(page(found, limit))
    }

    /// An event's attempts within `tenant`: every retained hour's bucket of
    /// its shard, then the records themselves (an event has few attempts).
    async fn list_event(
        &self,
        tenant: &str,
        event_id: &str,
        code: Option<u8>,
        since: u64,
        below: (u64, u64),
        limit: usize,
    ) -> Result<Page, IndexError> {
        let seqs = self.event_seqs(tenant, event_id, since, below.0).await?;
        let records = self.read_records(seqs.iter().copied()).await?;
        let mut found: Vec<(Cursor, AttemptRecord)> = seqs
            .into_iter()
            .zip(records)
            .filter_map(|(seq, record)| {
                let record = record.filter(|r| r.event_id == event_id && r.tenant == tenant)?;
                let ms = layout::id_ms(&record.id)?;
                let code_ok = code.is_none_or(|c| layout::code(record.outcome, false) == c);
                (code_ok && ms >= since && (ms, seq) < below)
                    .then_some((Cursor { ms, seq }, record))
            })
            .collect();
        found.sort_unstable_by_key(|(cursor, _)| std::cmp::Reverse(*cursor));
        Ok(page(found, limit))
    }

    /// The last recorded attempt (highest ATTEMPTS sequence) of `event_id`
    /// of `tenant` to `subscription_id`, if still retained. Reads the
    /// tenant's event buckets, then only the records whose entries match
    /// the event, newest first and a few at a time, stopping at the first
    /// of that subscription.
    pub async fn last_attempt(
        &self,
        tenant: &str,
        event_id: &str,
        subscription_id: &str,
    ) -> Result<Option<AttemptRecord>, IndexError> {
        let since = layout::ms_of(Utc::now()).saturating_sub(self.retention_ms() + HOUR_MS);
        let mut seqs = self.event_seqs(tenant, event_id, since, u64::MAX).await?;
        seqs.reverse();
        for chunk in seqs.chunks(LAST_ATTEMPT_READS) {
            let records = self.read_records(chunk.iter().copied()).await?;
            let last = records.into_iter().flatten().find(|r| {
                r.event_id == event_id && r.tenant == tenant && r.subscription_id == subscription_id
            });
            if last.is_some() {
                return Ok(last);
            }
        }
        Ok(None)
    }

    /// The ATTEMPTS sequences, ascending and once each, that `tenant`'s
    /// event buckets hold for `event_id` from the hour of `since` to that
    /// of `below_ms` (or the current one); a few may be another event's
    /// whose hash matches (callers check the records).
    async fn event_seqs(
        &self,
        tenant: &str,
        event_id: &str,
        since: u64,
        below_ms: u64,
    ) -> Result<Vec<u64>, IndexError> {
        let (shard, fingerprint) = layout::event_shard(event_id);
        // Dispatchers' clocks may run a little ahead.
        let newest = layout::ms_of(Utc::now()) / HOUR_MS + 1;
        let keys: Vec<String> = (since / HOUR_MS..=newest.min(below_ms / HOUR_MS))
            .map(|hour| self.keys().event(tenant, shard, hour))
            .collect();
        let mut seqs = Vec::new();
        let mut redis = self.redis.clone();
        for keys in keys.chunks(KEYS_PER_TRIP) {
            // GETs, not MGET: one tenant's hours share a slot, but a
            // pipeline of GETs works the same on any deployment.
            let mut pipe = redis::pipe();
            for key in keys {
                pipe.cmd("GET").arg(key);
            }
            let buckets: Vec<Option<Vec<u8>>> = pipe.query_async(&mut redis).await?;
            for bucket in buckets.into_iter().flatten() {
                seqs.extend(layout::event_seqs(fingerprint, &bucket));
            }
        }
        seqs.sort_unstable();
        seqs.dedup();
        Ok(seqs)
    }

    /// The attempt `id`, if still retained.
    pub async fn get(&self, id: &str) -> Result<Option<AttemptRecord>, IndexError> {
        let Some(ms) = layout::id_ms(id) else {
            return Ok(None);
        };
        let mut redis = self.redis.clone();
        let bucket: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.keys().ids(ms / MINUTE_MS))
            .query_async(&mut redis)
            .await?;
        let seqs: Vec<u64> = bucket
            .as_deref()
            .map(|b| layout::id_seqs(ms, b).collect())
            .unwrap_or_default();
        let records = self.read_records(seqs).await?;
        Ok(records.into_iter().flatten().find(|r| r.id == id))
    }

    /// The records at `seqs` of ATTEMPTS, in their order; `None` for those
    /// no longer in the stream (past its max age) or unreadable.
    async fn read_records(
        &self,
        seqs: impl IntoIterator<Item = u64>,
    ) -> Result<Vec<Option<AttemptRecord>>, IndexError> {
        let seqs: Vec<u64> = seqs.into_iter().collect();
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let stream_name = self.names.attempts_stream();
        let error = |message: String| IndexError::Stream {
            stream: stream_name.clone(),
            message,
        };
        let stream = self
            .js
            .get_stream(&stream_name)
            .await
            .map_err(|e| error(e.to_string()))?;
        let records: Vec<Result<Option<AttemptRecord>, ReadError>> =
            futures::stream::iter(seqs.into_iter().map(|seq| {
                let stream = stream.clone();
                async move {
                    let stored = hookrelay_core::nats::get_stored(&stream, seq).await?;
                    Ok(stored.and_then(|s| serde_json::from_slice(&s.payload).ok()))
                }
            }))
            .buffered(READS_IN_FLIGHT)
            .collect()
            .await;
        records
            .into_iter()
            .map(|r| r.map_err(IndexError::from))
            .collect()
    }
}

/// At most `limit` of `found` (newest first), and the cursor after the last
/// if more follow.
fn page(mut found: Vec<(Cursor, AttemptRecord)>, limit: usize) -> Page {
    let more = found.len() > limit;
    found.truncate(limit);
    Page {
        next: more.then(|| found.last().map(|(c, _)| *c)).flatten(),
        records: found.into_iter().map(|(_, r)| r).collect(),
    }
}
