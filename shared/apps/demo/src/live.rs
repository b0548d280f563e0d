//! The second half of `make demo`: the sample atoms live on the deployed stack (LocalStack), in
//! real time. Every start, signal and cancel is a plain SQS message; answers go through the inbox.
//! Transitions are printed as they appear in the instances table.

use reanimate_atoms::approval::ApprovalInput;
use reanimate_atoms::fan_out::FanOutInput;
use reanimate_aws::StackClient;
use reanimate_core::{InstanceId, InstanceRecord, MessageId, Result, Status};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

struct Live {
    stack: StackClient,
    started: Instant,
    seen: BTreeMap<String, u64>,
}

impl Live {
    async fn start(&self, atom: &str, target: &str, input: Value) -> Result<()> {
        println!("{:>7}  → start {atom} {target}", self.clock());
        self.stack.start(atom, target, input).await?;
        Ok(())
    }

    fn clock(&self) -> String {
        format!("+{:.1}s", self.started.elapsed().as_secs_f64())
    }

    async fn records(&self) -> Result<Vec<InstanceRecord>> {
        self.stack.list().await
    }

    /// Prints every transition not printed yet; returns the records.
    async fn observe(&mut self) -> Result<Vec<InstanceRecord>> {
        let records = self.records().await?;
        for r in &records {
            if self
                .seen
                .get(r.id.as_str())
                .is_some_and(|v| *v >= r.version)
            {
                continue;
            }
            self.seen.insert(r.id.to_string(), r.version);
            let detail = match (&r.result, &r.error) {
                (Some(result), _) => result.to_string(),
                (None, Some(error)) => error.clone(),
                _ => {
                    let w = &r.waiting;
                    format!(
                        "waiting: {} children, {} timers, {} questions{}",
                        w.children.len(),
                        w.timers.len(),
                        w.requests.len(),
                        if w.continuation.is_some() {
                            ", continuing"
                        } else {
                            ""
                        }
                    )
                }
            };
            println!(
                "{:>7}  {:<30} v{:<3} {:<10} {detail}",
                self.clock(),
                r.id.as_str(),
                r.version,
                r.status.as_str()
            );
        }
        Ok(records)
    }

