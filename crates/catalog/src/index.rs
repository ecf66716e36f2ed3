//! In-memory catalog, kept current by watching the KV bucket, so ingest
//! checks an event against a schema saved a moment ago without a restart,
//! and without a KV read per event.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use async_nats::jetstream::kv;
use hookrelay_core::index::{follow_bucket, BucketProgress, FollowsBucket};
use hookrelay_core::subscription::pattern_matches;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::model::{parse_key, CatalogSettings, EventTypeRecord, Key, Validation};
use crate::schema::{compile_optional, Schema, SchemaError, Violation};

/// An event type as ingest uses it: its current version, compiled once.
#[derive(Debug, Clone)]
pub struct CompiledType {
    /// `None` for a global type.
    pub tenant: Option<String>,
    pub name: String,
    /// The current version; 0 if the record has none.
    pub version: u32,
    pub validation: Validation,
    pub archived: bool,
    /// `None`: any data (no schema, or one that no longer compiles).
    pub schema: Option<Schema>,
    pub examples: Vec<String>,
}

/// What checking an event's `data` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Valid,
    Invalid(Violation),
    /// Not checked: validation is off, the type is archived, or it has no
    /// schema.
    Unchecked,
}

impl CompiledType {
    /// Compiles the record's current version; the error if its schema does
    /// not compile.
    pub fn compile(record: &EventTypeRecord) -> Result<CompiledType, SchemaError> {
        let schema = match record.current() {
            Some(version) => compile_optional(&version.schema)?,
            None => None,
        };
        Ok(Self::with_schema(record, schema))
    }

    fn with_schema(record: &EventTypeRecord, schema: Option<Schema>) -> CompiledType {
        let current = record.current();
        CompiledType {
            tenant: record.tenant.clone(),
            name: record.name.clone(),
            version: current.map_or(0, |v| v.version),
            validation: record.validation,
            archived: record.archived,
            schema,
            examples: current.map(|v| v.examples.clone()).unwrap_or_default(),
        }
    }

    /// Checks an event's `data` against the current schema. With validation
    /// off nothing is parsed.
    pub fn check(&self, data: &RawValue) -> Check {
        if self.validation == Validation::Off || self.archived {
            return Check::Unchecked;
        }
        match &self.schema {
            None => Check::Unchecked,
            Some(schema) if schema.accepts_anything() => Check::Unchecked,
            Some(schema) => match schema.check(data) {
                Ok(()) => Check::Valid,
                Err(violation) => Check::Invalid(violation),
            },
        }
    }
}

#[derive(Default)]
struct State {
    /// Tenant → type name → type: nested so that a lookup by two `&str`
    /// builds no key.
    tenants: HashMap<String, HashMap<String, Arc<CompiledType>>>,
    global: HashMap<String, Arc<CompiledType>>,
    settings: HashMap<String, CatalogSettings>,
}

/// The catalog's event types (tenant and global) and tenants' settings.
pub struct CatalogIndex {
    state: RwLock<State>,
    progress: BucketProgress,
}

