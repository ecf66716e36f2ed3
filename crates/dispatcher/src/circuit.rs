//! Circuit breaking per subscription (states and keys: `core::circuit`).
//!
//! Each dispatcher keeps its subscriptions' circuits in memory, decides from
//! them whether a task is sent, sent as the probe, or held, and writes every
//! transition to Redis, where the other replicas and the log service read
//! it. A held task is a retry-schedule member in the subscription's held
//! set: it costs one write and is not looked at again until the circuit
//! closes, when the whole set moves back into the schedule. While open, the
//! scheduler nudges one held task out when a probe is due, so a circuit
//! whose subscription gets no new events still probes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hookrelay_core::circuit::{CircuitKeys, CircuitLimits, CircuitRecord, CircuitState};
use hookrelay_core::redis::Redis;

/// A probe that has not reported for this long is taken as lost (its task
/// ended without a request), and the next task probes instead.
const PROBE_LOST: Duration = Duration::from_secs(330);
/// Held tasks moved back into the schedule per round trip.
const RELEASE_BATCH: usize = 1000;

/// Moves up to ARGV[2] members of KEYS[1] (a held set) into KEYS[2] (the
/// retry schedule) due at ARGV[1]; returns how many moved.
const RELEASE: &str = r#"
local members = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
for _, member in ipairs(members) do
  redis.call('ZADD', KEYS[2], ARGV[1], member)
end
if #members > 0 then redis.call('ZREM', KEYS[1], unpack(members)) end
return #members
"#;

/// What to do with a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Send,
    /// Send it: it is the probe of an open circuit.
    Probe,
    /// Hold it until the circuit closes.
    Hold,
}

/// What an outcome changed, to be written to Redis.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Nothing to write.
    None,
    /// The circuit entered `record.state`.
    Entered(CircuitRecord),
    /// Still failing, or open again after a failed probe: the record to store.
    Updated(CircuitRecord),
    /// Healthy again: forget the record, release the held tasks.
    Closed,
    /// Failing for longer than `disable_after`: disable the subscription.
    Disable(CircuitRecord),
}

#[derive(Debug, Clone)]
struct Circuit {
    state: CircuitState,
    consecutive: u32,
    failing_since: DateTime<Utc>,
    opened_at: Option<DateTime<Utc>>,
    next_probe_at: Option<DateTime<Utc>>,
    interval: Duration,
    probe_started: Option<DateTime<Utc>>,
}

impl Circuit {
    fn record(&self) -> CircuitRecord {
        CircuitRecord {
            state: self.state,
            consecutive_failures: self.consecutive,
            failing_since: self.failing_since,
            opened_at: self.opened_at,
            next_probe_at: self.next_probe_at,
            probe_interval: self.interval,
        }
    }

    fn open(&mut self, now: DateTime<Utc>, interval: Duration) {
        self.state = CircuitState::Open;
        self.opened_at.get_or_insert(now);
        self.interval = interval;
        self.next_probe_at = Some(now + chrono::Duration::from_std(interval).unwrap_or_default());
        self.probe_started = None;
    }
}

/// The circuits of this dispatcher's subscriptions.
pub struct Circuits {
    keys: CircuitKeys,
    schedule_key: String,
    redis: Redis,
    server: CircuitLimits,
    /// The states, in memory.
    pub machine: Machine,
    release: redis::Script,
}

/// The circuits' state machine, in memory.
#[derive(Default)]
pub struct Machine {
    circuits: Mutex<HashMap<String, Circuit>>,
    /// Circuits not healthy: while zero, a success takes no lock.
    unhealthy: AtomicUsize,
}

impl Circuits {
    pub fn new(
        keys: CircuitKeys,
        schedule_key: String,
        redis: Redis,
        server: CircuitLimits,
    ) -> Self {
        Self {
            keys,
            schedule_key,
            redis,
            server,
            machine: Machine::default(),
            release: redis::Script::new(RELEASE),
        }
    }

    /// The server's thresholds with `spec`'s.
    pub fn limits(&self, spec: Option<&hookrelay_core::circuit::CircuitSpec>) -> CircuitLimits {
        self.server.with(spec)
    }
}

