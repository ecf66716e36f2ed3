//! Catalog files, as `hookctl event-type import` reads them and
//! `examples/catalog/*.json` ship them, and the JSON files of `--schema`
//! and `--example`.
//!
//! ```json
//! {"event_types": [
//!   {"name": "course_stat.created",
//!    "description": "A learner's statistics of a course were created.",
//!    "validation": "warn",
//!    "schema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"},
//!    "examples": [{"id": 1, "course_id": 42}]}
//! ]}
//! ```
//!
//! An entry is the whole editable state of its type: an omitted
//! `description` is empty, `validation` is `off`, `schema` accepts any
//! object and `examples` is none.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use hookrelay_proto::v1 as pb;
use serde::Deserialize;
use serde_json::Value;

/// How ingest treats an event whose `data` its type's schema refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Validation {
    /// Not checked (the default).
    #[default]
    Off,
    /// Delivered, counted and flagged on each attempt.
    Warn,
    /// Not delivered: dead-lettered with the schema's complaint.
    Reject,
}

impl Validation {
    pub fn proto(self) -> pb::SchemaValidation {
        match self {
            Validation::Off => pb::SchemaValidation::Off,
            Validation::Warn => pb::SchemaValidation::Warn,
            Validation::Reject => pb::SchemaValidation::Reject,
        }
    }

    /// A type's validation as the API gives it; unspecified is off.
    pub fn of(value: i32) -> Validation {
        match pb::SchemaValidation::try_from(value) {
            Ok(pb::SchemaValidation::Warn) => Validation::Warn,
            Ok(pb::SchemaValidation::Reject) => Validation::Reject,
            _ => Validation::Off,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Validation::Off => "off",
            Validation::Warn => "warn",
            Validation::Reject => "reject",
        }
    }
}

/// A catalog file: `{"event_types": [...]}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    pub event_types: Vec<EventTypeEntry>,
}

/// One event type of a catalog file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventTypeEntry {
    /// Dot-separated tokens of letters, digits, `_` and `-`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub validation: Validation,
    /// JSON Schema (draft 2020-12) of the event's `data`; none: any object.
    #[serde(default)]
    pub schema: Option<Value>,
    /// Example `data` objects.
    #[serde(default)]
    pub examples: Vec<Value>,
}

impl EventTypeEntry {
    /// The schema as the API takes it: JSON text, empty for none.
    pub fn schema_text(&self) -> String {
        self.schema
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default()
    }

    /// The examples as the API takes them: JSON texts.
    pub fn example_texts(&self) -> Vec<String> {
        self.examples.iter().map(Value::to_string).collect()
    }
}

impl CatalogFile {
    /// Reads and checks the catalog file at `path`; every error names it.
    pub fn read(path: &Path) -> anyhow::Result<CatalogFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("cannot read the catalog file {}: {e}", path.display()))?;
        Self::parse(&text).with_context(|| format!("catalog file {}", path.display()))
    }

    /// Parses and checks a catalog: known fields only, valid and distinct
    /// names, a schema that is a JSON object, examples that are objects.
    pub fn parse(text: &str) -> anyhow::Result<CatalogFile> {
        let file: CatalogFile = serde_json::from_str(text)?;
        let mut seen = HashSet::new();
        for (i, entry) in file.event_types.iter().enumerate() {
            let at = format!("event_types[{i}] ({})", entry.name);
            hookrelay_core::event::check_token_path(&entry.name, true)
                .map_err(|e| anyhow!("{at}: name: {e}"))?;
            if !seen.insert(entry.name.as_str()) {
                bail!("{at}: name: listed twice");
            }
            if let Some(schema) = &entry.schema {
                if !schema.is_object() {
                    bail!("{at}: schema: must be a JSON Schema object");
                }
            }
            for (j, example) in entry.examples.iter().enumerate() {
                if !example.is_object() {
                    bail!("{at}: examples[{j}]: must be a JSON object (an event's data)");
                }
            }
        }
        Ok(file)
    }
}

