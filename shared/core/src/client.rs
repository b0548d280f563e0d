//! What a client (a CLI, an API, a test) does to talk to instances: start one, signal it, cancel
//! it, answer its questions. Every call is idempotent per the message id it sends.

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::ids::{InstanceId, MessageId, RequestId};
use crate::ports::{AnswerRecord, Clock, Dispatcher, Inbox, InboxEntry, Outgoing, RequestStatus};
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

/// Starts a root instance (its id must have a root's shape, see `InstanceId::root`). Re-sending
/// the same `message` is applied once.
pub async fn start(
    dispatcher: &impl Dispatcher,
    message: MessageId,
    instance: InstanceId,
    atom: &str,
    input: Value,
) -> Result<()> {
    instance.check_root()?;
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
    let event = Event::signal(name, payload);
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

/// Answers a user request. The inbox decides which answer wins: the answer is checked against the
/// request's schema, recorded in the inbox with a write conditioned on the request being open and
/// its deadline not passed, and only then sent to the instance (which applies the answer the inbox
/// holds). Sending the same answer again (a retried click or CLI call) sends it again, harmlessly;
/// a different answer to a request already answered lost the race and is refused (after sending
/// the winner again if the instance has not applied it yet), as is an answer
/// after the deadline, to a withdrawn request, or one that does not validate. Refusals are
/// terminal errors that say which.
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
    let (instance, atom) = (entry.request.instance.clone(), entry.request.atom.clone());
    let now = clock.now();
    let refused = match entry.status {
        RequestStatus::Open => match inbox.record_answer(request, answer.clone(), now).await? {
            AnswerRecord::Recorded => None,
            AnswerRecord::Refused(entry) => Some(*entry),
            AnswerRecord::Missing => {
                return Err(Error::terminal(format!(
                    "no request {request} in the inbox"
                )));
            }
        },
        _ => Some(entry),
    };
    if let Some(entry) = refused
        && let Err(refusal) = already_recorded(&entry, &answer, now)
    {
        // The winner may have stopped between recording its answer and sending it: until the
        // instance has applied it, send it again (same message id: a copy already sent is
        // dropped as a duplicate), so the request never waits on a message nobody sends.
        if entry.status == RequestStatus::Answered
            && entry.applied_at.is_none()
            && let Some(recorded) = entry.answer
        {
            send_answer(dispatcher, request, instance, atom, recorded).await?;
        }
        return Err(refusal);
    }
    send_answer(dispatcher, request, instance, atom, answer).await
}

async fn send_answer(
    dispatcher: &impl Dispatcher,
    request: &RequestId,
    instance: InstanceId,
    atom: String,
    answer: Value,
) -> Result<()> {
    let event = Event::UserAnswered {
        request: request.clone(),
        answer,
    };
    let envelope = Envelope::new(MessageId::for_answer(request), instance, atom, event);
    send_one(dispatcher, envelope).await
}

/// A request that did not take this answer: fine if it already holds this very answer (a retry,
/// which sends it again), else a terminal error saying why.
fn already_recorded(entry: &InboxEntry, answer: &Value, now: crate::time::Timestamp) -> Result<()> {
    let request = &entry.request.id;
    match entry.status {
        RequestStatus::Answered if entry.answer.as_ref() == Some(answer) => Ok(()),
        RequestStatus::Answered => Err(Error::terminal(format!(
            "request {request} was already answered with another answer, which won; this answer was not applied"
        ))),
        RequestStatus::Expired => Err(Error::terminal(format!(
            "request {request} expired{}; the answer came too late",
            deadline_text(entry)
        ))),
        RequestStatus::Withdrawn => Err(Error::terminal(format!(
            "request {request} was withdrawn: its instance no longer waits for it"
        ))),
        RequestStatus::Open if entry.request.deadline.is_some_and(|d| d <= now) => {
            Err(Error::terminal(format!(
                "request {request} is past its deadline{}; the answer came too late",
                deadline_text(entry)
            )))
        }
        RequestStatus::Open => Err(Error::retryable(format!(
            "request {request} is open but did not take the answer; try again"
        ))),
    }
}

fn deadline_text(entry: &InboxEntry) -> String {
    entry
        .request
        .deadline
        .map(|d| format!(" at {d}"))
        .unwrap_or_default()
}
