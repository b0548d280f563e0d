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
    /// The web inbox link for the person a question is for (what their email holds).
    Link { request: String },
}

/// The stack's web address and the key behind `secret_output`.
async fn web_key(
    stack: &StackClient,
    secret_output: &str,
) -> Result<(String, reanimate_web::signing::Signer), Failure> {
    let base = stack.output("InboxUrl")?.trim_end_matches('/').to_string();
    let secret = stack.output(secret_output)?.to_string();
    Ok((base, reanimate_web::read_key(stack, &secret).await?))
}

pub(crate) async fn console_link(stack: &StackClient, json_mode: bool) -> Result<(), Failure> {
    let (base, key) = web_key(stack, "OperatorKeySecret").await?;
    let token = reanimate_web::console::login_token(&key, reanimate_core::Timestamp::now_utc());
    let link = format!("{base}/console/login?t={token}");
    print(json_mode, &serde_json::json!({"link": link}), || {
        link.clone()
    });
    Ok(())
}

pub(crate) async fn run(
    stack: &StackClient,
    json_mode: bool,
    command: Command,
) -> Result<(), Failure> {
    match command {
        Command::Link { request } => {
            let id = reanimate_core::RequestId::new(request.clone())
                .map_err(|e| super::refused(e.reason))?;
            let entry = stack
                .request(&id)
                .await?
                .ok_or_else(|| super::not_found(format!("no request {request}")))?;
            let person = entry.request.person.clone().ok_or_else(|| {
                super::refused(format!(
                    "request {request} names no person: answer it with `reanimate inbox answer`"
                ))
            })?;
            let (base, key) = web_key(stack, "InboxLinkKeySecret").await?;
            let token =
                reanimate_web::inbox::link_token(&key, &id, &person, entry.request.deadline);
            let link = format!("{base}/r/{token}");
            print(
                json_mode,
                &serde_json::json!({"link": link, "person": person}),
                || link.clone(),
            );
        }
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
