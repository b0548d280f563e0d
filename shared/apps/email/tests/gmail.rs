//! Gmail: the REST client against a local mock of the Gmail API and a mock OAuth token endpoint
//! (`reanimate_llm::mock_http`, a test double): headers-only listings, raw reads, access tokens
//! minted from the refresh token, cached and refreshed, a revoked refresh token, quota errors;
//! the consent (authorization code with PKCE on a loopback redirect) played by a test browser;
//! and the refresh token's path from the user's answer to the secret store, never into the
//! assistant's state, the inbox or a message.

use base64::Engine as _;
use oauth2::{PkceCodeChallenge, PkceCodeVerifier};
use reanimate_core::memory::{
    Hazards, MemoryInbox, MemoryQueue, MemoryStore, MemoryTimers, VirtualClock,
};
use reanimate_core::ports::Inbox;
use reanimate_core::secrets::{MemorySecrets, SecretStore};
use reanimate_core::sim::block_on;
use reanimate_core::{Envelope, InstanceId, MessageId, Registry, Runtime, client};
use reanimate_email::atoms::EmailAssistant;
use reanimate_email::gmail::{GMAIL_DISCONNECTED, GmailSource};
use reanimate_email::mail::{FetchPage, GetEmails, MailSource, MailboxRef};
use reanimate_email::oauth::{Consent, GMAIL_READONLY_SCOPE, OAuthClient};
use reanimate_llm::Limits;
use reanimate_llm::mock_http::{Mock, Reply, Seen, reply};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn ok<T>(r: reanimate_core::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

const REFRESH_TOKEN: &str = "1//0g-test-refresh-token";
const CLIENT_ID: &str = "123-test.apps.googleusercontent.com";
const CLIENT_SECRET: &str = "GOCSPX-test-client-secret";

/// A token endpoint's answer with `access_token`, valid for `expires_in` seconds.
fn access(access_token: &str, expires_in: u64) -> Reply {
    reply(
        200,
        json!({"access_token": access_token, "expires_in": expires_in, "token_type": "Bearer", "scope": GMAIL_READONLY_SCOPE}),
    )
}

/// `users.messages.get` with `format=metadata`: headers only.
fn metadata(id: &str, from: &str, subject: &str, millis: u64) -> Reply {
    reply(
        200,
        json!({
            "id": id, "threadId": id, "labelIds": ["INBOX"], "snippet": "snippet",
            "internalDate": millis.to_string(), "sizeEstimate": 2048,
            "payload": {"mimeType": "multipart/alternative", "headers": [
                {"name": "From", "value": from}, {"name": "Subject", "value": subject}
            ]}
        }),
    )
}

/// `users.messages.get` with `format=raw`: the RFC 822 message, base64url.
fn raw(id: &str, from: &str, subject: &str, millis: u64, text: &str) -> Reply {
    let rfc822 = format!(
        "From: {from}\r\nSubject: {subject}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
    );
    reply(
        200,
        json!({
            "id": id, "threadId": id, "internalDate": millis.to_string(), "sizeEstimate": rfc822.len(),
            "raw": base64::engine::general_purpose::URL_SAFE.encode(rfc822)
        }),
    )
}

fn gmail_error(status: u16, message: &str, reason: &str) -> Reply {
    reply(
        status,
        json!({"error": {"code": status, "message": message, "errors": [{"message": message, "domain": "usageLimits", "reason": reason}]}}),
    )
}

fn limits() -> Limits {
    Limits {
        max_attempts: 4,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        concurrency: 2,
        timeout: Duration::from_secs(5),
    }
}

fn oauth_client(token_url: &str) -> OAuthClient {
    OAuthClient {
        auth_url: "https://accounts.example/authorize".into(),
        token_url: format!("{token_url}/token"),
        ..OAuthClient::google(CLIENT_ID, Some(CLIENT_SECRET.into()))
    }
}

/// A Gmail source on the mock Gmail at `gmail_url` and the mock token endpoint at `token_url`,
/// and a mailbox whose refresh token is in its secret store.
async fn source(gmail_url: &str, token_url: &str) -> (GmailSource, MailboxRef) {
    let secrets = Arc::new(MemorySecrets::default());
    let reference = ok(secrets
        .put("reanimate/test/mailbox/refresh_token", REFRESH_TOKEN)
        .await);
    let gmail = ok(GmailSource::new(
        gmail_url.trim_end_matches("/v1"),
        oauth_client(token_url),
        secrets,
        limits(),
    ));
    let mailbox = MailboxRef::Gmail {
        refresh_token: reference,
        query: Some("label:inbox".into()),
    };
    (gmail, mailbox)
}

fn form(seen: &Seen) -> HashMap<String, String> {
    oauth2::url::form_urlencoded::parse(seen.text.as_bytes())
        .into_owned()
        .collect()
}

fn bearers(seen: &[Seen]) -> Vec<&str> {
    seen.iter()
        .map(|s| s.authorization.as_deref().unwrap_or(""))
        .collect()
}

fn get_one(mailbox: &MailboxRef) -> GetEmails {
    GetEmails {
        mailbox: mailbox.clone(),
        ids: vec!["m1".into()],
    }
}

#[tokio::test]
async fn listing_reads_headers_only_reading_downloads_raw_and_one_access_token_serves_every_call() {
    let (gmail_mock, gmail_url) = Mock::start(vec![
        reply(200, json!({"messages": [{"id": "m1", "threadId": "m1"}, {"id": "m2", "threadId": "m2"}], "nextPageToken": "page-2", "resultSizeEstimate": 3})),
        metadata("m1", "Dana Whitfield <Dana@Acme.example>", "Board deck", 1_767_605_400_000),
        metadata("m2", "tom@acme.example", "Lunch", 1_767_605_500_000),
        reply(200, json!({"messages": [{"id": "m3", "threadId": "m3"}], "resultSizeEstimate": 3})),
        metadata("m3", "Jordan <jordan@globex.example>", "Invoice", 1_767_605_600_000),
        raw("m1", "Dana Whitfield <Dana@Acme.example>", "Board deck", 1_767_605_400_000, "I need the deck by 3pm."),
    ])
    .await;
    let (token_mock, token_url) = Mock::start(vec![access("ya29.first", 3599)]).await;
    let (gmail, mailbox) = source(&gmail_url, &token_url).await;
    let since = reanimate_core::Timestamp::from_millis(1_767_600_000_000);
    let first = ok(gmail
        .page(&FetchPage {
            mailbox: mailbox.clone(),
            cursor: None,
            limit: 2,
            since: Some(since),
        })
        .await);
    assert_eq!(first.next.as_deref(), Some("page-2"));
    assert!(!first.oldest_first, "Gmail lists newest first");
    assert_eq!(first.emails.len(), 2);
    assert_eq!(first.emails[0].from, "dana@acme.example");
    assert_eq!(first.emails[0].subject, "Board deck");
    assert_eq!(first.emails[0].date.to_string(), "2026-01-05T09:30:00.000Z");
    let second = ok(gmail
        .page(&FetchPage {
            mailbox: mailbox.clone(),
            cursor: first.next.clone(),
            limit: 2,
            since: None,
        })
        .await);
    assert_eq!(second.next, None);
    assert_eq!(second.emails[0].subject, "Invoice");
    let read = ok(gmail.get(&get_one(&mailbox)).await);
    assert_eq!(read[0].from_name, "Dana Whitfield");
    assert_eq!(read[0].body, "I need the deck by 3pm.");

    let seen = gmail_mock.seen();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    let metadata_of = |id: &str| {
        format!(
            "/gmail/v1/users/me/messages/{id}?format=metadata&metadataHeaders=From&metadataHeaders=Subject&metadataHeaders=Date"
        )
    };
    assert_eq!(
        paths,
        [
            "/gmail/v1/users/me/messages?maxResults=2&q=label%3Ainbox%20after%3A1767600000",
            &metadata_of("m1"),
            &metadata_of("m2"),
            "/gmail/v1/users/me/messages?maxResults=2&q=label%3Ainbox&pageToken=page-2",
            &metadata_of("m3"),
            "/gmail/v1/users/me/messages/m1?format=raw",
        ]
    );
    assert!(bearers(&seen).iter().all(|b| *b == "Bearer ya29.first"));

    let minted = token_mock.seen();
    assert_eq!(minted.len(), 1, "one access token for every call");
    assert_eq!(minted[0].path, "/v1/token");
    let form = form(&minted[0]);
    assert_eq!(form["grant_type"], "refresh_token");
    assert_eq!(form["refresh_token"], REFRESH_TOKEN);
    assert_eq!(form["client_id"], CLIENT_ID);
    assert_eq!(form["client_secret"], CLIENT_SECRET);
}

#[tokio::test]
async fn an_access_token_about_to_expire_is_refreshed_once_before_the_next_call() {
    let (gmail_mock, gmail_url) = Mock::start(vec![
        raw("m1", "a@b.example", "S", 1_767_605_400_000, "one"),
        raw("m1", "a@b.example", "S", 1_767_605_400_000, "two"),
    ])
    .await;
    // Thirty seconds is within the renewal margin: stale as soon as it is cached.
    let (token_mock, token_url) =
        Mock::start(vec![access("ya29.short-1", 30), access("ya29.short-2", 30)]).await;
    let (gmail, mailbox) = source(&gmail_url, &token_url).await;
    assert_eq!(ok(gmail.get(&get_one(&mailbox)).await)[0].body, "one");
    assert_eq!(ok(gmail.get(&get_one(&mailbox)).await)[0].body, "two");
    assert_eq!(token_mock.seen().len(), 2, "one refresh per expired token");
    assert_eq!(
        bearers(&gmail_mock.seen()),
        ["Bearer ya29.short-1", "Bearer ya29.short-2"]
    );
}

#[tokio::test]
async fn a_401_refreshes_the_access_token_exactly_once() {
    let unauthenticated = || {
        reply(
            401,
            json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}}),
        )
    };
    let (gmail_mock, gmail_url) = Mock::start(vec![
        unauthenticated(),
        raw("m1", "a@b.example", "S", 1_767_605_400_000, "Body"),
    ])
    .await;
    let (token_mock, token_url) =
        Mock::start(vec![access("ya29.revoked", 3599), access("ya29.new", 3599)]).await;
    let (gmail, mailbox) = source(&gmail_url, &token_url).await;
    assert_eq!(ok(gmail.get(&get_one(&mailbox)).await)[0].body, "Body");
    assert_eq!(token_mock.seen().len(), 2);
    assert_eq!(
        bearers(&gmail_mock.seen()),
        ["Bearer ya29.revoked", "Bearer ya29.new"]
    );

    // A fresh token refused as well: the user must connect again; no second refresh.
    let (gmail_mock, gmail_url) = Mock::start(vec![unauthenticated(), unauthenticated()]).await;
    let (token_mock, token_url) =
        Mock::start(vec![access("ya29.a", 3599), access("ya29.b", 3599)]).await;
    let (gmail, mailbox) = source(&gmail_url, &token_url).await;
    let error = gmail.get(&get_one(&mailbox)).await.unwrap_err();
    assert!(!error.is_retryable());
    assert!(error.reason.starts_with(GMAIL_DISCONNECTED), "{error}");
    assert_eq!(token_mock.seen().len(), 2);
    assert_eq!(gmail_mock.seen().len(), 2);
}

