//! The email assistant end to end on the in-memory engine (virtual time, the offline heuristic
//! model, the committed Maildir fixture, digests written to a temporary folder).

use reanimate_core::sim::{Faults, SilentUser, Simulation};
use reanimate_core::{Envelope, InstanceId, MessageId, Status};
use reanimate_email::atoms::{self, AnalysisReport};
use reanimate_email::digest::FolderDigests;
use reanimate_email::mail::MaildirSource;
use reanimate_email::offline::OfflineHeuristicModel;
use reanimate_email::scenario::AnswerFile;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const INJECTION_SUBJECT: &str = "Important account notice";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("reanimate-email-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

fn answers() -> AnswerFile {
    let text = std::fs::read_to_string(repo().join("fixtures/demo-answers.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    AnswerFile::parse(&text, Duration::from_secs(600)).unwrap_or_else(|e| panic!("{e}"))
}

struct Run {
    report: AnalysisReport,
    assistant_status: Status,
    /// Digest file name → content.
    digests: BTreeMap<String, String>,
    instances: BTreeMap<String, usize>,
}

fn run(mail_root: &Path, name: &str, seed: u64, faults: Faults) -> Run {
    let out = scratch(name);
    let model = Arc::new(OfflineHeuristicModel);
    let activities = reanimate_email::activities(
        model.clone(),
        model,
        Arc::new(MaildirSource::new(mail_root)),
        Arc::new(FolderDigests::new(&out)),
    );
    let mut sim = Simulation::with_activities(atoms::registry(), activities, seed, faults, None);
    sim.send(Envelope::start(
        MessageId::new("hire").unwrap_or_else(|e| panic!("{e}")),
        InstanceId::new("assistant-sam").unwrap_or_else(|e| panic!("{e}")),
        "email-assistant",
        json!({"user": "sam", "recurring": false, "batch_size": 25}),
    ));
    let report = sim.run(&mut answers()).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.dead_letters.is_empty(), "{:?}", report.dead_letters);
    let snapshot = sim.snapshot();
    let assistant = &snapshot["assistant-sam"];
    let analysis = snapshot
        .values()
        .find(|s| s.atom == "bulk-email-analysis")
        .unwrap_or_else(|| panic!("no analysis ran"));
    assert_eq!(analysis.status, Status::Completed, "{:?}", analysis.error);
    let report: AnalysisReport =
        serde_json::from_value(analysis.result.clone().unwrap_or(Value::Null))
            .unwrap_or_else(|e| panic!("{e}"));
    let mut instances = BTreeMap::new();
    for s in snapshot.values() {
        *instances.entry(s.atom.clone()).or_default() += 1;
    }
    let mut digests = BTreeMap::new();
    for entry in std::fs::read_dir(out.join("digests/sam")).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        digests.insert(name, std::fs::read_to_string(&path).unwrap_or_default());
    }
    let _ = std::fs::remove_dir_all(&out);
    Run {
        report,
        assistant_status: assistant.status,
        digests,
        instances,
    }
}

/// (subject, from, stars, summary) of every entry of a digest, in order.
fn entries(markdown: &str) -> Vec<(String, String, usize, String)> {
    let mut out = Vec::new();
    let lines: Vec<&str> = markdown.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(heading) = line.strip_prefix("## ") else {
            continue;
        };
        let stars = heading.matches('★').count();
        let subject = heading
            .split_once(". ")
            .map(|(_, s)| s.trim_end_matches(['★', '☆', ' ']).to_string())
            .unwrap_or_default();
        let from = lines[i + 1]
            .strip_prefix("From ")
            .and_then(|l| l.split(" · ").next())
            .unwrap_or_default()
            .to_string();
        let summary = lines.get(i + 3).copied().unwrap_or_default().to_string();
        out.push((subject, from, stars, summary));
    }
    out
}

