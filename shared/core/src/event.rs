//! Events: what reanimates an instance. [`Event`] is the wire form carried by an [`Envelope`];
//! [`AtomEvent`] is what an atom's `step` sees, with its input typed and runtime bookkeeping removed.
//!
//! [`Envelope`]: crate::envelope::Envelope

use crate::ids::{InstanceId, RequestId, TimerId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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

/// What an atom's `step` receives.
#[derive(Clone, Debug, PartialEq)]
pub enum AtomEvent<I> {
    Started(I),
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
    /// Each progress report is delivered once; reports of one child may arrive out of order, but all
    /// of them arrive before that child's completion or failure.
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
    /// A request's deadline passed without an answer; the request is closed.
    RequestExpired {
        request: RequestId,
        kind: String,
    },
    Signal {
        name: String,
        payload: Value,
    },
    /// The instance will end as cancelled whatever this step returns; its children, timers and
    /// requests are cancelled with it. The step may still send messages (e.g. to tidy up).
    CancelRequested {
        reason: String,
    },
    Continue {
        cursor: Value,
    },
    /// An activity asked for with `ctx.call` finished; its output was journaled before this step.
    CallCompleted {
        tag: String,
        output: Value,
    },
    /// An activity failed terminally (after its own bounded retries).
    CallFailed {
        tag: String,
        reason: String,
    },
}

impl<I> AtomEvent<I> {
    pub fn kind(&self) -> &'static str {
        match self {
            AtomEvent::Started(_) => "started",
            AtomEvent::ChildCompleted { .. } => "child_completed",
            AtomEvent::ChildFailed { .. } => "child_failed",
            AtomEvent::ChildProgress { .. } => "child_progress",
            AtomEvent::TimerFired { .. } => "timer_fired",
            AtomEvent::UserAnswered { .. } => "user_answered",
            AtomEvent::RequestExpired { .. } => "request_expired",
            AtomEvent::Signal { .. } => "signal",
            AtomEvent::CancelRequested { .. } => "cancel_requested",
            AtomEvent::Continue { .. } => "continue",
            AtomEvent::CallCompleted { .. } => "call_completed",
            AtomEvent::CallFailed { .. } => "call_failed",
        }
    }

    /// Converts the input, leaving every other event as it is.
    pub fn try_map_input<J, E>(self, f: impl FnOnce(I) -> Result<J, E>) -> Result<AtomEvent<J>, E> {
        Ok(match self {
            AtomEvent::Started(i) => AtomEvent::Started(f(i)?),
            AtomEvent::ChildCompleted { child, tag, output } => {
                AtomEvent::ChildCompleted { child, tag, output }
            }
            AtomEvent::ChildFailed {
                child,
                tag,
                reason,
                cancelled,
            } => AtomEvent::ChildFailed {
                child,
                tag,
                reason,
                cancelled,
            },
            AtomEvent::ChildProgress {
                child,
                tag,
                seq,
                payload,
            } => AtomEvent::ChildProgress {
                child,
                tag,
                seq,
                payload,
            },
            AtomEvent::TimerFired { name } => AtomEvent::TimerFired { name },
            AtomEvent::UserAnswered {
                request,
                kind,
                answer,
            } => AtomEvent::UserAnswered {
                request,
                kind,
                answer,
            },
            AtomEvent::RequestExpired { request, kind } => {
                AtomEvent::RequestExpired { request, kind }
            }
            AtomEvent::Signal { name, payload } => AtomEvent::Signal { name, payload },
            AtomEvent::CancelRequested { reason } => AtomEvent::CancelRequested { reason },
            AtomEvent::Continue { cursor } => AtomEvent::Continue { cursor },
            AtomEvent::CallCompleted { tag, output } => AtomEvent::CallCompleted { tag, output },
            AtomEvent::CallFailed { tag, reason } => AtomEvent::CallFailed { tag, reason },
        })
    }
}
