//! One module per command group.

pub mod attempts;
pub mod event_type;
pub mod events;
pub mod logs;
pub mod publish;
pub mod subscription;
pub mod tail;

/// Parses `key=value` arguments (`--label`, `--header`).
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not key=value")),
    }
}