    async fn until(
        &mut self,
        what: &str,
        done: impl Fn(&[InstanceRecord]) -> bool,
    ) -> Result<Vec<InstanceRecord>> {
        let deadline = Instant::now() + LIMIT;
        loop {
            let records = self.observe().await?;
            if done(&records) {
                return Ok(records);
            }
            if Instant::now() > deadline {
                return Err(reanimate_core::Error::terminal(format!(
                    "{what}: not within {LIMIT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn find<'a>(records: &'a [InstanceRecord], id: &str) -> Option<&'a InstanceRecord> {
    records.iter().find(|r| r.id.as_str() == id)
}

/// The main job: hire the email assistant for a demo user and print its digests.
async fn email_assistant(path: &str, run: &str) -> Result<()> {
    use reanimate_demo::email_live::{self, Answers};
    let stack = StackClient::connect(path).await?;
    let answers = if std::env::var("DEMO_INTERACTIVE").is_ok_and(|v| v == "1") {
        Answers::Interactive
    } else {
        let file =
            std::env::var("DEMO_ANSWERS").unwrap_or_else(|_| "fixtures/demo-answers.json".into());
        let text = std::fs::read_to_string(&file)
            .map_err(|e| reanimate_core::Error::terminal(format!("{file}: {e}")))?;
        Answers::File(
            reanimate_email::scenario::AnswerFile::parse(&text, Duration::ZERO)
                .map_err(reanimate_core::Error::terminal)?,
        )
    };
    println!(
        "== The email assistant, live: every atom its own Lambda behind its own SQS queue ==\n"
    );
    let request_log = std::env::var("REANIMATE_LOCALSTACK_LOG").ok();
    let log_start = request_log.as_deref().map_or(0, email_live::log_offset);
    let outcome = email_live::run(&stack, &format!("sam-{run}"), &answers, false).await?;
    let saved = std::path::Path::new("target/demo-digests");
    for (key, markdown) in &outcome.digests {
        let file = saved.join(key.rsplit('/').next().unwrap_or(key));
        let _ = std::fs::create_dir_all(saved);
        let _ = std::fs::write(&file, markdown);
        let mut lines = markdown.lines();
        println!(
            "\n---- s3://{}/{key} (full text: {}) ----",
            stack.output("DigestBucket")?,
            file.display()
        );
        for line in lines.by_ref().take(14) {
            println!("{line}");
        }
        if lines.next().is_some() {
            println!("[…]");
        }
    }
    if let Some(mail) = outcome.delivered.first() {
        println!(
            "\n---- delivered by SES to {} ({} digests sent): {} ----",
            mail.to.join(", "),
            outcome.delivered.len(),
            mail.subject
        );
        for line in mail.text.lines().take(14) {
            println!("{line}");
        }
    }
    let steps = outcome.steps();
    println!(
        "\n{} instances ({}), {steps} steps, {} conditional writes to the instances table ({:.2} per step), {} digests, {:.1} s of wall time.",
        outcome.instances.len(),
        outcome.by_atom_text(),
        outcome.writes(),
        outcome.writes() as f64 / steps.max(1) as f64,
        outcome.digests.len(),
        outcome.wall.as_secs_f64()
    );
    if let Some(requests) = request_log
        .as_deref()
        .and_then(|log| email_live::requests_in_log(log, log_start))
    {
        let total: u64 = requests.values().sum();
        let mut top: Vec<_> = requests.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        println!(
            "AWS requests served by LocalStack during the run: {total} ({:.2} per step): {}",
            total as f64 / steps.max(1) as f64,
            top.iter()
                .map(|(op, n)| format!("{op} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  (other runs on the same emulator count too; the demo's own Scan polling and digest reads are left out)"
        );
    }
    println!(
        "Decisions: {}",
        outcome.report["decisions"]
            .as_array()
            .map(|d| {
                d.iter()
                    .map(|d| {
                        format!(
                            "batch {} → {}",
                            d["batch"],
                            d["step"].as_str().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let path = std::env::var("REANIMATE_STACK_OUTPUTS")
        .unwrap_or_else(|_| ".localstack/stack-outputs.json".into());
    let mut live = Live {
        stack: StackClient::connect(&path).await?,
        started: Instant::now(),
        seen: BTreeMap::new(),
    };
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            % 0xfffff
    );
    println!(
        "reanimate live demo on {} (stack outputs {path})",
        std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "AWS".into())
    );
    email_assistant(&path, &run).await?;
    println!("\n== The sample atoms, live ==\n");
    println!(
        "every atom is its own Lambda fed by its own SQS queue; transitions as they land in DynamoDB:\n"
    );
    let before: BTreeSet<String> = live
        .records()
        .await?
        .into_iter()
        .map(|r| r.id.to_string())
        .collect();
    live.seen
        .extend(before.iter().map(|id| (id.clone(), u64::MAX)));

    let fan = format!("fan-out-{run}");
    let tick = format!("countdown-{run}");
    let asked = format!("approval-{run}");
    let silent = format!("approval-silent-{run}");
    let doomed = format!("cancelled-{run}");
    let fan_in = FanOutInput {
        workers: 3,
        items_per_worker: 4,
        page_size: 2,
        failing_worker: Some(1),
        countdown: None,
        spawn_per_step: 2,
        cancel_first: false,
        hold_secs: None,
        checksums: false,
        workers_start_at: None,
    };
    live.start("fan-out", &fan, json!(fan_in)).await?;
    live.start("countdown", &tick, json!({"from": 3, "interval_secs": 1}))
        .await?;
    let ask = ApprovalInput {
        question: "Ship release 1.4?".into(),
        timeout_secs: 300,
        remind_after_secs: None,
        person: None,
    };
    live.start("approval", &asked, json!(ask)).await?;
    let quiet = ApprovalInput {
        question: "Rotate the keys?".into(),
        timeout_secs: 5,
        remind_after_secs: None,
        person: None,
    };
    live.start("approval", &silent, json!(quiet)).await?;
    live.start(
        "fan-out",
        &doomed,
        json!({"workers": 2, "countdown": {"from": 7, "interval_secs": 86400}}),
    )
    .await?;
    let extend = MessageId::new(format!("extend:{tick}"))?;
    live.stack
        .signal(
            &InstanceId::new(&tick)?,
            "countdown",
            "extend",
            json!({"by": 1}),
            extend,
        )
        .await?;
    println!("{:>7}  → signal extend to {tick}", live.clock());

    // Answer the question once it is in the inbox: first wrongly, then properly.
    let records = live
        .until("the question reaches the instance", |rs| {
            find(rs, &asked).is_some_and(|r| !r.waiting.requests.is_empty())
        })
        .await?;
    let request = find(&records, &asked)
        .and_then(|r| r.waiting.requests.keys().next().cloned())
        .ok_or_else(|| reanimate_core::Error::terminal("no request"))?;
    let inbox_deadline = Instant::now() + LIMIT;
    while live.stack.request(&request).await?.is_none() && Instant::now() < inbox_deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = |v: Value| live.stack.answer(&request, v);
    match answer(json!("yes")).await {
        Err(refused) => println!(
            "{:>7}  → answer \"yes\" refused: {}",
            live.clock(),
            refused.reason
        ),
        Ok(()) => println!(
            "{:>7}  → answer \"yes\" accepted (unexpected)",
            live.clock()
        ),
    }
    answer(json!({"approved": true, "comment": "ship it"})).await?;
    println!("{:>7}  → answered {{\"approved\": true}}", live.clock());

    // Cancel the parent of the week-long countdowns once both are running.
    live.until("both countdowns start", |rs| {
        rs.iter()
            .filter(|r| r.parent.as_ref().is_some_and(|p| p.id.as_str() == doomed))
            .count()
            == 2
    })
    .await?;
    live.stack
        .cancel(&InstanceId::new(&doomed)?, "fan-out", "changed my mind")
        .await?;
    println!("{:>7}  → cancel {doomed}", live.clock());

    let roots = [
        fan.clone(),
        tick.clone(),
        asked.clone(),
        silent.clone(),
        doomed.clone(),
    ];
    let records = live
        .until("every instance finishes", |rs| {
            roots
                .iter()
                .all(|id| find(rs, id).is_some_and(|r| r.status.is_finished()))
                && rs
                    .iter()
                    .filter(|r| !before.contains(r.id.as_str()))
                    .all(|r| r.status.is_finished())
        })
        .await?;
    let mine: Vec<_> = records
        .iter()
        .filter(|r| !before.contains(r.id.as_str()))
        .collect();
    let steps: u64 = mine.iter().map(|r| r.version).sum();
    println!(
        "\n{} instances, {steps} saved transitions, in {:.1} s of wall time:",
        mine.len(),
        live.started.elapsed().as_secs_f64()
    );
    for r in &mine {
        let outcome = r
            .result
            .as_ref()
            .map(Value::to_string)
            .or(r.error.clone())
            .unwrap_or_default();
        println!(
            "  {:<30} {:<10} {:<10} {outcome}",
            r.id.as_str(),
            r.atom,
            r.status.as_str()
        );
    }
    let expect = [
        (fan.as_str(), Status::Completed),
        (tick.as_str(), Status::Completed),
        (asked.as_str(), Status::Completed),
        (silent.as_str(), Status::Completed),
        (doomed.as_str(), Status::Cancelled),
    ];
    for (id, status) in expect {
        if find(&records, id).map(|r| r.status) != Some(status) {
            return Err(reanimate_core::Error::terminal(format!(
                "{id} did not end {}",
                status.as_str()
            )));
        }
    }
    Ok(())
}
