//! NATS connection and the JetStream streams and KV bucket hookrelay owns,
//! created idempotently by whichever service starts first.
//!
//! Only JetStream features of nats-server 2.9 are used, so Debian 12's server
//! works as well as newer ones.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::failure::{Backoff, FailureKind};
use crate::health::Flag;

/// A NATS or JetStream operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("cannot create stream {name}: {message}")]
    Stream { name: String, message: String },
    #[error("cannot open KV bucket {name}: {message}")]
    Bucket { name: String, message: String },
    #[error("consumer {name}: {message}")]
    Consumer { name: String, message: String },
}

/// Connects, retrying in the background if the server is down at start:
/// a service then reports not-ready rather than exiting.
pub async fn connect(config: &Config, service: &str) -> Result<async_nats::Client, NatsError> {
    let url = config.nats.url.clone();
    async_nats::ConnectOptions::new()
        .name(format!("hookrelay-{service}"))
        // In hookrelay's words and levels: losing NATS is a warning, the
        // close at shutdown is no news (so `stopped` stays the last line).
        .event_callback(move |event| {
            let url = url.clone();
            async move {
                use async_nats::Event;
                match event {
                    Event::Connected => tracing::info!(%url, "nats connected"),
                    Event::Closed | Event::Draining => tracing::debug!(%event, "nats connection"),
                    Event::Disconnected => tracing::warn!(%url, "nats disconnected, reconnecting"),
                    other => tracing::warn!(event = %other, "nats connection"),
                }
            }
        })
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .connect(config.nats.servers())
        .await
        .map_err(|source| NatsError::Connect {
            url: config.nats.url.clone(),
            source,
        })
}

/// Creates the EVENTS, DELIVERIES, ATTEMPTS, DLQ and BATCHES streams if missing.
pub async fn ensure_streams(js: &jetstream::Context, config: &Config) -> Result<(), NatsError> {
    let names = config.names();
    let nats = &config.nats;
    let base = |name: String, subject: String, max_age: Duration| stream::Config {
        name,
        subjects: vec![subject],
        max_age,
        num_replicas: nats.replicas,
        duplicate_window: nats.duplicate_window,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    let streams = [
        stream::Config {
            // Retries and replays read events back one by one: direct gets
            // are answered from the stream, without the JetStream API's
            // JSON and base64 round trip.
            allow_direct: true,
            ..base(
                names.events_stream(),
                names.events_filter(),
                nats.events_max_age,
            )
        },
        stream::Config {
            // Tasks are removed once the dispatcher acks them.
            retention: stream::RetentionPolicy::WorkQueue,
            ..base(
                names.deliveries_stream(),
                names.deliveries_filter(),
                Duration::ZERO,
            )
        },
        stream::Config {
            // The log service reads records back by sequence.
            allow_direct: true,
            ..base(
                names.attempts_stream(),
                names.attempts_filter(),
                nats.attempts_max_age,
            )
        },
        base(names.dlq_stream(), names.dlq_filter(), nats.dlq_max_age),
        stream::Config {
            allow_direct: true,
            ..base(
                names.batches_stream(),
                names.batches_filter(),
                nats.events_max_age,
            )
        },
    ];
    for config in streams {
        let name = config.name.clone();
        let error = |e: &dyn std::fmt::Display| NatsError::Stream {
            name: name.clone(),
            message: e.to_string(),
        };
        let direct = config.allow_direct;
        let created = js
            .get_or_create_stream(config)
            .await
            .map_err(|e| error(&e))?;
        // Streams made by an earlier version lack direct gets: add them,
        // keeping every other setting as the operator left it.
        let existing = created.cached_info().config.clone();
        if direct && !existing.allow_direct {
            // Reads fall back to the JetStream API without direct gets, so
            // a stream that cannot be changed (an operator's) still works.
            if let Err(e) = js
                .update_stream(stream::Config {
                    allow_direct: true,
                    ..existing
                })
                .await
            {
                tracing::warn!(stream = %name, error = %e, "cannot enable direct gets; reads use the JetStream API");
            }
        }
    }
    Ok(())
}

/// Opens the subscriptions KV bucket, creating its backing stream first.
///
/// `create_key_value` fails against nats-server 2.9 (its account-info reply
/// lacks fields newer clients expect), so the stream is created as the KV
/// layer would, then opened with `get_key_value`.
pub async fn subscriptions_bucket(
    js: &jetstream::Context,
    config: &Config,
) -> Result<kv::Store, NatsError> {
    bucket(js, config, config.names().subscriptions_bucket()).await
}

/// The tenants bucket (each tenant's subscription ids), created if missing.
pub async fn tenants_bucket(
    js: &jetstream::Context,
    config: &Config,
) -> Result<kv::Store, NatsError> {
    bucket(js, config, config.names().tenants_bucket()).await
}

/// The event-type catalog bucket, created if missing.
pub async fn event_types_bucket(
    js: &jetstream::Context,
    config: &Config,
) -> Result<kv::Store, NatsError> {
    bucket(js, config, config.names().event_types_bucket()).await
}

/// A KV bucket of this installation at `nats.replicas`, created if missing.
async fn bucket(
    js: &jetstream::Context,
    config: &Config,
    bucket: String,
) -> Result<kv::Store, NatsError> {
    let err = |e: &dyn std::fmt::Display| NatsError::Bucket {
        name: bucket.clone(),
        message: e.to_string(),
    };
    js.get_or_create_stream(stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: config.nats.replicas,
        duplicate_window: Duration::from_secs(120),
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| err(&e))?;
    js.get_key_value(&bucket).await.map_err(|e| err(&e))
}

/// Deletes every stream of an installation (tests and `hookctl` cleanup).
pub async fn delete_streams(js: &jetstream::Context, config: &Config) {
    for name in config.names().streams() {
        let _ = js.delete_stream(&name).await;
    }
}

/// A stored event could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// NATS did not answer: try again later.
    #[error("cannot read {stream} #{seq}: {message}")]
    Unavailable {
        stream: String,
        seq: u64,
        message: String,
    },
    /// What is stored there is not an event: reading it again cannot help.
    #[error("{stream} #{seq} is not a readable event: {message}")]
    Unreadable {
        stream: String,
        seq: u64,
        message: String,
    },
}

