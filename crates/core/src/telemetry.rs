//! Logging setup shared by every binary: `RUST_LOG` wins over the configured
//! level; plain or JSON lines on stderr, coloured only on a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, TelemetryConfig};

/// Installs the global subscriber; a second call is a no-op.
pub fn init(config: &TelemetryConfig) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_directives(&config.level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours())
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The configured level, with async-nats held to warnings unless the level
/// names it: the client logs its own connection events at info ("event:
/// closed" after our "stopped" line), which hookrelay already reports in its
/// own words (`nats::connect`'s event callback).
fn default_directives(level: &str) -> String {
    if level.contains("async_nats") {
        level.to_owned()
    } else {
        format!("{level},async_nats=warn")
    }
}

/// Colours only where a person reads them: stderr is a terminal and
/// `NO_COLOR` is unset (a file, a pipe or a journal gets plain text).
fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// An error and its causes as one line, `error: cause: cause`, each said
/// once: a cause whose text its parent already includes is left out
/// (thiserror's `{0}` messages repeat their source). What the binaries
/// print instead of anyhow's `Caused by:` list and backtrace.
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        let text = source.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = source.source();
    }
    line.replace('\n', "; ")
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Repeats(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("inner")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn async_nats_is_held_to_warnings_unless_named() {
        assert_eq!(super::default_directives("info"), "info,async_nats=warn");
        assert_eq!(
            super::default_directives("info,async_nats=debug"),
            "info,async_nats=debug"
        );
    }

    #[test]
    fn an_error_is_one_line_each_cause_once() {
        let error = Repeats(Inner(std::io::Error::other("disk on fire")));
        assert_eq!(super::error_line(&error), "outer: inner: disk on fire");
    }
}
