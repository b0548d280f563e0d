//! Gmail through its REST API: `users.messages.list` (paged with `pageToken`, narrowed with
//! `after:` when the analysis continues from a date), `users.messages.get` with `format=metadata`
//! for a listing (headers only, never a body) and `format=raw` for reading (the RFC 822 bytes,
//! parsed by [`crate::mail::parse_message`] like any other mail).
//!
//! The mailbox names a secret holding the user's OAuth refresh token. Access tokens are minted
//! from it ([`crate::oauth`]) and cached in the process per secret until shortly before they
//! expire; a 401 refreshes once and retries. A refresh token Google no longer accepts
//! (`invalid_grant`: revoked, expired, password changed) is a terminal error whose reason starts
//! with [`GMAIL_DISCONNECTED`], so the assistant can ask the user to connect again. No token
//! enters an atom's state, a message or a log. Throttling (429, and 403 with a rate limit reason)
//! and server errors are retried with backoff, then handed back to the queue as retryable.

use crate::mail::{
    Email, EmailHeader, FetchPage, GetEmails, MailSource, MailboxRef, Page, header_from_fields,
};
use crate::oauth::{OAuthClient, TokenError};
use base64::Engine as _;
use reanimate_core::secrets::SecretStore;
use reanimate_core::{BoxFuture, Error, Result, Timestamp};
use reanimate_llm::{Attempt, Limits, with_retries};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The public API root.
pub const GMAIL_API: &str = "https://gmail.googleapis.com";

/// How every error that only the user can fix by connecting Gmail again begins.
pub const GMAIL_DISCONNECTED: &str = "gmail disconnected";

/// Access tokens are replaced this long before they expire, so none expires in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// The lifetime assumed when the token endpoint does not say (Google's documented one); a 401
/// refreshes earlier anyway.
const ASSUMED_LIFETIME: Duration = Duration::from_secs(3600);

/// Gmail's 403 reasons for quotas that recover within seconds.
const RATE_LIMIT_REASONS: [&str; 2] = ["rateLimitExceeded", "userRateLimitExceeded"];

struct CachedToken {
    access_token: String,
    fresh_until: Instant,
}

/// What one Gmail request came to, before a refresh is considered.
enum Fetched {
    Json(Value),
    /// 401: the access token is not (or no longer) accepted; carries Gmail's message.
    Unauthorized(String),
    /// 404: a message deleted since it was listed.
    Gone,
}

#[derive(Clone)]
pub struct GmailSource {
    http: reqwest::Client,
    base: String,
    oauth: OAuthClient,
    secrets: Arc<dyn SecretStore>,
    limits: Limits,
    permits: Arc<Semaphore>,
    /// Access tokens by the secret reference they were minted from.
    tokens: Arc<Mutex<HashMap<String, CachedToken>>>,
}

impl std::fmt::Debug for GmailSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GmailSource")
            .field("base", &self.base)
            .field("oauth", &self.oauth)
            .finish_non_exhaustive()
    }
}

