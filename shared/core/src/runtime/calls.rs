//! Activities: `ctx.call`, running the activity, journaling its outcome, and delivering it.
//!
//! 1. Lowering: the call becomes a `waiting.calls` entry (keyed by a derived message id, with a
//!    fingerprint of its input) and an `Event::Call` message to the instance itself.
//! 2. Journal: when the call message arrives and the call is pending without an outcome, the
//!    activity runs (within its time limit and the invocation's deadline) and its outcome is saved
//!    in the entry by a conditional write of its own, before any step sees it.
//! 3. Step: the journaled outcome is delivered as `CallCompleted` / `CallFailed`, and the entry
//!    removed in the same write as whatever the step does.
//!
//! Guards: a call message is run and applied only if it was sent by the instance itself for the
//! pending call's activity and input; a call whose outcome is journaled never runs again. What is
//! exactly once is the journaled outcome; the activity's side effect is at least once (see
//! [`CallInfo`]). A retryable failure is tried again on the next delivery, and after
//! [`MAX_ACTIVITY_TRIES`] deliveries is journaled as a failure for the atom to decide.

use super::Runtime;
use super::draft::{Draft, Gate, Lowered, WaitChange};
use super::{Delivery, MAX_CONFLICT_ATTEMPTS};
use crate::activity::{CallInfo, MAX_ACTIVITY_TRIES};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::{Event, RawEvent};
use crate::ids::{CommandSlot, FNV_OFFSET_BASIS, MessageId, fnv1a};
use crate::ports::{Clock, Dispatcher, Inbox, InstanceStore, SaveOutcome, TimerService};
use crate::record::{CallOutcome, Effect, InstanceRecord, MAX_RECORD_BYTES, PendingCall};
use serde_json::Value;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

/// Time kept back from an invocation's deadline for what follows an activity: journaling its
/// outcome, the step, the save and the sends.
pub const DEADLINE_RESERVE: Duration = Duration::from_secs(5);

/// The fingerprint a pending call keeps of its input (never 0, which means "not recorded").
pub(super) fn input_hash(input: &Value) -> u64 {
    fnv1a(FNV_OFFSET_BASIS, crate::text::to_json(input).as_bytes()).max(1)
}

pub(super) fn lower_call(
    record: &InstanceRecord,
    slot: CommandSlot<'_>,
    activity: &str,
    tag: &str,
    input: &Value,
    out: &mut Lowered,
) {
    let message = slot.message();
    let event = Event::Call {
        activity: activity.to_string(),
        tag: tag.to_string(),
        input: input.clone(),
    };
    let envelope = Envelope::new(
        message.clone(),
        record.id.clone(),
        record.atom.clone(),
        event,
    )
    .from_sender(&record.id);
    out.effects.push(Effect::Send { envelope });
    out.waiting.push(WaitChange::Call(
        message,
        PendingCall {
            activity: activity.to_string(),
            tag: tag.to_string(),
            input_hash: input_hash(input),
            outcome: None,
        },
    ));
}

/// A call message, as it arrived.
#[derive(Clone, Copy)]
pub(super) struct CallMessage<'a> {
    id: &'a MessageId,
    sender: Option<&'a crate::ids::InstanceId>,
    activity: &'a str,
    input: &'a Value,
}

impl<'a> CallMessage<'a> {
    pub fn of(env: &'a Envelope) -> Option<Self> {
        match &env.event {
            Event::Call {
                activity, input, ..
            } => Some(Self {
                id: &env.id,
                sender: env.sender.as_ref(),
                activity,
                input,
            }),
            _ => None,
        }
    }

    /// Why this message is not the pending call it names, if it is not: it must come from the
    /// instance itself and ask for the same activity with the same input.
    fn mismatch(&self, record: &InstanceRecord, pending: &PendingCall) -> Option<String> {
        if self.sender != Some(&record.id) {
            return Some(format!("call {} not sent by {}", self.id, record.id));
        }
        if self.activity != pending.activity {
            return Some(format!(
                "call {} asks for {} but {} is pending",
                self.id, self.activity, pending.activity
            ));
        }
        if pending.input_hash != 0 && input_hash(self.input) != pending.input_hash {
            return Some(format!(
                "call {} carries another input than the pending call",
                self.id
            ));
        }
        None
    }
}

impl Draft<'_> {
    pub(super) fn gate_call(&mut self, env: &Envelope) -> Result<Gate> {
        let Some(message) = CallMessage::of(env) else {
            return Err(Error::terminal("not a call"));
        };
        let Some(pending) = self.record.waiting.calls.get(&env.id) else {
            return Ok(Gate::ignore(format!("call {} is not pending", env.id)));
        };
        if let Some(reason) = message.mismatch(&self.record, pending) {
            return Ok(Gate::forged(reason));
        }
        let Some(outcome) = pending.outcome.clone() else {
            return Err(Error::retryable(format!(
                "call {} has no journaled outcome yet",
                env.id
            )));
        };
        let tag = pending.tag.clone();
        self.record.waiting.calls.remove(&env.id);
        self.step(match outcome {
            CallOutcome::Completed { output } => RawEvent::CallCompleted { tag, output },
            CallOutcome::Failed { reason } => RawEvent::CallFailed { tag, reason },
        })?;
        Ok(Gate::Apply)
    }
}

