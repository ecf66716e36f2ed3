//! hookctl: the admin CLI of hookrelay, over its gRPC API and NATS.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod commands;
pub mod connect;
pub mod output;
pub mod retry;
pub mod time;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

/// Manage hookrelay subscriptions and the event-type catalog, read delivery
/// logs, publish test events.
#[derive(Debug, Parser)]
#[command(name = "hookctl", version)]
pub struct Cli {
    /// hookrelay gRPC address: host:port (plain HTTP/2) or a URL
    /// (http:// or https://).
    #[arg(
        long,
        global = true,
        env = "HOOKCTL_SERVER",
        default_value = "127.0.0.1:50051",
        help_heading = "Global options"
    )]
    pub server: String,
    /// Bearer token of the API (else HOOKCTL_TOKEN, else the token file).
    #[arg(
        long,
        global = true,
        env = "HOOKCTL_TOKEN",
        hide_env_values = true,
        help_heading = "Global options"
    )]
    pub token: Option<String>,
    /// File holding the token. Default: $XDG_CONFIG_HOME/hookctl/token
    /// (~/.config/hookctl/token), else the .local/hookctl-token that
    /// scripts/run.sh writes, found from the current directory or from
    /// where hookctl is (target/release/hookctl of the repository).
    #[arg(
        long,
        global = true,
        env = "HOOKCTL_TOKEN_FILE",
        help_heading = "Global options"
    )]
    pub token_file: Option<std::path::PathBuf>,
    /// The tenant every command acts on: required with an admin token,
    /// a tenant token's own by default. A command's own --tenant (or the
    /// TENANT of `events list`) wins.
    #[arg(
        long,
        global = true,
        env = "HOOKCTL_TENANT",
        help_heading = "Global options"
    )]
    pub tenant: Option<String>,
    /// NATS address, for `publish`.
    #[arg(
        long,
        global = true,
        env = "HOOKCTL_NATS",
        default_value = "nats://127.0.0.1:4222",
        help_heading = "Global options"
    )]
    pub nats: String,
    /// The installation's prefix, for `publish`.
    #[arg(
        long,
        global = true,
        env = "HOOKCTL_PREFIX",
        default_value = "hookrelay",
        help_heading = "Global options"
    )]
    pub prefix: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, read, list, change and delete subscriptions.
    #[command(subcommand, alias = "sub")]
    Subscription(Box<commands::subscription::SubscriptionCommand>),
    /// The event-type catalog: types, their schemas and examples, how
    /// strictly ingest checks them.
    #[command(subcommand, alias = "event-types")]
    EventType(commands::event_type::EventTypeCommand),
    /// Read delivery attempts.
    #[command(subcommand)]
    Attempts(commands::attempts::AttemptsCommand),
    /// Publish an event to NATS, as a service would.
    Publish(commands::publish::PublishArgs),
    /// Deliveries that gave up (the error page), newest first.
    Failures(commands::logs::FailuresArgs),
    /// Send one event to one subscription again, now.
    Redeliver { event: String, subscription: String },
    /// Send again every delivery of a subscription that gave up since a time.
    Recover {
        subscription: String,
        /// RFC 3339 or a duration ago (`24h`).
        #[arg(long, value_parser = time::parse)]
        since: chrono::DateTime<chrono::Utc>,
        #[arg(long, value_parser = time::parse)]
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Events as published.
    #[command(subcommand)]
    Events(commands::events::EventsCommand),
    /// Follow attempts live.
    Tail(commands::tail::TailArgs),
}

/// Where the token is looked for when neither `--token` nor
/// `--token-file` says: the user's config, then the `.local/hookctl-token`
/// of the repository the current directory or the executable is in.
pub fn default_token_file(
    cwd: Option<&Path>,
    exe: Option<&Path>,
    xdg_config_home: Option<&Path>,
    home: Option<&Path>,
) -> Option<PathBuf> {
    let config = xdg_config_home
        .filter(|p| p.is_absolute())
        .map(Path::to_path_buf)
        .or_else(|| home.map(|h| h.join(".config")))
        .map(|c| c.join("hookctl").join("token"));
    let repository = [cwd, exe.and_then(Path::parent)]
        .into_iter()
        .flatten()
        .flat_map(Path::ancestors)
        .map(|dir| dir.join(".local").join("hookctl-token"));
    config.into_iter().chain(repository).find(|p| p.is_file())
}

