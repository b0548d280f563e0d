//! `make stack-figures`: AWS requests, DynamoDB capacity units and dollars per step, and step
//! latency, on the deployed stack (LocalStack by default). Prints a report; asserts nothing.
//!
//! 1. In-process: a runtime on the deployed tables and queues handles `STEPS` signals to one
//!    countdown, one message at a time: requests per step by service and operation (counted by the
//!    adapters) and the latency of `Runtime::handle` (load, step, conditional save, sends).
//! 2. In-process, `ledger-1k`: an atom with a 1 KB state that sends one message per step (its
//!    continuation, to a queue made for it), warm (the process keeps what it wrote) and cold (it
//!    forgets before every step).
//! 3. Through the Lambdas: `ROUND_TRIPS` signals sent one at a time to a deployed countdown; the
//!    time from `SendMessage` until the transition is visible in the table (polled every 10 ms).

use reanimate_aws::{RequestCounters, Route, StackClient};
use reanimate_core::ports::InstanceStore;
use reanimate_core::{
    Atom, AtomEvent, Context, Envelope, Event, InstanceId, MessageId, Registry, Result, Step,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what:<40} n={:<4} p50 {:>7.1} ms   p95 {:>7.1} ms   max {:>7.1} ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.95).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3
    );
}

/// On-demand list prices, us-east-1, as published on 2026-11-30 (see BENCHMARKS.md), in dollars.
mod price {
    pub const DYNAMO_WRITE_UNIT: f64 = 0.625e-6;
    pub const DYNAMO_READ_UNIT: f64 = 0.125e-6;
    /// Per request, and per started 64 KB of a request's payload.
    pub const SQS_REQUEST: f64 = 0.40e-6;
    pub const LAMBDA_REQUEST: f64 = 0.20e-6;
    /// arm64, per GB-second.
    pub const LAMBDA_GB_SECOND: f64 = 0.0000133334;
    pub const EVENTBRIDGE_EVENT: f64 = 1.0e-6;
    pub const STEP_FUNCTIONS_STANDARD_TRANSITION: f64 = 25.0e-6;
    pub const LAMBDA_DURABLE_OPERATION: f64 = 8.0e-6;
}

/// The records an event source mapping hands one invocation (`BatchSize` of the step functions).
const BATCH: f64 = 10.0;
/// The step functions' memory, in GB (`MemorySize` in infra/render.py).
const LAMBDA_GB: f64 = 0.25;

/// A 1 KB JSON state that re-runs itself through its queue (as `make bench`'s `state-1k`).
struct Ledger;

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct LedgerState {
    steps: u64,
    entries: Vec<(String, i64, Vec<String>)>,
}

impl Atom for Ledger {
    const TYPE: &'static str = "figures-ledger";
    type Input = u64;
    type State = LedgerState;
    type Output = u64;
    type Tag = String;

    fn start(&self, _: u64, ctx: &mut Context<'_>) -> Result<(LedgerState, Step<u64>)> {
        let entries = (0..16)
            .map(|i| {
                let tags = vec!["ledger".into(), format!("region-{}", i % 3), "close".into()];
                (format!("account-{i:04}-receivables"), i * 1_000, tags)
            })
            .collect();
        let state = LedgerState { steps: 0, entries };
        ctx.continue_with(&0);
        Ok((state, Step::Suspend))
    }

