//! Hires the email assistant on the deployed stack (LocalStack or AWS): a start message on its
//! SQS queue, answers through the inbox (from an answer file, or typed in a terminal), then waits
//! for the analysis to finish and reads the digests back from S3.

use reanimate_aws::StackClient;
use reanimate_core::{Error, InstanceRecord, Result, Status};
use reanimate_email::aws::S3Digests;
use reanimate_email::digest::{DigestStore, user_prefix};
use reanimate_email::scenario::AnswerFile;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, Write as _};
use std::time::{Duration, Instant};

/// How long the whole run may take before it is declared stuck.
pub const LIMIT: Duration = Duration::from_secs(300);

/// AWS requests LocalStack served, from its request log (`… localstack.request.aws : AWS
/// dynamodb.PutItem => 200`), from byte `from` on, by "service.Operation". The operations only
/// the demo itself makes (its `Scan` polling, reading the digests back) are left out.
pub fn requests_in_log(path: &str, from: u64) -> Option<BTreeMap<String, u64>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    let mut counts = BTreeMap::new();
    for line in text.lines() {
        let Some((_, rest)) = line.split_once("localstack.request.aws") else {
            continue;
        };
        let Some(operation) = rest
            .split_once("AWS ")
            .and_then(|(_, op)| op.split_whitespace().next())
        else {
            continue;
        };
        if ["dynamodb.Scan", "s3.ListObjectsV2", "s3.GetObject"].contains(&operation) {
            continue;
        }
        *counts.entry(operation.to_string()).or_default() += 1;
    }
    Some(counts)
}

/// The size of LocalStack's request log now, to count what a run adds to it.
pub fn log_offset(path: &str) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// How the questions get answered.
#[derive(Debug)]
pub enum Answers {
    File(AnswerFile),
    /// Print each question's web inbox link and wait for the answer given in a browser (or,
    /// for a question no link was sent for, read a JSON answer from standard input).
    Interactive,
}

/// An email SES sent, as LocalStack's `GET /_aws/ses` reports it.
#[derive(Clone, Debug)]
pub struct DeliveredMail {
    pub to: Vec<String>,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The emails LocalStack's SES emulation sent to `to` (its `/_aws/ses` endpoint); none when not
/// on LocalStack.
pub async fn delivered_to(to: &str) -> Result<Vec<DeliveredMail>> {
    let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") else {
        return Ok(Vec::new());
    };
    let url = format!("{}/_aws/ses", endpoint.trim_end_matches('/'));
    let text = reqwest::get(&url)
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| Error::retryable(format!("GET {url}: {e}")))?
        .text()
        .await
        .map_err(|e| Error::retryable(format!("GET {url}: {e}")))?;
    let json: Value =
        serde_json::from_str(&text).map_err(|e| Error::terminal(format!("GET {url}: {e}")))?;
    let text_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
    Ok(json["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| DeliveredMail {
            to: m["Destination"]["ToAddresses"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text_of)
                .collect(),
            subject: text_of(&m["Subject"]),
            text: text_of(&m["Body"]["text_part"]),
            html: text_of(&m["Body"]["html_part"]),
        })
        .filter(|m| m.to.iter().any(|t| t == to))
        .collect())
}

