//! The email assistant's activities on AWS: digests in S3, Maildir mailboxes under the configured
//! mail root, and the configured model provider.

use crate::counters::{RequestCounters, Service};
use crate::errors::classify;
use crate::stack::Clients;
use reanimate_core::playbook::Model;
use reanimate_core::{Activities, BoxFuture, Error, Result};
use reanimate_email::digest::DigestStore;
use reanimate_email::mail::MaildirSource;
use reanimate_email::offline::OfflineHeuristicModel;
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
                .map_err(|e| classify("PutObject", e))?;
            Ok(format!("s3://{}/{key}", self.bucket))
        })
    }
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| Error::terminal(format!("{name} is not set")))
}

/// The model named by `REANIMATE_MODEL` (default `offline`).
pub fn model_from_env() -> Result<Arc<dyn Model>> {
    match std::env::var("REANIMATE_MODEL").as_deref() {
        Err(_) | Ok("") | Ok("offline") => Ok(Arc::new(OfflineHeuristicModel)),
        Ok(other) => Err(Error::terminal(format!(
            "REANIMATE_MODEL={other:?} is not available in this build; the providers built in are: offline"
        ))),
    }
}

/// Every activity the email atoms call, from the environment the template sets:
/// `REANIMATE_DIGEST_BUCKET`, `REANIMATE_MAIL_ROOT`, `REANIMATE_MODEL`.
pub fn activities(clients: &Clients, counters: &RequestCounters) -> Result<Activities> {
    let model = model_from_env()?;
    let digests = S3Digests::new(
        clients.s3.clone(),
        env("REANIMATE_DIGEST_BUCKET")?,
        counters.clone(),
    );
    Ok(reanimate_email::activities(
        Arc::clone(&model),
        model,
        Arc::new(MaildirSource::new(env("REANIMATE_MAIL_ROOT")?)),
        Arc::new(digests),
    ))
}
