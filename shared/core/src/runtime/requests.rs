//! Requests to the user: `ctx.ask_user`, the answer, and the deadline.
//!
//! The inbox decides between an answer and a deadline: the client records an answer with a write
//! conditioned on the request being open (and its deadline not passed), then sends it; the runtime
//! closes an expired request with a write conditioned the same way. So the answer the inbox holds
//! is the one the instance applies: an answer message is applied with the answer *recorded in the
//! inbox*, and a deadline that finds an answer recorded first applies that answer instead.
//!
//! Guards: an answer is applied only while its request is pending, only if the inbox recorded it,
//! and only if it validates against the request's JSON Schema (else the message is refused and the
//! instance is unchanged, so the user can answer again).

use super::draft::{Draft, Gate, Lowered, WaitChange};
use super::{Disposition, Runtime};
use crate::atom::{Ask, RESERVED_TIMER_PREFIX};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::{Event, RawEvent};
use crate::ids::{CommandSlot, RequestId};
use crate::ports::{Clock, Dispatcher, Inbox, InstanceStore, RequestStatus, TimerService};
use crate::record::{Effect, InstanceRecord, PendingRequest, RequestOutcome, UserRequest};
use crate::schema;
use crate::time::Timestamp;
use std::collections::BTreeMap;

pub(super) fn lower_ask(
    record: &InstanceRecord,
    slot: CommandSlot<'_>,
    ask: &Ask,
    now: Timestamp,
    out: &mut Lowered,
) -> Result<()> {
    schema::check_schema(&ask.schema)?;
    let request = slot.request();
    let deadline_timer = ask
        .deadline
        .map(|_| format!("{RESERVED_TIMER_PREFIX}deadline:{request}"));
    out.effects.push(Effect::OpenRequest {
        request: UserRequest {
            id: request.clone(),
            instance: record.id.clone(),
            atom: record.atom.clone(),
            kind: ask.kind.clone(),
            prompt: ask.prompt.clone(),
            schema: ask.schema.clone(),
            deadline: ask.deadline,
            created_at: now,
            person: ask.person.clone(),
        },
    });
    if let (Some(at), Some(name)) = (ask.deadline, &deadline_timer) {
        super::timers::arm_at(record, slot, name, at, Some(request.clone()), out);
    }
    out.waiting.push(WaitChange::Request(
        request,
        PendingRequest {
            kind: ask.kind.clone(),
            schema: ask.schema.clone(),
            deadline_timer,
        },
    ));
    Ok(())
}

/// A finishing instance withdraws its open requests.
pub(super) fn on_finish(requests: &BTreeMap<RequestId, PendingRequest>, effects: &mut Vec<Effect>) {
    for request in requests.keys() {
        effects.push(Effect::CloseRequest {
            request: request.clone(),
            outcome: RequestOutcome::Withdrawn,
        });
    }
}

impl Draft<'_> {
    pub(super) fn gate_answer(&mut self, env: &Envelope) -> Result<Gate> {
        let Event::UserAnswered { request, answer } = &env.event else {
            return Err(Error::terminal("not an answer"));
        };
        let Some(pending) = self.record.waiting.requests.get(request) else {
            return Ok(Gate::ignore(format!(
                "request {request} is no longer pending"
            )));
        };
        // A refused answer leaves the instance as it was: the user can answer again.
        schema::validate_answer(&pending.schema, answer)
            .map_err(|e| e.context(format!("answer to {request} refused")))?;
        let pending = self
            .record
            .waiting
            .requests
            .remove(request)
            .ok_or_else(|| Error::terminal("request vanished"))?;
        if let Some(deadline) = pending.deadline_timer
            && let Some(timer) = self.record.waiting.timers.remove(&deadline)
        {
            self.effects.push(Effect::CancelTimer { timer: timer.id });
        }
        self.effects.push(Effect::CloseRequest {
            request: request.clone(),
            outcome: RequestOutcome::Answered,
        });
        self.step(RawEvent::UserAnswered {
            request: request.clone(),
            kind: pending.kind,
            answer: answer.clone(),
        })?;
        Ok(Gate::Apply)
    }

    /// The request's deadline fired and no answer was recorded before it (see
    /// [`Runtime::resolve_answer`]).
    pub(super) fn expire_request(&mut self, request: RequestId) -> Result<Gate> {
        let Some(pending) = self.record.waiting.requests.remove(&request) else {
            return Ok(Gate::ignore(format!(
                "request {request} is no longer pending"
            )));
        };
        self.effects.push(Effect::CloseRequest {
            request: request.clone(),
            outcome: RequestOutcome::Expired,
        });
        self.step(RawEvent::RequestExpired {
            request,
            kind: pending.kind,
        })?;
        Ok(Gate::Apply)
    }
}