impl ReadError {
    pub fn kind(&self) -> FailureKind {
        match self {
            ReadError::Unavailable { .. } => FailureKind::Transient,
            ReadError::Unreadable { .. } => FailureKind::Permanent,
        }
    }
}

/// A publish that JetStream did not store.
#[derive(Debug, thiserror::Error)]
#[error("publishing to {subject}: {source}")]
pub struct PublishError {
    pub subject: String,
    #[source]
    pub source: jetstream::context::PublishError,
}

impl PublishError {
    /// Permanent when the message can never fit; transient otherwise (a
    /// timeout, a lost connection, a missing stream being recreated).
    pub fn kind(&self) -> FailureKind {
        publish_failure_kind(&self.source)
    }
}

/// Permanent when a message can never fit; transient otherwise.
pub fn publish_failure_kind(error: &jetstream::context::PublishError) -> FailureKind {
    match error.kind() {
        jetstream::context::PublishErrorKind::MaxPayloadExceeded => FailureKind::Permanent,
        _ => FailureKind::Transient,
    }
}

/// The acker of `message`, with a reply subject of its own, and how often
/// the message was delivered. The payload and subject of a received message
/// are slices of the connection's read buffer and keep all of it alive: a
/// task that waits holding a small message can pin megabytes that arrived
/// with it. Keeping only this lets them go.
pub fn detach(message: jetstream::Message) -> (jetstream::message::Acker, i64) {
    let delivered = message.info().map_or(1, |info| info.delivered);
    let reply = message
        .reply
        .as_ref()
        .map(|reply| async_nats::Subject::from(reply.as_str().to_owned()));
    (
        jetstream::message::Acker::new(message.context, reply),
        delivered,
    )
}

/// The largest message (payload and headers) the connected server takes:
/// its `max_payload`, or the server default of 1 MiB before the first
/// connection says otherwise.
pub fn max_message_bytes(js: &jetstream::Context) -> usize {
    match js.client().server_info().max_payload {
        0 => 1 << 20,
        max => max,
    }
}

/// Publishes and waits for JetStream's ack.
pub async fn publish_acked(
    js: &jetstream::Context,
    subject: String,
    message: jetstream::message::PublishMessage,
) -> Result<jetstream::publish::PublishAck, PublishError> {
    let error = |subject: &str, source| PublishError {
        subject: subject.to_owned(),
        source,
    };
    let ack = js
        .send_publish(subject.clone(), message)
        .await
        .map_err(|e| error(&subject, e))?;
    ack.await.map_err(|e| error(&subject, e))
}

/// The stream a task's `source` points into.
pub fn source_stream(names: &crate::Names, source: crate::delivery::Source) -> String {
    match source {
        crate::delivery::Source::Event => names.events_stream(),
        crate::delivery::Source::Batch => names.batches_stream(),
    }
}

/// The event stored at `seq` of EVENTS (or BATCHES), as delivered the first
/// time; `None` when the stream no longer holds it.
pub async fn load_event(
    js: &jetstream::Context,
    config: &Config,
    source: crate::delivery::Source,
    seq: u64,
) -> Result<Option<crate::event::Event>, ReadError> {
    let names = config.names();
    let stream = open_source(js, &names, source, seq).await?;
    read_event(&stream, &names, source, seq).await
}

/// The stream `source` points into, opened to read `seq` from it.
pub async fn open_source(
    js: &jetstream::Context,
    names: &crate::Names,
    source: crate::delivery::Source,
    seq: u64,
) -> Result<jetstream::stream::Stream, ReadError> {
    let name = source_stream(names, source);
    js.get_stream(&name)
        .await
        .map_err(|e| ReadError::Unavailable {
            stream: name,
            seq,
            message: e.to_string(),
        })
}

