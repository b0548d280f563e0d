//! Identifiers. Everything the runtime creates on an instance's behalf (child instances, messages,
//! timers, user requests) gets an id derived from the creating instance, the version it is moving to
//! and the command's index in that step. A step that is re-run after a crash therefore produces the
//! same ids, so whatever it re-sends is recognised downstream as a duplicate.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest id accepted from outside. DynamoDB keys allow 2048 bytes; child ids grow with depth.
pub const MAX_ID_BYTES: usize = 1024;

/// Longest instance id the runtime derives (a child's id grows with the depth of its tree): what
/// still fits a DynamoDB key (2,048 bytes) with room for the suffixes of the ids derived from it.
pub const MAX_DERIVED_ID_BYTES: usize = 1_900;

/// Longest id of any kind the runtime writes: a derived instance id with the suffix of a message,
/// timer or request id derived from it. What is read back (a stored record, a message) is
/// checked against this.
pub const MAX_STORED_ID_BYTES: usize = MAX_DERIVED_ID_BYTES + 64;

/// The separators of derived ids (`{parent}/{v}.{i}`, `{instance}@{v}.{i}`, `{instance}?{v}.{i}`):
/// a root id may not contain them, so it can never take the shape of a derived one.
pub const RESERVED_ID_CHARS: [char; 3] = ['/', '@', '?'];

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Accepts any non-empty id of at most [`MAX_STORED_ID_BYTES`] bytes without control
            /// characters or characters SQS refuses: any id the runtime may have written (a new
            /// root's id is checked more strictly, see `InstanceId::root`).
            pub fn new(id: impl Into<String>) -> Result<Self> {
                let id = id.into();
                validate(stringify!($name), &id, MAX_STORED_ID_BYTES)?;
                Ok(Self(id))
            }

            /// Checks an id that arrived on the wire (deserialised without validation).
            pub fn check(&self, limit: usize) -> Result<()> {
                validate(stringify!($name), &self.0, limit)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// An atom instance. Roots are named by whoever starts them; children are `{parent}/{version}.{index}`.
    InstanceId
);
string_id!(
    /// A message. Runtime-sent messages are `{sender}@{version}#{index}`.
    MessageId
);
string_id!(
    /// One arming of a timer. Re-arming a timer of the same name gets a new id, so a late firing of
    /// the old one is recognised as stale.
    TimerId
);
string_id!(
    /// A question to the user.
    RequestId
);

