//! The email assistant's atoms. Each is its own Lambda with its own queue on AWS.
//!
//! ```text
//! email-assistant ──spawns──▶ bulk-email-analysis ──spawns──▶ fetch-emails (a progress report per batch)
//!                                   │  decides per batch (model) ──▶ summarize-rank (one per batch)
//!                                   │  no valid decision ──▶ planner (stronger model, or the user)
//!                                   └─ a group complete ──▶ write-digest (one per hour/day/week)
//! ```

use crate::digest::{self, Ranked, StoreDigest, Stored};
use crate::mail::{self, EmailHeader, FetchPage, GetEmails, MailboxRef, Page};
use crate::prefs::{Grouping, Preferences};
use reanimate_core::playbook::{
    Choice, Decision, Generated, Generation, StepSpec, Tier, Untrusted,
};
use reanimate_core::{
    Ask, Atom, AtomEvent, Context, Error, InstanceId, Registry, Result, Step, Timestamp,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// All six atoms.
pub fn registry() -> Registry {
    Registry::new()
        .with(EmailAssistant)
        .with(BulkEmailAnalysis)
        .with(FetchEmails)
        .with(SummarizeRank)
        .with(WriteDigest)
        .with(Planner)
}

fn decode<T: DeserializeOwned>(what: &str, value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::terminal(format!("unexpected {what}: {e}")))
}

// ---------------------------------------------------------------------------------------------
// email-assistant

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

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AssistantState {
    pub hire: Option<Hire>,
    pub mailbox: Option<MailboxRef>,
    pub preference_text: Option<String>,
    pub preferences: Option<Preferences>,
    /// Reminders sent per question kind.
    pub reminders: BTreeMap<String, u32>,
    pub analysis: Option<InstanceId>,
    pub runs: u32,
    /// Mail up to this time has been analysed.
    pub analysed_until: Option<Timestamp>,
    pub digests: Vec<String>,
    /// The recurring digest schedule exists.
    #[serde(default)]
    pub digest_schedule_armed: bool,
}

/// The email assistant.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmailAssistant;

pub const AUTH: &str = "auth";
pub const PREFERENCES: &str = "preferences";

fn auth_ask(prompt_prefix: &str, deadline: Timestamp) -> Ask {
    Ask {
        kind: AUTH.into(),
        prompt: format!(
            "{prompt_prefix}Which mailbox should I read? A Maildir folder (relative to the mail root), or Gmail with an OAuth access token (stored as a secret, never in my state)."
        ),
        schema: json!({
            "type": "object",
            "required": ["mailbox"],
            "additionalProperties": false,
            "properties": {"mailbox": {"oneOf": [
                {
                    "type": "object",
                    "required": ["kind", "path"],
                    "additionalProperties": false,
                    "properties": {"kind": {"const": "maildir"}, "path": {"type": "string", "minLength": 1}}
                },
                {
                    "type": "object",
                    "required": ["kind", "access_token"],
                    "additionalProperties": false,
                    "properties": {
                        "kind": {"const": "gmail"},
                        // Kept in the secret store by the client that answers; the assistant
                        // only ever sees a reference to it.
                        "access_token": {"type": "string", "minLength": 8, "writeOnly": true},
                        "query": {"type": "string"}
                    }
                }
            ]}}
        }),
        deadline: Some(deadline),
    }
}

fn preferences_ask(prompt_prefix: &str, deadline: Timestamp) -> Ask {
    Ask {
        kind: PREFERENCES.into(),
        prompt: format!(
            "{prompt_prefix}How would you like your digests? In your own words: how often (hourly, daily, weekly), how long, and whose mail or which topics are urgent."
        ),
        schema: json!({
            "type": "object",
            "required": ["text"],
            "additionalProperties": false,
            "properties": {"text": {"type": "string", "minLength": 3, "maxLength": 2000}}
        }),
        deadline: Some(deadline),
    }
}

/// Output of one analysis run, also what the assistant's parent (if any) hears.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AnalysisReport {
    pub emails: u64,
    pub batches: u64,
    pub digests: Vec<DigestWritten>,
    pub decisions: Vec<DecisionLog>,
    /// Mail up to this time is covered.
    pub until: Option<Timestamp>,
}