#[tokio::test]
async fn a_revoked_refresh_token_is_gmail_disconnected_not_retried() {
    let (gmail_mock, gmail_url) = Mock::start(Vec::new()).await;
    let (token_mock, token_url) = Mock::start(vec![reply(
        400,
        json!({"error": "invalid_grant", "error_description": "Token has been expired or revoked."}),
    )])
    .await;
    let (gmail, mailbox) = source(&gmail_url, &token_url).await;
    let error = gmail.get(&get_one(&mailbox)).await.unwrap_err();
    assert!(!error.is_retryable());
    assert!(error.reason.starts_with(GMAIL_DISCONNECTED), "{error}");
    assert!(error.reason.contains("expired or revoked"), "{error}");
    assert!(!error.reason.contains(REFRESH_TOKEN));
    assert_eq!(token_mock.seen().len(), 1, "invalid_grant is not retried");
    assert!(
        gmail_mock.seen().is_empty(),
        "Gmail is not called without a token"
    );
}

#[tokio::test]
async fn quota_errors_and_token_endpoint_outages_are_retried_other_403s_are_terminal() {
    let mut throttled = gmail_error(
        429,
        "Too many concurrent requests for user.",
        "rateLimitExceeded",
    );
    throttled.headers.push(("retry-after".into(), "0".into()));
    let (gmail_mock, gmail_url) = Mock::start(vec![
        throttled,
        gmail_error(403, "User-rate limit exceeded.", "userRateLimitExceeded"),
        gmail_error(403, "Rate Limit Exceeded", "rateLimitExceeded"),
        raw("m1", "a@b.example", "S", 1_767_605_400_000, "Body"),
    ])
    .await;
    let (token_mock, token_url) = Mock::start(vec![
        reply(503, json!({"error": "temporarily_unavailable"})),
        access("ya29.ok", 3599),
    ])
    .await;
    let (gmail, mailbox) = source(&gmail_url, &token_url).await;
    assert_eq!(ok(gmail.get(&get_one(&mailbox)).await)[0].body, "Body");
    assert_eq!(gmail_mock.seen().len(), 4);
    assert_eq!(token_mock.seen().len(), 2);

    let (gmail_mock, gmail_url) = Mock::start(vec![gmail_error(
        403,
        "Gmail API has not been used in project 123 before or it is disabled.",
        "accessNotConfigured",
    )])
    .await;
    let (_token_mock, token_url) = Mock::start(vec![access("ya29.ok", 3599)]).await;
    let (gmail, mailbox) = source(&gmail_url, &token_url).await;
    let error = gmail.get(&get_one(&mailbox)).await.unwrap_err();
    assert!(!error.is_retryable());
    assert!(
        error.reason.contains("HTTP 403") && error.reason.contains("disabled"),
        "{error}"
    );
    assert!(
        !error.reason.starts_with(GMAIL_DISCONNECTED),
        "reconnecting would not help"
    );
    assert_eq!(gmail_mock.seen().len(), 1);
}

