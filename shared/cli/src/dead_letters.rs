//! `reanimate dead-letters`: what the atoms refused or gave up on, why, and sending it back.

use crate::{Failure, not_found, print};
use clap::Subcommand;
use reanimate_aws::StackClient;
use reanimate_aws::dead_letters::DeadLetter;
use serde_json::json;

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// How many messages each atom's dead-letter queue holds, and the first of them.
    List {
        /// Only this atom's queue.
        atom: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// One dead letter: its reason, receive count and body.
    Show { message: String },
    /// Send dead letters back to their atom's queue (all, one atom's, or one message). Safe to
    /// repeat: a message sent back twice is applied once.
    Redrive {
        atom: Option<String>,
        #[arg(long)]
        message: Option<String>,
    },
}

fn summary(letter: &DeadLetter) -> String {
    let reason = letter
        .reason
        .as_deref()
        .unwrap_or("(no reason: SQS moved it after too many receives)");
    format!(
        "{}  [{}] received {} times: {reason}",
        letter.message_id, letter.atom, letter.receive_count
    )
}

pub(crate) async fn run(
    stack: &StackClient,
    json_mode: bool,
    command: Command,
) -> Result<(), Failure> {
    let dead = stack.dead_letters();
    if let Command::List {
        atom: Some(atom), ..
    }
    | Command::Redrive {
        atom: Some(atom), ..
    } = &command
        && !dead.queues().iter().any(|q| q.atom == *atom)
    {
        return Err(not_found(format!("no atom {atom} in the stack")));
    }
    match command {
        Command::List { atom, limit } => {
            let counts = dead.counts(atom.as_deref()).await?;
            let letters = dead.peek(atom.as_deref(), limit).await?;
            let value = json!({"counts": counts, "messages": letters});
            print(json_mode, &value, || {
                let mut out: Vec<String> = counts
                    .iter()
                    .map(|(atom, n)| format!("{atom}: {n}"))
                    .collect();
                out.extend(letters.iter().map(summary));
                out.join("\n")
            });
        }
        Command::Show { message } => {
            let letters = dead.peek(None, usize::MAX).await?;
            let letter = letters
                .into_iter()
                .find(|l| l.message_id == message)
                .ok_or_else(|| not_found(format!("no dead letter {message}")))?;
            let value = serde_json::to_value(&letter).unwrap_or_default();
            print(json_mode, &value, || {
                format!("{}\n{}", summary(&letter), letter.body)
            });
        }
        Command::Redrive { atom, message } => {
            let report = dead.redrive(atom.as_deref(), message.as_deref()).await?;
            if let Some(message) = &message
                && report.sent.is_empty()
            {
                return Err(not_found(format!("no dead letter {message}")));
            }
            let value = serde_json::to_value(&report).unwrap_or_default();
            print(json_mode, &value, || {
                if report.sent.is_empty() {
                    return "nothing to send back".into();
                }
                report
                    .sent
                    .iter()
                    .map(|(atom, n)| format!("sent {n} back to {atom}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
    }
    Ok(())
}
