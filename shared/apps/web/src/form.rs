//! A request's JSON Schema as an HTML form, and the form's fields back as the JSON answer.
//!
//! Each input is named by the JSON pointer of the value it fills (`/approved`, `/mailbox/path`);
//! a `oneOf` (or `anyOf`) of objects becomes a choice whose options are named `{pointer}#{n}`,
//! their inputs `{pointer}#{n}/{property}`. The answer is checked on the server by
//! [`reanimate_core::schema::answer_problems`], the validator the CLI uses, and each problem is
//! shown next to the field it is about.
//!
//! Types: strings (a password input when `writeOnly`, a text area when over 200 characters are
//! allowed, an email
//! input for `format: email`), numbers and integers, booleans (a checkbox; two options, Yes and No,
//! when the answer is required and has no default), enums (a select), a
//! `const` (fixed, not shown), arrays of enums (checkboxes), arrays of records (JSON in a text area),
//! other arrays (one item per line), nested objects (a fieldset). A blank text field is no answer.

use reanimate_core::Result;
use reanimate_core::schema::answer_problems;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One input (or group of inputs) of the form, as the template renders it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Field {
    /// The input's name: the JSON pointer of its value (with `#n` for a choice's option).
    pub name: String,
    /// An HTML id derived from the name.
    pub id: String,
    pub label: String,
    pub description: Option<String>,
    /// `text`, `email`, `textarea`, `password`, `number`, `checkbox`, `yesno`, `select`, `checkboxes`,
    /// `lines`, `json`, `group`, `choice` or `fixed`.
    pub kind: &'static str,
    pub required: bool,
    /// What the person typed last (never for a password).
    pub value: String,
    pub checked: bool,
    pub options: Vec<Choice>,
    pub step: Option<&'static str>,
    pub min: Option<String>,
    pub max: Option<String>,
    pub max_length: Option<u64>,
    pub errors: Vec<String>,
    /// A group's fields.
    pub fields: Vec<Field>,
    /// A choice's options, each with its fields.
    pub variants: Vec<Variant>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Variant {
    /// The radio button's value (`0`, `1`, …).
    pub index: usize,
    pub id: String,
    pub label: String,
    pub selected: bool,
    pub fields: Vec<Field>,
}

/// What a person submitted: input name → values (several for checkboxes).
pub type Submitted = BTreeMap<String, Vec<String>>;

/// Parses an `application/x-www-form-urlencoded` body.
pub fn parse_body(body: &[u8]) -> Submitted {
    let mut submitted = Submitted::new();
    for (name, value) in form_urlencoded::parse(body) {
        submitted
            .entry(name.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    submitted
}

fn escape_segment(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn html_id(name: &str) -> String {
    let mut id = String::from("f");
    for c in name.chars() {
        id.push(if c.is_ascii_alphanumeric() { c } else { '-' });
    }
    id
}

fn label_of(schema: &Value, fallback: &str) -> String {
    schema
        .get("title")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            let words = fallback.replace(['_', '-'], " ");
            let mut chars = words.chars();
            chars
                .next()
                .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
                .unwrap_or_default()
        })
}

fn first<'a>(submitted: &'a Submitted, name: &str) -> Option<&'a str> {
    submitted
        .get(name)
        .and_then(|values| values.first())
        .map(String::as_str)
}

fn type_of(schema: &Value) -> &str {
    match schema.get("type") {
        Some(Value::String(t)) => t,
        // ["string", "null"] and the like: the first non-null type.
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("string"),
        _ if schema.get("properties").is_some() => "object",
        _ if schema.get("enum").is_some() => "enum",
        _ => "string",
    }
}

fn variants_of(schema: &Value) -> Option<&Vec<Value>> {
    schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
        .filter(|variants| variants.iter().all(|v| type_of(v) == "object"))
}

