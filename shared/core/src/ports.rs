//! Ports: the narrow interfaces the runtime needs from the outside world. `shared/aws` implements
//! them on DynamoDB, SQS, EventBridge Scheduler; [`crate::memory`] implements them in memory.
//!
//! Methods return `impl Future + Send` so adapters can be written with `async fn` and still run on
//! a multi-threaded executor.

use crate::envelope::Envelope;
use crate::error::Result;
use crate::ids::{InstanceId, RequestId, TimerId};
use crate::record::{HistoryEntry, InstanceRecord, LifecycleEvent, RequestOutcome, UserRequest};
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

    /// Writes `record` only if the stored version is `expected` (`None`: only if absent). The
    /// write replaces the whole record, so it also clears a pending-outbox mark. On a failed
    /// condition it returns the stored record when it can: the caller's fresh read.
    fn save(
        &self,
        record: &InstanceRecord,
        expected: Option<u64>,
    ) -> impl Future<Output = Result<SaveOutcome>> + Send;

    /// Marks version `version` of `id` as having an outbox that could not be sent, so the
    /// sweeper finds it from `since` on (a later mark replaces an earlier one); does nothing if
    /// the record has moved on.
    fn mark_outbox_pending(
        &self,
        id: &InstanceId,
        version: u64,
        since: Timestamp,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Records marked as having an unsent outbox since before `before`, oldest first, at most
    /// `limit`: (id, version marked).
    fn pending_outboxes(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(InstanceId, u64)>>> + Send;

    /// Appends transitions to the instances' full histories, keyed by instance and version
    /// (appending one twice keeps one).
    fn append_history(
        &self,
        entries: Vec<(InstanceId, HistoryEntry)>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Drops the outbox of version `version` of `id` and its mark, once it has been sent; false if
    /// the record has moved on (its successor took the outbox over).
    fn clear_outbox(
        &self,
        id: &InstanceId,
        version: u64,
    ) -> impl Future<Output = Result<bool>> + Send;
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
    /// The answer that won: recorded before it was sent to the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Value>,
    /// When the instance applied the answer (answered requests only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<Timestamp>,
    pub updated_at: Timestamp,
}

/// What became of an attempt to record an answer.
#[derive(Clone, Debug, PartialEq)]
pub enum AnswerRecord {
    /// This answer won: the request was open and its deadline had not passed.
    Recorded,
    /// The request was not open (answered by someone else, expired, withdrawn) or its deadline
    /// had passed; the entry as it is now.
    Refused(Box<InboxEntry>),
    /// No such request.
    Missing,
}

/// The user's inbox of questions. It decides which of an answer and a deadline wins: whichever
/// conditional write reaches an open request first.
pub trait Inbox: Send + Sync {
    /// Adds an open request; a request already present (any status) is left as it is.
    fn open(&self, request: UserRequest) -> impl Future<Output = Result<()>> + Send;
    /// Records the user's answer if the request is open and its deadline is after `at`.
    fn record_answer(
        &self,
        id: &RequestId,
        answer: Value,
        at: Timestamp,
    ) -> impl Future<Output = Result<AnswerRecord>> + Send;
    /// Closes an open request as expired. If an answer won the race, returns it: the instance
    /// applies that answer instead of the expiry.
    fn expire(
        &self,
        id: &RequestId,
        at: Timestamp,
    ) -> impl Future<Output = Result<Option<Value>>> + Send;
    /// Closes a request on the instance's behalf. `Answered`: the instance applied the recorded
    /// answer. `Withdrawn`: it finished first; an answer recorded but never applied is kept for
    /// display and the request shows as withdrawn. An already closed request keeps its outcome.
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

/// Where time comes from, and how the runtime waits (a backoff between contended saves, an
/// activity's time limit).
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
    /// Completes after `duration` of this clock's time.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// The wall clock. Its `sleep` parks a helper thread per wait, which suits the rare waits of
/// clients; the Lambda runtime uses a clock on its async executor's timers (`reanimate-aws`).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now_utc()
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        ThreadSleep::new(duration)
    }
}

/// A future that completes when a helper thread has slept `duration`.
struct ThreadSleep {
    duration: Duration,
    /// Whether the wait is over, and the waker of the latest poll.
    shared: std::sync::Arc<std::sync::Mutex<(bool, Option<std::task::Waker>)>>,
    started: bool,
}

impl ThreadSleep {
    fn new(duration: Duration) -> Self {
        Self {
            duration,
            shared: Default::default(),
            started: false,
        }
    }
}

impl Future for ThreadSleep {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.duration.is_zero() {
            return std::task::Poll::Ready(());
        }
        {
            let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            if shared.0 {
                return std::task::Poll::Ready(());
            }
            shared.1 = Some(cx.waker().clone());
        }
        if !self.started {
            self.started = true;
            let (duration, shared) = (self.duration, self.shared.clone());
            std::thread::spawn(move || {
                std::thread::sleep(duration);
                let mut shared = shared.lock().unwrap_or_else(|p| p.into_inner());
                shared.0 = true;
                if let Some(waker) = shared.1.take() {
                    waker.wake();
                }
            });
        }
        std::task::Poll::Pending
    }
}