/// Reads the JSON text of `--schema` or `--example` from `path` (`-`:
/// standard input, which `stdin_taken` allows once); `flag` names it in
/// errors.
pub fn read_json_arg(path: &Path, flag: &str, stdin_taken: &mut bool) -> anyhow::Result<Value> {
    let (text, name) = if path == Path::new("-") {
        if *stdin_taken {
            bail!("{flag} -: standard input is already read by another flag");
        }
        *stdin_taken = true;
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| anyhow!("{flag} -: cannot read standard input: {e}"))?;
        (text, "standard input".to_owned())
    } else {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("{flag} {}: cannot read it: {e}", path.display()))?;
        (text, path.display().to_string())
    };
    let value: Value =
        serde_json::from_str(&text).map_err(|e| anyhow!("{flag} {name}: not JSON: {e}"))?;
    if !value.is_object() {
        bail!(
            "{flag} {name}: must be a JSON object ({})",
            if flag == "--schema" {
                "a JSON Schema"
            } else {
                "an event's data"
            }
        );
    }
    Ok(value)
}

/// Parses a schema or example as the API holds it (JSON text); empty: none.
pub fn parse_text(text: &str) -> Option<Value> {
    if text.trim().is_empty() {
        return None;
    }
    serde_json::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalog_parses_with_defaults() {
        let file = CatalogFile::parse(
            r#"{"event_types": [
                {"name": "user.created", "validation": "reject",
                 "schema": {"type": "object"}, "examples": [{"userId": 1}]},
                {"name": "user.deleted"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(file.event_types.len(), 2);
        let created = &file.event_types[0];
        assert_eq!(created.validation, Validation::Reject);
        assert_eq!(created.schema_text(), r#"{"type":"object"}"#);
        assert_eq!(created.example_texts(), [r#"{"userId":1}"#]);
        let deleted = &file.event_types[1];
        assert_eq!(
            (
                deleted.description.as_str(),
                deleted.validation,
                deleted.schema_text()
            ),
            ("", Validation::Off, String::new())
        );
        assert!(deleted.examples.is_empty());
    }

    #[test]
    fn unknown_fields_and_bad_entries_are_refused_by_name() {
        let error = |text: &str| format!("{:#}", CatalogFile::parse(text).unwrap_err());
        let unknown = error(r#"{"event_types": [{"name": "a.b", "descripton": "x"}]}"#);
        assert!(unknown.contains("unknown field `descripton`"), "{unknown}");
        let top = error(r#"{"event_types": [], "types": []}"#);
        assert!(top.contains("unknown field `types`"), "{top}");
        let validation = error(r#"{"event_types": [{"name": "a.b", "validation": "strict"}]}"#);
        assert!(
            validation
                .contains("unknown variant `strict`, expected one of `off`, `warn`, `reject`"),
            "{validation}"
        );
        assert_eq!(
            error(r#"{"event_types": [{"name": "a.*"}]}"#),
            r#"event_types[0] (a.*): name: "a.*" must be dot-separated tokens of letters, digits, '_' or '-'"#
        );
        assert_eq!(
            error(r#"{"event_types": [{"name": "a"}, {"name": "a"}]}"#),
            "event_types[1] (a): name: listed twice"
        );
        assert_eq!(
            error(r#"{"event_types": [{"name": "a", "schema": "{}"}]}"#),
            "event_types[0] (a): schema: must be a JSON Schema object"
        );
        assert_eq!(
            error(r#"{"event_types": [{"name": "a", "examples": [{}, 3]}]}"#),
            "event_types[0] (a): examples[1]: must be a JSON object (an event's data)"
        );
    }

    #[test]
    fn reading_a_file_names_it() {
        let dir = std::env::temp_dir().join(format!("hookctl-catalog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.json");
        std::fs::write(&path, r#"{"event_types": [{"name": "a", "extra": 1}]}"#).unwrap();
        let error = format!("{:#}", CatalogFile::read(&path).unwrap_err());
        assert!(
            error.starts_with(&format!(
                "catalog file {}: unknown field `extra`",
                path.display()
            )),
            "{error}"
        );
        let missing = format!(
            "{:#}",
            CatalogFile::read(&dir.join("none.json")).unwrap_err()
        );
        assert!(
            missing.starts_with("cannot read the catalog file "),
            "{missing}"
        );

        let schema = dir.join("schema.json");
        std::fs::write(&schema, "[1]").unwrap();
        let mut stdin = false;
        let error = read_json_arg(&schema, "--schema", &mut stdin)
            .unwrap_err()
            .to_string();
        assert!(
            error.ends_with("must be a JSON object (a JSON Schema)"),
            "{error}"
        );
        std::fs::write(&schema, "{").unwrap();
        let error = read_json_arg(&schema, "--example", &mut stdin)
            .unwrap_err()
            .to_string();
        assert!(error.contains("not JSON: EOF while parsing"), "{error}");
        let mut stdin = true;
        let error = read_json_arg(Path::new("-"), "--example", &mut stdin)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "--example -: standard input is already read by another flag"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
