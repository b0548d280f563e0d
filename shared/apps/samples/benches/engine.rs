//! `make bench`: steps per second of the in-memory engine on one thread (release build).
//!
//! - `state-1k`: one instance with a ~1 KB serde_json state re-running itself through the queue
//!   (continue with a cursor), each step decoding, changing and re-encoding its state.
//! - `fan-in-1000`: a parent starts 1,000 children (100 per invocation) that complete at once;
//!   2,010 steps per round.
//!
//! Every step is the full algorithm: load, dedupe, step, size checks, conditional save, send.

use reanimate_atoms::FanOut;
use reanimate_atoms::fan_out::FanOutInput;
use reanimate_core::sim::{Faults, Simulation, block_on};
use reanimate_core::{
    Atom, AtomEvent, Context, Envelope, InstanceId, MessageId, Registry, Result, Step,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Instant;

/// An atom whose state is about 1 KB of JSON.
struct Ledger;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Entry {
    account: String,
    balance: i64,
    tags: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct LedgerState {
    steps: u64,
    target: u64,
    entries: Vec<Entry>,
}

impl LedgerState {
    fn new(target: u64) -> Self {
        LedgerState {
            steps: 0,
            target,
            entries: (0..12)
                .map(|i| Entry {
                    account: format!("account-{i:04}-receivables"),
                    balance: i * 1_000,
                    tags: vec![
                        "ledger".into(),
                        format!("region-{}", i % 3),
                        "monthly-close".into(),
                    ],
                })
                .collect(),
        }
    }
}

impl Ledger {
    fn advance(state: &mut LedgerState, ctx: &mut Context<'_>) -> Step<u64> {
        state.steps += 1;
        let i = (state.steps % state.entries.len() as u64) as usize;
        state.entries[i].balance += 1;
        if state.steps >= state.target {
            return Step::Complete(state.steps);
        }
        ctx.continue_with(&state.steps);
        Step::Suspend
    }
}

impl Atom for Ledger {
    const TYPE: &'static str = "ledger";
    type Input = u64;
    type State = LedgerState;
    type Output = u64;
    type Tag = String;

    fn start(&self, target: u64, ctx: &mut Context<'_>) -> Result<(LedgerState, Step<u64>)> {
        let mut state = LedgerState::new(target);
        let step = Self::advance(&mut state, ctx);
        Ok((state, step))
    }

    fn step(
        &self,
        state: &mut LedgerState,
        _event: AtomEvent<String>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<u64>> {
        Ok(Self::advance(state, ctx))
    }
}

fn id<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Handles queued messages until none is left; returns how many were handled.
fn drain(sim: &Simulation) -> u64 {
    let mut handled = 0;
    while let Some(delivery) = sim.queue().receive(sim.now(), 0) {
        id(block_on(sim.runtime().handle(delivery.envelope)));
        handled += 1;
    }
    handled
}

fn state_1k(steps: u64) -> (u64, f64, usize) {
    let sim = Simulation::new(Registry::new().with(Ledger), 1, Faults::none());
    let start = Envelope::start(
        id(MessageId::new("s")),
        id(InstanceId::new("ledger-1")),
        Ledger::TYPE,
        json!(steps),
    );
    sim.queue().enqueue_at(start, sim.now());
    let t = Instant::now();
    let handled = drain(&sim);
    let secs = t.elapsed().as_secs_f64();
    let state_len = sim.store().all()[0].state.len();
    (handled, secs, state_len)
}

fn fan_in(rounds: u32, children: u32) -> (u64, f64) {
    let sim = Simulation::new(reanimate_atoms::registry(), 1, Faults::none());
    let input = FanOutInput {
        workers: children,
        items_per_worker: 0,
        page_size: 1,
        failing_worker: None,
        countdown: None,
        spawn_per_step: 100,
        cancel_first: false,
        hold_secs: None,
        checksums: false,
        workers_start_at: None,
    };
    let t = Instant::now();
    let mut handled = 0;
    for round in 0..rounds {
        let start = Envelope::start(
            id(MessageId::new(format!("s{round}"))),
            id(InstanceId::new(format!("fan-in-{round}"))),
            FanOut::TYPE,
            json!(input),
        );
        sim.queue().enqueue_at(start, sim.now());
        handled += drain(&sim);
    }
    (handled, t.elapsed().as_secs_f64())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; anything else is ignored.
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let steps = if quick { 20_000 } else { 300_000 };
    let rounds = if quick { 2 } else { 10 };
    println!("reanimate in-memory engine, one thread, release build");

    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "state-1k" {
        bench_state_1k(steps);
    }
    if only.is_empty() || only == "fan-in" {
        bench_fan_in(rounds);
    }
}

fn bench_state_1k(steps: u64) {
    state_1k(steps / 10); // warm-up
    let mut rates = Vec::new();
    let mut state_len = 0;
    for _ in 0..5 {
        let (handled, secs, len) = state_1k(steps);
        state_len = len;
        rates.push(handled as f64 / secs);
    }
    let rate = median(rates);
    println!(
        "state-1k     {rate:>9.0} steps/s  (median of 5 runs of {steps} steps; state {state_len} bytes of JSON)"
    );
    // The floor, on this machine in this run: serde_json alone on the same state.
    let (encodes, round_trips) = serde_floor(steps);
    println!(
        "  floor      {encodes:>9.0} encodes/s, {round_trips:.0} decode+change+encode/s of that state"
    );
    println!(
        "  ratio      a step costs {:.2}× an encode of its state, {:.2}× a decode+change+encode (goal: at most 2× an encode)",
        encodes / rate,
        round_trips / rate
    );
}

/// Encodes per second and decode + change + encode per second of the ledger's state with plain
/// serde_json (median of 5 runs of `n`).
fn serde_floor(n: u64) -> (f64, f64) {
    let state = LedgerState::new(u64::MAX);
    let mut json = serde_json::to_string(&state).unwrap_or_default();
    let mut encodes = Vec::new();
    let mut round_trips = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let mut bytes = 0;
        for _ in 0..n {
            bytes += std::hint::black_box(serde_json::to_string(&state).unwrap_or_default()).len();
        }
        encodes.push(n as f64 / t.elapsed().as_secs_f64());
        std::hint::black_box(bytes);
        let t = Instant::now();
        for _ in 0..n {
            let mut decoded: LedgerState = serde_json::from_str(&json).unwrap_or_default();
            decoded.steps += 1;
            decoded.entries[0].balance += 1;
            json = serde_json::to_string(std::hint::black_box(&decoded)).unwrap_or_default();
        }
        round_trips.push(n as f64 / t.elapsed().as_secs_f64());
    }
    (median(encodes), median(round_trips))
}

fn bench_fan_in(rounds: u32) {
    fan_in(1, 1_000); // warm-up
    let mut rates = Vec::new();
    let mut per_round = Vec::new();
    for _ in 0..5 {
        let (handled, secs) = fan_in(rounds, 1_000);
        rates.push(handled as f64 / secs);
        per_round.push(secs / f64::from(rounds) * 1e3);
    }
    println!(
        "fan-in-1000  {:>9.0} steps/s  ({:.1} ms per fan-out of 1,000 children and fan-in to one parent, 2,010 steps; median of 5 × {rounds} rounds)",
        median(rates),
        median(per_round)
    );
}
