//! An event type's JSON Schema, compiled once and reused for every event.
//!
//! Schemas are draft 2020-12 only: a `$schema` naming any other dialect is
//! refused rather than silently validated under different rules. Nothing
//! is ever fetched: a `$ref` or `$dynamicRef` that is not local (does not
//! start with `#`) is refused when the schema is compiled, and the
//! validator is built with a retriever that refuses every URI besides.
//! `format` is asserted (an `"email"` that is not an email is a violation),
//! since a catalog states what publishers must send; unknown formats are
//! ignored. Patterns use the linear-time `regex` engine: schemas are
//! written by tenants and run on the ingest path, so a pattern must not be
//! able to backtrack for ever (look-around and back-references are refused
//! when the schema is compiled).

use std::fmt;

use jsonschema::{Draft, PatternOptions, Retrieve, Uri, Validator};
use serde_json::value::RawValue;
use serde_json::Value;

/// The only dialect accepted in `$schema`.
const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// Why a schema text cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("schema is not JSON: {0}")]
    NotJson(String),
    #[error("schema is not a valid JSON Schema (draft 2020-12): {0}")]
    Invalid(String),
    #[error("schema refers to {0:?}: only local references (starting with '#') are allowed, nothing is fetched")]
    ExternalRef(String),
}

/// A compiled schema: the validator is built once, then shared by every
/// event of the type.
#[derive(Clone)]
pub struct Schema {
    /// `None` when the schema accepts anything (`true`, `{}`): no validator
    /// to run at all.
    validator: Option<Validator>,
    value: Value,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schema")
            .field("value", &self.value)
            .finish_non_exhaustive()
    }
}

/// Where in `data` a schema refuses it, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `data`, then the instance path dotted: `data.items[2].sku`.
    /// A property name that is not letters, digits, `_` and `-` is written
    /// `["a.b"]`.
    pub path: String,
    /// As the validator words it: `"42" is not of type "integer"`.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for Violation {}

/// Why an example cannot be kept: it names the example by index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExampleError {
    #[error("examples[{index}]: not JSON: {message}")]
    NotJson { index: usize, message: String },
    #[error("examples[{index}]: must be a JSON object")]
    NotObject { index: usize },
    #[error("examples[{index}]: {violation}")]
    Invalid { index: usize, violation: Violation },
}

impl ExampleError {
    pub fn index(&self) -> usize {
        match self {
            ExampleError::NotJson { index, .. }
            | ExampleError::NotObject { index }
            | ExampleError::Invalid { index, .. } => *index,
        }
    }
}

/// Refuses every URI: belt and braces beside the check for non-local refs,
/// so that no schema can make compilation reach the network or the disk.
struct NoRetrieval;

impl Retrieve for NoRetrieval {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!("{uri} is not fetched: only local references are allowed").into())
    }
}

impl Schema {
    /// A schema accepting any data.
    pub fn any() -> Self {
        Self {
            validator: None,
            value: Value::Bool(true),
        }
    }

    /// The schema as parsed.
    pub fn value(&self) -> &Value {
        &self.value
    }

    /// Whether this schema accepts any data.
    pub fn accepts_anything(&self) -> bool {
        self.validator.is_none()
    }

    /// The first place `data` is refused, if any. The valid case only runs
    /// the validator's boolean check; an error is built only when invalid.
    pub fn first_violation(&self, data: &Value) -> Option<Violation> {
        let validator = self.validator.as_ref()?;
        if validator.is_valid(data) {
            return None;
        }
        match validator.validate(data) {
            Ok(()) => None,
            Err(error) => Some(Violation {
                path: data_path(data, error.instance_path().as_str()),
                message: error.to_string(),
            }),
        }
    }

    /// Checks an event's raw `data`; JSON that does not parse is a
    /// violation at `data`.
    pub fn check(&self, data: &RawValue) -> Result<(), Violation> {
        if self.validator.is_none() {
            return Ok(());
        }
        let value: Value = serde_json::from_str(data.get()).map_err(|error| Violation {
            path: "data".to_owned(),
            message: format!("not JSON: {error}"),
        })?;
        match self.first_violation(&value) {
            None => Ok(()),
            Some(violation) => Err(violation),
        }
    }
}