    fn step(
        &self,
        state: &mut LedgerState,
        _: AtomEvent<String>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<u64>> {
        state.steps += 1;
        let i = state.steps as usize % state.entries.len();
        state.entries[i].1 += 1;
        ctx.continue_with(&state.steps);
        Ok(Step::Suspend)
    }
}

/// What the counters gained between two snapshots, per step.
struct PerStep {
    requests: Vec<(String, String, f64)>,
    units: Vec<(String, f64)>,
}

fn per_step(counters: &RequestCounters, before: &PerStepSnapshot, steps: usize) -> PerStep {
    let requests = counters
        .snapshot()
        .into_iter()
        .filter_map(|(service, op, n)| {
            let delta = n - before.0.get(&(service.name(), op)).copied().unwrap_or(0);
            (delta > 0).then(|| {
                let per = delta as f64 / steps as f64;
                (service.name().to_string(), op.to_string(), per)
            })
        })
        .collect();
    let units = counters
        .units()
        .into_iter()
        .filter_map(|(kind, n)| {
            let delta = n - before.1.get(kind).copied().unwrap_or(0);
            (delta > 0).then(|| (kind.to_string(), delta as f64 / steps as f64))
        })
        .collect();
    PerStep { requests, units }
}

type PerStepSnapshot = (
    HashMap<(&'static str, &'static str), u64>,
    HashMap<&'static str, u64>,
);

fn snapshot(counters: &RequestCounters) -> PerStepSnapshot {
    (
        counters
            .snapshot()
            .into_iter()
            .map(|(s, o, n)| ((s.name(), o), n))
            .collect(),
        counters.units().into_iter().collect(),
    )
}

/// Prints the requests and units per step, and the dollars per million steps they cost with the
/// event source mapping's share (a receive and a delete per batch, and one invocation) and the
/// Lambda time of a step (`step_ms`, billed at 256 MB).
fn cost_report(what: &str, figures: &PerStep, step_ms: f64) {
    println!("\n{what}: per step");
    let mut dollars = Vec::new();
    for (service, op, per) in &figures.requests {
        println!("  {service:<12} {op:<28} {per:>6.2} requests");
        let unit = match (service.as_str(), op.as_str()) {
            ("sqs", _) => price::SQS_REQUEST,
            ("eventbridge", _) => price::EVENTBRIDGE_EVENT,
            // Scheduler API calls are not billed; its deliveries are (counted below as messages).
            _ => 0.0,
        };
        if unit > 0.0 {
            dollars.push((format!("{service} {op}"), per * unit));
        }
    }
    for (kind, per) in &figures.units {
        println!("  {:<12} {kind:<28} {per:>6.2}", "dynamodb");
        let unit = if kind.starts_with("read") {
            price::DYNAMO_READ_UNIT
        } else {
            price::DYNAMO_WRITE_UNIT
        };
        dollars.push((format!("dynamodb {kind}"), per * unit));
    }
    let esm = 2.0 / BATCH;
    println!(
        "  {:<12} {:<28} {esm:>6.2} requests (a receive and a delete per batch of {BATCH})",
        "sqs", "ESM receive + delete"
    );
    dollars.push(("sqs ESM receive + delete".into(), esm * price::SQS_REQUEST));
    let invocations = 1.0 / BATCH;
    println!(
        "  {:<12} {:<28} {invocations:>6.2} (one per batch of {BATCH})",
        "lambda", "invocations"
    );
    dollars.push((
        "lambda requests".into(),
        invocations * price::LAMBDA_REQUEST,
    ));
    let gb_s = step_ms / 1e3 * LAMBDA_GB;
    dollars.push(("lambda duration".into(), gb_s * price::LAMBDA_GB_SECOND));
    let total: f64 = dollars.iter().map(|(_, d)| d).sum();
    println!(
        "  dollars per million steps (us-east-1 on-demand list prices, arm64 at 256 MB, {step_ms:.1} ms a step):"
    );
    for (what, d) in &dollars {
        println!("    {what:<40} {:>7.3}", d * 1e6);
    }
    println!("    {:<40} {:>7.3}", "total", total * 1e6);
    println!(
        "    {:<40} {:>7.3}   {:<28} {:>7.3}",
        "Step Functions Standard (1 transition)",
        price::STEP_FUNCTIONS_STANDARD_TRANSITION * 1e6,
        "Lambda durable (1 operation)",
        price::LAMBDA_DURABLE_OPERATION * 1e6
    );
}

/// The `ledger-1k` workload: `steps` steps, warm or cold; returns the step latencies.
async fn ledger_steps(
    runtime: &reanimate_aws::AwsRuntime,
    sqs: &aws_sdk_sqs::Client,
    queue: &str,
    steps: usize,
    warm: bool,
) -> std::result::Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let mut latencies = Vec::with_capacity(steps);
    for _ in 0..steps {
        let out = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(1)
            .wait_time_seconds(5)
            .send()
            .await?;
        let Some(message) = out.messages().first() else {
            return Err("the ledger's continuation did not arrive".into());
        };
        let envelope = Envelope::from_json(message.body().unwrap_or_default())?;
        if let Some(handle) = message.receipt_handle() {
            sqs.delete_message()
                .queue_url(queue)
                .receipt_handle(handle)
                .send()
                .await?;
        }
        if !warm {
            runtime.forget_process_memory();
        }
        let t = Instant::now();
        runtime.handle(envelope).await?;
        latencies.push(t.elapsed());
    }
    Ok(latencies)
}

