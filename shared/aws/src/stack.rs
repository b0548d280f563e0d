//! Assembling the runtime on AWS: SDK clients built once per process, adapters sharing one set of
//! request counters.

use crate::config::StackConfig;
use crate::counters::RequestCounters;
use crate::dynamo::{DynamoInbox, DynamoStore, NotifyQueue};
use crate::messaging::AwsDispatcher;
use crate::timers::AwsTimers;
use reanimate_core::ports::Clock;
use reanimate_core::{Registry, Runtime, Timestamp};
use std::sync::Arc;
use std::time::Duration;

/// The runtime on AWS.
pub type AwsRuntime =
    Runtime<DynamoStore, AwsDispatcher, AwsTimers<TokioClock>, DynamoInbox, TokioClock>;

/// The wall clock, waiting on tokio's timers (the executor the Lambda runtime runs on).
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        Timestamp::now_utc()
    }

    fn sleep(&self, duration: Duration) -> impl std::future::Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}

/// The SDK clients, one of each, from the default chain (`AWS_ENDPOINT_URL` points them at an
/// emulator).
#[derive(Clone, Debug)]
pub struct Clients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub scheduler: aws_sdk_scheduler::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub s3: aws_sdk_s3::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    /// SES v1 (what LocalStack emulates), for delivering digests.
    pub ses: aws_sdk_ses::Client,
    /// The shared configuration, for clients built later (a model provider).
    pub config: aws_config::SdkConfig,
}

/// Each call to the services a step depends on (DynamoDB, SQS, Scheduler, EventBridge) gives up
/// after this: a call that hangs becomes an error (the outbox is then marked for the sweeper)
/// rather than running into the invocation's deadline. Model calls have limits of their own.
pub const SERVICE_CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl Clients {
    pub async fn from_env() -> Self {
        let shared = aws_config::load_from_env().await;
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .operation_timeout(SERVICE_CALL_TIMEOUT)
            .build();
        Self {
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(&shared)
                    .timeout_config(timeouts.clone())
                    .build(),
            ),
            sqs: aws_sdk_sqs::Client::from_conf(
                aws_sdk_sqs::config::Builder::from(&shared)
                    .timeout_config(timeouts.clone())
                    .build(),
            ),
            scheduler: aws_sdk_scheduler::Client::from_conf(
                aws_sdk_scheduler::config::Builder::from(&shared)
                    .timeout_config(timeouts.clone())
                    .build(),
            ),
            events: aws_sdk_eventbridge::Client::from_conf(
                aws_sdk_eventbridge::config::Builder::from(&shared)
                    .timeout_config(timeouts)
                    .build(),
            ),
            // Path-style addressing: LocalStack's endpoint has no per-bucket host names.
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&shared)
                    .force_path_style(true)
                    .build(),
            ),
            secrets: aws_sdk_secretsmanager::Client::new(&shared),
            ses: aws_sdk_ses::Client::new(&shared),
            config: shared,
        }
    }
}

/// The store, the inbox and the dispatcher over `config`'s resources: what a runtime and a
/// client (`StackClient`) both need.
pub(crate) fn adapters(
    clients: &Clients,
    config: &Arc<StackConfig>,
    counters: &RequestCounters,
) -> (DynamoStore, DynamoInbox, AwsDispatcher) {
    let store = DynamoStore::new(
        clients.dynamodb.clone(),
        &config.instances_table,
        &config.history_table,
        config.retention,
        counters.clone(),
    );
    let notify = config.notify_queue_url.as_ref().map(|url| NotifyQueue {
        sqs: clients.sqs.clone(),
        url: url.clone(),
    });
    let inbox = DynamoInbox::new(
        clients.dynamodb.clone(),
        &config.inbox_table,
        counters.clone(),
    )
    .notifying(notify);
    let dispatcher = AwsDispatcher::new(
        clients.sqs.clone(),
        clients.events.clone(),
        Arc::clone(config),
        counters.clone(),
    );
    (store, inbox, dispatcher)
}

/// Builds the runtime for `registry` on `config`'s resources.
pub fn runtime(
    registry: Registry,
    clients: &Clients,
    config: Arc<StackConfig>,
    counters: &RequestCounters,
) -> AwsRuntime {
    let (store, inbox, dispatcher) = adapters(clients, &config, counters);
    let timers = AwsTimers::new(
        clients.sqs.clone(),
        clients.scheduler.clone(),
        Arc::clone(&config),
        counters.clone(),
        TokioClock,
    );
    let deployed: Vec<String> = config.routes.keys().cloned().collect();
    Runtime::new(registry, store, dispatcher, timers, inbox, TokioClock)
        .with_known_atoms(deployed)
        .with_full_history(config.full_history)
}