impl Machine {
    /// Whether a task of `subscription_id` is sent now.
    pub fn admit(&self, subscription_id: &str, now: DateTime<Utc>) -> Admit {
        if self.unhealthy.load(Ordering::Acquire) == 0 {
            return Admit::Send;
        }
        let mut circuits = self.circuits.lock().expect("circuits lock");
        let Some(circuit) = circuits.get_mut(subscription_id) else {
            return Admit::Send;
        };
        match circuit.state {
            CircuitState::Healthy | CircuitState::Failing => Admit::Send,
            CircuitState::Open if circuit.next_probe_at.is_none_or(|at| at <= now) => {
                circuit.state = CircuitState::HalfOpen;
                circuit.probe_started = Some(now);
                Admit::Probe
            }
            CircuitState::Open => Admit::Hold,
            CircuitState::HalfOpen => {
                let lost = circuit.probe_started.is_none_or(|started| {
                    now - started > chrono::Duration::from_std(PROBE_LOST).unwrap_or_default()
                });
                if lost {
                    circuit.probe_started = Some(now);
                    Admit::Probe
                } else {
                    Admit::Hold
                }
            }
        }
    }

    /// Counts an attempt whose request was sent (or could not be: refused
    /// connections, timeouts) under `limits`.
    pub fn outcome(
        &self,
        subscription_id: &str,
        limits: CircuitLimits,
        success: bool,
        now: DateTime<Utc>,
    ) -> Change {
        if success && self.unhealthy.load(Ordering::Acquire) == 0 {
            return Change::None;
        }
        let mut circuits = self.circuits.lock().expect("circuits lock");
        if success {
            return match circuits.remove(subscription_id) {
                Some(_) => {
                    self.unhealthy.fetch_sub(1, Ordering::AcqRel);
                    Change::Closed
                }
                None => Change::None,
            };
        }
        let circuit = circuits
            .entry(subscription_id.to_owned())
            .or_insert_with(|| {
                self.unhealthy.fetch_add(1, Ordering::AcqRel);
                Circuit {
                    state: CircuitState::Healthy,
                    consecutive: 0,
                    failing_since: now,
                    opened_at: None,
                    next_probe_at: None,
                    interval: limits.probe_after,
                    probe_started: None,
                }
            });
        circuit.consecutive = circuit.consecutive.saturating_add(1);
        let before = circuit.state;
        match before {
            CircuitState::HalfOpen => {
                let interval = (circuit.interval * 2).min(limits.probe_max);
                circuit.open(now, interval);
            }
            CircuitState::Open => {}
            CircuitState::Healthy | CircuitState::Failing => {
                if circuit.consecutive >= limits.open_after {
                    circuit.open(now, limits.probe_after);
                } else if circuit.consecutive >= limits.failing_after {
                    circuit.state = CircuitState::Failing;
                }
            }
        }
        let failing_for = (now - circuit.failing_since).to_std().unwrap_or_default();
        if !limits.disable_after.is_zero() && failing_for >= limits.disable_after {
            let record = circuit.record();
            circuits.remove(subscription_id);
            self.unhealthy.fetch_sub(1, Ordering::AcqRel);
            return Change::Disable(record);
        }
        let record = circuit.record();
        if record.state == CircuitState::Healthy {
            // Under failing_after: nothing anyone else needs to know yet.
            Change::None
        } else if before == record.state
            || (before == CircuitState::HalfOpen && record.state == CircuitState::Open)
        {
            Change::Updated(record)
        } else {
            Change::Entered(record)
        }
    }
}

impl Circuits {
    /// Writes `change` to Redis for `subscription_id`.
    pub async fn store(&self, subscription_id: &str, change: &Change) -> redis::RedisResult<()> {
        let hash = self.keys.circuit(subscription_id);
        let mut redis = self.redis.clone();
        match change {
            Change::None => Ok(()),
            Change::Entered(record) | Change::Updated(record) => {
                let mut pipe = redis::pipe();
                pipe.atomic();
                pipe.cmd("DEL").arg(&hash).ignore();
                pipe.cmd("HSET").arg(&hash);
                for (field, value) in record.to_fields() {
                    pipe.arg(field).arg(value);
                }
                pipe.ignore();
                match (record.state, record.next_probe_at) {
                    (CircuitState::Open | CircuitState::HalfOpen, Some(next)) => {
                        pipe.cmd("ZADD")
                            .arg(self.keys.open())
                            .arg(next.timestamp_millis())
                            .arg(subscription_id)
                            .ignore();
                    }
                    _ => {
                        pipe.cmd("ZREM")
                            .arg(self.keys.open())
                            .arg(subscription_id)
                            .ignore();
                    }
                }
                pipe.query_async(&mut redis).await
            }
            Change::Closed | Change::Disable(_) => {
                redis::pipe()
                    .atomic()
                    .cmd("DEL")
                    .arg(&hash)
                    .ignore()
                    .cmd("ZREM")
                    .arg(self.keys.open())
                    .arg(subscription_id)
                    .ignore()
                    .query_async::<()>(&mut redis)
                    .await?;
                self.release_all(subscription_id).await.map(drop)
            }
        }
    }

