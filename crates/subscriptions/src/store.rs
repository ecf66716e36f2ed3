//! Subscriptions in the JetStream KV bucket: one key per subscription id,
//! the value the JSON of the core model, the revision the KV revision.
//!
//! Beside it, the tenants bucket keeps each tenant's subscription ids under
//! the tenant's key, written with revision checks: a tenant is listed by
//! reading its ids and then only its subscriptions, and the per-tenant
//! limit is checked in the same revision-checked write that adds an id, so
//! two concurrent creates cannot both take the last place. An id is added
//! before its subscription is written and removed after it is deleted;
//! one left behind by a crash in between is skipped when listing and
//! dropped when the tenant is full. Subscriptions written before this index
//! existed are indexed once, by a scan, on first use; those that replicas of
//! an earlier version write later (a rolling upgrade) are added as they
//! appear, by [`Store::keep_indexed`].

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::TryStreamExt;
use hookrelay_core::subscription::{Subscription, ID_PREFIX};

use crate::error::ApiError;

/// Reads and writes subscriptions with revision checks.
#[derive(Clone)]
pub struct Store {
    kv: kv::Store,
    tenants: kv::Store,
    /// Set once subscriptions older than the tenants bucket are indexed.
    indexed: std::sync::Arc<tokio::sync::OnceCell<()>>,
    /// Writes of one tenant's ids from this process, one at a time: the
    /// revision check then only races other replicas.
    writing: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, TenantLock>>>,
}

type TenantLock = std::sync::Arc<tokio::sync::Mutex<()>>;

/// A tenant's subscription ids, sorted, as its key in the tenants bucket holds them.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Members {
    ids: Vec<String>,
}

/// The key, in the tenants bucket, saying every older subscription is
/// indexed (a dot: no tenant can be called that).
const INDEXED_KEY: &str = "index.built";
/// Revision-checked writes of one tenant's ids tried before giving up.
const CAS_TRIES: usize = 20;
/// Subscriptions read at once when listing a tenant.
const READ_AHEAD: usize = 16;

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

fn encode(sub: &Subscription) -> Result<Bytes, ApiError> {
    serde_json::to_vec(sub)
        .map(Bytes::from)
        .map_err(|e| ApiError::Internal(format!("cannot encode subscription: {e}")))
}

/// Ids are `sub_<ULID>`; anything else cannot be a key we wrote.
fn check_id(id: &str) -> Result<(), ApiError> {
    let valid = id
        .strip_prefix(ID_PREFIX)
        .is_some_and(|rest| rest.len() == 26 && rest.chars().all(|c| c.is_ascii_alphanumeric()));
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "id",
            format!("{id:?} is not a subscription id (sub_<ULID>)"),
        ))
    }
}

impl Store {
    /// The store over the subscriptions bucket and the tenants bucket.
    pub fn new(kv: kv::Store, tenants: kv::Store) -> Self {
        Self {
            kv,
            tenants,
            indexed: Default::default(),
            writing: Default::default(),
        }
    }

    /// Indexes subscriptions written before the tenants bucket existed,
    /// once per installation (merged with what concurrent creates added).
    async fn ensure_indexed(&self) -> Result<(), ApiError> {
        self.indexed
            .get_or_try_init(|| async {
                if self
                    .tenants
                    .get(INDEXED_KEY)
                    .await
                    .map_err(unavailable)?
                    .is_some()
                {
                    return Ok(());
                }
                let (all, _) = self.scan("", usize::MAX).await?;
                let mut by_tenant: std::collections::BTreeMap<String, Vec<String>> =
                    Default::default();
                for sub in all {
                    by_tenant.entry(sub.tenant).or_default().push(sub.id);
                }
                for (tenant, ids) in by_tenant {
                    self.change_members(&tenant, |members| {
                        for id in &ids {
                            if let Err(at) = members.ids.binary_search(id) {
                                members.ids.insert(at, id.clone());
                            }
                        }
                        Ok(())
                    })
                    .await?;
                }
                self.tenants
                    .put(INDEXED_KEY, Bytes::from_static(b"1"))
                    .await
                    .map_err(unavailable)?;
                Ok(())
            })
            .await
            .map(drop)
    }