/// Compiles a schema text (a JSON object, or `true`) as draft 2020-12,
/// refusing non-local references and schemas the meta-schema refuses.
pub fn compile(text: &str) -> Result<Schema, SchemaError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| SchemaError::NotJson(e.to_string()))?;
    let object = match &value {
        Value::Bool(true) => return Ok(Schema::any()),
        Value::Object(object) => object,
        _ => {
            return Err(SchemaError::Invalid(
                "the schema must be a JSON object (or true)".to_owned(),
            ))
        }
    };
    check_references(&value)?;
    if object.is_empty() {
        return Ok(Schema {
            validator: None,
            value,
        });
    }
    let validator = options().build(&value).map_err(|error| {
        let at = error.instance_path().as_str();
        let message = if at.is_empty() {
            error.to_string()
        } else {
            format!("{error} (at {at})")
        };
        SchemaError::Invalid(message)
    })?;
    Ok(Schema {
        validator: Some(validator),
        value,
    })
}

/// Draft 2020-12, formats asserted, linear-time patterns, nothing fetched.
fn options() -> jsonschema::ValidationOptions<'static> {
    jsonschema::options()
        .with_draft(Draft::Draft202012)
        .with_retriever(NoRetrieval)
        .should_validate_formats(true)
        .with_pattern_options(PatternOptions::regex())
}

/// Like [`compile`], but an empty (or blank) text means "any data": `None`.
pub fn compile_optional(text: &str) -> Result<Option<Schema>, SchemaError> {
    if text.trim().is_empty() {
        Ok(None)
    } else {
        compile(text).map(Some)
    }
}

/// Checks each example is a JSON object the schema accepts.
pub fn check_examples(schema: &Schema, examples: &[String]) -> Result<(), ExampleError> {
    for (index, text) in examples.iter().enumerate() {
        let value: Value = serde_json::from_str(text).map_err(|e| ExampleError::NotJson {
            index,
            message: e.to_string(),
        })?;
        if !value.is_object() {
            return Err(ExampleError::NotObject { index });
        }
        if let Some(violation) = schema.first_violation(&value) {
            return Err(ExampleError::Invalid { index, violation });
        }
    }
    Ok(())
}

