//! `email-assistant`: hired for one user, it asks for their mailbox and preferences (reminding
//! once, then escalating), starts an analysis run per digest period, keeps where the last run
//! ended, and on `disconnect` cancels what runs and deletes the user's mailbox secret.

use super::analysis::{AnalysisInput, AnalysisReport, BulkEmailAnalysis};
use super::prompts::{auth_ask, preferences_ask, preferences_generation};
use crate::gmail::GMAIL_DISCONNECTED;
use crate::mail::{ForgetCall, MailboxRef};
use crate::prefs::{Grouping, Preferences};
use reanimate_core::playbook::Generate;
use reanimate_core::{
    Atom, AtomEvent, Context, Failure, InstanceId, Payload, Result, Step, Timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Hires the assistant for one user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Hire {
    pub user: String,
    /// How long a question waits before a reminder (default one day).
    #[serde(default = "one_day")]
    pub remind_after_secs: u64,
    /// How long after the reminder before escalating (default one day).
    #[serde(default = "one_day")]
    pub escalate_after_secs: u64,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Re-run the analysis every digest period for new mail.
    #[serde(default = "yes")]
    pub recurring: bool,
    /// Where to email each digest (it is stored either way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// How far back the first run reads a Gmail mailbox (default a week), rather than all of it.
    #[serde(default = "a_week")]
    pub backfill_days: u64,
}

fn a_week() -> u64 {
    7
}

fn one_day() -> u64 {
    86_400
}
fn default_batch() -> usize {
    25
}
fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AssistantState {
    pub hire: Hire,
    pub mailbox: Option<MailboxRef>,
    pub preference_text: Option<String>,
    pub preferences: Option<Preferences>,
    /// Reminders sent per question kind.
    pub reminders: BTreeMap<String, u32>,
    pub analysis: Option<InstanceId>,
    pub runs: u32,
    /// Mail up to this time has been analysed.
    pub analysed_until: Option<Timestamp>,
    /// Where the latest digests are, newest last: at most [`RECENT_DIGESTS`], so the record stays
    /// the same size however long the assistant runs (the store keeps them all).
    pub digests: Vec<String>,
    /// Digests written since hired.
    #[serde(default)]
    pub digests_written: u64,
    /// Why the latest run failed, when it did; the next run tries again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// The recurring digest schedule exists.
    #[serde(default)]
    pub digest_schedule_armed: bool,
}

/// The assistant's children and calls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AssistantTag {
    /// The analysis run with this number.
    Analysis(u32),
    /// Turning the user's words into preferences.
    Preferences,
    /// Deleting the mailbox secret when the user leaves.
    Disconnect,
    /// Deleting a revoked mailbox's secret before asking for a new one.
    ForgetRevoked,
}

/// The mailbox answer.
#[derive(Clone, Debug, Deserialize)]
struct AuthAnswer {
    mailbox: MailboxRef,
}

/// The preferences answer: the user's own words.
#[derive(Clone, Debug, Deserialize)]
struct PreferencesAnswer {
    text: String,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct EmailAssistant;

pub const AUTH: &str = "auth";
/// The signal that ends the assistant and deletes its user's mailbox secret.
pub const DISCONNECT: &str = "disconnect";
/// How many digest locations the assistant's record keeps.
pub const RECENT_DIGESTS: usize = 14;
pub const PREFERENCES: &str = "preferences";

impl EmailAssistant {
    fn farewell(state: &AssistantState) -> Value {
        json!({
            "user": state.hire.user,
            "disconnected": true,
            "digests_written": state.digests_written,
        })
    }

    /// One recurring schedule (a Scheduler `rate()` on AWS) for every later run.
    fn arm_schedule(state: &mut AssistantState, ctx: &mut Context<'_>) {
        if state.digest_schedule_armed {
            return;
        }
        let period = match state.preferences.as_ref().map(|p| p.grouping) {
            Some(Grouping::Hour) => 3600,
            Some(Grouping::Week) => 7 * 86_400,
            _ => 86_400,
        };
        ctx.set_recurring_timer("next-digest", Duration::from_secs(period));
        state.digest_schedule_armed = true;
    }

