//! Subscriptions in the JetStream KV bucket: one key per subscription id,
//! the value the JSON of the core model, the revision the KV revision.

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::TryStreamExt;
use hookrelay_core::subscription::{Subscription, ID_PREFIX};

use crate::error::ApiError;

/// Reads and writes subscriptions with revision checks.
#[derive(Clone)]
pub struct Store {
    kv: kv::Store,
}

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
    pub fn new(kv: kv::Store) -> Self {
        Self { kv }
    }

    /// A fresh id, sorting by creation time.
    pub fn mint_id() -> String {
        format!("{ID_PREFIX}{}", ulid::Ulid::new())
    }

    pub async fn create(&self, mut sub: Subscription) -> Result<Subscription, ApiError> {
        sub.revision =
            self.kv
                .create(&sub.id, encode(&sub)?)
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => ApiError::Conflict(sub.id.clone()),
                    _ => unavailable(e),
                })?;
        Ok(sub)
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

    /// Subscriptions with ids after `after`, in id order, at most `limit`,
    /// of `tenant` if given; and whether more may follow.
    pub async fn list(
        &self,
        tenant: Option<&str>,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<Subscription>, bool), ApiError> {
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
            if tenant.is_some_and(|t| t != sub.tenant) {
                continue;
            }
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

    pub async fn delete(&self, id: &str, expected: u64) -> Result<(), ApiError> {
        self.kv
            .delete_expect_revision(id, Some(expected))
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => ApiError::Conflict(id.to_owned()),
                _ if e.to_string().contains("wrong last sequence") => {
                    ApiError::Conflict(id.to_owned())
                }
                _ => unavailable(e),
            })
    }
}
