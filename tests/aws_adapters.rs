//! The AWS adapters through real AWS API calls against an emulator (LocalStack via
//! `make test`, or whatever `AWS_ENDPOINT_URL` names). Each test makes its own tables and queues.
//!
//! Messages are taken from the queues by `Pump`, a test driver standing in for Lambda's SQS event
//! source mapping: it receives a batch, hands it to the real Lambda handler (`handle_event`),
//! and deletes what the handler did not report as failed — what the mapping does.
//!
//! Ignored by default (they need an emulator); `make test` runs them with `--ignored`.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use reanimate_atoms::approval::ApprovalInput;
use reanimate_atoms::fan_out::FanOutInput;
use reanimate_aws::lambda::{DeadLetters, handle_event};
use reanimate_aws::{AwsRuntime, Clients, RequestCounters, Route, Service, StackConfig};
use reanimate_core::ports::{Inbox, InstanceStore};
use reanimate_core::{InstanceId, Status};
use reanimate_tests::{envelope_body, unique};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One queue per sample atom, as the template declares.
fn atoms() -> Vec<&'static str> {
    reanimate_atoms::registry().names()
}

struct Stack {
    clients: Clients,
    config: Arc<StackConfig>,
    dead_letter_url: String,
    counters: RequestCounters,
    runtime: AwsRuntime,
}

fn ok<T>(built: Result<T, aws_sdk_dynamodb::error::BuildError>) -> T {
    built.unwrap_or_else(|e| panic!("{e}"))
}

async fn create_queue(clients: &Clients, name: &str) -> Route {
    let url = clients
        .sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::VisibilityTimeout, "2")
        .send()
        .await
        .unwrap_or_else(|e| panic!("create queue {name}: {e:?}"))
        .queue_url
        .unwrap_or_default();
    let attrs = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap_or_else(|e| panic!("queue attributes: {e:?}"));
    let arn = attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default();
    Route { url, arn }
}

/// A global secondary index keyed by (hash, range), as the template declares them.
fn index(name: &str, (hash, range): (&str, &str), projection: Projection) -> GlobalSecondaryIndex {
    let key = |name: &str, kind| {
        ok(KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build())
    };
    ok(GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(hash, KeyType::Hash))
        .key_schema(key(range, KeyType::Range))
        .projection(projection)
        .build())
}

/// Creates the stack's resources (what the template will declare) under fresh names.
async fn stack() -> Stack {
    let clients = Clients::from_env().await;
    let run = unique("it");
    let instances_table = format!("{run}-instances");
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    let attr = |name: &str, kind| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
    };
    clients
        .dynamodb
        .create_table()
        .table_name(&instances_table)
        .key_schema(ok(key("id", KeyType::Hash)))
        .attribute_definitions(ok(attr("id", ScalarAttributeType::S)))
        .attribute_definitions(ok(attr("outbox_pending", ScalarAttributeType::S)))
        .attribute_definitions(ok(attr("outbox_pending_since", ScalarAttributeType::N)))
        .global_secondary_indexes(index(
            reanimate_aws::dynamo::OUTBOX_PENDING_INDEX,
            ("outbox_pending", "outbox_pending_since"),
            Projection::builder()
                .projection_type(ProjectionType::Include)
                .non_key_attributes("version")
                .build(),
        ))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create table: {e:?}"));
    clients
        .dynamodb
        .update_time_to_live()
        .table_name(&instances_table)
        .time_to_live_specification(ok(TimeToLiveSpecification::builder()
            .enabled(true)
            .attribute_name("expires_at")
            .build()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("ttl: {e:?}"));
    let inbox_table = format!("{run}-inbox");
    clients
        .dynamodb
        .create_table()
        .table_name(&inbox_table)
        .key_schema(ok(key("id", KeyType::Hash)))
        .attribute_definitions(ok(attr("id", ScalarAttributeType::S)))
        .attribute_definitions(ok(attr("status", ScalarAttributeType::S)))
        .attribute_definitions(ok(attr("created_at", ScalarAttributeType::N)))
        .global_secondary_indexes(index(
            reanimate_aws::dynamo::INBOX_STATUS_INDEX,
            ("status", "created_at"),
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        ))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create inbox table: {e:?}"));
    let history_table = format!("{run}-history");
    clients
        .dynamodb
        .create_table()
        .table_name(&history_table)
        .key_schema(ok(key("instance", KeyType::Hash)))
        .key_schema(ok(key("version", KeyType::Range)))
        .attribute_definitions(ok(attr("instance", ScalarAttributeType::S)))
        .attribute_definitions(ok(attr("version", ScalarAttributeType::N)))
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create history table: {e:?}"));
    let mut routes = HashMap::new();
    for atom in atoms() {
        routes.insert(
            atom.to_string(),
            create_queue(&clients, &format!("{run}-{atom}")).await,
        );
    }
    let dead_letter_url = create_queue(&clients, &format!("{run}-dead-letters"))
        .await
        .url;
    let event_bus = format!("{run}-bus");
    clients
        .events
        .create_event_bus()
        .name(&event_bus)
        .send()
        .await
        .unwrap_or_else(|e| panic!("bus: {e:?}"));
    let schedule_group = format!("{run}-timers");
    clients
        .scheduler
        .create_schedule_group()
        .name(&schedule_group)
        .send()
        .await
        .unwrap_or_else(|e| panic!("schedule group: {e:?}"));
    let config = Arc::new(StackConfig {
        stack: "reanimate-test".into(),
        instances_table,
        inbox_table,
        history_table,
        notify_queue_url: None,
        routes,
        schedule_group,
        scheduler_role_arn: "arn:aws:iam::000000000000:role/reanimate-scheduler".into(),
        event_bus,
        max_queue_delay: Duration::from_secs(900),
        retention: Duration::from_secs(3600),
        full_history: true,
    });
    let counters = RequestCounters::default();
    let runtime = reanimate_aws::stack::runtime(
        reanimate_atoms::registry(),
        &clients,
        Arc::clone(&config),
        &counters,
    );
    Stack {
        clients,
        config,
        dead_letter_url,
        counters,
        runtime,
    }
}

