//! In-memory implementations of every port, sharing one virtual clock. Used by unit tests, the
//! simulation, the benchmark and the demo. Each handle is cheap to clone and shares its state.
//!
//! Every port built from one [`Hazards`] can be made to misbehave like the real services: with
//! yield points on, each call returns `Pending` before and after its effect, so a driver polling
//! several handlers interleaves them at every await and can stop a process at any of them (before
//! the effect, or after it with the reply lost); with port faults on, a call fails with a retryable
//! error before its effect, and a save may take effect and still report a failure.

use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::ids::{InstanceId, MessageId, RequestId, TimerId};
use crate::ports::{
    AnswerRecord, Clock, Dispatcher, Inbox, InboxEntry, InstanceStore, Outgoing, RequestStatus,
    SaveOutcome, TimerService,
};
use crate::random::SplitMix64;
use crate::record::{HistoryEntry, InstanceRecord, LifecycleEvent, RequestOutcome, UserRequest};
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

/// What the ports built from it inject: yield points and port faults (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Hazards {
    yields: Arc<AtomicBool>,
    faults: Arc<Mutex<PortFaults>>,
}

#[derive(Debug, Default)]
struct PortFaults {
    rng: SplitMix64,
    /// Probability that a call fails before its effect.
    failure: f64,
    /// Probability that a save takes effect and reports a failure.
    ambiguous_save: f64,
    failures: u64,
    ambiguous: u64,
}

/// How many faults the ports injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HazardStats {
    pub failures: u64,
    pub ambiguous_saves: u64,
}

impl Hazards {
    /// Turns yield points on or off.
    pub fn set_yields(&self, on: bool) {
        self.yields.store(on, Ordering::Relaxed);
    }

    /// Port faults, from a seeded generator so runs replay.
    pub fn set_faults(&self, seed: u64, failure: f64, ambiguous_save: f64) {
        let mut faults = lock(&self.faults);
        faults.rng = SplitMix64::new(seed);
        faults.failure = failure;
        faults.ambiguous_save = ambiguous_save;
    }

    pub fn stats(&self) -> HazardStats {
        let faults = lock(&self.faults);
        HazardStats {
            failures: faults.failures,
            ambiguous_saves: faults.ambiguous,
        }
    }

    fn point(&self) -> YieldOnce {
        YieldOnce(!self.yields.load(Ordering::Relaxed))
    }

    /// Before a port call's effect: a yield point, then perhaps an injected failure.
    async fn enter(&self, call: &str) -> Result<()> {
        self.point().await;
        let mut faults = lock(&self.faults);
        let failure = faults.failure;
        if faults.rng.chance(failure) {
            faults.failures += 1;
            return Err(Error::retryable(format!("injected fault: {call} failed")));
        }
        Ok(())
    }

    /// After a port call's effect: a yield point (a process stopped here loses only the reply).
    async fn leave(&self) {
        self.point().await;
    }

    fn ambiguous_save(&self) -> bool {
        let mut faults = lock(&self.faults);
        let p = faults.ambiguous_save;
        let hit = faults.rng.chance(p);
        faults.ambiguous += u64::from(hit);
        hit
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

/// A clock that moves only when told to. Its sleeps end when it is moved past them; a driver
/// sees how many are asleep and until when ([`VirtualClock::sleepers`]).
#[derive(Clone, Debug, Default)]
pub struct VirtualClock {
    now: Arc<AtomicU64>,
    sleepers: Arc<Mutex<Sleepers>>,
}

#[derive(Debug, Default)]
struct Sleepers {
    next_id: u64,
    wakes: BTreeMap<u64, Timestamp>,
}

impl VirtualClock {
    pub fn starting_at(t: Timestamp) -> Self {
        let clock = Self::default();
        clock.now.store(t.as_millis(), Ordering::Relaxed);
        clock
    }
    pub fn advance_to(&self, t: Timestamp) {
        self.now.fetch_max(t.as_millis(), Ordering::Relaxed);
    }
    pub fn advance(&self, d: Duration) {
        self.advance_to(self.now().plus(d));
    }

    /// How many sleeps are waiting, and the earliest time one ends.
    pub fn sleepers(&self) -> (usize, Option<Timestamp>) {
        let sleepers = lock(&self.sleepers);
        (sleepers.wakes.len(), sleepers.wakes.values().min().copied())
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.load(Ordering::Relaxed))
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        VirtualSleep {
            until: self.now().plus(duration),
            clock: self.clone(),
            id: None,
        }
    }
}

struct VirtualSleep {
    clock: VirtualClock,
    until: Timestamp,
    /// Registered among the clock's sleepers while pending.
    id: Option<u64>,
}

impl VirtualSleep {
    fn unregister(&mut self) {
        if let Some(id) = self.id.take() {
            lock(&self.clock.sleepers).wakes.remove(&id);
        }
    }
}

impl Future for VirtualSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.clock.now() >= self.until {
            self.unregister();
            return Poll::Ready(());
        }
        if self.id.is_none() {
            let mut sleepers = lock(&self.clock.sleepers);
            let id = sleepers.next_id;
            sleepers.next_id += 1;
            sleepers.wakes.insert(id, self.until);
            drop(sleepers);
            self.id = Some(id);
        }
        Poll::Pending
    }
}