impl CatalogIndex {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: RwLock::default(),
            progress: BucketProgress::default(),
        })
    }

    // A panic while holding the lock leaves maps that are still whole (each
    // write is one insert or remove), so a poisoned lock is used as is
    // rather than failing every later event.
    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The type an event of `tenant` is checked against: the tenant's own
    /// if it has one that is not archived, else the global one if not
    /// archived. On the ingest path: a read lock and hash lookups.
    pub fn lookup(&self, tenant: &str, event_type: &str) -> Option<Arc<CompiledType>> {
        let state = self.read();
        state
            .tenants
            .get(tenant)
            .and_then(|types| types.get(event_type))
            .filter(|t| !t.archived)
            .or_else(|| state.global.get(event_type).filter(|t| !t.archived))
            .cloned()
    }

    /// The tenant's settings; the defaults if it saved none.
    pub fn settings(&self, tenant: &str) -> CatalogSettings {
        self.read()
            .settings
            .get(tenant)
            .copied()
            .unwrap_or_default()
    }

    /// Whether any non-archived type of the tenant's catalog or the global
    /// one matches a subscription's `pattern` (for strict catalogs).
    pub fn has_match(&self, tenant: &str, pattern: &str) -> bool {
        let state = self.read();
        let matches = |types: &HashMap<String, Arc<CompiledType>>| {
            types
                .values()
                .any(|t| !t.archived && pattern_matches(pattern, &t.name))
        };
        state.tenants.get(tenant).is_some_and(matches) || matches(&state.global)
    }

    /// Whether the tenant sees no type at all (its own or global) that is
    /// not archived.
    pub fn is_empty_for(&self, tenant: &str) -> bool {
        let state = self.read();
        let none = |types: &HashMap<String, Arc<CompiledType>>| types.values().all(|t| t.archived);
        state.tenants.get(tenant).is_none_or(none) && none(&state.global)
    }

    /// Adds or replaces a type under the key's tenant and name. Its current
    /// schema is compiled here, once; one that does not compile (written by
    /// an older or faulty writer) is logged and the type checks nothing,
    /// rather than refusing every event of it.
    pub fn put_type(&self, tenant: Option<&str>, name: &str, record: &EventTypeRecord) {
        let compiled = match CompiledType::compile(record) {
            Ok(compiled) => compiled,
            Err(error) => {
                tracing::error!(
                    tenant = tenant.unwrap_or("<global>"),
                    event_type = %name,
                    %error,
                    "event type's schema does not compile; its events are not checked"
                );
                CompiledType::with_schema(record, None)
            }
        };
        // The key is what lookups go by; the record's own fields follow it.
        let compiled = Arc::new(CompiledType {
            tenant: tenant.map(str::to_owned),
            name: name.to_owned(),
            ..compiled
        });
        let mut state = self.write();
        match tenant {
            Some(tenant) => {
                state
                    .tenants
                    .entry(tenant.to_owned())
                    .or_default()
                    .insert(name.to_owned(), compiled);
            }
            None => {
                state.global.insert(name.to_owned(), compiled);
            }
        }
    }

    pub fn remove_type(&self, tenant: Option<&str>, name: &str) {
        let mut state = self.write();
        match tenant {
            Some(tenant) => {
                if let Some(types) = state.tenants.get_mut(tenant) {
                    types.remove(name);
                    if types.is_empty() {
                        state.tenants.remove(tenant);
                    }
                }
            }
            None => {
                state.global.remove(name);
            }
        }
    }

    pub fn put_settings(&self, tenant: &str, settings: CatalogSettings) {
        self.write().settings.insert(tenant.to_owned(), settings);
    }

    pub fn remove_settings(&self, tenant: &str) {
        self.write().settings.remove(tenant);
    }

    /// Whether the bucket's contents at start have been read.
    pub fn is_loaded(&self) -> bool {
        self.progress.is_loaded()
    }

    /// Waits until the bucket's contents at start have been read.
    pub async fn wait_loaded(&self) {
        self.progress.wait_loaded().await
    }

    /// The last KV revision applied.
    pub fn revision(&self) -> u64 {
        self.progress.revision()
    }

    /// Waits (at most `timeout`) until every KV write up to `revision` is in
    /// the index; false if it is not by then.
    pub async fn wait_for_revision(&self, revision: u64, timeout: Duration) -> bool {
        self.progress.wait_for_revision(revision, timeout).await
    }

    fn apply(&self, entry: &kv::Entry) {
        let Some(key) = parse_key(&entry.key) else {
            tracing::warn!(key = %entry.key, "key in the catalog bucket is not the catalog's, ignoring it");
            return;
        };
        let put = matches!(entry.operation, kv::Operation::Put);
        match key {
            Key::Type { tenant, name } if put => {
                match serde_json::from_slice::<EventTypeRecord>(&entry.value) {
                    Ok(mut record) => {
                        record.revision = entry.revision;
                        self.put_type(tenant.as_deref(), &name, &record);
                    }
                    Err(error) => {
                        tracing::error!(key = %entry.key, %error, "unreadable event type in KV, ignoring it")
                    }
                }
            }
            Key::Type { tenant, name } => self.remove_type(tenant.as_deref(), &name),
            Key::Settings { tenant } if put => {
                match serde_json::from_slice::<CatalogSettings>(&entry.value) {
                    Ok(settings) => self.put_settings(&tenant, settings),
                    Err(error) => {
                        tracing::error!(key = %entry.key, %error, "unreadable catalog settings in KV, ignoring them")
                    }
                }
            }
            Key::Settings { tenant } => self.remove_settings(&tenant),
        }
    }

    /// Loads the bucket and follows its changes until `shutdown`, resuming
    /// after the last revision seen when the watch breaks.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        store: kv::Store,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        follow_bucket(self.clone(), "event-type catalog bucket", store, shutdown)
    }
}

impl FollowsBucket for CatalogIndex {
    fn progress(&self) -> &BucketProgress {
        &self.progress
    }

