//! The `hookrelay.v1.EventTypes` gRPC service: the event-type catalog,
//! stored in its own KV bucket (keys in [`hookrelay_catalog::model`]).
//!
//! Scope: a request with `global` reads or writes the catalog every tenant
//! shares (written by admin tokens only); otherwise `tenant` names the
//! tenant, which a tenant token may leave empty for its own.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::Utc;
use futures::TryStreamExt;
use hookrelay_catalog::model::{
    settings_key, type_key, CatalogSettings, EventTypeRecord, Validation, VersionRecord,
};
use hookrelay_catalog::{compat, schema, CatalogIndex};
use hookrelay_proto::auth::{Caller, TenantError};
use hookrelay_proto::timestamp;
use hookrelay_proto::v1 as pb;
use hookrelay_proto::v1::event_types_server::{EventTypes, EventTypesServer};
use tonic::{Request, Response, Status};

use crate::error::ApiError;

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;
const MAX_DESCRIPTION: usize = 4096;
const MAX_EXAMPLES: usize = 16;
/// A schema or an example: kept well under a KV value's limit together.
const MAX_DOCUMENT: usize = 64 * 1024;
/// How long a write waits for this process's catalog index to see the
/// bucket as it is, before a check that reads the index.
const CATCH_UP: Duration = Duration::from_secs(5);

/// The catalog as the subscription service reads it: the index (kept
/// current by a watch) and the bucket (to know how current it must be).
#[derive(Clone)]
pub struct Catalog {
    pub index: Arc<CatalogIndex>,
    pub bucket: kv::Store,
}

impl Catalog {
    /// Waits until the index holds every catalog write made so far, so a
    /// type created a moment ago is seen (at most [`CATCH_UP`]).
    pub async fn caught_up(&self) -> Result<&CatalogIndex, ApiError> {
        let info = self
            .bucket
            .stream
            .get_info()
            .await
            .map_err(|e| ApiError::Unavailable(format!("event-type catalog: {e}")))?;
        if !self
            .index
            .wait_for_revision(info.state.last_sequence, CATCH_UP)
            .await
        {
            return Err(ApiError::Unavailable(
                "the event-type catalog index is behind its bucket; try again".into(),
            ));
        }
        Ok(&self.index)
    }
}

/// Serves the catalog from its KV bucket.
#[derive(Clone)]
pub struct EventTypeService {
    bucket: kv::Store,
}

/// Whose catalog a request reads or writes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Scope {
    Tenant(String),
    Global,
}

impl Scope {
    fn tenant(&self) -> Option<&str> {
        match self {
            Scope::Tenant(tenant) => Some(tenant),
            Scope::Global => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Scope::Tenant(tenant) => format!("tenant {tenant}"),
            Scope::Global => "the global catalog".into(),
        }
    }
}

/// The scope a request names, checked against its caller.
fn scope(caller: &Caller, tenant: &str, global: bool, write: bool) -> Result<Scope, ApiError> {
    if global {
        if !tenant.is_empty() {
            return Err(ApiError::invalid(
                "tenant",
                "must be empty with global (the global catalog belongs to no tenant)",
            ));
        }
        if write && caller.tenant().is_some() {
            return Err(ApiError::PermissionDenied(
                "the global catalog is written with an admin token only".into(),
            ));
        }
        return Ok(Scope::Global);
    }
    Ok(Scope::Tenant(tenant_of(caller, tenant)?))
}

/// The tenant a request names, by the API's rule ([`Caller::tenant_for`]);
/// an admin token may also set `global` here.
fn tenant_of(caller: &Caller, tenant: &str) -> Result<String, ApiError> {
    caller.tenant_for(tenant).map_err(|error| match error {
        TenantError::Missing => ApiError::invalid(
            "tenant",
            "is required with an admin token (or set global for the global catalog)",
        ),
        error => ApiError::tenant("tenant", error),
    })
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::invalid("name", "is required"));
    }
    hookrelay_core::event::check_token_path(name, true).map_err(|m| {
        ApiError::invalid(
            "name",
            format!("{m} (an event type, no wildcards: \"course_stat.created\")"),
        )
    })
}

fn validation_of(value: i32) -> Result<Validation, ApiError> {
    match pb::SchemaValidation::try_from(value) {
        Ok(pb::SchemaValidation::Unspecified | pb::SchemaValidation::Off) => Ok(Validation::Off),
        Ok(pb::SchemaValidation::Warn) => Ok(Validation::Warn),
        Ok(pb::SchemaValidation::Reject) => Ok(Validation::Reject),
        Err(_) => Err(ApiError::invalid(
            "validation",
            format!("{value} is not a SchemaValidation (off, warn or reject)"),
        )),
    }
}