/// [`load_event`] from an open stream (EVENTS or BATCHES, as `source` says).
pub async fn read_event(
    stream: &jetstream::stream::Stream,
    names: &crate::Names,
    source: crate::delivery::Source,
    seq: u64,
) -> Result<Option<crate::event::Event>, ReadError> {
    use crate::delivery::Source;
    use crate::event::Event;
    let stream_name = || stream.cached_info().config.name.clone();
    let Some(stored) = get_stored(stream, seq).await? else {
        return Ok(None);
    };
    let unreadable = |message: String| ReadError::Unreadable {
        stream: stream_name(),
        seq,
        message,
    };
    let event = match source {
        Source::Event => {
            let msg_id = stored
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.as_str().to_owned());
            Event::from_stored(
                names,
                &stored.subject,
                msg_id.as_deref(),
                &stored.payload,
                stored.sequence,
                stored.time,
                usize::MAX,
            )
            .map(|mut event| {
                event.traceparent = crate::trace::from_nats_headers(Some(&stored.headers))
                    .map(|parent| parent.header());
                event
            })
            .map_err(|e| unreadable(e.to_string()))?
        }
        Source::Batch => Event {
            seq: stored.sequence,
            ..serde_json::from_slice(&stored.payload).map_err(|e| unreadable(e.to_string()))?
        },
    };
    Ok(Some(event))
}

/// The message at `seq` of `stream`, `None` once the stream dropped it: a
/// direct get when the stream allows them (answered without the JetStream
/// API's JSON and base64), else, and to confirm a miss, the API's get.
/// Every error is [`ReadError::Unavailable`].
pub async fn get_stored(
    stream: &jetstream::stream::Stream,
    seq: u64,
) -> Result<Option<jetstream::message::StreamMessage>, ReadError> {
    let unavailable = |message: String| ReadError::Unavailable {
        stream: stream.cached_info().config.name.clone(),
        seq,
        message,
    };
    if stream.cached_info().config.allow_direct {
        match stream.direct_get(seq).await {
            Ok(stored) => return Ok(Some(stored)),
            // Any replica answers a direct get, one that lags too: only the
            // leader's "not found" is final.
            Err(error) if error.kind() == stream::DirectGetErrorKind::NotFound => {}
            Err(error) => return Err(unavailable(error.to_string())),
        }
    }
    match stream.get_raw_message(seq).await {
        Ok(stored) => Ok(Some(stored)),
        Err(error) if error.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(error) => Err(unavailable(error.to_string())),
    }
}

/// A durable pull consumer of one of hookrelay's streams.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub stream: String,
    pub durable: String,
    pub filter: String,
    pub ack_wait: Duration,
    pub max_ack_pending: i64,
    /// Messages pulled per request.
    pub batch: usize,
    /// Bytes pulled per request at most (0: no limit): a batch of large
    /// messages would otherwise be `batch` × the max payload in memory.
    pub max_bytes: usize,
}

/// [`ConsumerSpec::max_bytes`] of consumers whose messages can be large.
pub const PULL_MAX_BYTES: usize = 8 << 20;

/// Creates the streams and the consumer if missing, then opens its message
/// stream (batched pulls with heartbeats, so a dead server is noticed).
pub async fn pull_messages(
    js: &jetstream::Context,
    config: &Config,
    spec: &ConsumerSpec,
) -> Result<jetstream::consumer::pull::Stream, NatsError> {
    use jetstream::consumer::{pull, AckPolicy, Consumer};
    let err = |e: &dyn std::fmt::Display| NatsError::Consumer {
        name: spec.durable.clone(),
        message: e.to_string(),
    };
    ensure_streams(js, config).await?;
    let stream = js.get_stream(&spec.stream).await.map_err(|e| err(&e))?;
    let consumer: Consumer<pull::Config> = stream
        .get_or_create_consumer(
            &spec.durable,
            pull::Config {
                durable_name: Some(spec.durable.clone()),
                filter_subject: spec.filter.clone(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: spec.ack_wait,
                max_ack_pending: spec.max_ack_pending,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| err(&e))?;
    consumer
        .stream()
        .max_messages_per_batch(spec.batch)
        .max_bytes_per_batch(spec.max_bytes)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| err(&e))
}

/// Runs `consume` until `shutdown`, starting it again after it fails (a
/// NATS restart, a deleted stream), with `ready` down meanwhile: a second
/// later at first, backing off to [`RESTART_MAX`] while it keeps failing.
pub async fn supervise<F, Fut, E>(
    what: &str,
    shutdown: &CancellationToken,
    ready: &Flag,
    mut consume: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut pause = Backoff::up_to(RESTART_MAX);
    while !shutdown.is_cancelled() {
        let started = std::time::Instant::now();
        if let Err(error) = consume().await {
            ready.set(false);
            // A consumer that ran a while before failing starts over quickly.
            if started.elapsed() > RESTART_MAX * 2 {
                pause.succeeded();
            }
            let delay = pause.failed();
            tracing::warn!(%error, retry_in = ?delay, "{what} failed, starting it again");
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
    ready.set(false);
}

/// The longest pause before a failed consumer is started again.
pub const RESTART_MAX: Duration = Duration::from_secs(5);
