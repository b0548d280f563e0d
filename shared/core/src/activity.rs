//! Activities: the work a step cannot do itself because it talks to the world (an LLM, a
//! mailbox, an object store). A step asks for one with [`Context::call`]; the runtime runs it in a
//! later invocation, **journals its outcome in the instance record with a conditional write before
//! the step that consumes it runs**, and then delivers it as `CallCompleted` or `CallFailed`. A
//! redelivered or conflicting message finds the journaled outcome and never runs the activity
//! again once its outcome is recorded.
//!
//! [`Context::call`]: crate::Context::call

use crate::error::Result;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future, as activities return them (they are stored as trait objects).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One kind of work with the outside world. A retryable error hands the message back to its queue
/// (the activity runs again later); a terminal one is journaled and reaches the step as
/// `CallFailed` with the reason.
pub trait Activity: Send + Sync {
    fn run<'a>(&'a self, input: Value) -> BoxFuture<'a, Result<Value>>;
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
