//! `fan-out` starts N children and collects them (fan-in); `worker` processes items a page per
//! invocation (continue with a cursor), reports each item to its parent as progress, and can be
//! told to fail. Exercises spawn, progress, continue, child completed and child failed; with the
//! options the simulation uses, also a cancel racing a child's start, signals counted, a hold
//! with a recurring heartbeat, and an activity per worker.

use crate::countdown::{Countdown, CountdownInput};
use reanimate_core::{Atom, AtomEvent, CallType, Context, Failure, Result, Step, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

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
    /// Cancel the first child in the invocation after it was started: the cancel may overtake
    /// the child's start.
    #[serde(default)]
    pub cancel_first: bool,
    /// Once every child is done, wait this long (counting an hourly heartbeat) before completing.
    #[serde(default)]
    pub hold_secs: Option<u64>,
    /// Workers finish by asking the `sample.checksum` activity.
    #[serde(default)]
    pub checksums: bool,
    /// Workers wait until then before working: they all finish in the same moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers_start_at: Option<Timestamp>,
}

fn default_spawn_per_step() -> u32 {
    100
}

fn default_page() -> u32 {
    10
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutState {
    /// The input, kept to start the remaining children in later invocations.
    pub plan: FanOutInput,
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
    /// `ping` and `nudge` signals applied, heartbeats while holding.
    pub pings: u32,
    pub nudges: u32,
    pub beats: u32,
    pub holding: bool,
    pub first_child: Option<reanimate_core::InstanceId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FanOutOutput {
    pub completed: u32,
    /// Sum of the completed children's `sum` outputs.
    pub completed_sum: u64,
    pub failed: u32,
    pub progress_reports: u32,
    pub progress_sum: u64,
    #[serde(default)]
    pub pings: u32,
    #[serde(default)]
    pub nudges: u32,
    #[serde(default)]
    pub beats: u32,
}

const HOLD: &str = "hold";
const BEAT: &str = "beat";

impl Atom for FanOut {
    const TYPE: &'static str = "fan-out";
    type Input = FanOutInput;
    type State = FanOutState;
    type Output = FanOutOutput;
    /// `w0000`, `w0001`, …: opaque to the atom (it only counts), readable in the history.
    type Tag = String;

    fn start(
        &self,
        input: FanOutInput,
        ctx: &mut Context<'_>,
    ) -> Result<(FanOutState, Step<FanOutOutput>)> {
        let mut state = FanOutState {
            expected: input.workers,
            plan: input,
            spawned: 0,
            progress_reports: 0,
            progress_sum: 0,
            completed: 0,
            completed_sum: 0,
            failed: BTreeMap::new(),
            pings: 0,
            nudges: 0,
            beats: 0,
            holding: false,
            first_child: None,
        };
        spawn_next_page(&mut state, ctx);
        let step = settle(&mut state, ctx);
        Ok((state, step))
    }

    fn step(
        &self,
        state: &mut FanOutState,
        event: AtomEvent<String>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<FanOutOutput>> {
        match event {
            AtomEvent::Continue { .. } => {
                if let Some(first) = &state.first_child
                    && state.plan.cancel_first
                    && state.spawned == state.plan.spawn_per_step.max(1)
                {
                    ctx.cancel_child(first, "cancelled as soon as it was started");
                }
                spawn_next_page(state, ctx)
            }
            AtomEvent::ChildProgress { payload, .. } => {
                state.progress_reports += 1;
                state.progress_sum += payload.get("value").and_then(Value::as_u64).unwrap_or(0);
            }
            AtomEvent::ChildCompleted { output, .. } => {
                state.completed += 1;
                state.completed_sum += output.get("sum").and_then(Value::as_u64).unwrap_or(0);
            }
            AtomEvent::Signal { name, .. } => match name.as_str() {
                "ping" => state.pings += 1,
                "nudge" => state.nudges += 1,
                _ => {}
            },
            AtomEvent::TimerFired { name } if name == BEAT => state.beats += 1,
            AtomEvent::TimerFired { name } if name == HOLD => {
                ctx.cancel_timer(BEAT);
                return Ok(Step::Complete(output(state)));
            }
            _ => {}
        }
        Ok(settle(state, ctx))
    }

    /// A child's failure is counted, not propagated: the fan-in reports how many failed.
    fn failed(
        &self,
        state: &mut FanOutState,
        failure: Failure<String>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<FanOutOutput>> {
        if let Failure::Child { tag, reason, .. } = failure {
            state.failed.insert(tag, reason);
        }
        Ok(settle(state, ctx))
    }
}

/// Completes (or starts holding) once every child is done.
fn settle(state: &mut FanOutState, ctx: &mut Context<'_>) -> Step<FanOutOutput> {
    if state.completed as usize + state.failed.len() == state.expected as usize && !state.holding {
        if let Some(hold) = state.plan.hold_secs {
            state.holding = true;
            ctx.set_timer_after(HOLD, Duration::from_secs(hold));
            ctx.set_recurring_timer(BEAT, Duration::from_secs(3600));
            return Step::Suspend;
        }
        return Step::Complete(output(state));
    }
    Step::Suspend
}

fn output(state: &FanOutState) -> FanOutOutput {
    FanOutOutput {
        completed: state.completed,
        failed: state.failed.len() as u32,
        progress_reports: state.progress_reports,
        progress_sum: state.progress_sum,
        completed_sum: state.completed_sum,
        pings: state.pings,
        nudges: state.nudges,
        beats: state.beats,
    }
}

fn spawn_next_page(state: &mut FanOutState, ctx: &mut Context<'_>) {
    let plan = &state.plan;
    let end = (state.spawned + plan.spawn_per_step.max(1)).min(plan.workers);
    for i in state.spawned..end {
        let tag = format!("w{i:04}");
        let child = match &plan.countdown {
            Some(countdown) => ctx.spawn::<Countdown>(tag, countdown).id,
            None => {
                let items = plan.items_per_worker;
                let fail_at = (plan.failing_worker == Some(i)).then_some(items / 2);
                ctx.spawn::<Worker>(
                    tag,
                    &WorkerInput {
                        items,
                        page_size: plan.page_size,
                        fail_at,
                        checksum: plan.checksums,
                        start_at: plan.workers_start_at,
                    },
                )
                .id
            }
        };
        if i == 0 {
            state.first_child = Some(child);
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
    /// Finish by asking the `sample.checksum` activity for the sum's checksum.
    #[serde(default)]
    pub checksum: bool,
    /// Wait until then before working (so many workers can finish at the same moment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_at: Option<Timestamp>,
}

/// The timer a worker waits on when told when to start.
const GO: &str = "go";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerState {
    pub next: u32,
    pub items: u32,
    pub page_size: u32,
    pub fail_at: Option<u32>,
    pub sum: u64,
    pub invocations: u32,
    pub checksum: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerOutput {
    pub items: u32,
    pub sum: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<u64>,
}

/// The activity workers may ask (the sample of an activity: deterministic, so a run twice gives
/// the same answer).
pub const CHECKSUM: &str = "sample.checksum";

/// `sample.checksum`: the input number times 31, mod 1,000,003. Counts its runs per call id.
#[derive(Clone, Debug, Default)]
pub struct Checksum {
    pub runs: std::sync::Arc<std::sync::Mutex<BTreeMap<String, u32>>>,
}

impl Checksum {
    /// How many times each call ran.
    pub fn runs(&self) -> BTreeMap<String, u32> {
        self.runs.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl reanimate_core::Activity for Checksum {
    fn run<'a>(
        &'a self,
        input: Value,
        call: &'a reanimate_core::CallInfo,
    ) -> reanimate_core::BoxFuture<'a, Result<Value>> {
        if let Ok(mut runs) = self.runs.lock() {
            *runs.entry(call.id.to_string()).or_default() += 1;
        }
        Box::pin(async move {
            let n = input.as_u64().ok_or_else(|| {
                reanimate_core::Error::terminal(format!("checksum of {input}: not a number"))
            })?;
            Ok(Value::from(n.wrapping_mul(31) % 1_000_003))
        })
    }
}

/// The value of item `k`: anything deterministic will do.
pub fn item_value(k: u32) -> u64 {
    u64::from(k.wrapping_mul(7).wrapping_add(3) % 10)
}

/// [`CHECKSUM`] with its types.
#[derive(Debug)]
pub struct ChecksumCall;

impl CallType for ChecksumCall {
    const ACTIVITY: &'static str = CHECKSUM;
    type Input = u64;
    type Output = u64;
}

impl Worker {
    /// Works through the next page; continues, calls for the checksum, or completes.
    fn work(state: &mut WorkerState, ctx: &mut Context<'_>) -> Step<WorkerOutput> {
        state.invocations += 1;
        let end = (state.next + state.page_size).min(state.items);
        for k in state.next..end {
            if state.fail_at == Some(k) {
                return Step::Fail(format!("item {k} is poisoned"));
            }
            let value = item_value(k);
            state.sum += value;
            ctx.report_progress(&serde_json::json!({"item": k, "value": value}));
        }
        state.next = end;
        if state.next < state.items {
            ctx.continue_with(&state.next);
            return Step::Suspend;
        }
        if state.checksum {
            ctx.call::<ChecksumCall>("checksum", &state.sum);
            return Step::Suspend;
        }
        Step::Complete(WorkerOutput {
            items: state.items,
            sum: state.sum,
            checksum: None,
        })
    }
}

impl Atom for Worker {
    const TYPE: &'static str = "worker";
    type Input = WorkerInput;
    type State = WorkerState;
    type Output = WorkerOutput;
    /// Its one call is tagged `checksum`.
    type Tag = String;

    fn start(
        &self,
        input: WorkerInput,
        ctx: &mut Context<'_>,
    ) -> Result<(WorkerState, Step<WorkerOutput>)> {
        let mut state = WorkerState {
            next: 0,
            items: input.items,
            page_size: input.page_size.max(1),
            fail_at: input.fail_at,
            sum: 0,
            invocations: 0,
            checksum: input.checksum,
        };
        if let Some(at) = input.start_at
            && at > ctx.now()
        {
            ctx.set_timer_at(GO, at);
            return Ok((state, Step::Suspend));
        }
        let step = Self::work(&mut state, ctx);
        Ok((state, step))
    }

    fn step(
        &self,
        state: &mut WorkerState,
        event: AtomEvent<String>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<WorkerOutput>> {
        match event {
            AtomEvent::TimerFired { name } if name == GO => {}
            AtomEvent::CallCompleted { output, .. } => {
                return Ok(Step::Complete(WorkerOutput {
                    items: state.items,
                    sum: state.sum,
                    checksum: Some(output.output_of_call::<ChecksumCall>()?),
                }));
            }
            AtomEvent::Continue { cursor } => {
                // The cursor and the state agree; the state is authoritative.
                debug_assert_eq!(cursor.as_u64(), Some(u64::from(state.next)));
            }
            _ => return Ok(Step::Suspend),
        }
        Ok(Self::work(state, ctx))
    }

    fn failed(
        &self,
        _state: &mut WorkerState,
        failure: Failure<String>,
        _ctx: &mut Context<'_>,
    ) -> Result<Step<WorkerOutput>> {
        match failure {
            Failure::Call { reason, .. } => Ok(Step::Fail(format!("checksum failed: {reason}"))),
            other => Ok(Step::Fail(other.reason())),
        }
    }
}
