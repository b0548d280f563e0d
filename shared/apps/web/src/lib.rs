//! # reanimate-web
//!
//! What people see of a stack, served by the stack itself from one Lambda bootstrap:
//!
//! - **The inbox** ([`inbox`]): a person opens the link they were emailed (a token signed with
//!   the stack's link key, naming one request and one person, expiring), answers the request's
//!   form (built from its JSON Schema by [`form`], checked by the CLI's validator), and the atom
//!   resumes. `writeOnly` fields go to Secrets Manager, never into a page or the instance.
//! - **The console** ([`console`]): operators only (a session cookie signed with a separate key,
//!   started from a short-lived link `reanimate console` prints): instances by atom and status,
//!   an instance's full history, what it waits for, signal and cancel with confirmation, dead
//!   letters with a redrive that is safe to press twice.
//! - **Connect Gmail** ([`gmail`]): the mailbox request's OAuth authorization code flow (PKCE)
//!   runs through the app; the refresh token answers the request and goes to Secrets Manager.
//! - **The notifier** ([`notify`]): fed by the notify queue, it emails a request's person their
//!   link through Amazon SES.
//!
//! Every page is rendered on the server ([`pages`]), with a strict Content-Security-Policy (no
//! script at all), `SameSite=Strict` cookies and a signed token in every form (CSRF).

pub mod console;
pub mod form;
pub mod gmail;
pub mod http;
pub mod inbox;
pub mod notify;
pub mod pages;
pub mod signing;

use crate::http::{Request, Response};
use crate::pages::Pages;
use crate::signing::Signer;
use lambda_runtime::{LambdaEvent, service_fn};
use reanimate_aws::StackClient;
use reanimate_core::{Error, Result};
use serde_json::Value;

/// Everything a request handler needs.
#[derive(Debug)]
pub struct App {
    pub stack: StackClient,
    /// Signs people's links to requests and their forms.
    pub links: Signer,
    /// Signs operators' links, sessions and console forms.
    pub operators: Signer,
    pub pages: Pages,
    /// The function URL's base (`https://…/`), for links in emails.
    pub base_url: Option<String>,
    /// The OAuth provider Connect Gmail signs in with, if configured.
    pub oauth: Option<reanimate_email::oauth::OAuthClient>,
}

/// A secret's value (a signing key) by id.
pub async fn read_key(stack: &StackClient, secret_id: &str) -> Result<Signer> {
    let out = stack
        .clients()
        .secrets
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .map_err(|e| reanimate_aws::errors::classify("Secrets Manager GetSecretValue (key)", e))?;
    let key = out
        .secret_string()
        .ok_or_else(|| Error::terminal(format!("secret {secret_id} holds no string")))?;
    Signer::new(key.as_bytes()).map_err(Error::terminal)
}

fn env(name: &str) -> Result<String> {
    std::env::var(name)
        .map_err(|_| Error::terminal(format!("environment variable {name} is not set")))
}

impl App {
    /// The app as the template configures it (`REANIMATE_*`).
    pub async fn from_env() -> Result<Self> {
        // The console manages the dead-letter queues; the notifier (`REANIMATE_FUNCTION=notify`)
        // may not read the queues to find them.
        let stack = match std::env::var("REANIMATE_FUNCTION").as_deref() {
            Ok("notify") => StackClient::from_env().await?,
            _ => {
                StackClient::from_env()
                    .await?
                    .with_dead_letters_discovered()
                    .await?
            }
        };
        let links = read_key(&stack, &env("REANIMATE_LINK_KEY_SECRET")?).await?;
        // The notifier never opens the console: it has no operator key.
        let operators = match std::env::var("REANIMATE_OPERATOR_KEY_SECRET") {
            Ok(id) => read_key(&stack, &id).await?,
            Err(_) => Signer::new(signing::random_token(48)).map_err(Error::terminal)?,
        };
        Ok(Self {
            stack,
            links,
            operators,
            pages: Pages::default(),
            base_url: std::env::var("REANIMATE_INBOX_URL").ok(),
            oauth: gmail::client_from_env(),
        })
    }

    /// One HTTP request.
    pub async fn handle(&self, request: &Request) -> Response {
        let segments = request.segments();
        let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
        let outcome = match parts.as_slice() {
            ["static", "app.css"] => return Response::css(pages::STYLESHEET),
            ["r", token, rest @ ..] => inbox::route(self, request, token, rest).await,
            ["console", rest @ ..] => console::route(self, request, rest).await,
            ["oauth", "callback"] => gmail::callback(self, request).await,
            [] => {
                return self.pages.message(
                    200,
                    "Nothing to see here",
                    "Open the link in the email you received to answer a question.",
                    "ok",
                );
            }
            _ => {
                return self
                    .pages
                    .message(404, "Not found", "There is no such page.", "warn");
            }
        };
        outcome.unwrap_or_else(|error| {
            tracing::error!(reason = %error.reason, "request failed");
            let text = if error.is_retryable() {
                "Something went wrong on our side; please try again in a minute."
            } else {
                "Something went wrong; this could not be done."
            };
            self.pages.message(500, "Sorry", text, "warn")
        })
    }
}

/// The Lambda entry point: function URL requests get pages; notify-queue records get emails.
pub async fn serve() -> std::result::Result<(), lambda_runtime::Error> {
    reanimate_aws::lambda::init_tracing();
    let app = std::sync::Arc::new(App::from_env().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let app = std::sync::Arc::clone(&app);
        async move {
            if event.payload.get("Records").is_some() {
                let records = serde_json::from_value(event.payload)?;
                let response = notify::handle(&app, records).await;
                return Ok::<Value, lambda_runtime::Error>(serde_json::to_value(response)?);
            }
            let request: Request = serde_json::from_value(event.payload)?;
            let response = app.handle(&request).await;
            Ok(serde_json::to_value(response)?)
        }
    }))
    .await
}
