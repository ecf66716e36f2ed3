//! Whether a new schema still accepts every `data` the old one accepted, so
//! that updating a version in place cannot start refusing events publishers
//! already send.
//!
//! Deciding that one schema's language contains another's is undecidable
//! in general, so this is a conservative structural comparison: it may call
//! a compatible change incompatible (the caller can then make it a new
//! version), but a change it accepts only widens what is accepted, within
//! what it compares. Schemas are compared node by node, properties and
//! items recursively; an absent keyword counts as unconstrained. What a
//! change does is judged per keyword:
//!
//! - `type`: every old type must stay (`integer` is covered by `number`, so
//!   number → integer narrows and integer → number widens); a type added
//!   where there was none narrows.
//! - `enum` / `const`: every value the old schema admitted (its `const`, or
//!   its `enum`) must stay admitted; adding either where the old schema had
//!   neither narrows.
//! - `minimum`, `exclusiveMinimum`, `minLength`, `minItems`,
//!   `minProperties` raised (or added), their `max` counterparts lowered (or
//!   added); `multipleOf` added or changed to a value the old one is not a
//!   multiple of; `uniqueItems` added.
//! - `pattern` and `format` added or changed (formats are asserted here).
//! - `required`: a property newly required.
//! - `properties`: each property's schema recursively, against the old one
//!   (or what the old schema allowed for it: its `additionalProperties`);
//!   a property dropped is then governed by the new `additionalProperties`,
//!   so dropping it while that is `false` narrows.
//! - `additionalProperties` tightened (absent/`true` → `false` or a schema
//!   that is narrower); new declared properties are fine where the old schema
//!   allowed any. `patternProperties`: a pattern added narrows, a kept one
//!   is compared recursively, a removed one is fine only if the new
//!   `additionalProperties` allows anything.
//! - `items` and `prefixItems` recursively, position by position.
//! - `allOf`, `anyOf`, `oneOf`, `not`, `if`/`then`/`else`, `$ref`,
//!   `$dynamicRef`, `contains` (with `minContains`/`maxContains`),
//!   `propertyNames`, `dependentRequired`, `dependentSchemas`,
//!   `dependencies`, `additionalItems`, `unevaluatedProperties`,
//!   `unevaluatedItems`: compared for equality only. Removing one widens
//!   and is fine; adding or changing one is incompatible, even when the
//!   change happens to widen.
//! - `true` (or a schema with no constraining keyword) → anything
//!   constraining is judged by the rules above, so it is incompatible as
//!   soon as anything is constrained; anything → `true` is compatible, as is
//!   anything from `false`.
//! - `$ref` targets are not followed by the recursion: each target the new
//!   schema refers to must be the same subschema in both (so changing a
//!   referenced `$defs` entry is incompatible, changing an unreferenced one is
//!   not; a recursive `"$ref": "#"` makes any change incompatible). Schemas
//!   with `$id` below the root or any `$dynamicRef` are compared for
//!   equality only.
//!
//! Object, array, string and number rules are skipped where the old schema's
//! `type` admits no value of that kind (constraining objects the old schema
//! refused anyway changes nothing). Not covered (always treated as
//! compatible): annotations (`title`, `description`, `default`,
//! `examples`, `deprecated`, `readOnly`, `writeOnly`, `content*`) and
//! unknown keywords, which the validator ignores.

use std::fmt;

use serde_json::{Map, Value};

use crate::schema::push_property;

/// The first way the new schema refuses data the old one accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// Where in `data`: `data.course_id`, `data.items[*]` (any item),
    /// `data.items[0]`, `data.*` (any property not declared).
    pub path: String,
    /// What changed: `type narrowed from ["integer","string"] to "integer"`.
    pub what: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.what)
    }
}

impl std::error::Error for Incompatibility {}

/// Checks that `new` accepts every `data` that `old` accepted (see the
/// module documentation for what is compared). An empty schema text stands
/// for `true`.
pub fn backward_compatible(old: &Value, new: &Value) -> Result<(), Incompatibility> {
    if old == new {
        return Ok(());
    }
    check_references(old, new)?;
    compare(old, new, "data")
}

static TRUE: Value = Value::Bool(true);
static NO_PROPERTIES: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

/// Keywords that constrain the instance (in draft 2020-12 as the validator
/// implements it); a schema with none of them accepts anything.
const CONSTRAINING: &[&str] = &[
    "type",
    "enum",
    "const",
    "multipleOf",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "format",
    "maxItems",
    "minItems",
    "uniqueItems",
    "maxContains",
    "minContains",
    "contains",
    "maxProperties",
    "minProperties",
    "required",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "prefixItems",
    "items",
    "additionalItems",
    "unevaluatedItems",
    "properties",
    "patternProperties",
    "additionalProperties",
    "unevaluatedProperties",
    "propertyNames",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "$ref",
    "$dynamicRef",
    "$recursiveRef",
];

/// Keywords compared for equality only: removing one is fine, adding or
/// changing one is not. (`contains` and its counts, and the `unevaluated`
/// keywords, are handled apart.)
const EQUALITY_ONLY: &[&str] = &[
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "$ref",
    "$dynamicRef",
    "$recursiveRef",
    "propertyNames",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "additionalItems",
];

const ALL_TYPES: &[&str] = &[
    "null", "boolean", "object", "array", "number", "string", "integer",
];

