//! # reanimate-email
//!
//! The email assistant, built on reanimate: a user hires it, it asks what it needs (with
//! watchdog reminders and escalation), turns free-text preferences into settings with a model,
//! and runs a bulk-analysis playbook that fetches mail in batches, has each batch summarised and
//! ranked, and writes one Markdown digest per hour, day or week.
//!
//! - [`atoms`]: the six atoms and their registry.
//! - [`mail`]: emails, the Maildir source, the `mail.*` activities.
//! - [`digest`]: grouping, rendering, the `digest.store` activity (stores and delivers).
//! - [`rank`]: the `email.summarize_rank` activity, checking what the model returns.
//! - [`gmail`] and [`oauth`]: Gmail's REST API, with access tokens minted from a stored refresh
//!   token, and the consent that yields it.
//! - [`offline`]: the deterministic offline model the demo uses by default.

pub mod atoms;
pub mod aws;
pub mod digest;
pub mod gmail;
pub mod mail;
pub mod oauth;
pub mod offline;
pub mod prefs;
pub mod rank;
pub mod scenario;

use reanimate_core::Activities;
use reanimate_core::playbook::{Model, ModelActivities};
use std::sync::Arc;

/// Every activity the email atoms call: the models, the mailbox, the digest store and the mailer
/// that delivers digests.
pub fn activities(
    standard: Arc<dyn Model>,
    strong: Arc<dyn Model>,
    mail: Arc<dyn mail::MailSource>,
    digests: Arc<dyn digest::DigestStore>,
    mailer: Option<Arc<dyn digest::Mailer>>,
) -> Activities {
    let models = ModelActivities::new(standard, strong);
    models
        .clone()
        .activities()
        .merge(rank::activities(models, Arc::clone(&mail)))
        .merge(mail::activities(mail))
        .merge(digest::activities(digests, mailer))
}
