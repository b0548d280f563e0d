//! `reanimate`: the user's side of a deployed stack. Starts, inspects, signals and cancels
//! instances, answers the inbox (`connect gmail` answers a mailbox request through a browser
//! consent), and reads digests. Every command that changes something sends an SQS message (or
//! records an inbox answer) exactly as the atoms themselves would.

mod connect;
mod dead_letters;

use clap::{Parser, Subcommand};
use reanimate_aws::{Clients, RequestCounters, StackConfig};
use reanimate_core::ports::{Inbox, InstanceStore, SystemClock};
use reanimate_core::{Error, InstanceId, InstanceRecord, MessageId, RequestId, client};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::sync::Arc;

const AFTER_HELP: &str = "\
Exit codes: 0 done; 1 the stack could not be reached or failed; 2 bad usage; 3 not found;
4 refused (an answer that does not match its schema, that lost the race to another answer or
came after the deadline, a request no longer open, bad JSON).

The stack is the one described by its outputs file (written by `make deploy`); AWS_ENDPOINT_URL
and the usual AWS variables choose the endpoint and credentials.";

#[derive(Parser, Debug)]
#[command(name = "reanimate", version, about = "Drive durable atoms on a deployed reanimate stack.", after_help = AFTER_HELP)]
struct Cli {
    /// The stack's outputs file.
    #[arg(
        long,
        global = true,
        env = "REANIMATE_STACK_OUTPUTS",
        default_value = ".localstack/stack-outputs.json"
    )]
    outputs: String,
    /// Print JSON (one document) instead of text, for scripts.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start an instance of an atom with a JSON input (or @file).
    Start {
        atom: String,
        input: String,
        /// The instance id (default: the atom and a timestamp). Starting the same id twice starts it once.
        #[arg(long)]
        id: Option<String>,
    },
    /// Show an instance: status, what it waits for, its result or error.
    Status { instance: String },
    /// The instance's latest transitions, each with the event that caused it.
    History { instance: String },
    /// The user's questions.
    #[command(subcommand)]
    Inbox(InboxCommand),
    /// Send a named signal with an optional JSON payload.
    Signal {
        instance: String,
        name: String,
        #[arg(default_value = "null")]
        payload: String,
    },
    /// Cancel an instance and everything it started.
    Cancel {
        instance: String,
        #[arg(long, default_value = "cancelled from the CLI")]
        reason: String,
    },
    /// Digests written by the email assistant.
    #[command(subcommand)]
    Digest(DigestCommand),
    /// Messages the atoms refused or gave up on, and sending them back.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(dead_letters::Command),
    /// Connect an account an assistant asked for (Gmail), answering its request.
    #[command(subcommand)]
    Connect(connect::Command),
}

#[derive(Subcommand, Debug)]
enum InboxCommand {
    /// Open questions, oldest first.
    List,
    /// One question with its JSON Schema and status.
    Show { request: String },
    /// Answer a question with JSON (or @file); it is checked against the question's schema.
    Answer { request: String, answer: String },
}

#[derive(Subcommand, Debug)]
enum DigestCommand {
    /// Digests in the bucket, optionally for one user.
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Print one digest (its key as `digest list` shows it).
    Show { key: String },
}

/// An error with the exit code it maps to.
pub(crate) struct Failure {
    code: u8,
    message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = if e.is_retryable() { 1 } else { 4 };
        Failure {
            code,
            message: e.reason,
        }
    }
}

pub(crate) fn not_found(what: String) -> Failure {
    Failure {
        code: 3,
        message: what,
    }
}

pub(crate) fn refused(what: String) -> Failure {
    Failure {
        code: 4,
        message: what,
    }
}

/// JSON from the argument, or from the file after `@`.
fn json_arg(text: &str) -> Result<Value, Failure> {
    let owned;
    let body = match text.strip_prefix('@') {
        Some(path) => {
            owned = std::fs::read_to_string(path)
                .map_err(|e| refused(format!("cannot read {path}: {e}")))?;
            owned.as_str()
        }
        None => text,
    };
    serde_json::from_str(body).map_err(|e| refused(format!("not JSON: {e}")))
}

pub(crate) struct Stack {
    /// The CloudFormation stack's name (users' secrets are `reanimate/{name}/…`).
    name: String,
    clients: Clients,
    runtime: reanimate_aws::AwsRuntime,
    digest_bucket: Option<String>,
    outputs: std::collections::HashMap<String, String>,
}

async fn connect_stack(outputs_path: &str) -> Result<Stack, Failure> {
    // No readable outputs file means no stack to talk to: exit 1, like an unreachable stack.
    let outputs = reanimate_aws::config::read_outputs(outputs_path).map_err(|e| Failure {
        code: 1,
        message: e.reason,
    })?;
    let mut atoms = reanimate_atoms::registry().names();
    atoms.extend(reanimate_email::atoms::registry().names());
    let deployed: Vec<&str> = atoms
        .into_iter()
        .filter(|a| {
            outputs.contains_key(&format!(
                "{}QueueUrl",
                reanimate_aws::config::output_name(a)
            ))
        })
        .collect();
    let config = Arc::new(StackConfig::from_stack_outputs(&outputs, &deployed)?);
    let name = config.stack.clone();
    let clients = Clients::from_env().await;
    // A client of the tables and queues only: it never runs a step.
    let runtime = reanimate_aws::stack::runtime(
        reanimate_core::Registry::new(),
        &clients,
        config,
        &RequestCounters::default(),
    );
    Ok(Stack {
        name,
        clients,
        runtime,
        digest_bucket: outputs.get("DigestBucket").cloned(),
        outputs,
    })
}