impl Stack {
    fn dead_letters(&self) -> DeadLetters {
        DeadLetters {
            sqs: self.clients.sqs.clone(),
            url: self.dead_letter_url.clone(),
            counters: self.counters.clone(),
        }
    }

    /// Sends a raw body to an atom's queue, as `aws sqs send-message` would.
    async fn send_raw(&self, atom: &str, body: &str) {
        self.clients
            .sqs
            .send_message()
            .queue_url(&self.config.routes[atom].url)
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

    /// One pass over every atom queue: receive a batch, run the handler, delete what succeeded.
    async fn pump_once(&self) -> usize {
        self.pump_queues(&atoms()).await
    }

    /// One pass over the queues of `only`.
    async fn pump_queues(&self, only: &[&str]) -> usize {
        let mut handled = 0;
        for &atom in only {
            let url = &self.config.routes[atom].url;
            let out = self
                .clients
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .unwrap_or_else(|e| panic!("receive: {e:?}"));
            let messages = out.messages();
            if messages.is_empty() {
                continue;
            }
            let mut event = SqsEvent::default();
            for m in messages {
                let mut record = SqsMessage::default();
                record.message_id = m.message_id.clone();
                record.receipt_handle = m.receipt_handle.clone();
                record.body = m.body.clone();
                record.attributes = m
                    .attributes()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str().to_string(), v.clone()))
                    .collect();
                event.records.push(record);
            }
            let deadline = reanimate_core::Timestamp::now_utc().plus(Duration::from_secs(30));
            let response =
                handle_event(&self.runtime, &self.dead_letters(), event, Some(deadline)).await;
            let failed: Vec<_> = response
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.clone())
                .collect();
            for m in messages {
                if !failed.contains(&m.message_id.clone().unwrap_or_default()) {
                    self.clients
                        .sqs
                        .delete_message()
                        .queue_url(url)
                        .receipt_handle(m.receipt_handle.clone().unwrap_or_default())
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("delete: {e:?}"));
                }
                handled += 1;
            }
        }
        handled
    }

    /// Pumps until `done` holds, within `limit`.
    async fn pump_until<F>(&self, limit: Duration, mut done: F)
    where
        F: AsyncFnMut(&Stack) -> bool,
    {
        let deadline = Instant::now() + limit;
        loop {
            if done(self).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "condition not reached within {limit:?}"
            );
            self.pump_once().await;
        }
    }

    /// Takes every message from `atom`'s queue (until a receive comes back empty), deleting them.
    async fn take_all(&self, atom: &str) -> Vec<reanimate_core::Envelope> {
        let url = &self.config.routes[atom].url;
        let mut taken = Vec::new();
        loop {
            let out = self
                .clients
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap_or_else(|e| panic!("receive: {e:?}"));
            let messages = out.messages();
            if messages.is_empty() {
                return taken;
            }
            for m in messages {
                let body = m.body().unwrap_or_default();
                taken.push(
                    reanimate_core::Envelope::from_json(body).unwrap_or_else(|e| panic!("{e}")),
                );
                self.clients
                    .sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("delete: {e:?}"));
            }
        }
    }

    async fn status(&self, instance: &str) -> Option<Status> {
        let id = InstanceId::new(instance).unwrap_or_else(|e| panic!("{e}"));
        self.runtime
            .store()
            .load(&id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|r| r.status)
    }

    async fn record(&self, instance: &str) -> reanimate_core::InstanceRecord {
        let id = InstanceId::new(instance).unwrap_or_else(|e| panic!("{e}"));
        self.runtime
            .store()
            .load(&id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no {instance}"))
    }

    async fn dead_letter_reasons(&self) -> Vec<String> {
        let out = self
            .clients
            .sqs
            .receive_message()
            .queue_url(&self.dead_letter_url)
            .max_number_of_messages(10)
            .message_attribute_names("All")
            .send()
            .await
            .unwrap_or_else(|e| panic!("receive dead letters: {e:?}"));
        out.messages()
            .iter()
            .filter_map(|m| {
                m.message_attributes()?
                    .get("reanimate-error")?
                    .string_value
                    .clone()
            })
            .collect()
    }
}

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
#[ignore = "needs an AWS emulator; make test runs it"]
async fn an_atom_started_by_a_plain_sqs_message_fans_out_and_in() {
    let stack = stack().await;
    let input = FanOutInput {
        workers: 3,
        items_per_worker: 4,
        page_size: 2,
        failing_worker: None,
        countdown: None,
        spawn_per_step: 2,
        cancel_first: false,
        hold_secs: None,
        checksums: false,
        workers_start_at: None,
    };
    stack.start("fan-out", "job-1", json!(input)).await;
    stack
        .pump_until(LIMIT, async |s| {
            s.status("job-1").await == Some(Status::Completed)
        })
        .await;
    let root = stack.record("job-1").await;
    let output = root.result.unwrap_or_default();
    assert_eq!(output["completed"], 3);
    assert_eq!(
        output["progress_reports"], 12,
        "every item reported once: {output}"
    );
    assert!(
        root.outbox
            .iter()
            .any(|e| matches!(e, reanimate_core::record::Effect::Publish { .. }))
    );
}

