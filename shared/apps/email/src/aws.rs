//! The email assistant's activities on AWS: digests in S3, Maildir mailboxes under the configured
//! mail root, and the configured model provider.

use crate::digest::{DigestStore, Mailer, OutgoingMail};
use crate::gmail::{GMAIL_API, GmailSource};
use crate::mail::{MailSource, Mailboxes, MaildirSource};
use crate::offline::OfflineHeuristicModel;
use reanimate_aws::errors::classify;
use reanimate_aws::secrets::SecretsManager;
use reanimate_aws::{Clients, RequestCounters, Service};
use reanimate_core::playbook::Model;
use reanimate_core::secrets::SecretStore as _;
use reanimate_core::{Activities, BoxFuture, Error, Result};
use reanimate_llm::OpenAiCompatible;
use reanimate_llm::bedrock::BedrockConverse;
use std::sync::Arc;

/// Digests as objects in one S3 bucket (`PutObject` overwrites, so a retried store is harmless).
#[derive(Clone, Debug)]
pub struct S3Digests {
    client: aws_sdk_s3::Client,
    bucket: String,
    counters: RequestCounters,
}

impl S3Digests {
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        counters: RequestCounters,
    ) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            counters,
        }
    }
}

impl DigestStore for S3Digests {
    fn put<'a>(&'a self, key: &'a str, markdown: &'a str) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            self.counters.count(Service::S3, "PutObject");
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type("text/markdown; charset=utf-8")
                .body(markdown.as_bytes().to_vec().into())
                .send()
                .await
                .map_err(|e| classify("S3 PutObject", e))?;
            Ok(format!("s3://{}/{key}", self.bucket))
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            self.counters.count(Service::S3, "GetObject");
            let object = match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
            {
                Ok(object) => object,
                Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => {
                    return Ok(None);
                }
                Err(e) => return Err(classify("S3 GetObject", e)),
            };
            let bytes = object
                .body
                .collect()
                .await
                .map_err(|e| Error::retryable(format!("reading digest {key}: {e}")))?
                .into_bytes();
            Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let mut keys = Vec::new();
            let mut token = None;
            loop {
                self.counters.count(Service::S3, "ListObjectsV2");
                let page = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .map_err(|e| classify("S3 ListObjectsV2", e))?;
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
            keys.sort();
            Ok(keys)
        })
    }
}

impl S3Digests {
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The digest bucket of a deployed stack (its `DigestBucket` output).
    pub fn of_stack(stack: &reanimate_aws::StackClient) -> Result<Self> {
        Ok(Self::new(
            stack.clients().s3.clone(),
            stack.output("DigestBucket")?,
            stack.counters().clone(),
        ))
    }
}

/// Digests delivered by Amazon SES (the v1 `SendEmail` API, which LocalStack emulates), as
/// one message with a plain-text and an HTML part.
#[derive(Clone, Debug)]
pub struct SesMailer {
    client: aws_sdk_ses::Client,
    from: String,
    counters: RequestCounters,
}

impl SesMailer {
    pub fn new(
        client: aws_sdk_ses::Client,
        from: impl Into<String>,
        counters: RequestCounters,
    ) -> Self {
        Self {
            client,
            from: from.into(),
            counters,
        }
    }
}

impl Mailer for SesMailer {
    fn send<'a>(&'a self, mail: &'a OutgoingMail) -> BoxFuture<'a, Result<String>> {
        use aws_sdk_ses::types::{Body, Content, Destination, Message};
        Box::pin(async move {
            let content = |text: &str| {
                Content::builder()
                    .data(text)
                    .charset("UTF-8")
                    .build()
                    .map_err(|e| Error::terminal(format!("SES message: {e}")))
            };
            let message = Message::builder()
                .subject(content(&mail.subject)?)
                .body(
                    Body::builder()
                        .text(content(&mail.text)?)
                        .html(content(&mail.html)?)
                        .build(),
                )
                .build();
            self.counters.count(Service::Ses, "SendEmail");
            let sent = self
                .client
                .send_email()
                .source(&self.from)
                .destination(Destination::builder().to_addresses(&mail.to).build())
                .message(message)
                .send()
                .await
                .map_err(|e| classify("SES SendEmail", e))?;
            Ok(sent.message_id().to_string())
        })
    }
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| Error::terminal(format!("{name} is not set")))
}

