//! Fair sharing of the dispatcher's request slots across tenants and, within
//! a tenant, across its subscriptions.
//!
//! A task first takes its subscription's own permit (`limits.rs`, sized by
//! `max_in_flight`), then one of these slots. A tenant holds at most
//! `limits.max_in_flight_per_tenant` of them, so a tenant whose endpoints
//! hang keeps only that many: the rest serve everyone else. When the slots
//! run out, waiters are served round robin: a tenant at a time, and within
//! it a subscription at a time (deficit round robin with one slot as the
//! quantum), so a tenant with a thousand tasks queued gets no more turns
//! than one with a single task.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The shared slots.
pub struct FairGate {
    state: Mutex<State>,
}

struct State {
    available: usize,
    tenant_cap: usize,
    tenants: HashMap<String, Tenant>,
    /// Tenants with waiters, in turn order.
    turns: VecDeque<String>,
}

#[derive(Default)]
struct Tenant {
    held: usize,
    /// Tasks taken in and not finished: waiting anywhere, or in flight.
    in_hand: usize,
    /// Waiters by subscription.
    waiting: HashMap<String, VecDeque<oneshot::Sender<()>>>,
    /// Subscriptions with waiters, in turn order.
    turns: VecDeque<String>,
}

impl Tenant {
    fn has_waiters(&self) -> bool {
        !self.turns.is_empty()
    }

    fn idle(&self) -> bool {
        self.held == 0 && self.in_hand == 0 && !self.has_waiters()
    }

    /// The next waiter in turn, its subscription moved to the back.
    fn next_waiter(&mut self) -> Option<oneshot::Sender<()>> {
        while let Some(subscription) = self.turns.pop_front() {
            let queue = self.waiting.get_mut(&subscription)?;
            let waiter = queue.pop_front();
            if queue.is_empty() {
                self.waiting.remove(&subscription);
            } else {
                self.turns.push_back(subscription);
            }
            if waiter.is_some() {
                return waiter;
            }
        }
        None
    }
}

/// One slot, given back when dropped.
pub struct FairPermit {
    gate: Arc<FairGate>,
    tenant: String,
}

impl Drop for FairPermit {
    fn drop(&mut self) {
        self.gate.release(&self.tenant);
    }
}

/// A task of a tenant taken in by the dispatcher, until it is done.
pub struct InHand {
    gate: Arc<FairGate>,
    tenant: String,
}

impl Drop for InHand {
    fn drop(&mut self) {
        let mut state = self.gate.state.lock().expect("fair gate lock");
        if let Some(entry) = state.tenants.get_mut(&self.tenant) {
            entry.in_hand = entry.in_hand.saturating_sub(1);
            if entry.idle() {
                state.tenants.remove(&self.tenant);
            }
        }
    }
}

/// A waiter whose future was dropped: a slot granted to it meanwhile is
/// given back.
struct Waiting<'a> {
    gate: &'a Arc<FairGate>,
    tenant: &'a str,
    granted: Option<oneshot::Receiver<()>>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(mut granted) = self.granted.take() {
            // Closed first: a grant after this fails, and is taken back by
            // the granter, under the lock.
            granted.close();
            if granted.try_recv().is_ok() {
                self.gate.release(self.tenant);
            }
        }
    }
}

impl FairGate {
    /// `slots` in all, at most `tenant_cap` held by one tenant.
    pub fn new(slots: usize, tenant_cap: usize) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                available: slots,
                tenant_cap: tenant_cap.max(1),
                tenants: HashMap::new(),
                turns: VecDeque::new(),
            }),
        })
    }

    /// Takes in a task of `tenant`, unless the tenant already has
    /// `1 + per_slot` tasks per slot of its cap in hand (waiting or in
    /// flight): such a task should wait in the schedule, not here, where it
    /// would hold what other tenants' tasks need (hand-over places, the
    /// delivery consumer's window).
    pub fn enter(self: &Arc<Self>, tenant: &str, per_slot: usize) -> Option<InHand> {
        let mut state = self.state.lock().expect("fair gate lock");
        let most = state.tenant_cap * (1 + per_slot);
        let entry = state.tenants.entry(tenant.to_owned()).or_default();
        if entry.in_hand >= most {
            return None;
        }
        entry.in_hand += 1;
        Some(InHand {
            gate: self.clone(),
            tenant: tenant.to_owned(),
        })
    }

    /// Waits for a slot for a task of `subscription` of `tenant`.
    pub async fn acquire(self: &Arc<Self>, tenant: &str, subscription: &str) -> FairPermit {
        let granted = {
            let mut state = self.state.lock().expect("fair gate lock");
            let cap = state.tenant_cap;
            let free = state.available > 0;
            let entry = state.tenants.entry(tenant.to_owned()).or_default();
            if free && entry.held < cap && !entry.has_waiters() {
                entry.held += 1;
                state.available -= 1;
                return self.permit(tenant);
            }
            let (grant, granted) = oneshot::channel();
            let first = !entry.has_waiters();
            match entry.waiting.get_mut(subscription) {
                Some(queue) => queue.push_back(grant),
                None => {
                    entry
                        .waiting
                        .insert(subscription.to_owned(), VecDeque::from([grant]));
                    entry.turns.push_back(subscription.to_owned());
                }
            }
            if first {
                state.turns.push_back(tenant.to_owned());
            }
            granted
        };
        let mut waiting = Waiting {
            gate: self,
            tenant,
            granted: Some(granted),
        };
        let granted = waiting.granted.as_mut().expect("set above");
        // The gate drops a waiter's sender only by granting it, and this
        // future keeps the gate alive.
        granted
            .await
            .expect("fair gate waiters are granted, never dropped");
        waiting.granted = None;
        self.permit(tenant)
    }

    fn permit(self: &Arc<Self>, tenant: &str) -> FairPermit {
        FairPermit {
            gate: self.clone(),
            tenant: tenant.to_owned(),
        }
    }

    /// Slots held by `tenant` now.
    pub fn held(&self, tenant: &str) -> usize {
        let state = self.state.lock().expect("fair gate lock");
        state.tenants.get(tenant).map_or(0, |t| t.held)
    }

    fn release(&self, tenant: &str) {
        let mut state = self.state.lock().expect("fair gate lock");
        state.available += 1;
        if let Some(entry) = state.tenants.get_mut(tenant) {
            entry.held = entry.held.saturating_sub(1);
            if entry.idle() {
                state.tenants.remove(tenant);
            }
        }
        state.hand_out();
    }
}

