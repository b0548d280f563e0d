//! One error taxonomy for the whole runtime: a failure is either worth retrying (infrastructure,
//! contention) or terminal (bad input, atom logic). Every port and every atom speaks it.

use std::fmt;

/// An error and its sources, on one line (`outer: cause: root cause`): what an SDK's nested
/// errors say, for a reason a person can read.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Whether trying the same thing again can succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Transient: a throttled request, a network error, a version conflict that persisted. The
    /// message goes back to its queue and is delivered again.
    Retryable,
    /// Permanent: malformed input, an unknown atom, an answer that does not validate, a bug in an
    /// atom. Retrying cannot help; the message is rejected with the reason.
    Terminal,
}

/// The runtime's error: a kind and a human-readable reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} error: {reason}", match .kind { ErrorKind::Retryable => "retryable", ErrorKind::Terminal => "terminal" })]
pub struct Error {
    pub kind: ErrorKind,
    pub reason: String,
}

impl Error {
    pub fn retryable(reason: impl fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Retryable,
            reason: reason.to_string(),
        }
    }

    pub fn terminal(reason: impl fmt::Display) -> Self {
        Self {
            kind: ErrorKind::Terminal,
            reason: reason.to_string(),
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Retryable
    }

    /// Prefixes the reason with where it happened, keeping the kind.
    pub fn context(self, what: impl fmt::Display) -> Self {
        Self {
            kind: self.kind,
            reason: format!("{what}: {}", self.reason),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
