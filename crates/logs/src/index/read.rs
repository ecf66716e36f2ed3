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
/// Records a call may examine per attempt it may return.
const EXAMINED_PER_SLOT: usize = 20;
/// Records a call examines at most (a page of more takes one more each).
const MAX_EXAMINED: usize = 5_000;
/// Event buckets read per pipeline.
const KEYS_PER_TRIP: usize = 256;
/// Records read at once while looking for an event's last attempt to one
/// subscription.
const LAST_ATTEMPT_READS: usize = 16;

/// How many attempt records one call of a listing of at most `limit` may
/// read: 20 per attempt asked for, at most 5,000, never fewer than a full
/// page (and one to tell whether more follow). A listing that reaches it
/// answers with what it found and a cursor to resume from.
pub fn examine_budget(limit: usize) -> usize {
    (limit.saturating_add(1).saturating_mul(EXAMINED_PER_SLOT))
        .min(MAX_EXAMINED)
        .max(limit.saturating_add(1))
}

/// One page of a listing, and where the next begins. `next` is set
/// whenever the listing may hold more, also when this page holds fewer
/// than asked for (even none): the call examined as many records as it may.
#[derive(Debug)]
pub struct Page {
    pub records: Vec<AttemptRecord>,
    pub next: Option<Cursor>,
}

/// What a scope asks of each record, whichever index found it.
#[derive(Debug, Clone, Copy)]
struct Query<'a> {
    tenant: Option<&'a str>,
    subscription: Option<&'a str>,
    event: Option<&'a str>,
    /// Final failures (given up) only.
    failures: bool,
}

impl<'a> Query<'a> {
    fn of(scope: &'a Scope) -> Self {
        let none = Query {
            tenant: None,
            subscription: None,
            event: None,
            failures: false,
        };
        match scope {
            Scope::Attempts {
                tenant,
                subscription,
                event,
            } => Query {
                tenant: Some(tenant),
                subscription: subscription.as_deref(),
                event: event.as_deref(),
                ..none
            },
            Scope::TenantFailures(id) => Query {
                tenant: Some(id),
                failures: true,
                ..none
            },
            Scope::SubscriptionFailures(id) => Query {
                subscription: Some(id),
                failures: true,
                ..none
            },
        }
    }

    fn matches(&self, record: &AttemptRecord) -> bool {
        self.tenant.is_none_or(|t| record.tenant == t)
            && self
                .subscription
                .is_none_or(|s| record.subscription_id == s)
            && self.event.is_none_or(|e| record.event_id == e)
            && (!self.failures || record.give_up.is_some())
    }

    /// The hourly buckets that hold every attempt this query can match.
    fn bucketed(&self) -> Option<Bucketed<'a>> {
        match (self.failures, self.subscription, self.tenant) {
            (false, Some(id), _) => Some(Bucketed::Subscription(id)),
            (false, None, Some(id)) => Some(Bucketed::Tenant(id)),
            (true, Some(id), _) => Some(Bucketed::SubscriptionFailures(id)),
            (true, None, Some(id)) => Some(Bucketed::TenantFailures(id)),
            (_, None, None) => None,
        }
    }
}

/// The newest hour a listing below `below` can hold anything in.
fn top_hour(below: (u64, u64)) -> u64 {
    // Below `(ms, 0)` nothing of `ms` itself remains.
    let last_ms = if below.1 == 0 {
        below.0.saturating_sub(1)
    } else {
        below.0
    };
    last_ms / HOUR_MS
}

