//! `planner`: what a playbook could not decide. It asks the stronger model to pick one of the
//! playbook's declared steps, or to ask the user.

use super::prompts::{choose_step_ask, planner_goal, planner_steps};
use crate::mail;
use reanimate_core::playbook::{Choice, Decide, Decision, StepSpec, Tier, Untrusted};
use reanimate_core::{Atom, AtomEvent, Context, Error, Failure, Result, Step};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlanInput {
    pub goal: String,
    #[serde(default)]
    pub facts: Value,
    /// The steps the playbook declared; the plan must be one of them.
    pub steps: Vec<StepSpec>,
    /// Why the playbook could not decide.
    pub problem: String,
    #[serde(default)]
    pub hint: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanOutput {
    pub choice: Choice,
    /// Why this step: the stronger model's reason, or that the user chose it.
    pub why: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PlannerState {
    pub input: PlanInput,
}

/// Handles what a playbook could not decide: asks the stronger model to pick one of the
/// playbook's declared steps, or to ask the user.
///
/// Everything a model wrote (the refusals that brought the matter here) is shown to the planner's
/// model as untrusted data, never as part of its goal. The model cannot write to the user: asking
/// the user means choosing [`ASK_USER`], which opens the one request kind the planner declares,
/// [`CHOOSE_STEP`], with a fixed prompt built from the declared steps and a deadline; when that
/// passes unanswered, the playbook's own suggested step is taken.
#[derive(Clone, Copy, Debug, Default)]
pub struct Planner;

pub const ASK_USER: &str = "ask_user";
/// The request kind the planner opens for the user.
pub const CHOOSE_STEP: &str = "choose_step";
/// How long the user has to choose before the playbook's rule decides.
pub const CHOOSE_STEP_DEADLINE: Duration = Duration::from_secs(86_400);

/// The user's choice, as [`choose_step_ask`]'s schema admits it.
#[derive(Clone, Debug, Deserialize)]
struct ChosenStep {
    step: String,
}

impl Planner {
    /// The step the playbook itself suggested, or the first declared one.
    fn default_choice(input: &PlanInput, why: &str) -> Result<Choice> {
        let suggested = input.hint["suggested"]["step"].as_str();
        let step = input
            .steps
            .iter()
            .find(|s| Some(s.name.as_str()) == suggested)
            .or_else(|| input.steps.first())
            .ok_or_else(|| Error::terminal("a plan needs at least one declared step"))?;
        Ok(Choice {
            step: step.name.clone(),
            args: input.hint["suggested"]["args"].clone(),
            why: why.into(),
            attempts: 0,
            model: "rule".into(),
        })
    }
}

impl Atom for Planner {
    const TYPE: &'static str = "planner";
    type Input = PlanInput;
    type State = PlannerState;
    type Output = PlanOutput;
    /// Its one call is tagged `plan`.
    type Tag = String;

    fn start(
        &self,
        input: PlanInput,
        ctx: &mut Context<'_>,
    ) -> Result<(PlannerState, Step<PlanOutput>)> {
        ctx.decide(
            "plan",
            &Decision {
                goal: planner_goal(&input),
                facts: input.facts.clone(),
                data: vec![Untrusted::new(
                    "why the workflow could not decide (model output)",
                    mail::cap_text(&input.problem, 2_000),
                )],
                steps: planner_steps(&input),
                tier: Tier::Strong,
                hint: input.hint.clone(),
            },
        );
        Ok((PlannerState { input }, Step::Suspend))
    }

    fn step(
        &self,
        state: &mut PlannerState,
        event: AtomEvent<String>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<PlanOutput>> {
        let input = &state.input;
        match event {
            AtomEvent::CallCompleted { output, .. } => {
                let choice = output.output_of_call::<Decide>()?;
                if choice.step == ASK_USER {
                    let deadline = ctx.now().plus(CHOOSE_STEP_DEADLINE);
                    ctx.ask_user(choose_step_ask(input, deadline));
                    return Ok(Step::Suspend);
                }
                let why = choice.why.clone();
                Ok(Step::Complete(PlanOutput { choice, why }))
            }
            AtomEvent::UserAnswered { answer, .. } => {
                let step = answer.decode::<ChosenStep>()?.step;
                if !input.steps.iter().any(|s| s.name == step) {
                    return Err(Error::terminal(format!("{step:?} is not a declared step")));
                }
                let choice = Choice {
                    step,
                    args: json!({}),
                    why: "the user chose it".into(),
                    attempts: 1,
                    model: "user".into(),
                };
                Ok(Step::Complete(PlanOutput {
                    choice,
                    why: "the user chose it".into(),
                }))
            }
            AtomEvent::RequestExpired { .. } => {
                let why = "the user did not choose in time; the playbook's rule";
                let choice = Self::default_choice(input, why)?;
                Ok(Step::Complete(PlanOutput {
                    choice,
                    why: why.into(),
                }))
            }
            _ => Ok(Step::Suspend),
        }
    }

    fn failed(
        &self,
        _state: &mut PlannerState,
        failure: Failure<String>,
        _ctx: &mut Context<'_>,
    ) -> Result<Step<PlanOutput>> {
        let (Failure::Call { reason, .. } | Failure::Child { reason, .. }) = failure;
        Ok(Step::Fail(format!(
            "the planner could not decide: {reason}"
        )))
    }
}
