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
}

fn default_page() -> u32 {
    10
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutState {
    pub expected: u32,
    /// Progress reports received, per child tag.
    pub progress: BTreeMap<String, u32>,
    pub progress_sum: u64,
    pub completed: BTreeMap<String, Value>,
    pub failed: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutOutput {
    pub completed: u32,
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
                for i in 0..input.workers {
                    let tag = format!("w{i:04}");
                    match &input.countdown {
                        Some(countdown) => {
                            ctx.spawn::<Countdown>(tag, countdown);
                        }
                        None => {
                            let items = input.items_per_worker;
                            let fail_at = (input.failing_worker == Some(i)).then_some(items / 2);
                            ctx.spawn::<Worker>(
                                tag,
                                &WorkerInput {
                                    items,
                                    page_size: input.page_size,
                                    fail_at,
                                },
                            );
                        }
                    }
                }
            }
            AtomEvent::ChildProgress { tag, payload, .. } => {
                *state.progress.entry(tag).or_default() += 1;
                state.progress_sum += payload.get("value").and_then(Value::as_u64).unwrap_or(0);
            }
            AtomEvent::ChildCompleted { tag, output, .. } => {
                state.completed.insert(tag, output);
            }
            AtomEvent::ChildFailed { tag, reason, .. } => {
                state.failed.insert(tag, reason);
            }
            _ => {}
        }
        if state.completed.len() + state.failed.len() == state.expected as usize {
            return Ok(Step::Complete(FanOutOutput {
                completed: state.completed.len() as u32,
                failed: state.failed.len() as u32,
                progress_reports: state.progress.values().sum(),
                progress_sum: state.progress_sum,
            }));
        }
        Ok(Step::Suspend)
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