fn validation_to_proto(validation: Validation) -> pb::SchemaValidation {
    match validation {
        Validation::Off => pb::SchemaValidation::Off,
        Validation::Warn => pb::SchemaValidation::Warn,
        Validation::Reject => pb::SchemaValidation::Reject,
    }
}

/// A version's schema and examples, checked: the schema compiles as draft
/// 2020-12 without remote references, and every example is a JSON object
/// it accepts.
fn checked_version(
    description: &str,
    schema_text: &str,
    examples: &[String],
) -> Result<Option<serde_json::Value>, ApiError> {
    if description.len() > MAX_DESCRIPTION {
        return Err(ApiError::invalid(
            "description",
            format!("at most {MAX_DESCRIPTION} bytes"),
        ));
    }
    if schema_text.len() > MAX_DOCUMENT {
        return Err(ApiError::invalid(
            "schema",
            format!("at most {MAX_DOCUMENT} bytes"),
        ));
    }
    if examples.len() > MAX_EXAMPLES {
        return Err(ApiError::invalid(
            "examples",
            format!("at most {MAX_EXAMPLES}"),
        ));
    }
    if let Some((i, _)) = examples
        .iter()
        .enumerate()
        .find(|(_, e)| e.len() > MAX_DOCUMENT)
    {
        return Err(ApiError::invalid(
            format!("examples[{i}]"),
            format!("at most {MAX_DOCUMENT} bytes"),
        ));
    }
    if schema_text.trim().is_empty() {
        for (i, example) in examples.iter().enumerate() {
            let value: serde_json::Value = serde_json::from_str(example).map_err(|e| {
                ApiError::invalid(format!("examples[{i}]"), format!("not JSON: {e}"))
            })?;
            if !value.is_object() {
                return Err(ApiError::invalid(
                    format!("examples[{i}]"),
                    "must be a JSON object (an event's data)",
                ));
            }
        }
        return Ok(None);
    }
    let compiled =
        schema::compile(schema_text).map_err(|e| ApiError::invalid("schema", e.to_string()))?;
    schema::check_examples(&compiled, examples)
        .map_err(|e| ApiError::invalid("examples", e.to_string()))?;
    let value = serde_json::from_str(schema_text)
        .map_err(|e| ApiError::invalid("schema", format!("not JSON: {e}")))?;
    Ok(Some(value))
}

/// A schema text as a value to compare (empty: accepts any data).
fn schema_value(text: &str) -> Result<serde_json::Value, ApiError> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Bool(true));
    }
    serde_json::from_str(text).map_err(|e| ApiError::Internal(format!("stored schema: {e}")))
}

/// The API view of a stored type.
pub fn to_proto(record: &EventTypeRecord) -> pb::EventType {
    pb::EventType {
        tenant: record.tenant.clone().unwrap_or_default(),
        global: record.tenant.is_none(),
        name: record.name.clone(),
        description: record.description.clone(),
        validation: validation_to_proto(record.validation) as i32,
        archived: record.archived,
        versions: record
            .versions
            .iter()
            .map(|v| pb::EventTypeVersion {
                version: v.version,
                schema: v.schema.clone(),
                examples: v.examples.clone(),
                created_at: Some(timestamp(v.created_at)),
            })
            .collect(),
        created_at: Some(timestamp(record.created_at)),
        updated_at: Some(timestamp(record.updated_at)),
        revision: record.revision,
    }
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("event-type catalog: {e}"))
}

impl EventTypeService {
    pub fn new(bucket: kv::Store) -> Self {
        Self { bucket }
    }

    /// The tonic server of this service.
    pub fn into_server(self) -> EventTypesServer<Self> {
        EventTypesServer::new(self)
    }

    async fn read(&self, scope: &Scope, name: &str) -> Result<EventTypeRecord, ApiError> {
        let missing = || {
            ApiError::Missing(format!(
                "event type {name} not found in {}",
                scope.describe()
            ))
        };
        let entry = self
            .bucket
            .entry(type_key(scope.tenant(), name))
            .await
            .map_err(unavailable)?
            .filter(|e| e.operation == kv::Operation::Put)
            .ok_or_else(missing)?;
        let mut record: EventTypeRecord = serde_json::from_slice(&entry.value)
            .map_err(|e| ApiError::Internal(format!("event type {name} is unreadable: {e}")))?;
        record.revision = entry.revision;
        Ok(record)
    }