fn incompatible(path: &str, what: impl Into<String>) -> Result<(), Incompatibility> {
    Err(Incompatibility {
        path: path.to_owned(),
        what: what.into(),
    })
}

/// Compact JSON, for messages.
fn show(value: &Value) -> String {
    value.to_string()
}

fn accepts_anything(schema: &Value) -> bool {
    match schema {
        Value::Bool(accepts) => *accepts,
        Value::Object(map) => !map.keys().any(|k| CONSTRAINING.contains(&k.as_str())),
        _ => false,
    }
}

fn compare(old: &Value, new: &Value, path: &str) -> Result<(), Incompatibility> {
    if accepts_anything(new) || old == &Value::Bool(false) || old == new {
        return Ok(());
    }
    let new = match new {
        Value::Object(map) => map,
        Value::Bool(_) => return incompatible(path, "schema became false: nothing is accepted"),
        other => return incompatible(path, format!("{} is not a schema", show(other))),
    };
    // Anything that is not an object constrains nothing we can compare:
    // treat it as accepting anything, the conservative side.
    let old = match old {
        Value::Object(map) => map,
        _ => &NO_PROPERTIES,
    };
    let kinds = Kinds::of(old);

    compare_type(old, new, path)?;
    compare_values(old, new, path)?;
    for keyword in EQUALITY_ONLY {
        compare_equal(old, new, keyword, path)?;
    }
    if kinds.number {
        compare_numbers(old, new, path)?;
    }
    if kinds.string {
        raised(old, new, "minLength", path)?;
        lowered(old, new, "maxLength", path)?;
        changed(old, new, "pattern", path)?;
        changed(old, new, "format", path)?;
    }
    if kinds.array {
        compare_arrays(old, new, path)?;
    }
    if kinds.object {
        compare_objects(old, new, path)?;
    }
    Ok(())
}

/// Which kinds of value the old schema's `type` admits.
struct Kinds {
    object: bool,
    array: bool,
    string: bool,
    number: bool,
}

impl Kinds {
    fn of(schema: &Map<String, Value>) -> Kinds {
        match types(schema) {
            None => Kinds {
                object: true,
                array: true,
                string: true,
                number: true,
            },
            Some(types) => Kinds {
                object: types.contains(&"object"),
                array: types.contains(&"array"),
                string: types.contains(&"string"),
                number: types.contains(&"number") || types.contains(&"integer"),
            },
        }
    }
}

