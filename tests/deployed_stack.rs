//! The deployed stack, through the real path: a plain SQS message → the queue's event source
//! mapping → the atom's Lambda (a cargo-lambda `bootstrap`) → DynamoDB / SQS / Scheduler → the next
//! Lambda. Nothing here calls the runtime directly: tests send messages, answer through the inbox
//! and watch the tables and dead-letter queues.
//!
//! `make integ` builds the functions, deploys `infra/template.yaml` (timers over 2 s go through
//! EventBridge Scheduler) and runs these; the stack's outputs come from
//! `.localstack/stack-outputs.json` (or `REANIMATE_STACK_OUTPUTS`). Ignored by plain `cargo test`.

use reanimate_aws::config::output_name;
use reanimate_aws::{Clients, StackClient};
use reanimate_core::ports::{Inbox, InstanceStore, SystemClock};
use reanimate_core::{InstanceId, InstanceRecord, Status};
use reanimate_tests::{envelope_body, unique};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(90);

struct Deployed {
    stack: StackClient,
    clients: Clients,
    outputs: HashMap<String, String>,
}

async fn deployed() -> Deployed {
    let path = reanimate_tests::outputs_path();
    let stack = StackClient::connect(&path)
        .await
        .unwrap_or_else(|e| panic!("{}", e.reason));
    Deployed {
        clients: stack.clients().clone(),
        outputs: stack.outputs().clone(),
        stack,
    }
}

impl Deployed {
    fn queue(&self, atom: &str) -> String {
        self.outputs[&format!("{}QueueUrl", output_name(atom))].clone()
    }

