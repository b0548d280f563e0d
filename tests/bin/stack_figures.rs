//! `make stack-figures`: AWS requests per step and step latency on the deployed stack (LocalStack
//! by default). Prints a report; asserts nothing.
//!
//! 1. In-process: a runtime on the deployed tables and queues handles `STEPS` signals to one
//!    countdown, one message at a time: requests per step by service and operation (counted by the
//!    adapters) and the latency of `Runtime::handle` (load, step, conditional save, sends).
//! 2. Through the Lambdas: `ROUND_TRIPS` signals sent one at a time to a deployed countdown; the
//!    time from `SendMessage` until the transition is visible in the table (polled every 10 ms).

use reanimate_aws::StackClient;
use reanimate_core::ports::InstanceStore;
use reanimate_core::{Envelope, Event, InstanceId, MessageId};
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
    let before = counters.snapshot();
    let mut latencies = Vec::with_capacity(steps);
    for n in 1..=steps {
        let event = Event::signal("extend", json!({"by": 1}));
        let envelope = Envelope::new(message(n)?, id.clone(), "countdown", event);
        let t = Instant::now();
        runtime.handle(envelope).await?;
        latencies.push(t.elapsed());
    }
    report("Runtime::handle (one step, in-process)", latencies);
    println!(
        "\nAWS requests per step (the step re-arms its 7-day timer: a schedule, and deletes the old one):"
    );
    let before: HashMap<_, _> = before.into_iter().map(|(s, o, n)| ((s, o), n)).collect();
    for (service, operation, n) in counters.snapshot() {
        let delta = n - before.get(&(service, operation)).copied().unwrap_or(0);
        if delta > 0 {
            println!(
                "  {:<12} {:<24} {:.2}",
                service.name(),
                operation,
                delta as f64 / steps as f64
            );
        }
    }

    // 2. Round trips through the deployed Lambdas.
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
