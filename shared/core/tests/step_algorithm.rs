//! The step algorithm's rules, one by one, on the in-memory ports. `Probe` is a test double: an
//! atom that does whatever its input or a signal tells it and records every event it sees.
//!
//! Each guarantee in ARCHITECTURE.md has a test here that fails when its guard is removed.

use reanimate_core::activity::{Activities, Activity, BoxFuture, CallInfo};
use reanimate_core::ports::{AnswerRecord, Clock, Inbox, RequestStatus};
use reanimate_core::record::{InstanceRecord, MAX_RECORD_BYTES, RECENT_MESSAGES};
use reanimate_core::sim::{Faults, SilentUser, Simulation, block_on};
use reanimate_core::{
    Ask, Atom, AtomEvent, Context, Disposition, Envelope, Error, Event, Failure, InstanceId,
    InstanceRef, MessageId, Registry, RequestId, Result, Status, Step, TimerId,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ProbeInput {
    #[serde(default)]
    children: u32,
    #[serde(default)]
    child_timer_days: Option<u64>,
    /// Children start with this much padding in their state (their first step may not fit).
    #[serde(default)]
    child_padding: usize,
    #[serde(default)]
    padding: usize,
    #[serde(default)]
    timer_secs: Option<u64>,
    /// A recurring timer "beat" of this many minutes.
    #[serde(default)]
    every_mins: Option<u64>,
    #[serde(default)]
    ask: Option<Value>,
    #[serde(default)]
    deadline_secs: Option<u64>,
    #[serde(default)]
    progress: u32,
    #[serde(default)]
    complete_at_once: bool,
    /// Calls the `probe.count` activity with this input.
    #[serde(default)]
    call: Option<Value>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ProbeState {
    events: Vec<String>,
    padding: String,
    children: Vec<InstanceId>,
}

struct Probe;

impl Atom for Probe {
    const TYPE: &'static str = "probe";
    type Input = ProbeInput;
    type State = ProbeState;
    type Output = Value;
    type Tag = String;

    fn start(&self, input: ProbeInput, ctx: &mut Context<'_>) -> Result<(ProbeState, Step<Value>)> {
        let mut state = ProbeState::default();
        state.events.push("started".into());
        state.padding = "x".repeat(input.padding);
        for i in 0..input.children {
            let child = ProbeInput {
                timer_secs: input.child_timer_days.map(|d| d * 86_400),
                progress: input.progress,
                complete_at_once: input.child_timer_days.is_none(),
                padding: input.child_padding,
                ..ProbeInput::default()
            };
            let id = ctx.spawn::<Probe>(format!("c{i}"), &child).id;
            state.children.push(id);
        }
        if let Some(secs) = input.timer_secs {
            ctx.set_timer_after("t", Duration::from_secs(secs));
        }
        if let Some(mins) = input.every_mins {
            ctx.set_recurring_timer("beat", Duration::from_secs(mins * 60));
        }
        if let Some(schema) = input.ask {
            let deadline = input
                .deadline_secs
                .map(|s| ctx.now().plus(Duration::from_secs(s)));
            ctx.ask_user(Ask {
                kind: "question".into(),
                prompt: "?".into(),
                schema,
                deadline,
                person: None,
            });
        }
        if let Some(call) = input.call {
            ctx.call_json("probe.count", "count", &call);
        }
        for seq in 0..input.progress {
            ctx.report_progress(&json!({ "seq": seq }));
        }
        if input.complete_at_once {
            return Ok((state, Step::Complete(json!("done"))));
        }
        Ok((state, Step::Suspend))
    }

    fn step(
        &self,
        state: &mut ProbeState,
        event: AtomEvent<String>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<Value>> {
        match event {
            AtomEvent::Signal { name, payload } => {
                state.events.push(format!("signal:{name}"));
                match name.as_str() {
                    "rearm" => ctx.set_timer_after("t", Duration::from_secs(120)),
                    "grow" => state.padding = "x".repeat(payload.as_u64().unwrap_or(0) as usize),
                    "shout" => {
                        let target = InstanceRef {
                            id: ctx.instance().clone(),
                            atom: "probe".into(),
                        };
                        ctx.signal(
                            target,
                            "echo",
                            &"y".repeat(payload.as_u64().unwrap_or(0) as usize),
                        );
                    }
                    "ping" => {
                        let to = payload.as_str().unwrap_or_default();
                        let target = InstanceRef {
                            id: InstanceId::new(to)?,
                            atom: "probe".into(),
                        };
                        ctx.signal(target, "pinged", &Value::Null);
                    }
                    "cancel-children" => {
                        for child in state.children.clone() {
                            ctx.cancel_child(&child, "not needed");
                        }
                    }
                    "stop-beat" => ctx.cancel_timer("beat"),
                    "flaky" => return Err(Error::retryable("the model endpoint is throttling")),
                    "finish" => return Ok(Step::Complete(json!(state.events))),
                    "finish-big" => {
                        return Ok(Step::Complete(json!(
                            "z".repeat(payload.as_u64().unwrap_or(0) as usize)
                        )));
                    }
                    "loop" => ctx.continue_with(&1),
                    "spawn-unknown" => {
                        ctx.spawn_json("nope", "x", json!({}));
                    }
                    _ => {}
                }
            }
            AtomEvent::ChildProgress { tag, seq, .. } => {
                state.events.push(format!("progress:{tag}:{seq}"))
            }
            AtomEvent::ChildCompleted { tag, .. } => state.events.push(format!("completed:{tag}")),
            AtomEvent::TimerFired { name } => state.events.push(format!("timer:{name}")),
            AtomEvent::UserAnswered { answer, .. } => {
                state.events.push(format!("user_answered:{answer}"))
            }
            AtomEvent::CallCompleted { output, .. } => {
                state.events.push(format!("call_completed:{output}"))
            }
            other => state.events.push(other.kind().into()),
        }
        Ok(Step::Suspend)
    }

    /// Failures are recorded as events, never propagated.
    fn failed(
        &self,
        state: &mut ProbeState,
        failure: Failure<String>,
        _ctx: &mut Context<'_>,
    ) -> Result<Step<Value>> {
        state.events.push(match failure {
            Failure::Child {
                tag,
                cancelled,
                reason,
                ..
            } => format!("failed:{tag}:{cancelled}:{reason}"),
            Failure::Call { reason, .. } => format!("call_failed:{reason}"),
        });
        Ok(Step::Suspend)
    }
}

/// Counts its runs per call id; fails retryably while told to, then returns its input.
#[derive(Clone, Default)]
struct Counting {
    runs: Arc<Mutex<BTreeMap<String, u32>>>,
    failures_left: Arc<Mutex<u32>>,
    /// Never finishes (to test the time limit).
    hang: bool,
}

impl Counting {
    fn runs(&self) -> u32 {
        self.runs.lock().map(|r| r.values().sum()).unwrap_or(0)
    }
}

impl Activity for Counting {
    fn run<'a>(&'a self, input: Value, call: &'a CallInfo) -> BoxFuture<'a, Result<Value>> {
        if let Ok(mut runs) = self.runs.lock() {
            *runs.entry(call.id.to_string()).or_default() += 1;
        }
        let fail = self
            .failures_left
            .lock()
            .map(|mut left| {
                let fail = *left > 0;
                *left = left.saturating_sub(1);
                fail
            })
            .unwrap_or(false);
        let hang = self.hang;
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            if fail {
                return Err(Error::retryable("the service is unavailable"));
            }
            Ok(input)
        })
    }

    fn time_limit(&self) -> Duration {
        Duration::from_secs(30)
    }
}

fn id<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn sim() -> Simulation {
    Simulation::new(Registry::new().with(Probe), 7, Faults::none())
}

fn sim_with(activity: &Counting, faults: Faults) -> Simulation {
    let activities = Activities::new().with("probe.count", Arc::new(activity.clone()));
    Simulation::with_activities(Registry::new().with(Probe), activities, 7, faults, None)
}

/// A simulation whose ports yield at every call, so handlers can be interleaved (or stopped).
fn interleaving_sim() -> Simulation {
    Simulation::new(
        Registry::new().with(Probe),
        7,
        Faults {
            concurrency: 2,
            processes: 2,
            ..Faults::none()
        },
    )
}

fn start_env(instance: &str, input: Value) -> Envelope {
    Envelope::start(
        id(MessageId::new(format!("start:{instance}"))),
        id(InstanceId::new(instance)),
        "probe",
        input,
    )
}

fn start(sim: &Simulation, instance: &str, input: Value) -> Result<Disposition> {
    block_on(sim.runtime().handle(start_env(instance, input)))
}

fn signal_env(msg: &str, instance: &str, name: &str, payload: Value) -> Envelope {
    let event = Event::signal(name, payload);
    Envelope::new(
        id(MessageId::new(msg)),
        id(InstanceId::new(instance)),
        "probe",
        event,
    )
}

fn handle(sim: &Simulation, env: Envelope) -> Result<Disposition> {
    block_on(sim.runtime().handle(env))
}

fn record(sim: &Simulation, instance: &str) -> InstanceRecord {
    sim.store()
        .get(&id(InstanceId::new(instance)))
        .unwrap_or_else(|| panic!("no instance {instance}"))
}

fn events(sim: &Simulation, instance: &str) -> Vec<String> {
    let state: ProbeState =
        serde_json::from_str(&record(sim, instance).state).unwrap_or_else(|e| panic!("{e}"));
    state.events
}

/// Handles every visible message, oldest first, until the queue is empty.
fn drain(sim: &Simulation) {
    while let Some(delivery) = sim.queue().receive(sim.now(), 0) {
        let _ = handle(sim, delivery.envelope);
    }
}

fn drain_one(sim: &Simulation) {
    if let Some(d) = sim.queue().receive(sim.now(), 0) {
        id(handle(sim, d.envelope));
    }
}

/// Every message waiting on the queue, visible or delayed, in order.
fn queued(sim: &Simulation) -> Vec<Envelope> {
    std::iter::from_fn(|| {
        sim.queue()
            .receive(reanimate_core::Timestamp(u64::MAX / 2), 0)
    })
    .map(|d| d.envelope)
    .collect()
}

/// The firing of the first timer armed, whenever it is due.
fn armed_timer(sim: &Simulation) -> Envelope {
    let (_, firing) = sim
        .timers()
        .take_due(reanimate_core::Timestamp(u64::MAX / 2))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no timer armed"));
    firing
}

fn ignored(result: Result<Disposition>) -> String {
    match result {
        Ok(Disposition::Ignored { reason }) => reason,
        other => panic!("expected the message to be ignored, got {other:?}"),
    }
}

// --- Deduplication: every event kind has a guard of its own ------------------------------------

#[test]
fn a_duplicate_message_is_applied_once() {
    let sim = sim();
    assert!(matches!(
        start(&sim, "p", json!({})),
        Ok(Disposition::Applied { version: 1, .. })
    ));
    let env = signal_env("m1", "p", "hello", Value::Null);
    assert!(matches!(
        handle(&sim, env.clone()),
        Ok(Disposition::Applied { version: 2, .. })
    ));
    assert_eq!(handle(&sim, env), Ok(Disposition::Duplicate));
    let reason = ignored(start(&sim, "p", json!({})));
    assert_eq!(reason, "instance already started");
    assert_eq!(events(&sim, "p"), ["started", "signal:hello"]);
    assert_eq!(record(&sim, "p").transitions, 2);
}

#[test]
fn a_clients_signal_is_remembered_among_its_last_ids() {
    let sim = sim();
    id(start(&sim, "p", json!({})));
    for i in 0..RECENT_MESSAGES {
        id(handle(
            &sim,
            signal_env(&format!("c{i}"), "p", "n", Value::Null),
        ));
    }
    // The oldest still remembered, after as many client signals as the memory holds.
    assert_eq!(
        handle(&sim, signal_env("c0", "p", "n", Value::Null)),
        Ok(Disposition::Duplicate)
    );
    assert_eq!(record(&sim, "p").transitions, 1 + RECENT_MESSAGES as u64);
}

#[test]
fn a_signal_between_instances_is_applied_once_however_late_its_copy_arrives() {
    let sim = sim();
    id(start(&sim, "s", json!({})));
    id(start(&sim, "t", json!({})));
    id(handle(&sim, signal_env("ping", "s", "ping", json!("t"))));
    let signal = queued(&sim)
        .pop()
        .unwrap_or_else(|| panic!("no signal sent"));
    assert!(matches!(signal.event, Event::Signal { seq: Some(0), .. }));
    id(handle(&sim, signal.clone()));
    // The target then applies far more messages than any id window holds...
    for i in 0..RECENT_MESSAGES + 10 {
        id(handle(
            &sim,
            signal_env(&format!("c{i}"), "t", "n", Value::Null),
        ));
    }
    // ...and the signal arrives again: a late SQS copy, a redrive, an old outbox sent again.
    assert_eq!(handle(&sim, signal), Ok(Disposition::Duplicate));
    let pinged = events(&sim, "t")
        .iter()
        .filter(|e| *e == "signal:pinged")
        .count();
    assert_eq!(pinged, 1);
}

#[test]
fn a_late_copy_of_a_recurring_firing_is_not_applied_again() {
    let sim = sim();
    id(start(&sim, "p", json!({ "every_mins": 60 })));
    let fire = |at_hours: u64| {
        sim.advance_clock(Duration::from_secs(3600));
        let due = sim.timers().take_due(sim.now());
        assert_eq!(due.len(), 1, "hour {at_hours}: one firing");
        due[0].1.clone()
    };
    let first = fire(1);
    let second = fire(2);
    id(handle(&sim, first.clone()));
    id(handle(&sim, second));
    assert_eq!(handle(&sim, first), Ok(Disposition::Duplicate));
    assert_eq!(events(&sim, "p"), ["started", "timer:beat", "timer:beat"]);
}

#[test]
fn a_stale_recurring_firing_deletes_its_schedule() {
    let sim = sim();
    id(start(&sim, "p", json!({ "every_mins": 60 })));
    sim.advance_clock(Duration::from_secs(3600));
    let firing = sim.timers().take_due(sim.now())[0].1.clone();
    id(handle(
        &sim,
        signal_env("m1", "p", "stop-beat", Value::Null),
    ));
    assert_eq!(sim.timers().armed(), 0);
    // A late send of the old outbox re-creates the schedule after its cancel...
    let armed_again = record(&sim, "p");
    assert!(armed_again.waiting.timers.is_empty());
    block_on(reanimate_core::ports::TimerService::schedule_recurring(
        sim.timers(),
        match &firing.event {
            Event::TimerFired { timer, .. } => timer,
            _ => unreachable!(),
        },
        sim.now(),
        Duration::from_secs(3600),
        firing.clone(),
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sim.timers().armed(), 1);
    // ...and its next firing, stale, deletes it for good.
    let reason = ignored(handle(&sim, firing));
    assert!(
        reason.contains("deleting its recurring schedule"),
        "{reason}"
    );
    assert_eq!(sim.timers().armed(), 0);
}

#[test]
fn a_timer_that_is_no_longer_pending_is_ignored() {
    let sim = sim();
    id(start(&sim, "p", json!({ "timer_secs": 60 })));
    let first = record(&sim, "p").waiting.timers["t"].id.clone();
    id(handle(&sim, signal_env("m1", "p", "rearm", Value::Null)));
    let second = record(&sim, "p").waiting.timers["t"].id.clone();
    assert_ne!(first, second);
    sim.advance_clock(Duration::from_secs(120));

    let fire = |timer: &TimerId| {
        let event = Event::TimerFired {
            name: "t".into(),
            timer: timer.clone(),
            fired_for: None,
        };
        Envelope::new(
            MessageId::for_timer(timer),
            id(InstanceId::new("p")),
            "probe",
            event,
        )
    };
    let reason = ignored(handle(&sim, fire(&first)));
    assert!(reason.contains("no longer pending"), "{reason}");
    assert!(matches!(
        handle(&sim, fire(&second)),
        Ok(Disposition::Applied { .. })
    ));
    assert_eq!(events(&sim, "p"), ["started", "signal:rearm", "timer:t"]);
}

#[test]
fn a_timer_that_arrives_early_is_put_back_until_it_is_due() {
    let sim = sim();
    id(start(&sim, "p", json!({ "timer_secs": 90 })));
    sim.advance_clock(Duration::from_millis(88_500));
    let firing = armed_timer(&sim);
    let result = handle(&sim, firing);
    assert!(
        matches!(result, Ok(Disposition::Deferred { delay, .. }) if delay == Duration::from_secs(2)),
        "1.5 s early: put back for 2 s, rounded up; got {result:?}"
    );
    assert_eq!(events(&sim, "p"), ["started"], "not applied early");
    let mut sim = sim;
    id(sim.run(&mut SilentUser));
    assert_eq!(events(&sim, "p"), ["started", "timer:t"]);
}

#[test]
fn a_week_long_timer_fires_in_virtual_time() {
    let mut sim = sim();
    let started = sim.now();
    id(start(&sim, "p", json!({ "timer_secs": 7 * 86_400 })));
    let report = id(sim.run(&mut SilentUser));
    assert_eq!(events(&sim, "p"), ["started", "timer:t"]);
    assert_eq!(
        started.until(report.ended_at),
        Duration::from_secs(7 * 86_400)
    );
}

#[test]
fn messages_for_a_finished_instance_are_dropped() {
    let sim = sim();
    id(start(&sim, "p", json!({})));
    id(handle(&sim, signal_env("m1", "p", "finish", Value::Null)));
    assert_eq!(record(&sim, "p").status, Status::Completed);
    let published = sim.queue().published();
    assert_eq!(published.len(), 1, "one lifecycle event for the finish");
    assert_eq!(
        (published[0].id.as_str(), published[0].status),
        ("p@2", Status::Completed)
    );
    assert_eq!(
        published[0].result,
        Some(json!(["started", "signal:finish"]))
    );
    let reason = ignored(handle(&sim, signal_env("m2", "p", "late", Value::Null)));
    assert_eq!(reason, "instance is already completed");
}

#[test]
fn a_result_too_large_for_the_event_bus_is_left_out_of_the_lifecycle_event() {
    let sim = sim();
    id(start(&sim, "p", json!({})));
    id(handle(
        &sim,
        signal_env("m1", "p", "finish-big", json!(220_000)),
    ));
    let finished = record(&sim, "p");
    assert_eq!(finished.status, Status::Completed);
    assert!(finished.result.is_some(), "the record keeps the result");
    let published = sim.queue().published();
    assert_eq!(published.len(), 1);
    assert!(published[0].result.is_none() && published[0].result_omitted);
}

// --- Bad input and limits ----------------------------------------------------------------------

#[test]
fn bad_addresses_are_terminal_or_retried_with_a_reason() {
    let sim = sim();
    let env = Envelope::start(
        id(MessageId::new("m")),
        id(InstanceId::new("q")),
        "nope",
        json!({}),
    );
    let err = handle(&sim, env).unwrap_err();
    assert!(
        !err.is_retryable()
            && err.reason.contains("unknown atom type \"nope\"")
            && err.reason.contains("probe"),
        "{err}"
    );

    let err = handle(&sim, signal_env("m1", "never-started", "x", Value::Null)).unwrap_err();
    assert!(
        err.is_retryable() && err.reason.contains("does not exist"),
        "{err}"
    );

    // Input the atom cannot read fails the new instance (its parent, if any, is told why).
    assert!(matches!(
        start(&sim, "p", json!({"children": "many"})),
        Ok(Disposition::Applied {
            status: Status::Failed,
            ..
        })
    ));
    let error = record(&sim, "p").error.unwrap_or_default();
    assert!(
        error.contains("input does not match atom probe's input type"),
        "{error}"
    );
}

#[test]
fn a_root_id_with_the_shape_of_a_derived_id_is_refused() {
    let sim = sim();
    for bad in ["p/1.0", "p@1.0", "p?1.0"] {
        let err = start(&sim, bad, json!({})).unwrap_err();
        assert!(
            !err.is_retryable() && err.reason.contains("reserved"),
            "{bad}: {err}"
        );
    }
    assert!(sim.store().all().is_empty());
    assert!(InstanceId::root("p/1.0").is_err() && InstanceId::root("p").is_ok());
}

#[test]
fn a_state_over_the_item_limit_fails_the_instance_with_the_reason() {
    let sim = sim();
    id(start(&sim, "p", json!({})));
    let result = handle(
        &sim,
        signal_env("m1", "p", "grow", json!(MAX_RECORD_BYTES + 1)),
    );
    assert!(
        matches!(
            result,
            Ok(Disposition::Applied {
                status: Status::Failed,
                ..
            })
        ),
        "{result:?}"
    );
    let failed = record(&sim, "p");
    let error = failed.error.clone().unwrap_or_default();
    assert!(error.contains("over the 350000-byte limit"), "{error}");
    assert_eq!(
        events(&sim, "p"),
        ["started"],
        "the oversized state was not kept"
    );
}

#[test]
fn a_child_whose_first_step_is_too_large_reports_its_failure_to_the_parent() {
    let sim = sim();
    id(start(
        &sim,
        "parent",
        json!({ "children": 1, "child_padding": MAX_RECORD_BYTES + 1, "timer_secs": 60 }),
    ));
    drain(&sim);
    let child = sim
        .store()
        .all()
        .into_iter()
        .find(|r| r.parent.is_some())
        .unwrap_or_else(|| panic!("the child has a record"));
    assert_eq!(child.status, Status::Failed);
    let events = events(&sim, "parent");
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events[1].starts_with("failed:c0:false:") && events[1].contains("350000-byte limit"),
        "{events:?}"
    );
}

#[test]
fn a_message_over_the_queue_limit_fails_the_instance_with_the_reason() {
    let sim = sim();
    id(start(&sim, "p", json!({})));
    id(handle(&sim, signal_env("m1", "p", "shout", json!(300_000))));
    let failed = record(&sim, "p");
    assert_eq!(failed.status, Status::Failed);
    assert!(
        failed
            .error
            .unwrap_or_default()
            .contains("over the 250000-byte message limit")
    );
    assert!(sim.queue().is_empty(), "nothing was sent");
}

#[test]
fn a_retryable_step_error_leaves_no_trace() {
    let sim = sim();
    id(start(&sim, "p", json!({})));
    let before = record(&sim, "p");
    let err = handle(&sim, signal_env("m1", "p", "flaky", Value::Null)).unwrap_err();
    assert!(
        err.is_retryable() && err.reason.contains("throttling"),
        "{err}"
    );
    assert_eq!(record(&sim, "p"), before);
}

#[test]
fn a_message_for_another_atom_type_is_refused() {
    let sim = Simulation::new(Registry::new().with(Probe).with(Other), 1, Faults::none());
    id(start(&sim, "p", json!({})));
    let mut env = signal_env("m1", "p", "x", Value::Null);
    env.atom = "other".into();
    let err = handle(&sim, env).unwrap_err();
    assert!(err.reason.contains("instance p is a \"probe\""), "{err}");
}

struct Other;
impl Atom for Other {
    const TYPE: &'static str = "other";
    type Input = Value;
    type State = ();
    type Output = ();
    type Tag = String;
    fn start(&self, _: Value, _: &mut Context<'_>) -> Result<((), Step<()>)> {
        Ok(((), Step::Suspend))
    }
    fn step(&self, _: &mut (), _: AtomEvent<String>, _: &mut Context<'_>) -> Result<Step<()>> {
        Ok(Step::Suspend)
    }
}

#[test]
fn addressing_an_atom_type_that_is_not_deployed_fails_the_instance_with_the_reason() {
    use reanimate_core::memory::{
        Hazards, MemoryInbox, MemoryQueue, MemoryStore, MemoryTimers, VirtualClock,
    };
    let clock = VirtualClock::default();
    let queue = MemoryQueue::new(clock.clone(), Hazards::default());
    let store = MemoryStore::default();
    let runtime = reanimate_core::Runtime::new(
        Registry::new().with(Probe),
        store.clone(),
        queue.clone(),
        MemoryTimers::default(),
        MemoryInbox::default(),
        clock,
    )
    .with_known_atoms(["probe"]);
    id(block_on(runtime.handle(start_env("p", json!({})))));
    id(block_on(runtime.handle(signal_env(
        "m1",
        "p",
        "spawn-unknown",
        Value::Null,
    ))));
    let failed = store
        .get(&id(InstanceId::new("p")))
        .unwrap_or_else(|| panic!("no instance"));
    assert_eq!(failed.status, Status::Failed);
    let error = failed.error.unwrap_or_default();
    assert!(
        error.contains("no atom type \"nope\" is deployed (deployed: probe)"),
        "{error}"
    );
    assert!(queue.is_empty(), "nothing was sent to the unknown atom");
}

// --- Who may send what --------------------------------------------------------------------------

#[test]
fn child_events_count_only_when_the_child_sends_them() {
    let sim = sim();
    id(start(
        &sim,
        "parent",
        json!({ "children": 1, "child_timer_days": 1 }),
    ));
    let child = record(&sim, "parent")
        .waiting
        .children
        .keys()
        .next()
        .cloned()
        .unwrap_or_else(|| panic!("no child"));
    let forged = |sender: Option<&str>| {
        let event = Event::ChildCompleted {
            child: child.clone(),
            tag: "c0".into(),
            output: json!("forged"),
            progress_reports: 0,
        };
        let mut env = Envelope::new(
            id(MessageId::new(format!("forged-{sender:?}"))),
            id(InstanceId::new("parent")),
            "probe",
            event,
        );
        env.sender = sender.map(|s| id(InstanceId::new(s)));
        env
    };
    for sender in [None, Some("mallory"), Some("parent")] {
        let reason = ignored(handle(&sim, forged(sender)));
        assert!(reason.contains("was not sent by it"), "{reason}");
    }
    assert_eq!(events(&sim, "parent"), ["started"]);
    assert!(record(&sim, "parent").waiting.children.contains_key(&child));
}

#[test]
fn a_start_claiming_a_parent_must_come_from_it_for_an_id_it_derived() {
    let sim = sim();
    let claim = |target: &str, sender: Option<&str>| {
        let event = Event::Started {
            input: json!({}),
            parent: Some(reanimate_core::event::ParentLink {
                id: id(InstanceId::new("boss")),
                atom: "probe".into(),
                tag: "x".into(),
            }),
        };
        let mut env = Envelope::new(
            id(MessageId::new(format!("s-{target}"))),
            id(InstanceId::new(target)),
            "probe",
            event,
        );
        env.sender = sender.map(|s| id(InstanceId::new(s)));
        env
    };
    for (target, sender) in [
        ("boss/1.0", Some("mallory")),
        ("boss/1.0", None),
        ("victim", Some("boss")),
    ] {
        let err = handle(&sim, claim(target, sender)).unwrap_err();
        assert!(
            !err.is_retryable() && err.reason.contains("refused"),
            "{target} from {sender:?}: {err}"
        );
    }
    assert!(sim.store().all().is_empty());
    assert!(matches!(
        handle(&sim, claim("boss/1.0", Some("boss"))),
        Ok(Disposition::Applied { .. })
    ));
}

#[test]
fn a_cancel_from_an_instance_counts_only_from_the_parent() {
    let sim = sim();
    id(start(&sim, "p", json!({})));
    let mut cancel = Envelope::new(
        id(MessageId::new("c")),
        id(InstanceId::new("p")),
        "probe",
        Event::CancelRequested {
            reason: "because".into(),
        },
    );
    cancel.sender = Some(id(InstanceId::new("sibling")));
    let reason = ignored(handle(&sim, cancel));
    assert!(reason.contains("not its parent"), "{reason}");
    assert_eq!(record(&sim, "p").status, Status::Suspended);
}

#[test]
fn a_call_message_is_run_only_for_the_pending_call_it_names() {
    let activity = Counting::default();
    let sim = sim_with(&activity, Faults::none());
    id(start(&sim, "p", json!({ "call": {"n": 1} })));
    let call = queued(&sim).pop().unwrap_or_else(|| panic!("no call sent"));
    let mut forged = call.clone();
    forged.event = Event::Call {
        activity: "probe.count".into(),
        tag: "count".into(),
        input: json!({"n": 666}),
    };
    let reason = ignored(handle(&sim, forged));
    assert!(reason.contains("another input"), "{reason}");
    let mut foreign = call.clone();
    foreign.sender = Some(id(InstanceId::new("mallory")));
    let reason = ignored(handle(&sim, foreign));
    assert!(reason.contains("not sent by"), "{reason}");
    assert_eq!(activity.runs(), 0, "neither ran the activity");
    id(handle(&sim, call));
    assert_eq!(activity.runs(), 1);
    assert_eq!(events(&sim, "p"), ["started", "call_completed:{\"n\":1}"]);
}

// --- Activities --------------------------------------------------------------------------------

#[test]
fn a_call_whose_outcome_is_journaled_never_runs_again() {
    let activity = Counting::default();
    let sim = sim_with(&activity, Faults::none());
    id(start(&sim, "p", json!({ "call": {"n": 2} })));
    let call = queued(&sim).pop().unwrap_or_else(|| panic!("no call sent"));
    id(handle(&sim, call.clone()));
    sim.runtime().forget_process_memory();
    let _ = handle(&sim, call.clone());
    let _ = handle(&sim, call);
    assert_eq!(activity.runs(), 1);
}

/// Polls a handler to its end; whenever it is the one asleep (a backoff), the virtual clock
/// moves to its wake-up.
fn finish_through_backoff<F: Future + ?Sized>(
    sim: &Simulation,
    mut handler: std::pin::Pin<&mut F>,
) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let Poll::Ready(r) = handler.as_mut().poll(&mut cx) {
            break r;
        }
        if let (1, Some(wake)) = sim.clock().sleepers() {
            sim.clock().advance_to(wake);
        }
    }
}

