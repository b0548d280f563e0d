//! In-memory implementations of every port, sharing one virtual clock. Used by unit tests, the
//! simulation, the benchmark and the demo. Each handle is cheap to clone and shares its state.
//!
//! When yield points are enabled every port call returns `Pending` once before completing, so a
//! driver polling several handlers can interleave them at every await, like concurrent Lambdas.

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::ids::{InstanceId, MessageId, RequestId, TimerId};
use crate::ports::{
    Clock, Dispatcher, Inbox, InboxEntry, InstanceStore, Outgoing, RequestStatus, SaveOutcome,
    TimerService,
};
use crate::record::{InstanceRecord, LifecycleEvent, RequestOutcome, UserRequest};
use crate::time::Timestamp;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Turns yield points on or off for every port built from it.
#[derive(Clone, Debug, Default)]
pub struct YieldPoints(Arc<AtomicBool>);

impl YieldPoints {
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::Relaxed);
    }

    fn point(&self) -> YieldOnce {
        YieldOnce(!self.0.load(Ordering::Relaxed))
    }
}

struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// A clock that moves only when told to.
#[derive(Clone, Debug, Default)]
pub struct VirtualClock(Arc<AtomicU64>);

impl VirtualClock {
    pub fn starting_at(t: Timestamp) -> Self {
        Self(Arc::new(AtomicU64::new(t.as_millis())))
    }
    pub fn advance_to(&self, t: Timestamp) {
        self.0.fetch_max(t.as_millis(), Ordering::Relaxed);
    }
    pub fn advance(&self, d: Duration) {
        self.advance_to(self.now().plus(d));
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::Relaxed))
    }
}

/// Request counters, the in-memory analogue of what the AWS adapters count per service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub loads: u64,
    pub saves: u64,
    pub conflicts: u64,
}

#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    records: Arc<Mutex<HashMap<InstanceId, InstanceRecord>>>,
    stats: Arc<Mutex<StoreStats>>,
    yields: YieldPoints,
}

impl MemoryStore {
    pub fn new(yields: YieldPoints) -> Self {
        Self {
            yields,
            ..Self::default()
        }
    }
    pub fn stats(&self) -> StoreStats {
        *lock(&self.stats)
    }
    pub fn get(&self, id: &InstanceId) -> Option<InstanceRecord> {
        lock(&self.records).get(id).cloned()
    }
    /// Every record, ordered by id.
    pub fn all(&self) -> Vec<InstanceRecord> {
        let mut all: Vec<_> = lock(&self.records).values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }
}

impl InstanceStore for MemoryStore {
    async fn load(&self, id: &InstanceId) -> Result<Option<InstanceRecord>> {
        self.yields.point().await;
        lock(&self.stats).loads += 1;
        Ok(lock(&self.records).get(id).cloned())
    }

    async fn save(&self, record: InstanceRecord, expected: Option<u64>) -> Result<SaveOutcome> {
        self.yields.point().await;
        let mut records = lock(&self.records);
        let stored = records.get(&record.id).map(|r| r.version);
        if stored != expected {
            lock(&self.stats).conflicts += 1;
            let current = records.get(&record.id).cloned().map(Box::new);
            return Ok(SaveOutcome::Conflict { current });
        }
        lock(&self.stats).saves += 1;
        records.insert(record.id.clone(), record);
        Ok(SaveOutcome::Saved)
    }
}

/// A message on the in-memory queue.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub envelope: Envelope,
    pub visible_at: Timestamp,
    /// How many times it has been received (handed to a handler) so far.
    pub receives: u32,
}

/// How the queue misbehaves; all zero by default. Driven by a seeded generator so runs replay.
#[derive(Clone, Debug, Default)]
pub struct QueueFaults {
    /// Probability that a sent message is delivered twice.
    pub duplicate: f64,
    /// Each message is delayed by up to this much on top of its own delay.
    pub max_extra_delay: Duration,
}

#[derive(Debug, Default)]
struct QueueState {
    pending: BTreeMap<(Timestamp, u64), Delivery>,
    next_seq: u64,
    faults: QueueFaults,
    rng: crate::sim::SplitMix64,
    failing_sends: u32,
    sends: u64,
    messages: u64,
    published: Vec<LifecycleEvent>,
}

/// A queue standing in for the atoms' SQS queues (one queue, every atom).
#[derive(Clone, Debug)]
pub struct MemoryQueue {
    state: Arc<Mutex<QueueState>>,
    clock: VirtualClock,
    yields: YieldPoints,
}

