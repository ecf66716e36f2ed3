//! Ordered delivery (`ordering: fifo`): a subscription's tasks wait in a
//! queue of their own in Redis, scored by stream sequence, and one
//! dispatcher at a time (holding the queue's lock) sends its head, then the
//! next. A failing head is retried by the subscription's policy while the
//! rest wait; a head given up lets the next one go.
//!
//! Keys (`core::ordered`; `<prefix>` is the installation's Redis prefix):
//! - `<prefix>:{fifo}:queue:<subscription>`: the queue, members `seq:first` (base
//!   36: the event's sequence and when its delivery began), scored by seq.
//!   The member is fixed per event, so an event fanned out twice (its
//!   ingestor crashed before the ack) is queued once.
//! - `<prefix>:{fifo}:ready`: subscriptions by when their head may go.
//! - `<prefix>:{fifo}:lock:<subscription>`: which dispatcher sends it now.
//! - `<prefix>:{fifo}:attempts`: per subscription, `seq:attempt` of a head
//!   that failed (absent: attempt 1).
//! - `<prefix>:{fifo}:taken`: per subscription, the highest sequence sent,
//!   to tell an event that arrived after later ones went out.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookrelay_core::delivery::{DeliveryTask, Source};
use hookrelay_core::failure::{backoff, Dependency};
use hookrelay_core::ordered::OrderedKeys;
use hookrelay_core::redis::Redis;
use hookrelay_core::Names;
use tokio::sync::{oneshot, Notify};

/// The ordered-queue poller's own readiness flag for Redis ("redis
/// (ordered)"), set by a failed poll and cleared by the next good one.
const POLLER: &str = "ordered";
use tokio_util::sync::CancellationToken;

use crate::deliver::COMPONENT;
use crate::lease::{keep_alive, Lease, Ordered, Progress};
use crate::schedule::push_base36;
use crate::Dispatcher;

/// How long a queue's lock lasts unless renewed (it is renewed every
/// third of this while its head is being sent).
const LOCK_TTL: Duration = Duration::from_secs(10);
/// How often dispatchers look for queues whose head may go (an enqueue in
/// this process wakes them at once).
const POLL: Duration = Duration::from_millis(100);
/// Queues looked at per poll.
const READY_BATCH: usize = 256;

/// Adds ARGV[3..] (score, member pairs) to KEYS[1] unless present, and
/// makes subscription ARGV[1] ready at ARGV[2] unless it already waits.
const ENQUEUE: &str = r#"
for i = 3, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], 'NX', ARGV[i], ARGV[i + 1])
end
redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1])
return 1
"#;

/// For the holder ARGV[1] of lock KEYS[3]: the head of queue KEYS[1] with
/// its attempt state (KEYS[5]) and the highest sequence sent (KEYS[4]),
/// renewing the lock for ARGV[2] ms; an empty queue leaves the ready set
/// (KEYS[2]) and frees the lock, atomically with any enqueue.
const TAKE: &str = r#"
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return {'lost'} end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #head == 0 then
  redis.call('ZREM', KEYS[2], ARGV[3])
  redis.call('DEL', KEYS[3])
  return {'empty'}
end
redis.call('PEXPIRE', KEYS[3], ARGV[2])
local taken = redis.call('HGET', KEYS[4], ARGV[3]) or '-1'
if tonumber(head[2]) > tonumber(taken) then
  redis.call('HSET', KEYS[4], ARGV[3], head[2])
end
local state = redis.call('HGET', KEYS[5], ARGV[3]) or ''
return {'head', head[1], state, taken}
"#;

/// Settles the head ARGV[3] of queue KEYS[1] for subscription ARGV[2]:
/// `done` removes it; `retry` stores its next attempt (ARGV[5]) and makes
/// the queue ready at ARGV[4]; `later` only does the latter. Both of those
/// free the lock KEYS[3] if ARGV[1] holds it.
const SETTLE: &str = r#"
if ARGV[4] == 'done' then
  redis.call('ZREM', KEYS[1], ARGV[3])
  redis.call('HDEL', KEYS[4], ARGV[2])
  return 1
end
if ARGV[4] == 'retry' then redis.call('HSET', KEYS[4], ARGV[2], ARGV[6]) end
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[2])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
return 1
"#;

/// Renews lock KEYS[1] for ARGV[2] ms if ARGV[1] holds it.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#;