/// A variant's name: its `title`, else the value of its `const` property (`gmail`), else its
/// number.
fn variant_label(schema: &Value, index: usize) -> String {
    if let Some(title) = schema.get("title").and_then(Value::as_str) {
        return title.to_string();
    }
    schema
        .get("properties")
        .and_then(Value::as_object)
        .and_then(|props| {
            props
                .values()
                .find_map(|p| p.get("const").and_then(Value::as_str))
        })
        .map(|c| label_of(&Value::Null, c))
        .unwrap_or_else(|| format!("Option {}", index + 1))
}

fn chosen_variant(submitted: &Submitted, name: &str) -> Option<usize> {
    first(submitted, &format!("{name}#")).and_then(|v| v.parse().ok())
}

/// The form for `schema`, filled with what was `submitted` (empty for a fresh form), with
/// `problems` (pointer → messages) next to their fields. The root must be an object; anything
/// else is asked as one field named `/`.
pub fn fields(
    schema: &Value,
    submitted: &Submitted,
    problems: &BTreeMap<String, Vec<String>>,
) -> Vec<Field> {
    if type_of(schema) == "object" && variants_of(schema).is_none() {
        object_fields(schema, "", "", submitted, problems)
    } else {
        vec![field(schema, "", "", "Answer", true, submitted, problems)]
    }
}

fn object_fields(
    schema: &Value,
    name: &str,
    pointer: &str,
    submitted: &Submitted,
    problems: &BTreeMap<String, Vec<String>>,
) -> Vec<Field> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(key, property)| {
            let segment = escape_segment(key);
            field(
                property,
                &format!("{name}/{segment}"),
                &format!("{pointer}/{segment}"),
                key,
                required.contains(&key.as_str()),
                submitted,
                problems,
            )
        })
        .collect()
}

fn field(
    schema: &Value,
    name: &str,
    pointer: &str,
    key: &str,
    required: bool,
    submitted: &Submitted,
    problems: &BTreeMap<String, Vec<String>>,
) -> Field {
    let fresh = submitted.is_empty();
    let previous = first(submitted, name).unwrap_or_default().to_string();
    let default = schema.get("default");
    let mut field = Field {
        name: name.to_string(),
        id: html_id(name),
        label: label_of(schema, key),
        description: schema
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string),
        required,
        errors: problems.get(pointer).cloned().unwrap_or_default(),
        ..Field::default()
    };
    if schema.get("const").is_some() {
        field.kind = "fixed";
        return field;
    }
    if let Some(variants) = variants_of(schema) {
        field.kind = "choice";
        let chosen = chosen_variant(submitted, name).unwrap_or(0);
        field.variants = variants
            .iter()
            .enumerate()
            .map(|(index, variant)| {
                let option = format!("{name}#{index}");
                Variant {
                    index,
                    id: html_id(&option),
                    label: variant_label(variant, index),
                    selected: index == chosen,
                    fields: object_fields(variant, &option, pointer, submitted, problems),
                }
            })
            .collect();
        return field;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        field.kind = "select";
        let current = if fresh {
            default.map(text_of).unwrap_or_default()
        } else {
            previous
        };
        field.options = options
            .iter()
            .map(|o| Choice {
                value: text_of(o),
                label: text_of(o),
                selected: text_of(o) == current,
            })
            .collect();
        return field;
    }
    match type_of(schema) {
        "object" => {
            field.kind = "group";
            field.fields = object_fields(schema, name, pointer, submitted, problems);
        }
        // A required yes-or-no with no default is asked as two options, neither chosen: an
        // unticked box would answer "no" for someone who never decided.
        "boolean" if required && default.is_none() => {
            field.kind = "yesno";
            field.value = previous;
        }
        "boolean" => {
            field.kind = "checkbox";
            field.checked = if fresh {
                default.and_then(Value::as_bool).unwrap_or(false)
            } else {
                previous == "true"
            };
        }
        kind @ ("number" | "integer") => {
            field.kind = "number";
            field.step = Some(if kind == "integer" { "1" } else { "any" });
            field.min = schema.get("minimum").map(text_of);
            field.max = schema.get("maximum").map(text_of);
            field.value = if fresh {
                default.map(text_of).unwrap_or_default()
            } else {
                previous
            };
        }
        "array" => {
            let items = schema.get("items").unwrap_or(&Value::Null);
            if let Some(options) = items.get("enum").and_then(Value::as_array) {
                field.kind = "checkboxes";
                let picked = submitted.get(name).cloned().unwrap_or_default();
                field.options = options
                    .iter()
                    .map(|o| Choice {
                        value: text_of(o),
                        label: text_of(o),
                        selected: picked.contains(&text_of(o)),
                    })
                    .collect();
            } else if matches!(type_of(items), "object" | "array") {
                // Lists of records have no form of their own here: typed as JSON, checked as any.
                field.kind = "json";
                field.value = previous;
            } else {
                field.kind = "lines";
                if items.get("writeOnly").and_then(Value::as_bool) != Some(true) {
                    field.value = previous;
                }
            }
        }
        _ => {
            let write_only = schema.get("writeOnly").and_then(Value::as_bool) == Some(true);
            field.max_length = schema.get("maxLength").and_then(Value::as_u64);
            field.kind = if write_only {
                "password"
            } else if schema.get("format").and_then(Value::as_str) == Some("email") {
                "email"
            } else if field.max_length.is_some_and(|n| n > 200) {
                "textarea"
            } else {
                "text"
            };
            // A secret is never sent back to the browser, not even to the person who typed it.
            if !write_only {
                field.value = if fresh {
                    default.map(text_of).unwrap_or_default()
                } else {
                    previous
                };
            }
        }
    }
    field
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The answer `submitted` makes under `schema`. Values are converted by the schema's types; a
/// value that does not convert is kept as typed, so the validator names the problem at its field.
pub fn answer(schema: &Value, submitted: &Submitted) -> Value {
    if type_of(schema) == "object" && variants_of(schema).is_none() {
        object_value(schema, "", submitted)
    } else {
        value(schema, "", true, submitted).unwrap_or(Value::Null)
    }
}