impl MemoryQueue {
    pub fn new(clock: VirtualClock, yields: YieldPoints) -> Self {
        Self {
            state: Arc::default(),
            clock,
            yields,
        }
    }

    pub fn set_faults(&self, faults: QueueFaults, seed: u64) {
        let mut state = lock(&self.state);
        state.faults = faults;
        state.rng = crate::sim::SplitMix64::new(seed);
    }

    /// Makes the next `n` sends fail as a crash between save and send would.
    pub fn fail_next_sends(&self, n: u32) {
        lock(&self.state).failing_sends = n;
    }

    /// Puts a message on the queue from outside (a client, a firing timer), visible at `at`
    /// give or take the configured faults.
    pub fn enqueue_at(&self, envelope: Envelope, at: Timestamp) {
        lock(&self.state).push_with_faults(envelope, at);
    }

    /// Puts a received message back (its handler failed), visible again at `at`.
    pub fn requeue(&self, mut delivery: Delivery, at: Timestamp) {
        delivery.visible_at = at;
        let mut state = lock(&self.state);
        let seq = state.next_seq;
        state.next_seq += 1;
        state.pending.insert((at, seq), delivery);
    }

    /// Messages visible at `now`.
    pub fn ready(&self, now: Timestamp) -> usize {
        lock(&self.state)
            .pending
            .range(..(Timestamp(now.0 + 1), 0))
            .count()
    }

    /// Receives the `nth` visible message (0: the oldest).
    pub fn receive(&self, now: Timestamp, nth: usize) -> Option<Delivery> {
        let mut state = lock(&self.state);
        let key = *state.pending.range(..(Timestamp(now.0 + 1), 0)).nth(nth)?.0;
        let mut delivery = state.pending.remove(&key)?;
        delivery.receives += 1;
        Some(delivery)
    }

    pub fn next_visible_at(&self) -> Option<Timestamp> {
        lock(&self.state).pending.keys().next().map(|(at, _)| *at)
    }

    pub fn len(&self) -> usize {
        lock(&self.state).pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lifecycle events published so far (with any duplicates from re-sent outboxes).
    pub fn published(&self) -> Vec<LifecycleEvent> {
        lock(&self.state).published.clone()
    }

    /// (send calls, messages sent).
    pub fn stats(&self) -> (u64, u64) {
        let state = lock(&self.state);
        (state.sends, state.messages)
    }
}

impl QueueState {
    /// Queues a message, duplicating and delaying it as the faults say.
    fn push_with_faults(&mut self, envelope: Envelope, at: Timestamp) {
        let faults = self.faults.clone();
        let extra = if faults.max_extra_delay.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_millis(
                self.rng
                    .below(faults.max_extra_delay.as_millis() as u64 + 1),
            )
        };
        let at = at.plus(extra);
        if faults.duplicate > 0.0 && self.rng.chance(faults.duplicate) {
            let again = at.plus(Duration::from_millis(self.rng.below(5_000)));
            self.push(envelope.clone(), again, 0);
        }
        self.push(envelope, at, 0);
    }

    fn push(&mut self, envelope: Envelope, at: Timestamp, receives: u32) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(
            (at, seq),
            Delivery {
                envelope,
                visible_at: at,
                receives,
            },
        );
    }
}

impl Dispatcher for MemoryQueue {
    async fn send(&self, batch: Vec<Outgoing>) -> Result<()> {
        self.yields.point().await;
        let now = self.clock.now();
        let mut state = lock(&self.state);
        if state.failing_sends > 0 {
            state.failing_sends -= 1;
            return Err(Error::retryable(
                "injected fault: the process died before sending its outbox",
            ));
        }
        state.sends += 1;
        for Outgoing { envelope, delay } in batch {
            state.messages += 1;
            state.push_with_faults(envelope, now.plus(delay));
        }
        Ok(())
    }

    async fn publish(&self, events: Vec<LifecycleEvent>) -> Result<()> {
        self.yields.point().await;
        lock(&self.state).published.extend(events);
        Ok(())
    }
}

/// Timers held until the driver collects the due ones.
#[derive(Clone, Debug, Default)]
pub struct MemoryTimers {
    armed: Arc<Mutex<BTreeMap<TimerId, (Timestamp, Envelope)>>>,
    /// Periods of the recurring timers among `armed`.
    recurring: Arc<Mutex<BTreeMap<TimerId, Duration>>>,
    stats: Arc<Mutex<(u64, u64)>>,
    yields: YieldPoints,
}

impl MemoryTimers {
    pub fn new(yields: YieldPoints) -> Self {
        Self {
            yields,
            ..Self::default()
        }
    }

