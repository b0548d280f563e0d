//! `fetch-emails`: pages through a mailbox oldest first, one `mail.fetch` call per page, and
//! reports every batch to its parent as progress as soon as it lands.

use crate::mail::{EmailHeader, FetchCall, FetchPage, MailboxRef};
use reanimate_core::{Atom, AtomEvent, Context, Failure, Result, Step, Timestamp};
use serde::{Deserialize, Serialize};

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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchState {
    pub input: FetchInput,
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
        ctx.call::<FetchCall>(
            FetchTag::Page(page),
            &FetchPage {
                mailbox: input.mailbox.clone(),
                cursor,
                limit: input.batch_size,
                since: input.since,
            },
        );
    }
}

/// A fetch's calls: one per page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FetchTag {
    Page(u64),
}

impl Atom for FetchEmails {
    const TYPE: &'static str = "fetch-emails";
    type Input = FetchInput;
    type State = FetchState;
    type Output = FetchSummary;
    type Tag = FetchTag;

    fn start(
        &self,
        input: FetchInput,
        ctx: &mut Context<'_>,
    ) -> Result<(FetchState, Step<FetchSummary>)> {
        Self::fetch(&input, 0, None, ctx);
        let state = FetchState {
            input,
            pages: 0,
            batches: 0,
            emails: 0,
            skipped: 0,
        };
        Ok((state, Step::Suspend))
    }

    fn step(
        &self,
        state: &mut FetchState,
        event: AtomEvent<FetchTag>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<FetchSummary>> {
        let AtomEvent::CallCompleted { output, .. } = event else {
            return Ok(Step::Suspend);
        };
        let page = output.output_of_call::<FetchCall>()?;
        let input = &state.input;
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
                Self::fetch(&state.input, state.pages, Some(cursor), ctx);
                Ok(Step::Suspend)
            }
            None => Ok(Step::Complete(FetchSummary {
                batches: state.batches,
                emails: state.emails,
            })),
        }
    }

    fn failed(
        &self,
        _state: &mut FetchState,
        failure: Failure<FetchTag>,
        _ctx: &mut Context<'_>,
    ) -> Result<Step<FetchSummary>> {
        let (Failure::Call { reason, .. } | Failure::Child { reason, .. }) = failure;
        Ok(Step::Fail(format!("fetching mail failed: {reason}")))
    }
}