    async fn write(
        &self,
        mut record: EventTypeRecord,
        revision: u64,
    ) -> Result<EventTypeRecord, ApiError> {
        let key = type_key(record.tenant.as_deref(), &record.name);
        let value = serde_json::to_vec(&record).expect("records serialize");
        record.revision = self
            .bucket
            .update(&key, value.into(), revision)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => ApiError::Stale(format!(
                    "event type {} was changed concurrently: read it again and retry",
                    record.name
                )),
                _ => unavailable(e),
            })?;
        Ok(record)
    }

    /// Every type of `scope` (a tenant's with the global ones it does not
    /// shadow), by name.
    async fn all(&self, scope: &Scope) -> Result<Vec<EventTypeRecord>, ApiError> {
        let own_prefix = match scope {
            Scope::Tenant(tenant) => format!("t.{tenant}."),
            Scope::Global => "g.".into(),
        };
        // Catalogs are small (types, not events): one pass over the keys.
        let keys: Vec<String> = self
            .bucket
            .keys()
            .await
            .map_err(unavailable)?
            .try_collect()
            .await
            .map_err(unavailable)?;
        let mut own = std::collections::BTreeMap::new();
        let mut global = std::collections::BTreeMap::new();
        for key in keys {
            if let Some(name) = key.strip_prefix(&own_prefix) {
                own.insert(name.to_owned(), key.clone());
            } else if let Some(name) = key.strip_prefix("g.") {
                if scope != &Scope::Global {
                    global.insert(name.to_owned(), key.clone());
                }
            }
        }
        for (name, key) in global {
            own.entry(name).or_insert(key);
        }
        let mut records = Vec::with_capacity(own.len());
        for key in own.into_values() {
            let Some(entry) = self.bucket.entry(&key).await.map_err(unavailable)? else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            match serde_json::from_slice::<EventTypeRecord>(&entry.value) {
                Ok(mut record) => {
                    record.revision = entry.revision;
                    records.push(record);
                }
                Err(error) => {
                    tracing::error!(%key, %error, "unreadable event type, left out of the list")
                }
            }
        }
        Ok(records)
    }
}

