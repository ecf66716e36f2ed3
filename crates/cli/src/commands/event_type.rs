//! `hookctl event-type create|get|list|update|archive|unarchive|import|settings`:
//! the event-type catalog.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use hookrelay_proto::v1 as pb;
use hookrelay_proto::v1::event_types_client::EventTypesClient;
use serde_json::{json, Value};

use crate::catalog::{self, CatalogFile, EventTypeEntry, Validation};
use crate::connect::{channel, status, Authed};
use crate::output;

#[derive(Debug, Subcommand)]
pub enum EventTypeCommand {
    /// Create an event type at version 1.
    Create(CreateArgs),
    /// Show one event type: its versions (the current marked), schemas and
    /// examples.
    Get {
        #[command(flatten)]
        scope: Scope,
        /// The event type, e.g. `course_stat.created`.
        name: String,
    },
    /// List event types by name, every page (a tenant's list holds the
    /// global types its own do not shadow).
    List {
        #[command(flatten)]
        scope: Scope,
        /// List archived types too.
        #[arg(long)]
        include_archived: bool,
        /// Types asked for per request (at most 1000); every page is listed.
        #[arg(long, default_value_t = 100)]
        page_size: u32,
    },
    /// Change an event type (read it, change what is given, write it with
    /// a revision check).
    Update(UpdateArgs),
    /// Archive an event type: it stays readable but no longer validates
    /// events or admits new subscriptions.
    Archive {
        #[command(flatten)]
        scope: Scope,
        /// The event type.
        name: String,
    },
    /// Restore an archived event type.
    Unarchive {
        #[command(flatten)]
        scope: Scope,
        /// The event type.
        name: String,
    },
    /// Create or update every event type of a catalog file; prints a line
    /// per type and exits 1 if any failed.
    Import(ImportArgs),
    /// A tenant's catalog settings (strict: subscriptions name only
    /// catalogued types).
    #[command(subcommand)]
    Settings(SettingsCommand),
}

/// Which catalog: a tenant's, or the global one every tenant shares.
#[derive(Debug, Clone, Default, Args)]
#[group(id = "scope", multiple = false)]
pub struct Scope {
    /// The tenant whose catalog (default: a tenant token's own; an admin
    /// token names one, or --global).
    #[arg(long)]
    pub tenant: Option<String>,
    /// The global catalog every tenant shares (written with an admin token
    /// only).
    #[arg(long)]
    pub global: bool,
}

impl Scope {
    fn tenant(&self) -> String {
        self.tenant.clone().unwrap_or_default()
    }

    /// The global `--tenant` where the command names neither a tenant nor
    /// `--global`.
    fn default_tenant(&mut self, tenant: Option<&str>) {
        if self.tenant.is_none() && !self.global {
            self.tenant = tenant.map(str::to_owned);
        }
    }
}

