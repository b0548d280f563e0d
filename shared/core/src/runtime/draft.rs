//! The record being built by one message: the next version of an instance, the atom's step run
//! on it, its commands lowered into `waiting` entries and effects (all or nothing), and the
//! clean-up when the instance finishes. Each capability adds its part in its own module.

use super::Known;
use super::plan::Plan;
use super::{calls, cancellation, children, continuation, requests, signals, timers};
use crate::atom::{Command, Context, DynAtom, StateIn, Step, StepOut, TypedState};
use crate::envelope::{Envelope, MAX_MESSAGE_BYTES};
use crate::error::{Error, Result};
use crate::event::{Event, RawEvent};
use crate::ids::{CommandSlot, InstanceId, MessageId, RequestId};
use crate::record::{
    Effect, InstanceRecord, LifecycleEvent, MAX_RECORD_BYTES, PendingCall, PendingChild,
    PendingRequest, PendingTimer, Status,
};
use crate::time::Timestamp;
use serde_json::Value;
use std::collections::BTreeMap;

/// The largest lifecycle event published as is; a larger one leaves its result out (the record
/// keeps it). EventBridge takes 256 KiB per `PutEvents` request.
pub(super) const MAX_LIFECYCLE_EVENT_BYTES: usize = 200_000;

pub(super) struct Draft<'a> {
    pub atom: &'a dyn DynAtom,
    pub record: InstanceRecord,
    pub effects: Vec<Effect>,
    pub now: Timestamp,
    pub next_index: u32,
    /// Set while handling a cancel: the step's outcome does not decide the status.
    pub cancelling: bool,
    pub finished: bool,
    /// `record.state` decoded, when known.
    pub decoded: Option<TypedState>,
    pub known: Option<Known<'a>>,
    /// The event's kind and detail, for the history.
    pub event: Option<(&'static str, String)>,
}

/// What a capability decided about a message before (or instead of) the atom's step.
pub(super) enum Gate {
    /// Save the draft (the step ran, or the record changed without it).
    Apply,
    /// Nothing changes; send these effects (a stale schedule's deletion, a refused start's reply).
    Drop(super::Disposition, Vec<Effect>),
    /// Put the message back for later.
    Defer(std::time::Duration, String),
}

impl Gate {
    pub fn ignore(reason: impl Into<String>) -> Self {
        Gate::Drop(
            super::Disposition::Ignored {
                reason: reason.into(),
            },
            Vec::new(),
        )
    }

    pub fn duplicate() -> Self {
        Gate::Drop(super::Disposition::Duplicate, Vec::new())
    }

    /// An event that claims to come from an instance it does not come from.
    pub fn forged(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        tracing::warn!(%reason, "refusing a message that is not what it claims to be");
        Gate::ignore(reason)
    }
}

impl<'a> Draft<'a> {
    /// Starts the next version of `current`.
    pub fn new(atom: &'a dyn DynAtom, current: InstanceRecord, now: Timestamp) -> Self {
        let mut record = current;
        record.version += 1;
        record.updated_at = now;
        record.outbox.clear();
        Self {
            atom,
            record,
            effects: Vec::new(),
            now,
            next_index: 0,
            cancelling: false,
            finished: false,
            decoded: None,
            known: None,
            event: None,
        }
    }

    /// Starts the next version of `current` for the message `env`.
    pub fn for_message(
        atom: &'a dyn DynAtom,
        current: InstanceRecord,
        now: Timestamp,
        known: Known<'a>,
        env: &Envelope,
    ) -> Self {
        let mut draft = Self::new(atom, current, now);
        draft.known = Some(known);
        draft.event = Some((env.event.kind(), env.event.detail()));
        draft
    }