#[test]
fn an_outcome_in_hand_survives_a_journal_conflict() {
    // The call's handler runs the activity; before it journals, another handler saves a new
    // version. The journal write conflicts; the outcome in hand is journaled on the new version
    // without running the activity again.
    let activity = Counting::default();
    let activities = Activities::new().with("probe.count", Arc::new(activity.clone()));
    let sim = Simulation::with_activities(
        Registry::new().with(Probe),
        activities,
        7,
        Faults {
            concurrency: 2,
            ..Faults::none()
        },
        None,
    );
    id(block_on(
        sim.runtime()
            .handle(start_env("p", json!({ "call": {"n": 3} }))),
    ));
    let call = queued(&sim).pop().unwrap_or_else(|| panic!("no call sent"));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut caller = Box::pin(sim.runtime().handle(call));
    // Poll until the activity has run (it is about to journal).
    while activity.runs() == 0 {
        assert!(caller.as_mut().poll(&mut cx).is_pending());
    }
    id(block_on(sim.runtime().handle(signal_env(
        "m1",
        "p",
        "n",
        Value::Null,
    ))));
    // The journal write conflicts; the caller backs off before journaling on the new version.
    let result = finish_through_backoff(&sim, caller.as_mut());
    assert!(
        matches!(result, Ok(Disposition::Applied { .. })),
        "{result:?}"
    );
    assert_eq!(activity.runs(), 1, "the activity ran once");
    assert_eq!(
        events(&sim, "p"),
        ["started", "signal:n", "call_completed:{\"n\":3}"]
    );
}

