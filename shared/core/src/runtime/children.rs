//! Children: `ctx.spawn` and `ctx.report_progress`, and a child's progress, completion and
//! failure arriving at its parent.
//!
//! Guards: a child event is applied only while the child is pending, only if it was sent by that
//! child, progress once per `seq`, and a finish only after all the child's progress reports (an
//! early finish is held in the record). A start must come from the parent it names, for an id that
//! parent derived; a root's id must have a root's shape.

use super::draft::{Draft, Gate, Lowered, WaitChange};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::{Event, ParentLink, RawEvent};
use crate::ids::{CommandSlot, InstanceId, MAX_DERIVED_ID_BYTES};
use crate::record::{Effect, InstanceRecord, PendingChild, Status};
use serde_json::Value;
use std::collections::BTreeMap;

pub(super) fn lower_spawn(
    record: &InstanceRecord,
    slot: CommandSlot<'_>,
    atom: &str,
    tag: &str,
    input: &Value,
    out: &mut Lowered,
) -> Result<()> {
    let child = slot.child();
    if child.as_str().len() > MAX_DERIVED_ID_BYTES {
        return Err(Error::terminal(format!(
            "cannot start a child of {}: its id would be {} bytes, over the {MAX_DERIVED_ID_BYTES}-byte limit (the tree is too deep or its root id too long)",
            record.id,
            child.as_str().len()
        )));
    }
    let parent = ParentLink {
        id: record.id.clone(),
        atom: record.atom.clone(),
        tag: tag.to_string(),
    };
    let event = Event::Started {
        input: input.clone(),
        parent: Some(parent),
    };
    let envelope =
        Envelope::new(slot.message(), child.clone(), atom, event).from_sender(&record.id);
    out.effects.push(Effect::Send { envelope });
    out.waiting.push(WaitChange::Child(
        child,
        PendingChild {
            atom: atom.to_string(),
            tag: tag.to_string(),
            progress: Default::default(),
            early_finish: None,
            cancelling: false,
        },
    ));
    Ok(())
}

pub(super) fn lower_progress(
    record: &InstanceRecord,
    slot: CommandSlot<'_>,
    payload: &Value,
    out: &mut Lowered,
) {
    let Some(parent) = &record.parent else {
        tracing::debug!("progress reported by a root instance is dropped");
        return;
    };
    let event = Event::ChildProgress {
        child: record.id.clone(),
        tag: parent.tag.clone(),
        seq: out.progress_seq,
        payload: payload.clone(),
    };
    out.progress_seq += 1;
    let envelope = Envelope::new(
        slot.message(),
        parent.id.clone(),
        parent.atom.clone(),
        event,
    )
    .from_sender(&record.id);
    out.effects.push(Effect::Send { envelope });
}

/// A start creates its instance only if it is what it claims: a root's id has a root's shape; a
/// child's comes from its parent, for an id that parent derived.
pub(super) fn check_start(env: &Envelope, parent: Option<&ParentLink>) -> Result<()> {
    match parent {
        None => env.target.check_root(),
        Some(link) if env.sender.as_ref() == Some(&link.id) && env.target.is_child_of(&link.id) => {
            Ok(())
        }
        Some(link) => Err(Error::terminal(format!(
            "start of {} as a child of {} refused: it was not sent by that parent (sender {}) for an id it derived",
            env.target,
            link.id,
            env.sender.as_ref().map_or("none", |s| s.as_str())
        ))),
    }
}

/// Child events count only from the child itself.
fn from_child(env: &Envelope, child: &InstanceId) -> Option<Gate> {
    (env.sender.as_ref() != Some(child)).then(|| {
        Gate::forged(format!(
            "{} for {child} was not sent by it (sender {})",
            env.event.kind(),
            env.sender.as_ref().map_or("none", |s| s.as_str())
        ))
    })
}

