//! # reanimate-llm
//!
//! Language model providers for playbooks ([`reanimate_core::playbook::Model`]):
//! - [`OpenAiCompatible`]: any chat-completions endpoint (OpenAI, Ollama, vLLM, LM Studio);
//! - [`bedrock::BedrockConverse`]: Amazon Bedrock's Converse API (IAM credentials, no key);
//! - [`with_retries`] and [`Limits`]: the retry, backoff and concurrency policy every provider
//!   shares.
//!
//! Errors follow the runtime's taxonomy. Throttling (429) and server errors (5xx) are retried here
//! with exponential backoff (honouring `Retry-After`). Once the attempts are spent they are
//! *retryable*, so the message goes back to its queue and is tried again later. Anything else
//! (400, 401, 404, an unreadable body) is *terminal*.

pub mod bedrock;
#[cfg(feature = "test-support")]
pub mod mock_http;

use reanimate_core::playbook::{Model, ModelRequest, Role};
use reanimate_core::{BoxFuture, Error, Result};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// Retries, backoff and concurrency for one provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Requests per call, the first included.
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Requests in flight at once from this process.
    pub concurrency: usize,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            concurrency: 4,
            timeout: Duration::from_secs(60),
        }
    }
}

impl Limits {
    /// The wait before attempt `n + 1` (n ≥ 1): exponential, capped, with deterministic jitter of
    /// up to a quarter so that concurrent callers spread out.
    pub fn backoff(&self, n: u32, seed: u64) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << (n - 1).min(16))
            .min(self.max_delay);
        let jitter = (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) % 256;
        exp + exp / 4 * jitter as u32 / 256
    }
}

/// What one attempt came to.
#[derive(Debug)]
pub enum Attempt<T> {
    Done(T),
    /// Worth another try (throttled, 5xx, a network error), after `after` if the server said.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    Fail(Error),
}

/// Runs `attempt` under the provider's concurrency limit until it is done, fails, or the
/// attempts are spent (then a retryable error with the last reason).
pub async fn with_retries<T, F, Fut>(
    limits: &Limits,
    permits: &Semaphore,
    what: &str,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let mut last = String::new();
    for n in 1..=limits.max_attempts {
        let outcome = {
            let _permit = permits
                .acquire()
                .await
                .map_err(|_| Error::retryable("provider shut down"))?;
            attempt().await
        };
        match outcome {
            Attempt::Done(value) => return Ok(value),
            Attempt::Fail(error) => return Err(error),
            Attempt::Retry { reason, after } => {
                tracing::info!(what, attempt = n, %reason, "model request will be retried");
                last = reason;
                if n < limits.max_attempts {
                    let wait = after
                        .unwrap_or_else(|| limits.backoff(n, u64::from(n) ^ what.len() as u64))
                        .min(limits.max_delay);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    Err(Error::retryable(format!(
        "{what}: gave up after {} attempts: {last}",
        limits.max_attempts
    )))
}

/// A response that is neither throttled nor a server error.
#[derive(Debug)]
pub struct HttpReply {
    pub status: reqwest::StatusCode,
    pub json: Value,
    /// The body as text (for error messages when it is not the expected JSON).
    pub text: String,
}

impl HttpReply {
    /// The API's own error message (`{"error": {"message": ...}}`, as OpenAI and Google send),
    /// else the start of the body.
    pub fn error_message(&self) -> String {
        self.json["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| self.text.chars().take(200).collect())
    }
}

/// Sends one HTTP request for [`with_retries`]: a network error, 429 or 5xx is worth another try
/// (after `Retry-After` if the server sent one); any other response comes back as it is.
pub async fn send(request: reqwest::RequestBuilder) -> Attempt<HttpReply> {
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return Attempt::Retry {
                reason: format!("request failed: {}", e.without_url()),
                after: None,
            };
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(Duration::from_secs_f64);
    let text = match response.bytes().await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => {
            return Attempt::Retry {
                reason: format!("reading the response: {}", e.without_url()),
                after: None,
            };
        }
    };
    let reply = HttpReply {
        status,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    };
    if status.as_u16() == 429 || status.is_server_error() {
        return Attempt::Retry {
            reason: format!("HTTP {status}: {}", reply.error_message()),
            after: retry_after,
        };
    }
    Attempt::Done(reply)
}

/// A chat-completions endpoint speaking OpenAI's wire format.
#[derive(Clone, Debug)]
pub struct OpenAiCompatible {
    name: String,
    url: String,
    model: String,
    api_key: Option<String>,
    limits: Limits,
    http: reqwest::Client,
    permits: Arc<Semaphore>,
}

impl OpenAiCompatible {
    /// `base_url` is the API root, e.g. `https://api.openai.com/v1` or
    /// `http://localhost:11434/v1` (Ollama); requests go to `{base_url}/chat/completions`.
    pub fn new(
        base_url: &str,
        model: &str,
        api_key: Option<String>,
        limits: Limits,
    ) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(limits.timeout)
            .build()
            .map_err(|e| Error::terminal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            name: format!("openai-compatible:{model}"),
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            model: model.to_string(),
            api_key,
            limits,
            http,
            permits: Arc::new(Semaphore::new(limits.concurrency.max(1))),
        })
    }

    /// The request body for `request`.
    pub fn body(&self, request: &ModelRequest) -> Value {
        let mut messages = vec![json!({"role": "system", "content": request.system})];
        for m in &request.messages {
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            messages.push(json!({"role": role, "content": m.content}));
        }
        json!({
            "model": self.model,
            "messages": messages,
            "temperature": 0,
            "response_format": {"type": "json_object"},
        })
    }

    async fn attempt(&self, body: &Value) -> Attempt<String> {
        let mut call = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(key) = &self.api_key {
            call = call.bearer_auth(key);
        }
        let reply = match send(call).await {
            Attempt::Done(reply) => reply,
            Attempt::Retry { reason, after } => return Attempt::Retry { reason, after },
            Attempt::Fail(error) => return Attempt::Fail(error),
        };
        if !reply.status.is_success() {
            return Attempt::Fail(Error::terminal(format!(
                "{}: HTTP {}: {}",
                self.name,
                reply.status,
                reply.error_message()
            )));
        }
        match reply.json["choices"][0]["message"]["content"].as_str() {
            Some(content) => Attempt::Done(content.to_string()),
            None => Attempt::Fail(Error::terminal(format!(
                "{}: the response has no choices[0].message.content: {}",
                self.name,
                reply.text.chars().take(200).collect::<String>()
            ))),
        }
    }
}

impl Model for OpenAiCompatible {
    fn name(&self) -> &str {
        &self.name
    }

    fn complete<'a>(&'a self, request: &'a ModelRequest) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let body = self.body(request);
            with_retries(&self.limits, &self.permits, &self.name, || {
                self.attempt(&body)
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let limits = Limits {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..Limits::default()
        };
        let first = limits.backoff(1, 7);
        assert!(first >= Duration::from_millis(100) && first <= Duration::from_millis(125));
        let third = limits.backoff(3, 7);
        assert!(third >= Duration::from_millis(400) && third <= Duration::from_millis(500));
        assert!(limits.backoff(30, 7) <= Duration::from_millis(1250));
    }
}
