//! `fan-out` starts N children and collects them (fan-in); `worker` processes items a page per
//! invocation (continue with a cursor), reports each item to its parent as progress, and can be
//! told to fail. Exercises spawn, progress, continue, child completed and child failed.

use crate::countdown::{Countdown, CountdownInput};
use reanimate_core::{Atom, AtomEvent, Context, Result, Step};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct FanOut;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutInput {
    pub workers: u32,
    #[serde(default)]
    pub items_per_worker: u32,
    #[serde(default = "default_page")]
    pub page_size: u32,
    /// Index of a worker that fails halfway.
    #[serde(default)]
    pub failing_worker: Option<u32>,
    /// Start countdowns instead of workers (long-lived children, e.g. to cancel).
    #[serde(default)]
    pub countdown: Option<CountdownInput>,
    /// Children started per invocation; more are started by continuing. A step's outbox is saved
    /// with the instance record, so it must stay well inside the record's size limit.
    #[serde(default = "default_spawn_per_step")]
    pub spawn_per_step: u32,
}

fn default_spawn_per_step() -> u32 {
    100
}

fn default_page() -> u32 {
    10
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutState {
    /// The input, kept to start the remaining children in later invocations.
    pub plan: Option<FanOutInput>,
    pub spawned: u32,
    pub expected: u32,
    /// Aggregates only, so the state stays small however many children there are: the runtime
    /// already tracks which children are still pending.
    pub progress_reports: u32,
    pub progress_sum: u64,
    pub completed: u32,
    pub completed_sum: u64,
    /// Failures are kept by tag with their reason (they are few and worth reporting).
    pub failed: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutOutput {
    pub completed: u32,
    /// Sum of the completed children's `sum` outputs.
    pub completed_sum: u64,
    pub failed: u32,
    pub progress_reports: u32,
    pub progress_sum: u64,
}

impl Atom for FanOut {
    const TYPE: &'static str = "fan-out";
    type Input = FanOutInput;
    type State = FanOutState;
    type Output = FanOutOutput;

    fn step(
        &self,
        state: &mut FanOutState,
        event: AtomEvent<FanOutInput>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<FanOutOutput>> {
        match event {
            AtomEvent::Started(input) => {
                state.expected = input.workers;
                state.plan = Some(input);
                spawn_next_page(state, ctx);
            }
            AtomEvent::Continue { .. } => spawn_next_page(state, ctx),
            AtomEvent::ChildProgress { payload, .. } => {
                state.progress_reports += 1;
                state.progress_sum += payload.get("value").and_then(Value::as_u64).unwrap_or(0);
            }
            AtomEvent::ChildCompleted { output, .. } => {
                state.completed += 1;
                state.completed_sum += output.get("sum").and_then(Value::as_u64).unwrap_or(0);
            }
            AtomEvent::ChildFailed { tag, reason, .. } => {
                state.failed.insert(tag, reason);
            }
            _ => {}
        }
        if state.completed as usize + state.failed.len() == state.expected as usize {
            return Ok(Step::Complete(FanOutOutput {
                completed: state.completed,
                failed: state.failed.len() as u32,
                progress_reports: state.progress_reports,
                progress_sum: state.progress_sum,
                completed_sum: state.completed_sum,
            }));
        }
        Ok(Step::Suspend)
    }
}

fn spawn_next_page(state: &mut FanOutState, ctx: &mut Context<'_>) {
    let Some(plan) = &state.plan else { return };
    let end = (state.spawned + plan.spawn_per_step.max(1)).min(plan.workers);
    for i in state.spawned..end {
        let tag = format!("w{i:04}");
        match &plan.countdown {
            Some(countdown) => {
                ctx.spawn::<Countdown>(tag, countdown);
            }
            None => {
                let items = plan.items_per_worker;
                let fail_at = (plan.failing_worker == Some(i)).then_some(items / 2);
                ctx.spawn::<Worker>(
                    tag,
                    &WorkerInput {
                        items,
                        page_size: plan.page_size,
                        fail_at,
                    },
                );
            }
        }
    }
    state.spawned = end;
    if state.spawned < plan.workers {
        ctx.continue_with(&state.spawned);
    }
}

#[derive(Clone, Debug, Default)]
pub struct Worker;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInput {
    pub items: u32,
    #[serde(default = "default_page")]
    pub page_size: u32,
    #[serde(default)]
    pub fail_at: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerState {
    pub next: u32,
    pub items: u32,
    pub page_size: u32,
    pub fail_at: Option<u32>,
    pub sum: u64,
    pub invocations: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerOutput {
    pub items: u32,
    pub sum: u64,
}

/// The value of item `k`: anything deterministic will do.
pub fn item_value(k: u32) -> u64 {
    u64::from(k.wrapping_mul(7).wrapping_add(3) % 10)
}

impl Atom for Worker {
    const TYPE: &'static str = "worker";
    type Input = WorkerInput;
    type State = WorkerState;
    type Output = WorkerOutput;

    fn step(
        &self,
        state: &mut WorkerState,
        event: AtomEvent<WorkerInput>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<WorkerOutput>> {
        match event {
            AtomEvent::Started(input) => {
                state.items = input.items;
                state.page_size = input.page_size.max(1);
                state.fail_at = input.fail_at;
            }
            AtomEvent::Continue { cursor } => {
                // The cursor and the state agree; the state is authoritative.
                debug_assert_eq!(cursor.as_u64(), Some(u64::from(state.next)));
            }
            _ => return Ok(Step::Suspend),
        }
        state.invocations += 1;
        let end = (state.next + state.page_size).min(state.items);
        for k in state.next..end {
            if state.fail_at == Some(k) {
                return Ok(Step::Fail(format!("item {k} is poisoned")));
            }
            let value = item_value(k);
            state.sum += value;
            ctx.report_progress(&serde_json::json!({"item": k, "value": value}));
        }
        state.next = end;
        if state.next < state.items {
            ctx.continue_with(&state.next);
            return Ok(Step::Suspend);
        }
        Ok(Step::Complete(WorkerOutput {
            items: state.items,
            sum: state.sum,
        }))
    }
}
