//! Gmail: the REST client against a local mock of the Gmail API (`reanimate_llm::mock_http`, a
//! test double) with paging, 401 and 429; and the access token's path from the user's answer to
//! the secret store, never into the assistant's state, the inbox or a message.

use base64::Engine as _;
use reanimate_core::memory::{
    Hazards, MemoryInbox, MemoryQueue, MemoryStore, MemoryTimers, VirtualClock,
};
use reanimate_core::ports::Inbox;
use reanimate_core::secrets::{MemorySecrets, SecretStore};
use reanimate_core::sim::block_on;
use reanimate_core::{Envelope, InstanceId, MessageId, Registry, Runtime, client};
use reanimate_email::atoms::EmailAssistant;
use reanimate_email::gmail::GmailSource;
use reanimate_email::mail::{FetchPage, GetEmails, MailSource, MailboxRef};
use reanimate_llm::Limits;
use reanimate_llm::mock_http::{Mock, Reply, reply};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn ok<T>(r: reanimate_core::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

const TOKEN: &str = "ya29.a0AfB_test-access-token";

fn message(id: &str, from: &str, subject: &str, millis: u64, text: &str) -> Reply {
    let data = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    reply(
        200,
        json!({
            "id": id, "threadId": id, "labelIds": ["INBOX"], "snippet": "snippet", "internalDate": millis.to_string(),
            "payload": {
                "mimeType": "multipart/alternative",
                "headers": [{"name": "From", "value": from}, {"name": "Subject", "value": subject}],
                "parts": [
                    {"mimeType": "text/plain", "body": {"size": text.len(), "data": data}},
                    {"mimeType": "text/html", "body": {"size": 3, "data": "PGI-"}}
                ]
            }
        }),
    )
}

fn limits() -> Limits {
    Limits {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        concurrency: 2,
        timeout: Duration::from_secs(5),
    }
}

async fn source(url: &str) -> (GmailSource, MailboxRef) {
    let secrets = Arc::new(MemorySecrets::default());
    let reference = secrets
        .put("reanimate/test/token", TOKEN)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let gmail = GmailSource::new(url.trim_end_matches("/v1"), secrets, limits())
        .unwrap_or_else(|e| panic!("{e}"));
    let mailbox = MailboxRef::Gmail {
        access_token: reference,
        query: Some("label:inbox".into()),
    };
    (gmail, mailbox)
}

#[tokio::test]
async fn pages_through_messages_list_and_reads_each_message() {
    let (mock, url) = Mock::start(vec![
        reply(200, json!({"messages": [{"id": "m1", "threadId": "m1"}, {"id": "m2", "threadId": "m2"}], "nextPageToken": "page-2", "resultSizeEstimate": 3})),
        message("m1", "Dana Whitfield <Dana@Acme.example>", "Board deck", 1_767_605_400_000, "Hi Sam,\n\nI need the deck by 3pm."),
        message("m2", "tom@acme.example", "Lunch", 1_767_605_500_000, "Ramen?"),
        reply(200, json!({"messages": [{"id": "m3", "threadId": "m3"}], "resultSizeEstimate": 3})),
        message("m3", "Jordan <jordan@globex.example>", "Invoice", 1_767_605_600_000, "Invoice question."),
    ])
    .await;
    let (gmail, mailbox) = source(&url).await;
    let since = reanimate_core::Timestamp::from_millis(1_767_600_000_000);
    let first = gmail
        .page(&FetchPage {
            mailbox: mailbox.clone(),
            cursor: None,
            limit: 2,
            since: Some(since),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.next.as_deref(), Some("page-2"));
    assert!(!first.oldest_first, "Gmail lists newest first");
    assert_eq!(first.emails.len(), 2);
    assert_eq!(first.emails[0].from, "dana@acme.example");
    assert_eq!(first.emails[0].from_name, "Dana Whitfield");
    assert_eq!(first.emails[0].body, "Hi Sam,\n\nI need the deck by 3pm.");
    assert_eq!(first.emails[0].date.to_string(), "2026-01-05T09:30:00.000Z");
    let second = gmail
        .page(&FetchPage {
            mailbox,
            cursor: first.next.clone(),
            limit: 2,
            since: None,
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.next, None);
    assert_eq!(second.emails[0].subject, "Invoice");

    let seen = mock.seen();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/gmail/v1/users/me/messages?maxResults=2&q=label%3Ainbox%20after%3A1767600000",
            "/gmail/v1/users/me/messages/m1?format=full",
            "/gmail/v1/users/me/messages/m2?format=full",
            "/gmail/v1/users/me/messages?maxResults=2&q=label%3Ainbox&pageToken=page-2",
            "/gmail/v1/users/me/messages/m3?format=full",
        ]
    );
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some(&format!("Bearer {TOKEN}")[..]))
    );
}

