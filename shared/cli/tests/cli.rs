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
