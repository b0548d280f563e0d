//! JSON Schema checks for user answers and for the schemas atoms declare.

use crate::error::{Error, Result};
use serde_json::Value;

/// Errors unless `schema` is a usable JSON Schema (an atom bug if not).
pub fn check_schema(schema: &Value) -> Result<()> {
    jsonschema::validator_for(schema)
        .map(|_| ())
        .map_err(|e| Error::terminal(format!("invalid JSON Schema for the answer: {e}")))
}

/// What is wrong with `answer` under `schema`: (JSON pointer, message) per violation, none if it
/// is valid. The web inbox shows each next to its field; [`validate_answer`] joins them.
pub fn answer_problems(schema: &Value, answer: &Value) -> Result<Vec<(String, String)>> {
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| Error::terminal(format!("the request's JSON Schema is invalid: {e}")))?;
    Ok(validator
        .iter_errors(answer)
        .map(|err| {
            let at = err.instance_path().to_string();
            // A missing property is the property's problem: point at where it should be.
            match err.kind() {
                jsonschema::error::ValidationErrorKind::Required {
                    property: Value::String(name),
                } => (
                    format!("{at}/{}", name.replace('~', "~0").replace('/', "~1")),
                    "this is required".to_string(),
                ),
                // Masked: the message never repeats the value, which may be a secret someone
                // typed into a `writeOnly` field ("value is shorter than 8 characters").
                _ => (at, err.masked().to_string()),
            }
        })
        .collect())
}

/// Validates `answer` against `schema`; the error lists every violation with its JSON pointer.
pub fn validate_answer(schema: &Value, answer: &Value) -> Result<()> {
    let problems: Vec<String> = answer_problems(schema, answer)?
        .into_iter()
        .map(|(at, problem)| {
            if at.is_empty() {
                problem
            } else {
                format!("at {at}: {problem}")
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::terminal(format!(
            "answer does not match the request's schema: {}",
            problems.join("; ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn explains_what_is_wrong() {
        let schema = json!({"type": "object", "required": ["approved"], "properties": {"approved": {"type": "boolean"}}});
        assert!(validate_answer(&schema, &json!({"approved": true})).is_ok());
        let err = validate_answer(&schema, &json!({"approved": "yes"})).unwrap_err();
        assert!(!err.is_retryable());
        assert!(
            err.reason.contains("/approved") && err.reason.contains("boolean"),
            "{err}"
        );
        let err = validate_answer(&schema, &json!({})).unwrap_err();
        assert!(err.reason.contains("approved"), "{err}");
        assert!(check_schema(&json!({"type": "no-such-type"})).is_err());
    }
}
