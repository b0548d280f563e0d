//! Signals: `ctx.signal` and a signal's arrival.
//!
//! Guards: a signal between instances carries a sequence number per (sender, target) and the
//! sender's epoch (its creation time); the target keeps, per sender, the set of numbers it
//! applied (compact while they arrive in order), so a copy is recognised however late it comes:
//! an old outbox sent again, an SQS duplicate, a dead-letter redrive. A sender whose id is reused
//! after its record expired has a later epoch and counts anew. A signal from outside (a client)
//! has no sender; its message id is its guard, remembered for as long as SQS can hold a copy of it
//! ([`CLIENT_MESSAGE_MEMORY`], and at most [`RECENT_MESSAGES`] ids).
//!
//! [`CLIENT_MESSAGE_MEMORY`]: crate::record::CLIENT_MESSAGE_MEMORY
//! [`RECENT_MESSAGES`]: crate::record::RECENT_MESSAGES

use super::draft::{Draft, Gate, Lowered};
use crate::atom::InstanceRef;
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::{Event, RawEvent};
use crate::ids::CommandSlot;
use crate::record::{Effect, InstanceRecord, SenderSignals, SeqSet};
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
        epoch: record.created_at.as_millis(),
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
        let Event::Signal {
            name,
            payload,
            seq,
            epoch,
        } = &env.event
        else {
            return Err(Error::terminal("not a signal"));
        };
        match (&env.sender, seq) {
            (Some(sender), Some(seq)) => {
                let from = self
                    .record
                    .signals_received
                    .entry(sender.clone())
                    .or_default();
                if *epoch < from.epoch {
                    return Ok(Gate::ignore(format!(
                        "signal from an earlier life of {sender}"
                    )));
                }
                if *epoch > from.epoch {
                    // The sender's id was reused after its record expired: it counts anew.
                    *from = SenderSignals {
                        epoch: *epoch,
                        seqs: SeqSet::default(),
                    };
                }
                if !from.seqs.insert(*seq) {
                    return Ok(Gate::duplicate());
                }
            }
            // From outside: the message id is the guard.
            _ => self.record.applied.remember(&env.id, self.now),
        }
        self.step(RawEvent::Signal {
            name: name.clone(),
            payload: payload.clone(),
        })?;
        Ok(Gate::Apply)
    }
}