    async fn send_raw(&self, atom: &str, body: &str) {
        self.clients
            .sqs
            .send_message()
            .queue_url(self.queue(atom))
            .message_body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("send: {e:?}"));
    }

    async fn start(&self, atom: &str, instance: &str, input: Value) {
        let event = json!({"kind": "started", "input": input});
        self.send_raw(
            atom,
            &envelope_body(&format!("start:{instance}"), instance, atom, event),
        )
        .await;
    }

    async fn send_event(&self, atom: &str, instance: &str, id: &str, event: Value) {
        self.send_raw(atom, &envelope_body(id, instance, atom, event))
            .await;
    }

    async fn load(&self, instance: &str) -> Option<InstanceRecord> {
        let id = InstanceId::new(instance).unwrap_or_else(|e| panic!("{e}"));
        self.stack.load(&id).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Polls the instance until `done` holds for it, within `LIMIT`.
    async fn wait_for(
        &self,
        instance: &str,
        what: &str,
        done: impl Fn(&InstanceRecord) -> bool,
    ) -> InstanceRecord {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Some(record) = self.load(instance).await
                && done(&record)
            {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "{instance}: not {what} within {LIMIT:?}: {:?}",
                self.load(instance).await
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn finished(&self, instance: &str) -> InstanceRecord {
        self.wait_for(instance, "finished", |r| r.status.is_finished())
            .await
    }

    /// Reasons attached to dead letters of `atom` that mention `needle`.
    async fn dead_letters(&self, atom: &str, needle: &str, want: usize) -> Vec<String> {
        let url = &self.outputs[&format!("{}DeadLettersUrl", output_name(atom))];
        let deadline = Instant::now() + LIMIT;
        let mut found = Vec::new();
        while found.len() < want && Instant::now() < deadline {
            let out = self
                .clients
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
            for m in out.messages() {
                let body = m.body().unwrap_or_default();
                if let Some(reason) = m
                    .message_attributes()
                    .and_then(|a| a.get("reanimate-error"))
                    .and_then(|v| v.string_value.clone())
                    && body.contains(needle)
                {
                    found.push(reason);
                }
            }
        }
        found
    }
}

#[tokio::test]
#[ignore = "needs the deployed stack; make integ runs it"]
async fn fan_out_and_fan_in_with_progress_through_the_lambdas() {
    let stack = deployed().await;
    let job = unique("fan");
    stack
        .start(
            "fan-out",
            &job,
            json!({"workers": 3, "items_per_worker": 5, "page_size": 2, "failing_worker": 1}),
        )
        .await;
    let root = stack.finished(&job).await;
    assert_eq!(root.status, Status::Completed, "{:?}", root.error);
    let output = root.result.unwrap_or_default();
    assert_eq!(
        (output["completed"].clone(), output["failed"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(
        output["progress_reports"],
        2 * 5 + 2,
        "each reported item arrives once"
    );
}

#[tokio::test]
#[ignore = "needs the deployed stack; make integ runs it"]
async fn a_short_timer_is_a_queue_delay_and_a_long_one_a_schedule() {
    let stack = deployed().await;
    // 1-second ticks (under the 2-second threshold: SQS delays).
    let short = unique("tick");
    stack
        .start("countdown", &short, json!({"from": 2, "interval_secs": 1}))
        .await;
    // A 4-second deadline (over the threshold: an EventBridge Scheduler schedule) that expires.
    let long = unique("deadline");
    stack
        .start(
            "approval",
            &long,
            json!({"question": "Anyone?", "timeout_secs": 4}),
        )
        .await;
    let ticked = stack.finished(&short).await;
    assert_eq!(ticked.result.unwrap_or_default()["ticks"], 2);
    let expired = stack.finished(&long).await;
    assert_eq!(expired.result.unwrap_or_default()["outcome"], "timed_out");
}

#[tokio::test]
#[ignore = "needs the deployed stack; make integ runs it"]
async fn a_question_answered_in_the_inbox_resumes_the_atom_and_a_bad_answer_is_refused() {
    let stack = deployed().await;
    let asker = unique("ask");
    stack
        .start(
            "approval",
            &asker,
            json!({"question": "Ship it?", "timeout_secs": 600}),
        )
        .await;
    let record = stack
        .wait_for(&asker, "asking", |r| !r.waiting.requests.is_empty())
        .await;
    let request = record
        .waiting
        .requests
        .keys()
        .next()
        .cloned()
        .unwrap_or_else(|| panic!("no request"));
    let deadline = Instant::now() + LIMIT;
    while stack
        .stack
        .inbox()
        .get(&request)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the request never reached the inbox"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let answer = |value: Value| {
        reanimate_core::client::answer(
            stack.stack.inbox(),
            stack.stack.dispatcher(),
            &SystemClock,
            &request,
            value,
        )
    };
    let refused = answer(json!({"approved": "sure"}))
        .await
        .expect_err("refused");
    assert!(
        refused.reason.contains("/approved") && refused.reason.contains("boolean"),
        "{refused}"
    );
    answer(json!({"approved": true, "comment": "go"}))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let done = stack.finished(&asker).await;
    assert_eq!(done.result.unwrap_or_default()["outcome"], "answered");
    let entry = stack
        .stack
        .inbox()
        .get(&request)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("gone"));
    assert_eq!(
        entry.answer,
        Some(json!({"approved": true, "comment": "go"}))
    );
}

#[tokio::test]
#[ignore = "needs the deployed stack; make integ runs it"]
async fn cancel_reaches_every_live_child() {
    let stack = deployed().await;
    let parent = unique("cancel");
    stack
        .start(
            "fan-out",
            &parent,
            json!({"workers": 3, "countdown": {"from": 5, "interval_secs": 86400}}),
        )
        .await;
    let record = stack
        .wait_for(&parent, "waiting for 3 children", |r| {
            r.waiting.children.len() == 3
        })
        .await;
    for child in record.waiting.children.keys() {
        stack.wait_for(child.as_str(), "started", |_| true).await;
    }
    stack
        .send_event(
            "fan-out",
            &parent,
            &format!("cancel:{parent}"),
            json!({"kind": "cancel_requested", "reason": "test"}),
        )
        .await;
    assert_eq!(stack.finished(&parent).await.status, Status::Cancelled);
    for child in record.waiting.children.keys() {
        assert_eq!(
            stack.finished(child.as_str()).await.status,
            Status::Cancelled,
            "{child}"
        );
    }
}

#[tokio::test]
#[ignore = "needs the deployed stack; make integ runs it"]
async fn the_same_message_twice_is_applied_once() {
    let stack = deployed().await;
    let counter = unique("twice");
    stack
        .start(
            "countdown",
            &counter,
            json!({"from": 1, "interval_secs": 86400}),
        )
        .await;
    stack
        .start(
            "countdown",
            &counter,
            json!({"from": 1, "interval_secs": 86400}),
        )
        .await;
    stack.wait_for(&counter, "started", |_| true).await;
    let extend = json!({"kind": "signal", "name": "extend", "payload": {"by": 3}});
    stack
        .send_event("countdown", &counter, "extend-once", extend.clone())
        .await;
    stack
        .send_event("countdown", &counter, "extend-once", extend)
        .await;
    let marker = json!({"kind": "signal", "name": "marker"});
    stack
        .send_event("countdown", &counter, "marker", marker)
        .await;
    let record = stack
        .wait_for(&counter, "past the marker", |r| {
            r.state.contains("\"ignored_signals\":1")
        })
        .await;
    let state: Value = serde_json::from_str(&record.state).unwrap_or_default();
    assert_eq!(state["extended_by"], 3, "extended once, not twice: {state}");
}

#[tokio::test]
#[ignore = "needs the deployed stack; make integ runs it"]
async fn bad_messages_end_in_the_dead_letter_queue_with_a_reason_and_the_rest_succeed() {
    let stack = deployed().await;
    let marker = unique("bad");
    stack
        .send_raw("countdown", &format!("not json {marker}"))
        .await;
    let unknown = json!({"schema": 1, "id": format!("u:{marker}"), "target": marker, "atom": "no-such-atom", "event": {"kind": "started", "input": {}}});
    stack.send_raw("countdown", &unknown.to_string()).await;
    let good = unique("good");
    stack
        .start(
            "countdown",
            &good,
            json!({"from": 1, "interval_secs": 86400}),
        )
        .await;
    stack.wait_for(&good, "started", |_| true).await;
    let mut reasons = stack.dead_letters("countdown", &marker, 2).await;
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons[0].contains("not a JSON envelope"), "{reasons:?}");
    assert!(
        reasons[1].contains("unknown atom type \"no-such-atom\""),
        "{reasons:?}"
    );
}

/// Sets the largest message `atom`'s queue accepts (SQS refuses larger ones).
async fn set_maximum_message_size(stack: &Deployed, atom: &str, bytes: u32) {
    stack
        .clients
        .sqs
        .set_queue_attributes()
        .queue_url(stack.queue(atom))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize,
            bytes.to_string(),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
}

#[tokio::test]
#[ignore = "needs the deployed stack; make integ runs it"]
async fn a_send_that_fails_after_its_step_is_saved_is_delivered_by_the_scheduled_sweeper() {
    let stack = deployed().await;
    // An approval with a long id, so the signal that will withdraw it is over 1 KiB.
    let approval = format!("{}-{}", unique("withdrawable"), "w".repeat(950));
    stack
        .start(
            "approval",
            &approval,
            json!({"question": "Still needed?", "timeout_secs": 900}),
        )
        .await;
    stack.wait_for(&approval, "asking", |_| true).await;
    // The approval queue now refuses messages over 1 KiB (as a mistaken redeploy might): the
    // countdown's last step, which signals the approval, is saved and its send refused.
    set_maximum_message_size(&stack, "approval", 1024).await;
    let countdown = unique("notifier");
    stack
        .start(
            "countdown",
            &countdown,
            json!({"from": 1, "interval_secs": 1,
                "notify": {"id": approval, "atom": "approval", "signal": "withdraw"}}),
        )
        .await;
    let done = stack.finished(&countdown).await;
    assert_eq!(done.status, Status::Completed);
    let id = InstanceId::new(&countdown).unwrap_or_else(|e| panic!("{e}"));
    let marked = async |stack: &Deployed| {
        let now = reanimate_core::Timestamp::now_utc().plus(Duration::from_secs(1));
        stack
            .stack
            .store()
            .pending_outboxes(now, 1000)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .any(|(marked, _)| *marked == id)
    };
    let deadline = Instant::now() + LIMIT;
    while !marked(&stack).await {
        assert!(Instant::now() < deadline, "{countdown} was never marked");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Mended. Nothing but the sweeper will ever send that outbox: the countdown has finished and
    // nothing else comes its way. EventBridge Scheduler invokes the sweeper every minute.
    set_maximum_message_size(&stack, "approval", 262_144).await;
    let deadline = Instant::now() + Duration::from_secs(150);
    let withdrawn = loop {
        if let Some(record) = stack
            .load(&approval)
            .await
            .filter(|r| r.status.is_finished())
        {
            break record;
        }
        assert!(
            Instant::now() < deadline,
            "the sweeper did not deliver the signal"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(withdrawn.result.unwrap_or_default()["outcome"], "withdrawn");
    assert!(!marked(&stack).await, "the sweeper cleared the mark");
}

#[tokio::test]
#[ignore = "needs the deployed stack; make integ runs it"]
async fn a_thousand_children_finishing_in_the_same_second_are_all_counted() {
    let children: u64 = std::env::var("STRESS_CHILDREN")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let stack = deployed().await;
    let parent = unique("thousand");
    // Long enough for every child to start and arm its timer first.
    let at = reanimate_core::Timestamp::now_utc().plus(Duration::from_secs(20 + children / 10));
    let started = Instant::now();
    stack
        .start(
            "fan-out",
            &parent,
            json!({"workers": children, "items_per_worker": 1, "page_size": 1,
                "spawn_per_step": 100, "workers_start_at": at}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(900);
    let done = loop {
        if let Some(record) = stack.load(&parent).await.filter(|r| r.status.is_finished()) {
            break record;
        }
        assert!(Instant::now() < deadline, "{parent} did not finish");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let took = started.elapsed();
    assert_eq!(done.status, Status::Completed, "{:?}", done.error);
    let output = done.result.unwrap_or_default();
    assert_eq!(output["completed"], children);
    assert_eq!(output["progress_reports"], children);
    let sum = children * reanimate_atoms::fan_out::item_value(0);
    assert_eq!(output["completed_sum"], sum);
    assert_eq!(output["progress_sum"], sum);
    // The full history holds every version the parent saved (more than the 32 records once kept).
    let history = stack
        .stack
        .history(&done.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let versions: Vec<u64> = history.iter().map(|h| h.version).collect();
    assert_eq!(versions, (1..=done.version).collect::<Vec<_>>());
    assert!(history.len() > 32);
    // When the children finished: within a few seconds of each other.
    let records = stack.stack.list().await.unwrap_or_else(|e| panic!("{e}"));
    let finished: Vec<u64> = records
        .iter()
        .filter(|r| r.parent.as_ref().is_some_and(|p| p.id.as_str() == parent))
        .map(|r| r.updated_at.as_millis())
        .collect();
    assert_eq!(finished.len() as u64, children);
    let spread = finished.iter().max().unwrap_or(&0) - finished.iter().min().unwrap_or(&0);
    for atom in ["fan-out", "worker"] {
        let url = &stack.outputs[&format!("{}DeadLettersUrl", output_name(atom))];
        let depth = stack
            .clients
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let count = depth
            .attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            })
            .cloned()
            .unwrap_or_default();
        assert_eq!(count, "0", "{atom}'s dead-letter queue");
    }
    eprintln!(
        "{children} children, finished within {:.1} s of each other; the parent completed {:.0} s after its start ({} transitions)",
        spread as f64 / 1000.0,
        took.as_secs_f64(),
        done.transitions
    );
}