/// The consent URL's query parameters.
fn consent_params(consent: &Consent) -> HashMap<String, String> {
    let url = oauth2::url::Url::parse(consent.url()).unwrap_or_else(|e| panic!("{e}"));
    url.query_pairs().into_owned().collect()
}

/// Plays the browser: follows the authorization server's redirect to the loopback listener at
/// `redirect_uri` with `query`; returns the status and page it was answered with.
async fn browser_returns(redirect_uri: &str, query: &str) -> (u16, String) {
    let answer = reqwest::get(format!("{redirect_uri}/?{query}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap_or_default())
}

#[tokio::test]
async fn connecting_gmail_exchanges_the_code_with_its_pkce_verifier_for_a_refresh_token() {
    let (token_mock, token_url) = Mock::start(vec![reply(
        200,
        json!({"access_token": "ya29.consented", "expires_in": 3599, "refresh_token": REFRESH_TOKEN, "scope": GMAIL_READONLY_SCOPE, "token_type": "Bearer"}),
    )])
    .await;
    let consent = ok(oauth_client(&token_url).consent().await);
    let params = consent_params(&consent);
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["redirect_uri"], consent.redirect_uri());
    let (challenge, state) = (params["code_challenge"].clone(), params["state"].clone());
    let redirect_uri = consent.redirect_uri().to_string();
    let browser = async {
        // A browser asks for a favicon too: answered and ignored.
        let favicon = reqwest::get(format!("{redirect_uri}/favicon.ico")).await;
        assert_eq!(favicon.map(|r| r.status().as_u16()).ok(), Some(404));
        let query = format!("state={state}&code=4%2F0AX-test-code&scope={GMAIL_READONLY_SCOPE}");
        browser_returns(&redirect_uri, &query).await
    };
    let (tokens, (status, page)) = tokio::join!(consent.finish(), browser);
    let tokens = ok(tokens);
    assert_eq!(tokens.refresh_token(), Some(REFRESH_TOKEN));
    assert_eq!(status, 200);
    assert!(page.contains("Gmail is connected"), "{page}");

    let seen = token_mock.seen();
    assert_eq!(seen.len(), 1);
    let form = form(&seen[0]);
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code"], "4/0AX-test-code");
    assert_eq!(form["redirect_uri"], redirect_uri);
    assert_eq!(form["client_id"], CLIENT_ID);
    let verifier = PkceCodeVerifier::new(form["code_verifier"].clone());
    assert_eq!(
        PkceCodeChallenge::from_code_verifier_sha256(&verifier).as_str(),
        challenge,
        "the verifier sent is the one the challenge was made from"
    );
}

/// Runs a consent against `token_url` whose browser comes back with `query` (given the
/// consent's real state); returns the outcome and the browser's status and page.
async fn consent_answered(
    token_url: &str,
    query: impl FnOnce(&str) -> String,
) -> (
    reanimate_core::Result<reanimate_email::oauth::Tokens>,
    u16,
    String,
) {
    let consent = ok(oauth_client(token_url).consent().await);
    let state = consent_params(&consent)["state"].clone();
    let redirect_uri = consent.redirect_uri().to_string();
    let query = query(&state);
    let (outcome, (status, page)) =
        tokio::join!(consent.finish(), browser_returns(&redirect_uri, &query));
    (outcome, status, page)
}

#[tokio::test]
async fn a_consent_with_a_wrong_state_a_denial_or_a_refused_code_yields_no_token() {
    let (token_mock, token_url) = Mock::start(vec![reply(
        400,
        json!({"error": "invalid_grant", "error_description": "Malformed auth code."}),
    )])
    .await;

    let (outcome, status, page) =
        consent_answered(&token_url, |_| "state=forged&code=4%2Fstolen".into()).await;
    let error = outcome.unwrap_err();
    assert!(error.reason.contains("state does not match"), "{error}");
    assert_eq!(status, 400);
    assert!(page.contains("not connected"), "{page}");

    let (outcome, status, _) = consent_answered(&token_url, |state| {
        format!("error=access_denied&state={state}")
    })
    .await;
    let error = outcome.unwrap_err();
    assert!(error.reason.contains("denied"), "{error}");
    assert_eq!(status, 400);
    assert!(token_mock.seen().is_empty(), "no code was exchanged");

    let (outcome, status, _) =
        consent_answered(&token_url, |state| format!("code=4%2Fbad&state={state}")).await;
    let error = outcome.unwrap_err();
    assert!(!error.is_retryable());
    assert!(
        error.reason.contains("refused the authorization code")
            && error.reason.contains("Malformed auth code"),
        "{error}"
    );
    assert_eq!(
        status, 200,
        "the browser brought a code; the exchange failed after"
    );
    assert_eq!(token_mock.seen().len(), 1);
}

#[tokio::test]
async fn a_consent_without_a_refresh_token_or_without_the_gmail_scope_is_refused() {
    let (_token_mock, token_url) = Mock::start(vec![
        access("ya29.no-refresh", 3599),
        reply(
            200,
            json!({"access_token": "ya29.x", "expires_in": 3599, "refresh_token": REFRESH_TOKEN, "scope": "openid", "token_type": "Bearer"}),
        ),
    ])
    .await;
    let (outcome, _, _) =
        consent_answered(&token_url, |state| format!("code=4%2Fa&state={state}")).await;
    assert!(outcome.unwrap_err().reason.contains("no refresh token"));
    let (outcome, _, _) =
        consent_answered(&token_url, |state| format!("code=4%2Fb&state={state}")).await;
    assert!(outcome.unwrap_err().reason.contains(GMAIL_READONLY_SCOPE));
}

#[test]
fn the_refresh_token_goes_to_the_secret_store_never_to_the_state_the_inbox_or_a_message() {
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
    let answer = json!({"mailbox": {"kind": "gmail", "refresh_token": REFRESH_TOKEN, "query": "label:inbox"}});

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
    assert_eq!(secrets.values(), [REFRESH_TOKEN]);
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
        state["mailbox"]["refresh_token"]
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
        !everywhere.contains(REFRESH_TOKEN),
        "the token leaked: {everywhere}"
    );
}

