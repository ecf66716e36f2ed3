//! What the dispatcher stores besides deliveries: attempt records on
//! ATTEMPTS (never over the NATS max payload) and DLQ entries of
//! deliveries that were given up or could not be read.

use async_nats::jetstream::{self, Message};
use async_nats::HeaderMap;
use bytes::Bytes;
use hookrelay_core::delivery::{AttemptRecord, DeliveryTask};
use hookrelay_core::nats::{max_message_bytes, publish_acked, PublishError};
use serde::Serialize;

use crate::lease::Lease;
use crate::{Dispatcher, DLQ_REASON_HEADER};

/// Room left in a message for its headers and the protocol's framing.
const HEADROOM: usize = 4096;

/// The DLQ entry of a given-up delivery: the task (a reference to the
/// stored event) with what identifies the event, for operators and replay.
#[derive(Debug, Serialize)]
pub struct DeadDelivery<'a> {
    #[serde(flatten)]
    pub task: &'a DeliveryTask,
    pub event_id: &'a str,
    pub tenant: &'a str,
    pub event_type: &'a str,
    pub attempt_id: &'a str,
}

impl<'a> DeadDelivery<'a> {
    pub fn new(task: &'a DeliveryTask, record: &'a AttemptRecord) -> Self {
        Self {
            task,
            event_id: &record.event_id,
            tenant: &record.tenant,
            event_type: &record.event_type,
            attempt_id: &record.id,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("DLQ entries serialize")
    }
}

impl Dispatcher {
    /// The largest record NATS takes, with room for headers.
    /// (Read once: the server's info is cloned whole on every look.)
    fn max_record_bytes(&self) -> usize {
        *self
            .max_record
            .get_or_init(|| max_message_bytes(&self.js).saturating_sub(HEADROOM))
    }

    /// Stores `record` on ATTEMPTS, cut to fit the max payload if need be.
    pub(crate) async fn publish_record(
        &self,
        record: &mut AttemptRecord,
    ) -> Result<(), PublishError> {
        let subject = self
            .config
            .names()
            .attempt_subject(&record.tenant, &record.subscription_id);
        let payload = Bytes::from(record.to_json_within(self.max_record_bytes()));
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(&record.id);
        publish_acked(&self.js, subject, publish).await.map(drop)
    }

    /// Stores a DLQ entry of a delivery with its reason.
    pub(crate) async fn publish_dlq(
        &self,
        payload: &[u8],
        reason: &str,
        msg_id: &str,
    ) -> Result<(), PublishError> {
        let mut headers = HeaderMap::new();
        headers.insert(DLQ_REASON_HEADER, reason);
        let publish = jetstream::message::PublishMessage::build()
            .payload(Bytes::copy_from_slice(payload))
            .headers(headers)
            .message_id(msg_id);
        let subject = self.config.names().dlq_subject("deliveries");
        publish_acked(&self.js, subject, publish).await.map(drop)
    }

    /// A DELIVERIES message that is not a task: into the DLQ, then acked.
    pub(crate) async fn dead_letter(&self, message: Message, reason: &str) {
        tracing::error!(subject = %message.subject, reason, "delivery task sent to the DLQ");
        let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let kept = message.payload.len().min(self.max_record_bytes());
        let stored = self
            .publish_dlq(
                &message.payload[..kept],
                reason,
                &format!("deliveries:{seq}"),
            )
            .await;
        let lease = Lease::of(message);
        match stored {
            Ok(()) => lease.done().await,
            Err(error) => {
                tracing::warn!(%error, "cannot store the DLQ entry; the task will be tried again");
                lease.retry().await
            }
        }
    }
}
