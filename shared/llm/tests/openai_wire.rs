//! `OpenAiCompatible` against a local mock server that speaks the chat-completions wire format:
//! the request it sends, the answers it accepts, and what it does with 429, 5xx and 4xx. The mock
//! is `reanimate_llm::mock_http`, a test double.

use reanimate_core::playbook::{ChatMessage, Model, ModelRequest, Role, Tier};
use reanimate_llm::mock_http::{Mock, completion, reply};
use reanimate_llm::{Limits, OpenAiCompatible};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn fast() -> Limits {
    Limits {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(50),
        concurrency: 2,
        timeout: Duration::from_secs(5),
    }
}

fn request() -> ModelRequest {
    ModelRequest {
        task: "decide".into(),
        tier: Tier::Standard,
        system: "system rules".into(),
        messages: vec![
            ChatMessage {
                role: Role::User,
                content: "choose".into(),
            },
            ChatMessage {
                role: Role::Assistant,
                content: "{\"step\":\"x\"}".into(),
            },
            ChatMessage {
                role: Role::User,
                content: "refused: x is not declared".into(),
            },
        ],
        output_schema: json!({"type": "object"}),
        facts: Value::Null,
        data: Vec::new(),
        hint: Value::Null,
    }
}

#[tokio::test]
async fn sends_the_chat_completions_request_and_returns_the_message_content() {
    let (mock, url) = Mock::start(vec![completion(
        r#"{"step":"wait","args":{},"why":"idle"}"#,
    )])
    .await;
    let model = OpenAiCompatible::new(&url, "test-model", Some("sk-test".into()), fast())
        .unwrap_or_else(|e| panic!("{e}"));
    let answer = model
        .complete(&request())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer, r#"{"step":"wait","args":{},"why":"idle"}"#);
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer sk-test"));
    let body = &seen[0].body;
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["temperature"], 0);
    assert_eq!(body["response_format"]["type"], "json_object");
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["role"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(body["messages"][0]["content"], "system rules");
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_with_backoff() {
    let mut throttled = reply(
        429,
        json!({"error": {"message": "Rate limit reached", "type": "requests"}}),
    );
    throttled
        .headers
        .push(("retry-after".into(), "0.01".into()));
    let (mock, url) = Mock::start(vec![
        throttled,
        reply(503, json!({"error": {"message": "overloaded"}})),
        completion("{\"ok\": 1}"),
    ])
    .await;
    let model = OpenAiCompatible::new(&url, "m", None, fast()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        model.complete(&request()).await.ok().as_deref(),
        Some("{\"ok\": 1}")
    );
    let seen = mock.seen();
    assert_eq!(seen.len(), 3);
    assert!(
        seen[0].authorization.is_none(),
        "no key configured, no header"
    );
}

#[tokio::test]
async fn a_persistent_outage_is_retryable_and_a_client_error_is_terminal_with_the_api_message() {
    let (_mock, url) = Mock::start(vec![
        reply(500, json!({"error": {"message": "boom"}})),
        reply(502, json!({})),
        reply(500, json!({"error": {"message": "still down"}})),
    ])
    .await;
    let model = OpenAiCompatible::new(&url, "m", None, fast()).unwrap_or_else(|e| panic!("{e}"));
    let error = model.complete(&request()).await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert!(
        error.reason.contains("gave up after 3 attempts") && error.reason.contains("still down"),
        "{error}"
    );

    let (mock, url) = Mock::start(vec![reply(
        401,
        json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}),
    )])
    .await;
    let model = OpenAiCompatible::new(&url, "m", Some("bad".into()), fast())
        .unwrap_or_else(|e| panic!("{e}"));
    let error = model.complete(&request()).await.unwrap_err();
    assert!(!error.is_retryable());
    assert!(
        error.reason.contains("401") && error.reason.contains("Incorrect API key"),
        "{error}"
    );
    assert_eq!(mock.seen().len(), 1, "a 401 is not retried");

    let (_mock, url) = Mock::start(vec![reply(200, json!({"choices": []}))]).await;
    let model = OpenAiCompatible::new(&url, "m", None, fast()).unwrap_or_else(|e| panic!("{e}"));
    let error = model.complete(&request()).await.unwrap_err();
    assert!(
        !error.is_retryable() && error.reason.contains("no choices[0].message.content"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_requests_in_flight_than_the_concurrency_limit() {
    let (mock, url) = Mock::start(Vec::new()).await;
    *mock.hold.lock().unwrap_or_else(|p| p.into_inner()) = Duration::from_millis(30);
    let model =
        Arc::new(OpenAiCompatible::new(&url, "m", None, fast()).unwrap_or_else(|e| panic!("{e}")));
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let model = Arc::clone(&model);
            tokio::spawn(async move { model.complete(&request()).await })
        })
        .collect();
    for call in calls {
        assert!(call.await.is_ok_and(|r| r.is_ok()));
    }
    assert_eq!(mock.seen().len(), 6);
    assert_eq!(mock.max_in_flight.load(Ordering::SeqCst), 2);
}