#[tokio::test]
#[ignore = "needs an AWS emulator; make test runs it"]
async fn the_same_message_delivered_twice_is_applied_once() {
    let stack = stack().await;
    let input = json!({"from": 1, "interval_secs": 3600});
    stack.start("countdown", "twice", input.clone()).await;
    stack.start("countdown", "twice", input).await;
    let signal = json!({"schema": 1, "id": "client:extend", "target": "twice", "atom": "countdown",
        "event": {"kind": "signal", "name": "extend", "payload": {"by": 2}}});
    stack
        .pump_until(LIMIT, async |s| s.status("twice").await.is_some())
        .await;
    stack.send_raw("countdown", &signal.to_string()).await;
    stack.send_raw("countdown", &signal.to_string()).await;
    stack
        .pump_until(LIMIT, async |s| s.record("twice").await.transitions >= 2)
        .await;
    while stack.pump_once().await > 0 {}
    let record = stack.record("twice").await;
    assert_eq!(record.transitions, 2, "start and one extend, each once");
    let state: Value = serde_json::from_str(&record.state).unwrap_or_default();
    assert_eq!(state["remaining"], 3);
}

#[tokio::test]
#[ignore = "needs an AWS emulator; make test runs it"]
async fn bad_records_go_to_the_dead_letter_queue_with_a_reason_and_the_batch_succeeds() {
    let stack = stack().await;
    stack.send_raw("countdown", "this is not json").await;
    stack.send_raw("countdown", r#"{"schema":1,"id":"m","target":"x","atom":"no-such-atom","event":{"kind":"started","input":{}}}"#).await;
    stack
        .start(
            "countdown",
            "good",
            json!({"from": 1, "interval_secs": 3600}),
        )
        .await;
    stack
        .pump_until(LIMIT, async |s| s.status("good").await.is_some())
        .await;
    let mut reasons = Vec::new();
    let deadline = Instant::now() + LIMIT;
    while reasons.len() < 2 && Instant::now() < deadline {
        reasons.extend(stack.dead_letter_reasons().await);
    }
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].contains("message body is not a JSON envelope"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("unknown atom type \"no-such-atom\""),
        "{reasons:?}"
    );
}

