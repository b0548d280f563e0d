//! The sample scenario: one of each kind of interaction, run by `make demo` and checked under
//! faults by the simulation test.

use crate::approval::ApprovalInput;
use crate::countdown::{CountdownInput, Extend, Notify};
use crate::fan_out::FanOutInput;
use crate::{Approval, Countdown, FanOut};
use reanimate_core::ports::InboxEntry;
use reanimate_core::sim::{Simulation, User};
use reanimate_core::{Atom, Envelope, Event, InstanceId, MessageId, Result};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

fn envelope(id: &str, target: &str, atom: &str, event: Event) -> Result<Envelope> {
    Ok(Envelope::new(
        MessageId::new(id)?,
        InstanceId::new(target)?,
        atom,
        event,
    ))
}

fn start<A: Atom>(sim: &mut Simulation, instance: &str, input: &A::Input) -> Result<()>
where
    A::Input: Serialize,
{
    let input =
        serde_json::to_value(input).map_err(|e| reanimate_core::Error::terminal(e.to_string()))?;
    sim.send(envelope(
        &format!("client:{instance}:start"),
        instance,
        A::TYPE,
        Event::Started {
            input,
            parent: None,
        },
    )?);
    Ok(())
}

/// Sends the scenario's starts, signals and cancels into `sim`.
pub fn load(sim: &mut Simulation) -> Result<()> {
    // A week of daily ticks, extended by a day an hour in, plus a signal it does not know.
    start::<Countdown>(
        sim,
        "countdown-week",
        &CountdownInput {
            from: 7,
            interval_secs: DAY,
            notify: None,
        },
    )?;
    let extend = Event::signal("extend", json!(Extend { by: 1 }));
    sim.send_after(
        Duration::from_secs(HOUR),
        envelope(
            "client:countdown-week:extend",
            "countdown-week",
            Countdown::TYPE,
            extend,
        )?,
    );
    let unknown = Event::signal("pause", Value::Null);
    sim.send_after(
        Duration::from_secs(2 * HOUR),
        envelope(
            "client:countdown-week:pause",
            "countdown-week",
            Countdown::TYPE,
            unknown,
        )?,
    );

    // Extensions that arrive exactly when a tick fires: under reordering the re-armed timer
    // races the old one's firing, which must be recognised as stale.
    start::<Countdown>(
        sim,
        "countdown-race",
        &CountdownInput {
            from: 3,
            interval_secs: HOUR,
            notify: None,
        },
    )?;
    for hour in [1, 2] {
        let extend = Event::signal("extend", json!(Extend { by: 1 }));
        let id = format!("client:countdown-race:extend-{hour}");
        sim.send_after(
            Duration::from_secs(hour * HOUR),
            envelope(&id, "countdown-race", Countdown::TYPE, extend)?,
        );
    }

    // Fan-out to four paging workers (started three per invocation) that report every item;
    // one of them fails halfway.
    let fan_out = FanOutInput {
        workers: 4,
        items_per_worker: 6,
        page_size: 3,
        failing_worker: Some(2),
        countdown: None,
        spawn_per_step: 3,
        cancel_first: false,
        hold_secs: None,
        checksums: false,
        workers_start_at: None,
    };
    start::<FanOut>(sim, "fan-out", &fan_out)?;

    // Approvals: answered (after a refused answer and a reminder), never answered, withdrawn.
    let ask = |question: &str, timeout_secs, remind_after_secs| ApprovalInput {
        question: question.into(),
        timeout_secs,
        remind_after_secs,
        person: None,
    };
    start::<Approval>(
        sim,
        "approval-answered",
        &ask("Ship release 1.4?", 2 * DAY, Some(12 * HOUR)),
    )?;
    start::<Approval>(sim, "approval-silent", &ask("Rotate the keys?", DAY, None))?;
    start::<Approval>(
        sim,
        "approval-withdrawn",
        &ask("Book the venue?", 3 * DAY, None),
    )?;
    let notify = Notify {
        id: "approval-withdrawn".into(),
        atom: "approval".into(),
        signal: "withdraw".into(),
    };
    start::<Countdown>(
        sim,
        "countdown-withdraw",
        &CountdownInput {
            from: 2,
            interval_secs: 5 * MINUTE,
            notify: Some(notify),
        },
    )?;

    // Three week-long countdowns under one parent, cancelled two hours in.
    let long = CountdownInput {
        from: 7,
        interval_secs: DAY,
        notify: None,
    };
    let cancelled = FanOutInput {
        workers: 3,
        items_per_worker: 0,
        page_size: 1,
        failing_worker: None,
        countdown: Some(long),
        spawn_per_step: 100,
        cancel_first: false,
        hold_secs: None,
        checksums: false,
        workers_start_at: None,
    };
    start::<FanOut>(sim, "fan-out-cancelled", &cancelled)?;
    let cancel = Event::CancelRequested {
        reason: "the user changed their mind".into(),
    };
    sim.send_after(
        Duration::from_secs(2 * HOUR),
        envelope(
            "client:fan-out-cancelled:cancel",
            "fan-out-cancelled",
            FanOut::TYPE,
            cancel,
        )?,
    );

    // A fan-in of 200 workers, each finishing with an activity, then a hold of three days with
    // an hourly heartbeat (a recurring timer). The parent receives over 600 messages. A
    // countdown signals it an hour in and finishes: a late copy of the countdown's last message,
    // days later, makes a process that does not know that outbox went out send the signal again.
    // Clients nudge it five times.
    let fan_in = FanOutInput {
        workers: 200,
        items_per_worker: 1,
        page_size: 1,
        failing_worker: None,
        countdown: None,
        spawn_per_step: 50,
        cancel_first: false,
        hold_secs: Some(3 * DAY + 30 * MINUTE),
        checksums: true,
        workers_start_at: None,
    };
    start::<FanOut>(sim, "fan-in-200", &fan_in)?;
    let ping = Notify {
        id: "fan-in-200".into(),
        atom: FanOut::TYPE.into(),
        signal: "ping".into(),
    };
    start::<Countdown>(
        sim,
        "countdown-pinger",
        &CountdownInput {
            from: 1,
            interval_secs: HOUR,
            notify: Some(ping),
        },
    )?;
    for hour in 1..=5 {
        let nudge = Event::signal("nudge", json!(hour));
        let id = format!("client:fan-in-200:nudge-{hour}");
        sim.send_after(
            Duration::from_secs(hour * HOUR),
            envelope(&id, "fan-in-200", FanOut::TYPE, nudge)?,
        );
    }

    // The first of three week-long children is cancelled by the step after the one that started
    // it: the cancel may overtake the child's start (a tombstone then refuses the start).
    let race = FanOutInput {
        workers: 3,
        items_per_worker: 0,
        page_size: 1,
        failing_worker: None,
        countdown: Some(CountdownInput {
            from: 7,
            interval_secs: DAY,
            notify: None,
        }),
        spawn_per_step: 1,
        cancel_first: true,
        hold_secs: None,
        checksums: false,
        workers_start_at: None,
    };
    start::<FanOut>(sim, "cancel-race", &race)?;
    Ok(())
}

/// The user of the scenario: answers by instance, at fixed delays after the question appears.
#[derive(Clone, Debug)]
pub struct ScriptedUser {
    answers: BTreeMap<String, Vec<(Duration, Value)>>,
}

impl Default for ScriptedUser {
    fn default() -> Self {
        let mut answers = BTreeMap::new();
        answers.insert(
            "approval-answered".to_string(),
            vec![
                // Refused by the inbox: not an object of the schema.
                (Duration::from_secs(HOUR), json!("yes")),
                (
                    Duration::from_secs(20 * HOUR),
                    json!({"approved": true, "comment": "ship it"}),
                ),
            ],
        );
        // Arrives after the countdown withdrew the request: refused as no longer open.
        answers.insert(
            "approval-withdrawn".to_string(),
            vec![(Duration::from_secs(DAY), json!({"approved": true}))],
        );
        Self { answers }
    }
}

impl User for ScriptedUser {
    fn on_request(&mut self, entry: &InboxEntry) -> Vec<(Duration, Value)> {
        self.answers
            .get(entry.request.instance.as_str())
            .cloned()
            .unwrap_or_default()
    }
}
