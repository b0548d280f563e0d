//! The Lambda handler: one step per SQS record; retryable failures are reported in
//! `batchItemFailures` (only those records return to the queue); terminal ones are moved to the
//! function's dead-letter queue with the reason as a message attribute, so a bad record never
//! fails its batch and is never retried forever.

use crate::counters::{RequestCounters, Service};
use crate::errors::classify;
use crate::stack::AwsRuntime;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::MessageAttributeValue;
use reanimate_core::{Disposition, Envelope, Error, Result};
use tracing::Instrument;

/// Where refused messages go, with their reason.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    pub sqs: aws_sdk_sqs::Client,
    pub url: String,
    pub counters: RequestCounters,
}

impl DeadLetters {
    async fn park(&self, message: &SqsMessage, reason: &str) -> Result<()> {
        let attribute = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(|e| Error::terminal(format!("message attribute: {e}")))
        };
        // Attribute values are limited to 256 KiB with the body; keep reasons short.
        let reason: String = reason.chars().take(2_000).collect();
        self.counters.count(Service::Sqs, "SendMessage");
        self.sqs
            .send_message()
            .queue_url(&self.url)
            .message_body(message.body.clone().unwrap_or_default())
            .message_attributes("reanimate-error", attribute(&reason)?)
            .message_attributes(
                "reanimate-source-message",
                attribute(message.message_id.as_deref().unwrap_or("?"))?,
            )
            .send()
            .await
            .map_err(|e| classify("SQS SendMessage (dead letter)", e))?;
        Ok(())
    }
}

/// What became of one record.
#[derive(Debug)]
pub enum RecordOutcome {
    Handled(Disposition),
    /// Terminal: moved to the dead-letter queue with this reason.
    Refused(String),
    /// Retryable: reported as a batch item failure.
    Retry(String),
}

/// Handles one record (exposed for tests).
pub async fn handle_record(
    runtime: &AwsRuntime,
    dead_letters: &DeadLetters,
    message: &SqsMessage,
) -> RecordOutcome {
    let body = message.body.as_deref().unwrap_or("");
    let result = match Envelope::from_json(body) {
        Ok(envelope) => runtime.handle(envelope).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(disposition) => RecordOutcome::Handled(disposition),
        Err(error) if error.is_retryable() => {
            tracing::warn!(reason = %error.reason, "retrying later");
            RecordOutcome::Retry(error.reason)
        }
        Err(error) => {
            tracing::error!(reason = %error.reason, "message refused; moving it to the dead-letter queue");
            match dead_letters.park(message, &error.reason).await {
                Ok(()) => RecordOutcome::Refused(error.reason),
                // Could not park it: let SQS redeliver it (and redrive it after maxReceiveCount).
                Err(park) => RecordOutcome::Retry(format!(
                    "{}; and parking it failed: {}",
                    error.reason, park.reason
                )),
            }
        }
    }
}

/// The SQS event handler.
pub async fn handle_event(
    runtime: &AwsRuntime,
    dead_letters: &DeadLetters,
    event: SqsEvent,
) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    for message in &event.records {
        let id = message.message_id.clone().unwrap_or_default();
        let span = tracing::info_span!("record", sqs_message = %id);
        if let RecordOutcome::Retry(_) = handle_record(runtime, dead_letters, message)
            .instrument(span)
            .await
        {
            response.add_failure(id);
        }
    }
    response
}

/// Logs as JSON when `AWS_LAMBDA_LOG_FORMAT=JSON` (Lambda's advanced logging), as text otherwise;
/// the level comes from `RUST_LOG` (default `info`).
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .without_time();
    if json {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

/// Everything a function's `main` does after choosing its atoms: read the configuration, build
/// the clients once, and serve SQS events until the Lambda environment shuts down.
///
/// The future is boxed here so that it is compiled in this crate: its type is deep enough to
/// overflow the compiler's query depth limit in each function crate that would otherwise
/// instantiate it (an incremental build can hide that; a clean build cannot).
pub fn serve(registry: reanimate_core::Registry) -> ServeFuture {
    serve_with(registry, |_, _| Ok(reanimate_core::Activities::default()))
}

/// Like [`serve`], for atoms that call activities: `activities` builds them once, from the
/// process's clients (and counting their requests with the others).
pub fn serve_with(
    registry: reanimate_core::Registry,
    activities: fn(
        &crate::stack::Clients,
        &RequestCounters,
    ) -> reanimate_core::Result<reanimate_core::Activities>,
) -> ServeFuture {
    Box::pin(serve_registry(registry, activities))
}

/// What [`serve`] returns: runs until the Lambda environment shuts down.
pub type ServeFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::result::Result<(), lambda_runtime::Error>>>,
>;

async fn serve_registry(
    registry: reanimate_core::Registry,
    activities: fn(
        &crate::stack::Clients,
        &RequestCounters,
    ) -> reanimate_core::Result<reanimate_core::Activities>,
) -> std::result::Result<(), lambda_runtime::Error> {
    init_tracing();
    let config = std::sync::Arc::new(crate::StackConfig::from_env()?);
    let clients = crate::stack::Clients::from_env().await;
    let counters = RequestCounters::default();
    let activities = activities(&clients, &counters)?;
    let runtime =
        crate::stack::runtime(registry, &clients, config, &counters).with_activities(activities);
    let dead_letters = DeadLetters {
        sqs: clients.sqs.clone(),
        url: std::env::var("REANIMATE_DEAD_LETTER_URL")
            .map_err(|_| "REANIMATE_DEAD_LETTER_URL is not set")?,
        counters,
    };
    let runtime = &runtime;
    let dead_letters = &dead_letters;
    let handler = lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<SqsEvent>| async move {
            Ok::<_, lambda_runtime::Error>(handle_event(runtime, dead_letters, event.payload).await)
        },
    );
    lambda_runtime::run(handler).await
}
