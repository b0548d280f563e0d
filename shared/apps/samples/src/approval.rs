//! `approval`: asks the user a yes/no question with a deadline and a reminder watchdog; a
//! `withdraw` signal ends it early. Exercises user requests, answers, expiry, timers, signals.

use reanimate_core::{Ask, Atom, AtomEvent, Context, RequestId, Result, Step};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct Approval;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalInput {
    pub question: String,
    pub timeout_secs: u64,
    #[serde(default)]
    pub remind_after_secs: Option<u64>,
    /// Whom to ask (an email address): told by email, with a link to the web inbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalState {
    pub request: RequestId,
    pub reminders: u32,
}

/// An answer, as [`answer_schema`] admits it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalAnswer {
    pub approved: bool,
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalOutput {
    pub approved: bool,
    pub comment: Option<String>,
    /// `answered`, `timed_out` or `withdrawn`.
    pub outcome: String,
    pub reminders: u32,
}

/// The JSON Schema every answer must satisfy.
pub fn answer_schema() -> serde_json::Value {
    json!({
        "type": "object",
        "required": ["approved"],
        "properties": {
            "approved": {"type": "boolean"},
            "comment": {"type": "string", "maxLength": 500}
        },
        "additionalProperties": false
    })
}

impl Atom for Approval {
    const TYPE: &'static str = "approval";
    type Input = ApprovalInput;
    type State = ApprovalState;
    type Output = ApprovalOutput;
    /// An approval starts no children and calls nothing.
    type Tag = String;

    fn start(
        &self,
        input: ApprovalInput,
        ctx: &mut Context<'_>,
    ) -> Result<(ApprovalState, Step<ApprovalOutput>)> {
        let deadline = ctx.now().plus(Duration::from_secs(input.timeout_secs));
        let request = ctx.ask_user(Ask {
            kind: "approval".into(),
            prompt: input.question,
            schema: answer_schema(),
            deadline: Some(deadline),
            person: input.person,
        });
        if let Some(after) = input.remind_after_secs {
            ctx.set_timer_after("remind", Duration::from_secs(after));
        }
        Ok((
            ApprovalState {
                request,
                reminders: 0,
            },
            Step::Suspend,
        ))
    }

    fn step(
        &self,
        state: &mut ApprovalState,
        event: AtomEvent<String>,
        _ctx: &mut Context<'_>,
    ) -> Result<Step<ApprovalOutput>> {
        let done = |approved, comment, outcome: &str, reminders| {
            Ok(Step::Complete(ApprovalOutput {
                approved,
                comment,
                outcome: outcome.into(),
                reminders,
            }))
        };
        match event {
            AtomEvent::TimerFired { name } if name == "remind" => {
                state.reminders += 1;
                Ok(Step::Suspend)
            }
            AtomEvent::UserAnswered { answer, .. } => {
                let ApprovalAnswer { approved, comment } = answer.decode()?;
                done(approved, comment, "answered", state.reminders)
            }
            AtomEvent::RequestExpired { .. } => done(false, None, "timed_out", state.reminders),
            AtomEvent::Signal { name, .. } if name == "withdraw" => {
                done(false, None, "withdrawn", state.reminders)
            }
            _ => Ok(Step::Suspend),
        }
    }
}