    fn maybe_start(state: &mut AssistantState, ctx: &mut Context<'_>) {
        let (Some(mailbox), Some(preferences)) = (&state.mailbox, &state.preferences) else {
            return;
        };
        if state.analysis.is_some() {
            return;
        }
        let hire = &state.hire;
        state.runs += 1;
        // The first run on a Gmail mailbox reads the latest days, not years of history (a
        // Maildir is read whole: it holds what was put there to be read).
        let backfill = matches!(mailbox, MailboxRef::Gmail { .. }).then(|| {
            Timestamp::from_millis(
                ctx.now()
                    .as_millis()
                    .saturating_sub(hire.backfill_days * 86_400_000),
            )
        });
        let input = AnalysisInput {
            user: hire.user.clone(),
            mailbox: mailbox.clone(),
            preferences: preferences.clone(),
            batch_size: hire.batch_size,
            since: state.analysed_until.or(backfill),
            // Mail delivered after the run starts is the next run's.
            until: Some(ctx.now()),
            deliver_to: hire.email.clone(),
        };
        let run = AssistantTag::Analysis(state.runs);
        state.analysis = Some(ctx.spawn::<BulkEmailAnalysis>(run, &input).id);
    }

    fn ask_again_after(state: &AssistantState) -> Duration {
        Duration::from_secs(state.hire.remind_after_secs)
    }
}

impl Atom for EmailAssistant {
    const TYPE: &'static str = "email-assistant";
    type Input = Hire;
    type State = AssistantState;
    type Output = Value;
    type Tag = AssistantTag;

    fn start(&self, hire: Hire, ctx: &mut Context<'_>) -> Result<(AssistantState, Step<Value>)> {
        let deadline = ctx.now().plus(Duration::from_secs(hire.remind_after_secs));
        ctx.ask_user(auth_ask("", deadline, hire.email.clone()));
        ctx.ask_user(preferences_ask("", deadline, hire.email.clone()));
        let state = AssistantState {
            hire,
            mailbox: None,
            preference_text: None,
            preferences: None,
            reminders: BTreeMap::new(),
            analysis: None,
            runs: 0,
            analysed_until: None,
            digests: Vec::new(),
            digests_written: 0,
            last_failure: None,
            digest_schedule_armed: false,
        };
        Ok((state, Step::Suspend))
    }

