//! The retry schedule in Redis: a sorted set of small references scored by
//! due time (the payload stays in the EVENTS stream), claimed in batches by
//! an atomic script under a lease, and removed only once re-published.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hookrelay_core::delivery::{DeliveryTask, Source};
use hookrelay_core::redis::Redis;
use hookrelay_core::subscription::ID_PREFIX;
use hookrelay_core::Names;

/// What to send again: the event at `seq` of EVENTS, to `subscription_id`,
/// as attempt number `attempt`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryEntry {
    pub seq: u64,
    pub subscription_id: String,
    pub attempt: u32,
    /// When attempt 1 was made, in Unix milliseconds (0: not yet).
    pub first_attempt_ms: i64,
    /// Where `seq` points.
    pub source: Source,
    /// How often this attempt was parked (see [`DeliveryTask::parked`]).
    pub parked: u32,
}

impl RetryEntry {
    /// `seq:subscription:attempt:first` with the numbers in base 36, the
    /// subscription's `sub_` dropped, `:p<n>` once parked and `:b` for a
    /// batch: about 42 bytes, which keeps a pending retry under 150 bytes of
    /// Redis memory. Every field is fixed when the attempt is scheduled, so
    /// the member (and the msg-id derived from it) is the same however often
    /// the entry is claimed, leased and claimed again.
    pub fn member(&self) -> String {
        let id = self
            .subscription_id
            .strip_prefix(ID_PREFIX)
            .unwrap_or(&self.subscription_id);
        let mut member = String::with_capacity(48);
        push_base36(&mut member, self.seq);
        member.push(':');
        member.push_str(id);
        member.push(':');
        push_base36(&mut member, self.attempt.into());
        member.push(':');
        push_base36(&mut member, self.first_attempt_ms.max(0) as u64);
        if self.parked > 0 {
            member.push_str(":p");
            push_base36(&mut member, self.parked.into());
        }
        if self.source == Source::Batch {
            member.push_str(":b");
        }
        member
    }

    /// Reads a member, in this format or the earlier decimal
    /// `seq|subscription|attempt|first[|b]` one.
    pub fn parse(member: &str) -> Option<Self> {
        let (separator, radix) = if member.contains('|') {
            ('|', 10)
        } else {
            (':', 36)
        };
        let mut parts = member.split(separator);
        let number = |part: Option<&str>| u64::from_str_radix(part?, radix).ok();
        let seq = number(parts.next())?;
        let id = parts.next().filter(|id| !id.is_empty())?;
        let subscription_id = if radix == 36 && !id.contains('_') {
            format!("{ID_PREFIX}{id}")
        } else {
            id.to_owned()
        };
        let mut entry = RetryEntry {
            seq,
            subscription_id,
            attempt: number(parts.next())?.try_into().ok()?,
            first_attempt_ms: number(parts.next())?.try_into().ok()?,
            source: Source::Event,
            parked: 0,
        };
        let mut rest = parts.peekable();
        if let Some(parked) = rest.next_if(|part| part.starts_with('p')) {
            entry.parked = u64::from_str_radix(&parked[1..], 36)
                .ok()?
                .try_into()
                .ok()?;
        }
        match rest.next() {
            None => {}
            Some("b") => entry.source = Source::Batch,
            Some(_) => return None,
        }
        rest.next().is_none().then_some(entry)
    }

    /// The schedule entry of `task`.
    pub fn of(task: &DeliveryTask) -> Self {
        RetryEntry {
            seq: task.seq,
            subscription_id: task.subscription_id.clone(),
            attempt: task.attempt,
            first_attempt_ms: task.first_attempt_ms,
            source: task.source,
            parked: task.parked,
        }
    }

    /// The delivery task this entry re-publishes.
    pub fn task(&self) -> DeliveryTask {
        let mut task = DeliveryTask::first(
            &self.subscription_id,
            self.source,
            self.seq,
            chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
        );
        task.attempt = self.attempt;
        task.first_attempt_ms = self.first_attempt_ms;
        task.parked = self.parked;
        task
    }

    /// JetStream msg-id of the re-published task: the member alone, so a
    /// claim that is repeated after a lease expired is dropped as a duplicate.
    pub fn msg_id(&self) -> String {
        format!("r:{}", self.member())
    }
}

pub(crate) fn push_base36(out: &mut String, mut n: u64) {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut buf = [0u8; 13];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = DIGITS[(n % 36) as usize];
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.extend(buf[at..].iter().map(|&b| b as char));
}

/// One claimed entry.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub member: String,
    pub due_ms: i64,
}

/// Moves expired leases back to the schedule, then moves up to ARGV[3] due
/// entries to the lease set, scored by lease expiry; returns them with the
/// time they were due.
const CLAIM: &str = r#"
local now, lease_until, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, member in ipairs(expired) do
  redis.call('ZADD', KEYS[1], now, member)
