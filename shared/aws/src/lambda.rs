//! The Lambda handler: one step per SQS record; retryable failures are reported in
//! `batchItemFailures` (only those records return to the queue); terminal ones are moved to the
//! function's dead-letter queue with the reason as a message attribute, so a bad record never
//! fails its batch and is never retried forever.

use crate::counters::{RequestCounters, Service};
use crate::errors::classify;
use crate::stack::AwsRuntime;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::MessageAttributeValue;
use reanimate_core::{Delivery, Disposition, Envelope, Error, Result, Timestamp};
use std::time::Duration;
use tracing::Instrument;

/// Where refused messages go, with their reason.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    pub sqs: aws_sdk_sqs::Client,
    pub url: String,
    pub counters: RequestCounters,
}

impl DeadLetters {
    /// Moves `message` to the dead-letter queue with `reason` as its `reanimate-error` attribute.
    pub async fn park(&self, message: &SqsMessage, reason: &str) -> Result<()> {
        let attribute = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(|e| Error::terminal(format!("message attribute: {e}")))
        };
        // Attribute values are limited to 256 KiB with the body; keep reasons short, and in the
        // characters SQS accepts.
        let reason = reanimate_core::text::sqs_safe_text(reanimate_core::text::truncate_at_char(
            reason, 2_000,
        ));
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

/// Time kept back from the invocation's deadline to return the batch response. A record still
/// running then is abandoned (its message returns to the queue, as after a crash, which the step
/// algorithm is made for), so one slow record never times the whole invocation out and sends every
/// other record of its batch back with it.
pub const RESPONSE_MARGIN: Duration = Duration::from_secs(2);

/// How this receive of `message` reaches the runtime: its receive count and the deadline.
fn delivery(message: &SqsMessage, deadline: Option<Timestamp>) -> Delivery {
    let receive_count = message
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    Delivery {
        receive_count,
        deadline,
    }
}

/// Handles one record (exposed for tests).
pub async fn handle_record(
    runtime: &AwsRuntime,
    dead_letters: &DeadLetters,
    message: &SqsMessage,
    deadline: Option<Timestamp>,
) -> RecordOutcome {
    let body = message.body.as_deref().unwrap_or("");
    let parsed = Envelope::from_json(body);
    handle_parsed(runtime, dead_letters, message, parsed, deadline).await
}

async fn handle_parsed(
    runtime: &AwsRuntime,
    dead_letters: &DeadLetters,
    message: &SqsMessage,
    parsed: Result<Envelope>,
    deadline: Option<Timestamp>,
) -> RecordOutcome {
    let result = match parsed {
        Ok(envelope) => {
            runtime
                .handle_delivery(envelope, delivery(message, deadline))
                .await
        }
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

/// A record and what its body parsed to.
type Parsed<'a> = (&'a SqsMessage, Result<Envelope>);

/// The SQS event handler. Records for one instance are handled one after another, in the order
/// they came; records for different instances concurrently. Whatever is not done when the
/// invocation's deadline (less [`RESPONSE_MARGIN`]) comes is reported as failed, to come back.
pub async fn handle_event(
    runtime: &AwsRuntime,
    dead_letters: &DeadLetters,
    event: SqsEvent,
    deadline: Option<Timestamp>,
) -> SqsBatchResponse {
    let stop_at = deadline.map(|d| {
        Timestamp::from_millis(
            d.as_millis()
                .saturating_sub(RESPONSE_MARGIN.as_millis() as u64),
        )
    });
    // Group by instance, keeping arrival order: one instance's records (activity calls included)
    // run one after another, so they never contend with each other; groups run concurrently. A
    // body that is not an envelope stands alone.
    let mut groups: Vec<(Option<String>, Vec<Parsed<'_>>)> = Vec::new();
    for message in &event.records {
        let parsed = Envelope::from_json(message.body.as_deref().unwrap_or(""));
        let key = parsed.as_ref().ok().map(|e| e.target.to_string());
        match groups.iter_mut().find(|(k, _)| key.is_some() && *k == key) {
            Some((_, records)) => records.push((message, parsed)),
            None => groups.push((key, vec![(message, parsed)])),
        }
    }
    let handled =
        futures_util::future::join_all(groups.into_iter().map(|(_, records)| async move {
            let mut failed = Vec::new();
            let mut records = records.into_iter();
            for (message, parsed) in records.by_ref() {
                let id = message.message_id.clone().unwrap_or_default();
                let span = tracing::info_span!("record", sqs_message = %id);
                let work =
                    handle_parsed(runtime, dead_letters, message, parsed, stop_at).instrument(span);
                let outcome = match stop_at {
                    Some(stop) => {
                        let left = Timestamp::now_utc().until(stop);
                        match tokio::time::timeout(left, work).await {
                            Ok(outcome) => outcome,
                            Err(_) => {
                                RecordOutcome::Retry("the invocation's deadline came first".into())
                            }
                        }
                    }
                    None => work.await,
                };
                if let RecordOutcome::Retry(reason) = outcome {
                    tracing::warn!(sqs_message = %id, %reason, "record handed back");
                    failed.push(id);
                    if stop_at.is_some_and(|stop| Timestamp::now_utc() >= stop) {
                        break;
                    }
                }
            }
            // Not started before the deadline: handed back as they are.
            failed
                .extend(records.map(|(message, _)| message.message_id.clone().unwrap_or_default()));
            failed
        }))
        .await;
    let mut response = SqsBatchResponse::default();
    for id in handled.into_iter().flatten() {
        response.add_failure(id);
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
    serve_with(registry, no_activities)
}

/// Builds a process's activities once, from its clients (counting their requests with the
/// others). Async: a builder may read a secret (a model's API key) first.
pub type ActivitiesBuilder =
    for<'a> fn(
        &'a crate::stack::Clients,
        &'a RequestCounters,
    )
        -> reanimate_core::BoxFuture<'a, reanimate_core::Result<reanimate_core::Activities>>;

fn no_activities<'a>(
    _: &'a crate::stack::Clients,
    _: &'a RequestCounters,
) -> reanimate_core::BoxFuture<'a, reanimate_core::Result<reanimate_core::Activities>> {
    Box::pin(async { Ok(reanimate_core::Activities::default()) })
}

/// Like [`serve`], for atoms that call activities: `activities` builds them once, from the
/// process's clients (and counting their requests with the others).
pub fn serve_with(
    registry: reanimate_core::Registry,
    activities: ActivitiesBuilder,
) -> ServeFuture {
    Box::pin(serve_registry(registry, activities))
}

/// What [`serve`] returns: runs until the Lambda environment shuts down.
pub type ServeFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::result::Result<(), lambda_runtime::Error>>>,
>;

/// What every function builds once per process: the configuration, the SDK clients, the runtime.
async fn process_runtime(
    registry: reanimate_core::Registry,
    activities: ActivitiesBuilder,
) -> std::result::Result<(AwsRuntime, crate::stack::Clients, RequestCounters), lambda_runtime::Error>
{
    init_tracing();
    let config = std::sync::Arc::new(crate::StackConfig::from_env()?);
    let clients = crate::stack::Clients::from_env().await;
    let counters = RequestCounters::default();
    let activities = activities(&clients, &counters).await?;
    let runtime =
        crate::stack::runtime(registry, &clients, config, &counters).with_activities(activities);
    Ok((runtime, clients, counters))
}

async fn serve_registry(
    registry: reanimate_core::Registry,
    activities: ActivitiesBuilder,
) -> std::result::Result<(), lambda_runtime::Error> {
    let (runtime, clients, counters) = process_runtime(registry, activities).await?;
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
            let deadline = Some(Timestamp::from_millis(event.context.deadline));
            Ok::<_, lambda_runtime::Error>(
                handle_event(runtime, dead_letters, event.payload, deadline).await,
            )
        },
    );
    lambda_runtime::run(handler).await
}

