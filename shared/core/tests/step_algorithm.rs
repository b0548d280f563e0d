//! The step algorithm's rules, one by one, on the in-memory ports. `Probe` is a test double: an
//! atom that does whatever its input or a signal tells it and records every event it sees.

use reanimate_core::ports::{Inbox, RequestStatus};
use reanimate_core::record::{InstanceRecord, MAX_RECORD_BYTES};
use reanimate_core::sim::{Faults, SilentUser, Simulation, block_on};
use reanimate_core::{
    Ask, Atom, AtomEvent, Context, Disposition, Envelope, Error, Event, InstanceId, MessageId,
    Registry, Result, Status, Step, TimerId,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ProbeInput {
    #[serde(default)]
    children: u32,
    #[serde(default)]
    child_timer_days: Option<u64>,
    #[serde(default)]
    timer_secs: Option<u64>,
    #[serde(default)]
    ask: Option<Value>,
    #[serde(default)]
    deadline_secs: Option<u64>,
    #[serde(default)]
    progress: u32,
    #[serde(default)]
    complete_at_once: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ProbeState {
    events: Vec<String>,
    padding: String,
}

struct Probe;

impl Atom for Probe {
    const TYPE: &'static str = "probe";
    type Input = ProbeInput;
    type State = ProbeState;
    type Output = Value;

    fn step(
        &self,
        state: &mut ProbeState,
        event: AtomEvent<ProbeInput>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<Value>> {
        let kind = event.kind();
        match event {
            AtomEvent::Started(input) => {
                state.events.push(kind.into());
                for i in 0..input.children {
                    let child = ProbeInput {
                        timer_secs: input.child_timer_days.map(|d| d * 86_400),
                        progress: input.progress,
                        complete_at_once: input.child_timer_days.is_none(),
                        ..ProbeInput::default()
                    };
                    ctx.spawn::<Probe>(format!("c{i}"), &child);
                }
                if let Some(secs) = input.timer_secs {
                    ctx.set_timer_after("t", Duration::from_secs(secs));
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
                    });
                }
                for seq in 0..input.progress {
                    ctx.report_progress(&json!({ "seq": seq }));
                }
                if input.complete_at_once {
                    return Ok(Step::Complete(json!("done")));
                }
            }
            AtomEvent::Signal { name, payload } => {
                state.events.push(format!("signal:{name}"));
                match name.as_str() {
                    "rearm" => ctx.set_timer_after("t", Duration::from_secs(120)),
                    "grow" => state.padding = "x".repeat(payload.as_u64().unwrap_or(0) as usize),
                    "shout" => {
                        let target = reanimate_core::InstanceRef {
                            id: ctx.instance().clone(),
                            atom: "probe".into(),
                        };
                        ctx.signal(
                            target,
                            "echo",
                            &"y".repeat(payload.as_u64().unwrap_or(0) as usize),
                        );
                    }
                    "flaky" => return Err(Error::retryable("the model endpoint is throttling")),
                    "finish" => return Ok(Step::Complete(json!(state.events))),
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
            AtomEvent::ChildFailed { tag, cancelled, .. } => {
                state.events.push(format!("failed:{tag}:{cancelled}"))
            }
            other => state.events.push(other.kind().into()),
        }
        Ok(Step::Suspend)
    }
}

fn id<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn sim() -> Simulation {
    Simulation::new(Registry::new().with(Probe), 7, Faults::none())
}

fn start(sim: &Simulation, instance: &str, input: Value) -> Result<Disposition> {
    let env = Envelope::start(
        id(MessageId::new(format!("start:{instance}"))),
        id(InstanceId::new(instance)),
        "probe",
        input,
    );
    block_on(sim.runtime().handle(env))
}

fn signal_env(msg: &str, instance: &str, name: &str, payload: Value) -> Envelope {
    let event = Event::Signal {
        name: name.into(),
        payload,
    };
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
    assert_eq!(start(&sim, "p", json!({})), Ok(Disposition::Duplicate));
    assert_eq!(events(&sim, "p"), ["started", "signal:hello"]);
    assert_eq!(record(&sim, "p").transitions, 2);
}

#[test]
fn an_invalid_answer_is_refused_and_leaves_the_instance_unchanged() {
    let sim = sim();
    let schema =
        json!({"type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}});
    id(start(&sim, "p", json!({ "ask": schema })));
    drain(&sim);
    let request = block_on(sim.inbox().list_open()).map(|open| open[0].request.id.clone());
    let request = id(request);
    let before = record(&sim, "p");

    let answer = |msg: &str, answer: Value| {
        let event = Event::UserAnswered {
            request: request.clone(),
            answer,
        };
        Envelope::new(
            id(MessageId::new(msg)),
            id(InstanceId::new("p")),
            "probe",
            event,
        )
    };
    let err = handle(&sim, answer("a1", json!({"ok": "yes"}))).unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(
        err.reason.contains("refused")
            && err.reason.contains("/ok")
            && err.reason.contains("boolean"),
        "{err}"
    );
    assert_eq!(
        record(&sim, "p"),
        before,
        "a refused answer changes nothing"
    );

    assert!(matches!(
        handle(&sim, answer("a2", json!({"ok": true}))),
        Ok(Disposition::Applied { .. })
    ));
    assert_eq!(events(&sim, "p"), ["started", "user_answered"]);
    drain(&sim);
    let entry = id(block_on(sim.inbox().get(&request))).unwrap_or_else(|| panic!("request gone"));
    assert_eq!(entry.status, RequestStatus::Answered);
}

#[test]
fn the_inbox_refuses_an_invalid_answer_before_it_reaches_the_instance() {
    let mut sim = sim();
    id(start(&sim, "p", json!({ "ask": {"type": "integer"} })));
    drain(&sim);
    let request = id(block_on(sim.inbox().list_open()))[0].request.id.clone();
    let err = block_on(reanimate_core::client::answer(
        sim.inbox(),
        sim.queue(),
        sim.runtime().clock(),
        &request,
        json!("3"),
    ))
    .unwrap_err();
    assert!(
        err.reason.contains("\"3\" is not of type \"integer\""),
        "{err}"
    );
    assert!(sim.queue().is_empty(), "nothing was sent");
    id(block_on(reanimate_core::client::answer(
        sim.inbox(),
        sim.queue(),
        sim.runtime().clock(),
        &request,
        json!(3),
    )));
    id(sim.run(&mut SilentUser));
    assert_eq!(events(&sim, "p"), ["started", "user_answered"]);
}

#[test]
fn a_timer_that_is_no_longer_pending_is_ignored() {
    let sim = sim();
    id(start(&sim, "p", json!({ "timer_secs": 60 })));
    let first = record(&sim, "p").waiting.timers["t"].id.clone();
    id(handle(&sim, signal_env("m1", "p", "rearm", Value::Null)));
    let second = record(&sim, "p").waiting.timers["t"].id.clone();
    assert_ne!(first, second);

    let fire = |timer: &TimerId| {
        let event = Event::TimerFired {
            name: "t".into(),
            timer: timer.clone(),
        };
        Envelope::new(
            MessageId::for_timer(timer),
            id(InstanceId::new("p")),
            "probe",
            event,
        )
    };
    match handle(&sim, fire(&first)) {
        Ok(Disposition::Ignored { reason }) => {
            assert!(reason.contains("no longer pending"), "{reason}")
        }
        other => panic!("expected the stale firing to be ignored, got {other:?}"),
    }
    assert!(matches!(
        handle(&sim, fire(&second)),
        Ok(Disposition::Applied { .. })
    ));
    assert_eq!(
        events(&sim, "p"),
        ["started", "signal:rearm", "timer_fired"]
    );
}

#[test]
fn a_week_long_timer_fires_in_virtual_time() {
    let mut sim = sim();
    let started = sim.now();
    id(start(&sim, "p", json!({ "timer_secs": 7 * 86_400 })));
    let report = id(sim.run(&mut SilentUser));
    assert_eq!(events(&sim, "p"), ["started", "timer_fired"]);
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
    match handle(&sim, signal_env("m2", "p", "late", Value::Null)) {
        Ok(Disposition::Ignored { reason }) => assert_eq!(reason, "instance is already completed"),
        other => panic!("{other:?}"),
    }
}

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
fn an_outbox_lost_in_a_crash_is_sent_by_the_redelivered_message() {
    let sim = sim();
    sim.queue().fail_next_sends(1);
    let err = start(&sim, "parent", json!({ "children": 2 })).unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let saved = record(&sim, "parent");
    assert_eq!(
        (saved.version, saved.outbox.len()),
        (1, 2),
        "the step and its outbox were saved"
    );
    assert!(
        sim.queue().is_empty(),
        "but the children were never started"
    );

    assert_eq!(
        start(&sim, "parent", json!({ "children": 2 })),
        Ok(Disposition::Duplicate)
    );
    assert_eq!(
        sim.queue().len(),
        2,
        "the redelivered start re-sent the outbox"
    );
    drain(&sim);
    assert_eq!(record(&sim, "parent").status, Status::Suspended);
    assert_eq!(
        events(&sim, "parent"),
        ["started", "completed:c0", "completed:c1"]
    );
}

#[test]
fn concurrent_handlers_on_one_instance_both_apply_once() {
    // With concurrency above 1 the simulation's ports yield once per call, so two handlers can
    // be interleaved by polling them in turn.
    let sim = Simulation::new(
        Registry::new().with(Probe),
        7,
        Faults {
            concurrency: 2,
            ..Faults::none()
        },
    );
    id(start(&sim, "p", json!({})));
    let mut a = Box::pin(sim.runtime().handle(signal_env("a", "p", "a", Value::Null)));
    let mut b = Box::pin(sim.runtime().handle(signal_env("b", "p", "b", Value::Null)));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // Both load version 1 before either saves.
    assert!(a.as_mut().poll(&mut cx).is_pending());
    assert!(b.as_mut().poll(&mut cx).is_pending());
    let (mut a_done, mut b_done) = (None, None);
    while a_done.is_none() || b_done.is_none() {
        if a_done.is_none()
            && let Poll::Ready(r) = a.as_mut().poll(&mut cx)
        {
            a_done = Some(r);
        }
        if b_done.is_none()
            && let Poll::Ready(r) = b.as_mut().poll(&mut cx)
        {
            b_done = Some(r);
        }
    }
    let versions = [a_done, b_done].map(|r| match r {
        Some(Ok(Disposition::Applied { version, .. })) => version,
        other => panic!("{other:?}"),
    });
    assert_eq!(versions, [2, 3], "the loser re-ran on the winner's record");
    assert_eq!(sim.store().stats().conflicts, 1);
    assert_eq!(events(&sim, "p"), ["started", "signal:a", "signal:b"]);
    assert_eq!(record(&sim, "p").transitions, 3);
}

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

fn drain_one(sim: &Simulation) {
    if let Some(d) = sim.queue().receive(sim.now(), 0) {
        id(handle(sim, d.envelope));
    }
}

#[test]
fn an_unanswered_request_expires_at_its_deadline() {
    let mut sim = sim();
    id(start(
        &sim,
        "p",
        json!({ "ask": {"type": "string"}, "deadline_secs": 3600 }),
    ));
    let report = id(sim.run(&mut SilentUser));
    assert_eq!(events(&sim, "p"), ["started", "request_expired"]);
    assert_eq!(sim.inbox().all()[0].status, RequestStatus::Expired);
    assert_eq!(
        report.ended_at.as_millis() - report.started_at.as_millis(),
        3_600_000
    );
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
    fn step(&self, _: &mut (), _: AtomEvent<Value>, _: &mut Context<'_>) -> Result<Step<()>> {
        Ok(Step::Suspend)
    }
}

#[test]
fn addressing_an_atom_type_that_is_not_deployed_fails_the_instance_with_the_reason() {
    use reanimate_core::memory::{
        MemoryInbox, MemoryQueue, MemoryStore, MemoryTimers, VirtualClock, YieldPoints,
    };
    let clock = VirtualClock::default();
    let queue = MemoryQueue::new(clock.clone(), YieldPoints::default());
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
    let start = Envelope::start(
        id(MessageId::new("s")),
        id(InstanceId::new("p")),
        "probe",
        json!({}),
    );
    id(block_on(runtime.handle(start)));
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
