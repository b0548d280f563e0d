//! What arrives with an event, typed at the atom's edge: [`Payload`] (a child's output, an
//! activity's output, an answer, a signal's payload) decodes in one place with one terminal error,
//! and tags ([`encode_tag`], [`decode_tag`]) let an atom name its children and calls with its own
//! serde enum.

use crate::atom::Atom;
use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::any::type_name;
use std::fmt;
use std::ops::Deref;

/// A JSON value from outside the atom's own types. Decoding it is checked: a value of the wrong
/// shape is a terminal error naming the type expected, never a panic.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Payload(Value);

impl Payload {
    pub fn new(value: Value) -> Self {
        Self(value)
    }

    /// Decodes into `T`; a mismatch is terminal (no redelivery will change it).
    pub fn decode<T: DeserializeOwned>(self) -> Result<T> {
        serde_json::from_value(self.0).map_err(|e| {
            Error::terminal(format!("unexpected payload for {}: {e}", type_name::<T>()))
        })
    }

    /// A completed child's output, as the child atom `A` declares it.
    pub fn output_of<A: Atom>(self) -> Result<A::Output> {
        serde_json::from_value(self.0)
            .map_err(|e| Error::terminal(format!("unexpected output of atom {}: {e}", A::TYPE)))
    }

    /// A completed call's output, as the activity `C` declares it.
    pub fn output_of_call<C: CallType>(self) -> Result<C::Output> {
        serde_json::from_value(self.0).map_err(|e| {
            Error::terminal(format!(
                "unexpected output of activity {}: {e}",
                C::ACTIVITY
            ))
        })
    }

    pub fn into_value(self) -> Value {
        self.0
    }
}

impl Deref for Payload {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.0
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Self(value)
    }
}

/// An activity's declared types: `ctx.call::<C>(tag, &input)` checks the input at compile time
/// and [`Payload::output_of_call`] decodes its output.
pub trait CallType {
    /// The name it is registered under in the runtime's [`Activities`](crate::Activities).
    const ACTIVITY: &'static str;
    type Input: Serialize;
    type Output: DeserializeOwned;
}

/// A tag as stored in the record and carried by messages. A string stays as it is; a variant
/// with one scalar (`Rank(3)`, `Digest("2026-01-05")`) becomes `rank-3` / `digest-2026-01-05`,
/// the shape tags had before they were typed, so instances started by older code keep working;
/// anything else is compact JSON.
pub fn encode_tag(tag: &impl Serialize) -> Result<String> {
    let value = serde_json::to_value(tag)
        .map_err(|e| Error::terminal(format!("cannot encode a tag: {e}")))?;
    Ok(tag_text(&value))
}

/// [`encode_tag`] of a tag already serialised to `value`.
pub fn tag_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Object(map) if map.len() == 1 => match map.iter().next() {
            Some((name, Value::String(s))) => format!("{name}-{s}"),
            Some((name, Value::Number(n))) => format!("{name}-{n}"),
            _ => value.to_string(),
        },
        other => other.to_string(),
    }
}

/// Checks that `text`, the encoding of the tag `value`, decodes as `T` back to the same value:
/// run when a child or call is asked for, so a tag the atom could not recognise later (two
/// variants whose encodings collide, a value `T` cannot hold) fails the step that made it, not
/// the step that receives the child's result.
pub fn check_tag<T: Serialize + DeserializeOwned>(text: &str, value: &Value) -> Result<()> {
    let back = decode_tag::<T>(text)
        .and_then(|tag| serde_json::to_value(tag).map_err(|e| Error::terminal(e.to_string())));
    match back {
        Ok(back) if &back == value => Ok(()),
        _ => Err(Error::terminal(format!(
            "the tag {value} (on the wire {text:?}) does not come back as the same {}: give the variants encodings that differ",
            type_name::<T>()
        ))),
    }
}

/// The tag `T` that [`encode_tag`] encoded as `text`.
pub fn decode_tag<T: DeserializeOwned>(text: &str) -> Result<T> {
    let attempt = |value: Value| serde_json::from_value::<T>(value).ok();
    let found = attempt(Value::String(text.to_string()))
        .or_else(|| {
            text.match_indices('-').find_map(|(at, _)| {
                let (name, rest) = (&text[..at], &text[at + 1..]);
                let variant =
                    |scalar| attempt(Value::Object(Map::from_iter([(name.to_string(), scalar)])));
                serde_json::from_str::<serde_json::Number>(rest)
                    .ok()
                    .filter(|n| n.to_string() == rest)
                    .and_then(|n| variant(Value::Number(n)))
                    .or_else(|| variant(Value::String(rest.to_string())))
            })
        })
        .or_else(|| serde_json::from_str::<Value>(text).ok().and_then(attempt));
    found.ok_or_else(|| {
        Error::terminal(format!(
            "tag {text:?} is not one of this atom's tags ({})",
            type_name::<T>()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    enum Tag {
        Fetch,
        Rank(u64),
        Digest(String),
        Pair { a: u32, b: u32 },
    }

    #[test]
    fn tags_round_trip_in_the_shape_untyped_tags_had() {
        for (tag, text) in [
            (Tag::Fetch, "fetch"),
            (Tag::Rank(3), "rank-3"),
            (Tag::Digest("2026-01-05".into()), "digest-2026-01-05"),
            (Tag::Digest("007".into()), "digest-007"),
            (Tag::Digest("3".into()), "digest-3"),
            (Tag::Pair { a: 1, b: 2 }, r#"{"pair":{"a":1,"b":2}}"#),
        ] {
            assert_eq!(encode_tag(&tag).unwrap(), text);
            assert_eq!(decode_tag::<Tag>(text).unwrap(), tag, "{text}");
        }
        assert_eq!(decode_tag::<String>("rank-3").unwrap(), "rank-3");
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    enum Colliding {
        Digest(String),
        DigestRetry(u64),
        Offset(i64),
    }

    #[test]
    fn a_tag_that_would_come_back_as_another_is_refused_where_it_is_made() {
        let check = |tag: &Colliding| {
            let text = encode_tag(tag).unwrap();
            check_tag::<Colliding>(&text, &serde_json::to_value(tag).unwrap())
        };
        assert!(check(&Colliding::Digest("2026-01-05".into())).is_ok());
        assert!(
            check(&Colliding::Offset(-3)).is_ok(),
            "negative numbers round-trip"
        );
        let error = check(&Colliding::DigestRetry(3)).unwrap_err();
        assert!(!error.is_retryable());
        assert!(error.reason.contains("digest-retry-3"), "{}", error.reason);
    }

    #[test]
    fn an_unknown_tag_is_a_terminal_error() {
        let error = decode_tag::<Tag>("rank-x").unwrap_err();
        assert!(!error.is_retryable());
        assert!(error.reason.contains("rank-x"), "{}", error.reason);
    }

    #[test]
    fn a_payload_of_the_wrong_shape_is_a_terminal_error_naming_the_type() {
        let error = Payload::new(serde_json::json!("text"))
            .decode::<u32>()
            .unwrap_err();
        assert!(!error.is_retryable());
        assert!(error.reason.contains("u32"), "{}", error.reason);
    }
}