    pub fn slot(&mut self) -> CommandSlot<'_> {
        let index = self.next_index;
        self.next_index += 1;
        CommandSlot {
            instance: &self.record.id,
            version: self.record.version,
            index,
        }
    }

    /// A message from this instance, with the next derived id.
    pub fn message(&mut self, target: InstanceId, atom: String, event: Event) -> Envelope {
        let id = self.slot().message();
        Envelope::new(id, target, atom, event).from_sender(&self.record.id)
    }

    /// Runs the atom's step and lowers its commands. A retryable error aborts the whole message; a
    /// terminal one fails the instance.
    pub fn step(&mut self, event: RawEvent) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        // Taken, not borrowed: a step that fails leaves the decoded state dirty, so it is dropped.
        let decoded = self.decoded.take();
        let state = if matches!(event, RawEvent::Started(_)) {
            StateIn::Fresh
        } else {
            StateIn::Stored {
                json: self.record.state.as_str(),
                version: self.record.state_version,
                decoded,
            }
        };
        let mut ctx = Context::new(
            &self.record.id,
            self.record.version,
            self.now,
            self.next_index,
        );
        let result = self.atom.step_json(state, event, &mut ctx);
        let (commands, continuation) = (std::mem::take(&mut ctx.commands), ctx.continuation.take());
        let result = match (result, ctx.error.take()) {
            (Ok(_), Some(error)) => Err(error),
            (result, _) => result,
        };
        drop(ctx);
        let StepOut {
            json,
            version,
            decoded,
            outcome,
        } = match result {
            Ok(out) => out,
            Err(error) if error.is_retryable() => return Err(error),
            Err(error) => {
                self.record.transitions += 1;
                self.finish(
                    Status::Failed,
                    None,
                    Some(format!("step failed: {}", error.reason)),
                );
                return Ok(());
            }
        };
        self.record.transitions += 1;
        if let Err(error) = self.lower(commands, continuation) {
            self.finish(Status::Failed, None, Some(error.reason));
            return Ok(());
        }
        self.record.state = json;
        self.record.state_version = version;
        self.decoded = Some(decoded);
        if self.cancelling {
            return Ok(());
        }
        match outcome {
            Step::Suspend => {
                self.record.status = if self.record.waiting.continuation.is_some() {
                    Status::Running
                } else {
                    Status::Suspended
                };
            }
            Step::Complete(output) => self.finish(Status::Completed, Some(output), None),
            Step::Fail(reason) => self.finish(Status::Failed, None, Some(reason)),
        }
        Ok(())
    }

    /// Turns commands into waiting entries and effects, all or nothing: any invalid command fails
    /// the step before anything is applied.
    fn lower(&mut self, commands: Vec<Command>, continuation: Option<Value>) -> Result<()> {
        let first = self.next_index;
        let mut out = Lowered::new(&self.record);
        for (i, command) in commands.iter().enumerate() {
            let slot = CommandSlot {
                instance: &self.record.id,
                version: self.record.version,
                index: first + i as u32,
            };
            if let Some(known) = self.known {
                check_addressable(known, command)?;
            }
            let record = &self.record;
            match command {
                Command::Spawn { atom, tag, input } => {
                    children::lower_spawn(record, slot, atom, tag, input, &mut out)?
                }
                Command::Progress(payload) => {
                    children::lower_progress(record, slot, payload, &mut out)
                }
                Command::SetTimer { name, at } => {
                    timers::lower_set(record, slot, name, *at, &mut out)?
                }
                Command::SetRecurring { name, every } => {
                    timers::lower_recurring(record, slot, name, *every, self.now, &mut out)?
                }
                Command::CancelTimer { name } => timers::lower_cancel(name, &mut out),
                Command::Ask(ask) => requests::lower_ask(record, slot, ask, self.now, &mut out)?,
                Command::Signal {
                    target,
                    name,
                    payload,
                } => signals::lower_signal(record, slot, target, name, payload, &mut out),
                Command::Call {
                    activity,
                    tag,
                    input,
                } => calls::lower_call(record, slot, activity, tag, input, &mut out),
                Command::Cancel { child, reason } => {
                    cancellation::lower_cancel_child(record, slot, child, reason, &mut out)
                }
            }
        }
        let mut next_index = first + commands.len() as u32;
        if let Some(cursor) = continuation {
            let slot = CommandSlot {
                instance: &self.record.id,
                version: self.record.version,
                index: next_index,
            };
            continuation::lower_continue(&self.record, slot, cursor, &mut out);
            next_index += 1;
        }
        // Everything is valid: apply.
        self.next_index = next_index;
        out.apply(&mut self.record, &mut self.effects);
        Ok(())
    }

    /// Ends the instance: every capability lets go of what it waited for, and the parent is told.
    pub fn finish(&mut self, status: Status, result: Option<Value>, error: Option<String>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let waiting = std::mem::take(&mut self.record.waiting);
        timers::on_finish(&waiting.timers, &mut self.effects);
        requests::on_finish(&waiting.requests, &mut self.effects);
        self.cancel_children_on_finish(waiting.children, status);
        // Pending calls and a pending continuation need nothing: their messages find nothing
        // pending and are dropped.
        let (status, result, error) = self.report_to_parent(status, result, error);
        let mut event = LifecycleEvent {
            id: format!("{}@{}", self.record.id, self.record.version),
            instance: self.record.id.clone(),
            atom: self.record.atom.clone(),
            status,
            parent: self.record.parent.as_ref().map(|p| p.id.clone()),
            result: result.clone(),
            result_omitted: false,
            error: error.clone(),
            at: self.now,
        };
        if crate::text::json_len(&event) > MAX_LIFECYCLE_EVENT_BYTES {
            event.result = None;
            event.result_omitted = true;
        }
        self.effects.push(Effect::Publish { event });
        self.record.status = status;
        self.record.result = result;
        self.record.error = error;
    }

    pub fn into_plan(mut self) -> Plan {
        let effects = self.effects.len();
        self.record.outbox = std::mem::take(&mut self.effects);
        if let Some((event, detail)) = self.event.take() {
            self.record.remember_transition(event, &detail, effects);
        }
        // Each effect is encoded once here: to check the messages against the queue's limit and
        // to bound the record's size.
        let mut outbox_bytes = 0;
        for effect in &self.record.outbox {
            let len = crate::envelope::encoded_len(effect);
            let envelope = match effect {
                Effect::Send { envelope }
                | Effect::ScheduleTimer { envelope, .. }
                | Effect::ScheduleRecurring { envelope, .. } => Some(envelope),
                _ => None,
            };
            if let Some(envelope) = envelope
                && len > MAX_MESSAGE_BYTES
            {
                let reason = format!(
                    "{} message to {} would be about {len} bytes, over the {MAX_MESSAGE_BYTES}-byte message limit; the step's changes were discarded",
                    envelope.event.kind(),
                    envelope.target
                );
                return Plan::TooLarge { reason };
            }
            outbox_bytes += len;
        }
        let size = self.record.stored_size_bound(outbox_bytes);
        if size <= MAX_RECORD_BYTES {
            return Plan::Save {
                next: Box::new(self.record),
                decoded: self.decoded,
                size,
            };
        }
        let reason = format!(
            "instance record would be about {size} bytes, over the {MAX_RECORD_BYTES}-byte limit (state {} bytes); the step's changes were discarded",
            self.record.state.len()
        );
        Plan::TooLarge { reason }
    }
}

