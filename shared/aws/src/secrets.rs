//! AWS Secrets Manager as the [`SecretStore`] for secrets in users' answers (OAuth tokens). The
//! reference handed to instances is the secret's ARN. Names are `reanimate/{stack}/{instance}/…`:
//! the roles that read or write them are granted `reanimate/{stack}/*` only.

use crate::counters::{RequestCounters, Service};
use crate::errors::classify;
use reanimate_core::secrets::SecretStore;
use reanimate_core::{BoxFuture, Result};

#[derive(Clone, Debug)]
pub struct SecretsManager {
    client: aws_sdk_secretsmanager::Client,
    counters: RequestCounters,
    /// The stack's name: secrets are `reanimate/{stack}/…`.
    stack: String,
}

impl SecretsManager {
    pub fn new(
        client: aws_sdk_secretsmanager::Client,
        counters: RequestCounters,
        stack: impl Into<String>,
    ) -> Self {
        Self {
            client,
            counters,
            stack: stack.into(),
        }
    }
}

impl SecretStore for SecretsManager {
    fn put<'a>(&'a self, name: &'a str, value: &'a str) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            self.counters.count(Service::SecretsManager, "CreateSecret");
            let created = self
                .client
                .create_secret()
                .name(name)
                .secret_string(value)
                .send()
                .await;
            match created {
                Ok(out) => Ok(out.arn().unwrap_or(name).to_string()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_exists_exception()) =>
                {
                    // Answered again: replace the value, keep the secret.
                    self.counters
                        .count(Service::SecretsManager, "PutSecretValue");
                    let out = self
                        .client
                        .put_secret_value()
                        .secret_id(name)
                        .secret_string(value)
                        .send()
                        .await
                        .map_err(|e| classify("Secrets Manager PutSecretValue", e))?;
                    Ok(out.arn().unwrap_or(name).to_string())
                }
                Err(e) => Err(classify("Secrets Manager CreateSecret", e)),
            }
        })
    }

    fn get<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            self.counters
                .count(Service::SecretsManager, "GetSecretValue");
            let out = self
                .client
                .get_secret_value()
                .secret_id(reference)
                .send()
                .await
                .map_err(|e| classify("Secrets Manager GetSecretValue", e))?;
            out.secret_string().map(str::to_string).ok_or_else(|| {
                reanimate_core::Error::terminal(format!("secret {reference} has no string value"))
            })
        })
    }

    fn delete<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.counters.count(Service::SecretsManager, "DeleteSecret");
            // At once: a user who disconnects expects the token gone, not recoverable for a week.
            let deleted = self
                .client
                .delete_secret()
                .secret_id(reference)
                .force_delete_without_recovery(true)
                .send()
                .await;
            match deleted {
                Ok(_) => Ok(()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_resource_not_found_exception()) =>
                {
                    Ok(())
                }
                Err(e) => Err(classify("Secrets Manager DeleteSecret", e)),
            }
        })
    }

    fn namespace(&self) -> &str {
        &self.stack
    }
}