impl Drop for VirtualSleep {
    fn drop(&mut self) {
        self.unregister();
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
    /// Records marked as having an unsent outbox: id → (version, since).
    pending: Arc<Mutex<BTreeMap<InstanceId, (u64, Timestamp)>>>,
    /// Full histories: id → version → entry.
    history: Arc<Mutex<HashMap<InstanceId, BTreeMap<u64, HistoryEntry>>>>,
    stats: Arc<Mutex<StoreStats>>,
    hazards: Hazards,
}

impl MemoryStore {
    pub fn new(hazards: Hazards) -> Self {
        Self {
            hazards,
            ..Self::default()
        }
    }
    pub fn stats(&self) -> StoreStats {
        *lock(&self.stats)
    }
    pub fn get(&self, id: &InstanceId) -> Option<InstanceRecord> {
        lock(&self.records).get(id).cloned()
    }
    /// The full history of `id`, oldest first.
    pub fn history(&self, id: &InstanceId) -> Vec<HistoryEntry> {
        lock(&self.history)
            .get(id)
            .map(|entries| entries.values().cloned().collect())
            .unwrap_or_default()
    }
    /// Every record, ordered by id.
    pub fn all(&self) -> Vec<InstanceRecord> {
        let mut all: Vec<_> = lock(&self.records).values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }
    /// Ids of the records marked as having an unsent outbox.
    pub fn marked(&self) -> Vec<InstanceId> {
        lock(&self.pending).keys().cloned().collect()
    }
}

impl InstanceStore for MemoryStore {
    async fn load(&self, id: &InstanceId) -> Result<Option<InstanceRecord>> {
        self.hazards.enter("store load").await?;
        lock(&self.stats).loads += 1;
        let record = lock(&self.records).get(id).cloned();
        self.hazards.leave().await;
        Ok(record)
    }

    async fn save(&self, record: &InstanceRecord, expected: Option<u64>) -> Result<SaveOutcome> {
        self.hazards.enter("store save").await?;
        let outcome = {
            let mut records = lock(&self.records);
            let stored = records.get(&record.id).map(|r| r.version);
            if stored != expected {
                lock(&self.stats).conflicts += 1;
                let current = records.get(&record.id).cloned().map(Box::new);
                SaveOutcome::Conflict { current }
            } else {
                lock(&self.stats).saves += 1;
                lock(&self.pending).remove(&record.id);
                records.insert(record.id.clone(), record.clone());
                SaveOutcome::Saved
            }
        };
        if matches!(outcome, SaveOutcome::Saved) && self.hazards.ambiguous_save() {
            return Err(Error::retryable(
                "injected fault: the save happened but its reply was lost",
            ));
        }
        self.hazards.leave().await;
        Ok(outcome)
    }

    async fn mark_outbox_pending(
        &self,
        id: &InstanceId,
        version: u64,
        since: Timestamp,
    ) -> Result<()> {
        self.hazards.enter("store mark").await?;
        if lock(&self.records)
            .get(id)
            .is_some_and(|r| r.version == version)
        {
            lock(&self.pending).insert(id.clone(), (version, since));
        }
        self.hazards.leave().await;
        Ok(())
    }