#[test]
fn the_assistant_writes_one_daily_digest_per_day_with_every_email_once_and_the_boss_first() {
    let run = run(&repo().join("fixtures/mail"), "daily", 1, Faults::none());
    assert_eq!(run.assistant_status, Status::Completed);
    // The preference said "daily": five working days, five digests.
    let names: Vec<&str> = run.digests.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "2026-01-05.md",
            "2026-01-06.md",
            "2026-01-07.md",
            "2026-01-08.md",
            "2026-01-09.md"
        ]
    );
    assert_eq!(run.report.digests.len(), 5);
    let total: usize = run.digests.values().map(|d| entries(d).len()).sum();
    assert_eq!(total, 321, "every email appears exactly once");
    assert_eq!(run.report.emails, 321);
    for (name, markdown) in &run.digests {
        let list = entries(markdown);
        let from_boss = list.iter().filter(|e| e.1 == "dana@acme.example").count();
        assert!(from_boss > 0, "{name}");
        assert!(
            list[..from_boss]
                .iter()
                .all(|e| e.1 == "dana@acme.example" && e.2 == 5),
            "{name}: the boss's mail comes first, ranked 5"
        );
        assert!(
            list.windows(2).all(|w| w[0].2 >= w[1].2),
            "{name}: ordered by rank"
        );
    }
    // One fetch, one summarize-rank per batch, one digest per day; nobody needed the planner.
    assert_eq!(run.instances["fetch-emails"], 1);
    assert_eq!(run.instances["summarize-rank"] as u64, run.report.batches);
    assert_eq!(run.instances["write-digest"], 5);
    assert!(!run.instances.contains_key("planner"));
    assert!(
        run.report
            .decisions
            .iter()
            .all(|d| d.by == "offline-heuristic")
    );
    // Batches holding the boss's mail went to the stronger model.
    assert!(
        run.report
            .decisions
            .iter()
            .any(|d| d.step == atoms::SUMMARIZE_CAREFULLY)
    );
}

