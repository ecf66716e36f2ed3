//! JSON-shaped templates: a JSON document whose string values may hold
//! minijinja expressions. A string that is exactly one `{{ expression }}`
//! keeps the JSON type of its value (numbers, arrays, objects); any other
//! string renders as text. Each string is compiled once.
//!
//! A field the event lacks is missing at any depth (minijinja's chainable
//! undefined): `data.contact.name` of an event without `contact` is JSON
//! `null` as a whole value and empty inside text, as is a JSON `null`.

use hookrelay_core::failure::FailureKind;
use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};
use serde_json::Value as Json;

use crate::functions;

/// A template that does not compile, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{position}: {message}")]
pub struct TemplateError {
    /// `line L column C` of the JSON, or the JSON path of the string.
    pub position: String,
    pub message: String,
}

/// Why a template failed on an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The template itself, whatever the event: an unknown function,
    /// filter or test, too many arguments. Refused when saved.
    Template,
    /// This event's data: arithmetic on a missing value, a filter given a
    /// value of the wrong type. Only real events show it, so it is not
    /// refused when saved but reported on the attempt.
    Data,
}

impl Cause {
    fn of(kind: ErrorKind) -> Cause {
        match kind {
            ErrorKind::SyntaxError
            | ErrorKind::UnknownFunction
            | ErrorKind::UnknownFilter
            | ErrorKind::UnknownTest
            | ErrorKind::TooManyArguments
            | ErrorKind::TemplateNotFound
            | ErrorKind::BadInclude => Cause::Template,
            _ => Cause::Data,
        }
    }
}

/// A template that compiled but failed on an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rendering {path}: {message}")]
pub struct RenderError {
    /// JSON path of the failing string (`$.contact.name`).
    pub path: String,
    pub message: String,
    pub cause: Cause,
}

impl RenderError {
    /// Always permanent: the same event fails the same way, so a delivery
    /// that cannot render is given up at once, never retried.
    pub fn kind(&self) -> FailureKind {
        FailureKind::Permanent
    }
}

/// The tree, with every templated string replaced by a compiled node.
#[derive(Debug, Clone)]
enum Node {
    Literal(Json),
    /// Template name in the environment; renders to a string.
    Text(String),
    /// Template name in the environment; evaluates to a typed value.
    Expression(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// A compiled template.
pub struct Template {
    env: Environment<'static>,
    root: Node,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("root", &self.root)
            .finish()
    }
}

/// `{{ … }}` and nothing else around it.
fn single_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%")).then(|| inner.trim())
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    // Missing at any depth: `data.a.b.c` is undefined, not an error, when
    // `data.a` is; an expression that is only such a path renders `null`.
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    // A JSON `null` interpolated into text is empty, like a missing field
    // (minijinja would print `none`).
    env.set_formatter(|out, state, value| {
        let value = if value.is_none() {
            &Value::UNDEFINED
        } else {
            value
        };
        minijinja::escape_formatter(out, state, value)
    });
    for (name, f) in [
        (
            "md5",
            functions::md5 as fn(Value) -> Result<Value, minijinja::Error>,
        ),
        ("sha1", functions::sha1),
        ("sha256", functions::sha256),
        ("crc32", functions::crc32),
    ] {
        env.add_filter(name, f);
        env.add_function(name, f);
    }
    env.add_filter("date", functions::date);
    env.add_function("date", functions::date);
    env
}

impl Template {
    /// Compiles a JSON-shaped template.
    pub fn compile(source: &str) -> Result<Template, TemplateError> {
        let json: Json = serde_json::from_str(source).map_err(|e| TemplateError {
            position: format!("line {} column {}", e.line(), e.column()),
            message: format!("not valid JSON: {e}"),
        })?;
        Self::from_json(json)
    }

    /// Compiles an already parsed JSON-shaped template.
    pub fn from_json(json: Json) -> Result<Template, TemplateError> {
        let mut env = environment();
        let mut count = 0;
        let root = compile_node(&mut env, json, "$", &mut count)?;
        Ok(Template { env, root })
    }

    /// Renders against `context` (see [`crate::context`]).
    pub fn render(&self, context: &Value) -> Result<Json, RenderError> {
        self.render_node(&self.root, context, "$")
    }

