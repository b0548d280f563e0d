//! `digest list|show`: the digests the email assistant wrote, read through its digest store.

use crate::{Failure, not_found, print};
use clap::Subcommand;
use reanimate_aws::StackClient;
use reanimate_email::aws::S3Digests;
use reanimate_email::digest::{DigestStore, user_prefix};
use serde_json::json;

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Digests in the bucket, optionally for one user.
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Print one digest (its key as `digest list` shows it).
    Show { key: String },
}

pub(crate) async fn run(
    stack: &StackClient,
    json_mode: bool,
    command: Command,
) -> Result<(), Failure> {
    let store = S3Digests::of_stack(stack).map_err(|e| not_found(e.reason))?;
    match command {
        Command::List { user } => {
            let keys = store.list(&user_prefix(user.as_deref())).await?;
            print(
                json_mode,
                &json!({"bucket": store.bucket(), "digests": keys}),
                || {
                    if keys.is_empty() {
                        "no digests".into()
                    } else {
                        keys.join("\n")
                    }
                },
            );
        }
        Command::Show { key } => {
            let markdown = store
                .get(&key)
                .await?
                .ok_or_else(|| not_found(format!("no digest {key}")))?;
            print(
                json_mode,
                &json!({"key": key, "markdown": markdown}),
                || markdown.clone(),
            );
        }
    }
    Ok(())
}