#[tonic::async_trait]
impl EventTypes for EventTypeService {
    async fn create_event_type(
        &self,
        request: Request<pb::CreateEventTypeRequest>,
    ) -> Result<Response<pb::EventType>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let scope = scope(&caller, &request.tenant, request.global, true)?;
        check_name(&request.name)?;
        let validation = validation_of(request.validation)?;
        checked_version(&request.description, &request.schema, &request.examples)?;
        let now = Utc::now();
        let mut record = EventTypeRecord {
            tenant: scope.tenant().map(str::to_owned),
            name: request.name.clone(),
            description: request.description,
            validation,
            archived: false,
            versions: vec![VersionRecord {
                version: 1,
                schema: request.schema,
                examples: request.examples,
                created_at: now,
            }],
            created_at: now,
            updated_at: now,
            revision: 0,
        };
        let key = type_key(scope.tenant(), &record.name);
        let value = serde_json::to_vec(&record).expect("records serialize");
        record.revision =
            self.bucket
                .create(&key, value.into())
                .await
                .map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => ApiError::Exists(format!(
                    "event type {} already exists in {} (archived types too): update it instead",
                    record.name,
                    scope.describe()
                )),
                    _ => unavailable(e),
                })?;
        tracing::info!(event_type = %record.name, scope = %scope.describe(), "event type created");
        Ok(Response::new(to_proto(&record)))
    }

    async fn get_event_type(
        &self,
        request: Request<pb::GetEventTypeRequest>,
    ) -> Result<Response<pb::EventType>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let scope = scope(&caller, &request.tenant, request.global, false)?;
        check_name(&request.name)?;
        let record = self.read(&scope, &request.name).await?;
        Ok(Response::new(to_proto(&record)))
    }

    async fn list_event_types(
        &self,
        request: Request<pb::ListEventTypesRequest>,
    ) -> Result<Response<pb::ListEventTypesResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let scope = scope(&caller, &request.tenant, request.global, false)?;
        let limit = match request.page_size {
            0 => DEFAULT_PAGE,
            n if n > MAX_PAGE => {
                return Err(ApiError::invalid("page_size", format!("at most {MAX_PAGE}")).into())
            }
            n => n,
        } as usize;
        let mut records: Vec<EventTypeRecord> = self
            .all(&scope)
            .await?
            .into_iter()
            .filter(|r| request.include_archived || !r.archived)
            .filter(|r| r.name.as_str() > request.page_token.as_str())
            .collect();
        let more = records.len() > limit;
        records.truncate(limit);
        let next_page_token = match (more, records.last()) {
            (true, Some(last)) => last.name.clone(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListEventTypesResponse {
            event_types: records.iter().map(to_proto).collect(),
            next_page_token,
        }))
    }

    async fn update_event_type(
        &self,
        request: Request<pb::UpdateEventTypeRequest>,
    ) -> Result<Response<pb::EventType>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let scope = scope(&caller, &request.tenant, request.global, true)?;
        check_name(&request.name)?;
        let validation = validation_of(request.validation)?;
        let new_schema = checked_version(&request.description, &request.schema, &request.examples)?;
        let mut record = self.read(&scope, &request.name).await?;
        if request.expected_revision != 0 && request.expected_revision != record.revision {
            return Err(ApiError::Stale(format!(
                "event type {} is at revision {}, not {}: read it again and retry",
                record.name, record.revision, request.expected_revision
            ))
            .into());
        }
        let now = Utc::now();
        let revision = record.revision;
        let current = record.versions.last().cloned().ok_or_else(|| {
            ApiError::Internal(format!("event type {} has no version", record.name))
        })?;
        if request.new_version {
            record.versions.push(VersionRecord {
                version: current.version + 1,
                schema: request.schema,
                examples: request.examples,
                created_at: now,
            });
        } else {
            let old = schema_value(&current.schema)?;
            let new = new_schema.unwrap_or(serde_json::Value::Bool(true));
            if old != new {
                compat::backward_compatible(&old, &new).map_err(|difference| {
                    ApiError::Incompatible(format!(
                        "event type {} v{}: the new schema is not backward compatible ({difference}); publish it as version {} with new_version",
                        record.name,
                        current.version,
                        current.version + 1
                    ))
                })?;
            }
            let last = record.versions.last_mut().expect("checked above");
            last.schema = request.schema;
            last.examples = request.examples;
        }
        record.description = request.description;
        record.validation = validation;
        record.updated_at = now;
        let record = self.write(record, revision).await?;
        tracing::info!(
            event_type = %record.name,
            scope = %scope.describe(),
            version = record.versions.last().map_or(0, |v| v.version),
            "event type updated"
        );
        Ok(Response::new(to_proto(&record)))
    }

    async fn archive_event_type(
        &self,
        request: Request<pb::ArchiveEventTypeRequest>,
    ) -> Result<Response<pb::EventType>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let scope = scope(&caller, &request.tenant, request.global, true)?;
        check_name(&request.name)?;
        let mut record = self.read(&scope, &request.name).await?;
        if record.archived == request.archived {
            return Ok(Response::new(to_proto(&record)));
        }
        let revision = record.revision;
        record.archived = request.archived;
        record.updated_at = Utc::now();
        let record = self.write(record, revision).await?;
        tracing::info!(event_type = %record.name, scope = %scope.describe(), archived = record.archived, "event type archived");
        Ok(Response::new(to_proto(&record)))
    }

    async fn get_catalog_settings(
        &self,
        request: Request<pb::GetCatalogSettingsRequest>,
    ) -> Result<Response<pb::CatalogSettings>, Status> {
        let caller = Caller::of(&request);
        let tenant = tenant_of(&caller, &request.into_inner().tenant)?;
        let settings = match self
            .bucket
            .entry(settings_key(&tenant))
            .await
            .map_err(unavailable)?
        {
            Some(entry) if entry.operation == kv::Operation::Put => {
                serde_json::from_slice::<CatalogSettings>(&entry.value).map_err(|e| {
                    ApiError::Internal(format!("catalog settings of {tenant} are unreadable: {e}"))
                })?
            }
            _ => CatalogSettings::default(),
        };
        Ok(Response::new(pb::CatalogSettings {
            tenant,
            strict: settings.strict,
        }))
    }

    async fn set_catalog_settings(
        &self,
        request: Request<pb::SetCatalogSettingsRequest>,
    ) -> Result<Response<pb::CatalogSettings>, Status> {
        let caller = Caller::of(&request);
        let settings = request
            .into_inner()
            .settings
            .ok_or_else(|| ApiError::invalid("settings", "is required"))?;
        let tenant = tenant_of(&caller, &settings.tenant)?;
        let value = serde_json::to_vec(&CatalogSettings {
            strict: settings.strict,
        })
        .expect("settings serialize");
        self.bucket
            .put(settings_key(&tenant), value.into())
            .await
            .map_err(unavailable)?;
        tracing::info!(%tenant, strict = settings.strict, "catalog settings changed");
        Ok(Response::new(pb::CatalogSettings {
            tenant,
            strict: settings.strict,
        }))
    }
}
