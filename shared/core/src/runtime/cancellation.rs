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
use crate::event::{AtomEvent, Event, ParentLink};
use crate::ids::{CommandSlot, InstanceId};
use crate::record::{Effect, InstanceRecord, Status};
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

/// The record a cancel leaves for an instance that does not exist yet.
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
    record.error = Some(format!(
        "cancelled before it started: {}",
        cancel_reason(reason)
    ));
    record.remember_transition(env.event.kind(), &env.event.detail(), 0);
    let size = record.stored_size_bound(0);
    Plan::Save {
        next: Box::new(record),
        decoded: None,
        size,
    }
}

/// A start that arrives at a tombstone is refused; the parent it names hears that its child was
/// cancelled (the message id is derived from the tombstone, so copies are one message).
pub(super) fn refuse_start(
    tombstone: &InstanceRecord,
    link: &ParentLink,
) -> (Disposition, Vec<Effect>) {
    let reason = tombstone
        .error
        .clone()
        .unwrap_or_else(|| "cancelled before it started".into());
    tracing::warn!(parent = %link.id, %reason, "start refused: the instance was cancelled before it started");
    let slot = CommandSlot {
        instance: &tombstone.id,
        version: tombstone.version,
        index: 0,
    };
    let event = Event::ChildFailed {
        child: tombstone.id.clone(),
        tag: link.tag.clone(),
        reason: reason.clone(),
        cancelled: true,
        progress_reports: 0,
    };
    let envelope = Envelope::new(slot.message(), link.id.clone(), link.atom.clone(), event)
        .from_sender(&tombstone.id);
    (
        Disposition::Ignored {
            reason: format!("start refused: {reason}"),
        },
        vec![Effect::Send { envelope }],
    )
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
        self.step(AtomEvent::CancelRequested {
            reason: reason.clone(),
        })?;
        self.finish(Status::Cancelled, None, Some(cancel_reason(reason)));
        Ok(Gate::Apply)
    }
}