/// The schema's `type` as a list; `None` when absent (or malformed).
fn types(schema: &Map<String, Value>) -> Option<Vec<&str>> {
    match schema.get("type")? {
        Value::String(one) => Some(vec![one.as_str()]),
        Value::Array(many) => many.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

fn compare_type(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    path: &str,
) -> Result<(), Incompatibility> {
    let Some(new_value) = new.get("type") else {
        return Ok(());
    };
    let Some(new_types) = types(new) else {
        return incompatible(path, format!("type {} is not understood", show(new_value)));
    };
    let old_types = types(old).unwrap_or_else(|| ALL_TYPES.to_vec());
    let covered =
        |t: &str| new_types.contains(&t) || (t == "integer" && new_types.contains(&"number"));
    if old_types.iter().all(|t| covered(t)) {
        return Ok(());
    }
    let from = match (old.get("type"), types(old)) {
        (Some(value), Some(_)) => show(value),
        _ => "any".to_owned(),
    };
    incompatible(
        path,
        format!("type narrowed from {from} to {}", show(new_value)),
    )
}

/// JSON equality as the validator sees it: `1` and `1.0` are equal.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(x), Some(y)) if x == y)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// `const` and `enum`: the old schema's admitted values, if it listed them,
/// must all stay admitted.
fn compare_values(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    path: &str,
) -> Result<(), Incompatibility> {
    let old_values: Option<Vec<&Value>> = match (old.get("const"), old.get("enum")) {
        (Some(value), _) => Some(vec![value]),
        (None, Some(Value::Array(values))) => Some(values.iter().collect()),
        _ => None,
    };
    if let Some(new_const) = new.get("const") {
        match (&old_values, old.get("const")) {
            (_, Some(old_const)) if same_value(old_const, new_const) => {}
            (_, Some(old_const)) => {
                return incompatible(
                    path,
                    format!(
                        "const changed from {} to {}",
                        show(old_const),
                        show(new_const)
                    ),
                )
            }
            (Some(values), None) => {
                if let Some(lost) = values.iter().find(|v| !same_value(v, new_const)) {
                    return incompatible(
                        path,
                        format!(
                            "const {} added: enum value {} no longer accepted",
                            show(new_const),
                            show(lost)
                        ),
                    );
                }
            }
            (None, None) => return incompatible(path, format!("const added: {}", show(new_const))),
        }
    }
    if let Some(new_enum) = new.get("enum") {
        let Value::Array(allowed) = new_enum else {
            return incompatible(path, format!("enum {} is not an array", show(new_enum)));
        };
        match &old_values {
            Some(values) => {
                if let Some(lost) = values
                    .iter()
                    .find(|v| !allowed.iter().any(|a| same_value(v, a)))
                {
                    return incompatible(path, format!("enum value {} removed", show(lost)));
                }
            }
            None => return incompatible(path, format!("enum added: {}", show(new_enum))),
        }
    }
    Ok(())
}

fn compare_equal(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    keyword: &str,
    path: &str,
) -> Result<(), Incompatibility> {
    match (old.get(keyword), new.get(keyword)) {
        (_, None) => Ok(()),
        (Some(o), Some(n)) if o == n => Ok(()),
        (None, Some(_)) => incompatible(path, format!("{keyword} added")),
        (Some(_), Some(_)) => incompatible(
            path,
            format!("{keyword} changed (it is compared for equality only)"),
        ),
    }
}

fn number(map: &Map<String, Value>, keyword: &str) -> Option<f64> {
    map.get(keyword).and_then(Value::as_f64)
}

/// A lower bound (`minLength`, ...) that went up; absent counts as none.
fn raised(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    keyword: &str,
    path: &str,
) -> Result<(), Incompatibility> {
    let Some(n) = number(new, keyword) else {
        return Ok(());
    };
    match number(old, keyword) {
        Some(o) if o >= n => Ok(()),
        Some(_) => incompatible(
            path,
            format!(
                "{keyword} raised from {} to {}",
                show(&old[keyword]),
                show(&new[keyword])
            ),
        ),
        None if n <= 0.0 => Ok(()),
        None => incompatible(path, format!("{keyword} added: {}", show(&new[keyword]))),
    }
}

/// An upper bound (`maxLength`, ...) that went down; absent counts as none.
fn lowered(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    keyword: &str,
    path: &str,
) -> Result<(), Incompatibility> {
    let Some(n) = number(new, keyword) else {
        return Ok(());
    };
    match number(old, keyword) {
        Some(o) if o <= n => Ok(()),
        Some(_) => incompatible(
            path,
            format!(
                "{keyword} lowered from {} to {}",
                show(&old[keyword]),
                show(&new[keyword])
            ),
        ),
        None => incompatible(path, format!("{keyword} added: {}", show(&new[keyword]))),
    }
}

/// `pattern`, `format`: any new or different value narrows.
fn changed(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    keyword: &str,
    path: &str,
) -> Result<(), Incompatibility> {
    match (old.get(keyword), new.get(keyword)) {
        (_, None) => Ok(()),
        (Some(o), Some(n)) if o == n => Ok(()),
        (None, Some(n)) => incompatible(path, format!("{keyword} added: {}", show(n))),
        (Some(o), Some(n)) => incompatible(
            path,
            format!("{keyword} changed from {} to {}", show(o), show(n)),
        ),
    }
}

fn compare_numbers(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    path: &str,
) -> Result<(), Incompatibility> {
    let bound = |keyword: &str, what: &str, kept: bool| -> Result<(), Incompatibility> {
        if kept {
            return Ok(());
        }
        match old.get(keyword) {
            Some(o) => incompatible(
                path,
                format!(
                    "{keyword} {what} from {} to {}",
                    show(o),
                    show(&new[keyword])
                ),
            ),
            None => incompatible(path, format!("{keyword} added: {}", show(&new[keyword]))),
        }
    };
    let old_min = number(old, "minimum");
    let old_xmin = number(old, "exclusiveMinimum");
    let old_max = number(old, "maximum");
    let old_xmax = number(old, "exclusiveMaximum");
    // x >= m holds for the old values if they were >= something >= m, or
    // > something >= m; x > e holds if they were >= something > e, or
    // > something >= e.
    if let Some(m) = number(new, "minimum") {
        let kept = old_min.is_some_and(|o| o >= m) || old_xmin.is_some_and(|o| o >= m);
        bound("minimum", "raised", kept)?;
    }
    if let Some(e) = number(new, "exclusiveMinimum") {
        let kept = old_min.is_some_and(|o| o > e) || old_xmin.is_some_and(|o| o >= e);
        bound("exclusiveMinimum", "raised", kept)?;
    }
    if let Some(m) = number(new, "maximum") {
        let kept = old_max.is_some_and(|o| o <= m) || old_xmax.is_some_and(|o| o <= m);
        bound("maximum", "lowered", kept)?;
    }
    if let Some(e) = number(new, "exclusiveMaximum") {
        let kept = old_max.is_some_and(|o| o < e) || old_xmax.is_some_and(|o| o <= e);
        bound("exclusiveMaximum", "lowered", kept)?;
    }
    if let Some(n) = number(new, "multipleOf") {
        // Every multiple of the old step is a multiple of the new one when
        // the old step is itself a multiple of the new.
        let kept = number(old, "multipleOf").is_some_and(|o| {
            let ratio = o / n;
            ratio.is_finite() && (ratio - ratio.round()).abs() < 1e-9 && ratio.round() >= 1.0
        });
        bound("multipleOf", "changed", kept)?;
    }
    Ok(())
}

fn compare_arrays(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    path: &str,
) -> Result<(), Incompatibility> {
    raised(old, new, "minItems", path)?;
    lowered(old, new, "maxItems", path)?;
    if new.get("uniqueItems") == Some(&Value::Bool(true))
        && old.get("uniqueItems") != Some(&Value::Bool(true))
    {
        return incompatible(path, "uniqueItems added");
    }
    if new.contains_key("contains")
        && ["contains", "minContains", "maxContains"]
            .iter()
            .any(|k| old.get(*k) != new.get(*k))
    {
        return incompatible(
            path,
            "contains (or its counts) added or changed (compared for equality only)",
        );
    }
    if new.contains_key("unevaluatedItems") && old != new {
        return incompatible(
            path,
            "unevaluatedItems with other changes (compared for equality only)",
        );
    }
    fn prefix(map: &Map<String, Value>) -> &[Value] {
        match map.get("prefixItems") {
            Some(Value::Array(items)) => items,
            _ => &[],
        }
    }
    let (old_prefix, new_prefix) = (prefix(old), prefix(new));
    let old_items = old.get("items").unwrap_or(&TRUE);
    let new_items = new.get("items").unwrap_or(&TRUE);
    for i in 0..old_prefix.len().max(new_prefix.len()) {
        let o = old_prefix.get(i).unwrap_or(old_items);
        let n = new_prefix.get(i).unwrap_or(new_items);
        compare(o, n, &format!("{path}[{i}]"))?;
    }
    compare(old_items, new_items, &format!("{path}[*]"))
}

fn compare_objects(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    path: &str,
) -> Result<(), Incompatibility> {
    raised(old, new, "minProperties", path)?;
    lowered(old, new, "maxProperties", path)?;

    let names = |map: &Map<String, Value>| -> Vec<String> {
        match map.get("required") {
            Some(Value::Array(names)) => names
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        }
    };
    let old_required = names(old);
    if let Some(name) = names(new).into_iter().find(|n| !old_required.contains(n)) {
        return incompatible(
            path,
            format!("{} became required", show(&Value::String(name))),
        );
    }

    if new.contains_key("unevaluatedProperties") && old != new {
        return incompatible(
            path,
            "unevaluatedProperties with other changes (compared for equality only)",
        );
    }

    let map_of = |map: &Map<String, Value>, keyword: &str| match map.get(keyword) {
        Some(Value::Object(entries)) => entries.clone(),
        _ => Map::new(),
    };
    let old_props = map_of(old, "properties");
    let new_props = map_of(new, "properties");
    let old_patterns = map_of(old, "patternProperties");
    let new_patterns = map_of(new, "patternProperties");
    let old_additional = old.get("additionalProperties").unwrap_or(&TRUE);
    let new_additional = new.get("additionalProperties").unwrap_or(&TRUE);

    // Patterns: one added constrains properties the old schema let through;
    // one removed leaves its properties to additionalProperties.
    for (pattern, n) in &new_patterns {
        let at = format!("{path}[pattern {}]", show(&Value::String(pattern.clone())));
        match old_patterns.get(pattern) {
            Some(o) => compare(o, n, &at)?,
            None if accepts_anything(n) => {}
            None => {
                return incompatible(
                    path,
                    format!(
                        "patternProperties {} added",
                        show(&Value::String(pattern.clone()))
                    ),
                )
            }
        }
    }
    if !accepts_anything(new_additional) {
        if let Some(pattern) = old_patterns.keys().find(|p| !new_patterns.contains_key(*p)) {
            return incompatible(
                path,
                format!(
                    "patternProperties {} removed while additionalProperties is {}",
                    show(&Value::String(pattern.clone())),
                    show(new_additional)
                ),
            );
        }
    }

    // Declared now: against what the old schema allowed for that name. With
    // old patterns the name may have matched one, which this does not
    // evaluate: assume the old schema allowed anything (conservative).
    for (name, n) in &new_props {
        let o = match old_props.get(name) {
            Some(o) => o,
            None if !old_patterns.is_empty() => &TRUE,
            None => old_additional,
        };
        let mut at = path.to_owned();
        push_property(&mut at, name);
        compare(o, n, &at)?;
    }

    // Declared before, not now: governed by additionalProperties (or, with
    // the same patterns, by a pattern it matched, which it met before too).
    for (name, o) in old_props
        .iter()
        .filter(|(n, _)| !new_props.contains_key(*n))
    {
        let quoted = show(&Value::String(name.clone()));
        if !new_patterns.is_empty() && new_patterns != old_patterns {
            return incompatible(
                path,
                format!(
                    "property {quoted} removed: it may fall under the changed patternProperties"
                ),
            );
        }
        if new_additional == &Value::Bool(false) && o != &Value::Bool(false) {
            return incompatible(
                path,
                format!("property {quoted} removed while additionalProperties is false"),
            );
        }
        let mut at = path.to_owned();
        push_property(&mut at, name);
        compare(o, new_additional, &at).map_err(|inner| Incompatibility {
            path: inner.path,
            what: format!(
                "{} (property removed, now under additionalProperties)",
                inner.what
            ),
        })?;
    }

    // Neither declared before nor now.
    if new_additional == &Value::Bool(false) {
        if old_additional != &Value::Bool(false) {
            return incompatible(
                path,
                format!(
                    "additionalProperties tightened from {} to false",
                    show(old_additional)
                ),
            );
        }
    } else {
        compare(old_additional, new_additional, &format!("{path}.*")).map_err(|inner| {
            Incompatibility {
                path: inner.path,
                what: format!("additionalProperties tightened: {}", inner.what),
            }
        })?;
    }
    Ok(())
}

/// `$ref` targets must be the same subschema in both, since the recursion
/// compares the `$ref` text, not what it points at. Documents whose refs
/// cannot be resolved plainly here (a `$dynamicRef`, an `$id` below the
/// root, which rebases the refs inside it) must be equal.
fn check_references(old: &Value, new: &Value) -> Result<(), Incompatibility> {
    let mut refs = Vec::new();
    let mut opaque = None;
    collect_refs(new, true, &mut refs, &mut opaque);
    collect_refs(old, true, &mut Vec::new(), &mut opaque);
    if let Some(why) = opaque {
        return incompatible(
            "data",
            format!("{why}: such schemas are compared for equality only"),
        );
    }
    refs.sort_unstable();
    refs.dedup();
    for target in refs {
        let same = match (resolve(old, target), resolve(new, target)) {
            (Some(o), Some(n)) => o == n,
            _ => false,
        };
        if !same {
            return incompatible(
                "data",
                format!(
                    "$ref {} points at a schema that changed (referenced schemas must stay equal)",
                    show(&Value::String(target.to_owned()))
                ),
            );
        }
    }
    Ok(())
}

fn collect_refs<'a>(
    value: &'a Value,
    root: bool,
    refs: &mut Vec<&'a str>,
    opaque: &mut Option<&'static str>,
) {
    match value {
        Value::Object(map) => {
            for (key, member) in map {
                match (key.as_str(), member) {
                    ("$ref", Value::String(target)) => refs.push(target),
                    ("$dynamicRef" | "$recursiveRef", Value::String(_)) => {
                        *opaque = Some("the schema uses $dynamicRef")
                    }
                    ("$id", Value::String(_)) if !root => {
                        *opaque = Some("the schema has an $id below its root")
                    }
                    _ => collect_refs(member, false, refs, opaque),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_refs(item, false, refs, opaque);
            }
        }
        _ => {}
    }
}

/// What a local ref points at: a JSON pointer (`#/$defs/a`, `#`) or a plain
/// name `$anchor` (`#name`). Refs are already known to be local.
fn resolve<'a>(root: &'a Value, target: &str) -> Option<&'a Value> {
    let fragment = target.strip_prefix('#')?;
    let fragment = percent_decode(fragment)?;
    if fragment.is_empty() || fragment.starts_with('/') {
        root.pointer(&fragment)
    } else {
        find_anchor(root, &fragment)
    }
}

