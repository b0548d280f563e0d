//! The `reanimate` binary. Usage errors need no stack; the rest (ignored by plain `cargo test`)
//! runs against the deployed stack, as `make integ` does.

use serde_json::Value;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn outputs() -> String {
    std::env::var("REANIMATE_STACK_OUTPUTS").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../.localstack/stack-outputs.json"
        )
        .to_string()
    })
}

fn reanimate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_reanimate"))
        .args(["--outputs", &outputs()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn usage_errors_exit_2_and_a_missing_stack_exits_1_with_the_reason() {
    let help = Command::new(env!("CARGO_BIN_EXE_reanimate"))
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("inbox") && text.contains("Exit codes"),
        "{text}"
    );
    let bad = Command::new(env!("CARGO_BIN_EXE_reanimate"))
        .args(["inbox", "frobnicate"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bad.status.code(), Some(2));
    let missing = Command::new(env!("CARGO_BIN_EXE_reanimate"))
        .args(["--outputs", "/nonexistent/outputs.json", "status", "x"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("make deploy"));
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
#[ignore = "needs the deployed stack: make integ"]
fn start_answer_through_the_inbox_and_read_the_history() {
    let id = format!(
        "cli-approval-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            % 0xffff_ffff_ffff
    );
    let started = json(&reanimate(&[
        "--json",
        "start",
        "approval",
        r#"{"question": "Ship it?", "timeout_secs": 600}"#,
        "--id",
        &id,
    ]));
    assert_eq!(started["instance"], id.as_str());

    // The question shows up in the inbox.
    let mut request = String::new();
    wait_for("the question reaches the inbox", || {
        let open = json(&reanimate(&["--json", "inbox", "list"]));
        match open
            .as_array()
            .and_then(|a| a.iter().find(|e| e["request"]["instance"] == id.as_str()))
        {
            Some(entry) => {
                request = entry["request"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                true
            }
            None => false,
        }
    });
    let shown = json(&reanimate(&["--json", "inbox", "show", &request]));
    assert_eq!(shown["status"], "open");

    // A bad answer is refused with the schema's reason, exit 4, and changes nothing.
    let refused = reanimate(&["inbox", "answer", &request, r#"{"approved": "yes"}"#]);
    assert_eq!(refused.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("/approved"));
    let status = json(&reanimate(&["--json", "status", &id]));
    assert_eq!(status["status"], "suspended");
    assert_eq!(
        status["waiting"]["requests"].as_array().map(Vec::len),
        Some(1)
    );

    let answered = reanimate(&[
        "inbox",
        "answer",
        &request,
        r#"{"approved": true, "comment": "from the CLI"}"#,
    ]);
    assert!(
        answered.status.success(),
        "{}",
        String::from_utf8_lossy(&answered.stderr)
    );
    wait_for("the instance completes", || {
        json(&reanimate(&["--json", "status", &id]))["status"] == "completed"
    });
    let history = json(&reanimate(&["--json", "history", &id]));
    let events: Vec<&str> = history["history"]
        .as_array()
        .map(|h| h.iter().filter_map(|e| e["event"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(events, ["started", "user_answered"]);
    let text = String::from_utf8_lossy(&reanimate(&["history", &id]).stdout).into_owned();
    assert!(
        text.contains("user_answered") && text.contains("completed"),
        "{text}"
    );

    // An operator's sign-in link to the web console, on the stack's own URL.
    let console = json(&reanimate(&["--json", "console"]));
    let link = console["link"].as_str().unwrap_or_default();
    assert!(
        link.contains(".lambda-url.") && link.contains("/console/login?t="),
        "{console}"
    );

    // Unknown things are "not found", exit 3.
    assert_eq!(
        reanimate(&["status", "no-such-instance"]).status.code(),
        Some(3)
    );
    assert_eq!(
        reanimate(&["digest", "show", "digests/nobody/none.md"])
            .status
            .code(),
        Some(3)
    );
    let digests = json(&reanimate(&["--json", "digest", "list"]));
    assert!(digests["digests"].is_array());
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            % 0xffff_ffff_ffff
    )
}

#[test]
#[ignore = "needs the deployed stack: make integ"]
fn two_answers_to_one_question_the_second_is_told_it_lost() {
    let id = unique("cli-race");
    json(&reanimate(&[
        "--json",
        "start",
        "approval",
        r#"{"question": "Which one?", "timeout_secs": 600}"#,
        "--id",
        &id,
    ]));
    let mut request = String::new();
    wait_for("the question reaches the inbox", || {
        let open = json(&reanimate(&["--json", "inbox", "list"]));
        let entry = open
            .as_array()
            .and_then(|a| a.iter().find(|e| e["request"]["instance"] == id.as_str()))
            .cloned();
        entry.is_some_and(|e| {
            request = e["request"]["id"].as_str().unwrap_or_default().to_string();
            true
        })
    });
    let first = r#"{"approved": true, "comment": "first"}"#;
    assert!(
        reanimate(&["inbox", "answer", &request, first])
            .status
            .success()
    );
    let second = reanimate(&["inbox", "answer", &request, r#"{"approved": false}"#]);
    assert_eq!(second.status.code(), Some(4));
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        said.contains("already answered with another answer"),
        "{said}"
    );
    // The same answer again (a retried click) is fine.
    assert!(
        reanimate(&["inbox", "answer", &request, first])
            .status
            .success()
    );
    wait_for("the instance completes", || {
        json(&reanimate(&["--json", "status", &id]))["status"] == "completed"
    });
    let status = json(&reanimate(&["--json", "status", &id]));
    assert_eq!(
        status["result"]["comment"], "first",
        "the answer stored is the one applied"
    );
}

fn outputs_value(key: &str) -> String {
    let text = std::fs::read_to_string(outputs()).unwrap_or_else(|e| panic!("{e}"));
    let outputs: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    outputs[key].as_str().unwrap_or_default().to_string()
}

/// Sends `body` to `queue` as any SQS client would.
fn sqs_send(queue: &str, body: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    runtime.block_on(async {
        let clients = reanimate_aws::Clients::from_env().await;
        clients
            .sqs
            .send_message()
            .queue_url(queue)
            .message_body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
    });
}

#[test]
#[ignore = "needs the deployed stack: make integ"]
fn dead_letters_are_listed_with_their_reason_and_redriven_safely() {
    // A message the countdown refuses ends in its dead-letter queue with the reason.
    let marker = unique("cli-dead");
    sqs_send(
        &outputs_value("CountdownQueueUrl"),
        &format!("not json {marker}"),
    );
    let mut refused = Value::Null;
    wait_for("the refused message is listed", || {
        let listed = json(&reanimate(&[
            "--json",
            "dead-letters",
            "list",
            "countdown",
            "--limit",
            "100",
        ]));
        refused = listed["messages"]
            .as_array()
            .and_then(|m| {
                m.iter()
                    .find(|l| l["body"].as_str().is_some_and(|b| b.contains(&marker)))
            })
            .cloned()
            .unwrap_or(Value::Null);
        !refused.is_null()
    });
    assert!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not a JSON envelope")),
        "{refused}"
    );
    let message = refused["message_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let shown = json(&reanimate(&["--json", "dead-letters", "show", &message]));
    assert_eq!(shown["atom"], "countdown");

    // A good message in a dead-letter queue (as SQS leaves one after too many receives), twice,
    // as an interrupted redrive would leave it: sent back, it starts its instance once.
    let id = unique("cli-redriven");
    let start = serde_json::json!({"schema": 1, "id": format!("start:{id}"), "target": id,
        "atom": "countdown", "event": {"kind": "started", "input": {"from": 1, "interval_secs": 86400}}})
    .to_string();
    let dead = outputs_value("CountdownDeadLettersUrl");
    sqs_send(&dead, &start);
    sqs_send(&dead, &start);
    let mut sent = 0;
    wait_for("both copies are sent back", || {
        let report = json(&reanimate(&[
            "--json",
            "dead-letters",
            "redrive",
            "countdown",
        ]));
        sent += report["sent"]["countdown"].as_u64().unwrap_or(0);
        sent >= 3
    });
    wait_for("the redriven start is applied", || {
        reanimate(&["status", &id]).status.success()
    });
    let status = json(&reanimate(&["--json", "status", &id]));
    assert_eq!(status["transitions"], 1, "started once: {status}");
    // Unknown atoms and messages are "not found".
    assert_eq!(
        reanimate(&["dead-letters", "list", "no-such-atom"])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        reanimate(&["dead-letters", "show", "no-such-message"])
            .status
            .code(),
        Some(3)
    );
}