#[test]
fn an_activity_that_keeps_failing_is_journaled_as_failed_after_its_tries() {
    let activity = Counting {
        failures_left: Arc::new(Mutex::new(u32::MAX)),
        ..Counting::default()
    };
    let mut sim = sim_with(&activity, Faults::none());
    id(start(&sim, "p", json!({ "call": {"n": 4} })));
    let report = id(sim.run(&mut SilentUser));
    assert!(report.dead_letters.is_empty(), "{:?}", report.dead_letters);
    assert_eq!(
        activity.runs(),
        reanimate_core::activity::MAX_ACTIVITY_TRIES
    );
    let events = events(&sim, "p");
    assert!(
        events[1].starts_with("call_failed:gave up after 3 tries")
            && events[1].contains("unavailable"),
        "{events:?}"
    );
    assert!(record(&sim, "p").waiting.calls.is_empty());
}

#[test]
fn an_activity_over_its_time_limit_is_abandoned_and_tried_again() {
    let activity = Counting {
        hang: true,
        ..Counting::default()
    };
    let mut sim = sim_with(
        &activity,
        Faults {
            concurrency: 2,
            ..Faults::none()
        },
    );
    id(block_on(
        sim.runtime()
            .handle(start_env("p", json!({ "call": {"n": 5} }))),
    ));
    let report = id(sim.run(&mut SilentUser));
    assert!(report.dead_letters.is_empty(), "{:?}", report.dead_letters);
    assert_eq!(
        activity.runs(),
        reanimate_core::activity::MAX_ACTIVITY_TRIES
    );
    let events = events(&sim, "p");
    assert!(
        events[1].contains("did not finish within 30 s"),
        "{events:?}"
    );
}