impl EventTypeCommand {
    /// Gives every scope that names none the global `--tenant`
    /// (`HOOKCTL_TENANT`).
    pub fn default_tenant(&mut self, tenant: Option<&str>) {
        match self {
            EventTypeCommand::Create(CreateArgs { scope, .. })
            | EventTypeCommand::Get { scope, .. }
            | EventTypeCommand::List { scope, .. }
            | EventTypeCommand::Update(UpdateArgs { scope, .. })
            | EventTypeCommand::Archive { scope, .. }
            | EventTypeCommand::Unarchive { scope, .. }
            | EventTypeCommand::Import(ImportArgs { scope, .. }) => scope.default_tenant(tenant),
            EventTypeCommand::Settings(
                SettingsCommand::Get { tenant: own } | SettingsCommand::Set { tenant: own, .. },
            ) => {
                if own.is_none() {
                    *own = tenant.map(str::to_owned);
                }
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub scope: Scope,
    /// The event type: dot-separated tokens of letters, digits, `_` and
    /// `-`, e.g. `course_stat.created`.
    #[arg(long)]
    pub name: String,
    /// What the event means, for people.
    #[arg(long)]
    pub description: Option<String>,
    /// How ingest treats data its schema refuses (default: off).
    #[arg(long, value_enum)]
    pub validation: Option<Validation>,
    /// JSON Schema (draft 2020-12) of the event's `data` from FILE (`-`:
    /// standard input); default: any object.
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// An example `data` object from FILE (repeatable); each must validate
    /// against the schema, and `subscription test` sends the first.
    #[arg(long = "example", value_name = "FILE")]
    pub examples: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    #[command(flatten)]
    pub scope: Scope,
    /// The event type.
    pub name: String,
    /// New description (default: the current one).
    #[arg(long)]
    pub description: Option<String>,
    /// New validation (default: the current one).
    #[arg(long, value_enum)]
    pub validation: Option<Validation>,
    /// New JSON Schema from FILE (`-`: standard input); default: the
    /// current version's.
    #[arg(long, value_name = "FILE")]
    pub schema: Option<PathBuf>,
    /// Example `data` object from FILE (repeatable): replaces the
    /// examples; default: the current version's.
    #[arg(long = "example", value_name = "FILE")]
    pub examples: Vec<PathBuf>,
    /// Drop the current examples (keeping only --example ones).
    #[arg(long)]
    pub clear_examples: bool,
    /// Publish the schema and examples as the next version instead of
    /// changing the current one (how a schema that is not backward
    /// compatible is published).
    #[arg(long)]
    pub new_version: bool,
    /// Only if the type is still at this revision (default: the revision
    /// read before the change).
    #[arg(long, value_name = "REVISION")]
    pub expected_revision: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Catalog file: `{"event_types": [{"name", "description",
    /// "validation", "schema", "examples"}, ...]}` (see examples/catalog).
    pub file: PathBuf,
    #[command(flatten)]
    pub scope: Scope,
    /// Publish a schema that is not backward compatible as the type's next
    /// version (else that type fails).
    #[arg(long)]
    pub new_version: bool,
}

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Show a tenant's catalog settings.
    Get {
        /// The tenant (default: a tenant token's own; required with an
        /// admin token).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Change a tenant's catalog settings.
    Set {
        /// The tenant (default: a tenant token's own; required with an
        /// admin token).
        #[arg(long)]
        tenant: Option<String>,
        /// true: the tenant's subscriptions may name only event types of
        /// its (or the global) catalog that are not archived.
        #[arg(long, required = true, action = clap::ArgAction::Set, value_name = "true|false")]
        strict: bool,
    },
}

/// What `update` changes; the rest stays as read.
#[derive(Debug, Default)]
pub struct Changes {
    pub description: Option<String>,
    pub validation: Option<Validation>,
    /// JSON text.
    pub schema: Option<String>,
    /// JSON texts, added to the kept examples.
    pub examples: Vec<String>,
    pub replace_examples: bool,
    pub new_version: bool,
    pub expected_revision: Option<u64>,
}

/// The Update that applies `changes` to `current` (as read): fields not
/// changed keep the current state, the current version's schema and
/// examples included, and the write is refused if the type changed since
/// it was read.
pub fn update_request(
    scope: &Scope,
    current: &pb::EventType,
    changes: Changes,
) -> pb::UpdateEventTypeRequest {
    let version = current.versions.last().cloned().unwrap_or_default();
    let mut examples = if changes.replace_examples || !changes.examples.is_empty() {
        Vec::new()
    } else {
        version.examples
    };
    examples.extend(changes.examples);
    pb::UpdateEventTypeRequest {
        tenant: scope.tenant(),
        global: scope.global,
        name: current.name.clone(),
        description: changes
            .description
            .unwrap_or_else(|| current.description.clone()),
        validation: changes
            .validation
            .map_or(current.validation, |v| v.proto() as i32),
        schema: changes.schema.unwrap_or(version.schema),
        examples,
        new_version: changes.new_version,
        expected_revision: changes.expected_revision.unwrap_or(current.revision),
    }
}

/// The current version's number (0 with none).
fn current_version(t: &pb::EventType) -> u32 {
    t.versions.last().map_or(0, |v| v.version)
}

/// Whether an Update was refused because its schema is not backward
/// compatible (FAILED_PRECONDITION also answers a stale revision).
pub fn is_incompatible(error: &tonic::Status) -> bool {
    error.code() == tonic::Code::FailedPrecondition
        && error.message().to_ascii_lowercase().contains("compatib")
}

/// A refused Update as one line; an incompatible schema says how to
/// publish it anyway.
pub fn update_error(error: tonic::Status, current: &pb::EventType) -> anyhow::Error {
    if is_incompatible(&error) {
        let next = current_version(current) + 1;
        // The server's hint names the request field; say the flag instead.
        let message = error.message();
        let message = message
            .split_once("; publish it as")
            .map_or(message, |(refusal, _)| refusal);
        let error = tonic::Status::new(error.code(), message);
        return anyhow!(
            "{}; add --new-version to publish it as version {next}",
            status(error)
        );
    }
    status(error)
}

/// Whether `entry` is the state `t` already has: description, validation,
/// and the current version's schema and examples (as JSON, not text).
pub fn unchanged(t: &pb::EventType, entry: &EventTypeEntry) -> bool {
    let version = t.versions.last().cloned().unwrap_or_default();
    let examples: Vec<Option<Value>> = version
        .examples
        .iter()
        .map(|e| catalog::parse_text(e))
        .collect();
    t.description == entry.description
        && Validation::of(t.validation) == entry.validation
        && catalog::parse_text(&version.schema) == entry.schema
        && examples == entry.examples.iter().cloned().map(Some).collect::<Vec<_>>()
}

fn read_examples(files: &[PathBuf], stdin: &mut bool) -> anyhow::Result<Vec<String>> {
    files
        .iter()
        .map(|f| catalog::read_json_arg(f, "--example", stdin).map(|v| v.to_string()))
        .collect()
}

pub async fn run(
    server: &crate::connect::Server,
    json: bool,
    command: EventTypeCommand,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    // Files are read (and refused) before connecting.
    let mut stdin = false;
    match command {
        EventTypeCommand::Create(args) => {
            let schema = args
                .schema
                .as_deref()
                .map(|f| catalog::read_json_arg(f, "--schema", &mut stdin))
                .transpose()?;
            let examples = read_examples(&args.examples, &mut stdin)?;
            let mut client = EventTypesClient::new(channel(server).await?);
            let created = client
                .create_event_type(pb::CreateEventTypeRequest {
                    tenant: args.scope.tenant(),
                    global: args.scope.global,
                    name: args.name,
                    description: args.description.unwrap_or_default(),
                    validation: args.validation.map_or(0, |v| v.proto() as i32),
                    schema: schema.map(|s| s.to_string()).unwrap_or_default(),
                    examples,
                })
                .await
                .map_err(status)?
                .into_inner();
            show(out, json, &created)
        }
        EventTypeCommand::Get { scope, name } => {
            let mut client = EventTypesClient::new(channel(server).await?);
            let t = get(&mut client, &scope, &name).await.map_err(status)?;
            show(out, json, &t)
        }
        EventTypeCommand::List {
            scope,
            include_archived,
            page_size,
        } => {
            let mut client = EventTypesClient::new(channel(server).await?);
            let mut types = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_event_types(pb::ListEventTypesRequest {
                        tenant: scope.tenant(),
                        global: scope.global,
                        include_archived,
                        page_size,
                        page_token: token,
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                types.extend(page.event_types);
                token = page.next_page_token;
                if token.is_empty() {
                    break;
                }
            }
            if json {
                let list: Vec<_> = types.iter().map(output::event_type_json).collect();
                output::print_json(out, &json!({ "event_types": list }))
            } else {
                let width = output::terminal_width().unwrap_or(80);
                output::event_types_table(out, &types, Some(width))
            }
        }
        EventTypeCommand::Update(args) => {
            let schema = args
                .schema
                .as_deref()
                .map(|f| catalog::read_json_arg(f, "--schema", &mut stdin))
                .transpose()?;
            let changes = Changes {
                description: args.description,
                validation: args.validation,
                schema: schema.map(|s| s.to_string()),
                examples: read_examples(&args.examples, &mut stdin)?,
                replace_examples: args.clear_examples,
                new_version: args.new_version,
                expected_revision: args.expected_revision,
            };
            let mut client = EventTypesClient::new(channel(server).await?);
            let current = get(&mut client, &args.scope, &args.name)
                .await
                .map_err(status)?;
            let request = update_request(&args.scope, &current, changes);
            let updated = client
                .update_event_type(request)
                .await
                .map_err(|e| update_error(e, &current))?
                .into_inner();
            show(out, json, &updated)
        }
        EventTypeCommand::Archive { scope, name } => {
            archive(server, json, scope, name, true, out).await
        }
        EventTypeCommand::Unarchive { scope, name } => {
            archive(server, json, scope, name, false, out).await
        }
        EventTypeCommand::Import(args) => import(server, json, args, out).await,
        EventTypeCommand::Settings(command) => {
            let mut client = EventTypesClient::new(channel(server).await?);
            let settings = match command {
                SettingsCommand::Get { tenant } => client
                    .get_catalog_settings(pb::GetCatalogSettingsRequest {
                        tenant: tenant.unwrap_or_default(),
                    })
                    .await
                    .map_err(status)?
                    .into_inner(),
                SettingsCommand::Set { tenant, strict } => client
                    .set_catalog_settings(pb::SetCatalogSettingsRequest {
                        settings: Some(pb::CatalogSettings {
                            tenant: tenant.unwrap_or_default(),
                            strict,
                        }),
                    })
                    .await
                    .map_err(status)?
                    .into_inner(),
            };
            output::catalog_settings(out, json, &settings)
        }
    }
}

async fn get(
    client: &mut EventTypesClient<Authed>,
    scope: &Scope,
    name: &str,
) -> Result<pb::EventType, tonic::Status> {
    client
        .get_event_type(pb::GetEventTypeRequest {
            tenant: scope.tenant(),
            global: scope.global,
            name: name.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn archive(
    server: &crate::connect::Server,
    json: bool,
    scope: Scope,
    name: String,
    archived: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut client = EventTypesClient::new(channel(server).await?);
    let t = client
        .archive_event_type(pb::ArchiveEventTypeRequest {
            tenant: scope.tenant(),
            global: scope.global,
            name,
            archived,
        })
        .await
        .map_err(status)?
        .into_inner();
    if json {
        return output::print_json(out, &output::event_type_json(&t));
    }
    let scope = if t.global {
        "global".to_owned()
    } else {
        format!("tenant {}", t.tenant)
    };
    let done = if archived { "archived" } else { "restored" };
    writeln!(out, "{done} {} ({scope})", t.name)?;
    Ok(())
}

/// What importing one entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    Created,
    /// Changed in place, or published as this new version.
    Updated {
        new_version: Option<u32>,
    },
    Unchanged,
    Failed(String),
}

impl Imported {
    fn line(&self, name: &str) -> String {
        match self {
            Imported::Created => format!("{name}: created"),
            Imported::Updated { new_version: None } => format!("{name}: updated"),
            Imported::Updated {
                new_version: Some(v),
            } => format!("{name}: updated as version {v}"),
            Imported::Unchanged => format!("{name}: unchanged"),
            Imported::Failed(reason) => format!("{name}: failed: {reason}"),
        }
    }

    fn json(&self, name: &str) -> Value {
        match self {
            Imported::Created => json!({"name": name, "result": "created"}),
            Imported::Updated { new_version } => {
                json!({"name": name, "result": "updated", "new_version": new_version})
            }
            Imported::Unchanged => json!({"name": name, "result": "unchanged"}),
            Imported::Failed(reason) => {
                json!({"name": name, "result": "failed", "reason": reason})
            }
        }
    }
}

async fn import(
    server: &crate::connect::Server,
    json: bool,
    args: ImportArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let file = CatalogFile::read(&args.file)?;
    let mut client = EventTypesClient::new(channel(server).await?);
    let mut results = Vec::new();
    for entry in &file.event_types {
        let result = import_one(&mut client, &args.scope, entry, args.new_version).await;
        if !json {
            writeln!(out, "{}", result.line(&entry.name))?;
            out.flush()?;
        }
        results.push((entry.name.as_str(), result));
    }
    if json {
        let list: Vec<Value> = results.iter().map(|(n, r)| r.json(n)).collect();
        output::print_json(out, &json!({ "results": list }))?;
    }
    let failed = results
        .iter()
        .filter(|(_, r)| matches!(r, Imported::Failed(_)))
        .count();
    if failed > 0 {
        bail!(
            "{failed} of {} event types of {} failed",
            results.len(),
            args.file.display()
        );
    }
    Ok(())
}

/// Creates `entry`, or brings the existing type to it.
async fn import_one(
    client: &mut EventTypesClient<Authed>,
    scope: &Scope,
    entry: &EventTypeEntry,
    new_version: bool,
) -> Imported {
    let failed = |e: tonic::Status| Imported::Failed(status(e).to_string());
    let current = match get(client, scope, &entry.name).await {
        Ok(current) => current,
        Err(e) if e.code() == tonic::Code::NotFound => {
            return match client
                .create_event_type(pb::CreateEventTypeRequest {
                    tenant: scope.tenant(),
                    global: scope.global,
                    name: entry.name.clone(),
                    description: entry.description.clone(),
                    validation: entry.validation.proto() as i32,
                    schema: entry.schema_text(),
                    examples: entry.example_texts(),
                })
                .await
            {
                Ok(_) => Imported::Created,
                Err(e) => failed(e),
            };
        }
        Err(e) => return failed(e),
    };
    if unchanged(&current, entry) {
        return Imported::Unchanged;
    }
    let changes = |new_version| Changes {
        description: Some(entry.description.clone()),
        validation: Some(entry.validation),
        schema: Some(entry.schema_text()),
        examples: entry.example_texts(),
        replace_examples: true,
        new_version,
        expected_revision: None,
    };
    match client
        .update_event_type(update_request(scope, &current, changes(false)))
        .await
    {
        Ok(_) => Imported::Updated { new_version: None },
        Err(e) if is_incompatible(&e) && new_version => {
            // Refused without writing: the revision read still holds.
            match client
                .update_event_type(update_request(scope, &current, changes(true)))
                .await
            {
                Ok(t) => Imported::Updated {
                    new_version: Some(current_version(&t.into_inner())),
                },
                Err(e) => failed(e),
            }
        }
        Err(e) => Imported::Failed(update_error(e, &current).to_string()),
    }
}

fn show(out: &mut impl Write, json: bool, t: &pb::EventType) -> anyhow::Result<()> {
    if json {
        output::print_json(out, &output::event_type_json(t))
    } else {
        output::event_type_details(out, t)
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::{Cli, Command};

    fn parse(args: &[&str]) -> Result<EventTypeCommand, clap::Error> {
        let cli = Cli::try_parse_from(["hookctl", "event-type"].iter().chain(args))?;
        match cli.command {
            Command::EventType(command) => Ok(command),
            other => panic!("not event-type: {other:?}"),
        }
    }

    #[test]
    fn commands_parse() {
        let EventTypeCommand::Create(create) = parse(&[
            "create",
            "--tenant",
            "acme",
            "--name",
            "course_stat.created",
            "--description",
            "Stats",
            "--validation",
            "warn",
            "--schema",
            "-",
            "--example",
            "a.json",
            "--example",
            "b.json",
        ])
        .unwrap() else {
            panic!("not create")
        };
        assert_eq!(create.scope.tenant.as_deref(), Some("acme"));
        assert!(!create.scope.global);
        assert_eq!(create.validation, Some(Validation::Warn));
        assert_eq!(create.schema, Some(PathBuf::from("-")));
        assert_eq!(
            create.examples,
            [PathBuf::from("a.json"), PathBuf::from("b.json")]
        );
        // A tenant token may name no scope.
        assert!(parse(&["create", "--name", "a.b"]).is_ok());
        for bad in [
            &["create", "--tenant", "acme", "--global", "--name", "a.b"][..],
            &["create", "--tenant", "acme"],
            &["create", "--name", "a.b", "--validation", "strict"],
            &["get"],
            &["update", "a.b", "--validation", "on"],
            &["archive", "--global", "--tenant", "x", "a.b"],
            &["import"],
            &["settings", "set", "--tenant", "acme"],
            &["settings", "set", "--tenant", "acme", "--strict", "maybe"],
            &["settings", "get", "--global"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }

        let EventTypeCommand::Get { scope, name } =
            parse(&["get", "--global", "user.created"]).unwrap()
        else {
            panic!("not get")
        };
        assert!(scope.global && scope.tenant.is_none());
        assert_eq!(name, "user.created");

        let EventTypeCommand::List {
            scope,
            include_archived,
            page_size,
        } = parse(&["list", "--tenant", "acme", "--include-archived"]).unwrap()
        else {
            panic!("not list")
        };
        assert_eq!(
            (scope.tenant.as_deref(), include_archived, page_size),
            (Some("acme"), true, 100)
        );

        let EventTypeCommand::Update(update) = parse(&[
            "update",
            "course_stat.created",
            "--global",
            "--schema",
            "s.json",
            "--new-version",
            "--expected-revision",
            "7",
        ])
        .unwrap() else {
            panic!("not update")
        };
        assert!(update.scope.global && update.new_version);
        assert_eq!(update.expected_revision, Some(7));
        assert_eq!(update.description, None);

        let EventTypeCommand::Import(import) = parse(&[
            "import",
            "examples/catalog/lms-stats.json",
            "--tenant",
            "acme",
        ])
        .unwrap() else {
            panic!("not import")
        };
        assert_eq!(
            import.file,
            PathBuf::from("examples/catalog/lms-stats.json")
        );
        assert!(!import.new_version);

        for (value, expected) in [("true", true), ("false", false)] {
            let EventTypeCommand::Settings(SettingsCommand::Set { tenant, strict }) =
                parse(&["settings", "set", "--tenant", "acme", "--strict", value]).unwrap()
            else {
                panic!("not settings set")
            };
            assert_eq!((tenant.as_deref(), strict), (Some("acme"), expected));
        }
        assert!(matches!(
            parse(&["settings", "get"]).unwrap(),
            EventTypeCommand::Settings(SettingsCommand::Get { tenant: None })
        ));
        assert!(matches!(
            parse(&["unarchive", "--tenant", "acme", "a.b"]).unwrap(),
            EventTypeCommand::Unarchive { .. }
        ));
        let cli = Cli::try_parse_from(["hookctl", "event-types", "list", "--json"]).unwrap();
        assert!(cli.json, "the global --json after the subcommand");
    }

    /// Every subcommand, depth first, with its path.
    fn leaves(command: &clap::Command, path: String, into: &mut Vec<(String, clap::Command)>) {
        if command.get_subcommands().next().is_none() {
            into.push((path.clone(), command.clone()));
        }
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            leaves(sub, format!("{path} {}", sub.get_name()), into);
        }
    }

    #[test]
    fn help_describes_every_flag_and_keeps_global_options_apart() {
        let mut cli = Cli::command();
        cli.build();
        let event_type = cli.find_subcommand("event-type").unwrap().clone();
        let mut commands = Vec::new();
        leaves(&event_type, "event-type".into(), &mut commands);
        assert_eq!(
            commands.len(),
            9,
            "{:?}",
            commands.iter().map(|c| &c.0).collect::<Vec<_>>()
        );
        for (path, mut command) in commands {
            assert!(command.get_about().is_some(), "{path} has no description");
            for arg in command.get_arguments() {
                if arg.get_id() != "help" && !arg.is_hide_set() {
                    assert!(
                        arg.get_help().is_some(),
                        "{path}: {} has no description",
                        arg.get_id()
                    );
                }
            }
            let help = command.render_long_help().to_string();
            let (own, global) = help.split_once("Global options:").expect(&help);
            for flag in ["--server", "--token", "--nats", "--prefix", "--json"] {
                assert!(
                    !own.contains(&format!("{flag} ")),
                    "{flag} among {path}'s options:\n{help}"
                );
                assert!(global.contains(flag), "{help}");
            }
        }
        let mut create = event_type.find_subcommand("create").unwrap().clone();
        let usage = create.render_usage().to_string();
        assert!(
            usage.contains("--name <NAME>"),
            "required, so in the usage: {usage}"
        );
        let help = create.render_long_help().to_string();
        for value in ["off", "warn", "reject"] {
            assert!(help.contains(&format!("- {value}:")), "{help}");
        }
        let mut settings = event_type.find_subcommand("settings").unwrap().clone();
        let set = settings.find_subcommand_mut("set").unwrap();
        let usage = set.render_usage().to_string();
        assert!(usage.contains("--strict <true|false>"), "{usage}");
    }

    fn sample() -> pb::EventType {
        pb::EventType {
            tenant: "acme".into(),
            name: "course_stat.created".into(),
            description: "Course statistics created".into(),
            validation: pb::SchemaValidation::Warn as i32,
            versions: vec![
                pb::EventTypeVersion {
                    version: 1,
                    schema: r#"{"type":"object"}"#.into(),
                    examples: vec![r#"{"id":0}"#.into()],
                    ..Default::default()
                },
                pb::EventTypeVersion {
                    version: 2,
                    schema: r#"{"type":"object","required":["id"]}"#.into(),
                    examples: vec![r#"{"id":1}"#.into(), r#"{"id":2}"#.into()],
                    ..Default::default()
                },
            ],
            revision: 41,
            ..Default::default()
        }
    }

    fn acme() -> Scope {
        Scope {
            tenant: Some("acme".into()),
            global: false,
        }
    }

    #[test]
    fn an_update_keeps_what_it_does_not_change_and_checks_the_revision() {
        let request = update_request(&acme(), &sample(), Changes::default());
        assert_eq!(
            request,
            pb::UpdateEventTypeRequest {
                tenant: "acme".into(),
                global: false,
                name: "course_stat.created".into(),
                description: "Course statistics created".into(),
                validation: pb::SchemaValidation::Warn as i32,
                schema: r#"{"type":"object","required":["id"]}"#.into(),
                examples: vec![r#"{"id":1}"#.into(), r#"{"id":2}"#.into()],
                new_version: false,
                expected_revision: 41,
            }
        );
        let request = update_request(
            &Scope {
                tenant: None,
                global: true,
            },
            &sample(),
            Changes {
                description: Some(String::new()),
                validation: Some(Validation::Off),
                schema: Some("{}".into()),
                examples: vec![r#"{"id":3}"#.into()],
                new_version: true,
                expected_revision: Some(40),
                ..Default::default()
            },
        );
        assert!(request.global && request.tenant.is_empty());
        assert_eq!(request.description, "");
        assert_eq!(request.validation, pb::SchemaValidation::Off as i32);
        assert_eq!(request.schema, "{}");
        assert_eq!(request.examples, [r#"{"id":3}"#]);
        assert!(request.new_version);
        assert_eq!(request.expected_revision, 40);
        let cleared = update_request(
            &acme(),
            &sample(),
            Changes {
                replace_examples: true,
                ..Default::default()
            },
        );
        assert!(cleared.examples.is_empty());
    }

    #[test]
    fn an_incompatible_schema_says_how_to_publish_it() {
        let refused = tonic::Status::failed_precondition(
            "event type course_stat.created v2: the new schema is not backward compatible (required: adds \"course_id\"); publish it as version 3 with new_version",
        );
        assert!(is_incompatible(&refused));
        assert_eq!(
            update_error(refused, &sample()).to_string(),
            "failed precondition: event type course_stat.created v2: the new schema is not backward compatible (required: adds \"course_id\"); add --new-version to publish it as version 3"
        );
        let stale = tonic::Status::failed_precondition(
            "event type course_stat.created is at revision 42, not 41: read it again and retry",
        );
        assert!(!is_incompatible(&stale));
        assert_eq!(
            update_error(stale, &sample()).to_string(),
            "failed precondition: event type course_stat.created is at revision 42, not 41: read it again and retry"
        );
    }

    #[test]
    fn an_entry_equal_to_the_current_version_is_unchanged() {
        let entry = |text: &str| -> EventTypeEntry {
            CatalogFile::parse(text).unwrap().event_types.remove(0)
        };
        let same = entry(
            r#"{"event_types": [{"name": "course_stat.created",
                "description": "Course statistics created", "validation": "warn",
                "schema": {"required": ["id"], "type": "object"},
                "examples": [{"id": 1}, {"id": 2}]}]}"#,
        );
        assert!(unchanged(&sample(), &same), "key order is not a change");
        let mut other = same.clone();
        other.validation = Validation::Reject;
        assert!(!unchanged(&sample(), &other));
        let mut other = same.clone();
        other.examples.pop();
        assert!(!unchanged(&sample(), &other));
        let mut other = same;
        other.schema = None;
        assert!(!unchanged(&sample(), &other));

        let mut bare = sample();
        bare.validation = 0;
        bare.description.clear();
        bare.versions = vec![pb::EventTypeVersion {
            version: 1,
            ..Default::default()
        }];
        assert!(
            unchanged(&bare, &entry(r#"{"event_types": [{"name": "x"}]}"#)),
            "unspecified validation is off, an empty schema none"
        );
    }

    #[test]
    fn import_results_read_as_one_line_each() {
        let name = "user.created";
        assert_eq!(Imported::Created.line(name), "user.created: created");
        assert_eq!(
            Imported::Updated { new_version: None }.line(name),
            "user.created: updated"
        );
        assert_eq!(
            Imported::Updated {
                new_version: Some(2)
            }
            .line(name),
            "user.created: updated as version 2"
        );
        assert_eq!(Imported::Unchanged.line(name), "user.created: unchanged");
        assert_eq!(
            Imported::Failed("permission denied: no".into()).line(name),
            "user.created: failed: permission denied: no"
        );
        assert_eq!(
            Imported::Failed("x".into()).json(name),
            json!({"name": "user.created", "result": "failed", "reason": "x"})
        );
    }

    #[test]
    fn a_list_fits_80_columns_and_a_type_shows_every_version() {
        let mut long = sample();
        long.name = "user.paid_subscription.ended".into();
        long.description = "A member's paid subscription ended: the data holds the member as the forum's User object".into();
        let mut global = sample();
        global.global = true;
        global.tenant.clear();
        global.archived = true;
        let mut out = Vec::new();
        output::event_types_table(&mut out, &[sample(), long, global], Some(80)).unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in text.lines() {
            assert!(
                line.chars().count() <= 80,
                "{} columns:\n{text}",
                line.chars().count()
            );
        }
        for expected in [
            "NAME",
            "SCOPE",
            "VERSION",
            "VALIDATION",
            "ARCHIVED",
            "DESCRIPTION",
            "tenant",
            "global",
            "warn",
            "A member's",
            "…",
            "descriptions cut: `hookctl event-type get NAME` or --json shows them whole",
        ] {
            assert!(text.contains(expected), "{expected} missing in\n{text}");
        }
        assert!(
            text.contains("\ncourse_stat.created           tenant  2        warn        no        Course sta…\n"),
            "the current version:\n{text}"
        );

        // A description that fits is whole.
        let mut short = sample();
        short.description = "Course stats created".into();
        let mut out = Vec::new();
        output::event_types_table(&mut out, &[short], Some(80)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "NAME                 SCOPE   VERSION  VALIDATION  ARCHIVED  DESCRIPTION\n\
             course_stat.created  tenant  2        warn        no        Course stats created\n"
        );

        let mut out = Vec::new();
        output::event_type_details(&mut out, &sample()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("version 1, created -\nschema:\n{\n  \"type\": \"object\"\n}\nexample 1:\n{\n  \"id\": 0\n}"), "{text}");
        assert!(text.contains("version 2 (current)"), "{text}");
        assert!(text.contains("example 2:\n{\n  \"id\": 2\n}"), "{text}");
        assert!(
            text.contains("tenant acme") && text.contains("warn"),
            "{text}"
        );

        let v = output::event_type_json(&sample());
        assert_eq!(v["current_version"], 2);
        assert_eq!(v["scope"], "tenant");
        assert_eq!(v["validation"], "warn");
        assert_eq!(v["versions"][1]["current"], true);
        assert_eq!(v["versions"][0]["current"], false);
        assert_eq!(v["versions"][1]["schema"]["required"][0], "id");
        assert_eq!(v["versions"][1]["examples"][1]["id"], 2);
    }
}