/// Refuses non-local `$ref`/`$dynamicRef` and a `$schema` other than
/// 2020-12, anywhere in the document. It walks every value, not only
/// subschemas: a local pointer can lead anywhere in the document, so a
/// remote ref in an unknown keyword would otherwise be reachable. (A data
/// value in `const` or `enum` shaped like `{"$ref": "http://..."}` is
/// refused too; that is the price of not following pointers here.)
fn check_references(value: &Value) -> Result<(), SchemaError> {
    match value {
        Value::Object(object) => {
            for (key, member) in object {
                match (key.as_str(), member) {
                    ("$ref" | "$dynamicRef", Value::String(target)) if !target.starts_with('#') => {
                        return Err(SchemaError::ExternalRef(target.clone()));
                    }
                    ("$schema", Value::String(dialect))
                        if dialect.trim_end_matches('#') != DRAFT_2020_12 =>
                    {
                        return Err(SchemaError::Invalid(format!(
                            "$schema {dialect:?} is not supported: only draft 2020-12 \
                             ({DRAFT_2020_12:?}) is, and it is also the default"
                        )));
                    }
                    _ => check_references(member)?,
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(check_references),
        _ => Ok(()),
    }
}

/// `data` followed by the JSON pointer `pointer` (into `data`) in dotted
/// form. The instance is walked alongside so that a numeric segment is an
/// index only where the value there is an array (`{"2": ...}` stays a
/// property).
pub(crate) fn data_path(data: &Value, pointer: &str) -> String {
    let mut path = String::from("data");
    let mut at = Some(data);
    for raw in pointer.split('/').skip(1) {
        let segment = unescape_pointer(raw);
        match at {
            Some(Value::Array(items)) => match segment.parse::<usize>() {
                Ok(index) => {
                    path.push('[');
                    path.push_str(&segment);
                    path.push(']');
                    at = items.get(index);
                }
                Err(_) => {
                    push_property(&mut path, &segment);
                    at = None;
                }
            },
            Some(Value::Object(object)) => {
                push_property(&mut path, &segment);
                at = object.get(segment.as_ref());
            }
            _ => {
                // Lost track of the instance: a number is most likely an index.
                if segment.parse::<usize>().is_ok() {
                    path.push('[');
                    path.push_str(&segment);
                    path.push(']');
                } else {
                    push_property(&mut path, &segment);
                }
                at = None;
            }
        }
    }
    path
}

fn unescape_pointer(segment: &str) -> std::borrow::Cow<'_, str> {
    if segment.contains('~') {
        segment.replace("~1", "/").replace("~0", "~").into()
    } else {
        segment.into()
    }
}

/// Appends `.name`, or `["name"]` when the name is not letters, digits,
/// `_` and `-` (a dot or a space would make the dotted path ambiguous).
pub(crate) fn push_property(path: &mut String, name: &str) {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        path.push('.');
        path.push_str(name);
    } else {
        path.push('[');
        path.push_str(&Value::String(name.to_owned()).to_string());
        path.push(']');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).expect("raw JSON")
    }

    #[test]
    fn compiles_objects_and_true() {
        let schema = compile(r#"{"type":"object","properties":{"a":{"type":"integer"}}}"#)
            .expect("compiles");
        assert!(!schema.accepts_anything());
        assert!(compile("true").expect("true").accepts_anything());
        assert!(compile("{}").expect("{}").accepts_anything());
        assert!(compile(&format!(
            r#"{{"$schema":"{DRAFT_2020_12}","type":"object"}}"#
        ))
        .is_ok());
        assert!(compile(&format!(r#"{{"$schema":"{DRAFT_2020_12}#"}}"#)).is_ok());
        assert!(compile_optional("  ").expect("blank").is_none());
        assert!(compile_optional("{}").expect("{}").is_some());
    }

    #[test]
    fn refuses_what_is_not_json() {
        let error = compile("{").expect_err("not JSON");
        assert!(matches!(error, SchemaError::NotJson(_)), "{error}");
        assert!(
            error.to_string().starts_with("schema is not JSON: "),
            "{error}"
        );
        assert!(matches!(compile(""), Err(SchemaError::NotJson(_))));
    }

    #[test]
    fn refuses_invalid_schemas_with_the_crates_message() {
        let error = compile(r#"{"type":"integr"}"#).expect_err("bad type");
        assert!(matches!(error, SchemaError::Invalid(_)), "{error}");
        let text = error.to_string();
        assert!(text.contains("integr"), "{text}");
        assert!(text.contains("/type"), "{text}");

        let error = compile(r#"{"properties":{"a":{"minLength":-1}}}"#).expect_err("minLength");
        assert!(
            error.to_string().contains("/properties/a/minLength"),
            "{error}"
        );

        for text in ["false", "[]", "42", r#""x""#] {
            assert!(
                matches!(compile(text), Err(SchemaError::Invalid(_))),
                "{text}"
            );
        }
        let error = compile(r##"{"$schema":"http://json-schema.org/draft-07/schema#"}"##)
            .expect_err("draft 7");
        assert!(error.to_string().contains("draft-07"), "{error}");
        // A pattern the linear-time engine cannot run is refused up front.
        assert!(matches!(
            compile(r#"{"properties":{"a":{"pattern":"(?=a)b"}}}"#),
            Err(SchemaError::Invalid(_))
        ));
    }

    #[test]
    fn refuses_external_refs_without_fetching() {
        for target in [
            "https://example.com/schema.json",
            "http://127.0.0.1:1/x#/a",
            "file:///etc/passwd",
            "other.json#/$defs/a",
        ] {
            let text = json!({"properties": {"a": {"$ref": target}}}).to_string();
            let error = compile(&text).expect_err(target);
            assert_eq!(error, SchemaError::ExternalRef(target.into()));
            assert!(error.to_string().contains(target), "{error}");
        }
        let text = json!({"$dynamicRef": "https://example.com/s#meta"}).to_string();
        assert!(matches!(compile(&text), Err(SchemaError::ExternalRef(_))));
        // Hidden in an unknown keyword a local pointer could reach.
        let text = json!({"$ref": "#/x", "x": {"$ref": "https://example.com/a"}}).to_string();
        assert!(matches!(compile(&text), Err(SchemaError::ExternalRef(_))));
        // A property named `$ref` is a subschema, not a reference.
        assert!(compile(r#"{"properties":{"$ref":{"type":"string"}}}"#).is_ok());
        // Under a remote `$id`, a fragment still resolves in the document.
        let text = json!({"$id": "https://example.com/root", "$ref": "#/$defs/a",
                          "$defs": {"a": {"type": "object"}}})
        .to_string();
        assert!(compile(&text).is_ok());
        // And should the check above miss one, the retriever refuses it.
        let error = options()
            .build(&json!({"$ref": "https://example.com/schema.json"}))
            .expect_err("not fetched");
        assert!(error.to_string().contains("not fetched"), "{error}");
    }

    #[test]
    fn local_refs_resolve() {
        let schema = compile(
            &json!({
                "$defs": {"sku": {"type": "string", "minLength": 3}},
                "properties": {"items": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"sku": {"$ref": "#/$defs/sku"}}
                }}}
            })
            .to_string(),
        )
        .expect("compiles");
        let data = json!({"items": [{"sku": "abc"}, {"sku": "abcd"}, {"sku": "x"}]});
        let violation = schema.first_violation(&data).expect("violation");
        assert_eq!(violation.path, "data.items[2].sku");
        assert!(violation.message.contains("\"x\""), "{violation}");
    }

    #[test]
    fn violation_paths_are_dotted() {
        let schema = compile(
            &json!({
                "type": "object",
                "properties": {
                    "course_id": {"type": "integer"},
                    "meta": {"type": "object", "properties": {
                        "a.b": {"type": "string"},
                        "2": {"type": "string"},
                        "x/y~z": {"type": "string"}
                    }},
                    "grid": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}
                },
                "required": ["course_id"]
            })
            .to_string(),
        )
        .expect("compiles");
        let path = |data: Value| schema.first_violation(&data).map(|v| v.path);

        let violation = schema
            .first_violation(&json!({"course_id": "42"}))
            .expect("violation");
        assert_eq!(violation.path, "data.course_id");
        assert_eq!(violation.message, r#""42" is not of type "integer""#);
        assert_eq!(
            violation.to_string(),
            r#"data.course_id: "42" is not of type "integer""#
        );

        assert_eq!(path(json!({})), Some("data".into()));
        assert_eq!(
            path(json!({"course_id": 1, "meta": {"a.b": 1}})),
            Some(r#"data.meta["a.b"]"#.into())
        );
        assert_eq!(
            path(json!({"course_id": 1, "meta": {"2": 1}})),
            Some("data.meta.2".into())
        );
        assert_eq!(
            path(json!({"course_id": 1, "meta": {"x/y~z": 1}})),
            Some(r#"data.meta["x/y~z"]"#.into())
        );
        assert_eq!(
            path(json!({"course_id": 1, "grid": [[1], [2, "3"]]})),
            Some("data.grid[1][1]".into())
        );
        assert_eq!(path(json!({"course_id": 1})), None);
    }

    #[test]
    fn check_reads_raw_data() {
        let schema = compile(r#"{"properties":{"n":{"type":"integer"}}}"#).expect("compiles");
        assert_eq!(schema.check(&raw(r#"{"n":1}"#)), Ok(()));
        let violation = schema.check(&raw(r#"{"n":1.5}"#)).expect_err("float");
        assert_eq!(violation.path, "data.n");
        // Anything goes when the schema accepts anything.
        assert_eq!(Schema::any().check(&raw("[1]")), Ok(()));
    }

    #[test]
    fn formats_are_asserted() {
        let schema = compile(r#"{"properties":{"email":{"type":"string","format":"email"}}}"#)
            .expect("compiles");
        assert!(schema
            .first_violation(&json!({"email": "a@example.com"}))
            .is_none());
        let violation = schema
            .first_violation(&json!({"email": "nope"}))
            .expect("violation");
        assert_eq!(violation.path, "data.email");
    }

    #[test]
    fn examples_are_checked_by_index() {
        let schema = compile(r#"{"properties":{"x":{"type":"integer"}}}"#).expect("compiles");
        assert_eq!(check_examples(&schema, &[]), Ok(()));
        assert_eq!(
            check_examples(&schema, &[r#"{"x":1}"#.into(), "{}".into()]),
            Ok(())
        );

        let error = check_examples(&schema, &["{}".into(), "{".into()]).expect_err("not JSON");
        assert_eq!(error.index(), 1);
        assert!(
            error.to_string().starts_with("examples[1]: not JSON: "),
            "{error}"
        );

        let error = check_examples(&schema, &["{}".into(), "[1]".into()]).expect_err("array");
        assert_eq!(error.to_string(), "examples[1]: must be a JSON object");

        let error =
            check_examples(&schema, &["{}".into(), r#"{"x":"1"}"#.into()]).expect_err("invalid");
        assert_eq!(
            error.to_string(),
            r#"examples[1]: data.x: "1" is not of type "integer""#
        );

        // Examples of a type without a schema must still be objects.
        assert!(check_examples(&Schema::any(), &["1".into()]).is_err());
        assert_eq!(
            check_examples(&Schema::any(), &[r#"{"a":[]}"#.into()]),
            Ok(())
        );
    }
}
