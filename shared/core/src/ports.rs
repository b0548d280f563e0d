//! Ports: the narrow interfaces the runtime needs from the outside world. `shared/aws` implements
//! them on DynamoDB, SQS, EventBridge Scheduler; [`crate::memory`] implements them in memory.
//!
//! Methods return `impl Future + Send` so adapters can be written with `async fn` and still run on
//! a multi-threaded executor.

use crate::envelope::Envelope;
use crate::error::Result;
use crate::ids::{InstanceId, RequestId, TimerId};
use crate::record::{InstanceRecord, LifecycleEvent, RequestOutcome, UserRequest};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::future::Future;
use std::time::Duration;

/// The result of a conditional save.
#[derive(Debug)]
pub enum SaveOutcome {
    Saved,
    /// The version condition failed; carries the record as it is now (`None` if the store could
    /// not return it and the runtime must load it).
    Conflict {
        current: Option<Box<InstanceRecord>>,
    },
}

/// Durable storage of instance records.
pub trait InstanceStore: Send + Sync {
    /// A strongly consistent read.
    fn load(&self, id: &InstanceId) -> impl Future<Output = Result<Option<InstanceRecord>>> + Send;

    /// Writes `record` only if the stored version is `expected` (`None`: only if absent).
    fn save(
        &self,
        record: InstanceRecord,
        expected: Option<u64>,
    ) -> impl Future<Output = Result<SaveOutcome>> + Send;
}

/// A message to send, possibly after a delay.
#[derive(Clone, Debug, PartialEq)]
pub struct Outgoing {
    pub envelope: Envelope,
    pub delay: Duration,
}

/// Everything that leaves the runtime as a message: envelopes to their atoms' queues, and
/// lifecycle events to whoever listens (an event bus). Both at least once.
pub trait Dispatcher: Send + Sync {
    fn send(&self, batch: Vec<Outgoing>) -> impl Future<Output = Result<()>> + Send;
    fn publish(&self, events: Vec<LifecycleEvent>) -> impl Future<Output = Result<()>> + Send;
}

/// Delivers an envelope at a point in time. Implementations pick the mechanism (a queue delay for
/// short waits, a scheduler entry for long ones). Both calls are idempotent per timer id.
pub trait TimerService: Send + Sync {
    fn schedule(
        &self,
        timer: &TimerId,
        at: Timestamp,
        envelope: Envelope,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Delivers `envelope` at `first` and every `every` after, until cancelled. Each delivery's
    /// message id is [`MessageId::for_recurring_firing`] of the timer and the scheduled time.
    ///
    /// [`MessageId::for_recurring_firing`]: crate::ids::MessageId::for_recurring_firing
    fn schedule_recurring(
        &self,
        timer: &TimerId,
        first: Timestamp,
        every: Duration,
        envelope: Envelope,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Best effort: a firing that slips through is recognised as stale by the runtime.
    fn cancel(&self, timer: &TimerId) -> impl Future<Output = Result<()>> + Send;
}

/// Where a request stands in the inbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Open,
    Answered,
    Expired,
    Withdrawn,
}

impl From<RequestOutcome> for RequestStatus {
    fn from(outcome: RequestOutcome) -> Self {
        match outcome {
            RequestOutcome::Answered => RequestStatus::Answered,
            RequestOutcome::Expired => RequestStatus::Expired,
            RequestOutcome::Withdrawn => RequestStatus::Withdrawn,
        }
    }
}

/// A request as the inbox holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InboxEntry {
    pub request: UserRequest,
    pub status: RequestStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Value>,
    pub updated_at: Timestamp,
}

/// The user's inbox of questions.
pub trait Inbox: Send + Sync {
    /// Adds an open request; a request already present (any status) is left as it is.
    fn open(&self, request: UserRequest) -> impl Future<Output = Result<()>> + Send;
    /// Records the user's answer if the request is still open; false if it was not.
    fn record_answer(
        &self,
        id: &RequestId,
        answer: Value,
        at: Timestamp,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Closes a request; an already closed request keeps its first outcome.
    fn close(
        &self,
        id: &RequestId,
        outcome: RequestOutcome,
        at: Timestamp,
    ) -> impl Future<Output = Result<()>> + Send;
    fn get(&self, id: &RequestId) -> impl Future<Output = Result<Option<InboxEntry>>> + Send;
    /// Open requests, oldest first.
    fn list_open(&self) -> impl Future<Output = Result<Vec<InboxEntry>>> + Send;
}

/// Where time comes from.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now_utc()
    }
}