    /// Checks the template against a sample `context` as a save does: what
    /// fails whatever the event ([`Cause::Template`]) is an error; what
    /// fails only on this sample's data is not (real events may have it),
    /// and the rendering is then `None`.
    pub fn check(&self, context: &Value) -> Result<Option<Json>, RenderError> {
        match self.render(context) {
            Ok(json) => Ok(Some(json)),
            Err(e) if e.cause == Cause::Data => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the whole template is one `{{ expression }}`, so the type of
    /// what it renders depends on the event.
    pub fn is_expression(&self) -> bool {
        matches!(self.root, Node::Expression(_))
    }

    fn render_node(&self, node: &Node, context: &Value, path: &str) -> Result<Json, RenderError> {
        let fail = |e: minijinja::Error| RenderError {
            path: path.to_owned(),
            message: describe(&e),
            cause: Cause::of(e.kind()),
        };
        Ok(match node {
            Node::Literal(json) => json.clone(),
            Node::Text(name) => {
                let template = self.env.get_template(name).map_err(fail)?;
                Json::String(template.render(context).map_err(fail)?)
            }
            Node::Expression(name) => {
                let template = self.env.get_template(name).map_err(fail)?;
                let captured = template.render_captured(context).map_err(fail)?;
                let value = captured
                    .state()
                    .lookup("__value")
                    .unwrap_or(Value::UNDEFINED);
                if value.is_undefined() {
                    Json::Null
                } else {
                    serde_json::to_value(&value).map_err(|e| RenderError {
                        path: path.to_owned(),
                        message: format!("value is not JSON: {e}"),
                        // JSON data only makes JSON: a function or macro
                        // value comes from the template.
                        cause: Cause::Template,
                    })?
                }
            }
            Node::Array(items) => Json::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.render_node(item, context, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Object(fields) => Json::Object(
                fields
                    .iter()
                    .map(|(key, item)| {
                        Ok((
                            key.clone(),
                            self.render_node(item, context, &format!("{path}.{key}"))?,
                        ))
                    })
                    .collect::<Result<_, RenderError>>()?,
            ),
        })
    }
}

fn describe(error: &minijinja::Error) -> String {
    let mut message = error.kind().to_string();
    if let Some(detail) = error.detail() {
        message.push_str(": ");
        message.push_str(detail);
    }
    message
}

fn compile_node(
    env: &mut Environment<'static>,
    json: Json,
    path: &str,
    count: &mut usize,
) -> Result<Node, TemplateError> {
    Ok(match json {
        Json::String(text) if text.contains("{{") || text.contains("{%") => {
            *count += 1;
            let name = format!("n{count}");
            let (source, node) = match single_expression(&text) {
                Some(expr) => (
                    format!("{{% set __value = {expr} %}}"),
                    Node::Expression(name.clone()),
                ),
                None => (text.clone(), Node::Text(name.clone())),
            };
            env.add_template_owned(name, source)
                .map_err(|e| TemplateError {
                    position: match e.line() {
                        Some(line) if line > 1 => format!("{path} line {line}"),
                        _ => path.to_owned(),
                    },
                    message: format!("{}: in {text:?}", describe(&e)),
                })?;
            node
        }
        Json::Array(items) => Node::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| compile_node(env, item, &format!("{path}[{i}]"), count))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(fields) => Node::Object(
            fields
                .into_iter()
                .map(|(key, item)| {
                    let node = compile_node(env, item, &format!("{path}.{key}"), count)?;
                    Ok((key, node))
                })
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => Node::Literal(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: &str, context: Json) -> Result<Json, RenderError> {
        Template::compile(template)
            .unwrap()
            .render(&Value::from(minijinja::value::Serde(context)))
    }

    #[test]
    fn one_expression_keeps_its_type_and_text_interpolates() {
        let context =
            json!({"data": {"n": 3, "tags": ["a", "b"], "who": {"name": "Ann"}, "flag": true}});
        let out = render(
            r#"{"n":"{{ data.n }}","tags":"{{ data.tags }}","who":"{{ data.who }}","flag":"{{data.flag}}","text":"n={{ data.n }}!","missing":"{{ data.nope }}","lit":[1,"x",null]}"#,
            context,
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"n":3,"tags":["a","b"],"who":{"name":"Ann"},"flag":true,"text":"n=3!","missing":null,"lit":[1,"x",null]})
        );
        // Key order is the template's.
        assert_eq!(out.as_object().unwrap().keys().next().unwrap(), "n");
    }

    #[test]
    fn hash_and_date_functions() {
        let out = render(
            r#"{"a":"{{ data.phone | md5 }}","b":"{{ sha1(data.phone) }}","c":"{{ data.phone | crc32 }}","d":"{{ at | date('%d.%m.%Y') }}","e":"{{ at | date }}"}"#,
            json!({"data": {"phone": "abc"}, "at": "2024-03-05T06:07:08Z", "__date_format": "%Y/%m/%d %H:%M"}),
        )
        .unwrap();
        assert_eq!(out["a"], "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(out["b"], "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(out["c"], "352441c2");
        assert_eq!(out["d"], "05.03.2024");
        assert_eq!(out["e"], "2024/03/05 06:07");
    }

    #[test]
    fn errors_say_where() {
        let err = Template::compile(r#"{"a": 1,, }"#).unwrap_err();
        assert_eq!(err.position, "line 1 column 9");
        let err = Template::compile(r#"{"a": {"b": ["{{ data. }}"]}}"#).unwrap_err();
        assert_eq!(err.position, "$.a.b[0]");
        assert!(err.message.contains("syntax error"), "{err}");
        let err = render(r#"{"x":"{{ md6(data) }}"}"#, json!({"data": {}})).unwrap_err();
        assert_eq!(err.path, "$.x");
        assert!(err.message.contains("md6"), "{err}");
        let err = Template::compile(r#"{"x":"{{ data | nosuchfilter }}"}"#)
            .map(|t| t.render(&Value::from(())))
            .err();
        let message = match err {
            Some(e) => e.to_string(),
            None => render(r#"{"x":"{{ data | nosuchfilter }}"}"#, json!({}))
                .unwrap_err()
                .to_string(),
        };
        assert!(message.contains("nosuchfilter"), "{message}");
    }
}