    /// Holds tasks (each a subscription and its retry-schedule member)
    /// until their circuits close, in one round trip.
    pub async fn hold(&self, held: &[(&str, String)]) -> redis::RedisResult<()> {
        let now = Utc::now().timestamp_millis();
        let mut pipe = redis::pipe();
        for (subscription_id, member) in held {
            pipe.cmd("ZADD")
                .arg(self.keys.held(subscription_id))
                .arg("NX")
                .arg(now)
                .arg(member)
                .ignore();
        }
        let mut redis = self.redis.clone();
        pipe.query_async(&mut redis).await
    }

    /// Moves every held task of `subscription_id` back into the schedule,
    /// due now; returns how many.
    pub async fn release_all(&self, subscription_id: &str) -> redis::RedisResult<u64> {
        let mut moved = 0;
        loop {
            let n = self.release_some(subscription_id, RELEASE_BATCH).await?;
            moved += n;
            if n < RELEASE_BATCH as u64 {
                return Ok(moved);
            }
        }
    }

    async fn release_some(&self, subscription_id: &str, most: usize) -> redis::RedisResult<u64> {
        let mut redis = self.redis.clone();
        self.release
            .key(self.keys.held(subscription_id))
            .key(&self.schedule_key)
            .arg(Utc::now().timestamp_millis())
            .arg(most)
            .invoke_async(&mut redis)
            .await
    }

    /// For every open circuit (any replica's): learns it, and when its
    /// probe is due moves one held task into the schedule to be the probe,
    /// and pushes the circuit's next nudge one interval out.
    pub async fn nudge(&self, now: DateTime<Utc>) -> redis::RedisResult<()> {
        let mut redis = self.redis.clone();
        let open: Vec<(String, i64)> = redis::cmd("ZRANGE")
            .arg(self.keys.open())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut redis)
            .await?;
        for (subscription_id, next_ms) in open {
            let interval = self
                .machine
                .learn(&subscription_id, next_ms, now, &self.server);
            if next_ms > now.timestamp_millis() {
                continue;
            }
            self.release_some(&subscription_id, 1).await?;
            let next = now.timestamp_millis() + interval.as_millis() as i64;
            redis::cmd("ZADD")
                .arg(self.keys.open())
                .arg("XX")
                .arg(next)
                .arg(&subscription_id)
                .query_async::<()>(&mut redis)
                .await?;
        }
        Ok(())
    }
}

impl Machine {
    /// Takes in an open circuit another replica (or an earlier run of this
    /// one) stored; returns its probe interval.
    fn learn(
        &self,
        subscription_id: &str,
        next_ms: i64,
        now: DateTime<Utc>,
        server: &CircuitLimits,
    ) -> Duration {
        let mut circuits = self.circuits.lock().expect("circuits lock");
        if let Some(circuit) = circuits.get(subscription_id) {
            return circuit.interval;
        }
        let next = DateTime::from_timestamp_millis(next_ms).unwrap_or(now);
        self.unhealthy.fetch_add(1, Ordering::AcqRel);
        circuits.insert(
            subscription_id.to_owned(),
            Circuit {
                state: CircuitState::Open,
                consecutive: server.open_after,
                failing_since: now,
                opened_at: Some(now),
                next_probe_at: Some(next),
                interval: server.probe_after,
                probe_started: None,
            },
        );
        server.probe_after
    }

    /// Whether `subscription_id`'s circuit is open or half-open.
    /// Whether [`Machine::admit`] would hold a task now, without changing
    /// anything (no probe is due, or one is in flight).
    pub fn holds(&self, subscription_id: &str, now: DateTime<Utc>) -> bool {
        if self.unhealthy.load(Ordering::Acquire) == 0 {
            return false;
        }
        let circuits = self.circuits.lock().expect("circuits lock");
        circuits
            .get(subscription_id)
            .is_some_and(|circuit| match circuit.state {
                CircuitState::Healthy | CircuitState::Failing => false,
                CircuitState::Open => circuit.next_probe_at.is_some_and(|at| at > now),
                CircuitState::HalfOpen => circuit.probe_started.is_some_and(|started| {
                    now - started <= chrono::Duration::from_std(PROBE_LOST).unwrap_or_default()
                }),
            })
    }

    pub fn is_open(&self, subscription_id: &str) -> bool {
        if self.unhealthy.load(Ordering::Acquire) == 0 {
            return false;
        }
        let circuits = self.circuits.lock().expect("circuits lock");
        circuits
            .get(subscription_id)
            .is_some_and(|c| matches!(c.state, CircuitState::Open | CircuitState::HalfOpen))
    }