fn object_value(schema: &Value, name: &str, submitted: &Submitted) -> Value {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut object = Map::new();
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (key, property) in properties {
            let child = format!("{name}/{}", escape_segment(key));
            if let Some(v) = value(
                property,
                &child,
                required.contains(&key.as_str()),
                submitted,
            ) {
                object.insert(key.clone(), v);
            }
        }
    }
    Value::Object(object)
}

fn value(schema: &Value, name: &str, required: bool, submitted: &Submitted) -> Option<Value> {
    if let Some(fixed) = schema.get("const") {
        return Some(fixed.clone());
    }
    if let Some(variants) = variants_of(schema) {
        let chosen = chosen_variant(submitted, name)?;
        let variant = variants.get(chosen)?;
        return Some(object_value(
            variant,
            &format!("{name}#{chosen}"),
            submitted,
        ));
    }
    let typed = first(submitted, name).map(str::trim);
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        let typed = typed.filter(|t| !t.is_empty())?;
        return Some(
            options
                .iter()
                .find(|o| text_of(o) == typed)
                .cloned()
                .unwrap_or_else(|| Value::String(typed.to_string())),
        );
    }
    match type_of(schema) {
        "object" => Some(object_value(schema, name, submitted)),
        "boolean" => match typed {
            Some("true") => Some(Value::Bool(true)),
            Some("false") => Some(Value::Bool(false)),
            // A yes-or-no left unanswered stays missing (the validator says it is required).
            None if required && schema.get("default").is_none() => None,
            _ => Some(Value::Bool(false)),
        },
        kind @ ("number" | "integer") => {
            let typed = typed.filter(|t| !t.is_empty())?;
            let number = if kind == "integer" {
                typed.parse::<i64>().ok().map(Value::from)
            } else {
                typed
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
            };
            Some(number.unwrap_or_else(|| Value::String(typed.to_string())))
        }
        "array" => {
            let items = schema.get("items").unwrap_or(&Value::Null);
            if matches!(type_of(items), "object" | "array") {
                let typed = typed.filter(|t| !t.is_empty())?;
                return Some(
                    serde_json::from_str(typed).unwrap_or_else(|_| Value::String(typed.into())),
                );
            }
            let values: Vec<Value> = if items.get("enum").is_some() {
                submitted
                    .get(name)
                    .into_iter()
                    .flatten()
                    .filter_map(|v| {
                        let one = Submitted::from([(name.to_string(), vec![v.clone()])]);
                        value(items, name, true, &one)
                    })
                    .collect()
            } else {
                typed
                    .unwrap_or_default()
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .filter_map(|line| {
                        let one = Submitted::from([(name.to_string(), vec![line.to_string()])]);
                        value(items, name, true, &one)
                    })
                    .collect()
            };
            (required || !values.is_empty()).then_some(Value::Array(values))
        }
        _ => {
            // Kept as typed (a password's spaces are its own); a blank field is no answer, so a
            // required one is reported missing.
            let raw = first(submitted, name).unwrap_or_default();
            (!raw.trim().is_empty()).then(|| Value::String(raw.to_string()))
        }
    }
}