/// The ordered queues, shared by the ingestor (which fills them in stream
/// order) and the dispatcher (which drains them) of a process.
pub struct OrderedQueues {
    keys: OrderedKeys,
    redis: Redis,
    enqueue: redis::Script,
    take: redis::Script,
    settle: redis::Script,
    renew: redis::Script,
    /// Tells this process's dispatcher that a queue was filled.
    wake: Notify,
}

/// The head of a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    /// Another dispatcher holds the queue now.
    Lost,
    Empty,
    Next(QueuedTask),
}

/// A task in an ordered queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedTask {
    pub member: String,
    pub seq: u64,
    pub first_attempt_ms: i64,
    pub attempt: u32,
    /// Set when a later event of the subscription went out before this
    /// one arrived: the highest sequence sent.
    pub late_after: Option<u64>,
}

impl QueuedTask {
    /// The delivery task of this head.
    pub fn task(&self, subscription_id: &str) -> DeliveryTask {
        let mut task = DeliveryTask::first(
            subscription_id,
            Source::Event,
            self.seq,
            DateTime::<Utc>::UNIX_EPOCH,
        );
        task.attempt = self.attempt;
        task.first_attempt_ms = self.first_attempt_ms;
        task
    }
}

/// What became of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Delivered or given up: the next one goes.
    Done,
    /// Failed: attempt `.1` is due at `.0`; the rest wait.
    Retry(DateTime<Utc>, u32),
    /// Not sent now (the circuit is open, the tenant is at its cap, a
    /// dependency failed): the same attempt, at `.0`.
    Later(DateTime<Utc>),
}

fn member(seq: u64, first_attempt_ms: i64) -> String {
    let mut member = String::with_capacity(20);
    push_base36(&mut member, seq);
    member.push(':');
    push_base36(&mut member, first_attempt_ms.max(0) as u64);
    member
}

fn parse_member(member: &str) -> Option<(u64, i64)> {
    let (seq, first) = member.split_once(':')?;
    Some((
        u64::from_str_radix(seq, 36).ok()?,
        i64::try_from(u64::from_str_radix(first, 36).ok()?).ok()?,
    ))
}

/// `seq:attempt` of a head that failed, if it is still the head `seq`.
fn attempt_of(state: &str, seq: u64) -> u32 {
    state
        .split_once(':')
        .and_then(|(s, a)| Some((s.parse::<u64>().ok()?, a.parse::<u32>().ok()?)))
        .filter(|(s, _)| *s == seq)
        .map_or(1, |(_, attempt)| attempt)
}

impl OrderedQueues {
    pub fn new(names: &Names, redis: Redis) -> Self {
        Self {
            keys: OrderedKeys::new(names),
            redis,
            enqueue: redis::Script::new(ENQUEUE),
            take: redis::Script::new(TAKE),
            settle: redis::Script::new(SETTLE),
            renew: redis::Script::new(RENEW),
            wake: Notify::new(),
        }
    }

    /// Queues `tasks` (attempts of one subscription; the attempt number
    /// starts again at 1 for a task queued after failing elsewhere) and
    /// wakes this process's dispatcher.
    pub async fn enqueue(
        &self,
        subscription_id: &str,
        tasks: &[&DeliveryTask],
    ) -> redis::RedisResult<()> {
        let mut invocation = self.enqueue.prepare_invoke();
        invocation
            .key(self.keys.queue(subscription_id))
            .key(self.keys.ready())
            .arg(subscription_id)
            .arg(Utc::now().timestamp_millis());
        for task in tasks {
            invocation
                .arg(task.seq)
                .arg(member(task.seq, task.first_attempt_ms));
        }
        let mut redis = self.redis.clone();
        let _: i64 = invocation.invoke_async(&mut redis).await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Subscriptions whose head may go now, of those not in `skip`, each
    /// locked for `owner` (those another dispatcher holds are left out).
    async fn claim_ready(
        &self,
        owner: &str,
        skip: &HashSet<String>,
    ) -> redis::RedisResult<Vec<String>> {
        let mut redis = self.redis.clone();
        let ready: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.ready())
            .arg("-inf")
            .arg(Utc::now().timestamp_millis())
            .arg("LIMIT")
            .arg(0)
            .arg(READY_BATCH)
            .query_async(&mut redis)
            .await?;
        let ready: Vec<String> = ready.into_iter().filter(|s| !skip.contains(s)).collect();
        if ready.is_empty() {
            return Ok(ready);
        }
        let mut pipe = redis::pipe();
        for subscription in &ready {
            pipe.cmd("SET")
                .arg(self.keys.lock(subscription))
                .arg(owner)
                .arg("NX")
                .arg("PX")
                .arg(LOCK_TTL.as_millis() as u64);
        }
        let locked: Vec<Option<String>> = pipe.query_async(&mut redis).await?;
        Ok(ready
            .into_iter()
            .zip(locked)
            .filter_map(|(subscription, ok)| ok.map(|_| subscription))
            .collect())
    }

