//! Events: what reanimates an instance. [`Event`] is the wire form carried by an [`Envelope`];
//! [`AtomEvent`] is what an atom's `step` sees, with its tags typed and runtime bookkeeping removed.
//!
//! [`Envelope`]: crate::envelope::Envelope

use crate::ids::{InstanceId, RequestId, TimerId};
use crate::payload::{Payload, encode_tag};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// Who started an instance, and the tag it will recognise the child by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentLink {
    pub id: InstanceId,
    pub atom: String,
    pub tag: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// An event on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// Creates the instance. Sent by a client for a root, by the parent's runtime for a child.
    Started {
        input: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentLink>,
    },
    /// A child finished. `progress_reports` lets the parent wait for progress that is still in flight.
    ChildCompleted {
        child: InstanceId,
        tag: String,
        output: Value,
        progress_reports: u64,
    },
    /// A child failed or was cancelled.
    ChildFailed {
        child: InstanceId,
        tag: String,
        reason: String,
        cancelled: bool,
        progress_reports: u64,
    },
    /// A child reported progress; `seq` counts from 0 per child.
    ChildProgress {
        child: InstanceId,
        tag: String,
        seq: u64,
        payload: Value,
    },
    /// A timer fired. Ignored unless `timer` is the arming still pending under `name`.
    TimerFired {
        name: String,
        timer: TimerId,
        /// For a recurring timer: the firing's scheduled time (`YYYY-MM-DDTHH:MM:SSZ`), filled in
        /// by the timer service. A firing is applied only if it is later than the last one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fired_for: Option<String>,
    },
    /// The user answered a request.
    UserAnswered { request: RequestId, answer: Value },
    /// A named signal from another instance or from outside.
    Signal {
        name: String,
        #[serde(default)]
        payload: Value,
        /// Set by the runtime on signals between instances: counts from 0 per (sender, target), so
        /// the target applies each one once however late a copy arrives.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        /// With `seq`: the sender's creation time (milliseconds), which tells the lives of a
        /// reused instance id apart.
        #[serde(default, skip_serializing_if = "is_zero")]
        epoch: u64,
    },
    /// Cancel this instance and everything it started.
    CancelRequested {
        #[serde(default)]
        reason: String,
    },
    /// The instance asked to run again at once with a cursor (bounded work per invocation).
    Continue { cursor: Value },
    /// The instance asked for an activity; this message (to itself) runs it. The message id is the
    /// call's id in the instance's `waiting.calls`.
    Call {
        activity: String,
        tag: String,
        input: Value,
    },
}

impl Event {
    /// A signal from outside (a client): no sender, so no sequence; its message id is its guard.
    pub fn signal(name: impl Into<String>, payload: Value) -> Self {
        Event::Signal {
            name: name.into(),
            payload,
            seq: None,
            epoch: 0,
        }
    }

    /// Which one of its kind, for the history: a child's tag, a timer's or signal's name, a
    /// request id, a call's tag.
    pub fn detail(&self) -> String {
        match self {
            Event::ChildCompleted { tag, .. }
            | Event::ChildFailed { tag, .. }
            | Event::ChildProgress { tag, .. }
            | Event::Call { tag, .. } => tag.clone(),
            Event::TimerFired { name, .. } | Event::Signal { name, .. } => name.clone(),
            Event::UserAnswered { request, .. } => request.to_string(),
            Event::CancelRequested { reason } => reason.clone(),
            Event::Started { .. } | Event::Continue { .. } => String::new(),
        }
    }

    /// A short name for logs, spans and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Started { .. } => "started",
            Event::ChildCompleted { .. } => "child_completed",
            Event::ChildFailed { .. } => "child_failed",
            Event::ChildProgress { .. } => "child_progress",
            Event::TimerFired { .. } => "timer_fired",
            Event::UserAnswered { .. } => "user_answered",
            Event::Signal { .. } => "signal",
            Event::CancelRequested { .. } => "cancel_requested",
            Event::Continue { .. } => "continue",
            Event::Call { .. } => "call",
        }
    }
}