fn find_anchor<'a>(value: &'a Value, name: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => {
            if map.get("$anchor").and_then(Value::as_str) == Some(name) {
                return Some(value);
            }
            map.values().find_map(|v| find_anchor(v, name))
        }
        Value::Array(items) => items.iter().find_map(|v| find_anchor(v, name)),
        _ => None,
    }
}

fn percent_decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `old` → `new` is refused with `expected`, and `new` → `old` (the
    /// widening direction) is accepted.
    #[track_caller]
    fn narrows(old: Value, new: Value, expected: &str) {
        let error = backward_compatible(&old, &new).expect_err("narrowing refused");
        assert_eq!(error.to_string(), expected);
        if let Err(error) = backward_compatible(&new, &old) {
            panic!("widening {new} -> {old} refused: {error}");
        }
    }

    #[track_caller]
    fn compatible(old: Value, new: Value) {
        if let Err(error) = backward_compatible(&old, &new) {
            panic!("{old} -> {new} refused: {error}");
        }
    }

    fn object(properties: Value) -> Value {
        json!({"type": "object", "properties": properties})
    }

    #[test]
    fn type_narrowed_or_widened() {
        narrows(
            object(json!({"course_id": {"type": ["integer", "string"]}})),
            object(json!({"course_id": {"type": "integer"}})),
            r#"data.course_id: type narrowed from ["integer","string"] to "integer""#,
        );
        narrows(
            object(json!({"n": {"type": "number"}})),
            object(json!({"n": {"type": "integer"}})),
            r#"data.n: type narrowed from "number" to "integer""#,
        );
        narrows(
            object(json!({"n": {}})),
            object(json!({"n": {"type": "string"}})),
            r#"data.n: type narrowed from any to "string""#,
        );
        compatible(
            object(json!({"n": {"type": "integer"}})),
            object(json!({"n": {"type": ["number", "null"]}})),
        );
    }

    #[test]
    fn required_added_or_dropped() {
        narrows(
            json!({"properties": {"email": {"type": "string"}}}),
            json!({"properties": {"email": {"type": "string"}}, "required": ["email"]}),
            r#"data: "email" became required"#,
        );
    }

    #[test]
    fn properties_compared_recursively() {
        narrows(
            object(json!({"a": object(json!({"b": {"maxLength": 10}}))})),
            object(json!({"a": object(json!({"b": {"maxLength": 5}}))})),
            "data.a.b: maxLength lowered from 10 to 5",
        );
        // A property declared where any was allowed: it is new, unconstrained before.
        narrows(
            json!({"type": "object"}),
            object(json!({"x": {"type": "string"}})),
            r#"data.x: type narrowed from any to "string""#,
        );
        // ... but fine where the old schema refused undeclared properties.
        compatible(
            json!({"type": "object", "additionalProperties": false}),
            json!({"type": "object", "properties": {"x": {"type": "string"}},
                   "additionalProperties": false}),
        );
        // Odd names are quoted in the path.
        narrows(
            object(json!({"a.b": {"type": "number"}})),
            object(json!({"a.b": {"type": "integer"}})),
            r#"data["a.b"]: type narrowed from "number" to "integer""#,
        );
    }

    #[test]
    fn additional_properties_tightened_or_loosened() {
        narrows(
            object(json!({"a": {}})),
            json!({"type": "object", "properties": {"a": {}}, "additionalProperties": false}),
            "data: additionalProperties tightened from true to false",
        );
        narrows(
            json!({"type": "object", "additionalProperties": true}),
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            r#"data.*: additionalProperties tightened: type narrowed from any to "string""#,
        );
        narrows(
            json!({"additionalProperties": {"type": ["string", "null"]}}),
            json!({"additionalProperties": {"type": "string"}}),
            r#"data.*: additionalProperties tightened: type narrowed from ["string","null"] to "string""#,
        );
    }

    #[test]
    fn property_removed_under_closed_objects() {
        narrows(
            json!({"properties": {"a": {"type": "string"}, "b": {}}, "additionalProperties": false}),
            json!({"properties": {"b": {}}, "additionalProperties": false}),
            r#"data: property "a" removed while additionalProperties is false"#,
        );
        // With additional properties allowed, dropping the declaration widens.
        compatible(
            json!({"properties": {"a": {"type": "string"}, "b": {}}}),
            json!({"properties": {"b": {}}}),
        );
        // ... and a schema for the rest must still admit what it allowed.
        let error = backward_compatible(
            &json!({"properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "integer"}}),
            &json!({"additionalProperties": {"type": "integer"}}),
        )
        .expect_err("removed into a narrower rest");
        assert_eq!(
            error.to_string(),
            r#"data.a: type narrowed from "string" to "integer" (property removed, now under additionalProperties)"#
        );
    }

    #[test]
    fn enum_and_const() {
        narrows(
            object(json!({"s": {"enum": ["a", "b", "c"]}})),
            object(json!({"s": {"enum": ["a", "c"]}})),
            r#"data.s: enum value "b" removed"#,
        );
        narrows(
            object(json!({"s": {"type": "string"}})),
            object(json!({"s": {"type": "string", "enum": ["a"]}})),
            r#"data.s: enum added: ["a"]"#,
        );
        narrows(
            object(json!({"s": {}})),
            object(json!({"s": {"const": 1}})),
            "data.s: const added: 1",
        );
        let error = backward_compatible(
            &object(json!({"s": {"const": 1}})),
            &object(json!({"s": {"const": 2}})),
        )
        .expect_err("changed");
        assert_eq!(error.to_string(), "data.s: const changed from 1 to 2");
        compatible(
            object(json!({"s": {"const": 1}})),
            object(json!({"s": {"const": 1.0}})),
        );
        compatible(
            object(json!({"s": {"const": "a"}})),
            object(json!({"s": {"enum": ["a", "b"]}})),
        );
        compatible(
            object(json!({"s": {"enum": ["a"]}})),
            object(json!({"s": {"const": "a"}})),
        );
    }

    #[test]
    fn numeric_bounds() {
        narrows(
            object(json!({"n": {"minimum": 1}})),
            object(json!({"n": {"minimum": 2}})),
            "data.n: minimum raised from 1 to 2",
        );
        narrows(
            object(json!({"n": {"exclusiveMinimum": 1}})),
            object(json!({"n": {"exclusiveMinimum": 1.5}})),
            "data.n: exclusiveMinimum raised from 1 to 1.5",
        );
        narrows(
            object(json!({"n": {"maximum": 10}})),
            object(json!({"n": {"maximum": 9}})),
            "data.n: maximum lowered from 10 to 9",
        );
        narrows(
            object(json!({"n": {"exclusiveMaximum": 10}})),
            object(json!({"n": {"exclusiveMaximum": 5}})),
            "data.n: exclusiveMaximum lowered from 10 to 5",
        );
        narrows(
            object(json!({"n": {"type": "number"}})),
            object(json!({"n": {"type": "number", "maximum": 5}})),
            "data.n: maximum added: 5",
        );
        // x > 1 implies x >= 1; not the other way.
        compatible(
            object(json!({"n": {"exclusiveMinimum": 1}})),
            object(json!({"n": {"minimum": 1}})),
        );
        narrows(
            object(json!({"n": {"minimum": 1}})),
            object(json!({"n": {"exclusiveMinimum": 1}})),
            "data.n: exclusiveMinimum added: 1",
        );
        narrows(
            object(json!({"n": {"multipleOf": 2}})),
            object(json!({"n": {"multipleOf": 4}})),
            "data.n: multipleOf changed from 2 to 4",
        );
        // Bounds on numbers do not matter where only strings were admitted.
        compatible(
            object(json!({"n": {"type": "string"}})),
            object(json!({"n": {"type": "string", "minimum": 3}})),
        );
    }

    #[test]
    fn string_length_pattern_and_format() {
        narrows(
            object(json!({"s": {"minLength": 1}})),
            object(json!({"s": {"minLength": 3}})),
            "data.s: minLength raised from 1 to 3",
        );
        narrows(
            object(json!({"s": {"maxLength": 3}})),
            object(json!({"s": {"maxLength": 2}})),
            "data.s: maxLength lowered from 3 to 2",
        );
        narrows(
            object(json!({"s": {"type": "string"}})),
            object(json!({"s": {"type": "string", "pattern": "^a"}})),
            r#"data.s: pattern added: "^a""#,
        );
        let error = backward_compatible(
            &object(json!({"s": {"pattern": "^a"}})),
            &object(json!({"s": {"pattern": "^b"}})),
        )
        .expect_err("changed");
        assert_eq!(
            error.to_string(),
            r#"data.s: pattern changed from "^a" to "^b""#
        );
        narrows(
            object(json!({"s": {"type": "string"}})),
            object(json!({"s": {"type": "string", "format": "email"}})),
            r#"data.s: format added: "email""#,
        );
        let error = backward_compatible(
            &object(json!({"s": {"format": "email"}})),
            &object(json!({"s": {"format": "uri"}})),
        )
        .expect_err("changed");
        assert_eq!(
            error.to_string(),
            r#"data.s: format changed from "email" to "uri""#
        );
    }

    #[test]
    fn arrays_items_and_counts() {
        narrows(
            object(
                json!({"items": {"type": "array", "items": object(json!({"sku": {"type": ["string", "integer"]}}))}}),
            ),
            object(
                json!({"items": {"type": "array", "items": object(json!({"sku": {"type": "string"}}))}}),
            ),
            r#"data.items[*].sku: type narrowed from ["string","integer"] to "string""#,
        );
        narrows(
            object(json!({"l": {"minItems": 1}})),
            object(json!({"l": {"minItems": 2}})),
            "data.l: minItems raised from 1 to 2",
        );
        narrows(
            object(json!({"l": {"maxItems": 3}})),
            object(json!({"l": {"maxItems": 2}})),
            "data.l: maxItems lowered from 3 to 2",
        );
        narrows(
            object(json!({"l": {"type": "array"}})),
            object(json!({"l": {"type": "array", "uniqueItems": true}})),
            "data.l: uniqueItems added",
        );
        narrows(
            object(json!({"t": {"prefixItems": [{"type": "number"}, {}]}})),
            object(json!({"t": {"prefixItems": [{"type": "integer"}, {}]}})),
            r#"data.t[0]: type narrowed from "number" to "integer""#,
        );
        // A new position is checked against what `items` allowed there.
        narrows(
            object(json!({"t": {"prefixItems": [{}], "items": {"type": ["string", "null"]}}})),
            object(
                json!({"t": {"prefixItems": [{}, {"type": "string"}], "items": {"type": ["string", "null"]}}}),
            ),
            r#"data.t[1]: type narrowed from ["string","null"] to "string""#,
        );
    }

    #[test]
    fn compositions_compared_for_equality() {
        let base = json!({"anyOf": [{"required": ["a"]}, {"required": ["b"]}]});
        compatible(base.clone(), base.clone());
        narrows(
            json!({"type": "object"}),
            json!({"type": "object", "anyOf": [{"required": ["a"]}]}),
            "data: anyOf added",
        );
        let error = backward_compatible(
            &base,
            &json!({"anyOf": [{"required": ["a"]}, {"required": ["b"]}, {"required": ["c"]}]}),
        )
        .expect_err("changed");
        assert_eq!(
            error.to_string(),
            "data: anyOf changed (it is compared for equality only)"
        );
        for keyword in ["allOf", "oneOf"] {
            narrows(
                json!({}),
                json!({keyword: [{"required": ["a"]}]}),
                &format!("data: {keyword} added"),
            );
        }
        narrows(
            json!({}),
            json!({"not": {"required": ["a"]}}),
            "data: not added",
        );
    }

    #[test]
    fn true_and_false_schemas() {
        narrows(
            json!(true),
            json!({"type": "object"}),
            r#"data: type narrowed from any to "object""#,
        );
        narrows(
            json!({}),
            json!({"required": ["a"]}),
            r#"data: "a" became required"#,
        );
        narrows(
            object(json!({"a": true})),
            object(json!({"a": false})),
            "data.a: schema became false: nothing is accepted",
        );
        compatible(json!({"type": "object", "required": ["x"]}), json!(true));
        compatible(json!({"type": "object"}), json!({}));
        // Annotations constrain nothing.
        compatible(
            json!(true),
            json!({"title": "T", "description": "d", "examples": [{}]}),
        );
        compatible(json!(false), json!({"type": "string"}));
    }

    #[test]
    fn referenced_definitions_must_stay_equal() {
        let with = |sku: Value, other: Value| {
            json!({
                "$defs": {"sku": sku, "other": other},
                "properties": {"sku": {"$ref": "#/$defs/sku"}}
            })
        };
        let error = backward_compatible(
            &with(json!({"type": "string"}), json!({})),
            &with(json!({"type": "string", "minLength": 3}), json!({})),
        )
        .expect_err("referenced def changed");
        assert_eq!(
            error.to_string(),
            r##"data: $ref "#/$defs/sku" points at a schema that changed (referenced schemas must stay equal)"##
        );
        // An unreferenced definition may change.
        compatible(
            with(json!({"type": "string"}), json!({})),
            with(json!({"type": "string"}), json!({"type": "integer"})),
        );
        // A ref added is a change of the node holding it.
        narrows(
            json!({"$defs": {"s": {"type": "string"}}, "properties": {"a": {}}}),
            json!({"$defs": {"s": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/s"}}}),
            "data.a: $ref added",
        );
        // A recursive ref to the root: any change is refused.
        let tree = |extra: Value| json!({"properties": {"children": {"items": {"$ref": "#"}}, "extra": extra}});
        assert!(backward_compatible(&tree(json!({"type": "string"})), &tree(json!({}))).is_err());
        compatible(tree(json!({})), tree(json!({})));
    }

    #[test]
    fn pattern_properties() {
        narrows(
            json!({"type": "object"}),
            json!({"type": "object", "patternProperties": {"^x_": {"type": "string"}}}),
            r#"data: patternProperties "^x_" added"#,
        );
        narrows(
            json!({"patternProperties": {"^x_": {"type": ["string", "null"]}}}),
            json!({"patternProperties": {"^x_": {"type": "string"}}}),
            r#"data[pattern "^x_"]: type narrowed from ["string","null"] to "string""#,
        );
        let error = backward_compatible(
            &json!({"patternProperties": {"^x_": {}}, "additionalProperties": false}),
            &json!({"additionalProperties": false}),
        )
        .expect_err("pattern removed");
        assert_eq!(
            error.to_string(),
            r#"data: patternProperties "^x_" removed while additionalProperties is false"#
        );
    }

    /// What `backward_compatible` accepts must really widen: over every
    /// pair of a pool of schemas, each instance the old one accepts the new
    /// one accepts too.
    #[test]
    fn accepted_changes_only_widen() {
        let schemas = [
            json!(true),
            json!({}),
            json!({"type": "object"}),
            json!({"additionalProperties": false}),
            json!({"properties": {"a": {"type": "integer"}}}),
            json!({"properties": {"a": {"type": "number"}}}),
            json!({"properties": {"a": {"type": ["integer", "string"]}}}),
            json!({"properties": {"a": {"type": "string"}}, "additionalProperties": false}),
            json!({"properties": {"a": {}, "b": {}}, "additionalProperties": false}),
            json!({"properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "integer"}}),
            json!({"additionalProperties": {"type": "integer"}}),
            json!({"required": ["a"]}),
            json!({"required": ["a", "b"]}),
            json!({"properties": {"a": {"enum": [1, 2]}}}),
            json!({"properties": {"a": {"enum": [1]}}}),
            json!({"properties": {"a": {"const": 1}}}),
            json!({"properties": {"a": {"minimum": 1}}}),
            json!({"properties": {"a": {"exclusiveMinimum": 1}}}),
            json!({"properties": {"a": {"maximum": 2}}}),
            json!({"properties": {"a": {"exclusiveMaximum": 2}}}),
            json!({"properties": {"a": {"multipleOf": 2}}}),
            json!({"properties": {"a": {"multipleOf": 4}}}),
            json!({"properties": {"a": {"minLength": 2}}}),
            json!({"properties": {"a": {"maxLength": 1}}}),
            json!({"properties": {"a": {"pattern": "^x"}}}),
            json!({"properties": {"a": {"format": "email"}}}),
            json!({"properties": {"a": false}}),
            json!({"properties": {"l": {"items": {"type": "integer"}}}}),
            json!({"properties": {"l": {"prefixItems": [{"type": "string"}]}}}),
            json!({"properties": {"l": {"prefixItems": [{"type": "string"}], "items": false}}}),
            json!({"properties": {"l": {"minItems": 2}}}),
            json!({"properties": {"l": {"maxItems": 1}}}),
            json!({"properties": {"l": {"uniqueItems": true}}}),
            json!({"patternProperties": {"^x": {"type": "integer"}}}),
            json!({"patternProperties": {"^x": {"type": "integer"}}, "additionalProperties": false}),
            json!({"anyOf": [{"required": ["a"]}, {"required": ["b"]}]}),
            json!({"not": {"required": ["b"]}}),
            json!({"minProperties": 1}),
            json!({"maxProperties": 1}),
            json!({"dependentRequired": {"a": ["b"]}}),
            json!({"propertyNames": {"maxLength": 1}}),
            json!({"$defs": {"i": {"type": "integer"}}, "properties": {"a": {"$ref": "#/$defs/i"}}}),
            json!({"$defs": {"i": {"type": "number"}}, "properties": {"a": {"$ref": "#/$defs/i"}}}),
        ];
        let instances = [
            json!({}),
            json!({"a": 1}),
            json!({"a": 1.5}),
            json!({"a": 2}),
            json!({"a": 4}),
            json!({"a": 0}),
            json!({"a": "x"}),
            json!({"a": "xy"}),
            json!({"a": "a@b.co"}),
            json!({"a": null}),
            json!({"a": true}),
            json!({"b": 1}),
            json!({"a": 1, "b": 2}),
            json!({"a": "s", "b": 2}),
            json!({"x1": 1}),
            json!({"x1": "s"}),
            json!({"zz": 1}),
            json!({"zz": "s"}),
            json!({"l": []}),
            json!({"l": [1, 2]}),
            json!({"l": [1, 1]}),
            json!({"l": ["s"]}),
            json!({"l": ["s", 1]}),
        ];
        let compiled: Vec<_> = schemas
            .iter()
            .map(|s| crate::schema::compile(&s.to_string()).expect("pool schema compiles"))
            .collect();
        let mut accepted = 0;
        for (i, old) in schemas.iter().enumerate() {
            for (j, new) in schemas.iter().enumerate() {
                if backward_compatible(old, new).is_err() {
                    continue;
                }
                accepted += 1;
                for instance in &instances {
                    let before = compiled[i].first_violation(instance).is_none();
                    let after = compiled[j].first_violation(instance).is_none();
                    assert!(
                        !before || after,
                        "{old} -> {new} was accepted, but {instance} is no longer valid"
                    );
                }
            }
        }
        // Not vacuous: plenty of widenings are recognised.
        assert!(
            accepted > schemas.len() * 4,
            "only {accepted} pairs accepted"
        );
    }
}
