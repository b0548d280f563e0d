//! Cancellation: `ctx.cancel_child`, a cancel's arrival, and a cancel that arrives before its
//! instance exists.
//!
//! Guards: a cancel from an instance counts only if it is the instance's parent (a client's has
//! no sender); once cancelled, an instance is finished and every later message is dropped. A
//! cancel for an instance with no record leaves a tombstone: a cancelled record, so the start
//! that arrives later is refused (and its parent told the child was cancelled) instead of running.

use super::Disposition;
use super::draft::{Draft, Gate, Lowered, WaitChange};
use super::plan::Plan;
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::{Event, ParentLink, RawEvent};
use crate::ids::{CommandSlot, InstanceId};
use crate::record::{Effect, InstanceRecord, LifecycleEvent, Status};
use crate::time::Timestamp;

pub(super) fn lower_cancel_child(
    record: &InstanceRecord,
    slot: CommandSlot<'_>,
    child: &InstanceId,
    reason: &str,
    out: &mut Lowered,
) {
    let Some(pending) = record.waiting.children.get(child) else {
        tracing::debug!(%child, "cancel of a child that is not pending is dropped");
        return;
    };
    if pending.cancelling {
        return;
    }
    let event = Event::CancelRequested {
        reason: reason.to_string(),
    };
    let envelope = Envelope::new(slot.message(), child.clone(), pending.atom.clone(), event)
        .from_sender(&record.id);
    out.effects.push(Effect::Send { envelope });
    out.waiting.push(WaitChange::Cancelling(child.clone()));
}

/// A cancel for an instance that does not exist yet leaves a tombstone only if it could have been
/// sent: from outside (a client), or, for a child's id, by the parent that derived it.
pub(super) fn check_cancel_before_start(env: &Envelope) -> Result<()> {
    match (&env.sender, env.target.derived_parent()) {
        (None, _) => Ok(()),
        (Some(sender), Some(parent)) if sender.as_str() == parent => Ok(()),
        (Some(sender), _) => Err(Error::terminal(format!(
            "cancel of {} from {sender} refused: only its parent or a client may cancel it",
            env.target
        ))),
    }
}

/// The record a cancel leaves for an instance that does not exist yet: cancelled, with the
/// cancel's reason, as if it had been cancelled right after its start.
pub(super) fn tombstone(env: &Envelope, reason: &str, now: Timestamp) -> Plan {
    tracing::info!(
        reason,
        "cancel before the instance exists: leaving a tombstone"
    );
    let mut record = InstanceRecord::fresh(env.target.clone(), env.atom.clone(), None, now);
    record.version = 1;
    record.status = Status::Cancelled;
    record.tombstone = true;
    record.state = "null".into();
    record.error = Some(cancel_reason(reason));
    record.outbox.push(Effect::Publish {
        event: LifecycleEvent {
            id: format!("{}@{}", record.id, record.version),
            instance: record.id.clone(),
            atom: record.atom.clone(),
            status: Status::Cancelled,
            parent: None,
            result: None,
            result_omitted: false,
            error: record.error.clone(),
            at: now,
        },
    });
    record.remember_transition(env.event.kind(), &env.event.detail(), 1);
    saved(record)
}

/// A start that arrives at a tombstone is refused. The first one to name a parent links the
/// tombstone to it and tells the parent its child was cancelled, with the cancel's reason (what a
/// cancel right after the start would have told it); that reply is in the tombstone's outbox, so
/// it is sent like any other effect. Later copies change nothing.
pub(super) fn refuse_start(
    tombstone: InstanceRecord,
    env: &Envelope,
    link: &ParentLink,
    now: Timestamp,
) -> Plan {
    let refused = |reason: String| Disposition::Ignored {
        reason: format!("start refused: the instance was cancelled before it started ({reason})"),
    };
    let reason = tombstone.error.clone().unwrap_or_else(|| cancel_reason(""));
    if tombstone.parent.is_some() || super::children::check_start(env, Some(link)).is_err() {
        return Plan::Drop {
            disposition: refused(reason),
            effects: Vec::new(),
        };
    }
    tracing::warn!(parent = %link.id, %reason, "start refused: the instance was cancelled before it started");
    let mut record = tombstone;
    record.version += 1;
    record.updated_at = now;
    record.parent = Some(link.clone());
    let slot = CommandSlot {
        instance: &record.id,
        version: record.version,
        index: 0,
    };
    let event = Event::ChildFailed {
        child: record.id.clone(),
        tag: link.tag.clone(),
        reason,
        cancelled: true,
        progress_reports: 0,
    };
    let envelope = Envelope::new(slot.message(), link.id.clone(), link.atom.clone(), event)
        .from_sender(&record.id);
    record.outbox = vec![Effect::Send { envelope }];
    record.remember_transition(env.event.kind(), "refused: cancelled before it started", 1);
    saved(record)
}

fn saved(record: InstanceRecord) -> Plan {
    let outbox_bytes = record.outbox.iter().map(crate::text::json_len).sum();
    let size = record.stored_size_bound(outbox_bytes);
    Plan::Save {
        next: Box::new(record),
        decoded: None,
        size,
    }
}

fn cancel_reason(reason: &str) -> String {
    if reason.is_empty() {
        "cancelled".to_string()
    } else {
        reason.to_string()
    }
}

impl Draft<'_> {
    pub(super) fn gate_cancel(&mut self, env: &Envelope) -> Result<Gate> {
        let Event::CancelRequested { reason } = &env.event else {
            return Err(Error::terminal("not a cancel"));
        };
        if let Some(sender) = &env.sender
            && self.record.parent.as_ref().map(|p| &p.id) != Some(sender)
        {
            return Ok(Gate::forged(format!(
                "cancel of {} from {sender}, which is not its parent",
                self.record.id
            )));
        }
        self.cancelling = true;
        self.step(RawEvent::CancelRequested {
            reason: reason.clone(),
        })?;
        self.finish(Status::Cancelled, None, Some(cancel_reason(reason)));
        Ok(Gate::Apply)
    }
}
