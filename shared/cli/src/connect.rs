//! `reanimate connect gmail`: the user consents in a browser (OAuth 2.0 authorization code with
//! PKCE and a loopback redirect, in [`reanimate_email::oauth`]), and the refresh token answers
//! the assistant's open mailbox request exactly as `reanimate inbox answer` would: to Secrets
//! Manager, with only its reference in the inbox and the message.

use crate::{Failure, not_found, print, refused};
use clap::{Args, Subcommand};
use reanimate_aws::StackClient;
use reanimate_core::ports::{Inbox, RequestStatus};
use reanimate_core::{Error, RequestId, schema};
use reanimate_email::oauth::{GOOGLE_AUTH_URL, GOOGLE_TOKEN_URL, OAuthClient};
use serde_json::{Value, json};
use std::time::Duration;

/// How long the browser has to come back with the code.
const CONSENT_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Connect a Gmail mailbox: consent in a browser, then answer the assistant's mailbox
    /// request with the resulting refresh token (kept in Secrets Manager).
    Gmail(GmailArgs),
}

#[derive(Args, Debug)]
pub(crate) struct GmailArgs {
    /// The open request to answer (default: the only open request that accepts a Gmail mailbox).
    #[arg(long)]
    request: Option<String>,
    /// The OAuth client id (a Google Cloud "Desktop app" client).
    #[arg(long, env = "REANIMATE_GMAIL_CLIENT_ID")]
    client_id: String,
    /// The OAuth client secret, if the client has one (Google's desktop clients do; it is not
    /// confidential).
    #[arg(long, env = "REANIMATE_GMAIL_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// The authorization (consent) endpoint.
    #[arg(long, default_value = GOOGLE_AUTH_URL)]
    auth_url: String,
    /// The token endpoint the code is exchanged at (the stack's functions must use the same).
    #[arg(long, default_value = GOOGLE_TOKEN_URL)]
    token_url: String,
    /// A Gmail search query narrowing what the assistant reads (`label:inbox`).
    #[arg(long)]
    query: Option<String>,
    /// Open the consent URL in the default browser (`xdg-open`, or `open` on macOS).
    #[arg(long)]
    open: bool,
}

/// The answer a mailbox request gets: the refresh token goes to the secret store on the way.
fn gmail_answer(refresh_token: &str, query: Option<&str>) -> Value {
    let mut mailbox = json!({"kind": "gmail", "refresh_token": refresh_token});
    if let Some(query) = query {
        mailbox["query"] = json!(query);
    }
    json!({ "mailbox": mailbox })
}

/// The request to answer: the one named, or the only open one whose schema takes a Gmail answer.
/// Checked before the consent, so the user never consents for an answer that would be refused.
async fn request_to_answer(
    stack: &StackClient,
    named: Option<&str>,
    query: Option<&str>,
) -> Result<RequestId, Failure> {
    // A stand-in with the real token's shape: only the schema is being asked.
    let probe = gmail_answer("placeholder-refresh-token", query);
    let inbox = stack.inbox();
    if let Some(named) = named {
        let id = RequestId::new(named)?;
        let entry = inbox
            .get(&id)
            .await?
            .ok_or_else(|| not_found(format!("no request {named}")))?;
        if entry.status != RequestStatus::Open {
            return Err(refused(format!(
                "request {named} is {:?}, not open",
                entry.status
            )));
        }
        schema::validate_answer(&entry.request.schema, &probe).map_err(|e| {
            refused(format!(
                "request {named} does not take a Gmail mailbox: {}",
                e.reason
            ))
        })?;
        return Ok(id);
    }
    let open = inbox.list_open().await?;
    let takers: Vec<_> = open
        .iter()
        .filter(|e| schema::validate_answer(&e.request.schema, &probe).is_ok())
        .collect();
    match takers.as_slice() {
        [one] => Ok(one.request.id.clone()),
        [] => Err(not_found(
            "no open request takes a Gmail mailbox (see `reanimate inbox list`)".into(),
        )),
        several => Err(refused(format!(
            "several open requests take a Gmail mailbox; choose one with --request: {}",
            several
                .iter()
                .map(|e| e.request.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn open_in_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    if let Err(e) = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        eprintln!("could not run {opener} ({e}); open the URL above yourself");
    }
}

pub(crate) async fn run(
    stack: &StackClient,
    json_mode: bool,
    command: Command,
) -> Result<(), Failure> {
    let Command::Gmail(args) = command;
    let request = request_to_answer(stack, args.request.as_deref(), args.query.as_deref()).await?;
    let client = OAuthClient {
        auth_url: args.auth_url,
        token_url: args.token_url,
        ..OAuthClient::google(args.client_id, args.client_secret)
    };
    let consent = client.consent().await?;
    // On stderr: stdout carries only the result (one JSON document with --json).
    eprintln!(
        "Open this URL in a browser and allow reading Gmail (waiting on {}):\n\n{}\n",
        consent.redirect_uri(),
        consent.url()
    );
    if args.open {
        open_in_browser(consent.url());
    }
    let tokens = tokio::time::timeout(CONSENT_TIMEOUT, consent.finish())
        .await
        .map_err(|_| {
            Failure::from(Error::terminal(format!(
                "no answer from the browser within {} minutes; nothing was stored",
                CONSENT_TIMEOUT.as_secs() / 60
            )))
        })??;
    let refresh_token = tokens
        .refresh_token()
        .ok_or_else(|| refused("the token endpoint returned no refresh token".into()))?;
    crate::answer_request(
        stack,
        &request,
        gmail_answer(refresh_token, args.query.as_deref()),
    )
    .await?;
    print(
        json_mode,
        &json!({"request": request.as_str(), "answered": true, "connected": "gmail"}),
        || format!("Gmail connected: answered {request}"),
    );
    Ok(())
}