/// The web inbox link the notifier emailed `to` for `request` (read back from LocalStack's SES),
/// waiting up to `limit` for it; none if no such email came.
pub async fn inbox_link(to: &str, request: &str, limit: Duration) -> Result<Option<String>> {
    if std::env::var("AWS_ENDPOINT_URL").is_err() {
        return Ok(None); // not on LocalStack: the email went to the person's real mailbox
    }
    let deadline = Instant::now() + limit;
    loop {
        let link = delivered_to(to)
            .await?
            .into_iter()
            .filter(|m| m.subject == reanimate_web::notify::SUBJECT)
            .flat_map(|m| {
                m.text
                    .split_whitespace()
                    .filter(|w| w.starts_with("http") && w.contains("/r/"))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .find(|link| reanimate_web::inbox::request_of_link(link).as_deref() == Some(request));
        if link.is_some() || Instant::now() >= deadline {
            return Ok(link);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Notifications are emails too; a run's digests are the others.
fn is_digest(mail: &DeliveredMail) -> bool {
    mail.subject != reanimate_web::notify::SUBJECT
}

/// Where the demo user's digests are emailed.
pub fn demo_address(user: &str) -> String {
    format!("{user}@example.org")
}

/// What one run produced.
#[derive(Debug)]
pub struct Outcome {
    pub user: String,
    pub assistant: InstanceRecord,
    /// This run's instances (the assistant and everything it started).
    pub instances: Vec<InstanceRecord>,
    /// S3 key → Markdown.
    pub digests: BTreeMap<String, String>,
    /// The digests delivered by email to the user (read back from LocalStack's SES).
    pub delivered: Vec<DeliveredMail>,
    pub report: Value,
    pub wall: Duration,
}

impl Outcome {
    /// Saved transitions (each is one conditional `PutItem` on the instances table).
    pub fn writes(&self) -> u64 {
        self.instances.iter().map(|r| r.version).sum()
    }
    /// Steps the atoms took (events applied).
    pub fn steps(&self) -> u64 {
        self.instances.iter().map(|r| r.transitions).sum()
    }
    pub fn by_atom(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for r in &self.instances {
            *counts.entry(r.atom.as_str()).or_default() += 1;
        }
        counts
    }

    /// "1 bulk-email-analysis, 13 summarize-rank, …".
    pub fn by_atom_text(&self) -> String {
        self.by_atom()
            .iter()
            .map(|(atom, n)| format!("{n} {atom}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The deployed stack, as the demo drives it: a client of its queues, tables and inbox.
pub type Stack = StackClient;

/// Every digest `user` has, by key.
async fn digests(stack: &Stack, user: &str) -> Result<BTreeMap<String, String>> {
    let store = S3Digests::of_stack(stack)?;
    let mut digests = BTreeMap::new();
    for key in store.list(&user_prefix(Some(user))).await? {
        if let Some(markdown) = store.get(&key).await? {
            digests.insert(key, markdown);
        }
    }
    Ok(digests)
}

fn say(started: Instant, quiet: bool, line: impl AsRef<str>) {
    if !quiet {
        println!(
            "{:>7}  {}",
            format!("+{:.1}s", started.elapsed().as_secs_f64()),
            line.as_ref()
        );
    }
}

/// Reads one JSON answer for `prompt` from the terminal, until it parses.
fn ask_terminal(kind: &str, prompt: &str, schema: &Value) -> Value {
    let stdin = std::io::stdin();
    loop {
        println!("\n[{kind}] {prompt}\n  (JSON matching {schema})");
        print!("> ");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).unwrap_or(0) == 0 {
            return Value::Null;
        }
        match serde_json::from_str(line.trim()) {
            Ok(value) => return value,
            Err(e) => println!("not JSON: {e}"),
        }
    }
}

/// Hires the assistant for `user` and runs it until its first analysis is done.
pub async fn run(stack: &Stack, user: &str, answers: &Answers, quiet: bool) -> Result<Outcome> {
    let started = Instant::now();
    let deadline = started + LIMIT;
    let assistant = format!("assistant-{user}");
    let hire =
        json!({"user": user, "batch_size": 25, "recurring": true, "email": demo_address(user)});
    let assistant_id = stack
        .start("email-assistant", &assistant, hire.clone())
        .await?;
    say(
        started,
        quiet,
        format!("→ sent a start message to the email-assistant queue: {hire}"),
    );

    let mut answered = Vec::new();
    // Questions left to the person in a browser (interactive runs).
    let mut in_browser: Vec<reanimate_core::RequestId> = Vec::new();
    let mut analysis_seen = false;
    let mut last_status = BTreeMap::<String, Status>::new();
    loop {
        if Instant::now() > deadline {
            return Err(Error::terminal(format!(
                "the demo did not finish within {LIMIT:?}"
            )));
        }
        let family = stack.family(&assistant_id).await?;
        for r in &family {
            if last_status.get(r.id.as_str()) != Some(&r.status)
                && (r.parent.is_none()
                    || r.atom == "bulk-email-analysis"
                    || r.status.is_finished() && r.atom == "write-digest")
            {
                say(
                    started,
                    quiet,
                    format!("{:<22} {:<34} {}", r.atom, r.id.as_str(), r.status.as_str()),
                );
            }
            last_status.insert(r.id.to_string(), r.status);
        }
        let Some(root) = family.iter().find(|r| r.id.as_str() == assistant) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if root.status.is_finished() {
            return Err(Error::terminal(format!(
                "the assistant ended {}: {}",
                root.status.as_str(),
                root.error.clone().unwrap_or_default()
            )));
        }
        // Answer open questions.
        for request in root.waiting.requests.keys() {
            if answered.contains(request) {
                continue;
            }
            if in_browser.contains(request) {
                if stack
                    .request(request)
                    .await?
                    .is_some_and(|e| e.status != reanimate_core::ports::RequestStatus::Open)
                {
                    say(
                        started,
                        quiet,
                        format!("→ answered in the web inbox: {request}"),
                    );
                    answered.push(request.clone());
                }
                continue;
            }
            let Some(entry) = stack.request(request).await? else {
                continue; // the inbox write follows the record's save
            };
            let kind = entry.request.kind.clone();
            say(
                started,
                quiet,
                format!("? {} asks ({kind}): {}", assistant, entry.request.prompt),
            );
            // The person was emailed a link to the web inbox; show it.
            let link = match &entry.request.person {
                Some(person) => {
                    inbox_link(person, request.as_str(), Duration::from_secs(20)).await?
                }
                None => None,
            };
            if let Some(link) = &link {
                say(
                    started,
                    false,
                    format!(
                        "  inbox link emailed to {}: {link}",
                        entry.request.person.as_deref().unwrap_or_default()
                    ),
                );
                if matches!(answers, Answers::Interactive) {
                    println!(
                        "  open it in a browser and answer there (this machine: chromium --host-resolver-rules=\"MAP *.localhost.localstack.cloud 127.0.0.1\"); waiting for the answer…"
                    );
                    in_browser.push(request.clone());
                    continue;
                }
            }
            let answer = match answers {
                Answers::File(file) => file.answer(&kind).cloned().ok_or_else(|| {
                    Error::terminal(format!("the answer file has no answer for {kind:?}"))
                })?,
                Answers::Interactive => {
                    ask_terminal(&kind, &entry.request.prompt, &entry.request.schema)
                }
            };
            match stack.answer(request, answer.clone()).await {
                Ok(()) => {
                    say(started, quiet, format!("→ answered {kind}: {answer}"));
                    answered.push(request.clone());
                }
                Err(refused) if matches!(answers, Answers::Interactive) => {
                    println!("refused: {}", refused.reason);
                }
                Err(refused) => return Err(refused),
            }
        }
        let analysis = family.iter().find(|r| r.atom == "bulk-email-analysis");
        analysis_seen |= analysis.is_some();
        if let Some(analysis) = analysis
            && analysis.status.is_finished()
        {
            if analysis.status != Status::Completed {
                return Err(Error::terminal(format!(
                    "the analysis ended {}: {}",
                    analysis.status.as_str(),
                    analysis.error.clone().unwrap_or_default()
                )));
            }
            // The assistant hears of it and arms its next-digest timer.
            if root.waiting.timers.contains_key("next-digest") {
                let report = analysis.result.clone().unwrap_or(Value::Null);
                let digests = digests(stack, user).await?;
                let delivered = delivered_to(&demo_address(user))
                    .await?
                    .into_iter()
                    .filter(is_digest)
                    .collect();
                let instances = stack.family(&assistant_id).await?;
                let assistant = instances
                    .iter()
                    .find(|r| r.id == root.id)
                    .cloned()
                    .unwrap_or_else(|| root.clone());
                return Ok(Outcome {
                    user: user.to_string(),
                    assistant,
                    instances,
                    digests,
                    delivered,
                    report,
                    wall: started.elapsed(),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(if analysis_seen { 500 } else { 200 })).await;
    }
}