impl GmailSource {
    /// `base` is [`GMAIL_API`] (or a test server); `oauth` the client registration the refresh
    /// tokens were issued to.
    pub fn new(
        base: &str,
        oauth: OAuthClient,
        secrets: Arc<dyn SecretStore>,
        limits: Limits,
    ) -> Result<Self> {
        Ok(Self {
            http: crate::oauth::token_http_client(limits.timeout)?,
            base: base.trim_end_matches('/').to_string(),
            oauth,
            secrets,
            limits,
            permits: Arc::new(Semaphore::new(limits.concurrency.max(1))),
            tokens: Arc::default(),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedToken>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached access token for the mailbox's refresh token, or a new one.
    async fn access_token(&self, reference: &str) -> Result<String> {
        let cached = self
            .cache()
            .get(reference)
            .filter(|t| Instant::now() < t.fresh_until)
            .map(|t| t.access_token.clone());
        match cached {
            Some(token) => Ok(token),
            None => self.mint(reference).await,
        }
    }

    /// A new access token from the refresh token behind `reference`, cached. Concurrent callers
    /// may both mint one: harmless, Google issues many.
    async fn mint(&self, reference: &str) -> Result<String> {
        let refresh_token = self.secrets.get(reference).await?;
        let tokens = with_retries(&self.limits, &self.permits, "Google OAuth", || async {
            match self.oauth.refresh(&self.http, &refresh_token).await {
                Ok(tokens) => Attempt::Done(tokens),
                Err(TokenError::Unavailable { reason, after }) => Attempt::Retry { reason, after },
                Err(TokenError::InvalidGrant(why)) => Attempt::Fail(Error::terminal(format!(
                    "{GMAIL_DISCONNECTED}: Google no longer accepts the stored refresh token ({why}); the user must connect Gmail again"
                ))),
                Err(TokenError::Refused(why)) => Attempt::Fail(Error::terminal(format!(
                    "the OAuth token endpoint refused to refresh the Gmail access token: {why}"
                ))),
            }
        })
        .await?;
        let lifetime = tokens.expires_in().unwrap_or(ASSUMED_LIFETIME);
        let now = Instant::now();
        let mut cache = self.cache();
        // Expired entries go, so the cache holds at most the mailboxes in use.
        cache.retain(|_, t| now < t.fresh_until);
        cache.insert(
            reference.to_string(),
            CachedToken {
                access_token: tokens.access_token().to_string(),
                fresh_until: now + lifetime.saturating_sub(EXPIRY_MARGIN),
            },
        );
        Ok(tokens.access_token().to_string())
    }

    /// Drops `used` from the cache (unless another call already replaced it).
    fn forget(&self, reference: &str, used: &str) {
        let mut cache = self.cache();
        if cache.get(reference).is_some_and(|t| t.access_token == used) {
            cache.remove(reference);
        }
    }

    /// GET `path_and_query` for the mailbox whose refresh token `reference` names; on a 401 the
    /// access token is refreshed once and the request tried again.
    async fn get_json(&self, reference: &str, path_and_query: &str) -> Result<Option<Value>> {
        let token = self.access_token(reference).await?;
        let message = match self.get_json_with(&token, path_and_query).await? {
            Fetched::Json(json) => return Ok(Some(json)),
            Fetched::Gone => return Ok(None),
            Fetched::Unauthorized(message) => message,
        };
        tracing::info!(
            %message,
            "Gmail refused the access token; refreshing it once"
        );
        self.forget(reference, &token);
        let token = self.mint(reference).await?;
        match self.get_json_with(&token, path_and_query).await? {
            Fetched::Json(json) => Ok(Some(json)),
            Fetched::Gone => Ok(None),
            Fetched::Unauthorized(message) => Err(Error::terminal(format!(
                "{GMAIL_DISCONNECTED}: Gmail refused a freshly refreshed access token (HTTP 401: {message}); the user must connect Gmail again"
            ))),
        }
    }

    /// One GET with `token`, retrying what is worth retrying.
    async fn get_json_with(&self, token: &str, path_and_query: &str) -> Result<Fetched> {
        let url = format!("{}{path_and_query}", self.base);
        with_retries(&self.limits, &self.permits, "Gmail", || async {
            let reply = match reanimate_llm::send(self.http.get(&url).bearer_auth(token)).await {
                Attempt::Done(reply) => reply,
                Attempt::Retry { reason, after } => return Attempt::Retry { reason, after },
                Attempt::Fail(error) => return Attempt::Fail(error),
            };
            let (status, message) = (reply.status, reply.error_message());
            match status.as_u16() {
                200..=299 => Attempt::Done(Fetched::Json(reply.json)),
                401 => Attempt::Done(Fetched::Unauthorized(message)),
                404 => Attempt::Done(Fetched::Gone),
                403 => forbidden(&reply.json, &message),
                _ => Attempt::Fail(Error::terminal(format!("Gmail: HTTP {status}: {message}"))),
            }
        })
        .await
    }

    fn checked_id(id: &str) -> Result<&str> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Error::terminal(format!("bad Gmail message id {id:?}")));
        }
        Ok(id)
    }

    /// One message's headers (`format=metadata`): a listing never downloads a body. `None` for
    /// a message deleted since it was listed.
    async fn header(&self, reference: &str, id: &str) -> Result<Option<EmailHeader>> {
        let id = Self::checked_id(id)?;
        let json = self
            .get_json(
                reference,
                &format!(
                    "/gmail/v1/users/me/messages/{id}?format=metadata&metadataHeaders=From&metadataHeaders=Subject&metadataHeaders=Date"
                ),
            )
            .await?;
        Ok(json.as_ref().map(parse_metadata))
    }

