//! Secrets in users' answers. A property of an answer's JSON Schema marked `"writeOnly": true`
//! (an OAuth token, a password) is stored in a [`SecretStore`] by the client that answers, and
//! the instance, the inbox and every message get only a reference to it. The value never
//! appears in an instance's state, a queue, or a log.

use crate::activity::BoxFuture;
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Where secret values live (AWS Secrets Manager on AWS). Dyn-compatible: activities hold one.
pub trait SecretStore: Send + Sync {
    /// Stores `value` under `name`, replacing any earlier value; returns a reference to it.
    fn put<'a>(&'a self, name: &'a str, value: &'a str) -> BoxFuture<'a, Result<String>>;
    /// The value a reference points to.
    fn get<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<String>>;
}

/// Secret values found in an answer: (JSON pointer, value), in document order.
pub fn secret_fields(schema: &Value, answer: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    collect(schema, answer, String::new(), &mut found);
    found.sort();
    found.dedup();
    found
}

fn collect(schema: &Value, value: &Value, at: String, found: &mut Vec<(String, String)>) {
    if schema.get("writeOnly") == Some(&Value::Bool(true))
        && let Some(text) = value.as_str()
    {
        found.push((at.clone(), text.to_string()));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for alternative in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            collect(alternative, value, at.clone(), found);
        }
    }
    if let (Some(properties), Some(object)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object(),
    ) {
        for (name, sub) in properties {
            if let Some(v) = object.get(name) {
                collect(sub, v, format!("{at}/{name}"), found);
            }
        }
    }
}

/// Replaces every secret field of `answer` by a reference from `store`. Names are derived from
/// `scope` (the request id), the field's pointer and a fingerprint of the value: the same answer
/// sent twice (a retry) makes one secret, and a different answer that loses the race for the
/// request cannot overwrite the secret of the answer that won.
pub async fn redact(
    store: &dyn SecretStore,
    scope: &str,
    schema: &Value,
    mut answer: Value,
) -> Result<Value> {
    for (pointer, secret) in secret_fields(schema, &answer) {
        let fingerprint = crate::ids::fnv1a(crate::ids::FNV_OFFSET_BASIS, secret.as_bytes());
        let name = format!("reanimate/{scope}{pointer}/{fingerprint:016x}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "/_+=.@-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect::<String>();
        let reference = store.put(&name, &secret).await?;
        match answer.pointer_mut(&pointer) {
            Some(slot) => *slot = Value::String(reference),
            None => return Err(Error::terminal(format!("secret field {pointer} vanished"))),
        }
    }
    Ok(answer)
}

/// Secrets in memory (tests, the in-memory demo). References are `memory:{name}`.
#[derive(Clone, Debug, Default)]
pub struct MemorySecrets(Arc<Mutex<BTreeMap<String, String>>>);

impl MemorySecrets {
    /// Every stored value (for tests that check where a secret went).
    pub fn values(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

impl SecretStore for MemorySecrets {
    fn put<'a>(&'a self, name: &'a str, value: &'a str) -> BoxFuture<'a, Result<String>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), value.to_string());
        Box::pin(async move { Ok(format!("memory:{name}")) })
    }

    fn get<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<String>> {
        let value = reference.strip_prefix("memory:").and_then(|name| {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(name)
                .cloned()
        });
        Box::pin(
            async move { value.ok_or_else(|| Error::terminal(format!("no secret {reference}"))) },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_write_only_fields_through_nesting_and_alternatives() {
        let schema = json!({"type": "object", "properties": {"mailbox": {"oneOf": [
            {"type": "object", "properties": {"kind": {"const": "maildir"}, "path": {"type": "string"}}},
            {"type": "object", "properties": {"kind": {"const": "gmail"}, "access_token": {"type": "string", "writeOnly": true}}}
        ]}}});
        let answer = json!({"mailbox": {"kind": "gmail", "access_token": "ya29.secret"}});
        assert_eq!(
            secret_fields(&schema, &answer),
            [(
                "/mailbox/access_token".to_string(),
                "ya29.secret".to_string()
            )]
        );
        let store = MemorySecrets::default();
        let redacted = crate::sim::block_on(redact(&store, "r1", &schema, answer))
            .unwrap_or_else(|e| panic!("{e}"));
        let fingerprint = crate::ids::fnv1a(crate::ids::FNV_OFFSET_BASIS, b"ya29.secret");
        assert_eq!(
            redacted,
            json!({"mailbox": {"kind": "gmail", "access_token": format!("memory:reanimate/r1/mailbox/access_token/{fingerprint:016x}")}})
        );
        assert_eq!(store.values(), ["ya29.secret"]);
        assert!(
            secret_fields(
                &schema,
                &json!({"mailbox": {"kind": "maildir", "path": "x"}})
            )
            .is_empty()
        );
    }
}