    /// Adds every subscription written from now on that its tenant's ids
    /// lack: a replica of an earlier version writes the subscription alone.
    /// Runs until `shutdown`; a watch that ends or fails is opened again.
    pub async fn keep_indexed(self, shutdown: tokio_util::sync::CancellationToken) {
        use futures::StreamExt;
        let mut pause = hookrelay_core::failure::Backoff::up_to(std::time::Duration::from_secs(10));
        // Where a watch that ended left off: the next one starts there, so
        // no write in between goes unseen.
        let mut next_revision: Option<u64> = None;
        loop {
            let watch = match next_revision {
                Some(revision) => self.kv.watch_all_from_revision(revision).await,
                None => self.kv.watch_all().await,
            };
            match watch {
                // Whatever has arrived is taken at once and each tenant in
                // it read once, 16 tenants at a time: a watch that fell
                // behind a burst of creates would buffer the whole burst.
                Ok(watch) => {
                    let mut chunks = watch.ready_chunks(1024);
                    loop {
                        let chunk = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            chunk = chunks.next() => chunk,
                        };
                        let Some(chunk) = chunk else { break };
                        // The last write of each id in the chunk wins: a
                        // subscription created and deleted in it is not
                        // indexed again.
                        let mut last: std::collections::HashMap<String, Option<String>> =
                            Default::default();
                        let mut failed = false;
                        for entry in chunk {
                            let Ok(entry) = entry else {
                                failed = true;
                                continue;
                            };
                            next_revision = Some(entry.revision + 1);
                            let tenant = match entry.operation {
                                kv::Operation::Put => {
                                    serde_json::from_slice::<Subscription>(&entry.value)
                                        .ok()
                                        .map(|sub| sub.tenant)
                                }
                                kv::Operation::Delete | kv::Operation::Purge => None,
                            };
                            last.insert(entry.key, tenant);
                        }
                        let mut by_tenant: std::collections::BTreeMap<String, Vec<String>> =
                            Default::default();
                        for (id, tenant) in last {
                            if let Some(tenant) = tenant {
                                by_tenant.entry(tenant).or_default().push(id);
                            }
                        }
                        futures::stream::iter(by_tenant)
                            .for_each_concurrent(READ_AHEAD, |(tenant, mut ids)| {
                                ids.sort_unstable();
                                self.index_missing(tenant, ids)
                            })
                            .await;
                        if failed {
                            break;
                        }
                        pause = hookrelay_core::failure::Backoff::up_to(
                            std::time::Duration::from_secs(10),
                        );
                    }
                }
                Err(error) => tracing::warn!(%error, "cannot watch the subscriptions bucket"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause.failed()) => {}
            }
        }
    }

    /// Adds those of `ids` that `tenant`'s ids lack.
    async fn index_missing(&self, tenant: String, ids: Vec<String>) {
        let missing: Vec<String> = match self.members(&tenant).await {
            Ok((members, _)) => ids
                .into_iter()
                .filter(|id| members.ids.binary_search(id).is_err())
                .collect(),
            Err(_) => ids,
        };
        if missing.is_empty() {
            return;
        }
        let added = self
            .change_members(&tenant, |members| {
                for id in &missing {
                    if let Err(at) = members.ids.binary_search(id) {
                        members.ids.insert(at, id.clone());
                    }
                }
                Ok(())
            })
            .await;
        match added {
            Ok(()) => tracing::info!(
                tenant = %tenant,
                subscriptions = ?missing,
                "subscriptions written without their tenant index entry, indexed"
            ),
            Err(error) => tracing::warn!(
                tenant = %tenant,
                %error,
                "cannot index subscriptions written without their tenant index entry"
            ),
        }
    }

    /// A tenant's ids and the revision they were read at (none yet: `None`).
    async fn members(&self, tenant: &str) -> Result<(Members, Option<u64>), ApiError> {
        let Some(entry) = self.tenants.entry(tenant).await.map_err(unavailable)? else {
            return Ok((Members::default(), None));
        };
        if entry.operation != kv::Operation::Put {
            return Ok((Members::default(), Some(entry.revision)));
        }
        let members = serde_json::from_slice(&entry.value).map_err(|e| {
            ApiError::Internal(format!(
                "the subscription ids of tenant {tenant} are unreadable: {e}"
            ))
        })?;
        Ok((members, Some(entry.revision)))
    }

    /// Applies `change` to a tenant's ids and writes them back if nobody
    /// wrote them meanwhile, reading again and retrying otherwise.
    async fn change_members(
        &self,
        tenant: &str,
        mut change: impl FnMut(&mut Members) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let lock = self
            .writing
            .lock()
            .expect("not poisoned")
            .entry(tenant.to_owned())
            .or_default()
            .clone();
        let _writing = lock.lock().await;
        for tries in 0..CAS_TRIES {
            if tries > 0 {
                // Another write won; step aside a little longer each time.
                tokio::time::sleep(std::time::Duration::from_micros(250 * tries as u64)).await;
            }
            let (mut members, revision) = self.members(tenant).await?;
            change(&mut members)?;
            let value = Bytes::from(serde_json::to_vec(&members).expect("ids serialize"));
            let written = match revision {
                None => self
                    .tenants
                    .create(tenant, value)
                    .await
                    .map(drop)
                    .map_err(|e| {
                        (
                            e.kind() == kv::CreateErrorKind::AlreadyExists,
                            e.to_string(),
                        )
                    }),
                Some(revision) => self
                    .tenants
                    .update(tenant, value, revision)
                    .await
                    .map(drop)
                    .map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    }),
            };
            match written {
                Ok(()) => return Ok(()),
                // Someone else wrote them first: read again.
                Err((true, _)) => continue,
                Err((false, message)) => return Err(ApiError::Unavailable(message)),
            }
        }
        Err(ApiError::Unavailable(format!(
            "the subscription ids of tenant {tenant} kept changing under {CAS_TRIES} tries"
        )))
    }

    /// Adds `id` to `tenant`'s ids unless it has `max` already (ids whose
    /// subscription is gone are dropped first).
    async fn reserve(&self, tenant: &str, id: &str, max: usize) -> Result<(), ApiError> {
        self.ensure_indexed().await?;
        let (members, _) = self.members(tenant).await?;
        let mut gone = Vec::new();
        if members.ids.len() >= max {
            // Full, or holding ids a crash left behind: find those.
            let read = self.get_all(members.ids.clone()).await;
            for (member, sub) in members.ids.iter().zip(read) {
                if matches!(sub, Err(ApiError::NotFound(_))) {
                    gone.push(member.clone());
                }
            }
        }
        self.change_members(tenant, |members| {
            members.ids.retain(|m| !gone.contains(m));
            if members.ids.len() >= max {
                return Err(ApiError::ResourceExhausted(format!(
                    "tenant {tenant} has {} subscriptions, the most allowed (limits.max_subscriptions_per_tenant)",
                    members.ids.len()
                )));
            }
            if let Err(at) = members.ids.binary_search(&id.to_owned()) {
                members.ids.insert(at, id.to_owned());
            }
            Ok(())
        })
        .await
    }

    /// Removes `id` from `tenant`'s ids.
    async fn release(&self, tenant: &str, id: &str) -> Result<(), ApiError> {
        self.change_members(tenant, |members| {
            members.ids.retain(|m| m != id);
            Ok(())
        })
        .await
    }

    /// A fresh id, sorting by creation time.
    pub fn mint_id() -> String {
        format!("{ID_PREFIX}{}", ulid::Ulid::new())
    }

    /// Stores a new subscription if its tenant has fewer than
    /// `max_per_tenant`.
    pub async fn create(
        &self,
        mut sub: Subscription,
        max_per_tenant: usize,
    ) -> Result<Subscription, ApiError> {
        self.reserve(&sub.tenant, &sub.id, max_per_tenant).await?;
        let created = self
            .kv
            .create(&sub.id, encode(&sub)?)
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => ApiError::Conflict(sub.id.clone()),
                _ => unavailable(e),
            });
        match created {
            Ok(revision) => {
                sub.revision = revision;
                Ok(sub)
            }
            Err(error) => {
                if let Err(left) = self.release(&sub.tenant, &sub.id).await {
                    tracing::warn!(subscription = %sub.id, error = %left, "id of a subscription not created left in its tenant's ids; dropped when the tenant is full");
                }
                Err(error)
            }
        }
    }

    pub async fn get(&self, id: &str) -> Result<Subscription, ApiError> {
        check_id(id)?;
        let entry = self.kv.entry(id).await.map_err(unavailable)?;
        let entry = entry
            .filter(|e| e.operation == kv::Operation::Put)
            .ok_or_else(|| ApiError::NotFound(id.to_owned()))?;
        let mut sub: Subscription = serde_json::from_slice(&entry.value).map_err(|e| {
            ApiError::Internal(format!("stored subscription {id} is unreadable: {e}"))
        })?;
        sub.revision = entry.revision;
        Ok(sub)
    }

    /// `tenant`'s subscriptions with ids after `after`, in id order, at
    /// most `limit` (reading only that tenant's); and whether more may
    /// follow.
    pub async fn list(
        &self,
        tenant: &str,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<Subscription>, bool), ApiError> {
        self.ensure_indexed().await?;
        let (members, _) = self.members(tenant).await?;
        let ids: Vec<&String> = members
            .ids
            .iter()
            .filter(|id| id.as_str() > after)
            .collect();
        let mut page = Vec::new();
        let mut read = 0;
        while page.len() < limit && read < ids.len() {
            let batch: Vec<String> = ids[read..ids.len().min(read + (limit - page.len()))]
                .iter()
                .map(|id| (*id).clone())
                .collect();
            read += batch.len();
            let subs = self.get_all(batch).await;
            for sub in subs {
                match sub {
                    Ok(sub) if sub.tenant == tenant => page.push(sub),
                    // Left behind by a crash between the two writes.
                    Ok(_) | Err(ApiError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok((page, read < ids.len()))
    }

    /// The subscriptions `ids`, in their order, [`READ_AHEAD`] read at once.
    async fn get_all(&self, ids: Vec<String>) -> Vec<Result<Subscription, ApiError>> {
        use futures::StreamExt;
        futures::stream::iter(ids)
            .map(|id| {
                let store = self.clone();
                async move { store.get(&id).await }
            })
            .buffered(READ_AHEAD)
            .collect()
            .await
    }

    /// Every subscription after `after`, by reading the whole bucket: for
    /// indexing only (the API reads one tenant's, through the index).
    async fn scan(&self, after: &str, limit: usize) -> Result<(Vec<Subscription>, bool), ApiError> {
        let keys = match self.kv.keys().await {
            Ok(keys) => keys
                .try_collect::<Vec<String>>()
                .await
                .map_err(unavailable)?,
            Err(e) => return Err(unavailable(e)),
        };
        let mut keys: Vec<String> = keys.into_iter().filter(|k| k.as_str() > after).collect();
        keys.sort_unstable();
        let mut page = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let sub = match self.get(key).await {
                Ok(sub) => sub,
                Err(ApiError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            page.push(sub);
            if page.len() == limit {
                return Ok((page, i + 1 < keys.len()));
            }
        }
        Ok((page, false))
    }

    /// Writes `sub` if the stored revision is still `expected`.
    pub async fn update(
        &self,
        mut sub: Subscription,
        expected: u64,
    ) -> Result<Subscription, ApiError> {
        sub.revision = self
            .kv
            .update(&sub.id, encode(&sub)?, expected)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => ApiError::Conflict(sub.id.clone()),
                _ => unavailable(e),
            })?;
        Ok(sub)
    }

    pub async fn delete(&self, sub: &Subscription, expected: u64) -> Result<(), ApiError> {
        let id = sub.id.as_str();
        self.kv
            .delete_expect_revision(id, Some(expected))
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => ApiError::Conflict(id.to_owned()),
                _ if e.to_string().contains("wrong last sequence") => {
                    ApiError::Conflict(id.to_owned())
                }
                _ => unavailable(e),
            })?;
        if let Err(error) = self.release(&sub.tenant, id).await {
            tracing::warn!(subscription = %id, %error, "deleted subscription's id left in its tenant's ids; skipped when listing");
        }
        Ok(())
    }
}