/// Spawns and signals go only to deployed atom types, calls only to known activities.
fn check_addressable(known: Known<'_>, command: &Command) -> Result<()> {
    if let Command::Call { activity, .. } = command
        && !known.activities.contains(activity)
    {
        return Err(Error::terminal(format!(
            "no activity {activity:?} in this runtime (it has: {})",
            known.activities.names().join(", ")
        )));
    }
    let addressed = match command {
        Command::Spawn { atom, .. } => Some(atom),
        Command::Signal { target, .. } => Some(&target.atom),
        _ => None,
    };
    if let (Some(deployed), Some(atom)) = (known.atoms, addressed)
        && !deployed.contains(atom)
    {
        let mut names: Vec<&str> = deployed.iter().map(String::as_str).collect();
        names.sort_unstable();
        return Err(Error::terminal(format!(
            "no atom type {atom:?} is deployed (deployed: {})",
            names.join(", ")
        )));
    }
    Ok(())
}

/// What one step's commands add, collected before anything is applied.
pub(super) struct Lowered {
    pub effects: Vec<Effect>,
    pub waiting: Vec<WaitChange>,
    /// The sequence number of the next progress report to the parent.
    pub progress_seq: u64,
    /// The next signal sequence number per target this step signalled.
    pub signal_seqs: BTreeMap<InstanceId, u64>,
}

/// A change to what the instance waits for, applied once every command lowered.
pub(super) enum WaitChange {
    Child(InstanceId, PendingChild),
    Timer(String, PendingTimer),
    CancelTimer(String),
    Request(RequestId, PendingRequest),
    Cancelling(InstanceId),
    Continue(MessageId),
    Call(MessageId, PendingCall),
}

impl Lowered {
    fn new(record: &InstanceRecord) -> Self {
        Self {
            effects: Vec::new(),
            waiting: Vec::new(),
            progress_seq: record.progress_sent,
            signal_seqs: BTreeMap::new(),
        }
    }

    fn apply(self, record: &mut InstanceRecord, effects: &mut Vec<Effect>) {
        record.progress_sent = self.progress_seq;
        record.signals_sent.extend(self.signal_seqs);
        let w = &mut record.waiting;
        for change in self.waiting {
            match change {
                WaitChange::Child(child, pending) => {
                    w.children.insert(child, pending);
                }
                WaitChange::Timer(name, pending) => {
                    if let Some(old) = w.timers.insert(name, pending) {
                        effects.push(Effect::CancelTimer { timer: old.id });
                    }
                }
                WaitChange::CancelTimer(name) => {
                    if let Some(old) = w.timers.remove(&name) {
                        effects.push(Effect::CancelTimer { timer: old.id });
                    }
                }
                WaitChange::Request(request, pending) => {
                    w.requests.insert(request, pending);
                }
                WaitChange::Cancelling(child) => {
                    if let Some(pending) = w.children.get_mut(&child) {
                        pending.cancelling = true;
                    }
                }
                WaitChange::Continue(message) => w.continuation = Some(message),
                WaitChange::Call(message, pending) => {
                    w.calls.insert(message, pending);
                }
            }
        }
        effects.extend(self.effects);
    }
}

/// Fails `stored` because its next version would not fit: it keeps the state it had, and what it
/// was waiting for is let go as for any failure.
pub(super) fn fail_too_large(
    atom: &dyn DynAtom,
    mut stored: InstanceRecord,
    message: &MessageId,
    now: Timestamp,
    reason: String,
) -> InstanceRecord {
    tracing::warn!(%reason, %message, "failing instance");
    stored.outbox.clear();
    let mut failed = Draft::new(atom, stored, now);
    failed.record.transitions += 1;
    if failed.record.state.is_empty() {
        failed.record.state = "null".into();
    }
    failed.finish(Status::Failed, None, Some(reason));
    failed.record.outbox = std::mem::take(&mut failed.effects);
    let effects = failed.record.outbox.len();
    failed
        .record
        .remember_transition("failed_too_large", message.as_str(), effects);
    failed.record
}
