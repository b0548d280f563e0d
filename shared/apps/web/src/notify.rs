//! The notifier: each notify-queue record names a request; its person gets an email with their
//! link (Amazon SES), then the request is marked notified. A record whose request is closed,
//! already told or names nobody is done; a failure is retried (the record's batch item fails)
//! and, as everywhere, a person may get the same email twice but never none.

use crate::App;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use reanimate_aws::dynamo::Notification;
use reanimate_core::{Error, Result, Timestamp};
use reanimate_email::digest::{Mailer, OutgoingMail};

/// The subject of every notification.
pub const SUBJECT: &str = "Your assistant has a question for you";

/// The email that tells a person a request waits for them.
pub fn email(to: &str, prompt: &str, link: &str, deadline: Option<Timestamp>) -> OutgoingMail {
    let by = deadline
        .map(|d| format!("\nPlease answer by {d}.\n"))
        .unwrap_or_default();
    let text = format!(
        "Your assistant has a question for you:\n\n{prompt}\n\nAnswer it here (this link is for you only):\n{link}\n{by}"
    );
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif\"><p>Your assistant has a question for you:</p><blockquote>{}</blockquote><p><a href=\"{}\">Answer it</a> (this link is for you only).</p><p>{}</p></body></html>",
        escape(prompt),
        escape(link),
        escape(by.trim())
    );
    OutgoingMail {
        to: to.to_string(),
        subject: SUBJECT.into(),
        text,
        html,
    }
}

async fn notify_one(app: &App, mailer: &dyn Mailer, body: &str) -> Result<()> {
    let notification: Notification = serde_json::from_str(body)
        .map_err(|e| Error::terminal(format!("notify record is not a notification: {e}")))?;
    let inbox = app.stack.inbox();
    let Some(entry) = inbox.awaiting_notification(&notification.request).await? else {
        return Ok(());
    };
    let (Some(person), Some(base)) = (&entry.request.person, &app.base_url) else {
        return Ok(());
    };
    let token = crate::inbox::link_token(
        &app.links,
        &entry.request.id,
        person,
        entry.request.deadline,
    );
    let link = format!("{}/r/{token}", base.trim_end_matches('/'));
    mailer
        .send(&email(
            person,
            &entry.request.prompt,
            &link,
            entry.request.deadline,
        ))
        .await?;
    inbox
        .mark_notified(&entry.request.id, Timestamp::now_utc())
        .await
}

/// One batch of notify-queue records: failures are reported per record (only they come back).
pub async fn handle(app: &App, event: SqsEvent) -> SqsBatchResponse {
    let from = std::env::var("REANIMATE_DIGEST_FROM").unwrap_or_default();
    let mailer = reanimate_email::aws::SesMailer::new(
        app.stack.clients().ses.clone(),
        from,
        app.stack.counters().clone(),
    );
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let body = record.body.clone().unwrap_or_default();
        if let Err(error) = notify_one(app, &mailer, &body).await {
            tracing::warn!(reason = %error.reason, retryable = error.is_retryable(), "notification failed");
            // A terminal failure (a malformed record) is not retried: it would never succeed.
            if error.is_retryable() {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = record.message_id.clone().unwrap_or_default();
                response.batch_item_failures.push(failure);
            }
        }
    }
    response
}
