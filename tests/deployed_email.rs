//! The email assistant on the deployed stack, the way `make demo` runs it: a start message on
//! the email-assistant queue, answers from `fixtures/demo-answers.json` through the inbox, six
//! Lambdas at work, digests read back from S3. Ignored by plain `cargo test`; `make integ` runs it.

use reanimate_core::Status;
use reanimate_demo::email_live::{self, Answers, Stack};
use reanimate_email::scenario::AnswerFile;
use reanimate_tests::{outputs_path, unique};
use std::time::Duration;

/// (from, stars) of every entry of a Markdown digest, in order.
fn entries(markdown: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = markdown.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter_map(|(i, line)| {
            let heading = line.strip_prefix("## ")?;
            let from = lines
                .get(i + 1)?
                .strip_prefix("From ")?
                .split(" · ")
                .next()?;
            Some((from.to_string(), heading.matches('★').count()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the deployed stack: make integ"]
async fn the_hired_assistant_writes_daily_digests_to_s3_with_every_email_once_and_the_boss_first() {
    let stack = Stack::connect(&outputs_path())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/demo-answers.json"
    ))
    .unwrap_or_else(|e| panic!("{e}"));
    let answers =
        Answers::File(AnswerFile::parse(&text, Duration::ZERO).unwrap_or_else(|e| panic!("{e}")));
    let user = unique("sam");
    let outcome = email_live::run(&stack, &user, &answers, true)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // "A short daily digest": one per day of the fixture's five days.
    let days: Vec<String> = outcome
        .digests
        .keys()
        .map(|k| k.rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        days,
        [
            "2026-01-05.md",
            "2026-01-06.md",
            "2026-01-07.md",
            "2026-01-08.md",
            "2026-01-09.md"
        ]
    );
    // Each digest was delivered by SES too: one email per day, its text the stored Markdown.
    assert_eq!(outcome.delivered.len(), 5, "{:?}", outcome.delivered);
    for mail in &outcome.delivered {
        assert!(
            mail.subject.starts_with("Daily digest 2026-01-0"),
            "{}",
            mail.subject
        );
        assert!(outcome.digests.values().any(|d| d == &mail.text));
        assert!(mail.html.contains("<h1>Daily digest for"), "{}", mail.html);
    }
    let counted: u64 = outcome.report["digests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["emails"].as_u64())
        .sum();
    assert_eq!(counted, 321, "every email of the mailbox is in a digest");
    // "A short daily digest": the mail that matters, then one line per sender.
    for (key, markdown) in &outcome.digests {
        assert!(markdown.contains("\n## Everything else\n"), "{key}");
    }
    for (key, markdown) in &outcome.digests {
        let list = entries(markdown);
        let boss = list
            .iter()
            .take_while(|(from, _)| from == "dana@acme.example")
            .count();
        assert!(boss > 0, "{key}: the boss's mail comes first");
        assert_eq!(
            boss,
            list.iter()
                .filter(|(from, _)| from == "dana@acme.example")
                .count(),
            "{key}"
        );
        assert!(
            list.windows(2).all(|w| w[0].1 >= w[1].1),
            "{key}: most important first"
        );
    }
    // Every instance of the run finished, except the assistant waiting for its next digest.
    assert_eq!(outcome.assistant.status, Status::Suspended);
    assert!(outcome.assistant.waiting.timers.contains_key("next-digest"));
    let counts = outcome.by_atom();
    assert_eq!(counts.get("write-digest"), Some(&5));
    assert_eq!(counts.get("fetch-emails"), Some(&1));
    assert!(
        outcome
            .instances
            .iter()
            .filter(|r| r.atom != "email-assistant")
            .all(|r| r.status == Status::Completed)
    );
}