#[tokio::test]
#[ignore = "needs an AWS emulator; make test runs it"]
async fn a_question_is_answered_through_the_inbox_and_a_bad_answer_is_refused() {
    let stack = stack().await;
    let input = ApprovalInput {
        question: "Deploy?".into(),
        timeout_secs: 3600,
        remind_after_secs: None,
        person: None,
    };
    stack.start("approval", "ask-1", json!(input)).await;
    stack
        .pump_until(LIMIT, async |s| s.status("ask-1").await.is_some())
        .await;
    let open = stack
        .runtime
        .inbox()
        .list_open()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let request = open
        .iter()
        .find(|e| e.request.instance.as_str() == "ask-1")
        .unwrap_or_else(|| panic!("no request: {open:?}"));
    let id = request.request.id.clone();
    let clock = reanimate_core::ports::SystemClock;
    let refused = reanimate_core::client::answer(
        stack.runtime.inbox(),
        stack.runtime.dispatcher(),
        &clock,
        &id,
        json!({"approved": "yes"}),
    )
    .await;
    let error = refused.expect_err("a string is not a boolean");
    assert!(error.reason.contains("/approved"), "{error}");
    reanimate_core::client::answer(
        stack.runtime.inbox(),
        stack.runtime.dispatcher(),
        &clock,
        &id,
        json!({"approved": true, "comment": "go"}),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    stack
        .pump_until(LIMIT, async |s| {
            s.status("ask-1").await == Some(Status::Completed)
        })
        .await;
    let result = stack.record("ask-1").await.result.unwrap_or_default();
    assert_eq!(
        (result["approved"].clone(), result["outcome"].clone()),
        (json!(true), json!("answered"))
    );
    let entry = stack
        .runtime
        .inbox()
        .get(&id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("gone"));
    assert_eq!(
        entry.answer,
        Some(json!({"approved": true, "comment": "go"}))
    );
}

#[tokio::test]
#[ignore = "needs an AWS emulator; make test runs it"]
async fn a_conflict_free_step_makes_one_read_and_one_write() {
    let stack = stack().await;
    stack
        .start(
            "countdown",
            "count-me",
            json!({"from": 2, "interval_secs": 3600}),
        )
        .await;
    stack
        .pump_until(LIMIT, async |s| s.status("count-me").await.is_some())
        .await;
    let before = (
        stack.counters.get(Service::DynamoDb, "GetItem"),
        stack.counters.get(Service::DynamoDb, "PutItem"),
    );
    let signal = json!({"schema": 1, "id": "c:1", "target": "count-me", "atom": "countdown",
        "event": {"kind": "signal", "name": "extend", "payload": {"by": 1}}});
    stack.send_raw("countdown", &signal.to_string()).await;
    stack
        .pump_until(LIMIT, async |s| s.record("count-me").await.transitions == 2)
        .await;
    // The polling above reads the store too; count only the handler's calls: one step, one message.
    let reads = stack.counters.get(Service::DynamoDb, "GetItem") - before.0;
    let writes = stack.counters.get(Service::DynamoDb, "PutItem") - before.1;
    assert_eq!(writes, 1, "{:?}", stack.counters);
    assert!(reads >= 1);
    // Both steps armed the tick (a queue delay or a schedule, depending on how far the next hour
    // is), and the second one cancelled the first arming.
    let armed = stack.counters.get(Service::Sqs, "SendMessage")
        + stack.counters.get(Service::Scheduler, "CreateSchedule");
    assert_eq!(armed, 2, "{:?}", stack.counters);
    assert_eq!(
        stack.counters.get(Service::Scheduler, "DeleteSchedule"),
        1,
        "{:?}",
        stack.counters
    );
}

#[tokio::test]
#[ignore = "needs an AWS endpoint (make test starts LocalStack)"]
async fn secrets_from_answers_are_kept_in_secrets_manager_and_replaced_on_a_second_answer() {
    use reanimate_core::secrets::SecretStore;
    let clients = Clients::from_env().await;
    let counters = RequestCounters::default();
    let store = reanimate_aws::secrets::SecretsManager::new(
        clients.secrets.clone(),
        counters.clone(),
        "reanimate-test",
    );
    let name = format!("reanimate/{}/mailbox/access_token", unique("req"));
    let first = store
        .put(&name, "ya29.first-token")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(first.starts_with("arn:aws:secretsmanager:"), "{first}");
    assert!(
        !first.contains("ya29"),
        "the reference does not carry the value"
    );
    assert_eq!(
        store.get(&first).await.ok().as_deref(),
        Some("ya29.first-token")
    );
    let second = store
        .put(&name, "ya29.second-token")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        second, first,
        "answering again replaces the value of the same secret"
    );
    assert_eq!(
        store.get(&second).await.ok().as_deref(),
        Some("ya29.second-token")
    );
    assert_eq!(counters.get(Service::SecretsManager, "PutSecretValue"), 1);
    let missing = store
        .get("arn:aws:secretsmanager:us-east-1:000000000000:secret:nope")
        .await;
    assert!(missing.is_err());
    // A user who disconnects: the secret is gone at once, and deleting it again is no error.
    store.delete(&first).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(store.get(&first).await.is_err());
    store.delete(&first).await.unwrap_or_else(|e| panic!("{e}"));
}

