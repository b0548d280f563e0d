//! `summarize-rank`: one batch through the `email.summarize_rank` activity. It never fails: a
//! batch that cannot be summarised comes back as a listing of its emails, ranked by the offline
//! rules on their headers.

use crate::digest::Ranked;
use crate::mail::{self, EmailHeader};
use crate::prefs::Preferences;
use crate::rank::{RankRequest, SummarizeRankCall};
use reanimate_core::{Atom, AtomEvent, Context, Failure, Result, Step};
use serde::{Deserialize, Serialize};

/// The batch, kept to list its emails if it cannot be summarised.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RankState {
    pub input: RankRequest,
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
    /// Its one call is tagged `rank`.
    type Tag = String;

    fn start(
        &self,
        input: RankRequest,
        ctx: &mut Context<'_>,
    ) -> Result<(RankState, Step<Vec<Ranked>>)> {
        ctx.call::<SummarizeRankCall>("rank", &input);
        Ok((RankState { input }, Step::Suspend))
    }

    fn step(
        &self,
        _state: &mut RankState,
        event: AtomEvent<String>,
        _ctx: &mut Context<'_>,
    ) -> Result<Step<Vec<Ranked>>> {
        match event {
            AtomEvent::CallCompleted { output, .. } => Ok(Step::Complete(
                output.output_of_call::<SummarizeRankCall>()?,
            )),
            _ => Ok(Step::Suspend),
        }
    }

    fn failed(
        &self,
        state: &mut RankState,
        failure: Failure<String>,
        _ctx: &mut Context<'_>,
    ) -> Result<Step<Vec<Ranked>>> {
        let (Failure::Call { reason, .. } | Failure::Child { reason, .. }) = failure;
        tracing::warn!(%reason, "a batch could not be summarised; it is listed");
        let input = &state.input;
        let listed = input
            .emails
            .iter()
            .map(|e| Self::listed(e, &input.preferences, &reason))
            .collect();
        Ok(Step::Complete(listed))
    }
}