impl Draft<'_> {
    pub(super) fn gate_child_finish(&mut self, env: &Envelope) -> Result<Gate> {
        let (Event::ChildCompleted {
            child,
            progress_reports,
            ..
        }
        | Event::ChildFailed {
            child,
            progress_reports,
            ..
        }) = &env.event
        else {
            return Err(Error::terminal("not a child's finish"));
        };
        if let Some(forged) = from_child(env, child) {
            return Ok(forged);
        }
        let Some(pending) = self.record.waiting.children.get_mut(child) else {
            return Ok(Gate::ignore(format!("{child} is not a pending child")));
        };
        if !pending.progress.has_all_below(*progress_reports) {
            // Some progress is still in flight: keep the finish until it has all arrived.
            if pending.early_finish.is_some() {
                return Ok(Gate::duplicate());
            }
            pending.early_finish = Some(Box::new(env.event.clone()));
            return Ok(Gate::Apply);
        }
        self.finish_child(child, env.event.clone())?;
        Ok(Gate::Apply)
    }

    pub(super) fn gate_child_progress(&mut self, env: &Envelope) -> Result<Gate> {
        let Event::ChildProgress {
            child,
            tag,
            seq,
            payload,
        } = &env.event
        else {
            return Err(Error::terminal("not a child's progress"));
        };
        if let Some(forged) = from_child(env, child) {
            return Ok(forged);
        }
        let Some(pending) = self.record.waiting.children.get_mut(child) else {
            return Ok(Gate::ignore(format!("{child} is not a pending child")));
        };
        if !pending.progress.insert(*seq) {
            return Ok(Gate::duplicate());
        }
        let ready = match pending.early_finish.as_deref() {
            Some(
                Event::ChildCompleted {
                    progress_reports, ..
                }
                | Event::ChildFailed {
                    progress_reports, ..
                },
            ) => pending.progress.has_all_below(*progress_reports),
            _ => false,
        };
        let held = if ready {
            pending.early_finish.take()
        } else {
            None
        };
        self.step(RawEvent::ChildProgress {
            child: child.clone(),
            tag: tag.clone(),
            seq: *seq,
            payload: payload.clone(),
        })?;
        if let Some(finish) = held {
            self.finish_child(child, *finish)?;
        }
        Ok(Gate::Apply)
    }

    fn finish_child(&mut self, child: &InstanceId, finish: Event) -> Result<()> {
        self.record.waiting.children.remove(child);
        let event = match finish {
            Event::ChildCompleted {
                child, tag, output, ..
            } => RawEvent::ChildCompleted { child, tag, output },
            Event::ChildFailed {
                child,
                tag,
                reason,
                cancelled,
                ..
            } => RawEvent::ChildFailed {
                child,
                tag,
                reason,
                cancelled,
            },
            other => {
                return Err(Error::terminal(format!(
                    "{} is not a child's finish",
                    other.kind()
                )));
            }
        };
        self.step(event)
    }

    /// A finishing instance cancels its live children (those not already being cancelled).
    pub(super) fn cancel_children_on_finish(
        &mut self,
        children: BTreeMap<InstanceId, PendingChild>,
        status: Status,
    ) {
        for (child, pending) in children {
            if !pending.cancelling {
                let reason = format!("parent {} {}", self.record.id, status.as_str());
                let envelope = self.message(child, pending.atom, Event::CancelRequested { reason });
                self.effects.push(Effect::Send { envelope });
            }
        }
    }

    /// Tells the parent how this instance ended. An output the parent could not receive (too
    /// large for a message) makes this a failure instead, with the reason.
    pub(super) fn report_to_parent(
        &mut self,
        status: Status,
        result: Option<Value>,
        error: Option<String>,
    ) -> (Status, Option<Value>, Option<String>) {
        let Some(parent) = self.record.parent.clone() else {
            return (status, result, error);
        };
        let child = self.record.id.clone();
        let progress_reports = self.record.progress_sent;
        let cancelled = status == Status::Cancelled;
        let failed = |reason: String| Event::ChildFailed {
            child: child.clone(),
            tag: parent.tag.clone(),
            reason,
            cancelled,
            progress_reports,
        };
        let event = match status {
            Status::Completed => Event::ChildCompleted {
                child: child.clone(),
                tag: parent.tag.clone(),
                output: result.clone().unwrap_or(Value::Null),
                progress_reports,
            },
            _ => failed(error.clone().unwrap_or_default()),
        };
        let mut envelope = self.message(parent.id.clone(), parent.atom.clone(), event);
        let (mut status, mut result, mut error) = (status, result, error);
        if let Err(too_big) = envelope.check_size() {
            let reason = format!("output too large for the parent: {}", too_big.reason);
            (status, result, error) = (Status::Failed, None, Some(reason.clone()));
            envelope.event = failed(reason);
        }
        self.effects.push(Effect::Send { envelope });
        (status, result, error)
    }
}