    /// The head of a queue this `owner` holds.
    pub async fn head(&self, subscription_id: &str, owner: &str) -> redis::RedisResult<Head> {
        loop {
            let mut redis = self.redis.clone();
            let reply: Vec<String> = self
                .take
                .key(self.keys.queue(subscription_id))
                .key(self.keys.ready())
                .key(self.keys.lock(subscription_id))
                .key(self.keys.taken())
                .key(self.keys.attempts())
                .arg(owner)
                .arg(LOCK_TTL.as_millis() as u64)
                .arg(subscription_id)
                .invoke_async(&mut redis)
                .await?;
            return match reply.first().map(String::as_str) {
                Some("head") if reply.len() == 4 => {
                    let member = reply[1].clone();
                    let Some((seq, first_attempt_ms)) = parse_member(&member) else {
                        // Not one this code wrote: dropped, and the next one is the head.
                        tracing::error!(%member, subscription = subscription_id, "unreadable ordered task dropped");
                        self.settle(subscription_id, owner, &member, Settle::Done)
                            .await?;
                        continue;
                    };
                    let taken: i64 = reply[3].parse().unwrap_or(-1);
                    Ok(Head::Next(QueuedTask {
                        attempt: attempt_of(&reply[2], seq),
                        late_after: (taken > seq as i64).then_some(taken as u64),
                        member,
                        seq,
                        first_attempt_ms,
                    }))
                }
                Some("empty") => Ok(Head::Empty),
                _ => Ok(Head::Lost),
            };
        }
    }

    /// Settles the head `member` of a queue.
    pub async fn settle(
        &self,
        subscription_id: &str,
        owner: &str,
        member: &str,
        settle: Settle,
    ) -> redis::RedisResult<()> {
        let (action, at, state) = match settle {
            Settle::Done => ("done", 0, String::new()),
            Settle::Retry(at, attempt) => {
                let seq = parse_member(member).map_or(0, |(seq, _)| seq);
                ("retry", at.timestamp_millis(), format!("{seq}:{attempt}"))
            }
            Settle::Later(at) => ("later", at.timestamp_millis(), String::new()),
        };
        let mut redis = self.redis.clone();
        let _: i64 = self
            .settle
            .key(self.keys.queue(subscription_id))
            .key(self.keys.ready())
            .key(self.keys.lock(subscription_id))
            .key(self.keys.attempts())
            .arg(owner)
            .arg(subscription_id)
            .arg(member)
            .arg(action)
            .arg(at)
            .arg(state)
            .invoke_async(&mut redis)
            .await?;
        Ok(())
    }

    async fn renew(&self, subscription_id: &str, owner: &str) -> redis::RedisResult<bool> {
        let mut redis = self.redis.clone();
        let renewed: i64 = self
            .renew
            .key(self.keys.lock(subscription_id))
            .arg(owner)
            .arg(LOCK_TTL.as_millis() as u64)
            .invoke_async(&mut redis)
            .await?;
        Ok(renewed == 1)
    }
}

/// A queue's lock while its head is sent: renewed as a message's lease is
/// ([`keep_alive`]).
struct QueueLock<'a> {
    queues: &'a OrderedQueues,
    subscription_id: &'a str,
    owner: &'a str,
}

impl Progress for QueueLock<'_> {
    async fn progress(&self) {
        if let Err(error) = self.queues.renew(self.subscription_id, self.owner).await {
            tracing::warn!(subscription = self.subscription_id, %error, "cannot renew an ordered queue's lock");
        }
    }
}

