//! Events read back by sequence for delivery: a JetStream direct get per
//! event, shared by every delivery of it (a fan-out to 100 subscriptions
//! reads it once), through a small cache bounded in bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream::Stream};
use hookrelay_core::delivery::Source;
use hookrelay_core::event::Event;
use hookrelay_core::nats::{open_source, read_event, ReadError};
use hookrelay_core::Names;
use quick_cache::sync::Cache;
use quick_cache::Weighter;
use tokio::sync::RwLock;

/// Bytes of events the cache keeps at most (by [`EventWeight`]'s
/// estimate): a fan-out needs its event for moments, but the tasks in
/// flight (up to twice the global concurrency) may span a dozen large
/// events, and a miss would read (and hold) another copy.
const CACHE_BYTES: u64 = 8 << 20;
/// Events the cache is sized for.
const CACHE_ITEMS: usize = 1024;
/// How long a cached event is used: long enough for the deliveries of one
/// fan-out, short enough that a retry due later reads the stream again and
/// sees an event that has since expired.
const FRESH: Duration = Duration::from_secs(5);

/// A cached event and when it was read.
type Cached = (Instant, Arc<Event>);

#[derive(Clone)]
struct EventWeight;

impl Weighter<(Source, u64), Cached> for EventWeight {
    fn weight(&self, _key: &(Source, u64), (_, event): &Cached) -> u64 {
        // What the event holds on the heap, and its allocations' overhead.
        let labels: usize = event
            .labels
            .iter()
            .map(|(k, v)| k.len() + v.len() + 64)
            .sum();
        let text = event.id.len() + event.tenant.len() + event.event_type.len();
        (event.data.get().len() + labels + text + 512) as u64
    }
}

/// Reads events by (source, sequence), each once while it is cached.
pub struct EventReader {
    js: jetstream::Context,
    names: Names,
    cache: Cache<(Source, u64), Cached, EventWeight>,
    /// EVENTS and BATCHES, opened on first use and again after a failure.
    streams: RwLock<[Option<Stream>; 2]>,
}

fn slot(source: Source) -> usize {
    match source {
        Source::Event => 0,
        Source::Batch => 1,
    }
}

impl EventReader {
    pub fn new(js: jetstream::Context, names: Names) -> Self {
        Self {
            js,
            names,
            cache: Cache::with_weighter(CACHE_ITEMS, CACHE_BYTES, EventWeight),
            streams: RwLock::default(),
        }
    }

    /// The event stored at `seq` of `source`'s stream; `None` once the
    /// stream no longer holds it. Concurrent reads of one event wait for a
    /// single direct get; a failed read is not cached.
    pub async fn get(&self, source: Source, seq: u64) -> Result<Option<Arc<Event>>, ReadError> {
        let key = (source, seq);
        if let Some((read_at, event)) = self.cache.get(&key) {
            if read_at.elapsed() < FRESH {
                return Ok(Some(event));
            }
            self.cache.remove(&key);
        }
        let read = self
            .cache
            .get_or_insert_async(&key, async {
                match self.read(source, seq).await {
                    Ok(Some(event)) => Ok((Instant::now(), Arc::new(event))),
                    Ok(None) => Err(None),
                    Err(error) => Err(Some(error)),
                }
            })
            .await;
        match read {
            Ok((_, event)) => Ok(Some(event)),
            Err(None) => Ok(None),
            Err(Some(error)) => Err(error),
        }
    }

    /// Puts an event the caller already holds (the in-process hand-over).
    pub fn put(&self, source: Source, event: Arc<Event>) {
        self.cache
            .insert((source, event.seq), (Instant::now(), event));
    }

    async fn read(&self, source: Source, seq: u64) -> Result<Option<Event>, ReadError> {
        let stream = self.stream(source, seq).await?;
        let read = read_event(&stream, &self.names, source, seq).await;
        if let Err(ReadError::Unavailable { .. }) = &read {
            // The stream may have been recreated (a NATS restart): open it again.
            self.streams.write().await[slot(source)] = None;
        }
        read
    }

    async fn stream(&self, source: Source, seq: u64) -> Result<Stream, ReadError> {
        if let Some(stream) = &self.streams.read().await[slot(source)] {
            return Ok(stream.clone());
        }
        let stream = open_source(&self.js, &self.names, source, seq).await?;
        self.streams.write().await[slot(source)] = Some(stream.clone());
        Ok(stream)
    }
}
