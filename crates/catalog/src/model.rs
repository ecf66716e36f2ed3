//! The catalog as stored in its KV bucket: one JSON value per event type
//! (`t.<tenant>.<name>` or `g.<name>`) and per tenant's settings
//! (`s.<tenant>`).

use chrono::{DateTime, Utc};
use hookrelay_core::event::check_token_path;
use serde::{Deserialize, Serialize};

/// How ingest treats an event whose `data` the current schema refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validation {
    /// Not checked: the default, so a type can be catalogued (documented,
    /// given examples) before anyone relies on its schema.
    #[default]
    Off,
    /// Delivered anyway, but counted and flagged on each attempt.
    Warn,
    /// Not delivered: dead-lettered with the violation.
    Reject,
}

/// An event type of one tenant, or of the global catalog every tenant shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventTypeRecord {
    /// `None` for a global type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Dot-separated tokens (`course_stat.created`); no wildcards.
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub validation: Validation,
    /// An archived type stays readable but no longer validates events nor
    /// admits new subscriptions.
    #[serde(default)]
    pub archived: bool,
    /// Oldest first; the last is the one events are checked against.
    #[serde(default)]
    pub versions: Vec<VersionRecord>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// KV revision; not stored in the value, filled in when read.
    #[serde(skip)]
    pub revision: u64,
}

impl EventTypeRecord {
    /// The version events are checked against: the last one.
    pub fn current(&self) -> Option<&VersionRecord> {
        self.versions.last()
    }

    /// This type's key in the bucket.
    pub fn key(&self) -> String {
        type_key(self.tenant.as_deref(), &self.name)
    }
}

/// One version of an event type's `data` contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// 1, 2, ...
    pub version: u32,
    /// JSON Schema (draft 2020-12) of `data` as JSON text; empty: any object.
    /// Kept as text so it reads back exactly as written.
    #[serde(default)]
    pub schema: String,
    /// Example `data` objects as JSON texts; each validates against `schema`.
    #[serde(default)]
    pub examples: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// A tenant's catalog settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CatalogSettings {
    /// Subscriptions may name only catalogued (non-archived) types.
    pub strict: bool,
}

/// Key of an event type: `t.<tenant>.<name>`, or `g.<name>` for a global
/// one. The parts are not checked here: callers validate names before
/// writing (see [`check_token_path`]).
pub fn type_key(tenant: Option<&str>, name: &str) -> String {
    match tenant {
        Some(tenant) => format!("t.{tenant}.{name}"),
        None => format!("g.{name}"),
    }
}

/// Key of a tenant's catalog settings: `s.<tenant>`.
pub fn settings_key(tenant: &str) -> String {
    format!("s.{tenant}")
}

/// What a key of the catalog bucket names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// An event type; `tenant` is `None` for a global one.
    Type {
        tenant: Option<String>,
        name: String,
    },
    Settings {
        tenant: String,
    },
}

/// Reads a key of the catalog bucket; `None` for anything not written by
/// the catalog. A tenant is one token, so `t.acme.course_stat.created` is
/// tenant `acme`, type `course_stat.created`.
pub fn parse_key(key: &str) -> Option<Key> {
    let (kind, rest) = key.split_once('.')?;
    match kind {
        "t" => {
            let (tenant, name) = rest.split_once('.')?;
            check_token_path(tenant, false).ok()?;
            check_token_path(name, true).ok()?;
            Some(Key::Type {
                tenant: Some(tenant.to_owned()),
                name: name.to_owned(),
            })
        }
        "g" => {
            check_token_path(rest, true).ok()?;
            Some(Key::Type {
                tenant: None,
                name: rest.to_owned(),
            })
        }
        "s" => {
            check_token_path(rest, false).ok()?;
            Some(Key::Settings {
                tenant: rest.to_owned(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let key = type_key(Some("acme"), "course_stat.created");
        assert_eq!(key, "t.acme.course_stat.created");
        assert_eq!(
            parse_key(&key),
            Some(Key::Type {
                tenant: Some("acme".into()),
                name: "course_stat.created".into()
            })
        );
        let key = type_key(None, "user.signed_up");
        assert_eq!(key, "g.user.signed_up");
        assert_eq!(
            parse_key(&key),
            Some(Key::Type {
                tenant: None,
                name: "user.signed_up".into()
            })
        );
        let key = settings_key("acme-2");
        assert_eq!(key, "s.acme-2");
        assert_eq!(
            parse_key(&key),
            Some(Key::Settings {
                tenant: "acme-2".into()
            })
        );
    }

    #[test]
    fn foreign_or_malformed_keys_are_not_parsed() {
        for key in [
            "",
            "t",
            "t.acme",
            "t.acme.",
            "t..x",
            "t.acme.a..b",
            "t.acme.a.*",
            "g",
            "g.",
            "g.a b",
            "s.",
            "s.acme.x",
            "x.acme",
            "sub_01ABC",
        ] {
            assert_eq!(parse_key(key), None, "{key:?}");
        }
        let long = format!("s.{}", "a".repeat(65));
        assert_eq!(parse_key(&long), None);
    }

    #[test]
    fn records_read_with_defaults_and_current_is_last() {
        let json = r#"{"name":"a.b","created_at":"2026-01-01T00:00:00Z",
            "updated_at":"2026-01-01T00:00:00Z",
            "versions":[{"version":1,"created_at":"2026-01-01T00:00:00Z"},
                        {"version":2,"schema":"{}","examples":["{}"],
                         "created_at":"2026-01-02T00:00:00Z"}]}"#;
        let record: EventTypeRecord = serde_json::from_str(json).expect("record");
        assert_eq!(record.tenant, None);
        assert_eq!(record.validation, Validation::Off);
        assert!(!record.archived);
        assert_eq!(record.current().map(|v| v.version), Some(2));
        assert_eq!(record.versions[0].schema, "");
        assert_eq!(record.key(), "g.a.b");

        let mode: Validation = serde_json::from_str(r#""reject""#).expect("mode");
        assert_eq!(mode, Validation::Reject);
        assert_eq!(
            serde_json::to_string(&Validation::Warn).expect("json"),
            r#""warn""#
        );
        let settings: CatalogSettings = serde_json::from_str("{}").expect("settings");
        assert!(!settings.strict);
    }
}
