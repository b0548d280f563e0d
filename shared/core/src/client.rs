//! What a client (a CLI, an API, a test) does to talk to instances: start one, signal it, cancel
//! it, answer its questions. Every call is idempotent per the message id it sends.

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::ids::{InstanceId, MessageId, RequestId};
use crate::ports::{Clock, Dispatcher, Inbox, Outgoing, RequestStatus};
use crate::schema;
use serde_json::Value;
use std::time::Duration;

async fn send_one(dispatcher: &impl Dispatcher, envelope: Envelope) -> Result<()> {
    envelope.check_size()?;
    dispatcher
        .send(vec![Outgoing {
            envelope,
            delay: Duration::ZERO,
        }])
        .await
}

/// Starts a root instance. Re-sending the same `message` is applied once.
pub async fn start(
    dispatcher: &impl Dispatcher,
    message: MessageId,
    instance: InstanceId,
    atom: &str,
    input: Value,
) -> Result<()> {
    send_one(dispatcher, Envelope::start(message, instance, atom, input)).await
}

pub async fn signal(
    dispatcher: &impl Dispatcher,
    message: MessageId,
    instance: InstanceId,
    atom: &str,
    name: &str,
    payload: Value,
) -> Result<()> {
    let event = Event::Signal {
        name: name.to_string(),
        payload,
    };
    send_one(dispatcher, Envelope::new(message, instance, atom, event)).await
}

pub async fn cancel(
    dispatcher: &impl Dispatcher,
    message: MessageId,
    instance: InstanceId,
    atom: &str,
    reason: &str,
) -> Result<()> {
    let event = Event::CancelRequested {
        reason: reason.to_string(),
    };
    send_one(dispatcher, Envelope::new(message, instance, atom, event)).await
}

/// Answers a user request: checks it is open and that the answer validates against its schema,
/// delivers the answer to the instance, then records it in the inbox. A refused answer changes
/// nothing. Answering twice delivers one message id, so the instance applies it once.
pub async fn answer(
    inbox: &impl Inbox,
    dispatcher: &impl Dispatcher,
    clock: &impl Clock,
    request: &RequestId,
    answer: Value,
) -> Result<()> {
    answer_with_secrets(inbox, dispatcher, clock, None, request, answer).await
}

/// Like [`answer`]; fields the request's schema marks `"writeOnly": true` are put in `secrets`
/// first, and the instance and the inbox get references instead of the values. Without a store,
/// an answer holding such a field is refused.
pub async fn answer_with_secrets(
    inbox: &impl Inbox,
    dispatcher: &impl Dispatcher,
    clock: &impl Clock,
    secrets: Option<&dyn crate::secrets::SecretStore>,
    request: &RequestId,
    answer: Value,
) -> Result<()> {
    let entry = inbox
        .get(request)
        .await?
        .ok_or_else(|| Error::terminal(format!("no request {request} in the inbox")))?;
    if entry.status != RequestStatus::Open {
        return Err(Error::terminal(format!(
            "request {request} is {:?}, no longer open",
            entry.status
        )));
    }
    schema::validate_answer(&entry.request.schema, &answer)?;
    let answer = match secrets {
        Some(store) => {
            crate::secrets::redact(store, request.as_str(), &entry.request.schema, answer).await?
        }
        None if !crate::secrets::secret_fields(&entry.request.schema, &answer).is_empty() => {
            return Err(Error::terminal(format!(
                "request {request} asks for a secret; answer it through a client with a secret store"
            )));
        }
        None => answer,
    };
    let event = Event::UserAnswered {
        request: request.clone(),
        answer: answer.clone(),
    };
    let envelope = Envelope::new(
        MessageId::for_answer(request),
        entry.request.instance,
        entry.request.atom,
        event,
    );
    send_one(dispatcher, envelope).await?;
    inbox.record_answer(request, answer, clock.now()).await?;
    Ok(())
}
