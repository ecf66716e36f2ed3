//! `hookctl event-type` as a user runs it, against a real hookrelay: the
//! EventTypes service of crates/subscriptions, its KV bucket and the
//! subscription service that reads the catalog. No stand-in server, so
//! these tests see the service's own rules and messages.

use std::path::{Path, PathBuf};

use hookrelay_tests::support::{Receiver, TestEnv};
use hookrelay_tests::Harness;
use serde_json::{json, Value};

const ADMIN_NO_TENANT: &str = "error: invalid argument: tenant: is required with an admin token (or set global for the global catalog)";
const GLOBAL_IS_ADMINS: &str =
    "permission denied: the global catalog is written with an admin token only";

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Exit status 1 with nothing but `stderr` on standard error.
    #[track_caller]
    fn fails_with(&self, stderr: &str) {
        assert_eq!(self.code, Some(1), "{}{}", self.stdout, self.stderr);
        assert_eq!(self.stderr.trim_end(), stderr);
    }

    /// Standard output as JSON, of a command that succeeded.
    #[track_caller]
    fn json(&self) -> Value {
        assert!(self.ok(), "{}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {}", self.stdout))
    }
}

/// hookctl with `server` and `env`; no COLUMNS, so tables are 80 wide.
async fn run(server: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_hookctl"))
        .env("HOOKCTL_SERVER", server)
        .env_remove("HOOKCTL_TOKEN")
        .env_remove("HOOKCTL_TOKEN_FILE")
        .env_remove("COLUMNS")
        .envs(env.iter().copied())
        .args(args)
        .output()
        .await
        .expect("run hookctl");
    Output {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// hookctl against `hr` with `token`, as tests/hookctl.rs runs it.
async fn hookctl_as(hr: &Harness, token: &str, args: &[&str]) -> Output {
    run(
        &hr.grpc_url(),
        &[
            ("HOOKCTL_TOKEN", token),
            ("HOOKCTL_NATS", &hr.env.config.nats.url),
            ("HOOKCTL_PREFIX", &hr.env.config.prefix),
        ],
        args,
    )
    .await
}

/// hookctl against `hr` with the admin token.
async fn hookctl(hr: &Harness, args: &[&str]) -> Output {
    hookctl_as(hr, TestEnv::ADMIN_TOKEN, args).await
}

/// A scratch directory for one test's files, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hookctl-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The path of a seed catalog of examples/catalog.
fn catalog(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/catalog")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// The entries of a seed catalog, in file order.
fn entries(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(catalog(name)).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    file["event_types"].as_array().unwrap().clone()
}

fn names(list: &Value) -> Vec<String> {
    list["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_seed_catalog_imports_lists_and_reimports() {
    let hr = Harness::start().await;
    let lms = catalog("lms-stats.json");
    let seed = entries("lms-stats.json");
    assert_eq!(seed.len(), 12);

    let first = hookctl(&hr, &["event-type", "import", "--tenant", "acme", &lms]).await;
    assert!(first.ok(), "{}", first.stderr);
    let expected: String = seed
        .iter()
        .map(|e| format!("{}: created\n", e["name"].as_str().unwrap()))
        .collect();
    assert_eq!(first.stdout, expected);
    assert_eq!(first.stderr, "");

    // Again, with acme's own token naming no tenant: nothing to do.
    let again = hookctl_as(&hr, TestEnv::ACME_TOKEN, &["event-type", "import", &lms]).await;
    assert!(again.ok(), "{}", again.stderr);
    assert_eq!(again.stdout, expected.replace(": created", ": unchanged"));

    // Every page of the table (5 a request), at most 80 columns.
    let table = hookctl(
        &hr,
        &["event-type", "list", "--tenant", "acme", "--page-size", "5"],
    )
    .await;
    assert!(table.ok(), "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "NAME                   SCOPE   VERSION  VALIDATION  ARCHIVED  DESCRIPTION"
    );
    assert_eq!(lines.len(), 1 + 12 + 1, "{}", table.stdout);
    assert_eq!(
        lines[13],
        "descriptions cut: `hookctl event-type get NAME` or --json shows them whole"
    );
    let mut sorted: Vec<&str> = seed.iter().map(|e| e["name"].as_str().unwrap()).collect();
    sorted.sort_unstable();
    for (line, name) in lines[1..13].iter().zip(&sorted) {
        assert!(
            line.starts_with(&format!(
                "{name:<23}tenant  1        warn        no        "
            )),
            "{line:?} in\n{}",
            table.stdout
        );
        assert!(line.chars().count() <= 80, "{}", table.stdout);
    }
    let listed = hookctl(&hr, &["--json", "event-type", "list", "--tenant", "acme"])
        .await
        .json();
    assert_eq!(names(&listed), sorted);
    for t in listed["event_types"].as_array().unwrap() {
        assert_eq!(
            (&t["scope"], &t["tenant"], &t["current_version"]),
            (&json!("tenant"), &json!("acme"), &json!(1)),
            "{t}"
        );
    }
    // Another tenant's catalog is its own.
    let globex = hookctl_as(
        &hr,
        TestEnv::GLOBEX_TOKEN,
        &["--json", "event-type", "list"],
    )
    .await;
    assert_eq!(globex.json(), json!({"event_types": []}));

    // An admin token names the tenant, or --global.
    hookctl(&hr, &["event-type", "list"])
        .await
        .fails_with(ADMIN_NO_TENANT);
    hookctl(&hr, &["event-type", "settings", "get"])
        .await
        .fails_with(ADMIN_NO_TENANT);
    let no_tenant = hookctl(&hr, &["event-type", "import", &lms]).await;
    no_tenant.fails_with(&format!("error: 12 of 12 event types of {lms} failed"));
    assert!(
        no_tenant
            .stdout
            .lines()
            .all(|l| l.ends_with(&format!(": failed: {}", &ADMIN_NO_TENANT[7..]))),
        "{}",
        no_tenant.stdout
    );

    // A changed catalog: each type created, updated, left or refused,
    // and the refusal says how to publish it anyway.
    let scratch = Scratch::new("import");
    // course_stat.created: the seed's schema without its course_id
    // property (it accepts more) and other examples and description.
    let mut course = seed[0].clone();
    course["description"] = json!("Changed");
    course["schema"]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("course_id");
    course["examples"] = json!([{"id": 1}]);
    let changed = json!({"event_types": [
        course,
        {"name": "quiz_stat.created", "validation": "reject",
         "schema": {"type": "object", "required": ["id", "quiz_id"]},
         "examples": [{"id": 5, "quiz_id": 9}]},
        {"name": "new.type"},
    ]});
    let changed = scratch.write("changed.json", &changed.to_string());
    let partly = hookctl(&hr, &["event-type", "import", &changed, "--tenant", "acme"]).await;
    partly.fails_with(&format!("error: 1 of 3 event types of {changed} failed"));
    assert_eq!(
        partly.stdout,
        "course_stat.created: updated\n\
         quiz_stat.created: failed: failed precondition: event type quiz_stat.created v1: the new schema is not backward compatible (data: \"quiz_id\" became required); add --new-version to publish it as version 2\n\
         new.type: created\n"
    );
    let published = hookctl(
        &hr,
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
    .await
    .json();
    assert_eq!(
        published["results"],
        json!([
            {"name": "course_stat.created", "result": "unchanged"},
            {"name": "quiz_stat.created", "result": "updated", "new_version": 2},
            {"name": "new.type", "result": "unchanged"},
        ])
    );
    let quiz = hookctl(
        &hr,
        &[
            "--json",
            "event-type",
            "get",
            "--tenant",
            "acme",
            "quiz_stat.created",
        ],
    )
    .await
    .json();
    assert_eq!(quiz["current_version"], 2);
    assert_eq!(quiz["validation"], "reject");
    let seeded = seed.iter().find(|e| e["name"] == "quiz_stat.created");
    assert_eq!(quiz["versions"][0]["schema"], seeded.unwrap()["schema"]);
    assert_eq!(
        quiz["versions"][1]["schema"]["required"],
        json!(["id", "quiz_id"])
    );

    // A file the CLI refuses writes nothing.
    let typo = scratch.write(
        "typo.json",
        r#"{"event_types": [{"name": "a.b", "descripton": "x"}]}"#,
    );
    let refused = hookctl(&hr, &["event-type", "import", "--tenant", "acme", &typo]).await;
    assert_eq!(refused.code, Some(1));
    assert!(
        refused.stderr.starts_with(&format!(
            "error: catalog file {typo}: unknown field `descripton`, expected one of"
        )),
        "{}",
        refused.stderr
    );
    hookctl(&hr, &["event-type", "get", "--tenant", "acme", "a.b"])
        .await
        .fails_with("error: not found: event type a.b not found in tenant acme");
}

#[tokio::test]
async fn create_get_and_update_with_versions_and_revisions() {
    let hr = Harness::start().await;
    let scratch = Scratch::new("create");
    let schema = scratch.write(
        "schema.json",
        r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "required": ["id"]}"#,
    );
    let example = scratch.write("example.json", r#"{"id": 1, "course_id": 42}"#);
    let created = hookctl(
        &hr,
        &[
            "event-type",
            "create",
            "--tenant",
            "acme",
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
    assert!(created.ok(), "{}", created.stderr);
    assert!(
        created.stdout.contains("version 1 (current)")
            && created.stdout.contains("\"required\": [\n    \"id\"\n  ]"),
        "{}",
        created.stdout
    );
    let get = [
        "--json",
        "event-type",
        "get",
        "--tenant",
        "acme",
        "course_stat.created",
    ];
    let got = hookctl(&hr, &get).await.json();
    assert_eq!(got["description"], "Course statistics created");
    assert_eq!(got["validation"], "warn");
    assert_eq!(got["scope"], "tenant");
    assert_eq!(got["tenant"], "acme");
    assert_eq!(got["archived"], false);
    assert_eq!(got["current_version"], 1);
    assert_eq!(got["versions"][0]["schema"]["required"], json!(["id"]));
    assert_eq!(
        got["versions"][0]["examples"],
        json!([{"id": 1, "course_id": 42}])
    );
    let read = got["revision"].as_u64().unwrap();

    // The tenant's own token reads it without naming the tenant.
    let own = hookctl_as(
        &hr,
        TestEnv::ACME_TOKEN,
        &["--json", "event-type", "get", "course_stat.created"],
    )
    .await
    .json();
    assert_eq!(own["revision"], read);

    // Only the description changes: the rest stays as read.
    let updated = hookctl(
        &hr,
        &[
            "--json",
            "event-type",
            "update",
            "--tenant",
            "acme",
            "course_stat.created",
            "--description",
            "A course's statistics were created",
        ],
    )
    .await
    .json();
    assert_eq!(updated["description"], "A course's statistics were created");
    assert_eq!(updated["validation"], "warn");
    assert_eq!(updated["current_version"], 1);
    assert_eq!(
        updated["versions"][0]["schema"],
        got["versions"][0]["schema"]
    );
    assert_eq!(
        updated["versions"][0]["examples"],
        got["versions"][0]["examples"]
    );
    let revision = updated["revision"].as_u64().unwrap();
    assert!(revision > read, "{revision} after {read}");
    assert_eq!(hookctl(&hr, &get).await.json(), updated);

    // A write based on what was read before that update is refused, not
    // applied over it.
    let stale = hookctl(
        &hr,
        &[
            "event-type",
            "update",
            "--tenant",
            "acme",
            "course_stat.created",
            "--validation",
            "reject",
            "--expected-revision",
            &read.to_string(),
        ],
    )
    .await;
    stale.fails_with(&format!(
        "error: failed precondition: event type course_stat.created is at revision {revision}, not {read}: read it again and retry"
    ));
    assert_eq!(stale.stdout, "");
    assert_eq!(hookctl(&hr, &get).await.json()["validation"], "warn");

    // A schema that refuses data the current one accepts: the server's
    // reason and how to publish it anyway; nothing is written.
    let stricter = scratch.write(
        "stricter.json",
        r#"{"type": "object", "required": ["id", "course_id"]}"#,
    );
    let update_schema = [
        "event-type",
        "update",
        "--tenant",
        "acme",
        "course_stat.created",
        "--schema",
        &stricter,
    ];
    hookctl(&hr, &update_schema).await.fails_with(
        "error: failed precondition: event type course_stat.created v1: the new schema is not backward compatible (data: \"course_id\" became required); add --new-version to publish it as version 2",
    );
    assert_eq!(hookctl(&hr, &get).await.json()["revision"], revision);

    let published = hookctl(
        &hr,
        &[&["--json"][..], &update_schema, &["--new-version"]].concat(),
    )
    .await
    .json();
    assert_eq!(published["current_version"], 2);
    assert_eq!(published["versions"][0]["current"], false);
    assert_eq!(published["versions"][1]["current"], true);
    assert_eq!(
        published["versions"][0]["schema"]["required"],
        json!(["id"])
    );
    assert_eq!(
        published["versions"][1]["schema"]["required"],
        json!(["id", "course_id"])
    );
    assert_eq!(
        published["versions"][1]["examples"],
        json!([{"id": 1, "course_id": 42}]),
        "the current version's examples carry over"
    );
    let shown = hookctl(
        &hr,
        &[
            "event-type",
            "get",
            "--tenant",
            "acme",
            "course_stat.created",
        ],
    )
    .await;
    assert!(
        shown.ok()
            && shown.stdout.contains("version 1, created")
            && shown.stdout.contains("version 2 (current), created"),
        "{}{}",
        shown.stdout,
        shown.stderr
    );
    assert_eq!(hookctl(&hr, &get).await.json()["current_version"], 2);

    // What the server refuses, in its words.
    hookctl(
        &hr,
        &["event-type", "create", "--tenant", "acme", "--name", "course_stat.created"],
    )
    .await
    .fails_with("error: already exists: event type course_stat.created already exists in tenant acme (archived types too): update it instead");
    hookctl(
        &hr,
        &[
            "event-type",
            "create",
            "--tenant",
            "acme",
            "--name",
            "user.*",
        ],
    )
    .await
    .fails_with("error: invalid argument: name: \"user.*\" must be dot-separated tokens of letters, digits, '_' or '-' (an event type, no wildcards: \"course_stat.created\")");
    let wrong_example = scratch.write("wrong.json", r#"{"course_id": 42}"#);
    hookctl(
        &hr,
        &[
            "event-type",
            "create",
            "--tenant",
            "acme",
            "--name",
            "quiz_stat.created",
            "--schema",
            &schema,
            "--example",
            &wrong_example,
        ],
    )
    .await
    .fails_with(
        r#"error: invalid argument: examples: examples[0]: data: "id" is a required property"#,
    );
    hookctl(&hr, &["event-type", "get", "--tenant", "acme", "x.y"])
        .await
        .fails_with("error: not found: event type x.y not found in tenant acme");

    // Every page, one type a request, in a table of at most 80 columns.
    for name in ["quiz_stat.created", "a.b", "z.z"] {
        let out = hookctl(
            &hr,
            &[
                "event-type",
                "create",
                "--tenant",
                "acme",
                "--name",
                name,
                "--description",
                "A description long enough that an 80-column table has to cut it short",
            ],
        )
        .await;
        assert!(out.ok(), "{}", out.stderr);
    }
    let listed = hookctl(
        &hr,
        &["event-type", "list", "--tenant", "acme", "--page-size", "1"],
    )
    .await;
    assert!(listed.ok(), "{}", listed.stderr);
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert_eq!(
        lines[0],
        "NAME                 SCOPE   VERSION  VALIDATION  ARCHIVED  DESCRIPTION"
    );
    assert!(lines[1].starts_with("a.b                  tenant  1        off         no        "));
    assert!(
        lines[2]
            .starts_with("course_stat.created  tenant  2        warn        no        A course"),
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
}

#[tokio::test]
async fn the_global_catalog_is_shared_and_written_with_admin_tokens_only() {
    let hr = Harness::start().await;
    let seeds = [
        "lms-stats.json",
        "training-changes.json",
        "forum.json",
        "pbx-calls.json",
    ];
    for file in seeds {
        let out = hookctl(&hr, &["event-type", "import", "--global", &catalog(file)]).await;
        assert!(out.ok(), "{file}: {}", out.stderr);
        assert_eq!(
            out.stdout.lines().count(),
            entries(file).len(),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout.lines().all(|l| l.ends_with(": created")),
            "{}",
            out.stdout
        );
    }
    let mut every: Vec<String> = seeds
        .iter()
        .flat_map(|f| entries(f))
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    every.sort_unstable();
    assert_eq!(every.len(), 12 + 5 + 16 + 1);
    let global = hookctl(&hr, &["--json", "event-type", "list", "--global"])
        .await
        .json();
    assert_eq!(names(&global), every);
    assert!(global["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["scope"] == "global" && t["tenant"] == ""));

    // A tenant token reads the global catalog in its own list…
    let acme = ["--json", "event-type", "list"];
    let seen = hookctl_as(&hr, TestEnv::ACME_TOKEN, &acme).await.json();
    assert_eq!(seen, global);
    let call = hookctl_as(
        &hr,
        TestEnv::ACME_TOKEN,
        &["--json", "event-type", "get", "--global", "call.ended"],
    )
    .await
    .json();
    assert_eq!(call["scope"], "global");
    // …but its Get reads its own catalog only.
    hookctl_as(
        &hr,
        TestEnv::ACME_TOKEN,
        &["event-type", "get", "call.ended"],
    )
    .await
    .fails_with("error: not found: event type call.ended not found in tenant acme");

    // A type of its own shadows the global one, in its list only.
    let own = hookctl_as(
        &hr,
        TestEnv::ACME_TOKEN,
        &[
            "event-type",
            "create",
            "--name",
            "user.created",
            "--description",
            "Ours",
        ],
    )
    .await;
    assert!(own.ok(), "{}", own.stderr);
    let seen = hookctl_as(&hr, TestEnv::ACME_TOKEN, &acme).await.json();
    assert_eq!(names(&seen), every);
    for t in seen["event_types"].as_array().unwrap() {
        let expected = if t["name"] == "user.created" {
            ("tenant", "acme")
        } else {
            ("global", "")
        };
        assert_eq!(
            (t["scope"].as_str(), t["tenant"].as_str()),
            (Some(expected.0), Some(expected.1))
        );
    }
    let globex = hookctl_as(&hr, TestEnv::GLOBEX_TOKEN, &acme).await.json();
    assert_eq!(globex, global);

    // Writing the global catalog takes an admin token.
    let denied = format!("error: {GLOBAL_IS_ADMINS}");
    hookctl_as(
        &hr,
        TestEnv::ACME_TOKEN,
        &["event-type", "create", "--global", "--name", "invoice.paid"],
    )
    .await
    .fails_with(&denied);
    hookctl_as(
        &hr,
        TestEnv::ACME_TOKEN,
        &[
            "event-type",
            "update",
            "--global",
            "call.ended",
            "--description",
            "x",
        ],
    )
    .await
    .fails_with(&denied);
    hookctl_as(
        &hr,
        TestEnv::ACME_TOKEN,
        &["event-type", "archive", "--global", "call.ended"],
    )
    .await
    .fails_with(&denied);
    let scratch = Scratch::new("global");
    let more = scratch.write(
        "more.json",
        r#"{"event_types": [{"name": "call.ended"}, {"name": "invoice.paid"}]}"#,
    );
    let import = hookctl_as(
        &hr,
        TestEnv::ACME_TOKEN,
        &["event-type", "import", "--global", &more],
    )
    .await;
    import.fails_with(&format!("error: 2 of 2 event types of {more} failed"));
    assert_eq!(
        import.stdout,
        format!(
            "call.ended: failed: {GLOBAL_IS_ADMINS}\ninvoice.paid: failed: {GLOBAL_IS_ADMINS}\n"
        )
    );
    assert_eq!(
        hookctl(&hr, &["--json", "event-type", "list", "--global"])
            .await
            .json(),
        global,
        "nothing written"
    );
    // Nor another tenant's.
    hookctl_as(
        &hr,
        TestEnv::ACME_TOKEN,
        &["event-type", "list", "--tenant", "globex"],
    )
    .await
    .fails_with(
        r#"error: permission denied: tenant "globex": this token is scoped to tenant "acme""#,
    );

    // Tokens: a wrong one, none, and a token file that is not there.
    let wrong = hookctl_as(&hr, "wrong", &["event-type", "list", "--global"]).await;
    assert_eq!(wrong.code, Some(1));
    assert!(
        wrong
            .stderr
            .starts_with("error: unauthenticated: unknown bearer token (pass --token"),
        "{}",
        wrong.stderr
    );
    let empty = scratch.write("empty-token", "");
    let none = run(
        &hr.grpc_url(),
        &[("HOOKCTL_TOKEN_FILE", &empty)],
        &["event-type", "list", "--global"],
    )
    .await;
    assert_eq!(none.code, Some(1));
    assert!(
        none.stderr
            .starts_with("error: unauthenticated: missing bearer token (authorization: Bearer <token>) (pass --token"),
        "{}",
        none.stderr
    );
    let absent = scratch.0.join("absent").to_string_lossy().into_owned();
    let unreadable = run(
        &hr.grpc_url(),
        &[("HOOKCTL_TOKEN_FILE", &absent)],
        &["event-type", "list", "--global"],
    )
    .await;
    assert_eq!(unreadable.code, Some(1));
    assert!(
        unreadable
            .stderr
            .starts_with(&format!("error: cannot read the token file {absent}: ")),
        "{}",
        unreadable.stderr
    );
}

/// `subscription create` of acme for `pattern`, with the admin token.
async fn subscribe(hr: &Harness, url: &str, pattern: &str) -> Output {
    hookctl(
        hr,
        &[
            "subscription",
            "create",
            "--tenant",
            "acme",
            "--url",
            url,
            "--event-type",
            pattern,
        ],
    )
    .await
}

#[tokio::test]
async fn archived_types_and_strict_catalogs() {
    let hr = Harness::start().await;
    let receiver = Receiver::start().await;
    let url = receiver.url("/hooks");
    let imported = hookctl(
        &hr,
        &[
            "event-type",
            "import",
            "--tenant",
            "acme",
            &catalog("lms-stats.json"),
        ],
    )
    .await;
    assert!(imported.ok(), "{}", imported.stderr);
    let global = hookctl(
        &hr,
        &["event-type", "create", "--global", "--name", "user.created"],
    )
    .await;
    assert!(global.ok(), "{}", global.stderr);
    let uncatalogued = |pattern: &str| {
        format!(
            "error: invalid argument: subscription.event_types[0]: \"{pattern}\" matches no event type of tenant acme's catalog, which is strict: create the type first (EventTypes.CreateEventType) or make the catalog not strict"
        )
    };

    // Not strict: any pattern.
    let settings = hookctl(&hr, &["event-type", "settings", "get", "--tenant", "acme"]).await;
    assert!(settings.ok(), "{}", settings.stderr);
    assert!(
        settings
            .stdout
            .contains("false (subscriptions may name any event type)"),
        "{}",
        settings.stdout
    );
    let any = subscribe(&hr, &url, "invoice.paid").await;
    assert!(any.ok(), "{}", any.stderr);

    let set = hookctl(
        &hr,
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
    .await
    .json();
    assert_eq!(set, json!({"tenant": "acme", "strict": true}));
    let own = hookctl_as(&hr, TestEnv::ACME_TOKEN, &["event-type", "settings", "get"]).await;
    assert!(own.ok(), "{}", own.stderr);
    assert!(
        own.stdout.contains("acme")
            && own
                .stdout
                .contains("true (subscriptions may name only catalogued, unarchived event types)"),
        "{}",
        own.stdout
    );
    let globex = hookctl(
        &hr,
        &[
            "--json",
            "event-type",
            "settings",
            "get",
            "--tenant",
            "globex",
        ],
    )
    .await
    .json();
    assert_eq!(globex, json!({"tenant": "globex", "strict": false}));

    // Strict: only what the tenant's or the global catalog holds.
    subscribe(&hr, &url, "invoice.paid")
        .await
        .fails_with(&uncatalogued("invoice.paid"));
    for pattern in ["course_stat.created", "course_stat.*", "user.created"] {
        let out = subscribe(&hr, &url, pattern).await;
        assert!(out.ok(), "{pattern}: {}", out.stderr);
        assert!(out.stdout.contains("secret: whsec_"), "{}", out.stdout);
    }

    // Archived: out of the list, still readable, no new subscriptions.
    let archived = hookctl(
        &hr,
        &[
            "event-type",
            "archive",
            "--tenant",
            "acme",
            "course_stat.created",
        ],
    )
    .await;
    assert!(archived.ok(), "{}", archived.stderr);
    assert_eq!(
        archived.stdout,
        "archived course_stat.created (tenant acme)\n"
    );
    let list = ["--json", "event-type", "list", "--tenant", "acme"];
    let listed = hookctl(&hr, &list).await.json();
    assert_eq!(names(&listed).len(), 12, "11 of acme's and user.created");
    assert!(!names(&listed).contains(&"course_stat.created".to_owned()));
    let all = hookctl(&hr, &[&list[..], &["--include-archived"]].concat())
        .await
        .json();
    assert_eq!(names(&all).len(), 13);
    let entry = all["event_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "course_stat.created")
        .unwrap();
    assert_eq!(entry["archived"], true);
    let table = hookctl(
        &hr,
        &[
            "event-type",
            "list",
            "--tenant",
            "acme",
            "--include-archived",
        ],
    )
    .await;
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("course_stat.created") && l.contains(" warn        yes ")),
        "{}",
        table.stdout
    );
    let got = hookctl(
        &hr,
        &[
            "--json",
            "event-type",
            "get",
            "--tenant",
            "acme",
            "course_stat.created",
        ],
    )
    .await
    .json();
    assert_eq!(got["archived"], true);
    subscribe(&hr, &url, "course_stat.created")
        .await
        .fails_with(&uncatalogued("course_stat.created"));
    let wildcard = subscribe(&hr, &url, "course_stat.*").await;
    assert!(
        wildcard.ok(),
        "course_stat.updated is left: {}",
        wildcard.stderr
    );
    // An archived name is still taken.
    hookctl(
        &hr,
        &["event-type", "create", "--tenant", "acme", "--name", "course_stat.created"],
    )
    .await
    .fails_with("error: already exists: event type course_stat.created already exists in tenant acme (archived types too): update it instead");

    let restored = hookctl(
        &hr,
        &[
            "event-type",
            "unarchive",
            "--tenant",
            "acme",
            "course_stat.created",
        ],
    )
    .await;
    assert_eq!(
        restored.stdout,
        "restored course_stat.created (tenant acme)\n"
    );
    assert_eq!(names(&hookctl(&hr, &list).await.json()).len(), 13);
    let again = subscribe(&hr, &url, "course_stat.created").await;
    assert!(again.ok(), "{}", again.stderr);

    // The global catalog's types are archived by an admin, for everyone.
    let archived = hookctl(&hr, &["event-type", "archive", "--global", "user.created"]).await;
    assert_eq!(archived.stdout, "archived user.created (global)\n");
    subscribe(&hr, &url, "user.created")
        .await
        .fails_with(&uncatalogued("user.created"));
    let seen = hookctl_as(&hr, TestEnv::ACME_TOKEN, &["--json", "event-type", "list"])
        .await
        .json();
    assert!(!names(&seen).contains(&"user.created".to_owned()));

    // Not strict again: any pattern.
    let off = hookctl(
        &hr,
        &[
            "event-type",
            "settings",
            "set",
            "--tenant",
            "acme",
            "--strict",
            "false",
        ],
    )
    .await;
    assert!(off.ok(), "{}", off.stderr);
    let any = subscribe(&hr, &url, "invoice.paid").await;
    assert!(any.ok(), "{}", any.stderr);
}

/// hookctl with a token and a server nobody listens on (port 9).
async fn offline(args: &[&str]) -> Output {
    run("127.0.0.1:9", &[("HOOKCTL_TOKEN", "t")], args).await
}

#[tokio::test]
async fn files_are_checked_before_connecting() {
    let scratch = Scratch::new("files");
    // Nothing listens on port 9: the files are refused first.
    let bad = scratch.write("bad.json", "{ not json");
    let out = offline(&[
        "event-type",
        "create",
        "--tenant",
        "acme",
        "--name",
        "a.b",
        "--schema",
        &bad,
    ])
    .await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.starts_with(&format!(
            "error: --schema {bad}: not JSON: key must be a string"
        )),
        "{}",
        out.stderr
    );
    let list = scratch.write("list.json", "[1]");
    offline(&["event-type", "update", "a.b", "--example", &list])
        .await
        .fails_with(&format!(
            "error: --example {list}: must be a JSON object (an event's data)"
        ));
    let out = offline(&["event-type", "import", "no-such.json"]).await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .starts_with("error: cannot read the catalog file no-such.json: "),
        "{}",
        out.stderr
    );
    let twice = scratch.write(
        "twice.json",
        r#"{"event_types": [{"name": "a.b"}, {"name": "a.b"}]}"#,
    );
    offline(&["event-type", "import", &twice])
        .await
        .fails_with(&format!(
            "error: catalog file {twice}: event_types[1] (a.b): name: listed twice"
        ));
    // With good files, the server is what is missing.
    let out = offline(&["event-type", "list", "--global"]).await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .starts_with("error: cannot reach hookrelay at http://127.0.0.1:9"),
        "{}",
        out.stderr
    );
}
