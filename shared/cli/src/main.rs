//! `reanimate`: the user's side of a deployed stack. Starts, inspects, signals and cancels
//! instances, answers the inbox (`connect gmail` answers a mailbox request through a browser
//! consent), and reads digests. Every command that changes something sends an SQS message (or
//! records an inbox answer) exactly as the atoms themselves would.

mod connect;
mod dead_letters;
mod digests;
mod inbox;
mod instances;

use clap::{Parser, Subcommand};
use reanimate_aws::StackClient;
use reanimate_core::Error;
use serde_json::Value;
use std::process::ExitCode;

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
    /// Every transition the instance made, each with the event that caused it.
    History { instance: String },
    /// A sign-in link to the web console (operators: it reads the console's key with your AWS
    /// credentials; the link works for 15 minutes, the session it starts for 8 hours).
    Console,
    /// The user's questions.
    #[command(subcommand)]
    Inbox(inbox::Command),
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
    Digest(digests::Command),
    /// Messages the atoms refused or gave up on, and sending them back.
    #[command(subcommand, name = "dead-letters")]
    DeadLetters(dead_letters::Command),
    /// Connect an account an assistant asked for (Gmail), answering its request.
    #[command(subcommand)]
    Connect(connect::Command),
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
pub(crate) fn json_arg(text: &str) -> Result<Value, Failure> {
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

async fn connect_stack(outputs_path: &str) -> Result<StackClient, Failure> {
    // No readable outputs file means no stack to talk to: exit 1, like an unreachable stack.
    StackClient::connect(outputs_path)
        .await
        .map_err(|e| Failure {
            code: 1,
            message: e.reason,
        })
}

/// Answers a request as a user would (see `StackClient::answer`); a refusal exits 4.
pub(crate) async fn answer_request(
    stack: &StackClient,
    request: &reanimate_core::RequestId,
    answer: Value,
) -> Result<(), Failure> {
    stack
        .answer(request, answer)
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
    let json = cli.json;
    match cli.command {
        Command::Start { atom, input, id } => {
            instances::start(&stack, json, &atom, &input, id).await
        }
        Command::Status { instance } => instances::status(&stack, json, &instance).await,
        Command::History { instance } => instances::history(&stack, json, &instance).await,
        Command::Signal {
            instance,
            name,
            payload,
        } => instances::signal(&stack, json, &instance, &name, &payload).await,
        Command::Cancel { instance, reason } => {
            instances::cancel(&stack, json, &instance, &reason).await
        }
        Command::Inbox(command) => inbox::run(&stack, json, command).await,
        Command::Digest(command) => digests::run(&stack, json, command).await,
        Command::DeadLetters(command) => dead_letters::run(&stack, json, command).await,
        Command::Connect(command) => connect::run(&stack, json, command).await,
        Command::Console => inbox::console_link(&stack, json).await,
    }
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