    /// One whole message (`format=raw`), parsed and capped like a Maildir file.
    async fn message(&self, reference: &str, id: &str) -> Result<Email> {
        let id = Self::checked_id(id)?;
        let json = self
            .get_json(
                reference,
                &format!("/gmail/v1/users/me/messages/{id}?format=raw"),
            )
            .await?;
        // Deleted since it was listed: read as unreadable, not a failed batch.
        Ok(json.map_or_else(|| crate::mail::gone(id), |json| parse_raw(id, &json)))
    }
}

/// A 403: a quota that recovers within seconds is retried; a token without the Gmail scope
/// needs the user to connect again; anything else (the API not enabled for the OAuth client's
/// project, a policy) is terminal.
fn forbidden(json: &Value, message: &str) -> Attempt<Fetched> {
    let errors = json["error"]["errors"].as_array().into_iter().flatten();
    let reasons: Vec<&str> = errors.filter_map(|e| e["reason"].as_str()).collect();
    let details = json["error"]["details"].as_array().into_iter().flatten();
    let detail_reasons: Vec<&str> = details.filter_map(|d| d["reason"].as_str()).collect();
    if reasons.iter().any(|r| RATE_LIMIT_REASONS.contains(r)) {
        Attempt::Retry {
            reason: format!("Gmail quota: HTTP 403: {message}"),
            after: None,
        }
    } else if reasons.contains(&"insufficientPermissions")
        || detail_reasons.contains(&"ACCESS_TOKEN_SCOPE_INSUFFICIENT")
    {
        Attempt::Fail(Error::terminal(format!(
            "{GMAIL_DISCONNECTED}: the Gmail connection does not allow reading mail (HTTP 403: {message}); the user must connect Gmail again and allow it"
        )))
    } else {
        Attempt::Fail(Error::terminal(format!("Gmail: HTTP 403: {message}")))
    }
}

fn internal_date(json: &Value) -> Option<Timestamp> {
    json["internalDate"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .map(Timestamp::from_millis)
}

/// A `users.messages.get` resource with `format=metadata` as an [`EmailHeader`].
pub fn parse_metadata(json: &Value) -> EmailHeader {
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
    };
    header_from_fields(
        json["id"].as_str().unwrap_or_default(),
        header("From"),
        header("Subject"),
        header("Date"),
        internal_date(json),
        json["sizeEstimate"].as_u64().unwrap_or(0),
    )
}

/// A `users.messages.get` resource with `format=raw` as an [`Email`]; a message whose `raw` is
/// missing or not base64url is unreadable, never an error for its batch.
pub fn parse_raw(id: &str, json: &Value) -> Email {
    let bytes = json["raw"].as_str().and_then(|data| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(data.trim_end_matches('='))
            .ok()
    });
    match bytes {
        Some(bytes) => crate::mail::parse_message(id, &bytes, internal_date(json)),
        None => crate::mail::Email {
            date: internal_date(json).unwrap_or(Timestamp::EPOCH),
            ..crate::mail::gone(id)
        },
    }
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
    fn forget<'a>(&'a self, mailbox: &'a MailboxRef) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let MailboxRef::Gmail { refresh_token, .. } = mailbox else {
                return Ok(());
            };
            self.cache().remove(refresh_token);
            self.secrets.delete(refresh_token).await
        })
    }

    fn page<'a>(&'a self, request: &'a FetchPage) -> BoxFuture<'a, Result<Page>> {
        Box::pin(async move {
            let MailboxRef::Gmail {
                refresh_token,
                query,
            } = &request.mailbox
            else {
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
            let listed = self
                .get_json(refresh_token, &path)
                .await?
                .ok_or_else(|| Error::terminal("Gmail: the mailbox was not found (HTTP 404)"))?;
            let mut emails = Vec::new();
            for m in listed["messages"].as_array().into_iter().flatten() {
                if let Some(id) = m["id"].as_str()
                    && let Some(header) = self.header(refresh_token, id).await?
                {
                    emails.push(header);
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
            let MailboxRef::Gmail { refresh_token, .. } = &request.mailbox else {
                return Err(Error::terminal("not a Gmail mailbox"));
            };
            let mut emails = Vec::with_capacity(request.ids.len());
            for id in &request.ids {
                emails.push(self.message(refresh_token, id).await?);
            }
            Ok(emails)
        })
    }
}