// --- Sending what was saved --------------------------------------------------------------------

#[test]
fn an_outbox_that_cannot_be_sent_is_marked_and_the_sweeper_sends_it() {
    let sim = sim();
    sim.queue().fail_next_sends(1);
    assert!(matches!(
        start(&sim, "parent", json!({ "children": 2 })),
        Ok(Disposition::Applied { version: 1, .. })
    ));
    let saved = record(&sim, "parent");
    // Two starts and the transition's history entry.
    assert_eq!(saved.outbox.len(), 3, "the step and its outbox were saved");
    assert!(sim.queue().is_empty(), "but the children were not started");
    assert_eq!(sim.store().marked(), [id(InstanceId::new("parent"))]);

    let report = id(block_on(sim.runtime().sweep(Duration::ZERO, 10)));
    assert_eq!((report.found, report.flushed), (1, 1));
    assert_eq!(sim.queue().len(), 2, "the sweeper sent the outbox");
    assert!(sim.store().marked().is_empty());
    assert!(record(&sim, "parent").outbox.is_empty());
    assert_eq!(
        sim.store().history(&saved.id).len(),
        1,
        "and its history entry"
    );
    drain(&sim);
    assert_eq!(
        events(&sim, "parent"),
        ["started", "completed:c0", "completed:c1"]
    );
}

