//! `hookctl event-type` as a user runs it, against a stand-in EventTypes
//! server that keeps types in memory and follows the proto's contract
//! (scopes, revisions, versions, a compatibility check), until the real
//! server lands and tests/hookctl.rs runs these against hookrelay.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hookrelay_proto::v1 as pb;
use hookrelay_proto::v1::event_types_server::{EventTypes, EventTypesServer};
use serde_json::Value;
use tonic::{Request, Response, Status};

const TOKEN: &str = "test-token";
/// The tenant a request naming none gets, as with a tenant token.
const OWN_TENANT: &str = "acme";

#[derive(Default)]
struct State {
    /// By (tenant, or "" for global) and name.
    types: BTreeMap<(String, String), pb::EventType>,
    revision: u64,
    strict: BTreeMap<String, bool>,
    updates: Vec<pb::UpdateEventTypeRequest>,
    tenants_asked: Vec<String>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

fn authorize<T>(request: &Request<T>) -> Result<(), Status> {
    match request.metadata().get("authorization") {
        Some(value) if value == format!("Bearer {TOKEN}").as_str() => Ok(()),
        _ => Err(Status::unauthenticated("missing or unknown bearer token")),
    }
}

impl Fake {
    fn scope(&self, tenant: &str, global: bool) -> String {
        self.0.lock().unwrap().tenants_asked.push(tenant.to_owned());
        match (global, tenant) {
            (true, _) => String::new(),
            (false, "") => OWN_TENANT.to_owned(),
            (false, t) => t.to_owned(),
        }
    }
}

fn required(schema: &str) -> Vec<String> {
    serde_json::from_str::<Value>(schema)
        .ok()
        .and_then(|s| s.get("required").cloned())
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl EventTypes for Fake {
    async fn create_event_type(
        &self,
        request: Request<pb::CreateEventTypeRequest>,
    ) -> Result<Response<pb::EventType>, Status> {
        authorize(&request)?;
        let r = request.into_inner();
        if r.name.contains('*') {
            return Err(Status::invalid_argument(
                "name: must be dot-separated tokens",
            ));
        }
        let scope = self.scope(&r.tenant, r.global);
        let mut state = self.0.lock().unwrap();
        let key = (scope.clone(), r.name.clone());
        if state.types.contains_key(&key) {
            return Err(Status::already_exists(format!(
                "event type {} exists",
                r.name
            )));
        }
        state.revision += 1;
        let t = pb::EventType {
            tenant: scope,
            global: r.global,
            name: r.name,
            description: r.description,
            validation: r.validation,
            archived: false,
            versions: vec![pb::EventTypeVersion {
                version: 1,
                schema: r.schema,
                examples: r.examples,
                created_at: None,
            }],
            created_at: None,
            updated_at: None,
            revision: state.revision,
        };
        state.types.insert(key, t.clone());
        Ok(Response::new(t))
    }

    async fn get_event_type(
        &self,
        request: Request<pb::GetEventTypeRequest>,
    ) -> Result<Response<pb::EventType>, Status> {
        authorize(&request)?;
        let r = request.into_inner();
        let scope = self.scope(&r.tenant, r.global);
        let state = self.0.lock().unwrap();
        state
            .types
            .get(&(scope, r.name.clone()))
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("event type {} not found", r.name)))
    }

