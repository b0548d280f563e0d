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
    /// Deletes the secret a reference points to, at once (a user who disconnects); deleting one
    /// that is gone is not an error.
    fn delete<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<()>>;
    /// The stack this store's secrets belong to (`reanimate/{namespace}/…`); empty for none.
    fn namespace(&self) -> &str {
        ""
    }
}

/// The instance whose user a secret belongs to: secrets are named
/// `reanimate/{namespace}/{instance}/{request}/…` after the request they answered (see
/// [`redact`]), so the name says whose they are. `None` for a reference of another shape.
pub fn secret_owner<'a>(reference: &'a str, namespace: &str) -> Option<&'a str> {
    // An ARN (`arn:aws:secretsmanager:…:secret:NAME-AbCdEf`) or `memory:NAME`.
    let name = reference
        .split_once(":secret:")
        .map(|(_, name)| name)
        .or_else(|| reference.strip_prefix("memory:"))?;
    let rest = name.strip_prefix("reanimate/")?;
    let rest = if namespace.is_empty() {
        rest
    } else {
        rest.strip_prefix(namespace)?.strip_prefix('/')?
    };
    rest.split_once('/').map(|(owner, _)| owner)
}

/// `text` as one segment of a secret's name, which Secrets Manager limits to letters, digits and
/// `/_+=.@-`: every other byte (and `+`, `/`) becomes `+XX`, so two different texts never share
/// a name (`assistant sam` is `assistant+20sam`, not `assistant-sam`).
pub fn name_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"_=.@-".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("+{byte:02X}"));
        }
    }
    out
}

/// The root instance of an activity's caller, from its call id (`{instance}@{version}.{index}`,
/// the instance `{root}/…` for a child): the user whose secrets the call may use.
pub fn caller_root(call_id: &str) -> Option<&str> {
    let (instance, _) = call_id.rsplit_once('@')?;
    instance.split('/').next().filter(|root| !root.is_empty())
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

/// Replaces every secret field of `answer` by a reference from `store`. Names are
/// `reanimate/{namespace}/{instance}/{request}{pointer}/{fingerprint}`: scoped by stack
/// ([`SecretStore::namespace`]) and by the instance that asked (whose user the secret belongs to, see
/// [`secret_owner`]), from `scope` (the request id), the field's pointer and a fingerprint of the
/// value: the same answer
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
        // A request id is `{instance}?{version}.{index}`: the `?` becomes a path separator, so
        // the instance is a segment of its own.
        let namespace = match store.namespace() {
            "" => String::new(),
            namespace => format!("{namespace}/"),
        };
        let segments = |text: &str, sep: char| -> String {
            text.split(sep)
                .map(name_segment)
                .collect::<Vec<_>>()
                .join("/")
        };
        let name = format!(
            "reanimate/{namespace}{}{}/{fingerprint:016x}",
            segments(scope, '?'),
            segments(&pointer, '/')
        );
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

    fn delete<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<()>> {
        if let Some(name) = reference.strip_prefix("memory:") {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
        }
        Box::pin(async { Ok(()) })
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
        let redacted = crate::sim::block_on(redact(&store, "assistant-sam?3.1", &schema, answer))
            .unwrap_or_else(|e| panic!("{e}"));
        let fingerprint = crate::ids::fnv1a(crate::ids::FNV_OFFSET_BASIS, b"ya29.secret");
        let reference =
            format!("memory:reanimate/assistant-sam/3.1/mailbox/access_token/{fingerprint:016x}");
        assert_eq!(
            redacted,
            json!({"mailbox": {"kind": "gmail", "access_token": reference}})
        );
        // The name says whose it is; a call from that user's instances may use it, no other.
        assert_eq!(secret_owner(&reference, ""), Some("assistant-sam"));
        assert_eq!(
            secret_owner(
                "arn:aws:secretsmanager:us-east-1:1:secret:reanimate/prod/assistant-ana/3.1/x-AbCdEf",
                "prod"
            ),
            Some("assistant-ana")
        );
        assert_eq!(
            secret_owner(
                "arn:aws:secretsmanager:us-east-1:1:secret:reanimate/dev/assistant-ana/3.1/x",
                "prod"
            ),
            None
        );
        assert_eq!(
            secret_owner("arn:aws:secretsmanager:us-east-1:1:secret:other/thing", ""),
            None
        );
        assert_eq!(
            caller_root("assistant-sam/analysis-1/fetch@4.0"),
            Some("assistant-sam")
        );
        assert_eq!(caller_root("assistant-sam@2.1"), Some("assistant-sam"));
        // Names are injective: a look-alike user gets a name of its own.
        assert_eq!(name_segment("assistant sam"), "assistant+20sam");
        assert_ne!(name_segment("assistant sam"), name_segment("assistant-sam"));
        assert_eq!(name_segment("a+b/c"), "a+2Bb+2Fc");
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