/// Runs `work` until it finishes or `limit` passes on `clock` (then `None`).
async fn within<F: Future>(clock: &impl Clock, limit: Duration, work: F) -> Option<F::Output> {
    let mut work = pin!(work);
    let mut timer = pin!(clock.sleep(limit));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

impl<S, D, T, I, C> Runtime<S, D, T, I, C>
where
    S: InstanceStore,
    D: Dispatcher,
    T: TimerService,
    I: Inbox,
    C: Clock,
{
    /// Runs the activity of a pending call and journals its outcome in the record (a conditional
    /// write of its own) before any step consumes it. Does nothing when the call is not pending,
    /// is not what the message claims, or its outcome is already journaled: that is how a
    /// redelivered message avoids running it twice.
    /// Returns a reason to defer the message when the record kept changing under it.
    pub(super) async fn journal_call(
        &self,
        call: CallMessage<'_>,
        delivery: Delivery,
        current: &mut Option<InstanceRecord>,
    ) -> Result<Option<String>> {
        let mut outcome = None;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(record) = current.as_mut() else {
                return Ok(None);
            };
            if record.status.is_finished() {
                return Ok(None);
            }
            let Some(pending) = record.waiting.calls.get(call.id) else {
                return Ok(None);
            };
            if pending.outcome.is_some() || call.mismatch(record, pending).is_some() {
                return Ok(None);
            }
            let result = match outcome.take() {
                Some(known) => known,
                None => self.run_activity(call, delivery).await?,
            };
            // The journal write replaces this version: its outbox, unless known sent, rides along
            // (the step that follows sends it).
            let (warm, inherited) = self.take_unsent_outbox(record);
            let mut next = record.clone();
            next.outbox = inherited;
            next.version += 1;
            next.updated_at = self.clock.now();
            let journal = |next: &mut InstanceRecord, outcome: CallOutcome| {
                if let Some(pending) = next.waiting.calls.get_mut(call.id) {
                    pending.outcome = Some(outcome);
                }
            };
            journal(&mut next, result.clone());
            let outbox_bytes = next.outbox.iter().map(crate::text::json_len).sum();
            if next.stored_size_bound(outbox_bytes) > MAX_RECORD_BYTES {
                let reason = format!(
                    "{} output is about {} bytes, too large to journal in the instance record",
                    call.activity,
                    crate::text::json_len(&result)
                );
                journal(&mut next, CallOutcome::Failed { reason });
            }
            next.remember_transition("call_journaled", call.activity, 0);
            self.keep_history(&mut next.outbox);
            let version_read = record.version;
            match self.store.save(&next, Some(version_read)).await? {
                SaveOutcome::Saved => {
                    let warm = super::WarmState {
                        outbox_sent: next.outbox.is_empty(),
                        decoded: warm.and_then(|w| w.decoded),
                        record: None,
                    };
                    self.warm.put(&next.id, next.version, warm);
                    *current = Some(next);
                    return Ok(None);
                }
                SaveOutcome::Conflict { current: latest } => {
                    // Keep the outcome in hand: if the call is still unjournaled on the record
                    // that won, it is journaled without running the activity again. Past the
                    // conflict budget, keep trying while the invocation has time: deferring
                    // drops the outcome, and the deferred message runs the activity again.
                    outcome = Some(result);
                    let pause = self.backoff(attempt.min(MAX_CONFLICT_ATTEMPTS));
                    let time_for_another = delivery.deadline.is_some_and(|deadline| {
                        self.clock.now().plus(pause + DEADLINE_RESERVE) < deadline
                    });
                    if attempt >= MAX_CONFLICT_ATTEMPTS && !time_for_another {
                        return Ok(Some(format!(
                            "{}: {attempt} conflicting saves while journaling its outcome",
                            call.id
                        )));
                    }
                    self.clock.sleep(pause).await;
                    *current = match latest {
                        Some(record) => Some(*record),
                        None => self.store.load(&next.id).await?,
                    };
                }
            }
        }
    }

    /// Runs one activity within its time limit and what is left of the invocation. A retryable
    /// error is passed up (the message will be redelivered), until the call has been tried
    /// [`MAX_ACTIVITY_TRIES`] times; a terminal one (or the last retryable one) becomes the
    /// call's outcome.
    async fn run_activity(&self, call: CallMessage<'_>, delivery: Delivery) -> Result<CallOutcome> {
        let activity = call.activity;
        let Some(runner) = self.activities.get(activity) else {
            return Ok(CallOutcome::Failed {
                reason: format!(
                    "no activity {activity:?} in this runtime (it has: {})",
                    self.activities.names().join(", ")
                ),
            });
        };
        let now = self.clock.now();
        let left = delivery
            .deadline
            .map(|deadline| now.until(deadline).saturating_sub(DEADLINE_RESERVE));
        let limit = left.map_or(runner.time_limit(), |left| left.min(runner.time_limit()));
        if limit.is_zero() {
            // Not a try: it never ran.
            return Err(Error::retryable(format!(
                "activity {activity}: no time left in this invocation to run it"
            )));
        }
        let info = CallInfo {
            id: call.id.clone(),
            attempt: delivery.receive_count,
            time_limit: limit,
        };
        let result = match within(&self.clock, limit, runner.run(call.input.clone(), &info)).await {
            Some(result) => result,
            None => Err(Error::retryable(format!(
                "activity {activity} did not finish within {} s",
                limit.as_secs_f64()
            ))),
        };
        match result {
            Ok(output) => Ok(CallOutcome::Completed { output }),
            Err(error) if error.is_retryable() && delivery.receive_count < MAX_ACTIVITY_TRIES => {
                Err(error.context(format!("activity {activity}")))
            }
            Err(error) if error.is_retryable() => {
                tracing::warn!(activity, reason = %error.reason, "giving up on the activity");
                Ok(CallOutcome::Failed {
                    reason: format!(
                        "gave up after {} tries: {}",
                        delivery.receive_count, error.reason
                    ),
                })
            }
            Err(error) => Ok(CallOutcome::Failed {
                reason: error.reason,
            }),
        }
    }
}