/// A variable that may be unset or empty (the template passes empty parameters as "").
fn optional_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The standard and strong models named by the environment:
/// - `REANIMATE_MODEL=offline` (the default): the deterministic offline heuristic for both;
/// - `REANIMATE_MODEL=openai-compatible`: `REANIMATE_MODEL_URL` (the API root, e.g.
///   `https://api.openai.com/v1`), `REANIMATE_MODEL_NAME`, `REANIMATE_STRONG_MODEL_NAME`
///   (default: the same), `REANIMATE_MODEL_API_KEY_SECRET` (optional: the Secrets Manager secret
///   holding the API key, read once per process; the key is never in the environment);
/// - `REANIMATE_MODEL=bedrock`: Bedrock Converse with `REANIMATE_MODEL_NAME` and
///   `REANIMATE_STRONG_MODEL_NAME` as model (or inference profile) ids, the function's IAM role.
///
/// `REANIMATE_MODEL_CONCURRENCY` bounds requests in flight per provider and process.
pub async fn models_from_env(
    clients: &Clients,
    counters: &RequestCounters,
) -> Result<(Arc<dyn Model>, Arc<dyn Model>)> {
    let mut limits = reanimate_llm::Limits::default();
    if let Some(n) = std::env::var("REANIMATE_MODEL_CONCURRENCY")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        limits.concurrency = n;
    }
    let names = || -> Result<(String, String)> {
        let name = env("REANIMATE_MODEL_NAME")?;
        let strong = optional_env("REANIMATE_STRONG_MODEL_NAME").unwrap_or_else(|| name.clone());
        Ok((name, strong))
    };
    match std::env::var("REANIMATE_MODEL").as_deref() {
        Err(_) | Ok("") | Ok("offline") => {
            let offline: Arc<dyn Model> = Arc::new(OfflineHeuristicModel);
            Ok((Arc::clone(&offline), offline))
        }
        Ok("bedrock") => {
            let (name, strong) = names()?;
            let standard = BedrockConverse::new(&clients.config, &name, limits);
            let strong = BedrockConverse::new(&clients.config, &strong, limits);
            Ok((Arc::new(standard), Arc::new(strong)))
        }
        Ok("openai-compatible") => {
            let url = env("REANIMATE_MODEL_URL")?;
            let (name, strong) = names()?;
            let key = match optional_env("REANIMATE_MODEL_API_KEY_SECRET") {
                Some(secret) => Some(
                    SecretsManager::new(clients.secrets.clone(), counters.clone(), "")
                        .get(&secret)
                        .await?,
                ),
                None => None,
            };
            let standard = OpenAiCompatible::new(&url, &name, key.clone(), limits)?;
            let strong = OpenAiCompatible::new(&url, &strong, key, limits)?;
            Ok((Arc::new(standard), Arc::new(strong)))
        }
        Ok(other) => Err(Error::terminal(format!(
            "REANIMATE_MODEL={other:?} is not a provider; use offline, bedrock or openai-compatible"
        ))),
    }
}

/// Whether this function's declaration (`uses` in its `functions/<atom>/Cargo.toml`, passed as
/// `REANIMATE_USES` by the template) lets it call models. Unset (an older template, a local
/// run): yes.
fn declared_to_use_models() -> bool {
    std::env::var("REANIMATE_USES").map_or(true, |uses| uses.split(',').any(|u| u == "models"))
}

/// Every activity the email atoms call, from the environment the template sets:
/// `REANIMATE_DIGEST_BUCKET`, `REANIMATE_DIGEST_FROM` (the SES sender; unset: digests are only
/// stored), `REANIMATE_MAIL_ROOT` (Maildir mailboxes, optional),
/// `REANIMATE_GMAIL_API` (default the public API; tokens come from Secrets Manager) and the model
/// variables of [`models_from_env`]. A function not declared to use models gets no model
/// activities and never reads the model's key (its role may not): an atom that asks a model
/// there fails at once with the reason, rather than running on a model nobody configured for it.
pub fn activities<'a>(
    clients: &'a Clients,
    counters: &'a RequestCounters,
) -> BoxFuture<'a, Result<Activities>> {
    Box::pin(build_activities(clients, counters))
}

async fn build_activities(clients: &Clients, counters: &RequestCounters) -> Result<Activities> {
    let stack = env("REANIMATE_STACK_NAME")?;
    let digests = S3Digests::new(
        clients.s3.clone(),
        env("REANIMATE_DIGEST_BUCKET")?,
        counters.clone(),
    );
    let mail: Arc<dyn MailSource> = Arc::new(Mailboxes {
        secret_namespace: stack.clone(),
        maildir: optional_env("REANIMATE_MAIL_ROOT").map(MaildirSource::new),
        gmail: Some(GmailSource::new(
            &std::env::var("REANIMATE_GMAIL_API").unwrap_or_else(|_| GMAIL_API.into()),
            // Without a client id, Maildir still works and a Gmail mailbox fails with why.
            crate::oauth::OAuthClient {
                token_url: optional_env("REANIMATE_GMAIL_TOKEN_URL")
                    .unwrap_or_else(|| crate::oauth::GOOGLE_TOKEN_URL.into()),
                ..crate::oauth::OAuthClient::google(
                    optional_env("REANIMATE_GMAIL_CLIENT_ID").unwrap_or_default(),
                    optional_env("REANIMATE_GMAIL_CLIENT_SECRET"),
                )
            },
            Arc::new(SecretsManager::new(
                clients.secrets.clone(),
                counters.clone(),
                stack.clone(),
            )),
            reanimate_llm::Limits::default(),
        )?),
    });
    let mailer = optional_env("REANIMATE_DIGEST_FROM").map(|from| {
        Arc::new(SesMailer::new(clients.ses.clone(), from, counters.clone())) as Arc<dyn Mailer>
    });
    let without_models = crate::mail::activities(Arc::clone(&mail))
        .merge(crate::digest::activities(Arc::new(digests), mailer));
    if !declared_to_use_models() {
        return Ok(without_models);
    }
    let (standard, strong) = models_from_env(clients, counters).await?;
    let models = reanimate_core::playbook::ModelActivities::new(standard, strong);
    Ok(without_models
        .merge(models.clone().activities())
        .merge(crate::rank::activities(models, mail)))
}
