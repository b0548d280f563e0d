//! The notifier: each notify-queue record names a request; its person gets an email with their
//! link (Amazon SES), then the request is marked notified. A record whose request is closed,
//! already told or names nobody is done; a retryable failure is retried (the record's batch item
//! fails), and one that cannot succeed (SES refuses the address, the inbox's URL is unknown) is
//! parked in the notify dead-letter queue with its reason, where the console shows it. A person
//! may get the same email twice, and is never silently not told.

use crate::App;
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use reanimate_aws::dynamo::Notification;
use reanimate_aws::lambda::DeadLetters;
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
    let Some(person) = &entry.request.person else {
        return Ok(());
    };
    let base = app
        .base_url
        .as_ref()
        .ok_or_else(|| Error::terminal("REANIMATE_INBOX_URL is not set: no link can be made"))?;
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
    let dead_letters = std::env::var("REANIMATE_DEAD_LETTER_URL")
        .ok()
        .map(|url| DeadLetters {
            sqs: app.stack.clients().sqs.clone(),
            url,
            counters: app.stack.counters().clone(),
        });
    let mut response = SqsBatchResponse::default();
    for record in event.records {
        let body = record.body.clone().unwrap_or_default();
        let Err(error) = notify_one(app, &mailer, &body).await else {
            continue;
        };
        tracing::warn!(reason = %error.reason, retryable = error.is_retryable(), "notification failed");
        // What cannot succeed is parked with its reason rather than retried until SQS gives up.
        let parked = match (&dead_letters, error.is_retryable()) {
            (Some(dead_letters), false) => dead_letters.park(&record, &error.reason).await.is_ok(),
            _ => false,
        };
        if !parked {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = record.message_id.clone().unwrap_or_default();
            response.batch_item_failures.push(failure);
        }
    }
    response
}