#[tokio::test]
#[ignore = "needs an AWS endpoint (make test starts LocalStack)"]
async fn a_digest_sent_through_ses_reads_back_from_localstack_with_its_text_and_html_parts() {
    use reanimate_email::digest::{Mailer, OutgoingMail};
    let clients = Clients::from_env().await;
    let counters = RequestCounters::default();
    let from = format!("{}@reanimate.example", unique("digests"));
    clients
        .ses
        .verify_email_identity()
        .email_address(&from)
        .send()
        .await
        .unwrap_or_else(|e| panic!("verify: {e:?}"));
    let mailer = reanimate_email::aws::SesMailer::new(clients.ses.clone(), &from, counters.clone());
    let to = format!("{}@example.org", unique("sam"));
    let markdown =
        "# Daily digest for sam: 2026-01-05\n\n1 email: 1 email first.\n\n## 1. Board <deck>\n";
    let id = mailer
        .send(&OutgoingMail {
            to: to.clone(),
            subject: "Daily digest 2026-01-05: 1 emails, 1 that matter".into(),
            text: markdown.into(),
            html: reanimate_email::digest::to_html(markdown),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!id.is_empty());
    let sent = reanimate_demo::email_live::delivered_to(&to)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].text, markdown);
    assert!(
        sent[0].html.contains("Board &lt;deck&gt;"),
        "{}",
        sent[0].html
    );
    assert_eq!(counters.get(Service::Ses, "SendEmail"), 1);
}

#[tokio::test]
#[ignore = "needs an AWS endpoint (make test starts LocalStack)"]
async fn digests_in_s3_read_back_by_key_and_list_by_user() {
    use reanimate_email::digest::{DigestStore, user_prefix};
    let clients = Clients::from_env().await;
    let bucket = unique("digests");
    clients
        .s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("bucket: {e:?}"));
    let counters = RequestCounters::default();
    let store = reanimate_email::aws::S3Digests::new(clients.s3.clone(), &bucket, counters.clone());
    for (key, text) in [
        ("digests/sam/2026-01-05.md", "# sam, Monday"),
        ("digests/sam/2026-01-06.md", "# sam, Tuesday"),
        ("digests/ada/2026-01-05.md", "# ada, Monday"),
    ] {
        let location = store.put(key, text).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(location, format!("s3://{bucket}/{key}"));
    }
    let sams = store
        .list(&user_prefix(Some("sam")))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        sams,
        ["digests/sam/2026-01-05.md", "digests/sam/2026-01-06.md"]
    );
    let all = store
        .list(&user_prefix(None))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all.len(), 3);
    let tuesday = store.get("digests/sam/2026-01-06.md").await;
    assert_eq!(tuesday.ok().flatten().as_deref(), Some("# sam, Tuesday"));
    let missing = store.get("digests/sam/2026-01-07.md").await;
    assert_eq!(
        missing.ok(),
        Some(None),
        "a missing digest is None, not an error"
    );
    assert_eq!(counters.get(Service::S3, "PutObject"), 3);
}

