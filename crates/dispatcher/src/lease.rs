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
        }
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
            Lease::Local(_) => work.await,
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