fn median_ms(samples: &[Duration]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort();
    percentile(&sorted, 0.5).as_secs_f64() * 1e3
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::var("REANIMATE_STACK_OUTPUTS")
        .unwrap_or_else(|_| ".localstack/stack-outputs.json".into());
    let stack = StackClient::connect(&path).await?;
    let (config, clients, counters) = (stack.config(), stack.clients(), stack.counters());
    let runtime = stack.runtime(reanimate_atoms::registry());
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis()
    );
    let steps = env_number("STEPS", 200);
    let round_trips = env_number("ROUND_TRIPS", 50);
    println!(
        "reanimate on {} — stack outputs {path}\n",
        std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "AWS".into())
    );

    // 1. In-process steps.
    let id = InstanceId::new(format!("figures-{run}"))?;
    let message = |n: usize| MessageId::new(format!("figures-{run}-{n}"));
    let start = Envelope::start(
        message(0)?,
        id.clone(),
        "countdown",
        json!({"from": 1, "interval_secs": 86_400 * 7}),
    );
    runtime.handle(start).await?;
    let before = snapshot(counters);
    let mut latencies = Vec::with_capacity(steps);
    for n in 1..=steps {
        let event = Event::signal("extend", json!({"by": 1}));
        let envelope = Envelope::new(message(n)?, id.clone(), "countdown", event);
        let t = Instant::now();
        runtime.handle(envelope).await?;
        latencies.push(t.elapsed());
    }
    let countdown_ms = median_ms(&latencies);
    report("Runtime::handle (one step, in-process)", latencies);
    let figures = per_step(counters, &before, steps);
    cost_report(
        "countdown extend (re-arms its 7-day timer: a schedule, and deletes the old one)",
        &figures,
        countdown_ms,
    );

    // 2. ledger-1k, warm and cold, on a queue of its own.
    let queue_name = format!("reanimate-figures-ledger-{run}");
    let created = clients
        .sqs
        .create_queue()
        .queue_name(&queue_name)
        .send()
        .await?;
    let ledger_url = created.queue_url().unwrap_or_default().to_string();
    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&ledger_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await?;
    let ledger_arn = attributes
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default();
    let mut ledger_config = (**config).clone();
    ledger_config.routes.insert(
        Ledger::TYPE.to_string(),
        Route {
            url: ledger_url.clone(),
            arn: ledger_arn,
        },
    );
    let ledger_runtime = |full_history: bool| {
        let config = reanimate_aws::StackConfig {
            full_history,
            ..ledger_config.clone()
        };
        reanimate_aws::stack::runtime(
            Registry::new().with(Ledger),
            clients,
            std::sync::Arc::new(config),
            counters,
        )
    };
    let (with_history, without_history) = (ledger_runtime(true), ledger_runtime(false));
    let ledger = InstanceId::new(format!("figures-ledger-{run}"))?;
    with_history
        .handle(Envelope::start(
            MessageId::new(format!("ledger-{run}"))?,
            ledger.clone(),
            Ledger::TYPE,
            json!(0),
        ))
        .await?;
    let variants = [
        ("warm", &with_history, true),
        ("warm, History=off", &without_history, true),
        ("cold", &with_history, false),
    ];
    for (what, ledger_runtime, warm) in variants {
        let before = snapshot(counters);
        let latencies =
            ledger_steps(ledger_runtime, &clients.sqs, &ledger_url, steps, warm).await?;
        let ms = median_ms(&latencies);
        report(
            &format!("ledger-1k, {what} (one step, in-process)"),
            latencies,
        );
        let figures = per_step(counters, &before, steps);
        cost_report(
            &format!("ledger-1k, {what}: a 1 KB state sending one message"),
            &figures,
            ms,
        );
    }
    if let Some(record) = runtime.store().load(&ledger).await? {
        let item = reanimate_aws::dynamo::record_to_item(&record, Duration::ZERO);
        println!(
            "\nledger-1k at rest: state {} bytes, item {} bytes by DynamoDB's rules",
            record.state.len(),
            reanimate_aws::dynamo::item_size(&item)
        );
    }
    clients
        .sqs
        .delete_queue()
        .queue_url(&ledger_url)
        .send()
        .await?;

    // 3. Round trips through the deployed Lambdas.
    let remote = InstanceId::new(format!("figures-remote-{run}"))?;
    let queue = &config.routes["countdown"].url;
    let sqs = &clients.sqs;
    let send = |envelope: Envelope| async move {
        sqs.send_message()
            .queue_url(queue)
            .message_body(envelope.to_json())
            .send()
            .await
    };
    send(Envelope::start(
        MessageId::new(format!("r-{run}-0"))?,
        remote.clone(),
        "countdown",
        json!({"from": 1, "interval_secs": 86_400 * 7}),
    ))
    .await?;
    let wait_for_version = |version: u64| {
        let store = runtime.store();
        let remote = remote.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if store
                    .load(&remote)
                    .await?
                    .is_some_and(|r| r.version >= version)
                {
                    return Ok::<_, reanimate_core::Error>(());
                }
                if Instant::now() > deadline {
                    return Err(reanimate_core::Error::retryable(
                        "no transition within 60 s",
                    ));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for_version(1).await?;
    let mut round = Vec::with_capacity(round_trips);
    for n in 1..=round_trips {
        let event = Event::signal("extend", json!({"by": 1}));
        let t = Instant::now();
        send(Envelope::new(
            MessageId::new(format!("r-{run}-{n}"))?,
            remote.clone(),
            "countdown",
            event,
        ))
        .await?;
        wait_for_version(1 + n as u64).await?;
        round.push(t.elapsed());
    }
    report("SQS → Lambda → DynamoDB (round trip)", round);
    Ok(())
}