/// The email activities with a Gmail source on `secrets` (its network is never reached here).
fn gmail_activities(secrets: Arc<MemorySecrets>) -> reanimate_core::Activities {
    let gmail = ok(GmailSource::new(
        "http://127.0.0.1:9",
        oauth_client("http://127.0.0.1:9/token"),
        secrets,
        limits(),
    ));
    let offline = Arc::new(reanimate_email::offline::OfflineHeuristicModel);
    reanimate_email::activities(
        offline.clone(),
        offline,
        Arc::new(reanimate_email::mail::Mailboxes {
            secret_namespace: String::new(),
            maildir: None,
            gmail: Some(gmail),
        }),
        Arc::new(reanimate_email::digest::FolderDigests::new(
            std::env::temp_dir().join("reanimate-gmail-digests"),
        )),
        None,
    )
}

/// Delivers every queued message to `runtime` until none is left; returns what was sent.
fn drain(
    runtime: &Runtime<MemoryStore, MemoryQueue, MemoryTimers, MemoryInbox, VirtualClock>,
    queue: &MemoryQueue,
) -> Vec<String> {
    let mut sent = Vec::new();
    while let Some(delivery) = queue.next_visible_at().and_then(|at| queue.receive(at, 0)) {
        sent.push(delivery.envelope.to_json());
        let _ = block_on(runtime.handle(delivery.envelope));
    }
    sent
}

