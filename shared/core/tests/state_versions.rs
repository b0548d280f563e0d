//! State versions: an instance started by one version of an atom resumes under the next, whose
//! `State` has another shape, through the atom's migration; a state written by newer code is never
//! overwritten by older code. `TallyV1` and `TallyV2` are the same atom type ("tally") before and
//! after a deploy.

use reanimate_core::memory::{
    Hazards, MemoryInbox, MemoryQueue, MemoryStore, MemoryTimers, VirtualClock,
};
use reanimate_core::sim::block_on;
use reanimate_core::{
    Atom, AtomEvent, Context, Disposition, Envelope, Error, Event, InstanceId, InstanceRecord,
    MessageId, Registry, Result, Runtime, Status, Step,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const TALLY: &str = "tally";

/// Version 1: a bare count.
struct TallyV1;

#[derive(Serialize, Deserialize)]
struct CountV1 {
    count: u32,
}

impl Atom for TallyV1 {
    const TYPE: &'static str = TALLY;
    type Input = u32;
    type State = CountV1;
    type Output = u32;
    type Tag = String;

    fn start(&self, count: u32, _: &mut Context<'_>) -> Result<(CountV1, Step<u32>)> {
        Ok((CountV1 { count }, Step::Suspend))
    }

    fn step(
        &self,
        state: &mut CountV1,
        event: AtomEvent<String>,
        _: &mut Context<'_>,
    ) -> Result<Step<u32>> {
        if let AtomEvent::Signal { name, .. } = event
            && name == "add"
        {
            state.count += 1;
        }
        Ok(Step::Suspend)
    }
}

/// Version 2: the count became a total with a unit, and every addition is remembered.
struct TallyV2;

#[derive(Serialize, Deserialize)]
struct CountV2 {
    total: u64,
    unit: String,
    additions: Vec<u64>,
}

impl Atom for TallyV2 {
    const TYPE: &'static str = TALLY;
    const STATE_VERSION: u32 = 2;
    type Input = u32;
    type State = CountV2;
    type Output = Value;
    type Tag = String;

    fn start(&self, count: u32, _: &mut Context<'_>) -> Result<(CountV2, Step<Value>)> {
        let state = CountV2 {
            total: count.into(),
            unit: "items".into(),
            additions: Vec::new(),
        };
        Ok((state, Step::Suspend))
    }

    fn step(
        &self,
        state: &mut CountV2,
        event: AtomEvent<String>,
        _: &mut Context<'_>,
    ) -> Result<Step<Value>> {
        match event {
            AtomEvent::Signal { name, payload } if name == "add" => {
                let by = payload.decode::<Option<u64>>()?.unwrap_or(1);
                state.total += by;
                state.additions.push(by);
                Ok(Step::Suspend)
            }
            AtomEvent::Signal { name, .. } if name == "finish" => Ok(Step::Complete(json!({
                "total": state.total,
                "unit": state.unit,
                "additions": state.additions,
            }))),
            _ => Ok(Step::Suspend),
        }
    }

    fn migrate(&self, from: u32, state: Value) -> Result<Value> {
        match from {
            1 => Ok(json!({
                "total": state["count"],
                "unit": "items",
                "additions": [],
            })),
            _ => Err(Error::terminal(format!("no migration from {from}"))),
        }
    }
}

/// Version 2 deployed without a migration.
struct TallyV2Unmigrated;

impl Atom for TallyV2Unmigrated {
    const TYPE: &'static str = TALLY;
    const STATE_VERSION: u32 = 2;
    type Input = u32;
    type State = CountV2;
    type Output = Value;
    type Tag = String;

    fn start(&self, count: u32, ctx: &mut Context<'_>) -> Result<(CountV2, Step<Value>)> {
        TallyV2.start(count, ctx)
    }

    fn step(
        &self,
        state: &mut CountV2,
        event: AtomEvent<String>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<Value>> {
        TallyV2.step(state, event, ctx)
    }
}

type TestRuntime = Runtime<MemoryStore, MemoryQueue, MemoryTimers, MemoryInbox, VirtualClock>;

/// The same store and queues, run by the code of one deploy.
#[derive(Clone, Default)]
struct Stack {
    clock: VirtualClock,
    store: MemoryStore,
}

impl Stack {
    fn deploy(&self, registry: Registry) -> TestRuntime {
        Runtime::new(
            registry,
            self.store.clone(),
            MemoryQueue::new(self.clock.clone(), Hazards::default()),
            MemoryTimers::default(),
            MemoryInbox::default(),
            self.clock.clone(),
        )
    }

    fn record(&self) -> InstanceRecord {
        self.store
            .get(&id("t"))
            .unwrap_or_else(|| panic!("no instance"))
    }
}

fn id(s: &str) -> InstanceId {
    InstanceId::new(s).unwrap_or_else(|e| panic!("{e}"))
}

fn message(n: u32, event: Event) -> Envelope {
    let id_ = MessageId::new(format!("m{n}")).unwrap_or_else(|e| panic!("{e}"));
    Envelope::new(id_, id("t"), TALLY, event)
}

fn add(n: u32, by: Value) -> Envelope {
    message(n, Event::signal("add", by))
}

fn applied(runtime: &TestRuntime, envelope: Envelope) -> Disposition {
    block_on(runtime.handle(envelope)).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs the instance under v1: started at 5, one addition.
fn started_under_v1(stack: &Stack) {
    let v1 = stack.deploy(Registry::new().with(TallyV1));
    applied(
        &v1,
        Envelope::start(
            MessageId::new("start").unwrap_or_else(|e| panic!("{e}")),
            id("t"),
            TALLY,
            json!(5),
        ),
    );
    applied(&v1, add(1, Value::Null));
    let record = stack.record();
    assert_eq!(record.state_version, 1);
    assert_eq!(record.state, r#"{"count":6}"#);
}

#[test]
fn an_instance_started_under_v1_resumes_under_v2_through_its_migration() {
    let stack = Stack::default();
    started_under_v1(&stack);

    let v2 = stack.deploy(Registry::new().with(TallyV2));
    applied(&v2, add(2, json!(10)));
    let record = stack.record();
    assert_eq!(record.status, Status::Suspended);
    assert_eq!(record.state_version, 2, "saved at the new version");
    assert_eq!(
        serde_json::from_str::<Value>(&record.state).unwrap_or_default(),
        json!({"total": 16, "unit": "items", "additions": [10]})
    );

    // Later steps load the v2 state as it is (no second migration).
    v2.forget_process_memory();
    applied(&v2, message(3, Event::signal("finish", Value::Null)));
    assert_eq!(
        stack.record().result,
        Some(json!({"total": 16, "unit": "items", "additions": [10]}))
    );
}

#[test]
fn older_code_never_overwrites_a_state_written_by_newer_code() {
    let stack = Stack::default();
    started_under_v1(&stack);
    let v2 = stack.deploy(Registry::new().with(TallyV2));
    applied(&v2, add(2, json!(10)));
    let before = stack.record();

    // A process still running v1 (a rolling deploy) gets the next message.
    let v1 = stack.deploy(Registry::new().with(TallyV1));
    let error = block_on(v1.handle(add(3, Value::Null)))
        .expect_err("v1 must not apply a step to a v2 state");
    assert!(
        error.is_retryable(),
        "{error}: the message goes back for v2"
    );
    assert!(error.reason.contains("version 2"), "{error}");
    assert_eq!(stack.record(), before, "the record is untouched");

    // The redelivery reaches v2 and is applied once.
    applied(&v2, add(3, Value::Null));
    assert!(stack.record().state.contains(r#""additions":[10,1]"#));
}

#[test]
fn a_state_change_deployed_without_a_migration_fails_the_instance_with_the_reason() {
    let stack = Stack::default();
    started_under_v1(&stack);
    let v2 = stack.deploy(Registry::new().with(TallyV2Unmigrated));
    applied(&v2, add(2, Value::Null));
    let record = stack.record();
    assert_eq!(record.status, Status::Failed);
    let error = record.error.unwrap_or_default();
    assert!(
        error.contains("atom tally has no migration from state version 1"),
        "{error}"
    );
}