#[test]
fn a_process_stopped_between_save_and_send_leaves_the_sending_to_the_redelivery() {
    let sim = interleaving_sim();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let env = start_env("parent", json!({ "children": 2 }));
    {
        let mut handler = Box::pin(sim.process(0).handle(env.clone()));
        while sim.store().get(&id(InstanceId::new("parent"))).is_none() {
            assert!(handler.as_mut().poll(&mut cx).is_pending());
        }
        // Dropped mid-flight: the process is gone, its memory with it.
    }
    sim.process(0).forget_process_memory();
    assert!(sim.queue().is_empty());
    // The message comes back, to another process: it finds the start applied and sends the
    // outbox it cannot know went out.
    let reason = ignored(block_on(sim.process(1).handle(env)));
    assert_eq!(reason, "instance already started");
    assert_eq!(sim.queue().len(), 2);
    assert!(
        record(&sim, "parent").outbox.is_empty(),
        "sent, and dropped from the record so no later process sends it again"
    );
}

#[test]
fn a_cold_process_sends_an_old_outbox_once_and_then_no_process_sends_it_again() {
    let sim = interleaving_sim();
    id(block_on(
        sim.process(0)
            .handle(start_env("parent", json!({ "children": 2 }))),
    ));
    assert_eq!(sim.queue().len(), 2);
    assert_eq!(
        record(&sim, "parent").outbox.len(),
        3,
        "kept (two starts and the history entry): one write per step"
    );
    // Another process, which cannot know the outbox went out, gets a message that changes
    // nothing: it sends the outbox again (harmless) and drops it from the record.
    let _ = block_on(sim.process(1).handle(start_env("parent", json!({}))));
    assert_eq!(sim.queue().len(), 4);
    assert!(record(&sim, "parent").outbox.is_empty());
    let _ = block_on(sim.process(1).handle(start_env("parent", json!({}))));
    sim.process(0).forget_process_memory();
    let _ = block_on(sim.process(0).handle(start_env("parent", json!({}))));
    assert_eq!(sim.queue().len(), 4, "never again");
}

// --- Contention --------------------------------------------------------------------------------

/// Polls every handler in turn until all are done, moving virtual time on when all of them are
/// asleep in a backoff.
fn run_concurrently<F: Future<Output = Result<Disposition>>>(
    sim: &Simulation,
    handlers: Vec<F>,
) -> Vec<Result<Disposition>> {
    let mut handlers: Vec<_> = handlers.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<Result<Disposition>>> = handlers.iter().map(|_| None).collect();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    while done.iter().any(Option::is_none) {
        for (handler, slot) in handlers.iter_mut().zip(done.iter_mut()) {
            if slot.is_none()
                && let Poll::Ready(r) = handler.as_mut().poll(&mut cx)
            {
                *slot = Some(r);
            }
        }
        let waiting = done.iter().filter(|d| d.is_none()).count();
        if let (asleep, Some(wake)) = sim.clock().sleepers()
            && waiting > 0
            && asleep >= waiting
        {
            sim.clock().advance_to(wake);
        }
    }
    done.into_iter().flatten().collect()
}

// --- The warm path: no read ------------------------------------------------------------------

fn two_processes() -> Simulation {
    Simulation::new(
        Registry::new().with(Probe),
        7,
        Faults {
            processes: 2,
            ..Faults::none()
        },
    )
}

/// Handles `env` on process `process`, advancing virtual time through conflict backoffs.
fn on(sim: &Simulation, process: usize, env: Envelope) -> Result<Disposition> {
    let handler = sim.process(process).handle(env);
    finish_through_backoff(sim, std::pin::pin!(handler))
}

#[test]
fn a_warm_process_steps_without_reading_and_a_stale_one_reads_only_through_its_conflict() {
    let sim = two_processes();
    id(on(&sim, 0, start_env("p", json!({}))));
    let stats = || sim.store().stats();
    let loads = stats().loads;
    for n in 0..3 {
        id(on(
            &sim,
            0,
            signal_env(&format!("w{n}"), "p", "a", Value::Null),
        ));
    }
    assert_eq!(stats().loads, loads, "the process kept what it wrote");

    // Another process moves the instance on: the first one's kept record is now stale.
    id(on(&sim, 1, signal_env("other", "p", "b", Value::Null)));
    assert_eq!(stats().loads, loads + 1, "a cold process reads as before");
    let conflicts = stats().conflicts;
    let applied = on(&sim, 0, signal_env("stale", "p", "c", Value::Null));
    assert!(
        matches!(applied, Ok(Disposition::Applied { version: 6, .. })),
        "{applied:?}"
    );
    assert_eq!(stats().conflicts, conflicts + 1);
    assert_eq!(
        stats().loads,
        loads + 1,
        "the failed condition returned the stored record: no read"
    );
    assert_eq!(
        events(&sim, "p"),
        [
            "started", "signal:a", "signal:a", "signal:a", "signal:b", "signal:c"
        ]
    );

    // After a restart the process reads again.
    sim.process(0).forget_process_memory();
    id(on(&sim, 0, signal_env("cold", "p", "a", Value::Null)));
    assert_eq!(stats().loads, loads + 2);
}

