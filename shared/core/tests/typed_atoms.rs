//! The typed atom API through the runtime: a parent names its children with its own tag enum,
//! reads their outputs as the child atom's `Output`, and a failure it does not handle propagates.
//! Run on the seeded simulation, faults on, so redeliveries and conflicts go through the same
//! conversions.

use reanimate_core::sim::{Faults, SilentUser, Simulation};
use reanimate_core::{
    Atom, AtomEvent, Context, Envelope, InstanceId, MessageId, Registry, Result, Status, Step,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Doubles its input.
struct Double;

impl Atom for Double {
    const TYPE: &'static str = "double";
    type Input = u32;
    type State = ();
    type Output = u64;
    type Tag = String;

    fn start(&self, n: u32, _: &mut Context<'_>) -> Result<((), Step<u64>)> {
        Ok(((), Step::Complete(u64::from(n) * 2)))
    }

    fn step(&self, _: &mut (), _: AtomEvent<String>, _: &mut Context<'_>) -> Result<Step<u64>> {
        Ok(Step::Suspend)
    }
}

/// Fails at once.
struct Broken;

impl Atom for Broken {
    const TYPE: &'static str = "broken";
    type Input = ();
    type State = ();
    type Output = ();
    type Tag = String;

    fn start(&self, _: (), _: &mut Context<'_>) -> Result<((), Step<()>)> {
        Ok(((), Step::Fail("the disk is full".into())))
    }

    fn step(&self, _: &mut (), _: AtomEvent<String>, _: &mut Context<'_>) -> Result<Step<()>> {
        Ok(Step::Suspend)
    }
}

/// Sums the doubles of its inputs; with `break_one`, also starts a child that fails, and does
/// not handle failures (`failed` is the default).
struct Sum;

#[derive(Serialize, Deserialize)]
struct SumInput {
    numbers: Vec<u32>,
    break_one: bool,
}

#[derive(Serialize, Deserialize)]
struct SumState {
    waiting: usize,
    total: u64,
    /// Which doubles arrived, by the tag's number: tags decode to the atom's own enum.
    seen: Vec<u32>,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum SumTag {
    Double(u32),
    Broken,
}

impl Atom for Sum {
    const TYPE: &'static str = "sum";
    type Input = SumInput;
    type State = SumState;
    type Output = (u64, Vec<u32>);
    type Tag = SumTag;

    fn start(
        &self,
        input: SumInput,
        ctx: &mut Context<'_>,
    ) -> Result<(SumState, Step<Self::Output>)> {
        for (i, n) in input.numbers.iter().enumerate() {
            ctx.spawn::<Double>(SumTag::Double(i as u32), n);
        }
        if input.break_one {
            ctx.spawn::<Broken>(SumTag::Broken, &());
        }
        // The broken child counts too: the sum cannot finish before it is heard from.
        let state = SumState {
            waiting: input.numbers.len() + usize::from(input.break_one),
            total: 0,
            seen: Vec::new(),
        };
        Ok((state, Step::Suspend))
    }

    fn step(
        &self,
        state: &mut SumState,
        event: AtomEvent<SumTag>,
        _: &mut Context<'_>,
    ) -> Result<Step<Self::Output>> {
        if let AtomEvent::ChildCompleted {
            tag: SumTag::Double(i),
            output,
            ..
        } = event
        {
            state.total += output.output_of::<Double>()?;
            state.seen.push(i);
            state.waiting -= 1;
        }
        if state.waiting == 0 {
            state.seen.sort_unstable();
            return Ok(Step::Complete((state.total, state.seen.clone())));
        }
        Ok(Step::Suspend)
    }
}

fn run(seed: u64, input: serde_json::Value) -> reanimate_core::sim::InstanceSummary {
    let registry = Registry::new().with(Sum).with(Double).with(Broken);
    let mut sim = Simulation::new(registry, seed, Faults::chaos());
    sim.send(Envelope::start(
        MessageId::new("start").unwrap_or_else(|e| panic!("{e}")),
        InstanceId::new("s").unwrap_or_else(|e| panic!("{e}")),
        "sum",
        input,
    ));
    sim.run(&mut SilentUser).unwrap_or_else(|e| panic!("{e}"));
    sim.snapshot()["s"].clone()
}

#[test]
fn children_are_named_by_the_parents_tag_enum_and_their_outputs_decode_as_the_childs_output() {
    for seed in 1..=30 {
        let sum = run(seed, json!({"numbers": [1, 2, 3, 4], "break_one": false}));
        assert_eq!(
            sum.status,
            Status::Completed,
            "seed {seed}: {:?}",
            sum.error
        );
        assert_eq!(sum.result, Some(json!([20, [0, 1, 2, 3]])), "seed {seed}");
    }
}

#[test]
fn a_childs_failure_the_parent_does_not_handle_fails_the_parent_with_the_reason() {
    for seed in 1..=30 {
        let sum = run(seed, json!({"numbers": [1, 2], "break_one": true}));
        assert_eq!(sum.status, Status::Failed, "seed {seed}");
        let error = sum.error.unwrap_or_default();
        assert!(
            error.contains("broken failed: the disk is full"),
            "seed {seed}: {error}"
        );
    }
}

/// Names a child with a tag whose encoding another of its variants would claim.
struct Colliding;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum CollidingTag {
    Digest(String),
    DigestRetry(u64),
}

impl Atom for Colliding {
    const TYPE: &'static str = "colliding";
    type Input = ();
    type State = ();
    type Output = ();
    type Tag = CollidingTag;

    fn start(&self, _: (), ctx: &mut Context<'_>) -> Result<((), Step<()>)> {
        ctx.spawn::<Double>(CollidingTag::DigestRetry(3), &1);
        Ok(((), Step::Suspend))
    }

    fn step(
        &self,
        _: &mut (),
        _: AtomEvent<CollidingTag>,
        _: &mut Context<'_>,
    ) -> Result<Step<()>> {
        Ok(Step::Suspend)
    }
}

#[test]
fn a_tag_that_would_come_back_as_another_fails_the_step_that_made_it() {
    let registry = Registry::new().with(Colliding).with(Double);
    let mut sim = Simulation::new(registry, 1, Faults::none());
    sim.send(Envelope::start(
        MessageId::new("start").unwrap_or_else(|e| panic!("{e}")),
        InstanceId::new("c").unwrap_or_else(|e| panic!("{e}")),
        "colliding",
        json!(null),
    ));
    sim.run(&mut SilentUser).unwrap_or_else(|e| panic!("{e}"));
    let snapshot = sim.snapshot();
    let colliding = &snapshot["c"];
    assert_eq!(colliding.status, Status::Failed);
    let error = colliding.error.clone().unwrap_or_default();
    assert!(error.contains("digest-retry-3"), "{error}");
    assert_eq!(
        snapshot.len(),
        1,
        "no child was started: {:?}",
        snapshot.keys()
    );
}
