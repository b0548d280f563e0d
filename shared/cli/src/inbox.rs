//! `inbox list|show|answer`: the user's questions.

use crate::{Failure, answer_request, json_arg, not_found, print};
use clap::Subcommand;
use reanimate_aws::StackClient;
use reanimate_core::RequestId;
use serde_json::{Value, json};

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Open questions, oldest first.
    List,
    /// One question with its JSON Schema and status.
    Show { request: String },
    /// Answer a question with JSON (or @file); it is checked against the question's schema.
    Answer { request: String, answer: String },
}

pub(crate) async fn run(
    stack: &StackClient,
    json_mode: bool,
    command: Command,
) -> Result<(), Failure> {
    match command {
        Command::List => {
            let open = stack.open_requests().await?;
            let value = serde_json::to_value(&open).unwrap_or(Value::Null);
            print(json_mode, &value, || {
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
        Command::Show { request } => {
            let id = RequestId::new(&request)?;
            let entry = stack
                .request(&id)
                .await?
                .ok_or_else(|| not_found(format!("no request {request}")))?;
            let value = serde_json::to_value(&entry).unwrap_or(Value::Null);
            print(json_mode, &value, || {
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
        Command::Answer { request, answer } => {
            let id = RequestId::new(&request)?;
            let answer = json_arg(&answer)?;
            if stack.request(&id).await?.is_none() {
                return Err(not_found(format!("no request {request}")));
            }
            answer_request(stack, &id, answer).await?;
            print(
                json_mode,
                &json!({"request": request, "answered": true}),
                || format!("answered {request}"),
            );
        }
    }
    Ok(())
}