#[tokio::test]
#[ignore = "needs an AWS endpoint (make test starts LocalStack)"]
async fn a_recurring_timer_is_one_rate_schedule_whose_firings_carry_their_scheduled_time() {
    use reanimate_core::ports::TimerService;
    let stack = stack().await;
    let timer = reanimate_core::TimerId::new(format!("{}/1.0@", unique("ticker")))
        .unwrap_or_else(|e| panic!("{e}"));
    let envelope = reanimate_core::Envelope::new(
        reanimate_core::MessageId::for_timer(&timer),
        InstanceId::new("ticker-1").unwrap_or_else(|e| panic!("{e}")),
        "countdown",
        reanimate_core::Event::TimerFired {
            name: "tick".into(),
            timer: timer.clone(),
            fired_for: None,
        },
    );
    let timers = stack.runtime.timers();
    let first = reanimate_core::Timestamp::now_utc().plus(Duration::from_secs(86_400));
    for _ in 0..2 {
        // Twice, as a re-sent outbox would: one schedule.
        timers
            .schedule_recurring(&timer, first, Duration::from_secs(86_400), envelope.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let name = reanimate_aws::timers::schedule_name(&timer);
    let schedule = stack
        .clients
        .scheduler
        .get_schedule()
        .name(&name)
        .group_name(&stack.config.schedule_group)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(schedule.schedule_expression(), Some("rate(1 day)"));
    let input: Value = serde_json::from_str(
        schedule
            .target()
            .map(|t| t.input().unwrap_or(""))
            .unwrap_or(""),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        input["id"],
        format!("timer:{timer}@<aws.scheduler.scheduled-time>").as_str()
    );
    assert_eq!(
        input["event"]["fired_for"], "<aws.scheduler.scheduled-time>",
        "the firing carries its scheduled time, so the runtime can tell a copy from the next one"
    );
    timers
        .cancel(&timer)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let gone = stack
        .clients
        .scheduler
        .get_schedule()
        .name(&name)
        .group_name(&stack.config.schedule_group)
        .send()
        .await;
    assert!(gone.is_err(), "cancel deletes the schedule");
}

/// Every record of `table`.
async fn records(stack: &Stack) -> Vec<reanimate_core::InstanceRecord> {
    reanimate_aws::dynamo::scan_instances(&stack.clients.dynamodb, &stack.config.instances_table)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs an AWS emulator; make test runs it"]
async fn many_handlers_completing_children_of_one_parent_at_once_lose_nothing() {
    // 100 in `make test`; BENCHMARKS.md's figures are for CONTENTION_CHILDREN=200.
    let children: u32 = std::env::var("CONTENTION_CHILDREN")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100);
    let stack = stack().await;
    let input = FanOutInput {
        workers: children,
        items_per_worker: 1,
        page_size: 1,
        failing_worker: None,
        countdown: None,
        spawn_per_step: children,
        cancel_first: false,
        hold_secs: None,
        checksums: false,
        workers_start_at: None,
    };
    stack.start("fan-out", "hub", json!(input)).await;
    stack
        .pump_until(LIMIT, async |s| {
            s.pump_queues(&["fan-out"]).await;
            s.status("hub").await.is_some()
        })
        .await;
    // Every child starts, reports and completes; their messages to the parent wait on its queue.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        stack.pump_queues(&["worker"]).await;
        let done = records(&stack)
            .await
            .iter()
            .filter(|r| r.parent.is_some() && r.status == Status::Completed)
            .count();
        if done == children as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {children} children done"
        );
    }
    let messages = stack.take_all("fan-out").await;
    assert_eq!(
        messages.len(),
        2 * children as usize,
        "a progress and a completion each"
    );
    // All of them at once against one parent record, HANDLERS at a time, each in its own
    // handler (many more writers than a queue's MaximumConcurrency lets Lambda run).
    const HANDLERS: usize = 40;
    let conflicts_before = stack.counters.get(Service::DynamoDb, "PutItem(conflict)");
    let started = Instant::now();
    let results: Vec<_> =
        futures_util::StreamExt::collect(futures_util::StreamExt::buffer_unordered(
            futures_util::stream::iter(messages.into_iter().map(|env| stack.runtime.handle(env))),
            HANDLERS,
        ))
        .await;
    let elapsed = started.elapsed();
    let (mut applied, mut deferred) = (0, 0);
    for result in results {
        match result {
            Ok(reanimate_core::Disposition::Applied { .. }) => applied += 1,
            Ok(reanimate_core::Disposition::Deferred { .. }) => deferred += 1,
            other => panic!("a message failed or was dropped under contention: {other:?}"),
        }
    }
    let conflicts = stack.counters.get(Service::DynamoDb, "PutItem(conflict)") - conflicts_before;
    eprintln!(
        "{} messages to one parent, {HANDLERS} handlers at a time, in {elapsed:?}: {applied} applied at once, {deferred} deferred, {conflicts} conflicting saves",
        2 * children
    );
    assert!(conflicts > 0, "the handlers really contended");
    // The deferred ones come back on the queue, with their delay, and apply.
    stack
        .pump_until(Duration::from_secs(120), async |s| {
            s.pump_queues(&["fan-out"]).await;
            s.status("hub").await == Some(Status::Completed)
        })
        .await;
    let output = stack.record("hub").await.result.unwrap_or_default();
    assert_eq!(output["completed"], children);
    assert_eq!(output["progress_reports"], children);
    let sum: u64 = (0..children)
        .map(|_| reanimate_atoms::fan_out::item_value(0))
        .sum();
    assert_eq!(output["completed_sum"], sum);
    assert!(stack.dead_letter_reasons().await.is_empty());
}

