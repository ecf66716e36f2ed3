//! Who holds a delivery task while it is worked on, and how they hear that
//! it is settled: a DELIVERIES message is acked or NAKed with backoff; a
//! task handed over in process tells the ingestor, which acks the event
//! (or queues the task in DELIVERIES) itself.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{AckKind, Message};
use hookrelay_core::failure::backoff;
use hookrelay_core::nats::detach;
use tokio::sync::oneshot;

/// How an in-process delivery ended, as its ingestor hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Succeeded, durably scheduled for a retry, or given up; its attempt
    /// record is stored.
    Done,
    /// Could not be settled here (a dependency failed): the task must be
    /// queued durably (DELIVERIES) before the event is acked.
    Spill,
}

/// How the head of an ordered queue ended, as its driver hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ordered {
    /// Delivered or given up, its attempt record stored: the next one goes.
    Done,
    /// Failed; the next attempt is due then.
    RetryAt(chrono::DateTime<chrono::Utc>),
    /// A dependency failed: the same attempt again after a backoff.
    Later,
    /// Not sent (open circuit, tenant at its cap): the same attempt after
    /// this long.
    HeldBack(Duration),
}

/// The holder of one task. (An acker carries a JetStream context, but a
/// lease lives once per delivery and moves a few times: boxing it would
/// cost an allocation.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Lease {
    /// A message of DELIVERIES, by its acker only (see
    /// [`hookrelay_core::nats::detach`]), delivered this many times.
    Stream { acker: Acker, delivered: i64 },
    /// Handed over in process by the ingestor.
    Local(oneshot::Sender<Settled>),
    /// The head of an ordered queue (`ordered.rs`), sent by the queue's
    /// driver, which settles it in Redis. `late_after`: a later event of
    /// the subscription (this sequence) went out before this one arrived.
    Ordered {
        settled: oneshot::Sender<Ordered>,
        late_after: Option<u64>,
    },
}

impl Lease {
    /// The lease of a DELIVERIES message, which can then be dropped.
    pub(crate) fn of(message: Message) -> Self {
        let (acker, delivered) = detach(message);
        Lease::Stream { acker, delivered }
    }

    /// The task is settled: ack it.
    pub(crate) async fn done(self) {
        match self {
            Lease::Stream { acker, .. } => {
                if let Err(error) = acker.ack().await {
                    tracing::warn!(%error, "delivery task ack failed; it will be redelivered");
                }
            }
            Lease::Local(settled) => {
                let _ = settled.send(Settled::Done);
            }
            Lease::Ordered { settled, .. } => {
                let _ = settled.send(Ordered::Done);
            }
        }
    }

    /// An attempt was made and recorded; `next_attempt_at` when it is to
    /// be retried (already scheduled, unless this is an ordered head).
    pub(crate) async fn attempted(self, next_attempt_at: Option<chrono::DateTime<chrono::Utc>>) {
        match (self, next_attempt_at) {
            (Lease::Ordered { settled, .. }, Some(at)) => {
                let _ = settled.send(Ordered::RetryAt(at));
            }
            (lease, _) => lease.done().await,
        }
    }

    /// An ordered head that was not sent now: it waits `wait`, ahead of
    /// the rest. (Only for [`Lease::Ordered`]; any other lease is done.)
    pub(crate) async fn held_back(self, wait: Duration) {
        match self {
            Lease::Ordered { settled, .. } => {
                let _ = settled.send(Ordered::HeldBack(wait));
            }
            lease => lease.done().await,
        }
    }

    /// Whether this is the head of an ordered queue.
    pub(crate) fn is_ordered(&self) -> bool {
        matches!(self, Lease::Ordered { .. })
    }

    /// A transient failure: try the task again later, never at a fixed
    /// interval (the delay doubles with each delivery, up to 10 s).
    pub(crate) async fn retry(self) {
        match self {
            Lease::Stream { acker, delivered } => {
                if let Err(error) = acker.ack_with(AckKind::Nak(Some(backoff(delivered)))).await {
                    tracing::warn!(%error, "delivery task nak failed");
                }
            }
            Lease::Local(settled) => {
                let _ = settled.send(Settled::Spill);
            }
            Lease::Ordered { settled, .. } => {
                let _ = settled.send(Ordered::Later);
            }
        }
    }

    /// Runs `work`, telling JetStream meanwhile that the task is still
    /// being worked on, so a long wait for a permit or a slow receiver does
    /// not trigger a redelivery. (An in-process task's event is kept alive
    /// by its ingestor.)
    pub(crate) async fn with_progress<T>(
        &self,
        ack_wait: Duration,
        work: impl Future<Output = T>,
    ) -> T {
        match self {
            Lease::Stream { acker, .. } => keep_alive(acker, ack_wait, work).await,
            Lease::Local(_) | Lease::Ordered { .. } => work.await,
        }
    }
}

/// Something that tells JetStream a message is still being worked on (an
/// acker: it keeps no payload).
pub trait Progress {
    fn progress(&self) -> impl Future<Output = ()> + Send;
}

impl Progress for Acker {
    async fn progress(&self) {
        let _ = self.ack_with(AckKind::Progress).await;
    }
}

/// Runs `work`, sending progress acks for `message` every third of `ack_wait`.
pub async fn keep_alive<T>(
    message: &impl Progress,
    ack_wait: Duration,
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(ack_wait / 3);
    ticker.tick().await;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticker.tick() => message.progress().await,
        }
    }
}