/// The problems with `answer`, by the pointer of the field they belong to ("" for the form as a
/// whole). A chosen `oneOf` option is also checked on its own, so its fields get their own
/// messages rather than "not valid under any of the schemas".
pub fn problems(schema: &Value, answer: &Value) -> Result<BTreeMap<String, Vec<String>>> {
    let mut by_field: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let found = answer_problems(schema, answer)?;
    if found.is_empty() {
        return Ok(by_field);
    }
    let mut detailed = Vec::new();
    chosen_options(schema, answer, "", &mut detailed);
    // A problem at a chosen option's pointer ("not valid under any of the schemas") is replaced
    // by that option's own problems; every other problem stays.
    let mut explained = Vec::new();
    for (pointer, option, value) in detailed {
        let own = answer_problems(option, value)?;
        if !own.is_empty() {
            explained.push(pointer.clone());
        }
        for (at, message) in own {
            by_field
                .entry(format!("{pointer}{at}"))
                .or_default()
                .push(message);
        }
    }
    for (at, message) in found {
        if !explained.contains(&at) {
            by_field.entry(at).or_default().push(message);
        }
    }
    Ok(by_field)
}

/// For every `oneOf` in `schema` whose value in `answer` names its option by a `const`: (pointer,
/// that option's schema, the value).
fn chosen_options<'a>(
    schema: &'a Value,
    answer: &'a Value,
    pointer: &str,
    out: &mut Vec<(String, &'a Value, &'a Value)>,
) {
    if let Some(variants) = variants_of(schema) {
        let chosen = variants.iter().find(|variant| {
            variant
                .get("properties")
                .and_then(Value::as_object)
                .is_some_and(|props| {
                    props
                        .iter()
                        .any(|(key, p)| p.get("const").is_some_and(|c| answer.get(key) == Some(c)))
                })
        });
        if let Some(option) = chosen {
            out.push((pointer.to_string(), option, answer));
        }
        return;
    }
    if let (Some(properties), Some(values)) = (
        schema.get("properties").and_then(Value::as_object),
        answer.as_object(),
    ) {
        for (key, property) in properties {
            if let Some(v) = values.get(key) {
                chosen_options(
                    property,
                    v,
                    &format!("{pointer}/{}", escape_segment(key)),
                    out,
                );
            }
        }
    }
}

