//! The email assistant's atoms. Each is its own Lambda with its own queue on AWS.
//!
//! ```text
//! email-assistant ──spawns──▶ bulk-email-analysis ──spawns──▶ fetch-emails (a progress report per batch)
//!                                   │  decides per batch (model) ──▶ summarize-rank (one per batch)
//!                                   │  no valid decision ──▶ planner (stronger model, or the user)
//!                                   └─ a group complete ──▶ write-digest (one per hour/day/week)
//! ```

use crate::digest::{self, Delivery, Ranked, StoreDigest, Stored};
use crate::gmail::GMAIL_DISCONNECTED;
use crate::mail::{self, EmailHeader, FetchPage, MailboxRef, Page};
use crate::prefs::{Grouping, Preferences, Style};
use crate::rank::{self, RankRequest};
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

/// The email assistant.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmailAssistant;

pub const AUTH: &str = "auth";
/// The signal that ends the assistant and deletes its user's mailbox secret.
pub const DISCONNECT: &str = "disconnect";
/// The call that deletes a revoked mailbox's secret.
const FORGET_OLD: &str = "forget-revoked";
/// How many digest locations the assistant's record keeps.
pub const RECENT_DIGESTS: usize = 14;
pub const PREFERENCES: &str = "preferences";

fn auth_ask(prompt_prefix: &str, deadline: Timestamp) -> Ask {
    Ask {
        kind: AUTH.into(),
        prompt: format!(
            "{prompt_prefix}Which mailbox should I read? A Maildir folder (relative to the mail root), or Gmail: run `reanimate connect gmail --request <this request>` to sign in with Google (the refresh token is kept as a secret, never in my state)."
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
                    "required": ["kind", "refresh_token"],
                    "additionalProperties": false,
                    "properties": {
                        "kind": {"const": "gmail"},
                        // Kept in the secret store by the client that answers; the assistant
                        // only ever sees a reference to it.
                        "refresh_token": {"type": "string", "minLength": 8, "writeOnly": true},
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
    /// Emails that could not be read (listed in their digest with their headers).
    #[serde(default)]
    pub unreadable: u64,
    pub batches: u64,
    pub digests: Vec<DigestWritten>,
    pub decisions: Vec<DecisionLog>,
    /// Mail up to this time is covered.
    pub until: Option<Timestamp>,
}

impl EmailAssistant {
    fn farewell(state: &AssistantState) -> Value {
        json!({
            "user": state.hire.as_ref().map(|h| h.user.clone()),
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
                let recurring = state.hire.as_ref().is_some_and(|h| h.recurring);
                if recurring {
                    Self::arm_schedule(state, ctx);
                } else {
                    return Ok(Step::Complete(json!({
                        "user": state.hire.as_ref().map(|h| h.user.clone()),
                        "digests": state.digests,
                        "digests_written": state.digests_written,
                    })));
                }
            }
            AtomEvent::TimerFired { name } if name == "next-digest" => {
                Self::maybe_start(state, ctx)?;
            }
            AtomEvent::Signal { name, .. } if name == DISCONNECT => {
                // The user leaves: a run in progress is cancelled (no digest is sent after
                // this), their Gmail token is deleted, then the assistant ends (and with it its
                // schedule).
                if let Some(analysis) = state.analysis.take() {
                    ctx.cancel_child(&analysis, "the user disconnected");
                }
                match state.mailbox.take() {
                    Some(mailbox) => ctx.call(mail::FORGET, DISCONNECT, &mailbox),
                    None => return Ok(Step::Complete(Self::farewell(state))),
                }
            }
            AtomEvent::CallCompleted { tag, .. } if tag == DISCONNECT => {
                return Ok(Step::Complete(Self::farewell(state)));
            }
            AtomEvent::CallFailed { tag, reason } if tag == DISCONNECT => {
                return Ok(Step::Fail(format!(
                    "disconnecting failed, the mailbox secret may remain: {reason}"
                )));
            }
            AtomEvent::CallFailed { tag, reason } if tag == FORGET_OLD => {
                tracing::warn!(%reason, "the revoked mailbox's secret could not be deleted");
            }
            AtomEvent::ChildFailed { reason, .. } if reason.contains(GMAIL_DISCONNECTED) => {
                // A revoked or expired refresh token: ask the user to connect again, then carry
                // on where the last run ended.
                tracing::info!(%reason, "Gmail disconnected");
                state.analysis = None;
                // One secret per user: the revoked token's goes.
                if let Some(revoked) = state.mailbox.take() {
                    ctx.call(mail::FORGET, FORGET_OLD, &revoked);
                }
                state.reminders.remove(AUTH);
                let deadline = ctx.now().plus(Duration::from_secs(
                    state
                        .hire
                        .as_ref()
                        .map_or(one_day(), |h| h.remind_after_secs),
                ));
                ctx.ask_user(auth_ask(
                    "Gmail disconnected (access was revoked or has expired): reconnect Gmail. ",
                    deadline,
                ));
            }
            AtomEvent::ChildFailed { reason, .. } => {
                if !state.hire.as_ref().is_some_and(|h| h.recurring) {
                    return Ok(Step::Fail(format!("the email analysis failed: {reason}")));
                }
                Self::arm_schedule(state, ctx);
                // A daily assistant outlives one bad run: the next run starts from the same
                // cursor, so no mail is skipped.
                tracing::warn!(%reason, "the email analysis failed; the next run retries");
                state.analysis = None;
                state.last_failure = Some(reason);
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
    /// Only mail sent after this (the previous run's cursor).
    #[serde(default)]
    pub since: Option<Timestamp>,
    /// Only mail sent up to this (the run's start).
    #[serde(default)]
    pub until: Option<Timestamp>,
}

/// At most this many bytes of (capped) body text in one batch: a batch's summaries fit one
/// activity's time and its ranked result one message, whatever the mail.
pub const BATCH_BYTES: u64 = 48_000;

/// Cuts `emails` into batches of at most `count` emails and [`BATCH_BYTES`] of body text (an email
/// larger than that is a batch of its own).
pub fn split_batches(emails: Vec<EmailHeader>, count: usize) -> Vec<Vec<EmailHeader>> {
    let mut batches: Vec<Vec<EmailHeader>> = Vec::new();
    let mut bytes = 0;
    for email in emails {
        let fits = batches
            .last()
            .is_some_and(|b| b.len() < count.max(1) && bytes + email.size <= BATCH_BYTES);
        if !fits {
            batches.push(Vec::new());
            bytes = 0;
        }
        bytes += email.size;
        if let Some(batch) = batches.last_mut() {
            batch.push(email);
        }
    }
    batches
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
                let listed = page.emails.len();
                let fresh: Vec<EmailHeader> = page
                    .emails
                    .into_iter()
                    .filter(|e| input.since.is_none_or(|since| e.received > since))
                    .filter(|e| input.until.is_none_or(|until| e.received <= until))
                    .collect();
                state.skipped += (listed - fresh.len()) as u64;
                state.emails += fresh.len() as u64;
                for emails in split_batches(fresh, input.batch_size) {
                    ctx.report_progress(&Batch {
                        seq: state.batches,
                        emails,
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
    #[serde(default)]
    pub until: Option<Timestamp>,
    /// Where to email each digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_to: Option<String>,
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
    /// The message id of the email that delivered it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Group {
    /// Emails of the group seen so far.
    pub count: u64,
    pub ranked: Vec<Ranked>,
    /// Emails of a very busy period kept only as a count per sender (see [`compact`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub folded: BTreeMap<String, u64>,
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
    #[serde(default)]
    pub unreadable: u64,
    /// The latest group any fetched email belongs to (fetching is oldest first).
    pub latest_group: Option<String>,
    /// The latest delivery time of any fetched email: where the next run continues.
    #[serde(alias = "latest_date")]
    pub latest_received: Option<Timestamp>,
    /// Some batch came from a source that does not page oldest first: groups close only when
    /// fetching is done.
    #[serde(default)]
    pub unordered: bool,
    pub groups: BTreeMap<String, Group>,
    /// Batches waiting for a decision, by sequence number.
    pub undecided: BTreeMap<u64, Vec<EmailHeader>>,
    /// Batches being summarised (kept so a batch that cannot be summarised is still listed).
    #[serde(deserialize_with = "batches_in_flight")]
    pub summarizing: BTreeMap<u64, Vec<EmailHeader>>,
    /// The latest [`DECISIONS_KEPT`] decisions.
    pub decisions: Vec<DecisionLog>,
    #[serde(default)]
    pub decisions_total: u64,
}

/// How many decisions the analysis keeps for its report (a run over years of mail makes
/// thousands).
pub const DECISIONS_KEPT: usize = 100;

/// At most this much of a group's ranked entries is kept, in the analysis's record and in the
/// message that starts its digest; past it, [`compact`] shortens and then folds the least
/// important entries (a short digest shows them as one line per sender anyway).
pub const GROUP_BYTES: usize = 96_000;

/// Batches in flight, from either shape a record may hold: a map of their headers, or (records
/// written before the headers were kept) a set of sequence numbers.
fn batches_in_flight<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<BTreeMap<u64, Vec<EmailHeader>>, D::Error> {
    use serde::de::Error as _;
    // Through a `Value`: serde's untagged enums cannot read JSON's string keys as numbers.
    let value = Value::deserialize(deserializer)?;
    if value.is_array() {
        let set: BTreeSet<u64> = serde_json::from_value(value).map_err(D::Error::custom)?;
        return Ok(set.into_iter().map(|b| (b, Vec::new())).collect());
    }
    serde_json::from_value(value).map_err(D::Error::custom)
}

/// About what an entry weighs in a record.
fn entry_bytes(entry: &Ranked) -> usize {
    80 + entry.id.len()
        + entry.from.len()
        + entry.subject.len()
        + entry.summary.len()
        + entry.reason.len()
        + entry.note.as_ref().map_or(0, String::len)
}

/// How many senders a busy period's folded counts name; the rest count as "(other senders)".
const FOLDED_SENDERS: usize = 200;

/// Keeps a group within [`GROUP_BYTES`], so its record and the message that starts its digest
/// stay within their limits however much mail a period holds: first the least important entries
/// lose their summaries and the end of long subjects; if that is not enough (about 450 emails),
/// the least important are folded into a count per sender (what a short digest shows of them
/// anyway).
fn compact(group: &mut Group) {
    shorten(&mut group.ranked);
    let mut total: usize = group.ranked.iter().map(entry_bytes).sum::<usize>()
        + group.folded.keys().map(|k| k.len() + 16).sum::<usize>();
    if total <= GROUP_BYTES {
        return;
    }
    // Least important first, newest first among equals; what matters (rank 4 and 5) stays.
    group
        .ranked
        .sort_by_key(|e| (std::cmp::Reverse(e.rank), e.date));
    while total > GROUP_BYTES && group.ranked.last().is_some_and(|e| e.rank < 4) {
        let Some(entry) = group.ranked.pop() else {
            break;
        };
        total -= entry_bytes(&entry);
        let sender =
            if group.folded.contains_key(&entry.from) || group.folded.len() < FOLDED_SENDERS {
                entry.from
            } else {
                "(other senders)".to_string()
            };
        if !group.folded.contains_key(&sender) {
            total += sender.len() + 16;
        }
        *group.folded.entry(sender).or_default() += 1;
    }
}

/// The first pass of [`compact`]: summaries and long subjects of the least important go.
fn shorten(entries: &mut [Ranked]) {
    let mut total: usize = entries.iter().map(entry_bytes).sum();
    if total <= GROUP_BYTES {
        return;
    }
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| (entries[i].rank, std::cmp::Reverse(entries[i].date)));
    for i in order {
        if total <= GROUP_BYTES {
            break;
        }
        let entry = &mut entries[i];
        if entry.summary.is_empty() && entry.reason.is_empty() {
            continue;
        }
        total -= entry_bytes(entry);
        entry.summary.clear();
        entry.reason.clear();
        entry.subject = mail::cap_text(&entry.subject, 80);
        entry.note = Some("summary left out".into());
        total += entry_bytes(entry);
    }
}

/// The playbook: per batch, a model chooses how to summarise it; groups become digests.
#[derive(Clone, Copy, Debug, Default)]
pub struct BulkEmailAnalysis;

pub const SUMMARIZE: &str = "summarize_rank";
pub const SUMMARIZE_CAREFULLY: &str = "summarize_rank_carefully";

/// The steps a batch decision may choose from. Nothing else exists. They take no arguments: the
/// batch a decision applies to is the one the decision was asked about (its call's tag), never
/// one a model names.
pub fn batch_steps() -> Vec<StepSpec> {
    let args = json!({"type": "object"});
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

/// What the application knows about a batch, for a decision: counts it computed itself. No email
/// text is shown to the deciding model, so no email can steer a decision.
fn batch_facts(preferences: &Preferences, seq: u64, emails: &[EmailHeader]) -> Value {
    let urgent = emails
        .iter()
        .filter(|e| preferences.is_urgent_sender(&e.from))
        .count();
    let on_topic = emails
        .iter()
        .filter(|e| {
            let subject = e.subject.to_lowercase();
            preferences
                .keywords
                .iter()
                .any(|k| subject.contains(&k.to_lowercase()))
        })
        .count();
    json!({
        "batch": seq,
        "emails": emails.len(),
        "from_urgent_senders": urgent,
        "subjects_on_user_topics": on_topic,
    })
}

/// The step the playbook's own rule takes for a batch.
fn suggested_step(facts: &Value) -> &'static str {
    if facts["from_urgent_senders"].as_u64().unwrap_or(0) > 0 {
        SUMMARIZE_CAREFULLY
    } else {
        SUMMARIZE
    }
}

fn batch_tag(prefix: &str, tag: &str) -> Result<u64> {
    tag.strip_prefix(prefix)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::terminal(format!("unexpected tag {tag:?}")))
}

impl BulkEmailAnalysis {
    fn decide_batch(
        input: &AnalysisInput,
        seq: u64,
        emails: &[EmailHeader],
        ctx: &mut Context<'_>,
    ) {
        let facts = batch_facts(&input.preferences, seq, emails);
        let suggested = suggested_step(&facts);
        ctx.decide(
            format!("batch-{seq}"),
            &Decision {
                goal: format!(
                    "Produce {:?} email digests for {}, every email summarised and ranked exactly once.",
                    input.preferences.grouping, input.user
                ),
                facts,
                data: Vec::new(),
                steps: batch_steps(),
                tier: Tier::Standard,
                hint: json!({
                    "suggested": {"step": suggested, "args": {}},
                    "why": if suggested == SUMMARIZE_CAREFULLY { "the batch has mail from urgent senders" } else { "a routine batch" },
                }),
            },
        );
    }

    /// Acts on a choice (the model's or the planner's) for batch `batch`.
    fn act(
        state: &mut AnalysisState,
        batch: u64,
        choice: &Choice,
        by: String,
        ctx: &mut Context<'_>,
    ) -> Result<()> {
        let input = state
            .input
            .clone()
            .ok_or_else(|| Error::terminal("no input"))?;
        let tier = match choice.step.as_str() {
            SUMMARIZE => Tier::Standard,
            SUMMARIZE_CAREFULLY => Tier::Strong,
            other => return Err(Error::terminal(format!("undeclared step {other:?}"))),
        };
        let Some(emails) = state.undecided.remove(&batch) else {
            // Already handled (a redelivered choice).
            return Ok(());
        };
        ctx.spawn::<SummarizeRank>(
            format!("rank-{batch}"),
            &RankRequest {
                mailbox: input.mailbox.clone(),
                emails: emails.clone(),
                preferences: input.preferences.clone(),
                tier,
            },
        );
        state.summarizing.insert(batch, emails);
        state.decisions.push(DecisionLog {
            batch,
            step: choice.step.clone(),
            why: choice.why.clone(),
            by,
            attempts: choice.attempts,
        });
        state.decisions_total += 1;
        let excess = state.decisions.len().saturating_sub(DECISIONS_KEPT);
        state.decisions.drain(..excess);
        Ok(())
    }

    /// Files ranked emails under their groups.
    fn file(state: &mut AnalysisState, ranked: Vec<Ranked>) {
        let grouping = state
            .input
            .as_ref()
            .map(|i| i.preferences.grouping)
            .unwrap_or_default();
        let mut touched = BTreeSet::new();
        for entry in ranked {
            let key = digest::group_key(entry.date, grouping);
            state
                .groups
                .entry(key.clone())
                .or_default()
                .ranked
                .push(entry);
            touched.insert(key);
        }
        for key in touched {
            if let Some(group) = state.groups.get_mut(&key) {
                compact(group);
            }
        }
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
            let filed = group.ranked.len() as u64 + group.folded.values().sum::<u64>();
            if group.writing || !closed || filed < group.count {
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
                    style: input.preferences.style,
                    deliver_to: input.deliver_to.clone(),
                    entries,
                    folded: std::mem::take(&mut group.folded),
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
            unreadable: state.unreadable,
            batches: state.batches,
            digests: state
                .groups
                .values()
                .filter_map(|g| g.written.clone())
                .collect(),
            decisions: state.decisions.clone(),
            until: state.latest_received,
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
                        until: input.until,
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
                    if state.latest_received.is_none_or(|d| email.received > d) {
                        state.latest_received = Some(email.received);
                    }
                }
                state.batches += 1;
                state.emails += batch.emails.len() as u64;
                state.unreadable += batch.emails.iter().filter(|e| e.unreadable).count() as u64;
                Self::decide_batch(&input, batch.seq, &batch.emails, ctx);
                state.undecided.insert(batch.seq, batch.emails);
            }
            AtomEvent::CallCompleted { tag, output } => {
                let batch = batch_tag("batch-", &tag)?;
                let choice: Choice = decode("choice", output)?;
                let by = choice.model.clone();
                Self::act(state, batch, &choice, by, ctx)?;
            }
            AtomEvent::CallFailed { tag, reason } => {
                // No valid choice from the model: the planner takes over this batch.
                let input = state
                    .input
                    .clone()
                    .ok_or_else(|| Error::terminal("no input"))?;
                let seq = batch_tag("batch-", &tag)?;
                let emails = state.undecided.get(&seq).cloned().unwrap_or_default();
                let facts = batch_facts(&input.preferences, seq, &emails);
                let suggested = suggested_step(&facts);
                ctx.spawn::<Planner>(
                    format!("plan-{seq}"),
                    &PlanInput {
                        goal: format!("Summarise and rank batch {seq} of {}'s mail.", input.user),
                        facts,
                        steps: batch_steps(),
                        problem: reason,
                        hint: json!({"suggested": {"step": suggested, "args": {}}}),
                    },
                );
            }
            AtomEvent::ChildCompleted { tag, output, .. } => {
                if tag == "fetch" {
                    state.fetch_done = true;
                } else if tag.starts_with("plan-") {
                    let batch = batch_tag("plan-", &tag)?;
                    let plan: PlanOutput = decode("plan", output)?;
                    Self::act(
                        state,
                        batch,
                        &plan.choice,
                        format!("planner: {}", plan.why),
                        ctx,
                    )?;
                } else if tag.starts_with("rank-") {
                    let batch = batch_tag("rank-", &tag)?;
                    state.summarizing.remove(&batch);
                    let ranked: Vec<Ranked> = decode("ranked emails", output)?;
                    Self::file(state, ranked);
                } else if let Some(group) = tag.strip_prefix("digest-") {
                    let written: DigestWritten = decode("digest", output)?;
                    if let Some(g) = state.groups.get_mut(group) {
                        g.written = Some(written);
                    }
                }
            }
            AtomEvent::ChildFailed { tag, reason, .. } if tag.starts_with("rank-") => {
                // A batch that cannot be summarised is listed, never a failed analysis.
                let batch = batch_tag("rank-", &tag)?;
                let emails = state.summarizing.remove(&batch).unwrap_or_default();
                let preferences = state
                    .input
                    .as_ref()
                    .map(|i| i.preferences.clone())
                    .unwrap_or_default();
                let listed = emails
                    .iter()
                    .map(|e| SummarizeRank::listed(e, &preferences, &reason))
                    .collect();
                Self::file(state, listed);
            }
            AtomEvent::ChildFailed { tag, reason, .. } if tag.starts_with("plan-") => {
                // Nobody could decide: the playbook's own rule decides.
                let batch = batch_tag("plan-", &tag)?;
                let input = state
                    .input
                    .clone()
                    .ok_or_else(|| Error::terminal("no input"))?;
                let emails = state.undecided.get(&batch).cloned().unwrap_or_default();
                let step = suggested_step(&batch_facts(&input.preferences, batch, &emails));
                let choice = Choice {
                    step: step.into(),
                    args: json!({}),
                    why: format!("the planner failed ({reason}); the playbook's rule"),
                    attempts: 0,
                    model: "rule".into(),
                };
                Self::act(state, batch, &choice, "rule".into(), ctx)?;
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

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RankState {
    pub input: Option<RankRequest>,
}

/// Summarises and ranks one batch of emails (the `email.summarize_rank` activity). Never fails:
/// a batch that cannot be summarised comes back as a listing of its emails.
#[derive(Clone, Copy, Debug, Default)]
pub struct SummarizeRank;

impl SummarizeRank {
    /// An email listed without a summary, ranked by the offline rules on its headers.
    pub fn listed(email: &EmailHeader, preferences: &Preferences, why: &str) -> Ranked {
        if email.unreadable {
            return Ranked::unreadable(email);
        }
        let (rank, reason) = crate::offline::rank(preferences, &email.from, &email.subject, "");
        Ranked {
            rank,
            reason,
            note: Some(format!("not summarised: {}", mail::cap_text(why, 200))),
            ..Ranked::of(email)
        }
    }
}

impl Atom for SummarizeRank {
    const TYPE: &'static str = "summarize-rank";
    type Input = RankRequest;
    type State = RankState;
    type Output = Vec<Ranked>;

    fn step(
        &self,
        state: &mut RankState,
        event: AtomEvent<RankRequest>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<Vec<Ranked>>> {
        match event {
            AtomEvent::Started(input) => {
                ctx.call(rank::SUMMARIZE_RANK, "rank", &input);
                state.input = Some(input);
            }
            AtomEvent::CallCompleted { output, .. } => {
                return Ok(Step::Complete(decode("ranked emails", output)?));
            }
            AtomEvent::CallFailed { reason, .. } => {
                let input = state
                    .input
                    .as_ref()
                    .ok_or_else(|| Error::terminal("no input"))?;
                tracing::warn!(%reason, "a batch could not be summarised; it is listed");
                let listed = input
                    .emails
                    .iter()
                    .map(|e| Self::listed(e, &input.preferences, &reason))
                    .collect();
                return Ok(Step::Complete(listed));
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
    #[serde(default)]
    pub style: Style,
    /// Where to email it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver_to: Option<String>,
    /// Sorted, most important first.
    pub entries: Vec<Ranked>,
    /// Emails of a very busy period kept only as a count per sender.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub folded: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DigestState {
    pub group: String,
    pub emails: u64,
}

/// The subject line of a delivered digest.
fn digest_subject(grouping: Grouping, group: &str, entries: &[Ranked]) -> String {
    let period = match grouping {
        Grouping::Hour => "Hourly",
        Grouping::Day => "Daily",
        Grouping::Week => "Weekly",
    };
    let urgent = entries.iter().filter(|e| e.rank >= 4).count();
    format!(
        "{period} digest {group}: {} emails, {urgent} that matter",
        entries.len()
    )
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
                let markdown = digest::render(
                    &input.user,
                    &input.group,
                    input.grouping,
                    input.style,
                    &input.entries,
                    &input.folded,
                );
                let deliver = input.deliver_to.as_ref().map(|to| Delivery {
                    to: to.clone(),
                    subject: digest_subject(input.grouping, &input.group, &input.entries),
                });
                ctx.call(
                    digest::STORE,
                    "store",
                    &StoreDigest {
                        key: digest_key(&input.user, &input.group),
                        markdown,
                        deliver,
                    },
                );
                state.group = input.group;
                state.emails = input.entries.len() as u64 + input.folded.values().sum::<u64>();
            }
            AtomEvent::CallCompleted { output, .. } => {
                let stored: Stored = decode("stored digest", output)?;
                return Ok(Step::Complete(DigestWritten {
                    group: state.group.clone(),
                    location: stored.location,
                    emails: state.emails,
                    delivered: stored.delivered,
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

    fn choose_step_ask(input: &PlanInput, deadline: Timestamp) -> Ask {
        let mut prompt = format!(
            "{} The assistant could not decide how to go on and asks you to choose:",
            input.goal
        );
        for step in &input.steps {
            prompt.push_str(&format!("\n- {}: {}", step.name, step.description));
        }
        let names: Vec<&str> = input.steps.iter().map(|s| s.name.as_str()).collect();
        Ask {
            kind: CHOOSE_STEP.into(),
            prompt,
            schema: json!({
                "type": "object",
                "required": ["step"],
                "additionalProperties": false,
                "properties": {"step": {"enum": names}}
            }),
            deadline: Some(deadline),
        }
    }
}

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
                    "Ask the user to choose among the declared steps, when the choice needs their judgement. The question is written by the application.",
                    json!({"type": "object"}),
                ));
                ctx.decide(
                    "plan",
                    &Decision {
                        goal: format!(
                            "{} The workflow could not choose its next step automatically (the data says what went wrong). Choose the declared step that best serves the goal, or ask the user.",
                            input.goal
                        ),
                        facts: input.facts.clone(),
                        data: vec![Untrusted::new(
                            "why the workflow could not decide (model output)",
                            mail::cap_text(&input.problem, 2_000),
                        )],
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
                    let deadline = ctx.now().plus(CHOOSE_STEP_DEADLINE);
                    ctx.ask_user(Self::choose_step_ask(input, deadline));
                    return Ok(Step::Suspend);
                }
                let why = choice.why.clone();
                return Ok(Step::Complete(PlanOutput { choice, why }));
            }
            AtomEvent::UserAnswered { answer, .. } => {
                let input = state
                    .input
                    .as_ref()
                    .ok_or_else(|| Error::terminal("no input"))?;
                let step = answer["step"].as_str().unwrap_or_default();
                if !input.steps.iter().any(|s| s.name == step) {
                    return Err(Error::terminal(format!("{step:?} is not a declared step")));
                }
                let choice = Choice {
                    step: step.to_string(),
                    args: json!({}),
                    why: "the user chose it".into(),
                    attempts: 1,
                    model: "user".into(),
                };
                return Ok(Step::Complete(PlanOutput {
                    choice,
                    why: "the user chose it".into(),
                }));
            }
            AtomEvent::RequestExpired { .. } => {
                let input = state
                    .input
                    .as_ref()
                    .ok_or_else(|| Error::terminal("no input"))?;
                let why = "the user did not choose in time; the playbook's rule";
                let choice = Self::default_choice(input, why)?;
                return Ok(Step::Complete(PlanOutput {
                    choice,
                    why: why.into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize, rank: u8) -> Ranked {
        Ranked {
            summary: "s".repeat(400),
            rank,
            reason: "r".repeat(100),
            ..Ranked::of(&EmailHeader {
                id: format!("e{n}"),
                from: "a@b.example".into(),
                subject: "x".repeat(100),
                date: Timestamp::from_millis(n as u64),
                received: Timestamp::from_millis(n as u64),
                size: 0,
                unreadable: false,
            })
        }
    }

    #[test]
    fn a_busy_groups_least_important_entries_lose_their_summaries_first() {
        let mut group = Group {
            ranked: (0..300)
                .map(|n| entry(n, if n < 10 { 5 } else { 1 }))
                .collect(),
            ..Group::default()
        };
        compact(&mut group);
        let total: usize = group.ranked.iter().map(entry_bytes).sum();
        assert!(total <= GROUP_BYTES, "{total}");
        assert!(
            group
                .ranked
                .iter()
                .filter(|e| e.rank == 5)
                .all(|e| e.summary.len() == 400)
        );
        assert!(group.ranked.iter().any(|e| e.summary.is_empty()));
        assert_eq!(group.ranked.len(), 300, "every email still has its entry");
    }

    #[test]
    fn a_very_busy_group_folds_what_matters_least_into_counts_and_loses_no_email() {
        let mut group = Group {
            ranked: (0..5_000)
                .map(|n| {
                    let mut e = entry(n, if n < 10 { 5 } else { 1 });
                    e.from = format!("sender{}@x.example", n % 300);
                    e
                })
                .collect(),
            ..Group::default()
        };
        compact(&mut group);
        let total: usize = group.ranked.iter().map(entry_bytes).sum::<usize>()
            + group.folded.keys().map(|k| k.len() + 16).sum::<usize>();
        assert!(total <= GROUP_BYTES, "{total}");
        assert_eq!(group.ranked.iter().filter(|e| e.rank == 5).count(), 10);
        let folded: u64 = group.folded.values().sum();
        assert_eq!(
            group.ranked.len() as u64 + folded,
            5_000,
            "every email counted once"
        );
        assert!(group.folded.len() <= FOLDED_SENDERS + 1);
        assert!(group.folded.contains_key("(other senders)"));
        assert!(serde_json::to_string(&group).unwrap_or_default().len() < 120_000);
    }

    #[test]
    fn records_written_before_batches_kept_their_headers_still_load() {
        let old = json!({"input": null, "fetch_done": false, "batches": 2, "emails": 50,
            "latest_group": null, "latest_date": 1767600000000u64, "groups": {}, "undecided": {},
            "summarizing": [0, 1], "decisions": []});
        let state: AnalysisState = serde_json::from_value(old).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            state.summarizing.keys().copied().collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(
            state.latest_received,
            Some(Timestamp::from_millis(1_767_600_000_000))
        );
        let gmail: MailboxRef =
            serde_json::from_value(json!({"kind": "gmail", "access_token": "arn:x"}))
                .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(gmail, MailboxRef::Gmail { refresh_token, .. } if refresh_token == "arn:x")
        );
    }
}
