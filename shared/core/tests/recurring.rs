//! Recurring timers: armed once, they fire every period until cancelled, each firing applied
//! exactly once even when delivered twice. `Ticker` is a test atom.

use reanimate_core::sim::{Faults, SilentUser, Simulation};
use reanimate_core::{
    Atom, AtomEvent, Context, Envelope, InstanceId, MessageId, Registry, Result, Status, Step,
};
use serde_json::json;
use std::time::Duration;

struct Ticker;

impl Atom for Ticker {
    const TYPE: &'static str = "ticker";
    type Input = u32;
    type State = (u32, u32);
    type Output = u32;
    type Tag = String;

    fn start(&self, times: u32, ctx: &mut Context<'_>) -> Result<((u32, u32), Step<u32>)> {
        ctx.set_recurring_timer("tick", Duration::from_secs(3600));
        Ok(((0, times), Step::Suspend))
    }

    fn step(
        &self,
        state: &mut (u32, u32),
        event: AtomEvent<String>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<u32>> {
        match event {
            AtomEvent::TimerFired { name } if name == "tick" => {
                state.0 += 1;
                if state.0 == state.1 {
                    ctx.cancel_timer("tick");
                    return Ok(Step::Complete(state.0));
                }
            }
            _ => {}
        }
        Ok(Step::Suspend)
    }
}

fn run(seed: u64, faults: Faults) -> (Simulation, reanimate_core::sim::SimReport) {
    let mut sim = Simulation::new(Registry::new().with(Ticker), seed, faults);
    sim.send(Envelope::start(
        MessageId::new("start").unwrap_or_else(|e| panic!("{e}")),
        InstanceId::new("t").unwrap_or_else(|e| panic!("{e}")),
        "ticker",
        json!(3),
    ));
    let report = sim.run(&mut SilentUser).unwrap_or_else(|e| panic!("{e}"));
    (sim, report)
}

#[test]
fn a_recurring_timer_fires_every_period_until_cancelled() {
    let (sim, report) = run(1, Faults::none());
    let t = &sim.snapshot()["t"];
    assert_eq!(t.status, Status::Completed);
    assert_eq!(t.result, Some(json!(3)));
    assert_eq!(
        report.started_at.until(report.ended_at),
        Duration::from_secs(3 * 3600)
    );
    assert_eq!(sim.timers().armed(), 0, "cancelled: nothing left armed");
    assert_eq!(sim.timers().stats().0, 1, "armed once, not once per firing");
}

#[test]
fn duplicated_and_delayed_firings_are_each_applied_once() {
    for seed in 1..=50 {
        let (sim, _) = run(seed, Faults::chaos());
        let t = &sim.snapshot()["t"];
        assert_eq!(t.status, Status::Completed, "seed {seed}");
        assert_eq!(t.result, Some(json!(3)), "seed {seed}");
        assert_eq!(t.transitions, 4, "seed {seed}: start and three firings");
    }
}

/// Asks for a recurring timer of 90 s, which Scheduler's `rate()` cannot express.
struct BadTicker;

impl Atom for BadTicker {
    const TYPE: &'static str = "bad-ticker";
    type Input = ();
    type State = ();
    type Output = ();
    type Tag = String;

    fn start(&self, _: (), ctx: &mut Context<'_>) -> Result<((), Step<()>)> {
        ctx.set_recurring_timer("tick", Duration::from_secs(90));
        Ok(((), Step::Suspend))
    }

    fn step(&self, _: &mut (), _: AtomEvent<String>, _: &mut Context<'_>) -> Result<Step<()>> {
        Ok(Step::Suspend)
    }
}

#[test]
fn a_period_that_is_not_whole_minutes_fails_the_instance_with_the_reason() {
    let mut sim = Simulation::new(Registry::new().with(BadTicker), 1, Faults::none());
    sim.send(Envelope::start(
        MessageId::new("start").unwrap_or_else(|e| panic!("{e}")),
        InstanceId::new("b").unwrap_or_else(|e| panic!("{e}")),
        "bad-ticker",
        json!(null),
    ));
    sim.run(&mut SilentUser).unwrap_or_else(|e| panic!("{e}"));
    let b = &sim.snapshot()["b"];
    assert_eq!(b.status, Status::Failed);
    let error = b.error.clone().unwrap_or_default();
    assert!(
        error.contains("whole minutes, at least one (got 90s)"),
        "{error}"
    );
    assert_eq!(sim.timers().armed(), 0);
}
