//! `countdown`: ticks down on a timer; a signal can extend it; on reaching zero it may signal
//! another instance. Exercises timers, signals (in and out) and cancellation.

use reanimate_core::{Atom, AtomEvent, Context, InstanceRef, Result, Step, Timestamp};
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct Countdown;

/// Another instance to tell when the countdown ends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notify {
    pub id: String,
    pub atom: String,
    pub signal: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountdownInput {
    pub from: u32,
    pub interval_secs: u64,
    #[serde(default)]
    pub notify: Option<Notify>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountdownState {
    pub remaining: u32,
    pub interval_secs: u64,
    pub ticks: u32,
    pub extended_by: u32,
    pub ignored_signals: u32,
    pub notify: Option<Notify>,
    /// The start time rounded down to a whole interval: ticks fall at `base + n × interval`,
    /// whatever the delivery jitter.
    pub base: Timestamp,
    pub started_hour: u64,
    /// Whole hours from start to the last tick: a stale tick applied would end it early.
    pub hours_taken: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountdownOutput {
    pub ticks: u32,
    pub extended_by: u32,
    pub hours_taken: u64,
}

/// Payload of the `extend` signal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extend {
    pub by: u32,
}

const TICK: &str = "tick";

fn hour_of(t: Timestamp) -> u64 {
    t.as_millis() / 3_600_000
}

impl Countdown {
    /// Finishes when nothing remains, else arms the next tick.
    fn next(state: &mut CountdownState, ctx: &mut Context<'_>) -> Step<CountdownOutput> {
        if state.remaining == 0 {
            state.hours_taken = hour_of(ctx.now()) - state.started_hour;
            if let Some(notify) = &state.notify
                && let Ok(id) = reanimate_core::InstanceId::new(notify.id.clone())
            {
                let target = InstanceRef {
                    id,
                    atom: notify.atom.clone(),
                };
                ctx.signal(
                    target,
                    notify.signal.clone(),
                    &serde_json::json!({"ticks": state.ticks}),
                );
            }
            return Step::Complete(CountdownOutput {
                ticks: state.ticks,
                extended_by: state.extended_by,
                hours_taken: state.hours_taken,
            });
        }
        // Re-armed after every event at the same absolute time: an extension that races a firing
        // tick replaces it, and the runtime must drop the replaced tick's late firing.
        let next = state.base.plus(Duration::from_secs(
            state.interval_secs * u64::from(state.ticks + 1),
        ));
        ctx.set_timer_at(TICK, next);
        Step::Suspend
    }
}

impl Atom for Countdown {
    const TYPE: &'static str = "countdown";
    type Input = CountdownInput;
    type State = CountdownState;
    type Output = CountdownOutput;
    /// A countdown starts no children and calls nothing.
    type Tag = String;

    fn start(
        &self,
        input: CountdownInput,
        ctx: &mut Context<'_>,
    ) -> Result<(CountdownState, Step<CountdownOutput>)> {
        let interval_ms = input.interval_secs.max(1) * 1000;
        let mut state = CountdownState {
            remaining: input.from,
            interval_secs: input.interval_secs,
            ticks: 0,
            extended_by: 0,
            ignored_signals: 0,
            notify: input.notify,
            base: Timestamp::from_millis(ctx.now().as_millis() / interval_ms * interval_ms),
            started_hour: hour_of(ctx.now()),
            hours_taken: 0,
        };
        let step = Self::next(&mut state, ctx);
        Ok((state, step))
    }

    fn step(
        &self,
        state: &mut CountdownState,
        event: AtomEvent<String>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<CountdownOutput>> {
        match event {
            AtomEvent::TimerFired { name } if name == TICK => {
                state.remaining = state.remaining.saturating_sub(1);
                state.ticks += 1;
            }
            AtomEvent::Signal { name, payload } if name == "extend" => {
                match payload.decode::<Extend>() {
                    Ok(Extend { by }) => {
                        state.remaining += by;
                        state.extended_by += by;
                    }
                    Err(_) => {
                        state.ignored_signals += 1;
                        return Ok(Step::Suspend);
                    }
                }
            }
            AtomEvent::Signal { .. } => {
                state.ignored_signals += 1;
                return Ok(Step::Suspend);
            }
            _ => return Ok(Step::Suspend),
        }
        Ok(Self::next(state, ctx))
    }
}