impl AttemptIndex {
    /// Attempts of `scope` passing `filter`, newest first, after `before`
    /// if given; at most `limit`, from at most [`examine_budget`]`(limit)`
    /// records read (see [`Page`]).
    pub async fn list(
        &self,
        scope: &Scope,
        filter: &Filter,
        before: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, IndexError> {
        let empty = || Page {
            records: Vec::new(),
            next: None,
        };
        let code = match filter.outcome.as_deref() {
            // An outcome hookrelay never records matches nothing.
            Some(name) => match layout::outcome_code(name) {
                Some(code) => Some(code),
                None => return Ok(empty()),
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
        let query = Query::of(scope);
        let budget = examine_budget(limit);
        let window = Window { since, below, code };
        if let (Some(tenant), Some(event), false) = (query.tenant, query.event, query.failures) {
            let candidates = self.event_candidates(tenant, event, since, below).await?;
            // An event fanned out wide, asked about with a subscription:
            // that subscription's own entries narrow it down more.
            if query.subscription.is_none() || candidates.len() <= budget {
                return self
                    .list_candidates(&query, candidates, &window, limit, budget)
                    .await;
            }
        }
        let Some(bucketed) = query.bucketed() else {
            return Ok(empty());
        };
        let mut found: Vec<(Cursor, AttemptRecord)> = Vec::new();
        let mut examined = 0;
        // When the records decide (an event filter read from a
        // subscription's entries), each round reads more of them.
        let mut ask = limit + 1;
        loop {
            let want = Want {
                scope: bucketed,
                since,
                below,
                code,
                // Dispatchers' clocks may run a little ahead.
                newest_hour: now / HOUR_MS + 1,
                count: ask.max(limit + 1 - found.len()).min(budget - examined),
            };
            if query.event.is_some() {
                ask = ask.saturating_mul(4);
            }
            let (entries, exhausted) = scan::newest(&self.redis, &self.keys(), &want).await?;
            if let Some(last) = entries.last() {
                below = last.key();
            }
            examined += entries.len();
            let records = self.read_records(entries.iter().map(|e| e.seq)).await?;
            for (entry, record) in entries.iter().zip(records) {
                let Some(record) = record else { continue };
                if query.matches(&record)
                    && layout::id_ms(&record.id).is_none_or(|ms| ms == entry.ms)
                {
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
                return Ok(page(found, limit));
            }
            if examined >= budget {
                // Everything at or above `below` is examined.
                return Ok(Page {
                    records: found.into_iter().map(|(_, r)| r).collect(),
                    next: Some(Cursor {
                        ms: below.0,
                        seq: below.1,
                    }),
                });
            }
        }
    }

    /// Attempts among an event's `candidates` (newest hour first, see
    /// [`AttemptIndex::event_candidates`]) that match `query` and `window`.
    /// An hour's candidates are read together (the order within an hour is
    /// known only from the records); after an hour, a call that has read
    /// its budget answers with a cursor at that hour's start.
    async fn list_candidates(
        &self,
        query: &Query<'_>,
        candidates: Vec<(u64, u64)>,
        window: &Window,
        limit: usize,
        budget: usize,
    ) -> Result<Page, IndexError> {
        let mut found: Vec<(Cursor, AttemptRecord)> = Vec::new();
        let mut examined = 0;
        let mut rest = candidates.as_slice();
        while let Some(&(hour, _)) = rest.first() {
            if examined > 0 && examined + rest.iter().take_while(|c| c.0 == hour).count() > budget {
                return Ok(Page {
                    records: found.into_iter().map(|(_, r)| r).collect(),
                    next: Some(Cursor {
                        ms: (hour + 1) * HOUR_MS,
                        seq: 0,
                    }),
                });
            }
            let split = rest.iter().position(|c| c.0 != hour).unwrap_or(rest.len());
            let (group, later) = rest.split_at(split);
            rest = later;
            examined += group.len();
            let records = self.read_records(group.iter().map(|c| c.1)).await?;
            let mut in_hour: Vec<(Cursor, AttemptRecord)> = group
                .iter()
                .zip(records)
                .filter_map(|(&(_, seq), record)| {
                    let record = record.filter(|r| query.matches(r))?;
                    let ms = layout::id_ms(&record.id)?;
                    let code_ok = window
                        .code
                        .is_none_or(|c| layout::code(record.outcome, false) == c);
                    (code_ok && ms >= window.since && (ms, seq) < window.below)
                        .then_some((Cursor { ms, seq }, record))
                })
                .collect();
            in_hour.sort_unstable_by_key(|(cursor, _)| std::cmp::Reverse(*cursor));
            found.extend(in_hour);
            if found.len() > limit {
                break;
            }
        }
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
        let mut seqs = self.event_seqs(tenant, event_id, since).await?;
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

    /// `(hour, sequence)` of every entry, newest hour first and each
    /// hour's sequences descending, once each, that `tenant`'s event
    /// buckets hold for `event_id` from the hour of `since` to the newest
    /// that may hold anything below `below`; a few may be another event's
    /// whose hash matches (callers check the records).
    async fn event_candidates(
        &self,
        tenant: &str,
        event_id: &str,
        since: u64,
        below: (u64, u64),
    ) -> Result<Vec<(u64, u64)>, IndexError> {
        let (shard, fingerprint) = layout::event_shard(event_id);
        // Dispatchers' clocks may run a little ahead.
        let newest = layout::ms_of(Utc::now()) / HOUR_MS + 1;
        let hours: Vec<u64> = (since / HOUR_MS..=newest.min(top_hour(below)))
            .rev()
            .collect();
        let mut candidates = Vec::new();
        let mut redis = self.redis.clone();
        for hours in hours.chunks(KEYS_PER_TRIP) {
            // GETs, not MGET: one tenant's hours share a slot, but a
            // pipeline of GETs works the same on any deployment.
            let mut pipe = redis::pipe();
            for hour in hours {
                pipe.cmd("GET").arg(self.keys().event(tenant, shard, *hour));
            }
            let buckets: Vec<Option<Vec<u8>>> = pipe.query_async(&mut redis).await?;
            for (hour, bucket) in hours.iter().zip(buckets) {
                let Some(bucket) = bucket else { continue };
                let mut seqs: Vec<u64> = layout::event_seqs(fingerprint, &bucket).collect();
                seqs.sort_unstable_by(|a, b| b.cmp(a));
                seqs.dedup();
                candidates.extend(seqs.into_iter().map(|seq| (*hour, seq)));
            }
        }
        Ok(candidates)
    }

    /// The ATTEMPTS sequences, ascending and once each, of `tenant`'s event
    /// buckets for `event_id` from the hour of `since` on.
    async fn event_seqs(
        &self,
        tenant: &str,
        event_id: &str,
        since: u64,
    ) -> Result<Vec<u64>, IndexError> {
        let mut seqs: Vec<u64> = self
            .event_candidates(tenant, event_id, since, (u64::MAX, 0))
            .await?
            .into_iter()
            .map(|(_, seq)| seq)
            .collect();
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

/// What a listing wants of each entry or record besides its scope.
struct Window {
    /// Attempt time at or after (ms).
    since: u64,
    /// `(ms, seq)` strictly below.
    below: (u64, u64),
    /// Outcome code, if filtered.
    code: Option<u8>,
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