    async fn list_event_types(
        &self,
        request: Request<pb::ListEventTypesRequest>,
    ) -> Result<Response<pb::ListEventTypesResponse>, Status> {
        authorize(&request)?;
        let r = request.into_inner();
        let scope = self.scope(&r.tenant, r.global);
        let state = self.0.lock().unwrap();
        let mut by_name: BTreeMap<String, pb::EventType> = BTreeMap::new();
        for ((tenant, name), t) in &state.types {
            if tenant.is_empty() || *tenant == scope {
                // A tenant's own type shadows the global one.
                if !tenant.is_empty() || !by_name.contains_key(name) {
                    by_name.insert(name.clone(), t.clone());
                }
            }
        }
        let mut types: Vec<pb::EventType> = by_name
            .into_values()
            .filter(|t| (r.include_archived || !t.archived) && t.name > r.page_token)
            .collect();
        let size = r.page_size.max(1) as usize;
        let more = types.len() > size;
        types.truncate(size);
        let next_page_token = if more {
            types.last().unwrap().name.clone()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListEventTypesResponse {
            event_types: types,
            next_page_token,
        }))
    }

    async fn update_event_type(
        &self,
        request: Request<pb::UpdateEventTypeRequest>,
    ) -> Result<Response<pb::EventType>, Status> {
        authorize(&request)?;
        let r = request.into_inner();
        let scope = self.scope(&r.tenant, r.global);
        let mut state = self.0.lock().unwrap();
        state.updates.push(r.clone());
        let next = state.revision + 1;
        let t = state
            .types
            .get_mut(&(scope, r.name.clone()))
            .ok_or_else(|| Status::not_found(format!("event type {} not found", r.name)))?;
        if r.expected_revision != 0 && r.expected_revision != t.revision {
            return Err(Status::failed_precondition(format!(
                "event type {} is at revision {}, not {}: read it again and retry",
                t.name, t.revision, r.expected_revision
            )));
        }
        let current = t.versions.last().unwrap().clone();
        if r.new_version {
            t.versions.push(pb::EventTypeVersion {
                version: current.version + 1,
                schema: r.schema,
                examples: r.examples,
                created_at: None,
            });
        } else {
            let old = required(&current.schema);
            if let Some(added) = required(&r.schema).into_iter().find(|f| !old.contains(f)) {
                return Err(Status::failed_precondition(format!(
                    "event type {} v{}: the new schema is not backward compatible (required: adds {added:?}); publish it as version {} with new_version",
                    t.name,
                    current.version,
                    current.version + 1
                )));
            }
            let last = t.versions.last_mut().unwrap();
            last.schema = r.schema;
            last.examples = r.examples;
        }
        t.description = r.description;
        t.validation = r.validation;
        t.revision = next;
        let t = t.clone();
        state.revision = next;
        Ok(Response::new(t))
    }

    async fn archive_event_type(
        &self,
        request: Request<pb::ArchiveEventTypeRequest>,
    ) -> Result<Response<pb::EventType>, Status> {
        authorize(&request)?;
        let r = request.into_inner();
        let scope = self.scope(&r.tenant, r.global);
        let mut state = self.0.lock().unwrap();
        let t = state
            .types
            .get_mut(&(scope, r.name.clone()))
            .ok_or_else(|| Status::not_found(format!("event type {} not found", r.name)))?;
        t.archived = r.archived;
        Ok(Response::new(t.clone()))
    }

    async fn get_catalog_settings(
        &self,
        request: Request<pb::GetCatalogSettingsRequest>,
    ) -> Result<Response<pb::CatalogSettings>, Status> {
        authorize(&request)?;
        let tenant = self.scope(&request.into_inner().tenant, false);
        let strict = self.0.lock().unwrap().strict.get(&tenant).copied();
        Ok(Response::new(pb::CatalogSettings {
            tenant,
            strict: strict.unwrap_or(false),
        }))
    }

    async fn set_catalog_settings(
        &self,
        request: Request<pb::SetCatalogSettingsRequest>,
    ) -> Result<Response<pb::CatalogSettings>, Status> {
        authorize(&request)?;
        let settings = request.into_inner().settings.unwrap_or_default();
        let tenant = self.scope(&settings.tenant, false);
        self.0
            .lock()
            .unwrap()
            .strict
            .insert(tenant.clone(), settings.strict);
        Ok(Response::new(pb::CatalogSettings {
            tenant,
            strict: settings.strict,
        }))
    }
}

