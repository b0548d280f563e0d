//! Activities: the work a step cannot do itself because it talks to the world (an LLM, a
//! mailbox, an object store). A step asks for one with [`Context::call`]; the runtime runs it in a
//! later invocation, **journals its outcome in the instance record with a conditional write before
//! the step that consumes it runs**, and then delivers it as `CallCompleted` or `CallFailed`. A
//! redelivered or conflicting message finds the journaled outcome and never runs the activity
//! again once its outcome is recorded.
//!
//! [`Context::call`]: crate::Context::call

use crate::error::Result;
use crate::ids::MessageId;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// A boxed future, as activities return them (they are stored as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long an activity may run unless it says otherwise ([`Activity::time_limit`]).
pub const DEFAULT_ACTIVITY_TIME_LIMIT: Duration = Duration::from_secs(120);

/// How many deliveries of a call message may end in a retryable failure of its activity before
/// the failure is journaled as `CallFailed` for the atom to decide (under the queue's redrive
/// count, so the call never reaches the dead-letter queue for it).
pub const MAX_ACTIVITY_TRIES: u32 = 3;

/// One run of an activity for one call.
///
/// **At least once.** An activity's side effect may happen more than once for one call: when
/// the process dies after the activity returns and before its outcome is journaled, and when two
/// copies of the call message run at the same time (at-least-once delivery). Only its *outcome*
/// is exactly once: the first journaled outcome is the one the step sees, and a call whose outcome
/// is journaled never runs again. An activity with a side effect that must not repeat passes
/// [`CallInfo::id`] to the service it calls as an idempotency key.
#[derive(Clone, Debug)]
pub struct CallInfo {
    /// The call's id, the same on every run of this call: an idempotency key.
    pub id: MessageId,
    /// Which delivery of the call message this is (1 on the first).
    pub attempt: u32,
    /// How long this run may take; the runtime abandons it after that (a retryable failure).
    pub time_limit: Duration,
}

/// One kind of work with the outside world. A retryable error hands the message back to its queue
/// (the activity runs again later, at most [`MAX_ACTIVITY_TRIES`] times); a terminal one is
/// journaled and reaches the step as `CallFailed` with the reason.
pub trait Activity: Send + Sync {
    fn run<'a>(&'a self, input: Value, call: &'a CallInfo) -> BoxFuture<'a, Result<Value>>;

    /// The longest one run may take.
    fn time_limit(&self) -> Duration {
        DEFAULT_ACTIVITY_TIME_LIMIT
    }
}

/// The activities a runtime can run, by name.
#[derive(Clone, Default)]
pub struct Activities {
    by_name: HashMap<String, Arc<dyn Activity>>,
}

impl fmt::Debug for Activities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Activities")
            .field("names", &self.names())
            .finish()
    }
}

impl Activities {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the activity `name`.
    pub fn with(mut self, name: impl Into<String>, activity: Arc<dyn Activity>) -> Self {
        self.by_name.insert(name.into(), activity);
        self
    }

    /// Adds every activity of `other`.
    pub fn merge(mut self, other: Activities) -> Self {
        self.by_name.extend(other.by_name);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Activity>> {
        self.by_name.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}
