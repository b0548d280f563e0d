//! Continuation: `ctx.continue_with`, the instance running again at once with a cursor.
//!
//! Guard: a `Continue` is applied only if it is the continuation the instance is waiting for (a
//! new one gets a new id) and was sent by the instance itself.

use super::draft::{Draft, Gate, Lowered, WaitChange};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::{Event, RawEvent};
use crate::ids::CommandSlot;
use crate::record::{Effect, InstanceRecord};
use serde_json::Value;

pub(super) fn lower_continue(
    record: &InstanceRecord,
    slot: CommandSlot<'_>,
    cursor: Value,
    out: &mut Lowered,
) {
    let message = slot.message();
    let envelope = Envelope::new(
        message.clone(),
        record.id.clone(),
        record.atom.clone(),
        Event::Continue { cursor },
    )
    .from_sender(&record.id);
    out.effects.push(Effect::Send { envelope });
    out.waiting.push(WaitChange::Continue(message));
}

impl Draft<'_> {
    pub(super) fn gate_continue(&mut self, env: &Envelope) -> Result<Gate> {
        let Event::Continue { cursor } = &env.event else {
            return Err(Error::terminal("not a continuation"));
        };
        if env.sender.as_ref() != Some(&self.record.id) {
            return Ok(Gate::forged(format!(
                "continuation of {} not sent by it",
                self.record.id
            )));
        }
        if self.record.waiting.continuation.as_ref() != Some(&env.id) {
            return Ok(Gate::ignore("continuation is stale"));
        }
        self.record.waiting.continuation = None;
        self.step(RawEvent::Continue {
            cursor: cursor.clone(),
        })?;
        Ok(Gate::Apply)
    }
}