/// The stand-in server, listening on a free port.
async fn serve() -> (Fake, String) {
    let fake = Fake::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let service = EventTypesServer::new(fake.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (fake, address)
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn hookctl(server: &str, args: &[&str]) -> Output {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookctl"))
        .env("HOOKCTL_SERVER", server)
        .env("HOOKCTL_TOKEN", TOKEN)
        .env_remove("COLUMNS")
        .args(args)
        .output()
        .await
        .expect("run hookctl");
    Output {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn json(out: &Output) -> Value {
    assert!(out.ok, "{}", out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// A scratch directory for this test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hookctl-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn catalog(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/catalog")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[tokio::test]
async fn create_get_list_and_update_with_a_revision_check() {
    let (fake, server) = serve().await;
    let dir = scratch("create");
    let schema = write(
        &dir,
        "schema.json",
        r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "required": ["id"]}"#,
    );
    let example = write(&dir, "example.json", r#"{"id": 1, "course_id": 42}"#);
    let created = hookctl(
        &server,
        &[
            "event-type",
            "create",
            "--tenant",
            "school",
            "--name",
            "course_stat.created",
            "--description",
            "Course statistics created",
            "--validation",
            "warn",
            "--schema",
            &schema,
            "--example",
            &example,
        ],
    )
    .await;
    assert!(created.ok, "{}", created.stderr);
    assert!(
        created.stdout.contains("version 1 (current)")
            && created.stdout.contains("\"required\": [\n    \"id\"\n  ]"),
        "{}",
        created.stdout
    );

    let got = json(
        &hookctl(
            &server,
            &[
                "--json",
                "event-type",
                "get",
                "--tenant",
                "school",
                "course_stat.created",
            ],
        )
        .await,
    );
    assert_eq!(got["validation"], "warn");
    assert_eq!(got["scope"], "tenant");
    assert_eq!(got["current_version"], 1);
    assert_eq!(got["versions"][0]["schema"]["required"][0], "id");
    assert_eq!(got["versions"][0]["examples"][0]["course_id"], 42);
    let revision = got["revision"].as_u64().unwrap();

    // Only the description changes: the rest is sent back as read, with
    // the revision read.
    let updated = hookctl(
        &server,
        &[
            "event-type",
            "update",
            "--tenant",
            "school",
            "course_stat.created",
            "--description",
            "A course's statistics were created",
        ],
    )
    .await;
    assert!(updated.ok, "{}", updated.stderr);
    let update = fake.0.lock().unwrap().updates.last().unwrap().clone();
    assert_eq!(update.expected_revision, revision);
    assert_eq!(update.validation, pb::SchemaValidation::Warn as i32);
    assert_eq!(
        serde_json::from_str::<Value>(&update.schema).unwrap()["required"][0],
        "id"
    );
    assert_eq!(update.examples, [r#"{"id":1,"course_id":42}"#]);
    assert!(!update.new_version);

    // A concurrent edit is refused, not lost.
    let stale = hookctl(
        &server,
        &[
            "event-type",
            "update",
            "--tenant",
            "school",
            "course_stat.created",
            "--validation",
            "reject",
            "--expected-revision",
            &revision.to_string(),
        ],
    )
    .await;
    assert!(!stale.ok);
    assert_eq!(
        stale.stderr.trim(),
        format!(
            "error: failed precondition: event type course_stat.created is at revision {}, not {revision}: read it again and retry",
            revision + 1
        )
    );

    // A schema that is not backward compatible: the server's reason and
    // how to publish it anyway.
    let stricter = write(
        &dir,
        "stricter.json",
        r#"{"type": "object", "required": ["id", "course_id"]}"#,
    );
    let refused = hookctl(
        &server,
        &[
            "event-type",
            "update",
            "--tenant",
            "school",
            "course_stat.created",
            "--schema",
            &stricter,
        ],
    )
    .await;
    assert!(!refused.ok);
    assert_eq!(
        refused.stderr.trim(),
        "error: failed precondition: event type course_stat.created v1: the new schema is not backward compatible (required: adds \"course_id\"); publish it as version 2 with new_version; add --new-version to publish it as version 2"
    );
    let published = json(
        &hookctl(
            &server,
            &[
                "--json",
                "event-type",
                "update",
                "--tenant",
                "school",
                "course_stat.created",
                "--schema",
                &stricter,
                "--new-version",
            ],
        )
        .await,
    );
    assert_eq!(published["current_version"], 2);
    assert_eq!(published["versions"][1]["current"], true);
    assert_eq!(
        published["versions"][1]["examples"][0]["id"], 1,
        "the current version's examples carry over"
    );
    let shown = hookctl(
        &server,
        &[
            "event-type",
            "get",
            "--tenant",
            "school",
            "course_stat.created",
        ],
    )
    .await;
    assert!(
        shown.stdout.contains("version 1, created")
            && shown.stdout.contains("version 2 (current), created"),
        "{}",
        shown.stdout
    );

    // Every page, in a table of at most 80 columns.
    for name in ["quiz_stat.created", "a.b", "z.z"] {
        let out = hookctl(
            &server,
            &[
                "event-type",
                "create",
                "--tenant",
                "school",
                "--name",
                name,
                "--description",
                "A description long enough that an 80-column table has to cut it short",
            ],
        )
        .await;
        assert!(out.ok, "{}", out.stderr);
    }
    let listed = hookctl(
        &server,
        &[
            "event-type",
            "list",
            "--tenant",
            "school",
            "--page-size",
            "1",
        ],
    )
    .await;
    assert!(listed.ok, "{}", listed.stderr);
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "NAME                 SCOPE   VERSION  VALIDATION  ARCHIVED  DESCRIPTION"
    );
    assert!(
        lines[2].starts_with("course_stat.created  tenant  2        warn        no        "),
        "{}",
        listed.stdout
    );
    assert_eq!(
        lines.len(),
        6,
        "4 types, a header and a note: {}",
        listed.stdout
    );
    for line in &lines {
        assert!(line.chars().count() <= 80, "{}", listed.stdout);
    }

    let missing = hookctl(&server, &["event-type", "get", "--tenant", "school", "x.y"]).await;
    assert!(!missing.ok);
    assert_eq!(
        missing.stderr.trim(),
        "error: not found: event type x.y not found"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn import_creates_updates_and_says_what_it_did() {
    let (fake, server) = serve().await;
    let lms = catalog("lms-stats.json");
    let first = hookctl(&server, &["event-type", "import", &lms, "--tenant", "acme"]).await;
    assert!(first.ok, "{}", first.stderr);
    let lines: Vec<&str> = first.stdout.lines().collect();
    assert_eq!(lines.len(), 12, "{}", first.stdout);
    assert_eq!(lines[0], "course_stat.created: created");
    assert!(lines.iter().all(|l| l.ends_with(": created")));

    // A tenant token names no tenant: the server takes its own.
    let again = hookctl(&server, &["event-type", "import", &lms]).await;
    assert!(again.ok, "{}", again.stderr);
    assert!(
        again.stdout.lines().all(|l| l.ends_with(": unchanged")),
        "{}",
        again.stdout
    );
    assert!(fake
        .0
        .lock()
        .unwrap()
        .tenants_asked
        .contains(&String::new()));

    let dir = scratch("import");
    let changed = write(
        &dir,
        "changed.json",
        r##"{"event_types": [
            {"name": "course_stat.created", "description": "Changed", "validation": "warn",
             "schema": {"type": "object", "required": ["id"], "properties": {"id": {"$ref": "#/$defs/id"}}, "$defs": {"id": {"type": "integer"}}},
             "examples": [{"id": 1}]},
            {"name": "quiz_stat.created", "validation": "reject",
             "schema": {"type": "object", "required": ["id", "quiz_id"]},
             "examples": [{"id": 5, "quiz_id": 9}]},
            {"name": "new.type"}
        ]}"##,
    );
    let partly = hookctl(
        &server,
        &["event-type", "import", &changed, "--tenant", "acme"],
    )
    .await;
    assert!(!partly.ok);
    assert_eq!(
        partly.stdout,
        "course_stat.created: updated\n\
         quiz_stat.created: failed: failed precondition: event type quiz_stat.created v1: the new schema is not backward compatible (required: adds \"quiz_id\"); publish it as version 2 with new_version; add --new-version to publish it as version 2\n\
         new.type: created\n"
    );
    assert_eq!(
        partly.stderr.trim(),
        format!("error: 1 of 3 event types of {changed} failed")
    );

    let published = json(
        &hookctl(
            &server,
            &[
                "--json",
                "event-type",
                "import",
                &changed,
                "--tenant",
                "acme",
                "--new-version",
            ],
        )
        .await,
    );
    assert_eq!(
        published["results"],
        serde_json::json!([
            {"name": "course_stat.created", "result": "unchanged"},
            {"name": "quiz_stat.created", "result": "updated", "new_version": 2},
            {"name": "new.type", "result": "unchanged"},
        ])
    );

    // Unknown fields are refused before anything is written.
    let before = fake.0.lock().unwrap().revision;
    let typo = write(
        &dir,
        "typo.json",
        r#"{"event_types": [{"name": "a.b", "descripton": "x"}]}"#,
    );
    let refused = hookctl(&server, &["event-type", "import", &typo]).await;
    assert!(!refused.ok);
    assert!(
        refused.stderr.starts_with(&format!(
            "error: catalog file {typo}: unknown field `descripton`, expected one of"
        )),
        "{}",
        refused.stderr
    );
    assert_eq!(fake.0.lock().unwrap().revision, before);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn every_seed_catalog_imports_into_the_global_catalog() {
    let (_fake, server) = serve().await;
    for file in [
        "lms-stats.json",
        "training-changes.json",
        "forum.json",
        "pbx-calls.json",
    ] {
        let out = hookctl(
            &server,
            &["event-type", "import", &catalog(file), "--global"],
        )
        .await;
        assert!(out.ok, "{file}: {}", out.stderr);
        assert!(
            out.stdout.lines().all(|l| l.ends_with(": created")),
            "{}",
            out.stdout
        );
    }
    let listed = json(&hookctl(&server, &["--json", "event-type", "list", "--global"]).await);
    let types = listed["event_types"].as_array().unwrap();
    assert_eq!(types.len(), 12 + 5 + 16 + 1);
    assert!(types.iter().all(|t| t["scope"] == "global"));
}

#[tokio::test]
async fn archive_unarchive_and_settings() {
    let (_fake, server) = serve().await;
    let created = hookctl(
        &server,
        &["event-type", "create", "--global", "--name", "user.created"],
    )
    .await;
    assert!(created.ok, "{}", created.stderr);
    let archived = hookctl(
        &server,
        &["event-type", "archive", "--global", "user.created"],
    )
    .await;
    assert_eq!(archived.stdout, "archived user.created (global)\n");
    let listed = json(&hookctl(&server, &["--json", "event-type", "list", "--global"]).await);
    assert_eq!(listed["event_types"], serde_json::json!([]));
    let listed = json(
        &hookctl(
            &server,
            &[
                "--json",
                "event-type",
                "list",
                "--global",
                "--include-archived",
            ],
        )
        .await,
    );
    assert_eq!(listed["event_types"][0]["archived"], true);
    let restored = hookctl(
        &server,
        &["event-type", "unarchive", "--global", "user.created"],
    )
    .await;
    assert_eq!(restored.stdout, "restored user.created (global)\n");

    let set = json(
        &hookctl(
            &server,
            &[
                "--json",
                "event-type",
                "settings",
                "set",
                "--tenant",
                "acme",
                "--strict",
                "true",
            ],
        )
        .await,
    );
    assert_eq!(set, serde_json::json!({"tenant": "acme", "strict": true}));
    let got = hookctl(&server, &["event-type", "settings", "get"]).await;
    assert!(got.ok, "{}", got.stderr);
    assert!(
        got.stdout.contains("acme")
            && got
                .stdout
                .contains("true (subscriptions may name only catalogued"),
        "{}",
        got.stdout
    );
}

#[tokio::test]
async fn files_are_checked_before_connecting_and_tokens_are_required() {
    let dir = scratch("files");
    // Nothing listens on port 9: the files are refused first.
    let bad = write(&dir, "bad.json", "{ not json");
    let out = hookctl(
        "127.0.0.1:9",
        &[
            "event-type",
            "create",
            "--tenant",
            "acme",
            "--name",
            "a.b",
            "--schema",
            &bad,
        ],
    )
    .await;
    assert!(!out.ok);
    assert!(
        out.stderr.starts_with(&format!(
            "error: --schema {bad}: not JSON: key must be a string"
        )),
        "{}",
        out.stderr
    );
    let list = write(&dir, "list.json", "[1]");
    let out = hookctl(
        "127.0.0.1:9",
        &["event-type", "create", "--name", "a.b", "--example", &list],
    )
    .await;
    assert_eq!(
        out.stderr.trim(),
        format!("error: --example {list}: must be a JSON object (an event's data)")
    );
    let out = hookctl("127.0.0.1:9", &["event-type", "import", "no-such.json"]).await;
    assert!(
        out.stderr
            .starts_with("error: cannot read the catalog file no-such.json: "),
        "{}",
        out.stderr
    );

    let (_fake, server) = serve().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookctl"))
        .env("HOOKCTL_SERVER", &server)
        .env("HOOKCTL_TOKEN", "wrong")
        .args(["event-type", "list", "--global"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr)
        .starts_with("error: unauthenticated: missing or unknown bearer token (pass --token"));
    std::fs::remove_dir_all(&dir).unwrap();
}
