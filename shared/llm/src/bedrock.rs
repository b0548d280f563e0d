//! Amazon Bedrock's Converse API as a playbook [`Model`]: the natural provider inside Lambda (IAM
//! credentials, no key to keep). Retries, backoff and the concurrency limit are the same as every
//! provider's ([`crate::with_retries`]); the SDK's own retries are turned off so that the
//! policy is in one place.

use crate::{Attempt, Limits, with_retries};
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseOutput, InferenceConfiguration, Message,
    SystemContentBlock,
};
use reanimate_core::error::error_chain;
use reanimate_core::playbook::{Model, ModelRequest, Role};
use reanimate_core::{BoxFuture, Error, Result};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Error codes worth another try.
const TRANSIENT: &[&str] = &[
    "ThrottlingException",
    "ServiceUnavailableException",
    "InternalServerException",
    "ModelNotReadyException",
    "ModelTimeoutException",
];

#[derive(Clone, Debug)]
pub struct BedrockConverse {
    client: aws_sdk_bedrockruntime::Client,
    model_id: String,
    name: String,
    limits: Limits,
    permits: Arc<Semaphore>,
}

impl BedrockConverse {
    /// `config` is the process's shared AWS configuration; `model_id` a Bedrock model or
    /// inference profile id (`anthropic.claude-3-5-haiku-20241022-v1:0`, `us.amazon.nova-pro-v1:0`).
    pub fn new(config: &aws_config::SdkConfig, model_id: &str, limits: Limits) -> Self {
        let conf = aws_sdk_bedrockruntime::config::Builder::from(config)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        Self {
            client: aws_sdk_bedrockruntime::Client::from_conf(conf),
            model_id: model_id.to_string(),
            name: format!("bedrock:{model_id}"),
            limits,
            permits: Arc::new(Semaphore::new(limits.concurrency.max(1))),
        }
    }

    fn messages(request: &ModelRequest) -> Result<Vec<Message>> {
        request
            .messages
            .iter()
            .map(|m| {
                let role = match m.role {
                    Role::User => ConversationRole::User,
                    Role::Assistant => ConversationRole::Assistant,
                };
                Message::builder()
                    .role(role)
                    .content(ContentBlock::Text(m.content.clone()))
                    .build()
                    .map_err(|e| Error::terminal(format!("cannot build a Bedrock message: {e}")))
            })
            .collect()
    }

    async fn attempt(&self, system: &str, messages: &[Message]) -> Attempt<String> {
        let sent = self
            .client
            .converse()
            .model_id(&self.model_id)
            .system(SystemContentBlock::Text(system.to_string()))
            .set_messages(Some(messages.to_vec()))
            .inference_config(InferenceConfiguration::builder().temperature(0.0).build())
            .send()
            .await;
        match sent {
            Ok(output) => match output.output() {
                Some(ConverseOutput::Message(message)) => {
                    let text: String = message
                        .content()
                        .iter()
                        .filter_map(|block| block.as_text().ok().cloned())
                        .collect();
                    Attempt::Done(text)
                }
                _ => Attempt::Fail(Error::terminal(format!(
                    "{}: the response has no message",
                    self.name
                ))),
            },
            Err(SdkError::ServiceError(service)) => {
                let code = service.err().code().unwrap_or("Unknown").to_string();
                let message = service.err().message().unwrap_or("").to_string();
                if TRANSIENT.contains(&code.as_str()) {
                    Attempt::Retry {
                        reason: format!("{code}: {message}"),
                        after: None,
                    }
                } else {
                    Attempt::Fail(Error::terminal(format!("{}: {code}: {message}", self.name)))
                }
            }
            // A request that could not be built will not build next time; a timeout, a dropped
            // connection or an unreadable response may not happen again.
            Err(other @ SdkError::ConstructionFailure(_)) => Attempt::Fail(Error::terminal(
                format!("{}: the request could not be built: {other:?}", self.name),
            )),
            Err(other) => Attempt::Retry {
                reason: format!("Bedrock Converse: {}", error_chain(&other)),
                after: None,
            },
        }
    }
}

impl Model for BedrockConverse {
    fn name(&self) -> &str {
        &self.name
    }

    fn complete<'a>(&'a self, request: &'a ModelRequest) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let messages = Self::messages(request)?;
            with_retries(&self.limits, &self.permits, &self.name, || {
                self.attempt(&request.system, &messages)
            })
            .await
        })
    }
}