/// An event as the runtime hands it to an atom: tags as stored, payloads as JSON. The atom's
/// typed view is [`AtomEvent`] (with [`Failure`]); `atom.rs` converts between the two.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RawEvent {
    Started(Value),
    ChildCompleted {
        child: InstanceId,
        tag: String,
        output: Value,
    },
    ChildFailed {
        child: InstanceId,
        tag: String,
        reason: String,
        cancelled: bool,
    },
    ChildProgress {
        child: InstanceId,
        tag: String,
        seq: u64,
        payload: Value,
    },
    TimerFired {
        name: String,
    },
    UserAnswered {
        request: RequestId,
        kind: String,
        answer: Value,
    },
    RequestExpired {
        request: RequestId,
        kind: String,
    },
    Signal {
        name: String,
        payload: Value,
    },
    CancelRequested {
        reason: String,
    },
    Continue {
        cursor: Value,
    },
    CallCompleted {
        tag: String,
        output: Value,
    },
    CallFailed {
        tag: String,
        reason: String,
    },
}

/// What an atom's [`step`](crate::Atom::step) receives, with its children and calls named by the
/// atom's own tag type `T`. A new instance goes to [`start`](crate::Atom::start) instead, and a
/// child's or call's failure to [`failed`](crate::Atom::failed).
#[derive(Clone, Debug, PartialEq)]
pub enum AtomEvent<T> {
    ChildCompleted {
        child: InstanceId,
        tag: T,
        output: Payload,
    },
    /// Each progress report is delivered once; reports of one child may arrive out of order, but all
    /// of them arrive before that child's completion or failure.
    ChildProgress {
        child: InstanceId,
        tag: T,
        seq: u64,
        payload: Payload,
    },
    TimerFired {
        name: String,
    },
    UserAnswered {
        request: RequestId,
        kind: String,
        answer: Payload,
    },
    /// A request's deadline passed without an answer; the request is closed.
    RequestExpired {
        request: RequestId,
        kind: String,
    },
    Signal {
        name: String,
        payload: Payload,
    },
    /// The instance will end as cancelled whatever this step returns; its children, timers and
    /// requests are cancelled with it. The step may still send messages (e.g. to tidy up).
    CancelRequested {
        reason: String,
    },
    Continue {
        cursor: Payload,
    },
    /// An activity asked for with `ctx.call` finished; its output was journaled before this step.
    CallCompleted {
        tag: T,
        output: Payload,
    },
}

impl<T> AtomEvent<T> {
    pub fn kind(&self) -> &'static str {
        match self {
            AtomEvent::ChildCompleted { .. } => "child_completed",
            AtomEvent::ChildProgress { .. } => "child_progress",
            AtomEvent::TimerFired { .. } => "timer_fired",
            AtomEvent::UserAnswered { .. } => "user_answered",
            AtomEvent::RequestExpired { .. } => "request_expired",
            AtomEvent::Signal { .. } => "signal",
            AtomEvent::CancelRequested { .. } => "cancel_requested",
            AtomEvent::Continue { .. } => "continue",
            AtomEvent::CallCompleted { .. } => "call_completed",
        }
    }
}

/// A child or an activity call that failed, for [`Atom::failed`](crate::Atom::failed). Unless the
/// atom handles it, the failure propagates: the instance fails with [`Failure::reason`].
#[derive(Clone, Debug, PartialEq)]
pub enum Failure<T> {
    /// A child failed, or was cancelled (`cancelled`: by this instance or from outside).
    Child {
        child: InstanceId,
        tag: T,
        reason: String,
        cancelled: bool,
    },
    /// An activity failed terminally (after its own bounded retries).
    Call { tag: T, reason: String },
}

impl<T: Serialize + fmt::Debug> Failure<T> {
    pub fn tag(&self) -> &T {
        match self {
            Failure::Child { tag, .. } | Failure::Call { tag, .. } => tag,
        }
    }

    /// What the instance fails with when the failure propagates: `{tag} failed: {reason}`, the
    /// tag as it is on the wire and in the history (`rank-3`).
    pub fn reason(&self) -> String {
        let tag = encode_tag(self.tag()).unwrap_or_else(|_| format!("{:?}", self.tag()));
        match self {
            Failure::Child {
                reason,
                cancelled: true,
                ..
            } => format!("{tag} was cancelled: {reason}"),
            Failure::Child { reason, .. } | Failure::Call { reason, .. } => {
                format!("{tag} failed: {reason}")
            }
        }
    }
}