impl State {
    /// Gives free slots to waiters, a tenant at a time, skipping tenants at
    /// their cap (they keep their turn for when they are under it again).
    fn hand_out(&mut self) {
        let mut passes = self.turns.len();
        while self.available > 0 && passes > 0 {
            let Some(name) = self.turns.pop_front() else {
                return;
            };
            passes -= 1;
            let Some(tenant) = self.tenants.get_mut(&name) else {
                continue;
            };
            if tenant.held >= self.tenant_cap {
                self.turns.push_back(name);
                continue;
            }
            // Waiters whose futures were dropped are skipped.
            while let Some(waiter) = tenant.next_waiter() {
                if waiter.send(()).is_ok() {
                    tenant.held += 1;
                    self.available -= 1;
                    // Served: another tenant may take the next slot.
                    passes = self.turns.len() + 1;
                    break;
                }
            }
            if tenant.has_waiters() {
                self.turns.push_back(name);
            } else if tenant.idle() {
                self.tenants.remove(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Spawns a waiter that reports its label once it has a slot, and
    /// keeps the slot until the test ends.
    fn waiter(
        gate: &Arc<FairGate>,
        tenant: &'static str,
        subscription: &'static str,
        granted: tokio::sync::mpsc::UnboundedSender<(&'static str, FairPermit)>,
    ) -> tokio::task::JoinHandle<()> {
        let gate = gate.clone();
        tokio::spawn(async move {
            let permit = gate.acquire(tenant, subscription).await;
            let _ = granted.send((subscription, permit));
        })
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn a_tenant_never_holds_more_than_its_cap() {
        let gate = FairGate::new(10, 3);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(gate.acquire("a", "s1").await);
        }
        let blocked =
            tokio::time::timeout(Duration::from_millis(50), gate.acquire("a", "s2")).await;
        assert!(blocked.is_err(), "a fourth slot of tenant a must wait");
        // Another tenant is not held up by a's cap.
        let other = tokio::time::timeout(Duration::from_millis(50), gate.acquire("b", "s3")).await;
        assert!(other.is_ok());
        assert_eq!(gate.held("a"), 3);
        drop(held.pop());
        let next = tokio::time::timeout(Duration::from_secs(1), gate.acquire("a", "s2")).await;
        assert!(
            next.is_ok(),
            "a slot given back lets the tenant's next task in"
        );
    }

    #[tokio::test]
    async fn waiters_are_served_a_tenant_and_a_subscription_at_a_time() {
        let gate = FairGate::new(1, 10);
        let first = gate.acquire("a", "busy").await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Tenant a queues six tasks of one subscription before anyone else.
        let mut tasks = Vec::new();
        for _ in 0..6 {
            tasks.push(waiter(&gate, "a", "busy", tx.clone()));
            settle().await;
        }
        tasks.push(waiter(&gate, "a", "quiet", tx.clone()));
        settle().await;
        tasks.push(waiter(&gate, "b", "other", tx.clone()));
        settle().await;
        drop(first);
        let mut order = Vec::new();
        for _ in 0..4 {
            let (label, permit) = tokio::time::timeout(Duration::from_secs(1), rx.recv())
                .await
                .expect("a slot is handed on")
                .expect("waiter alive");
            order.push(label);
            drop(permit);
        }
        // a (busy), then b, then a again, whose next turn is its quieter
        // subscription, then b has nothing left and a's busy goes on.
        assert_eq!(order, ["busy", "other", "quiet", "busy"]);
        for task in tasks {
            task.abort();
        }
    }

    #[test]
    fn a_tenant_takes_in_at_most_its_share_of_tasks() {
        let gate = FairGate::new(8, 2);
        // Cap 2, one waiting per slot: four in hand.
        let held: Vec<InHand> = (0..4).map(|_| gate.enter("a", 1).expect("room")).collect();
        assert!(gate.enter("a", 1).is_none());
        assert!(gate.enter("b", 1).is_some(), "per tenant");
        drop(held);
        assert!(gate.enter("a", 1).is_some());
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_neither_loses_nor_keeps_a_slot() {
        let gate = FairGate::new(1, 10);
        let held = gate.acquire("a", "s").await;
        let abandoned = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _permit = gate.acquire("b", "s").await;
                std::future::pending::<()>().await;
            })
        };
        settle().await;
        abandoned.abort();
        let _ = abandoned.await;
        drop(held);
        let again = tokio::time::timeout(Duration::from_secs(1), gate.acquire("c", "s")).await;
        assert!(again.is_ok(), "the slot came back");
        assert_eq!(gate.held("b"), 0);
    }
}