#[test]
fn a_kept_record_is_read_again_before_it_drops_a_message() {
    let sim = two_processes();
    id(on(&sim, 0, start_env("p", json!({}))));
    // Process 1 arms a timer; process 0 still keeps the version without it.
    id(on(&sim, 1, signal_env("rearm", "p", "rearm", Value::Null)));
    sim.advance_clock(Duration::from_secs(120));
    let firing = armed_timer(&sim);
    let loads = sim.store().stats().loads;
    let applied = on(&sim, 0, firing);
    assert!(
        matches!(applied, Ok(Disposition::Applied { .. })),
        "a timer the kept record does not know is not dropped: {applied:?}"
    );
    assert_eq!(sim.store().stats().loads, loads + 1);
    assert_eq!(events(&sim, "p"), ["started", "signal:rearm", "timer:t"]);
    // A real duplicate is still a duplicate, once read.
    let again = on(&sim, 0, signal_env("rearm", "p", "rearm", Value::Null));
    assert!(matches!(again, Ok(Disposition::Duplicate)), "{again:?}");
}

#[test]
fn a_deadline_on_a_kept_record_is_read_before_it_touches_the_inbox() {
    let sim = two_processes();
    let ask = json!({ "ask": {"type": "string"}, "deadline_secs": 60 });
    id(on(&sim, 0, start_env("p", ask)));
    let (name, pending) = record(&sim, "p")
        .waiting
        .timers
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no deadline armed"));
    // Process 1 finishes the instance (which withdraws the request and cancels its deadline);
    // process 0 still keeps the version that waits. The deadline's firing slips through.
    id(on(&sim, 1, signal_env("f", "p", "finish", Value::Null)));
    sim.advance_clock(Duration::from_secs(61));
    let event = Event::TimerFired {
        name,
        timer: pending.id.clone(),
        fired_for: None,
    };
    let deadline = Envelope::new(
        MessageId::for_timer(&pending.id),
        id(InstanceId::new("p")),
        "probe",
        event,
    );
    let loads = sim.store().stats().loads;
    let result = on(&sim, 0, deadline);
    assert!(
        matches!(result, Ok(Disposition::Ignored { .. })),
        "{result:?}"
    );
    assert_eq!(
        sim.store().stats().loads,
        loads + 1,
        "read before expiring a request the stored record may have withdrawn"
    );
}

#[test]
fn without_full_history_no_entry_is_saved_or_sent() {
    use reanimate_core::memory::{
        Hazards, MemoryInbox, MemoryQueue, MemoryStore, MemoryTimers, VirtualClock,
    };
    use reanimate_core::runtime::Runtime;
    let hazards = Hazards::default();
    let clock = VirtualClock::starting_at(reanimate_core::Timestamp(1_000_000_000_000));
    let store = MemoryStore::new(hazards.clone());
    let runtime = Runtime::new(
        Registry::new().with(Probe),
        store.clone(),
        MemoryQueue::new(clock.clone(), hazards.clone()),
        MemoryTimers::new(clock.clone(), hazards.clone()),
        MemoryInbox::new(hazards.clone()),
        clock,
    )
    .with_full_history(false);
    id(block_on(runtime.handle(start_env("p", json!({})))));
    id(block_on(runtime.handle(signal_env(
        "s",
        "p",
        "a",
        Value::Null,
    ))));
    let p = id(InstanceId::new("p"));
    let saved = store.get(&p).unwrap_or_else(|| panic!("no p"));
    assert_eq!(saved.version, 2);
    assert!(
        saved
            .outbox
            .iter()
            .all(|e| !matches!(e, reanimate_core::record::Effect::History { .. })),
        "{:?}",
        saved.outbox
    );
    assert!(store.history(&p).is_empty());
}

#[test]
fn concurrent_handlers_on_one_instance_both_apply_once() {
    let sim = interleaving_sim();
    id(start(&sim, "p", json!({})));
    // Both read the record (a warm handler would plan on the record it kept, without a read).
    sim.runtime().forget_process_memory();
    let results = run_concurrently(
        &sim,
        vec![
            sim.runtime().handle(signal_env("a", "p", "a", Value::Null)),
            sim.runtime().handle(signal_env("b", "p", "b", Value::Null)),
        ],
    );
    let mut versions: Vec<u64> = results
        .into_iter()
        .map(|r| match r {
            Ok(Disposition::Applied { version, .. }) => version,
            other => panic!("{other:?}"),
        })
        .collect();
    versions.sort();
    assert_eq!(versions, [2, 3], "the loser re-ran on the winner's record");
    assert_eq!(sim.store().stats().conflicts, 1);
    let mut applied = events(&sim, "p");
    applied.sort();
    assert_eq!(applied, ["signal:a", "signal:b", "started"]);
    assert_eq!(record(&sim, "p").transitions, 3);
}

#[test]
fn a_contended_instance_backs_off_and_defers_rather_than_failing() {
    let sim = interleaving_sim();
    id(start(&sim, "p", json!({})));
    let handlers = (0..40)
        .map(|i| {
            sim.runtime()
                .handle(signal_env(&format!("s{i}"), "p", "n", Value::Null))
        })
        .collect();
    let results = run_concurrently(&sim, handlers);
    let mut applied = 0;
    let mut deferred = Vec::new();
    for result in results {
        match result {
            Ok(Disposition::Applied { .. }) => applied += 1,
            Ok(Disposition::Deferred { delay, reason }) => {
                assert!(reason.contains("conflicting saves"), "{reason}");
                deferred.push(delay);
            }
            other => panic!("no message fails or is lost under contention: {other:?}"),
        }
    }
    assert!(applied > 0, "progress is made");
    assert!(
        sim.now() > reanimate_core::sim::SIM_EPOCH,
        "they backed off"
    );
    // What was deferred is back on the queue, marked, with its delay; it applies later.
    let back = queued(&sim);
    assert_eq!(back.len(), deferred.len());
    assert!(back.iter().all(|e| e.deferrals == 1));
    assert!(deferred.iter().all(|d| *d >= Duration::from_secs(1)));
    for env in back {
        id(handle(&sim, env));
    }
    assert_eq!(
        record(&sim, "p").transitions,
        41,
        "every signal applied once"
    );
}

// --- Children, cancellation ---------------------------------------------------------------------

#[test]
fn cancel_propagates_to_live_children_and_disarms_their_timers() {
    let mut sim = sim();
    id(start(
        &sim,
        "parent",
        json!({ "children": 3, "child_timer_days": 7 }),
    ));
    drain(&sim);
    assert_eq!(sim.timers().armed(), 3);
    let cancel = Event::CancelRequested {
        reason: "no longer needed".into(),
    };
    sim.send(Envelope::new(
        id(MessageId::new("c")),
        id(InstanceId::new("parent")),
        "probe",
        cancel,
    ));
    id(sim.run(&mut SilentUser));
    let parent = record(&sim, "parent");
    assert_eq!(
        (parent.status, parent.error.as_deref()),
        (Status::Cancelled, Some("no longer needed"))
    );
    for child in sim.store().all().into_iter().filter(|r| r.parent.is_some()) {
        assert_eq!(child.status, Status::Cancelled, "{}", child.id);
        assert_eq!(child.error.as_deref(), Some("parent parent cancelled"));
    }
    assert_eq!(sim.timers().armed(), 0, "no timer outlives its instance");
    assert!(events(&sim, "parent").ends_with(&["cancel_requested".to_string()]));
}