/// Every field's pointer with the problems it shows, and the problems no field shows (for the top
/// of the form).
pub fn unplaced(fields: &[Field], problems: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    fn placed(fields: &[Field], into: &mut Vec<String>) {
        for f in fields {
            if !f.errors.is_empty() {
                into.extend(f.errors.iter().cloned());
            }
            placed(&f.fields, into);
            for v in &f.variants {
                placed(&v.fields, into);
            }
        }
    }
    let mut shown = Vec::new();
    placed(fields, &mut shown);
    problems
        .values()
        .flatten()
        .filter(|p| !shown.contains(p))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn form(pairs: &[(&str, &str)]) -> Submitted {
        let mut s = Submitted::new();
        for (k, v) in pairs {
            s.entry((*k).to_string())
                .or_default()
                .push((*v).to_string());
        }
        s
    }

    #[test]
    fn every_kind_of_field_comes_back_as_its_json_type() {
        let schema = json!({
            "type": "object",
            "required": ["approved", "count"],
            "properties": {
                "approved": {"type": "boolean"},
                "comment": {"type": "string", "maxLength": 500},
                "count": {"type": "integer", "minimum": 1},
                "ratio": {"type": "number"},
                "level": {"enum": ["low", "high"]},
                "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}},
                "names": {"type": "array", "items": {"type": "string"}},
                "nested": {"type": "object", "properties": {"deep": {"type": "string"}}},
                "token": {"type": "string", "writeOnly": true}
            }
        });
        let submitted = form(&[
            ("/approved", "true"),
            ("/count", "3"),
            ("/ratio", "0.5"),
            ("/level", "high"),
            ("/tags", "a"),
            ("/tags", "c"),
            ("/names", "x\n\n y \n"),
            ("/nested/deep", "down"),
            ("/token", "s3cret-value"),
        ]);
        let answer = answer(&schema, &submitted);
        assert_eq!(
            answer,
            json!({"approved": true, "count": 3, "ratio": 0.5, "level": "high", "tags": ["a", "c"],
                   "names": ["x", "y"], "nested": {"deep": "down"}, "token": "s3cret-value"})
        );
        assert!(problems(&schema, &answer).is_ok_and(|p| p.is_empty()));
        // The form shows each field as its kind, and never a secret's value.
        let shown = fields(&schema, &submitted, &BTreeMap::new());
        let kinds: Vec<(&str, &str)> = shown.iter().map(|f| (f.name.as_str(), f.kind)).collect();
        assert!(kinds.contains(&("/approved", "yesno")) && kinds.contains(&("/token", "password")));
        assert!(kinds.contains(&("/tags", "checkboxes")) && kinds.contains(&("/nested", "group")));
        assert!(kinds.contains(&("/level", "select")) && kinds.contains(&("/comment", "textarea")));
        assert!(
            kinds.contains(&("/nested", "group"))
                && shown
                    .iter()
                    .any(|f| f.fields.iter().any(|g| g.kind == "text"))
        );
        let token = shown.iter().find(|f| f.name == "/token");
        assert_eq!(token.map(|f| f.value.as_str()), Some(""));
    }

    #[test]
    fn an_unanswered_yes_or_no_is_required_at_its_field() {
        let schema = json!({"type": "object", "required": ["approved"], "properties": {"approved": {"type": "boolean"}}});
        let answer = answer(&schema, &Submitted::new());
        assert_eq!(answer, json!({}));
        let found = problems(&schema, &answer).unwrap_or_default();
        assert_eq!(
            found.get("/approved").map(Vec::as_slice),
            Some(&["this is required".to_string()][..])
        );
        let no = super::answer(&schema, &form(&[("/approved", "false")]));
        assert_eq!(no, json!({"approved": false}));
    }

    #[test]
    fn lists_of_records_are_json_blank_text_is_missing_and_other_problems_stay_beside_an_option() {
        let schema = json!({"type": "object", "required": ["who", "people"], "properties": {
            "who": {"type": "string"},
            "people": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}},
            "pins": {"type": "array", "items": {"type": "string", "writeOnly": true}},
            "box": {"oneOf": [
                {"type": "object", "required": ["kind", "path"], "properties": {"kind": {"const": "dir"}, "path": {"type": "string", "minLength": 2}}},
                {"type": "object", "required": ["kind"], "properties": {"kind": {"const": "none"}}}
            ]}
        }});
        let submitted = form(&[
            ("/who", "  "),
            ("/people", r#"[{"name": "ana"}, {}]"#),
            ("/pins", "1234"),
            ("/box#", "0"),
            ("/box#0/path", "x"),
        ]);
        let answer = answer(&schema, &submitted);
        assert_eq!(answer["people"], json!([{"name": "ana"}, {}]));
        assert!(answer.get("who").is_none(), "blank is no answer");
        let found = problems(&schema, &answer).unwrap_or_default();
        assert!(found.contains_key("/who"), "{found:?}");
        assert!(found.contains_key("/people/1/name"), "{found:?}");
        assert!(found.contains_key("/box/path"), "{found:?}");
        assert!(
            !found.contains_key("/box"),
            "explained by the option's own problem: {found:?}"
        );
        let shown = fields(&schema, &submitted, &found);
        let pins = shown.iter().find(|f| f.name == "/pins");
        assert_eq!(
            pins.map(|f| f.value.as_str()),
            Some(""),
            "secrets are not sent back"
        );
        let people = shown.iter().find(|f| f.name == "/people");
        assert_eq!(people.map(|f| f.kind), Some("json"));
    }

    #[test]
    fn problems_land_next_to_their_fields() {
        let schema = json!({
            "type": "object",
            "required": ["count"],
            "properties": {"count": {"type": "integer", "minimum": 1}, "note": {"type": "string", "maxLength": 3}}
        });
        let answer = answer(&schema, &form(&[("/count", "many"), ("/note", "too long")]));
        assert_eq!(answer, json!({"count": "many", "note": "too long"}));
        let found = problems(&schema, &answer).unwrap_or_default();
        assert!(
            found
                .get("/count")
                .is_some_and(|p| p[0].contains("integer")),
            "{found:?}"
        );
        assert!(found.contains_key("/note"), "{found:?}");
        let shown = fields(&schema, &form(&[("/count", "many")]), &found);
        assert!(shown.iter().all(|f| !f.errors.is_empty()));
        assert!(unplaced(&shown, &found).is_empty());
    }

    #[test]
    fn a_one_of_is_a_choice_and_its_chosen_option_is_checked_on_its_own() {
        let schema = json!({"type": "object", "required": ["mailbox"], "properties": {"mailbox": {"oneOf": [
            {"type": "object", "required": ["kind", "path"], "additionalProperties": false,
             "properties": {"kind": {"const": "maildir"}, "path": {"type": "string", "minLength": 1}}},
            {"type": "object", "required": ["kind", "refresh_token"], "additionalProperties": false,
             "properties": {"kind": {"const": "gmail"}, "refresh_token": {"type": "string", "writeOnly": true, "minLength": 8}}}
        ]}}});
        let shown = fields(&schema, &Submitted::new(), &BTreeMap::new());
        let labels: Vec<&str> = shown[0].variants.iter().map(|v| v.label.as_str()).collect();
        assert_eq!(labels, ["Maildir", "Gmail"]);
        let chosen = form(&[("/mailbox#", "0"), ("/mailbox#0/path", "")]);
        let answer = answer(&schema, &chosen);
        assert_eq!(answer, json!({"mailbox": {"kind": "maildir"}}));
        let found = problems(&schema, &answer).unwrap_or_default();
        assert!(found.contains_key("/mailbox/path"), "{found:?}");
        let good = super::answer(
            &schema,
            &form(&[("/mailbox#", "0"), ("/mailbox#0/path", "inbox")]),
        );
        assert!(problems(&schema, &good).is_ok_and(|p| p.is_empty()));
    }
}