fn validate(what: &str, id: &str, limit: usize) -> Result<()> {
    if id.is_empty() {
        return Err(Error::terminal(format!("{what} must not be empty")));
    }
    if id.len() > limit {
        return Err(Error::terminal(format!(
            "{what} is {} bytes, longer than the {limit}-byte limit",
            id.len()
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| c.is_control() || !crate::text::sqs_accepts(*c))
    {
        return Err(Error::terminal(format!(
            "{what} {id:?} contains the character U+{:04X}, which ids may not hold",
            u32::from(c)
        )));
    }
    Ok(())
}

impl InstanceId {
    /// An id for a root instance (one a client starts): a valid id without the separators of
    /// derived ids ([`RESERVED_ID_CHARS`]), so no root can collide with a child's id.
    pub fn root(id: impl Into<String>) -> Result<Self> {
        let id = Self::new(id)?;
        id.check_root()?;
        Ok(id)
    }

    /// Errors unless this id has the shape of a root's (and a root's length).
    pub fn check_root(&self) -> Result<()> {
        self.check(MAX_ID_BYTES)?;
        match self.0.chars().find(|c| RESERVED_ID_CHARS.contains(c)) {
            Some(c) => Err(Error::terminal(format!(
                "root instance id {:?} contains {c:?}; '/', '@' and '?' are reserved for the ids the runtime derives",
                self.0
            ))),
            None => Ok(()),
        }
    }

    /// True when this id is one `parent` derived for a child: `{parent}/{version}.{index}`.
    pub fn is_child_of(&self, parent: &InstanceId) -> bool {
        self.derived_parent() == Some(parent.as_str())
    }

    /// The id of the parent that derived this one, if it has a child's shape.
    pub fn derived_parent(&self) -> Option<&str> {
        let (parent, slot) = self.0.rsplit_once('/')?;
        let (version, index) = slot.split_once('.')?;
        (is_number(version) && is_number(index) && !parent.is_empty()).then_some(parent)
    }
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Where a command sits: the instance that issued it, the version its step produces, its index.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CommandSlot<'a> {
    pub instance: &'a InstanceId,
    pub version: u64,
    pub index: u32,
}

impl CommandSlot<'_> {
    fn derived(&self, sep: char) -> String {
        format!("{}{sep}{}.{}", self.instance.0, self.version, self.index)
    }
    pub fn child(&self) -> InstanceId {
        InstanceId(self.derived('/'))
    }
    pub fn message(&self) -> MessageId {
        MessageId(self.derived('@'))
    }
    pub fn timer(&self) -> TimerId {
        TimerId(self.derived('@'))
    }
    pub fn request(&self) -> RequestId {
        RequestId(self.derived('?'))
    }
}

impl MessageId {
    /// The message that delivers a timer's firing: one per arming, so a duplicate firing dedupes.
    pub fn for_timer(timer: &TimerId) -> Self {
        Self(format!("timer:{}", timer.0))
    }

    /// The message that delivers one firing of a recurring timer: one per scheduled time.
    pub fn for_recurring_firing(timer: &TimerId, at: &str) -> Self {
        Self(format!("timer:{}@{at}", timer.0))
    }

    /// The message that delivers the answer to a request: one per request, so answering twice
    /// (a double click, a retried CLI call) is applied once.
    pub fn for_answer(request: &RequestId) -> Self {
        Self(format!("answer:{}", request.0))
    }

    /// 64-bit FNV-1a fingerprint, what an instance remembers of the messages it applied.
    pub fn fingerprint(&self) -> u64 {
        fnv1a(FNV_OFFSET_BASIS, self.0.as_bytes())
    }
}

/// The standard FNV-1a 64-bit offset basis.
pub const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;

/// 64-bit FNV-1a of `bytes` from `seed` (use [`FNV_OFFSET_BASIS`] for the standard hash): fast,
/// stable across versions and platforms, not for adversarial input.
pub fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_ids() {
        assert!(InstanceId::new("").is_err());
        assert!(InstanceId::new("a\nb").is_err());
        assert!(InstanceId::root("x".repeat(MAX_ID_BYTES + 1)).is_err());
        assert!(InstanceId::root("x".repeat(MAX_ID_BYTES)).is_ok());
        assert!(
            InstanceId::new("x".repeat(MAX_ID_BYTES + 100)).is_ok(),
            "a derived id, longer than a root's, reads back"
        );
        assert!(InstanceId::new("x".repeat(MAX_STORED_ID_BYTES + 1)).is_err());
        let err = InstanceId::new("a\u{fffe}b").unwrap_err();
        assert!(err.reason.contains("U+FFFE"), "{err}");
        assert_eq!(
            InstanceId::new("order-42").map(|i| i.to_string()).ok(),
            Some("order-42".into())
        );
    }

    #[test]
    fn root_ids_cannot_take_the_shape_of_derived_ids() {
        for bad in ["p/3.1", "p@3.1", "p?3.1"] {
            let err = InstanceId::root(bad).unwrap_err();
            assert!(err.reason.contains("reserved"), "{err}");
            assert!(
                InstanceId::new(bad).is_ok(),
                "any id may still be looked up"
            );
        }
        let parent = InstanceId::root("p").unwrap_or_else(|e| panic!("{e}"));
        let child = CommandSlot {
            instance: &parent,
            version: 3,
            index: 1,
        }
        .child();
        assert!(child.is_child_of(&parent));
        for not in ["p/3", "p/x.1", "q/3.1", "p/3.1/4.0", "p3.1"] {
            let id = InstanceId::new(not).unwrap_or_else(|e| panic!("{e}"));
            assert!(!id.is_child_of(&parent), "{not}");
        }
    }

    #[test]
    fn derived_ids_are_deterministic_and_distinct() {
        let parent = InstanceId::new("p").unwrap_or_else(|e| panic!("{e}"));
        let slot = CommandSlot {
            instance: &parent,
            version: 3,
            index: 1,
        };
        assert_eq!(slot.child().as_str(), "p/3.1");
        assert_eq!(slot.message().as_str(), "p@3.1");
        assert_eq!(slot.request().as_str(), "p?3.1");
        assert_eq!(slot.message().fingerprint(), slot.message().fingerprint());
        let other = CommandSlot { index: 2, ..slot };
        assert_ne!(slot.message().fingerprint(), other.message().fingerprint());
    }
}