impl Dispatcher {
    /// Drains ordered queues until `shutdown`: every poll (or wake-up),
    /// locks those whose head may go and sends each one's tasks in order.
    pub async fn run_ordered(self: Arc<Self>, shutdown: CancellationToken) {
        let owner = format!("{}", ulid::Ulid::new());
        let driving: Arc<Mutex<HashSet<String>>> = Default::default();
        let mut failures = hookrelay_core::failure::Backoff::up_to(Duration::from_secs(5));
        let mut pause = POLL;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.ordered.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
            let skip = driving.lock().expect("not poisoned").clone();
            match self.ordered.claim_ready(&owner, &skip).await {
                Ok(claimed) => {
                    failures.succeeded();
                    self.transients.recovered(POLLER, Dependency::Redis);
                    pause = POLL;
                    for subscription in claimed {
                        driving
                            .lock()
                            .expect("not poisoned")
                            .insert(subscription.clone());
                        let dispatcher = self.clone();
                        let owner = owner.clone();
                        let driving = driving.clone();
                        self.tracker.spawn(async move {
                            dispatcher.drive(&subscription, &owner).await;
                            driving.lock().expect("not poisoned").remove(&subscription);
                        });
                    }
                }
                Err(error) => {
                    self.transients.failed(POLLER, Dependency::Redis);
                    tracing::warn!(%error, "cannot read the ordered queues");
                    pause = failures.failed();
                }
            }
        }
    }

    /// Sends the tasks of one locked queue in order until it is empty, its
    /// head must wait, or the lock is lost.
    async fn drive(self: &Arc<Self>, subscription_id: &str, owner: &str) {
        let mut transient = 0;
        loop {
            if self.tracker.is_closed() {
                // Shutting down: give the queue back now rather than when
                // the lock lapses.
                let now = Settle::Later(Utc::now());
                let _ = self.ordered.settle(subscription_id, owner, "", now).await;
                return;
            }
            let head = match self.ordered.head(subscription_id, owner).await {
                Ok(Head::Next(head)) => head,
                Ok(Head::Empty | Head::Lost) => return,
                Err(error) => {
                    // The lock lapses and another round takes the queue up.
                    self.transients.failed(COMPONENT, Dependency::Redis);
                    tracing::warn!(subscription = subscription_id, %error, "cannot read an ordered queue");
                    return;
                }
            };
            let (settled, heard) = oneshot::channel();
            let lease = Lease::Ordered {
                settled,
                late_after: head.late_after,
            };
            let task = head.task(subscription_id);
            let run = self.clone().run_task(task, lease);
            let lock = QueueLock {
                queues: &self.ordered,
                subscription_id,
                owner,
            };
            keep_alive(&lock, LOCK_TTL, run).await;
            let outcome = heard.await.unwrap_or(Ordered::Later);
            let settle = match outcome {
                Ordered::Done => {
                    transient = 0;
                    Settle::Done
                }
                Ordered::RetryAt(at) => Settle::Retry(at, head.attempt + 1),
                Ordered::Later => {
                    transient += 1;
                    let wait = backoff(transient);
                    Settle::Later(Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default())
                }
                Ordered::HeldBack(wait) => {
                    Settle::Later(Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default())
                }
            };
            if let Err(error) = self
                .ordered
                .settle(subscription_id, owner, &head.member, settle)
                .await
            {
                // Sent but not marked: it goes again once the lock lapses
                // (at least once).
                self.transients.failed(COMPONENT, Dependency::Redis);
                tracing::warn!(subscription = subscription_id, %error, "cannot settle an ordered task; it will be sent again");
                return;
            }
            if settle != Settle::Done {
                return;
            }
        }
    }

    /// Queues a task of an ordered subscription that came another way (a
    /// retry scheduled before it was ordered, a redelivery) behind the
    /// others, settling `lease` once it is stored.
    pub(crate) async fn enqueue_ordered(&self, task: &DeliveryTask, lease: Lease) {
        match self.ordered.enqueue(&task.subscription_id, &[task]).await {
            Ok(()) => {
                self.transients.recovered(COMPONENT, Dependency::Redis);
                lease.done().await
            }
            Err(error) => {
                self.transients.failed(COMPONENT, Dependency::Redis);
                tracing::warn!(%error, "cannot queue an ordered delivery; it will be tried again");
                lease.retry().await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_fixed_per_event_and_read_back() {
        let m = member(123_456, 1_700_000_000_000);
        assert_eq!(parse_member(&m), Some((123_456, 1_700_000_000_000)));
        assert_eq!(m, member(123_456, 1_700_000_000_000));
        assert_eq!(parse_member("x"), None);
    }

    #[test]
    fn a_failed_heads_attempt_counts_only_for_that_head() {
        assert_eq!(attempt_of("", 5), 1);
        assert_eq!(attempt_of("5:3", 5), 3);
        assert_eq!(attempt_of("4:3", 5), 1);
    }
}