/// The sweeper function's `main`: invoked on a schedule (EventBridge Scheduler, every minute), it
/// sends the outboxes that could not be sent when their step was saved (see
/// [`reanimate_core::runtime`]'s `sweep`), until none is left or its time is nearly up.
pub fn serve_sweeper() -> ServeFuture {
    Box::pin(async {
        let (runtime, _, _) =
            process_runtime(reanimate_core::Registry::new(), no_activities).await?;
        let runtime = &runtime;
        let handler = lambda_runtime::service_fn(
            move |event: lambda_runtime::LambdaEvent<serde_json::Value>| async move {
                let deadline = Timestamp::from_millis(event.context.deadline);
                let report = sweep_until(runtime, deadline).await?;
                if let Some((id, reason)) = report.failed.first() {
                    // A failed invocation: the sweeper's error alarm watches for these.
                    return Err(lambda_runtime::Error::from(format!(
                        "{} of {} outboxes still cannot be sent (first: {id}: {reason})",
                        report.failed.len(),
                        report.found
                    )));
                }
                Ok::<_, lambda_runtime::Error>(serde_json::to_value(report)?)
            },
        );
        lambda_runtime::run(handler).await
    })
}

/// Sweeps in rounds of [`SWEEP_BATCH`] until a round finds fewer, sends none, or `deadline`
/// (less a margin) is near.
pub async fn sweep_until(
    runtime: &AwsRuntime,
    deadline: Timestamp,
) -> Result<reanimate_core::SweepReport> {
    let mut total = reanimate_core::SweepReport::default();
    loop {
        let round = runtime.sweep(Duration::ZERO, SWEEP_BATCH).await?;
        let more = round.found == SWEEP_BATCH && round.flushed > 0;
        total.found += round.found;
        total.flushed += round.flushed;
        total.moved_on += round.moved_on;
        total.failed.extend(round.failed);
        let time_left = Timestamp::now_utc().until(deadline);
        if !more || time_left < RESPONSE_MARGIN * 5 {
            tracing::info!(
                found = total.found,
                flushed = total.flushed,
                failed = total.failed.len(),
                "sweep done"
            );
            return Ok(total);
        }
    }
}

/// Records the sweeper takes per round.
pub const SWEEP_BATCH: usize = 100;
