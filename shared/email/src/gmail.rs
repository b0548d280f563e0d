//! Gmail through its REST API: `users.messages.list` (paged with `pageToken`, narrowed with
//! `after:` when the analysis continues from a date) and `users.messages.get` (`format=full`).
//!
//! The OAuth access token is resolved from the secret store on every call; it never enters an
//! atom's state, a message or a log. A refused token (401/403) is terminal, with a reason that
//! says to authorise again. Throttling (429) and server errors are retried with backoff, then
//! handed back to the queue as retryable.

use crate::mail::{Email, FetchPage, GetEmails, MailSource, MailboxRef, Page};
use base64::Engine as _;
use reanimate_core::secrets::SecretStore;
use reanimate_core::{BoxFuture, Error, Result, Timestamp};
use reanimate_llm::{Attempt, Limits, with_retries};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// The public API root.
pub const GMAIL_API: &str = "https://gmail.googleapis.com";

#[derive(Clone)]
pub struct GmailSource {
    http: reqwest::Client,
    base: String,
    secrets: Arc<dyn SecretStore>,
    limits: Limits,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for GmailSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GmailSource")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl GmailSource {
    /// `base` is [`GMAIL_API`] (or a test server).
    pub fn new(base: &str, secrets: Arc<dyn SecretStore>, limits: Limits) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(limits.timeout)
            .build()
            .map_err(|e| Error::terminal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            secrets,
            limits,
            permits: Arc::new(Semaphore::new(limits.concurrency.max(1))),
        })
    }

    async fn token(&self, mailbox: &MailboxRef) -> Result<String> {
        let MailboxRef::Gmail { access_token, .. } = mailbox else {
            return Err(Error::terminal("not a Gmail mailbox"));
        };
        self.secrets.get(access_token).await
    }

    /// GET `path_and_query` with the token, retrying what is worth retrying.
    async fn get_json(&self, token: &str, path_and_query: &str) -> Result<Value> {
        let url = format!("{}{path_and_query}", self.base);
        with_retries(&self.limits, &self.permits, "Gmail", || async {
            let reply = match reanimate_llm::send(self.http.get(&url).bearer_auth(token)).await {
                Attempt::Done(reply) => reply,
                Attempt::Retry { reason, after } => return Attempt::Retry { reason, after },
                Attempt::Fail(error) => return Attempt::Fail(error),
            };
            let (status, message) = (reply.status, reply.error_message());
            match status.as_u16() {
                200..=299 => Attempt::Done(reply.json),
                401 | 403 => Attempt::Fail(Error::terminal(format!(
                    "Gmail refused the access token (HTTP {status}: {message}); the user must authorise again"
                ))),
                _ => Attempt::Fail(Error::terminal(format!("Gmail: HTTP {status}: {message}"))),
            }
        })
        .await
    }

    async fn message(&self, token: &str, id: &str) -> Result<Email> {
        let id_ok = id.chars().all(|c| c.is_ascii_alphanumeric());
        if !id_ok {
            return Err(Error::terminal(format!("bad Gmail message id {id:?}")));
        }
        let json = self
            .get_json(
                token,
                &format!("/gmail/v1/users/me/messages/{id}?format=full"),
            )
            .await?;
        parse_message(&json)
    }
}

/// A `users.messages.get` resource (format=full) as an [`Email`].
pub fn parse_message(json: &Value) -> Result<Email> {
    let id = json["id"]
        .as_str()
        .ok_or_else(|| Error::terminal("Gmail message without an id"))?;
    let header = |name: &str| {
        json["payload"]["headers"]
            .as_array()
            .and_then(|hs| {
                hs.iter().find(|h| {
                    h["name"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
            })
            .and_then(|h| h["value"].as_str())
            .unwrap_or("")
            .to_string()
    };
    let from = header("From");
    let (from_name, address) = match (from.find('<'), from.rfind('>')) {
        (Some(open), Some(close)) if open < close => (
            from[..open].trim().trim_matches('"').to_string(),
            from[open + 1..close].trim().to_ascii_lowercase(),
        ),
        _ => (String::new(), from.trim().to_ascii_lowercase()),
    };
    let millis: u64 = json["internalDate"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| Error::terminal(format!("Gmail message {id} without internalDate")))?;
    let body = plain_text(&json["payload"])
        .unwrap_or_else(|| json["snippet"].as_str().unwrap_or("").to_string());
    Ok(Email {
        id: id.to_string(),
        from: address,
        from_name,
        subject: header("Subject"),
        date: Timestamp::from_millis(millis),
        body: body.trim().to_string(),
    })
}

/// The first `text/plain` part, decoded (Gmail uses unpadded or padded base64url).
fn plain_text(part: &Value) -> Option<String> {
    if part["mimeType"].as_str() == Some("text/plain")
        && let Some(data) = part["body"]["data"].as_str()
    {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(data.trim_end_matches('='))
            .ok()?;
        return Some(String::from_utf8_lossy(&bytes).into_owned());
    }
    part["parts"].as_array()?.iter().find_map(plain_text)
}

fn encode_query(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl MailSource for GmailSource {
    fn page<'a>(&'a self, request: &'a FetchPage) -> BoxFuture<'a, Result<Page>> {
        Box::pin(async move {
            let token = self.token(&request.mailbox).await?;
            let MailboxRef::Gmail { query, .. } = &request.mailbox else {
                return Err(Error::terminal("not a Gmail mailbox"));
            };
            let mut q: Vec<String> = query.iter().cloned().collect();
            if let Some(since) = request.since {
                q.push(format!("after:{}", since.as_millis() / 1000));
            }
            let mut path = format!(
                "/gmail/v1/users/me/messages?maxResults={}",
                request.limit.clamp(1, 500)
            );
            if !q.is_empty() {
                path += &format!("&q={}", encode_query(&q.join(" ")));
            }
            if let Some(cursor) = &request.cursor {
                path += &format!("&pageToken={}", encode_query(cursor));
            }
            let listed = self.get_json(&token, &path).await?;
            let mut emails = Vec::new();
            for m in listed["messages"].as_array().into_iter().flatten() {
                if let Some(id) = m["id"].as_str() {
                    emails.push(self.message(&token, id).await?);
                }
            }
            Ok(Page {
                emails,
                next: listed["nextPageToken"].as_str().map(str::to_string),
                oldest_first: false,
            })
        })
    }

    fn get<'a>(&'a self, request: &'a GetEmails) -> BoxFuture<'a, Result<Vec<Email>>> {
        Box::pin(async move {
            let token = self.token(&request.mailbox).await?;
            let mut emails = Vec::with_capacity(request.ids.len());
            for id in &request.ids {
                emails.push(self.message(&token, id).await?);
            }
            Ok(emails)
        })
    }
}