#[test]
fn a_cancel_that_overtakes_the_start_leaves_a_tombstone_and_the_parent_hears() {
    let sim = sim();
    id(start(
        &sim,
        "parent",
        json!({ "children": 1, "child_timer_days": 7, "timer_secs": 600 }),
    ));
    let child_start = queued(&sim)
        .pop()
        .unwrap_or_else(|| panic!("no child start"));
    id(handle(
        &sim,
        signal_env("m1", "parent", "cancel-children", Value::Null),
    ));
    let cancel = queued(&sim)
        .pop()
        .unwrap_or_else(|| panic!("no cancel sent"));
    // The cancel arrives first: no record yet, so it leaves a tombstone.
    assert!(matches!(
        handle(&sim, cancel),
        Ok(Disposition::Applied {
            status: Status::Cancelled,
            ..
        })
    ));
    // The start arrives late: refused, and the parent is told the child was cancelled.
    assert!(matches!(
        handle(&sim, child_start.clone()),
        Ok(Disposition::Applied {
            status: Status::Cancelled,
            ..
        })
    ));
    let reason = ignored(handle(&sim, child_start.clone()));
    assert!(reason.contains("cancelled before it started"), "{reason}");
    let child = record(&sim, child_start.target.as_str());
    assert!(child.tombstone && child.status == Status::Cancelled);
    assert!(
        child.parent.is_some(),
        "linked to its parent by the refused start"
    );
    assert_eq!(child.transitions, 0, "it never ran");
    drain(&sim);
    let events = events(&sim, "parent");
    assert_eq!(
        events.last().map(String::as_str),
        Some("failed:c0:true:not needed"),
        "{events:?}"
    );
    assert!(record(&sim, "parent").waiting.children.is_empty());
    assert_eq!(
        sim.timers().armed(),
        1,
        "the child armed nothing; only the parent's timer"
    );
}

#[test]
fn a_completion_that_overtakes_progress_waits_for_it() {
    let sim = sim();
    id(start(
        &sim,
        "parent",
        json!({ "children": 1, "progress": 2 }),
    ));
    drain_one(&sim); // the child's start: it reports twice and completes in one step
    let mut messages: Vec<_> = std::iter::from_fn(|| sim.queue().receive(sim.now(), 0)).collect();
    assert_eq!(
        messages
            .iter()
            .map(|d| d.envelope.event.kind())
            .collect::<Vec<_>>(),
        ["child_progress", "child_progress", "child_completed"]
    );
    messages.reverse(); // deliver the completion first, then progress 1, then progress 0
    let parent_events = |sim: &Simulation| events(sim, "parent");
    id(handle(&sim, messages[0].envelope.clone()));
    assert_eq!(parent_events(&sim), ["started"], "completion held back");
    id(handle(&sim, messages[1].envelope.clone()));
    assert_eq!(parent_events(&sim), ["started", "progress:c0:1"]);
    id(handle(&sim, messages[2].envelope.clone()));
    assert_eq!(
        parent_events(&sim),
        ["started", "progress:c0:1", "progress:c0:0", "completed:c0"]
    );
    assert!(record(&sim, "parent").waiting.children.is_empty());
}

#[test]
fn a_continuation_runs_once_and_a_stale_one_is_ignored() {
    let sim = sim();
    id(start(&sim, "p", json!({})));
    id(handle(&sim, signal_env("m1", "p", "loop", Value::Null)));
    assert_eq!(record(&sim, "p").status, Status::Running);
    let continuation = sim
        .queue()
        .receive(sim.now(), 0)
        .unwrap_or_else(|| panic!("no continuation sent"));
    id(handle(&sim, continuation.envelope.clone()));
    assert_eq!(record(&sim, "p").status, Status::Suspended);
    let mut stale = continuation.envelope;
    stale.id = id(MessageId::new("forged"));
    assert!(matches!(
        handle(&sim, stale),
        Ok(Disposition::Ignored { .. })
    ));
    assert_eq!(events(&sim, "p"), ["started", "signal:loop", "continue"]);
}

// --- Requests: the answer stored is the answer applied ------------------------------------------

fn asked(sim: &Simulation, schema: Value, deadline_secs: Option<u64>) -> RequestId {
    id(start(
        sim,
        "p",
        json!({ "ask": schema, "deadline_secs": deadline_secs }),
    ));
    drain(sim);
    id(block_on(sim.inbox().list_open()))[0].request.id.clone()
}

fn answer_env(request: &RequestId, answer: Value) -> Envelope {
    Envelope::new(
        MessageId::for_answer(request),
        id(InstanceId::new("p")),
        "probe",
        Event::UserAnswered {
            request: request.clone(),
            answer,
        },
    )
}

fn answer(sim: &Simulation, request: &RequestId, answer: Value) -> Result<()> {
    block_on(reanimate_core::client::answer(
        sim.inbox(),
        sim.queue(),
        sim.runtime().clock(),
        request,
        answer,
    ))
}

#[test]
fn an_answer_not_recorded_in_the_inbox_is_refused_and_leaves_the_instance_unchanged() {
    let sim = sim();
    let request = asked(&sim, json!({"type": "boolean"}), None);
    let before = record(&sim, "p");
    let err = handle(&sim, answer_env(&request, json!(true))).unwrap_err();
    assert!(
        !err.is_retryable() && err.reason.contains("not recorded in the inbox"),
        "{err}"
    );
    assert_eq!(
        record(&sim, "p"),
        before,
        "a refused answer changes nothing"
    );
}

#[test]
fn the_answer_applied_is_the_one_the_inbox_recorded() {
    let sim = sim();
    let request = asked(&sim, json!({"type": "boolean"}), None);
    id(answer(&sim, &request, json!(true)));
    // Whatever another message claims, the recorded answer is the one applied.
    id(handle(&sim, answer_env(&request, json!(false))));
    assert_eq!(events(&sim, "p"), ["started", "user_answered:true"]);
    drain(&sim);
    let entry = id(block_on(sim.inbox().get(&request))).unwrap_or_else(|| panic!("gone"));
    assert_eq!(
        (entry.status, entry.answer, entry.applied_at.is_some()),
        (RequestStatus::Answered, Some(json!(true)), true)
    );
}

