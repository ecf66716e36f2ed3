//! What kind a failure is, so callers can branch on it: a permanent fault
//! ends a delivery (a final attempt record and a DLQ entry with the reason),
//! a transient one is retried with capped backoff, counted, and shown in
//! `/readyz` until the dependency answers again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::{IntCounterVec, Opts, Registry};

use crate::health::{Flag, Health};

/// Whether trying again can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The same input fails the same way: too large, unreadable, a template
    /// that cannot render, an event that left the stream.
    Permanent,
    /// A dependency (NATS, Redis, the network) did not answer: try again later.
    Transient,
}

/// Redelivery delay after the `delivered`-th failed try of a message: 1 s,
/// doubling with each delivery, at most [`MAX_BACKOFF`]. Never a fixed
/// interval: a dependency that stays down is asked less and less often; and
/// capped low enough that work resumes soon after it is back (a message
/// that failed through a NATS restart once waited up to a minute).
pub fn backoff(delivered: i64) -> Duration {
    let doublings = delivered.saturating_sub(1).clamp(0, 6) as u32;
    Duration::from_secs(1 << doublings).min(MAX_BACKOFF)
}

/// The longest redelivery delay of [`backoff`].
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Pauses between tries of a loop whose step keeps failing (a consumer
/// restarting, a dependency polled): [`backoff`], at most `max`, back to
/// the shortest after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    failures: i64,
    max: Duration,
}

impl Backoff {
    pub fn up_to(max: Duration) -> Self {
        Self { failures: 0, max }
    }

    /// The pause after one more failure.
    pub fn failed(&mut self) -> Duration {
        self.failures += 1;
        backoff(self.failures).min(self.max)
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

/// Dependencies a transient failure can come from: bounded metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dependency {
    Nats,
    Redis,
}

impl Dependency {
    pub fn as_str(self) -> &'static str {
        match self {
            Dependency::Nats => "nats",
            Dependency::Redis => "redis",
        }
    }
}

/// Counts transient failures as `hookrelay_transient_errors_total{component,
/// dependency}` and keeps a readiness check per pair that fails from the
/// first failure until the next success.
#[derive(Clone)]
pub struct Transients {
    counter: IntCounterVec,
    health: Health,
    flags: Arc<Mutex<HashMap<(&'static str, Dependency), Flag>>>,
    /// Pairs failing now: while none is, a success costs one atomic load
    /// (it is reported once per delivery), not the lock.
    failing: Arc<AtomicUsize>,
}

impl Transients {
    /// Registers the counter on `registry`; checks go to `health`.
    pub fn register(registry: &Registry, health: &Health) -> prometheus::Result<Self> {
        let counter = IntCounterVec::new(
            Opts::new(
                "hookrelay_transient_errors_total",
                "Operations that failed because NATS or Redis did not answer, retried with backoff",
            ),
            &["component", "dependency"],
        )?;
        registry.register(Box::new(counter.clone()))?;
        Ok(Self {
            counter,
            health: health.clone(),
            flags: Arc::default(),
            failing: Arc::default(),
        })
    }

    /// `component` could not reach `dependency`.
    pub fn failed(&self, component: &'static str, dependency: Dependency) {
        self.counter
            .with_label_values(&[component, dependency.as_str()])
            .inc();
        let mut flags = self.flags.lock().expect("transient flags lock");
        let flag = flags.entry((component, dependency)).or_insert_with(|| {
            let flag = Flag::default();
            flag.set(true);
            let read = flag.clone();
            self.health.check(
                format!("{} ({component})", dependency.as_str()),
                move || read.get(),
            );
            flag
        });
        if flag.get() {
            flag.set(false);
            self.failing.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `component` reached `dependency` again.
    pub fn recovered(&self, component: &'static str, dependency: Dependency) {
        if self.failing.load(Ordering::Relaxed) == 0 {
            return;
        }
        let flags = self.flags.lock().expect("transient flags lock");
        if let Some(flag) = flags.get(&(component, dependency)) {
            if !flag.get() {
                flag.set(true);
                self.failing.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        let delays: Vec<u64> = (0..10).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(delays, [1, 1, 2, 4, 8, 10, 10, 10, 10, 10]);
    }

    #[test]
    fn loops_back_off_up_to_their_cap_and_start_over_after_a_success() {
        let mut pause = Backoff::up_to(Duration::from_secs(5));
        let delays: Vec<u64> = (0..5).map(|_| pause.failed().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        pause.succeeded();
        assert_eq!(pause.failed(), Duration::from_secs(1));
    }

    #[test]
    fn a_failing_dependency_is_not_ready_until_it_recovers() {
        let registry = Registry::new();
        let health = Health::default();
        let transients = Transients::register(&registry, &health).unwrap();
        assert!(health.report().0);
        transients.failed("ingestor", Dependency::Redis);
        assert_eq!(
            health.report(),
            (false, vec!["redis (ingestor)".to_owned()])
        );
        transients.recovered("ingestor", Dependency::Redis);
        assert!(health.report().0);
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(text.contains(
            r#"hookrelay_transient_errors_total{component="ingestor",dependency="redis"} 1"#
        ));
    }
}