#[test]
fn disconnecting_deletes_the_users_refresh_token_and_another_users_token_is_refused() {
    let clock = VirtualClock::default();
    let queue = MemoryQueue::new(clock.clone(), Hazards::default());
    let store = MemoryStore::default();
    let inbox = MemoryInbox::default();
    let timers = MemoryTimers::default();
    let secrets = Arc::new(MemorySecrets::default());
    let runtime = Runtime::new(
        reanimate_email::atoms::registry(),
        store.clone(),
        queue.clone(),
        timers.clone(),
        inbox.clone(),
        clock.clone(),
    )
    .with_activities(gmail_activities(Arc::clone(&secrets)));
    let assistant = ok(InstanceId::new("assistant-sam"));
    ok(block_on(client::start(
        &queue,
        ok(MessageId::new("hire")),
        assistant.clone(),
        "email-assistant",
        json!({"user": "sam"}),
    )));
    drain(&runtime, &queue);
    let auth = block_on(inbox.list_open())
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .find(|e| e.request.kind == "auth")
        .unwrap_or_else(|| panic!("no auth question"));
    ok(block_on(client::answer_with_secrets(
        &inbox,
        &queue,
        &clock,
        Some(secrets.as_ref()),
        &auth.request.id,
        json!({"mailbox": {"kind": "gmail", "refresh_token": REFRESH_TOKEN}}),
    )));
    drain(&runtime, &queue);
    let state: Value = serde_json::from_str(
        &store
            .get(&assistant)
            .unwrap_or_else(|| panic!("no assistant"))
            .state,
    )
    .unwrap_or(Value::Null);
    let reference = state["mailbox"]["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reference.starts_with("memory:reanimate/assistant-sam/"),
        "named after its user: {reference}"
    );

    // Someone else's instance naming sam's token is refused before any use of it.
    ok(block_on(client::start(
        &queue,
        ok(MessageId::new("intrude")),
        ok(InstanceId::new("intruder")),
        "fetch-emails",
        json!({"mailbox": {"kind": "gmail", "refresh_token": reference}, "batch_size": 5}),
    )));
    drain(&runtime, &queue);
    let intruder = store
        .get(&ok(InstanceId::new("intruder")))
        .unwrap_or_else(|| panic!("no intruder record"));
    assert_eq!(intruder.status, reanimate_core::Status::Failed);
    assert!(
        intruder
            .error
            .as_deref()
            .is_some_and(|e| e.contains("does not belong to this assistant's user (intruder)")),
        "{:?}",
        intruder.error
    );
    assert_eq!(secrets.values(), [REFRESH_TOKEN], "still there");

    // Sam disconnects: the token is deleted and the assistant ends.
    ok(block_on(client::signal(
        &queue,
        ok(MessageId::new("bye")),
        assistant.clone(),
        "email-assistant",
        reanimate_email::atoms::DISCONNECT,
        Value::Null,
    )));
    drain(&runtime, &queue);
    let record = store
        .get(&assistant)
        .unwrap_or_else(|| panic!("no assistant"));
    assert_eq!(
        record.status,
        reanimate_core::Status::Completed,
        "{:?}",
        record.error
    );
    assert!(secrets.values().is_empty(), "the refresh token is deleted");
}

#[tokio::test]
async fn a_message_deleted_after_it_was_listed_is_skipped_or_unreadable_never_a_failed_run() {
    let gone = || {
        reply(
            404,
            json!({"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}}),
        )
    };
    let (_gmail_mock, gmail_url) = Mock::start(vec![
        reply(200, json!({"messages": [{"id": "m1", "threadId": "m1"}, {"id": "m2", "threadId": "m2"}], "resultSizeEstimate": 2})),
        gone(),
        metadata("m2", "tom@acme.example", "Lunch", 1_767_605_500_000),
        gone(),
    ])
    .await;
    let (_token_mock, token_url) = Mock::start(vec![access("ya29.first", 3599)]).await;
    let (gmail, mailbox) = source(&gmail_url, &token_url).await;
    let page = ok(gmail
        .page(&FetchPage {
            mailbox: mailbox.clone(),
            cursor: None,
            limit: 10,
            since: None,
        })
        .await);
    let listed: Vec<&str> = page.emails.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(listed, ["m2"], "the deleted message is left out");
    let read = ok(gmail
        .get(&GetEmails {
            mailbox,
            ids: vec!["m2".into()],
        })
        .await);
    assert!(read[0].unreadable, "deleted before it was read");
}