    fn apply(&self, entry: &kv::Entry) {
        CatalogIndex::apply(self, entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VersionRecord;
    use chrono::Utc;

    fn record(
        tenant: Option<&str>,
        name: &str,
        validation: Validation,
        schema: &str,
    ) -> EventTypeRecord {
        let now = Utc::now();
        EventTypeRecord {
            tenant: tenant.map(str::to_owned),
            name: name.to_owned(),
            description: String::new(),
            validation,
            archived: false,
            versions: vec![VersionRecord {
                version: 1,
                schema: schema.to_owned(),
                examples: vec![],
                created_at: now,
            }],
            created_at: now,
            updated_at: now,
            revision: 0,
        }
    }

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).expect("raw JSON")
    }

    const INT_A: &str = r#"{"properties":{"a":{"type":"integer"}}}"#;

    #[test]
    fn tenant_types_shadow_global_ones_unless_archived() {
        let index = CatalogIndex::new();
        index.put_type(None, "x.y", &record(None, "x.y", Validation::Warn, ""));
        assert_eq!(
            index.lookup("acme", "x.y").map(|t| t.tenant.clone()),
            Some(None)
        );

        let mut own = record(Some("acme"), "x.y", Validation::Reject, INT_A);
        index.put_type(Some("acme"), "x.y", &own);
        let found = index.lookup("acme", "x.y").expect("own type");
        assert_eq!(found.tenant.as_deref(), Some("acme"));
        assert_eq!(found.validation, Validation::Reject);
        // Another tenant still sees the global one.
        assert_eq!(
            index.lookup("globex", "x.y").map(|t| t.tenant.clone()),
            Some(None)
        );

        own.archived = true;
        index.put_type(Some("acme"), "x.y", &own);
        assert_eq!(
            index.lookup("acme", "x.y").map(|t| t.tenant.clone()),
            Some(None)
        );
        assert!(index.has_match("acme", "x.*"));

        index.remove_type(None, "x.y");
        assert!(index.lookup("acme", "x.y").is_none());
        assert!(!index.has_match("acme", "x.*"));
        assert!(index.is_empty_for("acme"));
        assert!(index.lookup("acme", "x.z").is_none());
    }

    #[test]
    fn has_match_uses_subscription_patterns() {
        let index = CatalogIndex::new();
        index.put_type(
            Some("acme"),
            "course_stat.created",
            &record(Some("acme"), "course_stat.created", Validation::Off, ""),
        );
        index.put_type(
            None,
            "user.signed_up",
            &record(None, "user.signed_up", Validation::Off, ""),
        );
        for pattern in ["*", "course_stat.*", "course_stat.created", "user.*"] {
            assert!(index.has_match("acme", pattern), "{pattern}");
        }
        for pattern in ["course.*", "course_stat", "course_stat.created.*"] {
            assert!(!index.has_match("acme", pattern), "{pattern}");
        }
        assert!(!index.has_match("globex", "course_stat.*"));
        assert!(index.has_match("globex", "user.signed_up"));
        assert!(!index.is_empty_for("globex"));
    }

    #[test]
    fn checks_follow_the_mode() {
        let index = CatalogIndex::new();
        index.put_type(
            Some("t"),
            "off",
            &record(Some("t"), "off", Validation::Off, INT_A),
        );
        index.put_type(
            Some("t"),
            "warn",
            &record(Some("t"), "warn", Validation::Warn, INT_A),
        );
        index.put_type(
            Some("t"),
            "any",
            &record(Some("t"), "any", Validation::Reject, ""),
        );
        let check = |name: &str, data: &str| index.lookup("t", name).expect(name).check(&raw(data));

        assert_eq!(check("off", r#"{"a":"no"}"#), Check::Unchecked);
        assert_eq!(check("warn", r#"{"a":1}"#), Check::Valid);
        match check("warn", r#"{"a":"1"}"#) {
            Check::Invalid(violation) => assert_eq!(violation.path, "data.a"),
            other => panic!("{other:?}"),
        }
        assert_eq!(check("any", r#"{"a":"no"}"#), Check::Unchecked);
    }

    #[test]
    fn a_schema_that_does_not_compile_checks_nothing() {
        let index = CatalogIndex::new();
        let bad = record(
            Some("t"),
            "bad",
            Validation::Reject,
            r#"{"$ref":"https://example.com/s.json"}"#,
        );
        assert!(CompiledType::compile(&bad).is_err());
        index.put_type(Some("t"), "bad", &bad);
        let found = index.lookup("t", "bad").expect("still indexed");
        assert!(found.schema.is_none());
        assert_eq!(found.check(&raw("{}")), Check::Unchecked);
    }

    #[test]
    fn settings_default_until_saved() {
        let index = CatalogIndex::new();
        assert!(!index.settings("acme").strict);
        index.put_settings("acme", CatalogSettings { strict: true });
        assert!(index.settings("acme").strict);
        assert!(!index.settings("globex").strict);
        index.remove_settings("acme");
        assert!(!index.settings("acme").strict);
    }
}
