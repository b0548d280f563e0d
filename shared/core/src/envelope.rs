//! The message envelope: what travels on a queue between instances.

use crate::error::{Error, Result};
use crate::event::Event;
use crate::ids::{InstanceId, MessageId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The envelope format this runtime writes. Readers accept this version only and reject others
/// with a clear reason rather than guessing.
pub const ENVELOPE_SCHEMA_VERSION: u32 = 1;

/// SQS accepts bodies up to 256 KiB (262,144 bytes, attributes included); keep a margin for them.
pub const MAX_MESSAGE_BYTES: usize = 250_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`ENVELOPE_SCHEMA_VERSION`] when written by this runtime.
    pub schema: u32,
    pub id: MessageId,
    /// The instance this event is for.
    pub target: InstanceId,
    /// The target's atom type; it also routes the message to that atom's queue.
    pub atom: String,
    /// The sending instance; absent for messages from outside (clients, the user, the scheduler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<InstanceId>,
    pub event: Event,
    /// How many times this message was put back on its queue with a delay rather than failed
    /// (its instance was too contended, or a timer arrived early). Bounded by the runtime.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferrals: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Envelope {
    pub fn new(id: MessageId, target: InstanceId, atom: impl Into<String>, event: Event) -> Self {
        Self {
            schema: ENVELOPE_SCHEMA_VERSION,
            id,
            target,
            atom: atom.into(),
            sender: None,
            event,
            deferrals: 0,
        }
    }

    /// A message that starts a root instance.
    pub fn start(id: MessageId, target: InstanceId, atom: impl Into<String>, input: Value) -> Self {
        Self::new(
            id,
            target,
            atom,
            Event::Started {
                input,
                parent: None,
            },
        )
    }

    pub fn from_sender(mut self, sender: &InstanceId) -> Self {
        self.sender = Some(sender.clone());
        self
    }

    /// Parses a queue body. Anything that is not a valid envelope of the supported schema, or
    /// whose ids are not valid, is a terminal error naming what is wrong.
    pub fn from_json(body: &str) -> Result<Self> {
        #[derive(Deserialize)]
        struct SchemaOnly {
            schema: Option<u32>,
        }
        let probe: SchemaOnly = serde_json::from_str(body)
            .map_err(|e| Error::terminal(format!("message body is not a JSON envelope: {e}")))?;
        match probe.schema {
            Some(ENVELOPE_SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(Error::terminal(format!(
                    "envelope schema {other} is not supported (this runtime reads schema {ENVELOPE_SCHEMA_VERSION})"
                )));
            }
            None => return Err(Error::terminal("envelope has no \"schema\" field")),
        }
        let envelope: Self = serde_json::from_str(body)
            .map_err(|e| Error::terminal(format!("malformed envelope: {e}")))?;
        envelope.check_ids()?;
        Ok(envelope)
    }

    /// Checks the ids of an envelope that arrived from outside (serde does not validate them).
    pub fn check_ids(&self) -> Result<()> {
        use crate::ids::{MAX_DERIVED_ID_BYTES, MAX_STORED_ID_BYTES};
        self.id.check(MAX_STORED_ID_BYTES)?;
        self.target.check(MAX_DERIVED_ID_BYTES)?;
        if let Some(sender) = &self.sender {
            sender.check(MAX_DERIVED_ID_BYTES)?;
        }
        Ok(())
    }

    /// The JSON body of this envelope: characters SQS refuses are escaped, so it can always be
    /// sent (see [`crate::text`]).
    pub fn to_json(&self) -> String {
        crate::text::to_json(self)
    }

    /// The size of [`Envelope::to_json`] without building the string.
    pub fn encoded_len(&self) -> usize {
        encoded_len(self)
    }

    /// Errors when the encoded envelope would not fit in one SQS message.
    pub fn check_size(&self) -> Result<()> {
        let len = self.encoded_len();
        if len > MAX_MESSAGE_BYTES {
            return Err(Error::terminal(format!(
                "{} message to {} would be {len} bytes, over the {MAX_MESSAGE_BYTES}-byte message limit",
                self.event.kind(),
                self.target
            )));
        }
        Ok(())
    }
}

/// Counts the bytes of a value's JSON encoding, as it is sent ([`crate::text::to_json`]).
pub(crate) fn encoded_len(value: &impl Serialize) -> usize {
    crate::text::json_len(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id<T>(r: Result<T>) -> T {
        r.unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn round_trips_and_rejects_bad_bodies() {
        let env = Envelope::start(
            id(MessageId::new("m1")),
            id(InstanceId::new("i1")),
            "countdown",
            json!({"from": 3}),
        );
        let body = env.to_json();
        assert_eq!(body.len(), env.encoded_len());
        assert_eq!(id(Envelope::from_json(&body)), env);

        let err = Envelope::from_json("not json").unwrap_err();
        assert!(
            !err.is_retryable() && err.reason.contains("not a JSON envelope"),
            "{err}"
        );
        let err = Envelope::from_json(&body.replace("\"schema\":1", "\"schema\":9")).unwrap_err();
        assert!(err.reason.contains("schema 9 is not supported"), "{err}");
        let err = Envelope::from_json(r#"{"schema":1,"id":"m"}"#).unwrap_err();
        assert!(err.reason.contains("malformed envelope"), "{err}");
    }

    #[test]
    fn oversized_message_is_a_terminal_error() {
        let big = "x".repeat(MAX_MESSAGE_BYTES);
        let env = Envelope::start(
            id(MessageId::new("m1")),
            id(InstanceId::new("i1")),
            "a",
            json!(big),
        );
        let err = env.check_size().unwrap_err();
        assert!(
            !err.is_retryable() && err.reason.contains("over the 250000-byte message limit"),
            "{err}"
        );
    }
}
