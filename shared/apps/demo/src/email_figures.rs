//! The email pipeline's figures on the deployed stack (BENCHMARKS.md): hires the assistant on a
//! generated mailbox (`tools/make-mail-fixture fixtures/mail/bench-1000 --count 1000`) and
//! reports wall time, instances, steps and conditional writes per email.
//!
//!     make email-figures            # 1,000 emails
//!     EMAILS=321 MAILBOX=demo make email-figures

use reanimate_core::Result;
use reanimate_demo::email_live::{self, Answers, Stack};
use reanimate_email::scenario::AnswerFile;
use serde_json::json;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<()> {
    let path = std::env::var("REANIMATE_STACK_OUTPUTS")
        .unwrap_or_else(|_| ".localstack/stack-outputs.json".into());
    let mailbox = std::env::var("MAILBOX").unwrap_or_else(|_| "bench-1000".into());
    let stack = Stack::connect(&path).await?;
    let mut answers = AnswerFile {
        delay: Duration::ZERO,
        ..AnswerFile::default()
    };
    answers.answers.insert(
        "auth".into(),
        json!({"mailbox": {"kind": "maildir", "path": mailbox}}),
    );
    answers.answers.insert(
        "preferences".into(),
        json!({"text": "A short daily digest. Anything from my boss, dana@acme.example, is urgent; security alerts and customer escalations matter."}),
    );
    let user = format!(
        "bench-{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    );
    let outcome = email_live::run(&stack, &user, &Answers::File(answers), true).await?;
    let emails = outcome.report["emails"].as_u64().unwrap_or(0);
    let per = |n: u64| n as f64 / emails.max(1) as f64;
    println!("email pipeline on the deployed stack, mailbox {mailbox:?}");
    println!("  emails                     {emails}");
    println!("  batches                    {}", outcome.report["batches"]);
    println!("  digests                    {}", outcome.digests.len());
    println!(
        "  wall time                  {:.1} s (hire to last digest, answers included)",
        outcome.wall.as_secs_f64()
    );
    println!(
        "  emails per second          {:.1}",
        emails as f64 / outcome.wall.as_secs_f64()
    );
    println!(
        "  instances                  {} ({})",
        outcome.instances.len(),
        outcome.by_atom_text()
    );
    println!(
        "  steps                      {} ({:.3} per email)",
        outcome.steps(),
        per(outcome.steps())
    );
    println!(
        "  conditional writes         {} ({:.3} per email, {:.2} per step)",
        outcome.writes(),
        per(outcome.writes()),
        outcome.writes() as f64 / outcome.steps().max(1) as f64
    );
    Ok(())
}