/// A short, increasing tag for ids the CLI makes up.
fn now_tag() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{millis:x}")
}

async fn load(stack: &Stack, instance: &str) -> Result<InstanceRecord, Failure> {
    let id = InstanceId::new(instance)?;
    stack
        .runtime
        .store()
        .load(&id)
        .await?
        .ok_or_else(|| not_found(format!("no instance {instance}")))
}

/// Answers a request as a user would. Fields the question marks writeOnly (an OAuth token) go to
/// Secrets Manager; the instance and the inbox get the secret's ARN.
pub(crate) async fn answer_request(
    stack: &Stack,
    request: &RequestId,
    answer: Value,
) -> Result<(), Failure> {
    let secrets = reanimate_aws::secrets::SecretsManager::new(
        stack.clients.secrets.clone(),
        RequestCounters::default(),
        stack.name.clone(),
    );
    client::answer_with_secrets(
        stack.runtime.inbox(),
        stack.runtime.dispatcher(),
        &SystemClock,
        Some(&secrets),
        request,
        answer,
    )
    .await
    .map_err(|e| match e.is_retryable() {
        true => Failure::from(e),
        false => refused(e.reason),
    })
}

pub(crate) fn print(json_mode: bool, value: &Value, text: impl FnOnce() -> String) {
    if json_mode {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        );
    } else {
        println!("{}", text());
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let stack = connect_stack(&cli.outputs).await?;
    let dispatcher = stack.runtime.dispatcher();
    match cli.command {
        Command::Start { atom, input, id } => {
            let input = json_arg(&input)?;
            let id = id.unwrap_or_else(|| format!("{atom}-{}", now_tag()));
            client::start(
                dispatcher,
                MessageId::new(format!("start:{id}"))?,
                InstanceId::root(&id)?,
                &atom,
                input,
            )
            .await?;
            print(cli.json, &json!({"instance": id, "atom": atom}), || {
                format!("started {atom} {id}")
            });
        }
        Command::Status { instance } => {
            let r = load(&stack, &instance).await?;
            let w = &r.waiting;
            let value = json!({
                "instance": r.id.as_str(), "atom": r.atom, "status": r.status.as_str(),
                "version": r.version, "transitions": r.transitions,
                "parent": r.parent.as_ref().map(|p| p.id.as_str()),
                "waiting": {
                    "children": w.children.iter().map(|(id, c)| json!({"id": id.as_str(), "atom": c.atom, "tag": c.tag})).collect::<Vec<_>>(),
                    "timers": w.timers.iter().map(|(name, t)| json!({"name": name, "due": t.due.to_string()})).collect::<Vec<_>>(),
                    "requests": w.requests.iter().map(|(id, q)| json!({"id": id.as_str(), "kind": q.kind})).collect::<Vec<_>>(),
                    "calls": w.calls.values().map(|c| json!({"activity": c.activity, "tag": c.tag})).collect::<Vec<_>>(),
                },
                "state": serde_json::from_str::<Value>(&r.state).unwrap_or(Value::Null),
                "result": r.result, "error": r.error,
                "updated_at": r.updated_at.to_string(),
            });
            print(cli.json, &value, || {
                let mut out = format!(
                    "{} ({}) is {}, version {}, {} transitions, updated {}",
                    r.id,
                    r.atom,
                    r.status.as_str(),
                    r.version,
                    r.transitions,
                    r.updated_at
                );
                for (id, c) in &w.children {
                    out += &format!("\n  waits for child {id} ({}, tag {})", c.atom, c.tag);
                }
                for (name, t) in &w.timers {
                    out += &format!("\n  waits for timer {name} at {}", t.due);
                }
                for (id, q) in &w.requests {
                    out += &format!("\n  waits for the user: {id} ({})", q.kind);
                }
                for c in w.calls.values() {
                    out += &format!("\n  waits for activity {} ({})", c.activity, c.tag);
                }
                if let Some(result) = &r.result {
                    out += &format!("\n  result: {result}");
                }
                if let Some(error) = &r.error {
                    out += &format!("\n  error: {error}");
                }
                out
            });
        }
        Command::History { instance } => {
            let r = load(&stack, &instance).await?;
            let value = json!({"instance": r.id.as_str(), "transitions": r.transitions, "history": r.history});
            print(cli.json, &value, || {
                let mut out = String::new();
                let shown = r.history.len() as u64;
                if r.version > shown {
                    out += &format!(
                        "({} earlier transitions not kept; the history keeps the latest {})\n",
                        r.version - shown,
                        reanimate_core::record::HISTORY_ENTRIES
                    );
                }
                for h in &r.history {
                    out += &format!(
                        "v{:<4} {}  {:<18} {:<28} → {:<10} {} effects\n",
                        h.version,
                        h.at,
                        h.event,
                        h.detail,
                        h.status.as_str(),
                        h.effects
                    );
                }
                out.trim_end().to_string()
            });
        }
        Command::Inbox(InboxCommand::List) => {
            let open = stack.runtime.inbox().list_open().await?;
            let value = serde_json::to_value(&open).unwrap_or(Value::Null);
            print(cli.json, &value, || {
                if open.is_empty() {
                    return "no open questions".into();
                }
                open.iter()
                    .map(|e| {
                        format!(
                            "{}  [{}] from {}: {}",
                            e.request.id, e.request.kind, e.request.instance, e.request.prompt
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        Command::Inbox(InboxCommand::Show { request }) => {
            let id = RequestId::new(&request)?;
            let entry = stack
                .runtime
                .inbox()
                .get(&id)
                .await?
                .ok_or_else(|| not_found(format!("no request {request}")))?;
            let value = serde_json::to_value(&entry).unwrap_or(Value::Null);
            print(cli.json, &value, || {
                format!(
                    "{} [{}] from {} ({}), {:?}\n{}\nanswer schema: {}{}",
                    entry.request.id,
                    entry.request.kind,
                    entry.request.instance,
                    entry.request.atom,
                    entry.status,
                    entry.request.prompt,
                    entry.request.schema,
                    entry
                        .answer
                        .as_ref()
                        .map(|a| format!("\nanswer: {a}"))
                        .unwrap_or_default()
                )
            });
        }
        Command::Inbox(InboxCommand::Answer { request, answer }) => {
            let id = RequestId::new(&request)?;
            let answer = json_arg(&answer)?;
            if stack.runtime.inbox().get(&id).await?.is_none() {
                return Err(not_found(format!("no request {request}")));
            }
            answer_request(&stack, &id, answer).await?;
            print(
                cli.json,
                &json!({"request": request, "answered": true}),
                || format!("answered {request}"),
            );
        }
        Command::Signal {
            instance,
            name,
            payload,
        } => {
            let r = load(&stack, &instance).await?;
            let payload = json_arg(&payload)?;
            let message = MessageId::new(format!("signal:{instance}:{name}:{}", now_tag()))?;
            client::signal(dispatcher, message, r.id, &r.atom, &name, payload).await?;
            print(
                cli.json,
                &json!({"instance": instance, "signal": name}),
                || format!("sent {name} to {instance}"),
            );
        }
        Command::Cancel { instance, reason } => {
            let r = load(&stack, &instance).await?;
            let message = MessageId::new(format!("cancel:{instance}"))?;
            client::cancel(dispatcher, message, r.id, &r.atom, &reason).await?;
            print(
                cli.json,
                &json!({"instance": instance, "cancel": reason}),
                || format!("asked {instance} to cancel"),
            );
        }
        Command::DeadLetters(command) => dead_letters::run(&stack, cli.json, command).await?,
        Command::Connect(command) => connect::run(&stack, cli.json, command).await?,
        Command::Digest(command) => {
            let bucket = stack
                .digest_bucket
                .clone()
                .ok_or_else(|| not_found("the stack has no DigestBucket output".into()))?;
            let s3 = &stack.clients.s3;
            match command {
                DigestCommand::List { user } => {
                    let prefix = match &user {
                        Some(u) => format!("digests/{u}/"),
                        None => "digests/".into(),
                    };
                    let mut keys = Vec::new();
                    let mut token = None;
                    loop {
                        let page = s3
                            .list_objects_v2()
                            .bucket(&bucket)
                            .prefix(&prefix)
                            .set_continuation_token(token)
                            .send()
                            .await
                            .map_err(|e| reanimate_aws::errors::classify("S3 ListObjectsV2", e))?;
                        keys.extend(
                            page.contents()
                                .iter()
                                .filter_map(|o| o.key().map(str::to_string)),
                        );
                        match page.next_continuation_token {
                            Some(next) => token = Some(next),
                            None => break,
                        }
                    }
                    print(
                        cli.json,
                        &json!({"bucket": bucket, "digests": keys}),
                        || {
                            if keys.is_empty() {
                                "no digests".into()
                            } else {
                                keys.join("\n")
                            }
                        },
                    );
                }
                DigestCommand::Show { key } => {
                    let object = s3
                        .get_object()
                        .bucket(&bucket)
                        .key(&key)
                        .send()
                        .await
                        .map_err(|e| {
                            match e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                                true => not_found(format!("no digest {key}")),
                                false => Failure::from(reanimate_aws::errors::classify(
                                    "S3 GetObject",
                                    e,
                                )),
                            }
                        })?;
                    let bytes = object
                        .body
                        .collect()
                        .await
                        .map_err(|e| Failure::from(Error::retryable(e.to_string())))?
                        .into_bytes();
                    let markdown = String::from_utf8_lossy(&bytes).into_owned();
                    print(cli.json, &json!({"key": key, "markdown": markdown}), || {
                        markdown.clone()
                    });
                }
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("reanimate: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