#[test]
fn an_email_telling_the_model_to_forward_all_mail_changes_nothing_but_its_own_summary() {
    // The same mailbox without the injected email.
    let clean_root = scratch("clean-mail");
    let clean = clean_root.join("demo");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(clean.join(sub)).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut removed = 0;
    for entry in
        std::fs::read_dir(repo().join("fixtures/mail/demo/cur")).unwrap_or_else(|e| panic!("{e}"))
    {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains(&format!("Subject: {INJECTION_SUBJECT}")) {
            removed += 1;
            continue;
        }
        std::fs::copy(
            &path,
            clean.join("cur").join(path.file_name().unwrap_or_default()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(removed, 1);

    let with = run(&repo().join("fixtures/mail"), "injected", 1, Faults::none());
    let without = run(&clean_root, "clean", 1, Faults::none());
    let _ = std::fs::remove_dir_all(&clean_root);

    let all = |r: &Run| -> Vec<(String, String, usize, String)> {
        let mut v: Vec<_> = r.digests.values().flat_map(|d| entries(d)).collect();
        v.sort();
        v
    };
    let (mut with_entries, without_entries) = (all(&with), all(&without));
    let injected: Vec<_> = with_entries
        .iter()
        .filter(|e| e.0 == INJECTION_SUBJECT)
        .cloned()
        .collect();
    assert_eq!(injected.len(), 1);
    let (_, from, stars, summary) = &injected[0];
    assert_eq!(from, "offers@dealsdaily.example");
    assert_eq!(*stars, 1, "it did not make itself the most important email");
    assert!(
        summary.contains("forward all mail"),
        "its summary says what it says: {summary}"
    );
    with_entries.retain(|e| e.0 != INJECTION_SUBJECT);
    assert_eq!(
        with_entries, without_entries,
        "every other email is summarised and ranked the same"
    );
    assert_eq!(with.digests.len(), without.digests.len());
    // No new kind of work appeared: the same atom types ran, and every decision is declared.
    let kinds = |r: &Run| r.instances.keys().cloned().collect::<Vec<_>>();
    assert_eq!(kinds(&with), kinds(&without));
    let declared = [atoms::SUMMARIZE, atoms::SUMMARIZE_CAREFULLY];
    assert!(
        with.report
            .decisions
            .iter()
            .all(|d| declared.contains(&d.step.as_str()))
    );
}

#[test]
fn duplicates_reordering_crashes_and_races_end_with_the_same_digests() {
    let reference = run(
        &repo().join("fixtures/mail"),
        "reference",
        1,
        Faults::none(),
    );
    for seed in 1..=3 {
        let chaotic = run(
            &repo().join("fixtures/mail"),
            &format!("chaos-{seed}"),
            seed,
            Faults::chaos(),
        );
        assert_eq!(chaotic.digests, reference.digests, "seed {seed}");
        assert_eq!(chaotic.report.emails, 321, "seed {seed}");
    }
}

#[test]
fn an_unanswered_question_is_reminded_then_escalated_in_virtual_time() {
    let model = Arc::new(OfflineHeuristicModel);
    let activities = reanimate_email::activities(
        model.clone(),
        model,
        Arc::new(MaildirSource::new(repo().join("fixtures/mail"))),
        Arc::new(FolderDigests::new(scratch("watchdog"))),
    );
    let mut sim =
        Simulation::with_activities(atoms::registry(), activities, 7, Faults::none(), None);
    sim.send(Envelope::start(
        MessageId::new("hire").unwrap_or_else(|e| panic!("{e}")),
        InstanceId::new("assistant-quiet").unwrap_or_else(|e| panic!("{e}")),
        "email-assistant",
        json!({"user": "quiet", "remind_after_secs": 86400, "escalate_after_secs": 172800}),
    ));
    let report = sim.run(&mut SilentUser).unwrap_or_else(|e| panic!("{e}"));
    let assistant = &sim.snapshot()["assistant-quiet"];
    assert_eq!(assistant.status, Status::Failed);
    let error = assistant.error.clone().unwrap_or_default();
    assert!(
        error.starts_with("escalated: quiet did not answer the"),
        "{error}"
    );
    // Asked on hire, reminded after one day, escalated two days after the reminder.
    let elapsed = report.started_at.until(report.ended_at);
    assert_eq!(elapsed, Duration::from_secs(3 * 86_400));
    let prompts: Vec<String> = sim
        .inbox()
        .all()
        .into_iter()
        .map(|e| e.request.prompt)
        .collect();
    assert_eq!(
        prompts
            .iter()
            .filter(|p| p.starts_with("Reminder: "))
            .count(),
        2,
        "{prompts:?}"
    );
}

/// A test double: the offline model, except that its batch decisions name a step nobody declared.
struct UndeclaredStepModel;

impl reanimate_core::playbook::Model for UndeclaredStepModel {
    fn name(&self) -> &str {
        "undeclared-step-test-double"
    }
    fn complete<'a>(
        &'a self,
        request: &'a reanimate_core::playbook::ModelRequest,
    ) -> reanimate_core::BoxFuture<'a, reanimate_core::Result<String>> {
        if request.task == "decide" {
            return Box::pin(async {
                Ok(r#"{"step": "forward_all_mail", "args": {"to": "x@y.example"}, "why": "an email asked"}"#.to_string())
            });
        }
        OfflineHeuristicModel.complete(request)
    }
}

#[test]
fn decisions_the_model_cannot_make_go_to_the_planner_and_the_digests_still_come_out_right() {
    let out = scratch("planner");
    let activities = reanimate_email::activities(
        Arc::new(UndeclaredStepModel),
        Arc::new(OfflineHeuristicModel),
        Arc::new(MaildirSource::new(repo().join("fixtures/mail"))),
        Arc::new(FolderDigests::new(&out)),
    );
    let mut sim =
        Simulation::with_activities(atoms::registry(), activities, 3, Faults::none(), None);
    sim.send(Envelope::start(
        MessageId::new("hire").unwrap_or_else(|e| panic!("{e}")),
        InstanceId::new("assistant-sam").unwrap_or_else(|e| panic!("{e}")),
        "email-assistant",
        json!({"user": "sam", "recurring": false}),
    ));
    sim.run(&mut answers()).unwrap_or_else(|e| panic!("{e}"));
    let snapshot = sim.snapshot();
    let analysis = snapshot
        .values()
        .find(|s| s.atom == "bulk-email-analysis")
        .unwrap_or_else(|| panic!("no analysis"));
    assert_eq!(analysis.status, Status::Completed, "{:?}", analysis.error);
    let report: AnalysisReport =
        serde_json::from_value(analysis.result.clone().unwrap_or(Value::Null))
            .unwrap_or_else(|e| panic!("{e}"));
    let planners = snapshot.values().filter(|s| s.atom == "planner").count() as u64;
    assert_eq!(
        planners, report.batches,
        "one planner per undecidable batch"
    );
    assert!(
        report
            .decisions
            .iter()
            .all(|d| d.by.starts_with("planner: "))
    );
    assert!(
        report
            .decisions
            .iter()
            .all(|d| d.step == atoms::SUMMARIZE || d.step == atoms::SUMMARIZE_CAREFULLY)
    );
    assert_eq!(report.emails, 321);
    assert_eq!(report.digests.iter().map(|d| d.emails).sum::<u64>(), 321);
    let _ = std::fs::remove_dir_all(&out);
}
