//! `bulk-email-analysis`, a playbook: it starts a fetch, and for every batch the fetch reports a
//! model chooses how to summarise it (from the declared steps only); a batch no model could
//! decide goes to the planner. Ranked emails are filed under their hour, day or week, and each
//! group, once complete, becomes a digest.

use super::fetch::{Batch, FetchEmails, FetchInput};
use super::planner::{PlanInput, Planner};
use super::prompts::{batch_facts, batch_steps, suggested_step};
use super::summarize::SummarizeRank;
use super::write_digest::{DigestInput, WriteDigest};
use crate::digest::{self, Ranked};
use crate::mail::{self, EmailHeader, MailboxRef};
use crate::prefs::Preferences;
use crate::rank::RankRequest;
use reanimate_core::playbook::{Choice, Decide, Decision, Tier};
use reanimate_core::{Atom, AtomEvent, Context, Error, Failure, Result, Step, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AnalysisState {
    pub input: AnalysisInput,
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

/// The playbook: per batch, a model chooses how to summarise it; groups become digests.
#[derive(Clone, Copy, Debug, Default)]
pub struct BulkEmailAnalysis;

pub const SUMMARIZE: &str = "summarize_rank";
pub const SUMMARIZE_CAREFULLY: &str = "summarize_rank_carefully";

/// The analysis's children and calls. Each names the batch or group it is about, so a choice
/// applies to the batch it was asked about, never to one a model names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnalysisTag {
    /// The one fetch.
    Fetch,
    /// The model's decision for a batch.
    Batch(u64),
    /// The planner, for a batch no model could decide.
    Plan(u64),
    /// Summarising and ranking a batch.
    Rank(u64),
    /// Writing a group's digest.
    Digest(String),
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
            AnalysisTag::Batch(seq),
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
        let input = &state.input;
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
            AnalysisTag::Rank(batch),
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
        let grouping = state.input.preferences.grouping;
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
    fn write_ready_groups(state: &mut AnalysisState, ctx: &mut Context<'_>) {
        let input = &state.input;
        let closed_below = if state.fetch_done {
            None
        } else if state.unordered {
            return;
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
                AnalysisTag::Digest(key.clone()),
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
    type Tag = AnalysisTag;

    fn start(
        &self,
        input: AnalysisInput,
        ctx: &mut Context<'_>,
    ) -> Result<(AnalysisState, Step<AnalysisReport>)> {
        ctx.spawn::<FetchEmails>(
            AnalysisTag::Fetch,
            &FetchInput {
                mailbox: input.mailbox.clone(),
                batch_size: input.batch_size,
                since: input.since,
                until: input.until,
            },
        );
        let state = AnalysisState {
            input,
            fetch_done: false,
            batches: 0,
            emails: 0,
            unreadable: 0,
            latest_group: None,
            latest_received: None,
            unordered: false,
            groups: BTreeMap::new(),
            undecided: BTreeMap::new(),
            summarizing: BTreeMap::new(),
            decisions: Vec::new(),
            decisions_total: 0,
        };
        Ok((state, Step::Suspend))
    }

    fn step(
        &self,
        state: &mut AnalysisState,
        event: AtomEvent<AnalysisTag>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<AnalysisReport>> {
        match event {
            AtomEvent::ChildProgress { payload, .. } => {
                let batch = payload.decode::<Batch>()?;
                let grouping = state.input.preferences.grouping;
                state.unordered |= !batch.oldest_first;
                for email in &batch.emails {
                    let key = digest::group_key(email.date, grouping);
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
                Self::decide_batch(&state.input, batch.seq, &batch.emails, ctx);
                state.undecided.insert(batch.seq, batch.emails);
            }
            AtomEvent::CallCompleted {
                tag: AnalysisTag::Batch(batch),
                output,
            } => {
                let choice = output.output_of_call::<Decide>()?;
                let by = choice.model.clone();
                Self::act(state, batch, &choice, by, ctx)?;
            }
            AtomEvent::ChildCompleted { tag, output, .. } => match tag {
                AnalysisTag::Fetch => state.fetch_done = true,
                AnalysisTag::Plan(batch) => {
                    let plan = output.output_of::<Planner>()?;
                    let by = format!("planner: {}", plan.why);
                    Self::act(state, batch, &plan.choice, by, ctx)?;
                }
                AnalysisTag::Rank(batch) => {
                    state.summarizing.remove(&batch);
                    Self::file(state, output.output_of::<SummarizeRank>()?);
                }
                AnalysisTag::Digest(group) => {
                    let written = output.output_of::<WriteDigest>()?;
                    if let Some(g) = state.groups.get_mut(&group) {
                        g.written = Some(written);
                    }
                }
                AnalysisTag::Batch(_) => {}
            },
            _ => {}
        }
        Ok(Self::settle(state, ctx))
    }

    fn failed(
        &self,
        state: &mut AnalysisState,
        failure: Failure<AnalysisTag>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<AnalysisReport>> {
        match failure {
            Failure::Call {
                tag: AnalysisTag::Batch(seq),
                reason,
            } => {
                // No valid choice from the model: the planner takes over this batch.
                let input = &state.input;
                let emails = state
                    .undecided
                    .get(&seq)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let facts = batch_facts(&input.preferences, seq, emails);
                let suggested = suggested_step(&facts);
                ctx.spawn::<Planner>(
                    AnalysisTag::Plan(seq),
                    &PlanInput {
                        goal: format!("Summarise and rank batch {seq} of {}'s mail.", input.user),
                        facts,
                        steps: batch_steps(),
                        problem: reason,
                        hint: json!({"suggested": {"step": suggested, "args": {}}}),
                    },
                );
            }
            Failure::Child {
                tag: AnalysisTag::Rank(batch),
                reason,
                ..
            } => {
                // A batch that cannot be summarised is listed, never a failed analysis.
                let emails = state.summarizing.remove(&batch).unwrap_or_default();
                let preferences = &state.input.preferences;
                let listed = emails
                    .iter()
                    .map(|e| SummarizeRank::listed(e, preferences, &reason))
                    .collect();
                Self::file(state, listed);
            }
            Failure::Child {
                tag: AnalysisTag::Plan(batch),
                reason,
                ..
            } => {
                // Nobody could decide: the playbook's own rule decides.
                let emails = state
                    .undecided
                    .get(&batch)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let step = suggested_step(&batch_facts(&state.input.preferences, batch, emails));
                let choice = Choice {
                    step: step.into(),
                    args: json!({}),
                    why: format!("the planner failed ({reason}); the playbook's rule"),
                    attempts: 0,
                    model: "rule".into(),
                };
                Self::act(state, batch, &choice, "rule".into(), ctx)?;
            }
            other => return Ok(Step::Fail(other.reason())),
        }
        Ok(Self::settle(state, ctx))
    }
}

impl BulkEmailAnalysis {
    /// After every event: digests for the groups now complete, and the report once all is done.
    fn settle(state: &mut AnalysisState, ctx: &mut Context<'_>) -> Step<AnalysisReport> {
        Self::write_ready_groups(state, ctx);
        match Self::finished(state) {
            Some(report) => Step::Complete(report),
            None => Step::Suspend,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Ranked;

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
        let input = json!({"user": "ada", "mailbox": {"kind": "maildir", "path": "ada"},
            "preferences": {"grouping": "day"}, "batch_size": 25});
        let old = json!({"input": input, "fetch_done": false, "batches": 2, "emails": 50,
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
