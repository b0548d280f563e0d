//! `write-digest`: renders one group's Markdown digest and stores it (and emails it, when the user
//! gave an address) through the `digest.store` activity.

use super::analysis::DigestWritten;
use crate::digest::{self, Delivery, Ranked, StoreCall, StoreDigest};
use crate::prefs::{Grouping, Style};
use reanimate_core::{Atom, AtomEvent, Context, Failure, Result, Step};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

#[derive(Clone, Debug, Serialize, Deserialize)]
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
    /// Its one call is tagged `store`.
    type Tag = String;

    fn start(
        &self,
        input: DigestInput,
        ctx: &mut Context<'_>,
    ) -> Result<(DigestState, Step<DigestWritten>)> {
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
        ctx.call::<StoreCall>(
            "store",
            &StoreDigest {
                key: digest_key(&input.user, &input.group),
                markdown,
                deliver,
            },
        );
        let state = DigestState {
            emails: input.entries.len() as u64 + input.folded.values().sum::<u64>(),
            group: input.group,
        };
        Ok((state, Step::Suspend))
    }

    fn step(
        &self,
        state: &mut DigestState,
        event: AtomEvent<String>,
        _ctx: &mut Context<'_>,
    ) -> Result<Step<DigestWritten>> {
        let AtomEvent::CallCompleted { output, .. } = event else {
            return Ok(Step::Suspend);
        };
        let stored = output.output_of_call::<StoreCall>()?;
        Ok(Step::Complete(DigestWritten {
            group: state.group.clone(),
            location: stored.location,
            emails: state.emails,
            delivered: stored.delivered,
        }))
    }

    fn failed(
        &self,
        _state: &mut DigestState,
        failure: Failure<String>,
        _ctx: &mut Context<'_>,
    ) -> Result<Step<DigestWritten>> {
        let (Failure::Call { reason, .. } | Failure::Child { reason, .. }) = failure;
        Ok(Step::Fail(format!("storing the digest failed: {reason}")))
    }
}