    /// Subscriptions by circuit state, healthy ones left out.
    pub fn counts(&self) -> [(CircuitState, i64); 3] {
        let circuits = self.circuits.lock().expect("circuits lock");
        let count = |state| circuits.values().filter(|c| c.state == state).count() as i64;
        [
            (CircuitState::Failing, count(CircuitState::Failing)),
            (CircuitState::Open, count(CircuitState::Open)),
            (CircuitState::HalfOpen, count(CircuitState::HalfOpen)),
        ]
    }

    /// Forgets a deleted subscription's circuit.
    pub fn forget(&self, subscription_id: &str) {
        let mut circuits = self.circuits.lock().expect("circuits lock");
        if circuits.remove(subscription_id).is_some() {
            self.unhealthy.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> CircuitLimits {
        CircuitLimits {
            failing_after: 2,
            open_after: 3,
            probe_after: Duration::from_secs(5),
            probe_max: Duration::from_secs(12),
            disable_after: Duration::from_secs(3600),
        }
    }

    /// The state a failure moved the circuit into, if it changed.
    fn fail(machine: &Machine, at: DateTime<Utc>) -> Option<CircuitState> {
        match machine.outcome("s", limits(), false, at) {
            Change::Entered(record) => Some(record.state),
            Change::Updated(record) if record.state == CircuitState::Open => Some(record.state),
            _ => None,
        }
    }

    #[test]
    fn a_circuit_fails_opens_probes_backs_off_and_closes() {
        let machine = Machine::default();
        let t0 = Utc::now();
        let secs = |s: i64| t0 + chrono::Duration::seconds(s);
        assert_eq!(machine.admit("s", t0), Admit::Send);
        assert_eq!(fail(&machine, t0), None, "one failure: still healthy");
        assert_eq!(fail(&machine, secs(1)), Some(CircuitState::Failing));
        assert_eq!(machine.admit("s", secs(1)), Admit::Send);
        assert_eq!(fail(&machine, secs(2)), Some(CircuitState::Open));
        assert_eq!(machine.admit("s", secs(3)), Admit::Hold);
        assert_eq!(machine.admit("other", secs(3)), Admit::Send);
        assert_eq!(machine.admit("s", secs(7)), Admit::Probe, "probe after 5 s");
        assert_eq!(
            machine.admit("s", secs(7)),
            Admit::Hold,
            "one probe at a time"
        );
        // The probe fails: open again for twice as long (10 s).
        assert_eq!(fail(&machine, secs(8)), Some(CircuitState::Open));
        assert_eq!(machine.admit("s", secs(17)), Admit::Hold);
        assert_eq!(machine.admit("s", secs(18)), Admit::Probe);
        // And again: capped at probe_max (12 s).
        fail(&machine, secs(18));
        assert_eq!(machine.admit("s", secs(29)), Admit::Hold);
        assert_eq!(machine.admit("s", secs(30)), Admit::Probe);
        assert_eq!(
            machine.outcome("s", limits(), true, secs(30)),
            Change::Closed
        );
        assert_eq!(machine.admit("s", secs(30)), Admit::Send);
        assert_eq!(machine.outcome("s", limits(), true, secs(31)), Change::None);
        assert_eq!(machine.counts().map(|(_, n)| n), [0, 0, 0]);
    }

    #[test]
    fn failing_longer_than_disable_after_disables_unless_never() {
        let machine = Machine::default();
        let t0 = Utc::now();
        machine.outcome("s", limits(), false, t0);
        let later = t0 + chrono::Duration::seconds(3600);
        let change = machine.outcome("s", limits(), false, later);
        assert!(matches!(change, Change::Disable(_)), "{change:?}");
        assert_eq!(
            machine.admit("s", later),
            Admit::Send,
            "forgotten once disabled"
        );
        let never = CircuitLimits {
            disable_after: Duration::ZERO,
            ..limits()
        };
        machine.outcome("t", never, false, t0);
        let change = machine.outcome("t", never, false, t0 + chrono::Duration::days(30));
        assert!(!matches!(change, Change::Disable(_)), "{change:?}");
    }

    #[test]
    fn a_lost_probe_lets_another_task_probe() {
        let machine = Machine::default();
        let t0 = Utc::now();
        for _ in 0..3 {
            machine.outcome("s", limits(), false, t0);
        }
        let due = t0 + chrono::Duration::seconds(5);
        assert_eq!(machine.admit("s", due), Admit::Probe);
        assert_eq!(machine.admit("s", due), Admit::Hold);
        let lost =
            due + chrono::Duration::from_std(PROBE_LOST).unwrap() + chrono::Duration::seconds(1);
        assert_eq!(machine.admit("s", lost), Admit::Probe);
    }
}