#[tokio::test]
#[ignore = "needs an AWS emulator; make test runs it"]
async fn an_outbox_that_cannot_be_sent_is_marked_and_the_sweeper_sends_it() {
    use reanimate_core::ports::InstanceStore;
    let stack = stack().await;
    // A process whose route to the worker queue names a queue that does not exist (a route
    // missing after a redeploy): its step saves, then its sends fail.
    let mut broken = (*stack.config).clone();
    if let Some(route) = broken.routes.get_mut("worker") {
        route.url.push_str("-gone");
    }
    let broken = reanimate_aws::stack::runtime(
        reanimate_atoms::registry(),
        &stack.clients,
        Arc::new(broken),
        &stack.counters,
    );
    let input = FanOutInput {
        workers: 2,
        items_per_worker: 1,
        page_size: 1,
        failing_worker: None,
        countdown: None,
        spawn_per_step: 2,
        cancel_first: false,
        hold_secs: None,
        checksums: false,
        workers_start_at: None,
    };
    let start = reanimate_core::Envelope::start(
        reanimate_core::MessageId::new("start:swept").unwrap_or_else(|e| panic!("{e}")),
        InstanceId::new("swept").unwrap_or_else(|e| panic!("{e}")),
        "fan-out",
        json!(input),
    );
    let disposition = broken
        .handle(start)
        .await
        .unwrap_or_else(|e| panic!("the step is saved and the message done: {e}"));
    assert!(matches!(
        disposition,
        reanimate_core::Disposition::Applied { version: 1, .. }
    ));
    let now = reanimate_core::Timestamp::now_utc().plus(Duration::from_secs(1));
    let marked = stack
        .runtime
        .store()
        .pending_outboxes(now, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        marked,
        [(
            InstanceId::new("swept").unwrap_or_else(|e| panic!("{e}")),
            1
        )]
    );
    assert!(
        stack.take_all("worker").await.is_empty(),
        "nothing was sent"
    );
    // The sweeper, configured right, sends the outbox and clears the mark.
    let report = stack
        .runtime
        .sweep(Duration::ZERO, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.found, report.flushed), (1, 1), "{report:?}");
    let left = stack
        .runtime
        .store()
        .pending_outboxes(now, 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(left.is_empty(), "{left:?}");
    assert!(stack.record("swept").await.outbox.is_empty());
    stack
        .pump_until(LIMIT, async |s| {
            s.status("swept").await == Some(Status::Completed)
        })
        .await;
    assert_eq!(
        stack.record("swept").await.result.unwrap_or_default()["completed"],
        2
    );
}

#[tokio::test]
#[ignore = "needs an AWS emulator; make test runs it"]
async fn text_sqs_refuses_and_the_longest_ids_go_through_queues_and_schedules() {
    let stack = stack().await;
    // The longest root id (1,024 bytes, two-byte characters): its day-long tick is a Scheduler
    // schedule, whose name and description must stay within Scheduler's limits.
    let long = "é".repeat(reanimate_core::ids::MAX_ID_BYTES / 2);
    stack
        .start(
            "countdown",
            &long,
            json!({"from": 2, "interval_secs": 86_400}),
        )
        .await;
    stack
        .pump_until(LIMIT, async |s| s.status(&long).await.is_some())
        .await;
    assert_eq!(stack.status(&long).await, Some(Status::Suspended));
    assert_eq!(stack.counters.get(Service::Scheduler, "CreateSchedule"), 1);
    // A signal whose payload holds characters SQS refuses travels escaped and arrives intact.
    let odd = "\u{fffe}\u{ffff}\u{1}";
    reanimate_core::client::signal(
        stack.runtime.dispatcher(),
        reanimate_core::MessageId::new("client:odd").unwrap_or_else(|e| panic!("{e}")),
        InstanceId::new(long.clone()).unwrap_or_else(|e| panic!("{e}")),
        "countdown",
        &format!("strange{odd}"),
        json!(odd),
    )
    .await
    .unwrap_or_else(|e| panic!("SQS accepts the escaped body: {e}"));
    stack
        .pump_until(LIMIT, async |s| s.record(&long).await.transitions == 2)
        .await;
    let record = stack.record(&long).await;
    let history = stack
        .runtime
        .store()
        .history(&record.id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let detail = history.last().map(|h| h.detail.clone());
    assert_eq!(detail.as_deref(), Some(format!("strange{odd}").as_str()));
    // Ids derived from the longest root (a child's, a request's) are longer still: they are
    // stored and read back, and the inbox lists such a request.
    let parent = format!("p{}", "é".repeat(reanimate_core::ids::MAX_ID_BYTES / 2 - 1));
    stack
        .start(
            "fan-out",
            &parent,
            json!({"workers": 1, "items_per_worker": 1, "page_size": 1}),
        )
        .await;
    let asker = format!("a{}", "é".repeat(reanimate_core::ids::MAX_ID_BYTES / 2 - 1));
    stack
        .start(
            "approval",
            &asker,
            json!({"question": "Long?", "timeout_secs": 3600}),
        )
        .await;
    stack
        .pump_until(LIMIT, async |s| {
            s.status(&parent).await == Some(Status::Completed) && s.status(&asker).await.is_some()
        })
        .await;
    let open = stack
        .runtime
        .inbox()
        .list_open()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        open.iter().any(|e| e.request.instance.as_str() == asker
            && e.request.id.as_str().len() > reanimate_core::ids::MAX_ID_BYTES),
        "the long request is listed"
    );
    // A bad record whose reason holds such characters still reaches the dead-letter queue.
    stack
        .send_raw("countdown", &format!("not json {}", '\u{2603}'))
        .await;
    stack.pump_once().await;
    assert_eq!(stack.dead_letter_reasons().await.len(), 1);
}

