//! Signals: `ctx.signal` and a signal's arrival.
//!
//! Guards: a signal between instances carries a sequence number per (sender, target); the target
//! keeps, per sender, the set of numbers it applied (compact while they arrive in order), so a
//! copy is recognised however late it comes: an old outbox sent again, an SQS duplicate, a
//! dead-letter redrive. A signal from outside (a client) has no sender; its message id is its
//! guard, remembered among the instance's last [`RECENT_MESSAGES`] such ids.
//!
//! [`RECENT_MESSAGES`]: crate::record::RECENT_MESSAGES

use super::draft::{Draft, Gate, Lowered};
use crate::atom::InstanceRef;
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::{AtomEvent, Event};
use crate::ids::CommandSlot;
use crate::record::{Effect, InstanceRecord};
use serde_json::Value;

pub(super) fn lower_signal(
    record: &InstanceRecord,
    slot: CommandSlot<'_>,
    target: &InstanceRef,
    name: &str,
    payload: &Value,
    out: &mut Lowered,
) {
    let next = out
        .signal_seqs
        .entry(target.id.clone())
        .or_insert_with(|| record.signals_sent.get(&target.id).copied().unwrap_or(0));
    let seq = *next;
    *next += 1;
    let event = Event::Signal {
        name: name.to_string(),
        payload: payload.clone(),
        seq: Some(seq),
    };
    let envelope = Envelope::new(
        slot.message(),
        target.id.clone(),
        target.atom.clone(),
        event,
    )
    .from_sender(&record.id);
    out.effects.push(Effect::Send { envelope });
}

impl Draft<'_> {
    pub(super) fn gate_signal(&mut self, env: &Envelope) -> Result<Gate> {
        let Event::Signal { name, payload, seq } = &env.event else {
            return Err(Error::terminal("not a signal"));
        };
        match (&env.sender, seq) {
            (Some(sender), Some(seq)) => {
                let applied = self
                    .record
                    .signals_received
                    .entry(sender.clone())
                    .or_default();
                if !applied.insert(*seq) {
                    return Ok(Gate::duplicate());
                }
            }
            // From outside: the message id is the guard.
            _ => self.record.applied.remember(&env.id),
        }
        self.step(AtomEvent::Signal {
            name: name.clone(),
            payload: payload.clone(),
        })?;
        Ok(Gate::Apply)
    }
}