    async fn pending_outboxes(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<(InstanceId, u64)>> {
        self.hazards.enter("store query").await?;
        let mut marked: Vec<_> = lock(&self.pending)
            .iter()
            .filter(|(_, (_, since))| *since <= before)
            .map(|(id, (version, since))| (*since, id.clone(), *version))
            .collect();
        marked.sort();
        self.hazards.leave().await;
        Ok(marked
            .into_iter()
            .take(limit)
            .map(|(_, id, version)| (id, version))
            .collect())
    }

    async fn append_history(&self, entries: Vec<(InstanceId, HistoryEntry)>) -> Result<()> {
        self.hazards.enter("store history").await?;
        {
            let mut history = lock(&self.history);
            for (id, entry) in entries {
                history.entry(id).or_default().insert(entry.version, entry);
            }
        }
        self.hazards.leave().await;
        Ok(())
    }

    async fn clear_outbox(&self, id: &InstanceId, version: u64) -> Result<bool> {
        self.hazards.enter("store clear").await?;
        let cleared = match lock(&self.records).get_mut(id) {
            Some(record) if record.version == version => {
                record.outbox.clear();
                lock(&self.pending).remove(id);
                true
            }
            _ => false,
        };
        self.hazards.leave().await;
        Ok(cleared)
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
    hazards: Hazards,
}

impl MemoryQueue {
    pub fn new(clock: VirtualClock, hazards: Hazards) -> Self {
        Self {
            state: Arc::default(),
            clock,
            hazards,
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
        self.hazards.enter("queue send").await?;
        let now = self.clock.now();
        {
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
        }
        self.hazards.leave().await;
        Ok(())
    }

    async fn publish(&self, events: Vec<LifecycleEvent>) -> Result<()> {
        self.hazards.enter("event bus publish").await?;
        lock(&self.state).published.extend(events);
        self.hazards.leave().await;
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
    clock: VirtualClock,
    hazards: Hazards,
}

impl MemoryTimers {
    pub fn new(clock: VirtualClock, hazards: Hazards) -> Self {
        Self {
            clock,
            hazards,
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
                // Re-arm, and give this firing its own message id and scheduled time, as
                // Scheduler fills them in.
                armed.insert(id.clone(), (at.plus(*every), envelope.clone()));
                let scheduled = at.to_string();
                envelope.id = MessageId::for_recurring_firing(&id, &scheduled);
                if let crate::event::Event::TimerFired { fired_for, .. } = &mut envelope.event {
                    *fired_for = Some(scheduled);
                }
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

    /// Every armed timer: its id, the instance it fires at, and the timer's name.
    pub fn armed_timers(&self) -> Vec<(TimerId, InstanceId, String)> {
        lock(&self.armed)
            .iter()
            .map(|(id, (_, envelope))| {
                let name = match &envelope.event {
                    crate::event::Event::TimerFired { name, .. } => name.clone(),
                    other => other.kind().to_string(),
                };
                (id.clone(), envelope.target.clone(), name)
            })
            .collect()
    }

    /// (schedules, cancels).
    pub fn stats(&self) -> (u64, u64) {
        *lock(&self.stats)
    }
}

impl TimerService for MemoryTimers {
    async fn schedule(&self, timer: &TimerId, at: Timestamp, envelope: Envelope) -> Result<()> {
        self.hazards.enter("timer schedule").await?;
        lock(&self.stats).0 += 1;
        lock(&self.armed)
            .entry(timer.clone())
            .or_insert((at, envelope));
        self.hazards.leave().await;
        Ok(())
    }

    async fn schedule_recurring(
        &self,
        timer: &TimerId,
        first: Timestamp,
        every: Duration,
        envelope: Envelope,
    ) -> Result<()> {
        self.hazards.enter("timer schedule").await?;
        lock(&self.stats).0 += 1;
        // As Scheduler's rate(): the first firing is a period after the schedule is created, so a
        // schedule created late (an outbox sent again) never fires for times already past.
        let now = self.clock.now();
        let first = if first <= now { now.plus(every) } else { first };
        {
            let mut armed = lock(&self.armed);
            if !armed.contains_key(timer) {
                armed.insert(timer.clone(), (first, envelope));
                lock(&self.recurring).insert(timer.clone(), every);
            }
        }
        self.hazards.leave().await;
        Ok(())
    }

    async fn cancel(&self, timer: &TimerId) -> Result<()> {
        self.hazards.enter("timer cancel").await?;
        lock(&self.stats).1 += 1;
        lock(&self.armed).remove(timer);
        lock(&self.recurring).remove(timer);
        self.hazards.leave().await;
        Ok(())
    }
}

#[derive(Clone, Debug, Default)]
pub struct MemoryInbox {
    entries: Arc<Mutex<BTreeMap<RequestId, InboxEntry>>>,
    hazards: Hazards,
}

impl MemoryInbox {
    pub fn new(hazards: Hazards) -> Self {
        Self {
            hazards,
            ..Self::default()
        }
    }

    pub fn all(&self) -> Vec<InboxEntry> {
        lock(&self.entries).values().cloned().collect()
    }
}

impl Inbox for MemoryInbox {
    async fn open(&self, request: UserRequest) -> Result<()> {
        self.hazards.enter("inbox open").await?;
        let at = request.created_at;
        lock(&self.entries)
            .entry(request.id.clone())
            .or_insert(InboxEntry {
                request,
                status: RequestStatus::Open,
                answer: None,
                applied_at: None,
                updated_at: at,
            });
        self.hazards.leave().await;
        Ok(())
    }

    async fn record_answer(
        &self,
        id: &RequestId,
        answer: Value,
        at: Timestamp,
    ) -> Result<AnswerRecord> {
        self.hazards.enter("inbox answer").await?;
        let record = match lock(&self.entries).get_mut(id) {
            None => AnswerRecord::Missing,
            Some(entry)
                if entry.status == RequestStatus::Open
                    && entry.request.deadline.is_none_or(|deadline| at < deadline) =>
            {
                entry.status = RequestStatus::Answered;
                entry.answer = Some(answer);
                entry.updated_at = at;
                AnswerRecord::Recorded
            }
            Some(entry) => AnswerRecord::Refused(Box::new(entry.clone())),
        };
        self.hazards.leave().await;
        Ok(record)
    }

    async fn expire(&self, id: &RequestId, at: Timestamp) -> Result<Option<Value>> {
        self.hazards.enter("inbox expire").await?;
        let answer = match lock(&self.entries).get_mut(id) {
            Some(entry) if entry.status == RequestStatus::Open => {
                entry.status = RequestStatus::Expired;
                entry.updated_at = at;
                None
            }
            Some(entry) if entry.status == RequestStatus::Answered => entry.answer.clone(),
            _ => None,
        };
        self.hazards.leave().await;
        Ok(answer)
    }

    async fn close(&self, id: &RequestId, outcome: RequestOutcome, at: Timestamp) -> Result<()> {
        self.hazards.enter("inbox close").await?;
        if let Some(entry) = lock(&self.entries).get_mut(id) {
            let open = entry.status == RequestStatus::Open;
            let answered_unapplied =
                entry.status == RequestStatus::Answered && entry.applied_at.is_none();
            match outcome {
                RequestOutcome::Answered if open || answered_unapplied => {
                    entry.status = RequestStatus::Answered;
                    entry.applied_at = Some(at);
                    entry.updated_at = at;
                }
                RequestOutcome::Withdrawn if open || answered_unapplied => {
                    entry.status = RequestStatus::Withdrawn;
                    entry.updated_at = at;
                }
                RequestOutcome::Expired if open => {
                    entry.status = RequestStatus::Expired;
                    entry.updated_at = at;
                }
                _ => {}
            }
        }
        self.hazards.leave().await;
        Ok(())
    }

    async fn get(&self, id: &RequestId) -> Result<Option<InboxEntry>> {
        self.hazards.enter("inbox get").await?;
        let entry = lock(&self.entries).get(id).cloned();
        self.hazards.leave().await;
        Ok(entry)
    }

    async fn list_open(&self) -> Result<Vec<InboxEntry>> {
        self.hazards.enter("inbox list").await?;
        let mut open: Vec<_> = lock(&self.entries)
            .values()
            .filter(|e| e.status == RequestStatus::Open)
            .cloned()
            .collect();
        open.sort_by(|a, b| {
            (a.request.created_at, &a.request.id).cmp(&(b.request.created_at, &b.request.id))
        });
        self.hazards.leave().await;
        Ok(open)
    }
}
