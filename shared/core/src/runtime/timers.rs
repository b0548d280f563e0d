//! Timers: `ctx.set_timer_at`, `ctx.set_recurring_timer`, `ctx.cancel_timer`, and their firings.
//!
//! Guards: a firing is applied only while that very arming is pending under its name (re-arming
//! gets a new id), never before it is due (an early firing is deferred), and a recurring firing
//! only if it is later than the last one applied. A recurring firing for an arming that is no
//! longer pending deletes its schedule, so a schedule re-created by a late send cannot live on.

use super::draft::{Draft, Gate, Lowered, WaitChange};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::{Event, RawEvent};
use crate::ids::{CommandSlot, InstanceId, MessageId, TimerId};
use crate::record::{Effect, InstanceRecord, PendingTimer};
use crate::time::Timestamp;
use std::collections::BTreeMap;
use std::time::Duration;

/// Longest timer name: the name travels in every firing's message (and a Scheduler input).
pub const MAX_TIMER_NAME_BYTES: usize = 256;

fn check_name(name: &str) -> Result<()> {
    if name.len() > MAX_TIMER_NAME_BYTES {
        return Err(Error::terminal(format!(
            "timer name of {} bytes is over the {MAX_TIMER_NAME_BYTES}-byte limit",
            name.len()
        )));
    }
    Ok(())
}

pub(super) fn timer_envelope(id: &InstanceId, atom: &str, name: &str, timer: &TimerId) -> Envelope {
    let event = Event::TimerFired {
        name: name.to_string(),
        timer: timer.clone(),
        fired_for: None,
    };
    Envelope::new(MessageId::for_timer(timer), id.clone(), atom, event)
}

pub(super) fn lower_set(
    record: &InstanceRecord,
    slot: CommandSlot<'_>,
    name: &str,
    at: Timestamp,
    out: &mut Lowered,
) -> Result<()> {
    check_name(name)?;
    arm_at(record, slot, name, at, None, out);
    Ok(())
}

/// Arms a one-time timer; `deadline_of` makes it a request's deadline.
pub(super) fn arm_at(
    record: &InstanceRecord,
    slot: CommandSlot<'_>,
    name: &str,
    at: Timestamp,
    deadline_of: Option<crate::ids::RequestId>,
    out: &mut Lowered,
) {
    let timer = slot.timer();
    let envelope = timer_envelope(&record.id, &record.atom, name, &timer);
    out.effects.push(Effect::ScheduleTimer {
        timer: timer.clone(),
        at,
        envelope,
    });
    out.waiting.push(WaitChange::Timer(
        name.to_string(),
        PendingTimer {
            id: timer,
            due: at,
            every_secs: None,
            deadline_of,
            last_fired: None,
        },
    ));
}

pub(super) fn lower_recurring(
    record: &InstanceRecord,
    slot: CommandSlot<'_>,
    name: &str,
    every: Duration,
    now: Timestamp,
    out: &mut Lowered,
) -> Result<()> {
    check_name(name)?;
    let timer = slot.timer();
    let envelope = timer_envelope(&record.id, &record.atom, name, &timer);
    let first = now.plus(every);
    out.effects.push(Effect::ScheduleRecurring {
        timer: timer.clone(),
        first,
        every_secs: every.as_secs(),
        envelope,
    });
    out.waiting.push(WaitChange::Timer(
        name.to_string(),
        PendingTimer {
            id: timer,
            due: first,
            every_secs: Some(every.as_secs()),
            deadline_of: None,
            last_fired: None,
        },
    ));
    Ok(())
}

pub(super) fn lower_cancel(name: &str, out: &mut Lowered) {
    out.waiting.push(WaitChange::CancelTimer(name.to_string()));
}

/// A finishing instance disarms every timer it had.
pub(super) fn on_finish(timers: &BTreeMap<String, PendingTimer>, effects: &mut Vec<Effect>) {
    for timer in timers.values() {
        effects.push(Effect::CancelTimer {
            timer: timer.id.clone(),
        });
    }
}

/// The scheduled time of a recurring firing: its `fired_for`, or (from an older runtime) the
/// suffix of its message id, `timer:{timer}@{time}`.
fn scheduled_time(env: &Envelope, fired_for: Option<&str>) -> Option<Timestamp> {
    fired_for
        .or_else(|| env.id.as_str().rsplit_once('@').map(|(_, at)| at))
        .and_then(Timestamp::parse_utc)
}

/// A firing of an arming that is no longer pending. A recurring one deletes its schedule: only a
/// schedule re-created after its cancel (a late send of an old outbox) can still be firing.
pub(super) fn stale_firing(env: &Envelope) -> Gate {
    let Event::TimerFired {
        name,
        timer,
        fired_for,
    } = &env.event
    else {
        return Gate::ignore("not a timer firing");
    };
    let reason = format!("timer {name} ({timer}) is no longer pending");
    if fired_for.is_some() {
        return Gate::Drop(
            super::Disposition::Ignored {
                reason: format!("{reason}; deleting its recurring schedule"),
            },
            vec![Effect::CancelTimer {
                timer: timer.clone(),
            }],
        );
    }
    Gate::ignore(reason)
}

/// How long until `due`, in whole seconds rounded up (what a queue delay can express).
fn until(now: Timestamp, due: Timestamp) -> Duration {
    Duration::from_secs(now.until(due).as_millis().div_ceil(1000) as u64)
}

impl Draft<'_> {
    pub(super) fn gate_timer(&mut self, env: &Envelope) -> Result<Gate> {
        let Event::TimerFired {
            name,
            timer,
            fired_for,
        } = &env.event
        else {
            return Err(Error::terminal("not a timer firing"));
        };
        let now = self.now;
        let Some(pending) = self
            .record
            .waiting
            .timers
            .get_mut(name)
            .filter(|pending| pending.id == *timer)
        else {
            return Ok(stale_firing(env));
        };
        if let Some(every) = pending.every_secs {
            let Some(at) = scheduled_time(env, fired_for.as_deref()) else {
                return Err(Error::terminal(format!(
                    "recurring timer {name} fired without its scheduled time"
                )));
            };
            if pending.last_fired.is_some_and(|last| at <= last) {
                return Ok(Gate::duplicate());
            }
            if at > now {
                return Ok(Gate::Defer(
                    until(now, at),
                    format!("timer {name} arrived early"),
                ));
            }
            // A recurring timer stays armed; each firing is its own message.
            pending.last_fired = Some(at);
            pending.due = at.plus(Duration::from_secs(every));
            self.step(RawEvent::TimerFired { name: name.clone() })?;
            return Ok(Gate::Apply);
        }
        if pending.due > now {
            let delay = until(now, pending.due);
            return Ok(Gate::Defer(delay, format!("timer {name} arrived early")));
        }
        let pending = self
            .record
            .waiting
            .timers
            .remove(name)
            .ok_or_else(|| Error::terminal("timer vanished"))?;
        match pending.deadline_of {
            Some(request) => self.expire_request(request),
            None => {
                self.step(RawEvent::TimerFired { name: name.clone() })?;
                Ok(Gate::Apply)
            }
        }
    }
}
