//! The email assistant's atoms, one module each. Each is its own Lambda with its own queue on
//! AWS (`functions/<atom>/`).
//!
//! ```text
//! email-assistant ──spawns──▶ bulk-email-analysis ──spawns──▶ fetch-emails (a progress report per batch)
//!                                   │  decides per batch (model) ──▶ summarize-rank (one per batch)
//!                                   │  no valid decision ──▶ planner (stronger model, or the user)
//!                                   └─ a group complete ──▶ write-digest (one per hour/day/week)
//! ```
//!
//! What they say to people and models (questions, schemas, instructions, declared steps) is in
//! [`prompts`].

pub mod analysis;
pub mod assistant;
pub mod fetch;
pub mod planner;
pub mod prompts;
pub mod summarize;
pub mod write_digest;

pub use analysis::{
    AnalysisInput, AnalysisReport, AnalysisState, AnalysisTag, BulkEmailAnalysis, DECISIONS_KEPT,
    DecisionLog, DigestWritten, GROUP_BYTES, Group, SUMMARIZE, SUMMARIZE_CAREFULLY,
};
pub use assistant::{
    AUTH, AssistantState, AssistantTag, DISCONNECT, EmailAssistant, Hire, PREFERENCES,
    RECENT_DIGESTS,
};
pub use fetch::{
    BATCH_BYTES, Batch, FetchEmails, FetchInput, FetchState, FetchSummary, split_batches,
};
pub use planner::{ASK_USER, CHOOSE_STEP, CHOOSE_STEP_DEADLINE, PlanInput, PlanOutput, Planner};
pub use prompts::batch_steps;
pub use summarize::SummarizeRank;
pub use write_digest::{DigestInput, WriteDigest, digest_key};

use reanimate_core::Registry;

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