end
if #expired > 0 then redis.call('ZREM', KEYS[2], unpack(expired)) end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
local members = {}
for i = 1, #due, 2 do
  members[#members + 1] = due[i]
  redis.call('ZADD', KEYS[2], lease_until, due[i])
end
if #members > 0 then redis.call('ZREM', KEYS[1], unpack(members)) end
return due
"#;

/// The schedule of one installation.
#[derive(Clone)]
pub struct RetrySchedule {
    due_key: String,
    leased_key: String,
    redis: Redis,
    claim: redis::Script,
}

impl RetrySchedule {
    pub fn new(names: &Names, redis: Redis) -> Self {
        Self {
            due_key: names.retries_key(),
            leased_key: names.retries_leased_key(),
            redis,
            claim: redis::Script::new(CLAIM),
        }
    }

    /// The sorted set of due entries (others move entries into it).
    pub fn due_key(&self) -> &str {
        &self.due_key
    }

    /// The connection the schedule uses.
    pub fn redis(&self) -> Redis {
        self.redis.clone()
    }

    /// Schedules `entry` at `due`. Adding the same entry again only moves it.
    pub async fn add(&self, entry: &RetryEntry, due: DateTime<Utc>) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        redis::cmd("ZADD")
            .arg(&self.due_key)
            .arg(due.timestamp_millis())
            .arg(entry.member())
            .query_async(&mut redis)
            .await
    }

    /// Schedules `entries`, each at its due time, in one round trip.
    pub async fn add_all(&self, entries: &[(RetryEntry, DateTime<Utc>)]) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for (entry, due) in entries {
            pipe.cmd("ZADD")
                .arg(&self.due_key)
                .arg(due.timestamp_millis())
                .arg(entry.member())
                .ignore();
        }
        let mut redis = self.redis.clone();
        pipe.query_async(&mut redis).await
    }

    /// Claims up to `limit` entries due at `now`, leased until `now + lease`.
    pub async fn claim(
        &self,
        now: DateTime<Utc>,
        lease: Duration,
        limit: usize,
    ) -> redis::RedisResult<Vec<Claimed>> {
        let now_ms = now.timestamp_millis();
        let mut redis = self.redis.clone();
        let flat: Vec<(String, f64)> = self
            .claim
            .key(&self.due_key)
            .key(&self.leased_key)
            .arg(now_ms)
            .arg(now_ms + lease.as_millis() as i64)
            .arg(limit)
            .invoke_async(&mut redis)
            .await?;
        Ok(flat
            .into_iter()
            .map(|(member, score)| Claimed {
                member,
                due_ms: score as i64,
            })
            .collect())
    }

    /// Forgets claimed entries once their deliveries are re-published.
    pub async fn release(&self, members: &[String]) -> redis::RedisResult<()> {
        if members.is_empty() {
            return Ok(());
        }
        let mut redis = self.redis.clone();
        redis::cmd("ZREM")
            .arg(&self.leased_key)
            .arg(members)
            .query_async(&mut redis)
            .await
    }

    /// Returns claimed entries to the schedule, due at `due` (a transient
    /// failure: better soon than at lease expiry).
    pub async fn requeue(&self, members: &[String], due: DateTime<Utc>) -> redis::RedisResult<()> {
        if members.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for member in members {
            pipe.cmd("ZADD")
                .arg(&self.due_key)
                .arg(due.timestamp_millis())
                .arg(member)
                .ignore();
        }
        pipe.cmd("ZREM").arg(&self.leased_key).arg(members).ignore();
        let mut redis = self.redis.clone();
        pipe.query_async(&mut redis).await
    }

    /// Entries waiting (due or leased), and the due time of the oldest.
    pub async fn stats(&self) -> redis::RedisResult<(u64, Option<i64>)> {
        let mut redis = self.redis.clone();
        let (due, leased, oldest): (u64, u64, Vec<(String, f64)>) = redis::pipe()
            .cmd("ZCARD")
            .arg(&self.due_key)
            .cmd("ZCARD")
            .arg(&self.leased_key)
            .cmd("ZRANGE")
            .arg(&self.due_key)
            .arg(0)
            .arg(0)
            .arg("WITHSCORES")
            .query_async(&mut redis)
            .await?;
        Ok((due + leased, oldest.first().map(|(_, score)| *score as i64)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_stay_small() {
        let entry = RetryEntry {
            seq: 123_456_789,
            subscription_id: "sub_01M81XPFFYY02KPEC83Y1VZ5T7".into(),
            attempt: 3,
            first_attempt_ms: 1_795_361_029_000,
            source: Source::Event,
            parked: 0,
        };
        let member = entry.member();
        assert!(member.len() <= 44, "{member}");
        assert_eq!(RetryEntry::parse(&member), Some(entry.clone()));
        let batch = RetryEntry {
            source: Source::Batch,
            ..entry.clone()
        };
        assert_eq!(RetryEntry::parse(&batch.member()), Some(batch.clone()));
        let parked = RetryEntry {
            parked: 40,
            ..batch.clone()
        };
        assert!(parked.member().ends_with(":p14:b"), "{}", parked.member());
        assert_eq!(RetryEntry::parse(&parked.member()), Some(parked.clone()));
        assert_eq!(RetryEntry::of(&parked.task()), parked);
        assert_ne!(parked.msg_id(), batch.msg_id());
        // Members written before the base-36 format still read.
        assert_eq!(
            RetryEntry::parse("123456789|sub_01M81XPFFYY02KPEC83Y1VZ5T7|3|1795361029000"),
            Some(entry)
        );
        assert_eq!(
            RetryEntry::parse("0:x:0:0"),
            Some(RetryEntry {
                seq: 0,
                subscription_id: "sub_x".into(),
                attempt: 0,
                first_attempt_ms: 0,
                source: Source::Event,
                parked: 0,
            })
        );
        assert_eq!(RetryEntry::parse("1:s:2"), None);
        assert_eq!(RetryEntry::parse("1|s|x|2"), None);
        assert_eq!(RetryEntry::parse("1|s|2|3|4"), None);
        assert_eq!(RetryEntry::parse("1:s:2:3:b:b"), None);
        assert_eq!(RetryEntry::parse("1:s:2:3:p"), None);
    }
}
