//! `BedrockConverse` against a local mock that speaks the Converse REST/JSON wire format
//! (`reanimate_llm::mock_http`, a test double): the request the SDK signs and sends, the answer it
//! reads, and throttling, server and validation errors.

use aws_sdk_bedrockruntime::config::Credentials;
use reanimate_core::playbook::{ChatMessage, Model, ModelRequest, Role, Tier};
use reanimate_llm::Limits;
use reanimate_llm::bedrock::BedrockConverse;
use reanimate_llm::mock_http::{Mock, Reply, reply};
use serde_json::{Value, json};
use std::time::Duration;

fn converse(text: &str) -> Reply {
    reply(
        200,
        json!({
            "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 12, "outputTokens": 6, "totalTokens": 18},
            "metrics": {"latencyMs": 42}
        }),
    )
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    let mut r = reply(status, json!({"message": message}));
    r.headers.push((
        "x-amzn-errortype".into(),
        format!("{code}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
    ));
    r
}

async fn model(base: &str) -> BedrockConverse {
    let endpoint = base.trim_end_matches("/v1");
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .endpoint_url(endpoint)
        .load()
        .await;
    let limits = Limits {
        max_attempts: 3,
        base_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        concurrency: 2,
        timeout: Duration::from_secs(5),
    };
    BedrockConverse::new(&config, "anthropic.claude-3-5-haiku-20241022-v1:0", limits)
}

fn request() -> ModelRequest {
    ModelRequest {
        task: "decide".into(),
        tier: Tier::Strong,
        system: "system rules".into(),
        messages: vec![ChatMessage {
            role: Role::User,
            content: "choose a step".into(),
        }],
        output_schema: json!({"type": "object"}),
        facts: Value::Null,
        data: Vec::new(),
        hint: Value::Null,
    }
}

#[tokio::test]
async fn sends_a_signed_converse_request_and_reads_the_message_text() {
    let (mock, url) =
        Mock::start(vec![converse(r#"{"step":"wait","args":{},"why":"idle"}"#)]).await;
    let model = model(&url).await;
    let answer = model
        .complete(&request())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer, r#"{"step":"wait","args":{},"why":"idle"}"#);
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].path,
        "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    );
    let auth = seen[0].authorization.clone().unwrap_or_default();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDTEST/"),
        "{auth}"
    );
    assert!(auth.contains("/us-east-1/bedrock/aws4_request"), "{auth}");
    let body = &seen[0].body;
    assert_eq!(body["system"], json!([{"text": "system rules"}]));
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"text": "choose a step"}]}])
    );
    assert_eq!(body["inferenceConfig"]["temperature"], json!(0.0));
}

#[tokio::test]
async fn throttling_is_retried_and_validation_errors_are_terminal() {
    let (mock, url) = Mock::start(vec![
        error(
            429,
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        ),
        error(503, "ServiceUnavailableException", "Service unavailable"),
        converse("{}"),
    ])
    .await;
    let model = model(&url).await;
    assert_eq!(model.complete(&request()).await.ok().as_deref(), Some("{}"));
    assert_eq!(mock.seen().len(), 3);

    let (_mock, url) = Mock::start(vec![
        error(429, "ThrottlingException", "slow down"),
        error(429, "ThrottlingException", "slow down"),
        error(429, "ThrottlingException", "still too many"),
    ])
    .await;
    let error_out = model_err(&url).await;
    assert!(error_out.is_retryable(), "{error_out}");
    assert!(
        error_out
            .reason
            .contains("ThrottlingException: still too many"),
        "{error_out}"
    );

    let (mock, url) = Mock::start(vec![error(
        400,
        "ValidationException",
        "The provided model identifier is invalid.",
    )])
    .await;
    let error_out = model_err(&url).await;
    assert!(!error_out.is_retryable());
    assert!(
        error_out
            .reason
            .contains("ValidationException: The provided model identifier is invalid."),
        "{error_out}"
    );
    assert_eq!(mock.seen().len(), 1);
}

async fn model_err(url: &str) -> reanimate_core::Error {
    model(url).await.complete(&request()).await.unwrap_err()
}
