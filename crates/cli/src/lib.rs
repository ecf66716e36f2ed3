//! hookctl: the admin CLI of hookrelay, over its gRPC API and NATS.
#![forbid(unsafe_code)]

pub mod commands;
pub mod connect;
pub mod output;
pub mod retry;
pub mod time;

use clap::{Parser, Subcommand};

/// Manage hookrelay subscriptions, read delivery logs, publish test events.
#[derive(Debug, Parser)]
#[command(name = "hookctl", version)]
pub struct Cli {
    /// hookrelay gRPC address: host:port (plain HTTP/2) or a URL
    /// (http:// or https://).
    #[arg(
        long,
        global = true,
        env = "HOOKCTL_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// Bearer token of the API (else HOOKCTL_TOKEN, else the token file).
    #[arg(long, global = true, env = "HOOKCTL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the token; scripts/run.sh writes .local/hookctl-token.
    #[arg(
        long,
        global = true,
        env = "HOOKCTL_TOKEN_FILE",
        default_value = ".local/hookctl-token"
    )]
    pub token_file: std::path::PathBuf,
    /// NATS address, for `publish`.
    #[arg(
        long,
        global = true,
        env = "HOOKCTL_NATS",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats: String,
    /// The installation's prefix, for `publish`.
    #[arg(
        long,
        global = true,
        env = "HOOKCTL_PREFIX",
        default_value = "hookrelay"
    )]
    pub prefix: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, read, list, change and delete subscriptions.
    #[command(subcommand, alias = "sub")]
    Subscription(Box<commands::subscription::SubscriptionCommand>),
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

/// Runs one command, printing to stdout.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let server = connect::Server {
        url: cli.server.clone(),
        token: cli
            .token
            .clone()
            .or_else(|| {
                std::fs::read_to_string(&cli.token_file)
                    .ok()
                    .map(|t| t.trim().to_owned())
            })
            .filter(|t| !t.is_empty()),
    };
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Subscription(command) => {
            commands::subscription::run(&server, cli.json, *command, &mut out).await
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
        assert!(Cli::try_parse_from([
            "hookctl",
            "attempts",
            "list",
            "--subscription",
            "s",
            "--tenant",
            "t"
        ])
        .is_err());
        assert!(Cli::try_parse_from([
            "hookctl",
            "attempts",
            "list",
            "--subscription",
            "s",
            "--event",
            "e"
        ])
        .is_err());
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