    /// Removes and returns the timers due at `now`, earliest first.
    pub fn take_due(&self, now: Timestamp) -> Vec<(Timestamp, Envelope)> {
        let mut armed = lock(&self.armed);
        let due: Vec<TimerId> = armed
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let recurring = lock(&self.recurring);
        let mut fired = Vec::with_capacity(due.len());
        for id in due {
            let Some((at, mut envelope)) = armed.remove(&id) else {
                continue;
            };
            if let Some(every) = recurring.get(&id) {
                // Re-arm, and give this firing its own message id, as Scheduler would.
                armed.insert(id.clone(), (at.plus(*every), envelope.clone()));
                envelope.id = MessageId::for_recurring_firing(&id, &at.to_string());
            }
            fired.push((at, envelope));
        }
        fired.sort_by_key(|(at, _)| *at);
        fired
    }

    pub fn next_due(&self) -> Option<Timestamp> {
        lock(&self.armed).values().map(|(at, _)| *at).min()
    }

    pub fn armed(&self) -> usize {
        lock(&self.armed).len()
    }

    /// (schedules, cancels).
    pub fn stats(&self) -> (u64, u64) {
        *lock(&self.stats)
    }
}

impl TimerService for MemoryTimers {
    async fn schedule(&self, timer: &TimerId, at: Timestamp, envelope: Envelope) -> Result<()> {
        self.yields.point().await;
        lock(&self.stats).0 += 1;
        lock(&self.armed)
            .entry(timer.clone())
            .or_insert((at, envelope));
        Ok(())
    }

    async fn schedule_recurring(
        &self,
        timer: &TimerId,
        first: Timestamp,
        every: Duration,
        envelope: Envelope,
    ) -> Result<()> {
        self.yields.point().await;
        lock(&self.stats).0 += 1;
        let mut armed = lock(&self.armed);
        if !armed.contains_key(timer) {
            armed.insert(timer.clone(), (first, envelope));
            lock(&self.recurring).insert(timer.clone(), every);
        }
        Ok(())
    }

    async fn cancel(&self, timer: &TimerId) -> Result<()> {
        self.yields.point().await;
        lock(&self.stats).1 += 1;
        lock(&self.armed).remove(timer);
        lock(&self.recurring).remove(timer);
        Ok(())
    }
}

#[derive(Clone, Debug, Default)]
pub struct MemoryInbox {
    entries: Arc<Mutex<BTreeMap<RequestId, InboxEntry>>>,
    yields: YieldPoints,
}

impl MemoryInbox {
    pub fn new(yields: YieldPoints) -> Self {
        Self {
            yields,
            ..Self::default()
        }
    }

    pub fn all(&self) -> Vec<InboxEntry> {
        lock(&self.entries).values().cloned().collect()
    }
}

impl Inbox for MemoryInbox {
    async fn open(&self, request: UserRequest) -> Result<()> {
        self.yields.point().await;
        let at = request.created_at;
        lock(&self.entries)
            .entry(request.id.clone())
            .or_insert(InboxEntry {
                request,
                status: RequestStatus::Open,
                answer: None,
                updated_at: at,
            });
        Ok(())
    }

    async fn record_answer(&self, id: &RequestId, answer: Value, at: Timestamp) -> Result<bool> {
        self.yields.point().await;
        let mut entries = lock(&self.entries);
        match entries.get_mut(id) {
            // The runtime may have closed it as answered before the client got here.
            Some(entry)
                if entry.status == RequestStatus::Open
                    || (entry.status == RequestStatus::Answered && entry.answer.is_none()) =>
            {
                entry.status = RequestStatus::Answered;
                entry.answer = Some(answer);
                entry.updated_at = at;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn close(&self, id: &RequestId, outcome: RequestOutcome, at: Timestamp) -> Result<()> {
        self.yields.point().await;
        if let Some(entry) = lock(&self.entries).get_mut(id)
            && entry.status == RequestStatus::Open
        {
            entry.status = outcome.into();
            entry.updated_at = at;
        }
        Ok(())
    }

    async fn get(&self, id: &RequestId) -> Result<Option<InboxEntry>> {
        self.yields.point().await;
        Ok(lock(&self.entries).get(id).cloned())
    }

    async fn list_open(&self) -> Result<Vec<InboxEntry>> {
        self.yields.point().await;
        let mut open: Vec<_> = lock(&self.entries)
            .values()
            .filter(|e| e.status == RequestStatus::Open)
            .cloned()
            .collect();
        open.sort_by(|a, b| {
            (a.request.created_at, &a.request.id).cmp(&(b.request.created_at, &b.request.id))
        });
        Ok(open)
    }
}