#[tokio::test]
async fn a_refused_token_is_terminal_and_throttling_is_retried() {
    let (mock, url) = Mock::start(vec![reply(
        401,
        json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}),
    )])
    .await;
    let (gmail, mailbox) = source(&url).await;
    let error = gmail
        .get(&GetEmails {
            mailbox: mailbox.clone(),
            ids: vec!["m1".into()],
        })
        .await
        .unwrap_err();
    assert!(!error.is_retryable());
    assert!(
        error.reason.contains("authorise again") && error.reason.contains("invalid authentication"),
        "{error}"
    );
    assert_eq!(mock.seen().len(), 1, "a 401 is not retried");
    assert!(!error.reason.contains(TOKEN));

    let mut throttled = reply(
        429,
        json!({"error": {"code": 429, "message": "Too many concurrent requests for user.", "status": "RESOURCE_EXHAUSTED"}}),
    );
    throttled.headers.push(("retry-after".into(), "0".into()));
    let (mock, url) = Mock::start(vec![
        throttled,
        reply(
            503,
            json!({"error": {"code": 503, "message": "The service is currently unavailable."}}),
        ),
        message("m1", "a@b.example", "S", 1_767_605_400_000, "Body"),
    ])
    .await;
    let (gmail, mailbox) = source(&url).await;
    let emails = gmail
        .get(&GetEmails {
            mailbox,
            ids: vec!["m1".into()],
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(emails[0].body, "Body");
    assert_eq!(mock.seen().len(), 3);
}

#[test]
fn the_access_token_goes_to_the_secret_store_never_to_the_state_the_inbox_or_a_message() {
    let clock = VirtualClock::default();
    let queue = MemoryQueue::new(clock.clone(), Hazards::default());
    let store = MemoryStore::default();
    let inbox = MemoryInbox::default();
    let runtime = Runtime::new(
        Registry::new().with(EmailAssistant),
        store.clone(),
        queue.clone(),
        MemoryTimers::default(),
        inbox.clone(),
        clock.clone(),
    );
    let assistant = ok(InstanceId::new("assistant-gmail"));
    ok(block_on(runtime.handle(Envelope::start(
        ok(MessageId::new("hire")),
        assistant.clone(),
        "email-assistant",
        json!({"user": "sam"}),
    ))));
    let auth = block_on(inbox.list_open())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .find(|e| e.request.kind == "auth")
        .unwrap_or_else(|| panic!("no auth question"));
    let answer =
        json!({"mailbox": {"kind": "gmail", "access_token": TOKEN, "query": "label:inbox"}});

    // Without a secret store the answer is refused, so the token cannot leak by accident.
    let refused = block_on(client::answer(
        &inbox,
        &queue,
        &clock,
        &auth.request.id,
        answer.clone(),
    ));
    assert!(refused.is_err_and(|e| e.reason.contains("asks for a secret")));

    let secrets = MemorySecrets::default();
    ok(block_on(client::answer_with_secrets(
        &inbox,
        &queue,
        &clock,
        Some(&secrets),
        &auth.request.id,
        answer,
    )));
    assert_eq!(secrets.values(), [TOKEN]);
    // Deliver everything queued (the answer) to the assistant.
    let mut sent = Vec::new();
    while let Some(delivery) = queue.next_visible_at().and_then(|at| queue.receive(at, 0)) {
        sent.push(delivery.envelope.to_json());
        let _ = block_on(runtime.handle(delivery.envelope));
    }
    let record = store
        .get(&assistant)
        .unwrap_or_else(|| panic!("no assistant"));
    let state: Value = serde_json::from_str(&record.state).unwrap_or(Value::Null);
    assert_eq!(state["mailbox"]["kind"], "gmail");
    assert!(
        state["mailbox"]["access_token"]
            .as_str()
            .is_some_and(|r| r.starts_with("memory:reanimate/"))
    );
    let everywhere = format!(
        "{} {:?} {}",
        serde_json::to_string(&record).unwrap_or_default(),
        block_on(inbox.get(&auth.request.id)),
        sent.join(" ")
    );
    assert!(
        !everywhere.contains(TOKEN),
        "the token leaked: {everywhere}"
    );
}