#[test]
fn an_invalid_recorded_answer_is_refused_and_leaves_the_instance_unchanged() {
    let sim = sim();
    let schema =
        json!({"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}});
    let request = asked(&sim, schema, None);
    let before = record(&sim, "p");
    // A client that skipped validation wrote it to the inbox.
    block_on(
        sim.inbox()
            .record_answer(&request, json!({"ok": "yes"}), sim.now()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = handle(&sim, answer_env(&request, json!({"ok": "yes"}))).unwrap_err();
    assert!(
        !err.is_retryable()
            && err.reason.contains("refused")
            && err.reason.contains("/ok")
            && err.reason.contains("boolean"),
        "{err}"
    );
    assert_eq!(record(&sim, "p"), before);
}

#[test]
fn the_inbox_refuses_an_invalid_answer_before_it_reaches_the_instance() {
    let mut sim = sim();
    let request = asked(&sim, json!({"type": "integer"}), None);
    let err = answer(&sim, &request, json!("3")).unwrap_err();
    assert!(
        err.reason.contains("is not of type \"integer\"") && !err.reason.contains("\"3\""),
        "{err}"
    );
    assert!(sim.queue().is_empty(), "nothing was sent");
    id(answer(&sim, &request, json!(3)));
    id(sim.run(&mut SilentUser));
    assert_eq!(events(&sim, "p"), ["started", "user_answered:3"]);
}

#[test]
fn of_two_answers_the_first_recorded_wins_and_the_other_is_told_it_lost() {
    let mut sim = sim();
    let request = asked(&sim, json!({"type": "string"}), None);
    id(answer(&sim, &request, json!("first")));
    let err = answer(&sim, &request, json!("second")).unwrap_err();
    assert!(
        !err.is_retryable() && err.reason.contains("already answered with another answer"),
        "{err}"
    );
    id(answer(&sim, &request, json!("first")));
    id(sim.run(&mut SilentUser));
    assert_eq!(events(&sim, "p"), ["started", "user_answered:\"first\""]);
    let entry = id(block_on(sim.inbox().get(&request))).unwrap_or_else(|| panic!("gone"));
    assert_eq!(entry.answer, Some(json!("first")));
}

#[test]
fn a_winner_that_recorded_its_answer_but_never_sent_it_is_sent_by_the_loser() {
    let mut sim = sim();
    let request = asked(&sim, json!({"type": "string"}), None);
    // The first client records its answer in the inbox and stops before sending it.
    let now = sim.runtime().clock().now();
    assert!(matches!(
        id(block_on(sim.inbox().record_answer(
            &request,
            json!("first"),
            now
        ))),
        AnswerRecord::Recorded
    ));
    assert!(queued(&sim).is_empty());
    let err = answer(&sim, &request, json!("second")).unwrap_err();
    assert!(
        err.reason.contains("already answered with another answer"),
        "{err}"
    );
    id(sim.run(&mut SilentUser));
    assert_eq!(events(&sim, "p"), ["started", "user_answered:\"first\""]);
}

#[test]
fn an_unanswered_request_expires_at_its_deadline_and_a_late_answer_is_told_so() {
    let mut sim = sim();
    let request = asked(&sim, json!({"type": "string"}), Some(3600));
    let report = id(sim.run(&mut SilentUser));
    assert_eq!(events(&sim, "p"), ["started", "request_expired"]);
    assert_eq!(sim.inbox().all()[0].status, RequestStatus::Expired);
    assert_eq!(
        report.ended_at.as_millis() - report.started_at.as_millis(),
        3_600_000
    );
    let err = answer(&sim, &request, json!("too late")).unwrap_err();
    assert!(err.reason.contains("expired"), "{err}");
}

#[test]
fn an_answer_after_the_deadline_is_refused_even_before_the_request_expires() {
    let sim = sim();
    let request = asked(&sim, json!({"type": "string"}), Some(60));
    sim.advance_clock(Duration::from_secs(61));
    let err = answer(&sim, &request, json!("late")).unwrap_err();
    assert!(err.reason.contains("past its deadline"), "{err}");
}

#[test]
fn a_deadline_that_loses_the_race_to_a_recorded_answer_applies_the_answer() {
    let mut sim = sim();
    let request = asked(&sim, json!({"type": "string"}), Some(60));
    // Recorded just before the deadline; the answer message is still on its way when the
    // deadline timer fires.
    sim.advance_clock(Duration::from_secs(59));
    id(answer(&sim, &request, json!("just in time")));
    let answer_message = queued(&sim)
        .pop()
        .unwrap_or_else(|| panic!("no answer sent"));
    id(sim.run(&mut SilentUser));
    assert_eq!(
        events(&sim, "p"),
        ["started", "user_answered:\"just in time\""]
    );
    let reason = ignored(handle(&sim, answer_message));
    assert!(reason.contains("no longer pending"), "{reason}");
    let entry = id(block_on(sim.inbox().get(&request))).unwrap_or_else(|| panic!("gone"));
    assert_eq!(entry.status, RequestStatus::Answered);
    assert_eq!(entry.answer, Some(json!("just in time")));
}

#[test]
fn an_invalid_answer_schema_fails_the_instance() {
    let sim = sim();
    id(start(&sim, "p", json!({ "ask": {"type": 12} })));
    let r = record(&sim, "p");
    assert_eq!(r.status, Status::Failed);
    assert!(r.error.unwrap_or_default().contains("invalid JSON Schema"));
}

#[test]
fn text_that_sqs_refuses_travels_escaped() {
    let sim = sim();
    id(start(&sim, "p", json!({})));
    let env = signal_env("m2", "p", "odd\u{fffe}name", json!("\u{ffff}"));
    let body = env.to_json();
    assert!(
        body.chars().all(reanimate_core::text::sqs_accepts),
        "{body}"
    );
    let back = id(Envelope::from_json(&body));
    assert_eq!(back, env);
    id(handle(&sim, back));
    assert!(events(&sim, "p").contains(&"signal:odd\u{fffe}name".to_string()));
}

#[test]
fn zz_fan_in_all_at_once() {
    for seed in 0..20u64 {
        let sim = Simulation::new(
            Registry::new().with(Probe),
            seed,
            Faults {
                concurrency: 2,
                processes: 1,
                ..Faults::none()
            },
        );
        id(start(
            &sim,
            "parent",
            json!({ "children": 30, "progress": 1 }),
        ));
        // start every child
        let starts = queued(&sim);
        for s in starts {
            id(handle(&sim, s));
        }
        let mut msgs = queued(&sim);
        // shuffle deterministically
        let mut rng = reanimate_core::random::SplitMix64::new(seed);
        for i in (1..msgs.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            msgs.swap(i, j);
        }
        assert_eq!(msgs.len(), 60);
        let handlers = msgs.into_iter().map(|e| sim.runtime().handle(e)).collect();
        let results = run_concurrently(&sim, handlers);
        for r in &results {
            assert!(
                matches!(
                    r,
                    Ok(Disposition::Applied { .. }) | Ok(Disposition::Deferred { .. })
                ),
                "{r:?}"
            );
        }
        for env in queued(&sim) {
            let _ = handle(&sim, env);
        }
        let ev = events(&sim, "parent");
        let completed = ev.iter().filter(|e| e.starts_with("completed")).count();
        let progress = ev.iter().filter(|e| e.starts_with("progress")).count();
        assert_eq!(
            (completed, progress),
            (30, 30),
            "seed {seed}: {ev:?} {:?}",
            record(&sim, "parent").waiting.children
        );
    }
}

#[test]
fn a_winner_that_dies_before_sending_has_its_outbox_sent_by_the_handler_that_replaces_it() {
    let sim = interleaving_sim();
    id(start(&sim, "p", json!({})));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // Two processes load version 1 of p together.
    let mut winner = Box::pin(
        sim.process(0)
            .handle(signal_env("a", "p", "ping", json!("t"))),
    );
    let mut loser = Box::pin(
        sim.process(1)
            .handle(signal_env("b", "p", "n", Value::Null)),
    );
    // Each port call yields before and after its effect: two polls each, and both have read it.
    for _ in 0..2 {
        assert!(winner.as_mut().poll(&mut cx).is_pending());
        assert!(loser.as_mut().poll(&mut cx).is_pending());
    }
    // The winner saves version 2 (its signal to t in the outbox) and dies before sending it.
    while record(&sim, "p").version < 2 {
        assert!(winner.as_mut().poll(&mut cx).is_pending());
    }
    drop(winner);
    sim.process(0).forget_process_memory();
    assert!(sim.queue().is_empty(), "nothing was sent");
    // The loser re-runs on version 2 (after its backoff) and replaces it: the winner's signal
    // goes out with its step.
    let result = finish_through_backoff(&sim, loser.as_mut());
    assert!(
        matches!(result, Ok(Disposition::Applied { version: 3, .. })),
        "{result:?}"
    );
    let sent = queued(&sim);
    assert!(
        sent.iter().any(|e| e.target.as_str() == "t"
            && matches!(&e.event, Event::Signal { name, .. } if name == "pinged")),
        "the dead winner's signal was sent: {sent:?}"
    );
}
