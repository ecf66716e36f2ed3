//! In-memory index of subscriptions, kept current by watching the KV bucket,
//! so a subscription saved now matches the next event without a restart.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::event::Event;
use crate::subscription::Subscription;

#[derive(Default)]
struct State {
    by_id: HashMap<String, Arc<Subscription>>,
    by_tenant: HashMap<String, HashMap<String, Arc<Subscription>>>,
}

/// Subscriptions by id and by tenant.
pub struct SubscriptionIndex {
    state: RwLock<State>,
    progress: BucketProgress,
}

impl SubscriptionIndex {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: RwLock::default(),
            progress: BucketProgress::default(),
        })
    }

    pub fn get(&self, id: &str) -> Option<Arc<Subscription>> {
        self.state
            .read()
            .expect("index lock")
            .by_id
            .get(id)
            .cloned()
    }

    /// Every enabled subscription that `event` goes to.
    pub fn matching(&self, event: &Event) -> Vec<Arc<Subscription>> {
        let state = self.state.read().expect("index lock");
        state
            .by_tenant
            .get(&event.tenant)
            .map(|subs| {
                subs.values()
                    .filter(|s| s.matches(event))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.state.read().expect("index lock").by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds or replaces a subscription.
    pub fn put(&self, subscription: Subscription) {
        let subscription = Arc::new(subscription);
        let mut state = self.state.write().expect("index lock");
        if let Some(old) = state
            .by_id
            .insert(subscription.id.clone(), subscription.clone())
        {
            if old.tenant != subscription.tenant {
                if let Some(subs) = state.by_tenant.get_mut(&old.tenant) {
                    subs.remove(&old.id);
                }
            }
        }
        state
            .by_tenant
            .entry(subscription.tenant.clone())
            .or_default()
            .insert(subscription.id.clone(), subscription);
    }

    pub fn remove(&self, id: &str) {
        let mut state = self.state.write().expect("index lock");
        if let Some(old) = state.by_id.remove(id) {
            if let Some(subs) = state.by_tenant.get_mut(&old.tenant) {
                subs.remove(id);
            }
        }
    }

    /// Whether the bucket's contents at start have been read.
    pub fn is_loaded(&self) -> bool {
        self.progress.is_loaded()
    }

    /// Waits until the bucket's contents at start have been read.
    pub async fn wait_loaded(&self) {
        self.progress.wait_loaded().await
    }

    /// Waits (at most `timeout`) until every KV write up to `revision` is in
    /// the index; false if it is not by then.
    pub async fn wait_for_revision(&self, revision: u64, timeout: Duration) -> bool {
        self.progress.wait_for_revision(revision, timeout).await
    }

    fn apply(&self, entry: &kv::Entry) {
        match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<Subscription>(&entry.value) {
                Ok(mut subscription) => {
                    subscription.revision = entry.revision;
                    self.put(subscription);
                }
                Err(error) => {
                    tracing::error!(key = %entry.key, %error, "unreadable subscription in KV, ignoring it")
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => self.remove(&entry.key),
        }
    }

    /// Loads the bucket and follows its changes until `shutdown`, resuming
    /// after the last revision seen when the watch breaks.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        store: kv::Store,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        follow_bucket(self.clone(), "subscriptions bucket", store, shutdown)
    }
}

impl FollowsBucket for SubscriptionIndex {
    fn progress(&self) -> &BucketProgress {
        &self.progress
    }

    fn apply(&self, entry: &kv::Entry) {
        SubscriptionIndex::apply(self, entry)
    }
}

/// How far an in-memory copy of a KV bucket has read it: whether the
/// contents at start are in, and the last revision applied.
pub struct BucketProgress {
    loaded: watch::Sender<bool>,
    revision: watch::Sender<u64>,
}

impl Default for BucketProgress {
    fn default() -> Self {
        Self {
            loaded: watch::channel(false).0,
            revision: watch::channel(0).0,
        }
    }
}

impl BucketProgress {
    pub fn is_loaded(&self) -> bool {
        *self.loaded.borrow()
    }

    pub async fn wait_loaded(&self) {
        let mut rx = self.loaded.subscribe();
        let _ = rx.wait_for(|loaded| *loaded).await;
    }

    /// The last KV revision applied.
    pub fn revision(&self) -> u64 {
        *self.revision.borrow()
    }

    /// Waits (at most `timeout`) until every KV write up to `revision` is
    /// applied; false if it is not by then.
    pub async fn wait_for_revision(&self, revision: u64, timeout: Duration) -> bool {
        let mut rx = self.revision.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|applied| *applied >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// An in-memory copy of a KV bucket, kept by [`follow_bucket`].
pub trait FollowsBucket: Send + Sync + 'static {
    fn progress(&self) -> &BucketProgress;
    /// Applies one write (a put, a delete or a purge).
    fn apply(&self, entry: &kv::Entry);
}

/// Loads `store` into `copy` and follows its changes until `shutdown`,
/// resuming after the last revision seen when the watch breaks, with
/// backoff while the bucket cannot be read. `what` names the bucket in logs.
pub fn follow_bucket<T: FollowsBucket>(
    copy: Arc<T>,
    what: &'static str,
    store: kv::Store,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let progress = copy.progress();
        let mut last_revision = 0u64;
        let mut pause = crate::failure::Backoff::up_to(Duration::from_secs(10));
        while !shutdown.is_cancelled() {
            if last_revision == 0 {
                // Fresh from the server: `kv::Store::status` answers the
                // info cached when the bucket was opened.
                match store.stream.get_info().await {
                    Ok(info) if info.state.messages == 0 => {
                        progress.loaded.send_replace(true);
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the {what}, retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(pause.failed()) => continue,
                        }
                    }
                }
            }
            let watch = if last_revision == 0 {
                store.watch_with_history(">").await
            } else {
                store.watch_all_from_revision(last_revision + 1).await
            };
            let mut watch = match watch {
                Ok(watch) => {
                    pause.succeeded();
                    watch
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot watch the {what}, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(pause.failed()) => continue,
                    }
                }
            };
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = watch.next() => next,
                };
                match next {
                    Some(Ok(entry)) => {
                        copy.apply(&entry);
                        last_revision = entry.revision;
                        progress.revision.send_replace(entry.revision);
                        if entry.delta == 0 || entry.seen_current {
                            progress.loaded.send_replace(true);
                        }
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "watch of the {what} failed, resuming");
                        break;
                    }
                    None => break,
                }
            }
        }
    })
}
