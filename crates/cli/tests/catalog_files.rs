//! The catalogs shipped in examples/catalog: each parses as `hookctl
//! event-type import` reads it, names valid event types, and its examples
//! are valid against their own schemas (draft 2020-12, local refs only).

use std::path::{Path, PathBuf};

use hookctl::catalog::{CatalogFile, Validation};
use serde_json::Value;

const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

fn catalog_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/catalog")
}

fn catalogs() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(catalog_dir())
        .expect("examples/catalog")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// Every `$ref` in `value`, with where it is.
fn refs(value: &Value, at: &str, into: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "$ref" || key == "$dynamicRef" {
                    into.push((at.to_owned(), v.as_str().unwrap_or_default().to_owned()));
                }
                refs(v, &format!("{at}/{key}"), into);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, &format!("{at}/{i}"), into);
            }
        }
        _ => {}
    }
}

#[test]
fn every_catalog_parses_and_names_valid_event_types() {
    let files = catalogs();
    let names: Vec<_> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "lms-stats.json",
        "training-changes.json",
        "forum.json",
        "pbx-calls.json",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
    for file in &files {
        let catalog = CatalogFile::read(file).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(!catalog.event_types.is_empty(), "{}", file.display());
        for entry in &catalog.event_types {
            hookrelay_core::event::check_token_path(&entry.name, true)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(
                !entry.description.is_empty(),
                "{}: {} has no description",
                file.display(),
                entry.name
            );
            assert_eq!(
                entry.validation,
                Validation::Warn,
                "{}: {}: the examples warn",
                file.display(),
                entry.name
            );
            assert!(
                !entry.examples.is_empty(),
                "{}: {} has no example",
                file.display(),
                entry.name
            );
        }
    }
}

#[test]
fn the_seeds_event_types_are_all_there() {
    let read = |name: &str| -> Vec<String> {
        CatalogFile::read(&catalog_dir().join(name))
            .unwrap()
            .event_types
            .into_iter()
            .map(|e| e.name)
            .collect()
    };
    let lms = read("lms-stats.json");
    for entity in [
        "course_stat",
        "section_stat",
        "quiz_stat",
        "task_stat",
        "scorm_stat",
        "material_stat",
    ] {
        for event in ["created", "updated"] {
            let name = format!("{entity}.{event}");
            assert!(lms.contains(&name), "{name} missing in lms-stats.json");
        }
    }
    assert_eq!(lms.len(), 12);
    let changes = read("training-changes.json");
    assert_eq!(
        changes,
        [
            "institute.import",
            "institute.update",
            "institute.destroy",
            "training.update",
            "training.destroy"
        ]
    );
    let forum = read("forum.json");
    for name in [
        "user.created",
        "user.approved",
        "user.updated",
        "user.deleted",
        "user.email.verified",
        "user.payment.received",
        "user.paid_subscription.ended",
        "post.created",
        "conversation.created",
        "message.created",
    ] {
        assert!(
            forum.iter().any(|n| n == name),
            "{name} missing in forum.json"
        );
    }
}

#[test]
fn examples_are_valid_against_their_own_schemas() {
    for file in catalogs() {
        let catalog = CatalogFile::read(&file).unwrap();
        for entry in &catalog.event_types {
            let at = format!("{}: {}", file.display(), entry.name);
            let schema = entry
                .schema
                .as_ref()
                .unwrap_or_else(|| panic!("{at}: no schema"));
            assert_eq!(schema["$schema"], DRAFT, "{at}");
            jsonschema::draft202012::meta::validate(schema)
                .unwrap_or_else(|e| panic!("{at}: not a valid draft 2020-12 schema: {e}"));
            let mut found = Vec::new();
            refs(schema, "#", &mut found);
            for (path, target) in found {
                assert!(
                    target.starts_with("#/$defs/"),
                    "{at}: {path}: $ref {target:?} is not local"
                );
            }
            assert_ne!(
                schema.get("additionalProperties"),
                Some(&Value::Bool(false)),
                "{at}: left open"
            );
            let validator = jsonschema::draft202012::options()
                .should_validate_formats(true)
                .build(schema)
                .unwrap_or_else(|e| panic!("{at}: {e}"));
            for (i, example) in entry.examples.iter().enumerate() {
                let errors: Vec<String> = validator
                    .iter_errors(example)
                    .map(|e| format!("{}: {e}", e.instance_path()))
                    .collect();
                assert!(errors.is_empty(), "{at}: examples[{i}]: {errors:?}");
            }
        }
    }
}

#[test]
fn the_readme_explains_every_catalog() {
    let readme = std::fs::read_to_string(catalog_dir().join("README.md")).unwrap();
    for file in catalogs() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(readme.contains(&name), "README.md does not mention {name}");
    }
    assert!(
        readme.contains("hookctl event-type import examples/catalog/lms-stats.json --tenant acme")
    );
}
