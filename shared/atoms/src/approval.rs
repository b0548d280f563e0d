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
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalState {
    pub request: Option<RequestId>,
    pub reminders: u32,
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

    fn step(
        &self,
        state: &mut ApprovalState,
        event: AtomEvent<ApprovalInput>,
        ctx: &mut Context<'_>,
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
            AtomEvent::Started(input) => {
                let deadline = ctx.now().plus(Duration::from_secs(input.timeout_secs));
                state.request = Some(ctx.ask_user(Ask {
                    kind: "approval".into(),
                    prompt: input.question,
                    schema: answer_schema(),
                    deadline: Some(deadline),
                }));
                if let Some(after) = input.remind_after_secs {
                    ctx.set_timer_after("remind", Duration::from_secs(after));
                }
                Ok(Step::Suspend)
            }
            AtomEvent::TimerFired { name } if name == "remind" => {
                state.reminders += 1;
                Ok(Step::Suspend)
            }
            AtomEvent::UserAnswered { answer, .. } => {
                let approved = answer["approved"].as_bool().unwrap_or(false);
                let comment = answer
                    .get("comment")
                    .and_then(|c| c.as_str())
                    .map(str::to_string);
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
