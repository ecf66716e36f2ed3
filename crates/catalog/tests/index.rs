//! The catalog index against the real NATS: records written to the KV
//! bucket (before and after the watcher starts) become lookups.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use chrono::Utc;
use hookrelay_catalog::{
    settings_key, type_key, CatalogIndex, CatalogSettings, Check, EventTypeRecord, Validation,
    VersionRecord,
};
use hookrelay_test_support::{eventually, TestEnv};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

struct Fixture {
    _env: TestEnv,
    store: kv::Store,
    index: Arc<CatalogIndex>,
    shutdown: CancellationToken,
    watcher: Option<tokio::task::JoinHandle<()>>,
}

impl Fixture {
    async fn new() -> Self {
        let env = TestEnv::new();
        let client = async_nats::connect(env.config.nats.servers())
            .await
            .expect("NATS at the test URL");
        let js = jetstream::new(client);
        let store = hookrelay_core::nats::event_types_bucket(&js, &env.config)
            .await
            .expect("catalog bucket");
        Self {
            _env: env,
            store,
            index: CatalogIndex::new(),
            shutdown: CancellationToken::new(),
            watcher: None,
        }
    }

    fn start(&mut self) {
        self.watcher = Some(
            self.index
                .spawn_watcher(self.store.clone(), self.shutdown.clone()),
        );
    }

    async fn loaded(&self) {
        tokio::time::timeout(WAIT, self.index.wait_loaded())
            .await
            .expect("index loaded in time");
    }

    /// Writes `record` under its key; returns the revision.
    async fn put(&self, record: &EventTypeRecord) -> u64 {
        let value = serde_json::to_vec(record).expect("record JSON");
        self.store
            .put(record.key(), value.into())
            .await
            .expect("put")
    }

    /// Writes and waits until the index has it.
    async fn put_applied(&self, record: &EventTypeRecord) {
        let revision = self.put(record).await;
        assert!(
            self.index.wait_for_revision(revision, WAIT).await,
            "revision {revision} applied"
        );
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(watcher) = self.watcher.take() {
            tokio::time::timeout(WAIT, watcher)
                .await
                .expect("watcher stops")
                .expect("watcher did not panic");
        }
    }
}

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
        description: format!("{name} events"),
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

const COURSE_ID_INT: &str =
    r#"{"type":"object","properties":{"course_id":{"type":"integer"}},"required":["course_id"]}"#;
const COURSE_ID_STRING: &str =
    r#"{"type":"object","properties":{"course_id":{"type":"string"}},"required":["course_id"]}"#;

#[tokio::test]
async fn lookups_follow_the_bucket() {
    let mut fx = Fixture::new().await;

    // Written before the watcher starts: read as history.
    let global = record(None, "course.created", Validation::Reject, COURSE_ID_INT);
    fx.put(&global).await;
    fx.store
        .put(
            settings_key("acme"),
            serde_json::to_vec(&CatalogSettings { strict: true })
                .expect("JSON")
                .into(),
        )
        .await
        .expect("put settings");
    // Not a record: ignored, and nothing after it is held up.
    fx.store
        .put(type_key(Some("acme"), "broken"), "not json".into())
        .await
        .expect("put");

    fx.start();
    fx.loaded().await;
    let found = fx
        .index
        .lookup("acme", "course.created")
        .expect("global type seen by a tenant");
    assert_eq!(found.tenant, None);
    assert_eq!(found.version, 1);
    assert!(
        matches!(found.check(&raw(r#"{"course_id":"42"}"#)), Check::Invalid(v) if v.path == "data.course_id")
    );
    assert!(fx.index.settings("acme").strict);
    assert!(!fx.index.settings("globex").strict);
    assert!(fx.index.lookup("acme", "broken").is_none());
    assert!(fx.index.has_match("acme", "course.*"));

    // A tenant's own type shadows the global one, for that tenant only.
    let own = record(
        Some("acme"),
        "course.created",
        Validation::Warn,
        COURSE_ID_STRING,
    );
    fx.put_applied(&own).await;
    let found = fx.index.lookup("acme", "course.created").expect("own type");
    assert_eq!(found.tenant.as_deref(), Some("acme"));
    assert_eq!(found.validation, Validation::Warn);
    assert_eq!(found.check(&raw(r#"{"course_id":"42"}"#)), Check::Valid);
    let other = fx.index.lookup("globex", "course.created").expect("global");
    assert_eq!(other.tenant, None);

    // Archived: not looked up, so the global one shows through again.
    let mut archived = own.clone();
    archived.archived = true;
    fx.put_applied(&archived).await;
    assert_eq!(
        fx.index
            .lookup("acme", "course.created")
            .expect("global again")
            .tenant,
        None
    );

    // An incompatible schema as a new version: recompiled on the put.
    let mut v2 = global.clone();
    v2.versions.push(VersionRecord {
        version: 2,
        schema: COURSE_ID_STRING.to_owned(),
        examples: vec![r#"{"course_id":"c-1"}"#.to_owned()],
        created_at: Utc::now(),
    });
    fx.put_applied(&v2).await;
    let found = fx.index.lookup("globex", "course.created").expect("v2");
    assert_eq!(found.version, 2);
    assert_eq!(found.examples, vec![r#"{"course_id":"c-1"}"#.to_owned()]);
    assert_eq!(found.check(&raw(r#"{"course_id":"42"}"#)), Check::Valid);
    assert!(matches!(
        found.check(&raw(r#"{"course_id":42}"#)),
        Check::Invalid(_)
    ));

    // A schema that no longer compiles checks nothing, and breaks nothing.
    let mut bad = v2.clone();
    bad.versions[1].schema = r#"{"$ref":"https://example.com/s.json"}"#.to_owned();
    fx.put_applied(&bad).await;
    let found = fx
        .index
        .lookup("globex", "course.created")
        .expect("still there");
    assert!(found.schema.is_none());
    assert_eq!(found.check(&raw(r#"{"course_id":42}"#)), Check::Unchecked);

    // Deleted keys leave the index.
    fx.store.delete(global.key()).await.expect("delete");
    fx.store.delete(settings_key("acme")).await.expect("delete");
    let index = fx.index.clone();
    eventually("deletes applied", WAIT, || {
        let index = index.clone();
        async move {
            (index.lookup("globex", "course.created").is_none() && !index.settings("acme").strict)
                .then_some(())
        }
    })
    .await;
    assert!(fx.index.is_empty_for("acme"));
    assert!(!fx.index.has_match("acme", "course.*"));

    fx.stop().await;
}

#[tokio::test]
async fn an_empty_bucket_is_loaded_at_once() {
    let mut fx = Fixture::new().await;
    fx.start();
    fx.loaded().await;
    assert!(fx.index.is_empty_for("acme"));

    // And the first write after that still arrives.
    fx.put_applied(&record(Some("acme"), "a.b", Validation::Off, ""))
        .await;
    let found = fx.index.lookup("acme", "a.b").expect("seen");
    assert_eq!(found.check(&raw("{}")), Check::Unchecked);
    fx.stop().await;
}