/// The token: `--token`, else the token file's first line.
fn token(cli: &Cli) -> anyhow::Result<Option<String>> {
    if let Some(token) = cli.token.clone() {
        return Ok(Some(token));
    }
    let file = match &cli.token_file {
        Some(file) => file.clone(),
        None => {
            let env = |name| std::env::var_os(name).map(PathBuf::from);
            match default_token_file(
                std::env::current_dir().ok().as_deref(),
                std::env::current_exe().ok().as_deref(),
                env("XDG_CONFIG_HOME").as_deref(),
                env("HOME").as_deref(),
            ) {
                Some(file) => file,
                None => return Ok(None),
            }
        }
    };
    let text = std::fs::read_to_string(&file).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the token file {}: {e} (--token-file / HOOKCTL_TOKEN_FILE)",
            file.display()
        )
    })?;
    Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()))
}

/// Runs one command, printing to stdout.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // Only commands that call the API need the token.
    let token = match &cli.command {
        Command::Publish(_) => None,
        _ => token(&cli)?,
    };
    let server = connect::Server {
        url: cli.server.clone(),
        token,
        tenant: cli.tenant.clone(),
    };
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Subscription(command) => {
            commands::subscription::run(&server, cli.json, *command, &mut out).await
        }
        Command::EventType(mut command) => {
            command.default_tenant(cli.tenant.as_deref());
            commands::event_type::run(&server, cli.json, command, &mut out).await
        }
        Command::Attempts(command) => {
            commands::attempts::run(&server, cli.json, command, &mut out).await
        }
        Command::Publish(args) => {
            commands::publish::run(&cli.nats, &cli.prefix, cli.json, args, &mut out).await
        }
        Command::Failures(args) => {
            commands::logs::failures(&server, cli.json, args, &mut out).await
        }
        Command::Redeliver {
            event,
            subscription,
        } => commands::logs::redeliver(&server, cli.json, event, subscription, &mut out).await,
        Command::Recover {
            subscription,
            since,
            until,
        } => commands::logs::recover(&server, cli.json, subscription, since, until, &mut out).await,
        Command::Events(command) => {
            commands::events::run(&server, cli.json, command, &mut out).await
        }
        Command::Tail(args) => commands::tail::run(&server, cli.json, args, &mut out).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_help_describes_every_flag_and_keeps_global_options_apart() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        cli.build();
        let create = cli
            .find_subcommand_mut("subscription")
            .unwrap()
            .find_subcommand_mut("create")
            .unwrap();
        let help = create.render_long_help().to_string();
        let (own, global) = help.split_once("Global options:").expect(&help);
        assert!(own.contains("--event-type <PATTERN>") && own.contains("--tenant <TENANT>"));
        for flag in ["--server", "--token", "--nats", "--prefix", "--json"] {
            assert!(
                !own.contains(&format!("{flag} ")),
                "{flag} among create's options:\n{help}"
            );
            assert!(global.contains(flag), "{help}");
        }
        for arg in create.get_arguments() {
            if arg.get_id() != "help" && !arg.is_hide_set() {
                assert!(
                    arg.get_help().is_some(),
                    "--{} has no description",
                    arg.get_id()
                );
            }
        }
        let usage = create.render_usage().to_string();
        assert!(
            usage.contains("--event-type <PATTERN>"),
            "required, so in the usage: {usage}"
        );
        assert!(Cli::try_parse_from([
            "hookctl",
            "subscription",
            "create",
            "--tenant",
            "a",
            "--url",
            "http://x/"
        ])
        .is_err());
    }

    #[test]
    fn the_token_is_found_from_anywhere() {
        let root = std::env::temp_dir().join(format!("hookctl-token-{}", std::process::id()));
        let repo = root.join("repo");
        let elsewhere = root.join("elsewhere");
        let home = root.join("home");
        for dir in [
            repo.join(".local"),
            repo.join("target/release"),
            elsewhere.clone(),
            home.clone(),
        ] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let exe = repo.join("target/release/hookctl");
        let none = default_token_file(Some(&elsewhere), Some(&exe), None, Some(&home));
        assert_eq!(none, None);
        std::fs::write(repo.join(".local/hookctl-token"), "t").unwrap();
        // From another directory, through the executable's repository.
        assert_eq!(
            default_token_file(Some(&elsewhere), Some(&exe), None, Some(&home)),
            Some(repo.join(".local/hookctl-token"))
        );
        // From a subdirectory of the repository, whatever the executable.
        assert_eq!(
            default_token_file(Some(&repo.join("target")), None, None, None),
            Some(repo.join(".local/hookctl-token"))
        );
        // The user's config comes first.
        std::fs::create_dir_all(home.join(".config/hookctl")).unwrap();
        std::fs::write(home.join(".config/hookctl/token"), "u").unwrap();
        assert_eq!(
            default_token_file(Some(&elsewhere), Some(&exe), None, Some(&home)),
            Some(home.join(".config/hookctl/token"))
        );
        let xdg = root.join("xdg");
        std::fs::create_dir_all(xdg.join("hookctl")).unwrap();
        std::fs::write(xdg.join("hookctl/token"), "x").unwrap();
        assert_eq!(
            default_token_file(Some(&elsewhere), Some(&exe), Some(&xdg), Some(&home)),
            Some(xdg.join("hookctl/token"))
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn commands_parse() {
        let cli = Cli::try_parse_from([
            "hookctl",
            "subscription",
            "create",
            "--tenant",
            "acme",
            "--url",
            "https://x.test/",
            "--event-type",
            "a.*",
            "--label",
            "course_id=42",
            "--header",
            "X-Team=lms",
            "--success-rule",
            "status_200",
            "--timeout",
            "5s",
        ])
        .unwrap();
        let Command::Subscription(command) = cli.command else {
            panic!("not a subscription command");
        };
        let commands::subscription::SubscriptionCommand::Create(args) = *command else {
            panic!("not create");
        };
        assert_eq!(
            args.fields.labels,
            [("course_id".to_owned(), "42".to_owned())]
        );
        assert_eq!(args.fields.timeout, Some(std::time::Duration::from_secs(5)));
        assert!(Cli::try_parse_from([
            "hookctl",
            "subscription",
            "create",
            "--tenant",
            "a",
            "--url",
            "u",
            "--label",
            "nokey"
        ])
        .is_err());
        // Every filter of a listing, together.
        let cli = Cli::try_parse_from([
            "hookctl",
            "attempts",
            "list",
            "--tenant",
            "t",
            "--subscription",
            "s",
            "--event",
            "e",
            "--outcome",
            "http_5xx",
            "--since",
            "1h",
            "--until",
            "2099-01-01T00:00:00Z",
        ])
        .unwrap();
        let Command::Attempts(commands::attempts::AttemptsCommand::List {
            subscription,
            event,
            outcome,
            since,
            until,
            ..
        }) = cli.command
        else {
            panic!("not attempts list");
        };
        assert_eq!(
            (
                subscription.as_deref(),
                event.as_deref(),
                outcome.as_deref()
            ),
            (Some("s"), Some("e"), Some("http_5xx"))
        );
        assert!(since.is_some() && until.is_some());
        let cli = Cli::try_parse_from([
            "hookctl", "attempts", "list", "--event", "e-1", "--tenant", "acme",
        ])
        .unwrap();
        let Command::Attempts(commands::attempts::AttemptsCommand::List { event, tenant, .. }) =
            cli.command
        else {
            panic!("not attempts list");
        };
        assert_eq!(
            (event.as_deref(), tenant.as_deref()),
            (Some("e-1"), Some("acme"))
        );
        // One --tenant for every command, before or after it (a command's
        // own --tenant parses as well; the TENANT of `events list` is its own).
        for (args, global) in [
            (
                &["--tenant", "acme", "subscription", "get", "sub_1"][..],
                Some("acme"),
            ),
            (
                &["subscription", "get", "sub_1", "--tenant", "acme"][..],
                Some("acme"),
            ),
            (
                &["redeliver", "e", "sub_1", "--tenant", "acme"][..],
                Some("acme"),
            ),
            (
                &["subscription", "list", "--tenant", "acme"][..],
                Some("acme"),
            ),
            (&["events", "list", "acme"][..], None),
            (&["events", "list", "--tenant", "acme"][..], Some("acme")),
            (
                &["failures", "--tenant", "acme", "--subscription", "s"][..],
                Some("acme"),
            ),
        ] {
            let cli = Cli::try_parse_from(std::iter::once("hookctl").chain(args.iter().copied()))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.tenant.as_deref(), global, "{args:?}");
        }
        let cli = Cli::try_parse_from([
            "hookctl",
            "--json",
            "publish",
            "acme",
            "user.created",
            "{}",
            "--id",
            "e1",
        ])
        .unwrap();
        assert!(cli.json);
    }
}