impl EmailAssistant {
    fn maybe_start(state: &mut AssistantState, ctx: &mut Context<'_>) -> Result<()> {
        let (Some(hire), Some(mailbox), Some(preferences)) =
            (&state.hire, &state.mailbox, &state.preferences)
        else {
            return Ok(());
        };
        if state.analysis.is_some() {
            return Ok(());
        }
        state.runs += 1;
        let input = AnalysisInput {
            user: hire.user.clone(),
            mailbox: mailbox.clone(),
            preferences: preferences.clone(),
            batch_size: hire.batch_size,
            since: state.analysed_until,
        };
        state.analysis =
            Some(ctx.spawn::<BulkEmailAnalysis>(format!("analysis-{}", state.runs), &input));
        Ok(())
    }
}

impl Atom for EmailAssistant {
    const TYPE: &'static str = "email-assistant";
    type Input = Hire;
    type State = AssistantState;
    type Output = Value;

    fn step(
        &self,
        state: &mut AssistantState,
        event: AtomEvent<Hire>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<Value>> {
        match event {
            AtomEvent::Started(hire) => {
                let deadline = ctx.now().plus(Duration::from_secs(hire.remind_after_secs));
                ctx.ask_user(auth_ask("", deadline));
                ctx.ask_user(preferences_ask("", deadline));
                state.hire = Some(hire);
            }
            AtomEvent::UserAnswered { kind, answer, .. } if kind == AUTH => {
                state.mailbox = Some(decode("auth answer", answer["mailbox"].clone())?);
                Self::maybe_start(state, ctx)?;
            }
            AtomEvent::UserAnswered { kind, answer, .. } if kind == PREFERENCES => {
                let text = answer["text"].as_str().unwrap_or_default().to_string();
                ctx.generate(
                    PREFERENCES,
                    &Generation {
                        task: "preferences".into(),
                        instructions: "Turn the user's description of how they want their email digests into structured preferences: grouping (hour, day or week), the email addresses whose mail is urgent, topics that matter, and the style (short or detailed).".into(),
                        facts: Value::Null,
                        data: vec![Untrusted::new("the user's answer", text.clone())],
                        output_schema: Preferences::schema(),
                        tier: Tier::Standard,
                        hint: Value::Null,
                    },
                );
                state.preference_text = Some(text);
            }
            AtomEvent::CallCompleted { tag, output } if tag == PREFERENCES => {
                let generated: Generated = decode("preferences", output)?;
                state.preferences = Some(decode("preferences", generated.value)?);
                Self::maybe_start(state, ctx)?;
            }
            AtomEvent::CallFailed { tag, reason } if tag == PREFERENCES => {
                // The text could not be understood: ask again rather than guess.
                tracing::info!(%reason, "preferences not understood");
                let deadline = ctx.now().plus(Duration::from_secs(
                    state
                        .hire
                        .as_ref()
                        .map_or(one_day(), |h| h.remind_after_secs),
                ));
                ctx.ask_user(preferences_ask(
                    "I could not turn your answer into settings. ",
                    deadline,
                ));
            }
            AtomEvent::RequestExpired { kind, .. } => {
                // The watchdog: one reminder, then escalation.
                let hire = state
                    .hire
                    .clone()
                    .ok_or_else(|| Error::terminal("not hired"))?;
                let sent = state.reminders.entry(kind.clone()).or_default();
                if *sent >= 1 {
                    return Ok(Step::Fail(format!(
                        "escalated: {} did not answer the {kind} question after a reminder",
                        hire.user
                    )));
                }
                *sent += 1;
                let deadline = ctx
                    .now()
                    .plus(Duration::from_secs(hire.escalate_after_secs));
                let ask = if kind == AUTH {
                    auth_ask("Reminder: ", deadline)
                } else {
                    preferences_ask("Reminder: ", deadline)
                };
                ctx.ask_user(ask);
            }
            AtomEvent::ChildCompleted { output, .. } => {
                let report: AnalysisReport = decode("analysis report", output)?;
                state.analysis = None;
                state
                    .digests
                    .extend(report.digests.iter().map(|d| d.location.clone()));
                if report.until.is_some() {
                    state.analysed_until = report.until;
                }
                let recurring = state.hire.as_ref().is_some_and(|h| h.recurring);
                if recurring {
                    if !state.digest_schedule_armed {
                        // One recurring schedule (a Scheduler rate() on AWS) for every later run.
                        let period = match state.preferences.as_ref().map(|p| p.grouping) {
                            Some(Grouping::Hour) => 3600,
                            Some(Grouping::Week) => 7 * 86_400,
                            _ => 86_400,
                        };
                        ctx.set_recurring_timer("next-digest", Duration::from_secs(period));
                        state.digest_schedule_armed = true;
                    }
                } else {
                    return Ok(Step::Complete(json!({
                        "user": state.hire.as_ref().map(|h| h.user.clone()),
                        "digests": state.digests,
                    })));
                }
            }
            AtomEvent::TimerFired { name } if name == "next-digest" => {
                Self::maybe_start(state, ctx)?;
            }
            AtomEvent::ChildFailed { reason, .. } => {
                return Ok(Step::Fail(format!("the email analysis failed: {reason}")));
            }
            _ => {}
        }
        Ok(Step::Suspend)
    }
}

// ---------------------------------------------------------------------------------------------
// fetch-emails

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchInput {
    pub mailbox: MailboxRef,
    pub batch_size: usize,
    #[serde(default)]
    pub since: Option<Timestamp>,
}

/// One batch, reported to the parent as progress: headers only; the bodies stay in the mailbox
/// until a summarize-rank child reads them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    pub seq: u64,
    pub emails: Vec<EmailHeader>,
    /// The source pages oldest first (so earlier groups are complete once a batch moves on).
    #[serde(default)]
    pub oldest_first: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FetchState {
    pub input: Option<FetchInput>,
    /// Pages asked for so far.
    #[serde(default)]
    pub pages: u64,
    pub batches: u64,
    pub emails: u64,
    pub skipped: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FetchSummary {
    pub batches: u64,
    pub emails: u64,
}

/// Pages through a mailbox, oldest first, reporting each batch as it lands.
#[derive(Clone, Copy, Debug, Default)]
pub struct FetchEmails;

impl FetchEmails {
    fn fetch(input: &FetchInput, page: u64, cursor: Option<String>, ctx: &mut Context<'_>) {
        ctx.call(
            mail::FETCH,
            format!("page-{page}"),
            &FetchPage {
                mailbox: input.mailbox.clone(),
                cursor,
                limit: input.batch_size,
                since: input.since,
            },
        );
    }
}

impl Atom for FetchEmails {
    const TYPE: &'static str = "fetch-emails";
    type Input = FetchInput;
    type State = FetchState;
    type Output = FetchSummary;

    fn step(
        &self,
        state: &mut FetchState,
        event: AtomEvent<FetchInput>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<FetchSummary>> {
        match event {
            AtomEvent::Started(input) => {
                Self::fetch(&input, 0, None, ctx);
                state.input = Some(input);
            }
            AtomEvent::CallCompleted { output, .. } => {
                let input = state
                    .input
                    .clone()
                    .ok_or_else(|| Error::terminal("no input"))?;
                let page: Page = decode("mail page", output)?;
                let fresh: Vec<EmailHeader> = page
                    .emails
                    .iter()
                    .filter(|e| input.since.is_none_or(|since| e.date > since))
                    .map(|e| e.header())
                    .collect();
                state.skipped += (page.emails.len() - fresh.len()) as u64;
                if !fresh.is_empty() {
                    state.emails += fresh.len() as u64;
                    ctx.report_progress(&Batch {
                        seq: state.batches,
                        emails: fresh,
                        oldest_first: page.oldest_first,
                    });
                    state.batches += 1;
                }
                match page.next {
                    Some(cursor) => {
                        state.pages += 1;
                        Self::fetch(&input, state.pages, Some(cursor), ctx)
                    }
                    None => {
                        return Ok(Step::Complete(FetchSummary {
                            batches: state.batches,
                            emails: state.emails,
                        }));
                    }
                }
            }
            AtomEvent::CallFailed { reason, .. } => {
                return Ok(Step::Fail(format!("fetching mail failed: {reason}")));
            }
            _ => {}
        }
        Ok(Step::Suspend)
    }
}

// ---------------------------------------------------------------------------------------------
// bulk-email-analysis (a playbook)

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AnalysisInput {
    pub user: String,
    pub mailbox: MailboxRef,
    pub preferences: Preferences,
    pub batch_size: usize,
    #[serde(default)]
    pub since: Option<Timestamp>,
}

/// A decision the playbook acted on, kept for the history and the report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecisionLog {
    pub batch: u64,
    pub step: String,
    pub why: String,
    /// The model that chose, or "planner: …".
    pub by: String,
    pub attempts: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DigestWritten {
    pub group: String,
    pub location: String,
    pub emails: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Group {
    /// Emails of the group seen so far.
    pub count: u64,
    pub ranked: Vec<Ranked>,
    /// Digest child started.
    pub writing: bool,
    pub written: Option<DigestWritten>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AnalysisState {
    pub input: Option<AnalysisInput>,
    pub fetch_done: bool,
    pub batches: u64,
    pub emails: u64,
    /// The latest group any fetched email belongs to (fetching is oldest first).
    pub latest_group: Option<String>,
    pub latest_date: Option<Timestamp>,
    /// Some batch came from a source that does not page oldest first: groups close only when
    /// fetching is done.
    #[serde(default)]
    pub unordered: bool,
    pub groups: BTreeMap<String, Group>,
    /// Batches waiting for a decision, by sequence number.
    pub undecided: BTreeMap<u64, Vec<EmailHeader>>,
    /// Batches being summarised.
    pub summarizing: BTreeSet<u64>,
    pub decisions: Vec<DecisionLog>,
}

/// The playbook: per batch, a model chooses how to summarise it; groups become digests.
#[derive(Clone, Copy, Debug, Default)]
pub struct BulkEmailAnalysis;

pub const SUMMARIZE: &str = "summarize_rank";
pub const SUMMARIZE_CAREFULLY: &str = "summarize_rank_carefully";

/// The steps a batch decision may choose from. Nothing else exists.
pub fn batch_steps() -> Vec<StepSpec> {
    let args = json!({
        "type": "object",
        "required": ["batch"],
        "additionalProperties": false,
        "properties": {"batch": {"type": "integer", "minimum": 0}}
    });
    vec![
        StepSpec::new(
            SUMMARIZE,
            "Summarise and rank every email of the batch with the standard model.",
            args.clone(),
        ),
        StepSpec::new(
            SUMMARIZE_CAREFULLY,
            "Summarise and rank every email of the batch with the stronger model; worth it when the batch holds mail from urgent senders or about the user's topics.",
            args,
        ),
    ]
}

impl BulkEmailAnalysis {
    fn decide_batch(
        input: &AnalysisInput,
        seq: u64,
        emails: &[EmailHeader],
        ctx: &mut Context<'_>,
    ) {
        let urgent = emails
            .iter()
            .filter(|e| input.preferences.is_urgent_sender(&e.from))
            .count();
        let suggested = if urgent > 0 {
            SUMMARIZE_CAREFULLY
        } else {
            SUMMARIZE
        };
        ctx.decide(
            format!("batch-{seq}"),
            &Decision {
                goal: format!(
                    "Produce {:?} email digests for {}, every email summarised and ranked exactly once.",
                    input.preferences.grouping, input.user
                ),
                facts: json!({
                    "batch": seq,
                    "emails": emails.len(),
                    "from_urgent_senders": urgent,
                    "user_topics": input.preferences.keywords,
                }),
                data: emails
                    .iter()
                    .map(|e| Untrusted::new(format!("subject of email {}", e.id), e.subject.clone()))
                    .collect(),
                steps: batch_steps(),
                tier: Tier::Standard,
                hint: json!({
                    "suggested": {"step": suggested, "args": {"batch": seq}},
                    "why": if urgent > 0 { "the batch has mail from urgent senders" } else { "a routine batch" },
                }),
            },
        );
    }

    /// Acts on a choice (the model's or the planner's) for a batch.
    fn act(
        state: &mut AnalysisState,
        choice: &Choice,
        by: String,
        ctx: &mut Context<'_>,
    ) -> Result<()> {
        let input = state
            .input
            .clone()
            .ok_or_else(|| Error::terminal("no input"))?;
        let batch = choice.args["batch"]
            .as_u64()
            .ok_or_else(|| Error::terminal("a batch step without a batch"))?;
        let tier = match choice.step.as_str() {
            SUMMARIZE => Tier::Standard,
            SUMMARIZE_CAREFULLY => Tier::Strong,
            other => return Err(Error::terminal(format!("undeclared step {other:?}"))),
        };
        let Some(emails) = state.undecided.remove(&batch) else {
            // Already handled: the choice named a batch that is not waiting.
            return Ok(());
        };
        ctx.spawn::<SummarizeRank>(
            format!("rank-{batch}"),
            &RankInput {
                mailbox: input.mailbox.clone(),
                emails,
                preferences: input.preferences.clone(),
                tier,
            },
        );
        state.summarizing.insert(batch);
        state.decisions.push(DecisionLog {
            batch,
            step: choice.step.clone(),
            why: choice.why.clone(),
            by,
            attempts: choice.attempts,
        });
        Ok(())
    }

    /// Starts a digest for every group that is complete: all its emails ranked, and no more of
    /// them can come (fetching has moved past it, or is done).
    fn write_ready_groups(state: &mut AnalysisState, ctx: &mut Context<'_>) -> Result<()> {
        let input = state
            .input
            .clone()
            .ok_or_else(|| Error::terminal("no input"))?;
        let closed_below = if state.fetch_done {
            None
        } else if state.unordered {
            return Ok(());
        } else {
            state.latest_group.clone()
        };
        for (key, group) in state.groups.iter_mut() {
            let closed = closed_below.as_ref().is_none_or(|latest| key < latest);
            if group.writing || !closed || (group.ranked.len() as u64) < group.count {
                continue;
            }
            let mut entries = std::mem::take(&mut group.ranked);
            digest::sort_for_digest(&mut entries);
            ctx.spawn::<WriteDigest>(
                format!("digest-{key}"),
                &DigestInput {
                    user: input.user.clone(),
                    group: key.clone(),
                    grouping: input.preferences.grouping,
                    entries,
                },
            );
            group.writing = true;
        }
        Ok(())
    }

    fn finished(state: &AnalysisState) -> Option<AnalysisReport> {
        let done = state.fetch_done
            && state.undecided.is_empty()
            && state.summarizing.is_empty()
            && state.groups.values().all(|g| g.written.is_some());
        done.then(|| AnalysisReport {
            emails: state.emails,
            batches: state.batches,
            digests: state
                .groups
                .values()
                .filter_map(|g| g.written.clone())
                .collect(),
            decisions: state.decisions.clone(),
            until: state.latest_date,
        })
    }
}

impl Atom for BulkEmailAnalysis {
    const TYPE: &'static str = "bulk-email-analysis";
    type Input = AnalysisInput;
    type State = AnalysisState;
    type Output = AnalysisReport;

    fn step(
        &self,
        state: &mut AnalysisState,
        event: AtomEvent<AnalysisInput>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<AnalysisReport>> {
        match event {
            AtomEvent::Started(input) => {
                ctx.spawn::<FetchEmails>(
                    "fetch",
                    &FetchInput {
                        mailbox: input.mailbox.clone(),
                        batch_size: input.batch_size,
                        since: input.since,
                    },
                );
                state.input = Some(input);
                return Ok(Step::Suspend);
            }
            AtomEvent::ChildProgress { payload, .. } => {
                let input = state
                    .input
                    .clone()
                    .ok_or_else(|| Error::terminal("no input"))?;
                let batch: Batch = decode("batch", payload)?;
                state.unordered |= !batch.oldest_first;
                for email in &batch.emails {
                    let key = digest::group_key(email.date, input.preferences.grouping);
                    state.groups.entry(key.clone()).or_default().count += 1;
                    if state.latest_group.as_ref().is_none_or(|l| &key > l) {
                        state.latest_group = Some(key);
                    }
                    if state.latest_date.is_none_or(|d| email.date > d) {
                        state.latest_date = Some(email.date);
                    }
                }
                state.batches += 1;
                state.emails += batch.emails.len() as u64;
                Self::decide_batch(&input, batch.seq, &batch.emails, ctx);
                state.undecided.insert(batch.seq, batch.emails);
            }
            AtomEvent::CallCompleted { output, .. } => {
                let choice: Choice = decode("choice", output)?;
                let by = choice.model.clone();
                Self::act(state, &choice, by, ctx)?;
            }
            AtomEvent::CallFailed { tag, reason } => {
                // No valid choice from the model: the planner takes over this batch.
                let input = state
                    .input
                    .clone()
                    .ok_or_else(|| Error::terminal("no input"))?;
                let seq: u64 = tag
                    .strip_prefix("batch-")
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| Error::terminal(format!("unexpected call {tag}")))?;
                let urgent = state.undecided.get(&seq).map_or(0, |emails| {
                    emails
                        .iter()
                        .filter(|e| input.preferences.is_urgent_sender(&e.from))
                        .count()
                });
                ctx.spawn::<Planner>(
                    format!("plan-{seq}"),
                    &PlanInput {
                        goal: format!("Summarise and rank batch {seq} of {}'s mail.", input.user),
                        facts: json!({"batch": seq, "from_urgent_senders": urgent}),
                        steps: batch_steps(),
                        problem: reason,
                        hint: json!({"suggested": {"step": SUMMARIZE, "args": {"batch": seq}}}),
                    },
                );
            }
            AtomEvent::ChildCompleted { tag, output, .. } => {
                if tag == "fetch" {
                    state.fetch_done = true;
                } else if tag.starts_with("plan-") {
                    let plan: PlanOutput = decode("plan", output)?;
                    Self::act(state, &plan.choice, format!("planner: {}", plan.why), ctx)?;
                } else if let Some(batch) = tag.strip_prefix("rank-") {
                    let batch: u64 = batch.parse().map_err(|_| Error::terminal("bad tag"))?;
                    state.summarizing.remove(&batch);
                    let grouping = state
                        .input
                        .as_ref()
                        .map(|i| i.preferences.grouping)
                        .unwrap_or_default();
                    let ranked: Vec<Ranked> = decode("ranked emails", output)?;
                    for entry in ranked {
                        let key = digest::group_key(entry.date, grouping);
                        state.groups.entry(key).or_default().ranked.push(entry);
                    }
                } else if let Some(group) = tag.strip_prefix("digest-") {
                    let written: DigestWritten = decode("digest", output)?;
                    if let Some(g) = state.groups.get_mut(group) {
                        g.written = Some(written);
                    }
                }
            }
            AtomEvent::ChildFailed { tag, reason, .. } => {
                return Ok(Step::Fail(format!("{tag} failed: {reason}")));
            }
            _ => {}
        }
        Self::write_ready_groups(state, ctx)?;
        match Self::finished(state) {
            Some(report) => Ok(Step::Complete(report)),
            None => Ok(Step::Suspend),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// summarize-rank

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RankInput {
    pub mailbox: MailboxRef,
    pub emails: Vec<EmailHeader>,
    pub preferences: Preferences,
    #[serde(default)]
    pub tier: Tier,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RankState {
    pub input: Option<RankInput>,
}

/// Summarises and ranks one batch of emails with one model call.
#[derive(Clone, Copy, Debug, Default)]
pub struct SummarizeRank;

/// What the model must return for a batch.
pub fn rank_schema() -> Value {
    json!({
        "type": "object",
        "required": ["items"],
        "properties": {"items": {"type": "array", "items": {
            "type": "object",
            "required": ["id", "summary", "rank", "reason"],
            "properties": {
                "id": {"type": "string"},
                "summary": {"type": "string", "maxLength": 400},
                "rank": {"type": "integer", "minimum": 1, "maximum": 5},
                "reason": {"type": "string", "maxLength": 200}
            }
        }}}
    })
}

impl Atom for SummarizeRank {
    const TYPE: &'static str = "summarize-rank";
    type Input = RankInput;
    type State = RankState;
    type Output = Vec<Ranked>;

    fn step(
        &self,
        state: &mut RankState,
        event: AtomEvent<RankInput>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<Vec<Ranked>>> {
        match event {
            AtomEvent::Started(input) => {
                ctx.call(
                    mail::GET,
                    "get",
                    &GetEmails {
                        mailbox: input.mailbox.clone(),
                        ids: input.emails.iter().map(|e| e.id.clone()).collect(),
                    },
                );
                state.input = Some(input);
            }
            AtomEvent::CallCompleted { tag, output } if tag == "get" => {
                let input = state
                    .input
                    .as_ref()
                    .ok_or_else(|| Error::terminal("no input"))?;
                let emails: Vec<mail::Email> = decode("emails", output)?;
                ctx.generate(
                    "rank",
                    &Generation {
                        task: "summarize_rank".into(),
                        instructions: "For every email below, write a one- or two-sentence summary of what it says or asks, and rank its importance to the user from 1 (ignore) to 5 (urgent) with a short reason. Apply the user's preferences in the facts. Return one item per email, with its id.".into(),
                        facts: json!({"preferences": input.preferences}),
                        data: emails
                            .iter()
                            .map(|e| {
                                Untrusted::new(
                                    format!("email {}", e.id),
                                    format!("From: {} <{}>\nSubject: {}\n\n{}", e.from_name, e.from, e.subject, e.body),
                                )
                            })
                            .collect(),
                        output_schema: rank_schema(),
                        tier: input.tier,
                        hint: Value::Null,
                    },
                );
            }
            AtomEvent::CallCompleted { output, .. } => {
                let input = state
                    .input
                    .as_ref()
                    .ok_or_else(|| Error::terminal("no input"))?;
                let generated: Generated = decode("ranking", output)?;
                let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
                for item in generated.value["items"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                {
                    let id = item["id"].as_str().unwrap_or_default().to_string();
                    by_id.insert(id, item);
                }
                let mut ranked = Vec::with_capacity(input.emails.len());
                for email in &input.emails {
                    let Some(item) = by_id.remove(&email.id) else {
                        return Ok(Step::Fail(format!(
                            "the model did not rank email {}",
                            email.id
                        )));
                    };
                    ranked.push(Ranked {
                        id: email.id.clone(),
                        from: email.from.clone(),
                        subject: email.subject.clone(),
                        date: email.date,
                        summary: item["summary"].as_str().unwrap_or_default().to_string(),
                        rank: item["rank"].as_u64().unwrap_or(1).clamp(1, 5) as u8,
                        reason: item["reason"].as_str().unwrap_or_default().to_string(),
                    });
                }
                return Ok(Step::Complete(ranked));
            }
            AtomEvent::CallFailed { reason, .. } => {
                return Ok(Step::Fail(format!("summarising failed: {reason}")));
            }
            _ => {}
        }
        Ok(Step::Suspend)
    }
}

// ---------------------------------------------------------------------------------------------
// write-digest

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DigestInput {
    pub user: String,
    pub group: String,
    pub grouping: Grouping,
    /// Sorted, most important first.
    pub entries: Vec<Ranked>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DigestState {
    pub group: String,
    pub emails: u64,
}

/// Writes one group's Markdown digest to the digest store.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteDigest;

/// Where a user's digest for a group is stored.
pub fn digest_key(user: &str, group: &str) -> String {
    let safe = |s: &str| {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.@".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    format!("digests/{}/{}.md", safe(user), safe(group))
}

impl Atom for WriteDigest {
    const TYPE: &'static str = "write-digest";
    type Input = DigestInput;
    type State = DigestState;
    type Output = DigestWritten;

    fn step(
        &self,
        state: &mut DigestState,
        event: AtomEvent<DigestInput>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<DigestWritten>> {
        match event {
            AtomEvent::Started(input) => {
                let markdown =
                    digest::render(&input.user, &input.group, input.grouping, &input.entries);
                ctx.call(
                    digest::STORE,
                    "store",
                    &StoreDigest {
                        key: digest_key(&input.user, &input.group),
                        markdown,
                    },
                );
                state.group = input.group;
                state.emails = input.entries.len() as u64;
            }
            AtomEvent::CallCompleted { output, .. } => {
                let stored: Stored = decode("stored digest", output)?;
                return Ok(Step::Complete(DigestWritten {
                    group: state.group.clone(),
                    location: stored.location,
                    emails: state.emails,
                }));
            }
            AtomEvent::CallFailed { reason, .. } => {
                return Ok(Step::Fail(format!("storing the digest failed: {reason}")));
            }
            _ => {}
        }
        Ok(Step::Suspend)
    }
}

// ---------------------------------------------------------------------------------------------
// planner

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

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PlannerState {
    pub input: Option<PlanInput>,
}

/// Handles what a playbook could not decide: asks the stronger model to pick one of the
/// playbook's declared steps, or to ask the user.
#[derive(Clone, Copy, Debug, Default)]
pub struct Planner;

pub const ASK_USER: &str = "ask_user";

impl Atom for Planner {
    const TYPE: &'static str = "planner";
    type Input = PlanInput;
    type State = PlannerState;
    type Output = PlanOutput;

    fn step(
        &self,
        state: &mut PlannerState,
        event: AtomEvent<PlanInput>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<PlanOutput>> {
        match event {
            AtomEvent::Started(input) => {
                let mut steps = input.steps.clone();
                steps.push(StepSpec::new(
                    ASK_USER,
                    "Ask the user which step to take, when the choice needs their judgement.",
                    json!({"type": "object", "required": ["question"], "properties": {"question": {"type": "string", "minLength": 5}}}),
                ));
                ctx.decide(
                    "plan",
                    &Decision {
                        goal: format!(
                            "{} The workflow could not choose its next step automatically ({}). Choose the declared step that best serves the goal, or ask the user.",
                            input.goal, input.problem
                        ),
                        facts: input.facts.clone(),
                        data: Vec::new(),
                        steps,
                        tier: Tier::Strong,
                        hint: input.hint.clone(),
                    },
                );
                state.input = Some(input);
            }
            AtomEvent::CallCompleted { output, .. } => {
                let choice: Choice = decode("choice", output)?;
                if choice.step == ASK_USER {
                    let input = state
                        .input
                        .as_ref()
                        .ok_or_else(|| Error::terminal("no input"))?;
                    let names: Vec<&str> = input.steps.iter().map(|s| s.name.as_str()).collect();
                    ctx.ask_user(Ask {
                        kind: "plan".into(),
                        prompt: choice.args["question"]
                            .as_str()
                            .unwrap_or("Which step next?")
                            .to_string(),
                        schema: json!({
                            "type": "object",
                            "required": ["step", "args"],
                            "properties": {"step": {"enum": names}, "args": {"type": "object"}}
                        }),
                        deadline: None,
                    });
                    return Ok(Step::Suspend);
                }
                let why = choice.why.clone();
                return Ok(Step::Complete(PlanOutput { choice, why }));
            }
            AtomEvent::UserAnswered { answer, .. } => {
                let choice = Choice {
                    step: answer["step"].as_str().unwrap_or_default().to_string(),
                    args: answer["args"].clone(),
                    why: "the user chose it".into(),
                    attempts: 1,
                    model: "user".into(),
                };
                return Ok(Step::Complete(PlanOutput {
                    choice,
                    why: "the user chose it".into(),
                }));
            }
            AtomEvent::CallFailed { reason, .. } => {
                return Ok(Step::Fail(format!(
                    "the planner could not decide: {reason}"
                )));
            }
            _ => {}
        }
        Ok(Step::Suspend)
    }
}
