//! Deciding what one message does to one instance. Pure: the same inputs give the same plan.
//!
//! The order of checks: an instance that does not exist (only a start creates one; a cancel leaves
//! a tombstone), a message from outside already applied, the wrong atom type, a finished instance;
//! then the message goes to its capability's gate, which checks it against what the instance
//! waits for (and who may send it) before the atom's step runs.

use super::draft::{Draft, Gate};
use super::{Disposition, Known, cancellation, children, timers};
use crate::atom::{DynAtom, TypedState};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::{Event, RawEvent};
use crate::record::{Effect, InstanceRecord};
use crate::time::Timestamp;
use std::time::Duration;

pub(super) enum Plan {
    /// Nothing is saved; these effects are sent.
    Drop {
        disposition: Disposition,
        effects: Vec<Effect>,
    },
    /// The message goes back on its queue for `delay`.
    Defer { delay: Duration, reason: String },
    /// The next record, its state decoded (for the warm memory), and its size bound.
    Save {
        next: Box<InstanceRecord>,
        decoded: Option<TypedState>,
        size: usize,
    },
    /// The new record would not fit in the store; the instance must fail instead.
    TooLarge { reason: String },
}

pub(super) fn plan(
    atom: &dyn DynAtom,
    known: Known<'_>,
    current: Option<InstanceRecord>,
    cached: Option<TypedState>,
    env: &Envelope,
    now: Timestamp,
) -> Result<Plan> {
    let Some(current) = current else {
        return plan_absent(atom, known, env, now);
    };
    if current.applied.contains(&env.id) {
        return Ok(Plan::Drop {
            disposition: Disposition::Duplicate,
            effects: Vec::new(),
        });
    }
    if current.atom != env.atom {
        return Err(Error::terminal(format!(
            "message addressed to atom {:?} but instance {} is a {:?}",
            env.atom, current.id, current.atom
        )));
    }
    if current.status.is_finished() {
        return Ok(plan_finished(current, env, now));
    }

    let mut draft = Draft::for_message(atom, current, now, known, env);
    draft.decoded = cached;
    let gate = match &env.event {
        Event::Started { .. } => Gate::ignore("instance already started"),
        Event::ChildCompleted { .. } | Event::ChildFailed { .. } => draft.gate_child_finish(env)?,
        Event::ChildProgress { .. } => draft.gate_child_progress(env)?,
        Event::TimerFired { .. } => draft.gate_timer(env)?,
        Event::UserAnswered { .. } => draft.gate_answer(env)?,
        Event::Signal { .. } => draft.gate_signal(env)?,
        Event::CancelRequested { .. } => draft.gate_cancel(env)?,
        Event::Call { .. } => draft.gate_call(env)?,
        Event::Continue { .. } => draft.gate_continue(env)?,
    };
    Ok(match gate {
        Gate::Apply => draft.into_plan(),
        Gate::Drop(disposition, effects) => Plan::Drop {
            disposition,
            effects,
        },
        Gate::Defer(delay, reason) => Plan::Defer { delay, reason },
    })
}

/// A message for an instance that has no record.
fn plan_absent(
    atom: &dyn DynAtom,
    known: Known<'_>,
    env: &Envelope,
    now: Timestamp,
) -> Result<Plan> {
    match &env.event {
        Event::Started { input, parent } => {
            children::check_start(env, parent.as_ref())?;
            let fresh =
                InstanceRecord::fresh(env.target.clone(), env.atom.clone(), parent.clone(), now);
            let mut draft = Draft::for_message(atom, fresh, now, known, env);
            draft.step(RawEvent::Started(input.clone()))?;
            Ok(draft.into_plan())
        }
        Event::CancelRequested { reason } => {
            cancellation::check_cancel_before_start(env)?;
            Ok(cancellation::tombstone(env, reason, now))
        }
        // Possibly a message that overtook its instance's start; redelivery settles it, and a
        // message for an instance that never starts ends in the dead-letter queue.
        _ => Err(Error::retryable(format!(
            "instance {} does not exist (yet)",
            env.target
        ))),
    }
}

/// A message for a finished instance changes nothing, but may still need an answer: a start
/// refused by a tombstone tells the parent; a recurring firing deletes its schedule.
fn plan_finished(current: InstanceRecord, env: &Envelope, now: Timestamp) -> Plan {
    let (disposition, effects) = match &env.event {
        Event::Started {
            parent: Some(link), ..
        } if current.tombstone => return cancellation::refuse_start(current, env, link, now),
        Event::TimerFired { .. } => match timers::stale_firing(env) {
            Gate::Drop(disposition, effects) => (disposition, effects),
            _ => (ignored_finished(&current), Vec::new()),
        },
        _ => (ignored_finished(&current), Vec::new()),
    };
    Plan::Drop {
        disposition,
        effects,
    }
}

fn ignored_finished(current: &InstanceRecord) -> Disposition {
    Disposition::Ignored {
        reason: format!("instance is already {}", current.status.as_str()),
    }
}