    fn step(
        &self,
        state: &mut AssistantState,
        event: AtomEvent<AssistantTag>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<Value>> {
        match event {
            AtomEvent::UserAnswered { kind, answer, .. } if kind == AUTH => {
                state.mailbox = Some(answer.decode::<AuthAnswer>()?.mailbox);
                Self::maybe_start(state, ctx);
            }
            AtomEvent::UserAnswered { kind, answer, .. } if kind == PREFERENCES => {
                let text = answer.decode::<PreferencesAnswer>()?.text;
                ctx.generate(AssistantTag::Preferences, &preferences_generation(&text));
                state.preference_text = Some(text);
            }
            AtomEvent::CallCompleted {
                tag: AssistantTag::Preferences,
                output,
            } => {
                let generated = output.output_of_call::<Generate>()?;
                state.preferences = Some(Payload::new(generated.value).decode::<Preferences>()?);
                Self::maybe_start(state, ctx);
            }
            AtomEvent::RequestExpired { kind, .. } => {
                // The watchdog: one reminder, then escalation.
                let sent = state.reminders.entry(kind.clone()).or_default();
                if *sent >= 1 {
                    return Ok(Step::Fail(format!(
                        "escalated: {} did not answer the {kind} question after a reminder",
                        state.hire.user
                    )));
                }
                *sent += 1;
                let deadline = ctx
                    .now()
                    .plus(Duration::from_secs(state.hire.escalate_after_secs));
                let ask = if kind == AUTH {
                    auth_ask("Reminder: ", deadline, state.hire.email.clone())
                } else {
                    preferences_ask("Reminder: ", deadline, state.hire.email.clone())
                };
                ctx.ask_user(ask);
            }
            AtomEvent::ChildCompleted { output, .. } => {
                let report = output.output_of::<BulkEmailAnalysis>()?;
                return Ok(Self::run_ended(state, report, ctx));
            }
            AtomEvent::TimerFired { name } if name == "next-digest" => {
                Self::maybe_start(state, ctx);
            }
            AtomEvent::Signal { name, .. } if name == DISCONNECT => {
                // The user leaves: a run in progress is cancelled (no digest is sent after
                // this), their Gmail token is deleted, then the assistant ends (and with it its
                // schedule).
                if let Some(analysis) = state.analysis.take() {
                    ctx.cancel_child(&analysis, "the user disconnected");
                }
                match state.mailbox.take() {
                    Some(mailbox) => ctx.call::<ForgetCall>(AssistantTag::Disconnect, &mailbox),
                    None => return Ok(Step::Complete(Self::farewell(state))),
                }
            }
            AtomEvent::CallCompleted {
                tag: AssistantTag::Disconnect,
                ..
            } => {
                return Ok(Step::Complete(Self::farewell(state)));
            }
            _ => {}
        }
        Ok(Step::Suspend)
    }

    fn failed(
        &self,
        state: &mut AssistantState,
        failure: Failure<AssistantTag>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<Value>> {
        match failure {
            Failure::Call {
                tag: AssistantTag::Preferences,
                reason,
            } => {
                // The text could not be understood: ask again rather than guess.
                tracing::info!(%reason, "preferences not understood");
                let deadline = ctx.now().plus(Self::ask_again_after(state));
                ctx.ask_user(preferences_ask(
                    "I could not turn your answer into settings. ",
                    deadline,
                    state.hire.email.clone(),
                ));
            }
            Failure::Call {
                tag: AssistantTag::Disconnect,
                reason,
            } => {
                return Ok(Step::Fail(format!(
                    "disconnecting failed, the mailbox secret may remain: {reason}"
                )));
            }
            Failure::Call {
                tag: AssistantTag::ForgetRevoked,
                reason,
            } => {
                tracing::warn!(%reason, "the revoked mailbox's secret could not be deleted");
            }
            Failure::Call { .. } => {}
            Failure::Child { reason, .. } if reason.contains(GMAIL_DISCONNECTED) => {
                // A revoked or expired refresh token: ask the user to connect again, then carry
                // on where the last run ended.
                tracing::info!(%reason, "Gmail disconnected");
                state.analysis = None;
                // One secret per user: the revoked token's goes.
                if let Some(revoked) = state.mailbox.take() {
                    ctx.call::<ForgetCall>(AssistantTag::ForgetRevoked, &revoked);
                }
                state.reminders.remove(AUTH);
                let deadline = ctx.now().plus(Self::ask_again_after(state));
                ctx.ask_user(auth_ask(
                    "Gmail disconnected (access was revoked or has expired): reconnect Gmail. ",
                    deadline,
                    state.hire.email.clone(),
                ));
            }
            Failure::Child { reason, .. } => {
                if !state.hire.recurring {
                    return Ok(Step::Fail(format!("the email analysis failed: {reason}")));
                }
                Self::arm_schedule(state, ctx);
                // A daily assistant outlives one bad run: the next run starts from the same
                // cursor, so no mail is skipped.
                tracing::warn!(%reason, "the email analysis failed; the next run retries");
                state.analysis = None;
                state.last_failure = Some(reason);
            }
        }
        Ok(Step::Suspend)
    }
}

impl EmailAssistant {
    /// A run finished: its digests are noted and the cursor moves; a one-off assistant ends.
    fn run_ended(
        state: &mut AssistantState,
        report: AnalysisReport,
        ctx: &mut Context<'_>,
    ) -> Step<Value> {
        state.analysis = None;
        state.last_failure = None;
        state.digests_written += report.digests.len() as u64;
        state
            .digests
            .extend(report.digests.iter().map(|d| d.location.clone()));
        let excess = state.digests.len().saturating_sub(RECENT_DIGESTS);
        state.digests.drain(..excess);
        if report.until > state.analysed_until {
            state.analysed_until = report.until;
        }
        if !state.hire.recurring {
            return Step::Complete(json!({
                "user": state.hire.user,
                "digests": state.digests,
                "digests_written": state.digests_written,
            }));
        }
        Self::arm_schedule(state, ctx);
        Step::Suspend
    }
}