impl<S, D, T, I, C> Runtime<S, D, T, I, C>
where
    S: InstanceStore,
    D: Dispatcher,
    T: TimerService,
    I: Inbox,
    C: Clock,
{
    /// Lets the inbox decide between an answer and a deadline for a pending request:
    /// - an answer message is applied with the answer the inbox recorded; one the inbox did not
    ///   record is refused, one that came after the request expired is dropped;
    /// - a due deadline closes the request as expired in the inbox, unless an answer was recorded
    ///   first: then that answer is applied instead of the expiry.
    ///
    /// Returns a disposition when the message is to be dropped.
    pub(super) async fn resolve_answer(
        &self,
        envelope: &mut Envelope,
        current: Option<&InstanceRecord>,
    ) -> Result<Option<Disposition>> {
        let Some(record) = current.filter(|r| !r.status.is_finished()) else {
            return Ok(None);
        };
        match &mut envelope.event {
            Event::UserAnswered { request, answer }
                if record.waiting.requests.contains_key(request) =>
            {
                let entry = self.inbox.get(request).await?;
                match entry {
                    Some(entry) if entry.status == RequestStatus::Answered => match entry.answer {
                        Some(recorded) => {
                            if recorded != *answer {
                                tracing::warn!(%request, "the answer message differs from the answer recorded in the inbox; applying the recorded one");
                            }
                            *answer = recorded;
                            Ok(None)
                        }
                        None => Err(Error::terminal(format!(
                            "request {request} is answered in the inbox but holds no answer"
                        ))),
                    },
                    Some(entry) if entry.status != RequestStatus::Open => {
                        Ok(Some(Disposition::Ignored {
                            reason: format!(
                                "request {request} is {:?}: the answer came too late",
                                entry.status
                            ),
                        }))
                    }
                    _ => Err(Error::terminal(format!(
                        "the answer to {request} was not recorded in the inbox; an answer is recorded there before it is sent"
                    ))),
                }
            }
            Event::TimerFired { name, timer, .. } => {
                let Some(pending) = record.waiting.timers.get(name.as_str()) else {
                    return Ok(None);
                };
                let Some(request) = pending.deadline_of.clone() else {
                    return Ok(None);
                };
                let now = self.clock.now();
                if pending.id != *timer || pending.due > now {
                    return Ok(None);
                }
                if let Some(answer) = self.inbox.expire(&request, now).await? {
                    tracing::info!(%request, "an answer was recorded before the deadline; applying it");
                    envelope.event = Event::UserAnswered { request, answer };
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}

/// Whether [`Runtime::resolve_answer`] would expire a request in the inbox for this message (a
/// firing of a request's deadline timer that `record` holds): a write outside the record, so it is
/// never decided on a record that may be stale.
pub(super) fn expires_a_request(envelope: &Envelope, record: Option<&InstanceRecord>) -> bool {
    let Event::TimerFired { name, .. } = &envelope.event else {
        return false;
    };
    record
        .and_then(|r| r.waiting.timers.get(name.as_str()))
        .is_some_and(|pending| pending.deadline_of.is_some())
}