#[tokio::test]
#[ignore = "needs an AWS emulator; make test runs it"]
async fn the_inbox_table_decides_between_answers_and_deadlines() {
    use reanimate_core::ports::{AnswerRecord, RequestStatus};
    use reanimate_core::record::{RequestOutcome, UserRequest};
    let stack = stack().await;
    let inbox = stack.runtime.inbox();
    let now = reanimate_core::Timestamp::now_utc();
    let open = |name: &str, deadline: Option<reanimate_core::Timestamp>| {
        let id = reanimate_core::RequestId::new(format!("{}?1.0", unique(name)))
            .unwrap_or_else(|e| panic!("{e}"));
        let request = UserRequest {
            id: id.clone(),
            instance: InstanceId::new("someone").unwrap_or_else(|e| panic!("{e}")),
            atom: "approval".into(),
            kind: "approval".into(),
            prompt: "?".into(),
            schema: json!({"type": "string"}),
            deadline,
            created_at: now,
            person: None,
        };
        async move {
            inbox.open(request).await.unwrap_or_else(|e| panic!("{e}"));
            id
        }
    };
    let ok = |r: reanimate_core::Result<AnswerRecord>| r.unwrap_or_else(|e| panic!("{e}"));
    let hour = Duration::from_secs(3600);

    // Two answers: the first wins; the deadline then finds it and applies it instead.
    let race = open("race", Some(now.plus(hour))).await;
    assert_eq!(
        ok(inbox.record_answer(&race, json!("a"), now).await),
        AnswerRecord::Recorded
    );
    match ok(inbox.record_answer(&race, json!("b"), now).await) {
        AnswerRecord::Refused(entry) => assert_eq!(entry.answer, Some(json!("a"))),
        other => panic!("{other:?}"),
    }
    let expired = inbox
        .expire(&race, now)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        expired,
        Some(json!("a")),
        "the recorded answer beats the deadline"
    );

    // The deadline first: the answer is refused.
    let late = open("late", Some(now.plus(hour))).await;
    assert_eq!(inbox.expire(&late, now).await.ok(), Some(None));
    match ok(inbox.record_answer(&late, json!("c"), now).await) {
        AnswerRecord::Refused(entry) => assert_eq!(entry.status, RequestStatus::Expired),
        other => panic!("{other:?}"),
    }
    // An answer after the deadline, before anyone expired the request, is refused too.
    let past = open("past", Some(now)).await;
    assert!(matches!(
        ok(inbox.record_answer(&past, json!("d"), now.plus(hour)).await),
        AnswerRecord::Refused(_)
    ));
    // Applied, then a withdrawal changes nothing; recorded but not applied, a withdrawal shows.
    let close = |id, outcome| async move {
        inbox
            .close(&id, outcome, now)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        inbox
            .get(&id)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("gone"))
    };
    let applied = open("applied", None).await;
    ok(inbox.record_answer(&applied, json!("e"), now).await);
    let entry = close(applied.clone(), RequestOutcome::Answered).await;
    assert!(entry.status == RequestStatus::Answered && entry.applied_at.is_some());
    let entry = close(applied, RequestOutcome::Withdrawn).await;
    assert_eq!(entry.status, RequestStatus::Answered);
    let unapplied = open("unapplied", None).await;
    ok(inbox.record_answer(&unapplied, json!("f"), now).await);
    let entry = close(unapplied, RequestOutcome::Withdrawn).await;
    assert_eq!(
        (entry.status, entry.answer),
        (RequestStatus::Withdrawn, Some(json!("f")))
    );
    let missing = reanimate_core::RequestId::new("nobody?1.0").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        ok(inbox.record_answer(&missing, json!("g"), now).await),
        AnswerRecord::Missing
    );
}
