//! A deterministic driver for the in-memory engine: virtual time, a scripted user, and injected
//! faults (duplicate delivery, reordering, delays, crashes between save and send, process restarts,
//! concurrent handlers racing on one instance). Everything random comes from one seed, so a failing
//! run is replayed by its seed.

use crate::activity::Activities;
use crate::atom::Registry;
use crate::client;
use crate::envelope::Envelope;
use crate::error::{Error, ErrorKind, Result};
use crate::ids::RequestId;
use crate::memory::{
    Delivery, MemoryInbox, MemoryQueue, MemoryStore, MemoryTimers, QueueFaults, VirtualClock,
    YieldPoints,
};
use crate::ports::{Clock, InboxEntry};
use crate::record::{InstanceRecord, Status};
use crate::runtime::{Disposition, Observer, Runtime};
use crate::time::Timestamp;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

/// The runtime on in-memory ports.
pub type MemoryRuntime = Runtime<MemoryStore, MemoryQueue, MemoryTimers, MemoryInbox, VirtualClock>;

/// SplitMix64: tiny, fast and stable across versions, so a seed means the same run forever.
#[derive(Clone, Debug, Default)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// Which faults to inject.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Probability that a sent message is delivered twice.
    pub duplicate: f64,
    /// Receive any visible message rather than the oldest.
    pub reorder: bool,
    /// Extra random delay per message.
    pub max_extra_delay: Duration,
    /// Probability, per handled message, that the handler crashes between its save and its send.
    pub crash_before_send: f64,
    /// Probability, per handled message, that the process restarts and forgets what it sent.
    pub restart: f64,
    /// How many handlers may run at once; above 1 they interleave at every port call.
    pub concurrency: usize,
    /// How many processes (warm Lambda containers) share the work, each with its own memory of
    /// what it sent and decoded; each message goes to one at random.
    pub processes: usize,
}

impl Faults {
    /// No faults: one handler, oldest message first.
    pub fn none() -> Self {
        Self {
            concurrency: 1,
            processes: 1,
            ..Self::default()
        }
    }

    /// Every fault at once, at rates that keep a run's length reasonable.
    pub fn chaos() -> Self {
        Self {
            duplicate: 0.2,
            reorder: true,
            max_extra_delay: Duration::from_secs(3),
            crash_before_send: 0.1,
            restart: 0.05,
            concurrency: 4,
            processes: 3,
        }
    }
}

/// A scripted user: told about each new request once, returns answers to give after a delay.
pub trait User {
    fn on_request(&mut self, entry: &InboxEntry) -> Vec<(Duration, Value)>;
}

/// A user who never answers.
#[derive(Clone, Copy, Debug, Default)]
pub struct SilentUser;

impl User for SilentUser {
    fn on_request(&mut self, _: &InboxEntry) -> Vec<(Duration, Value)> {
        Vec::new()
    }
}

/// A message given up on: terminal error, or too many receives.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub envelope: Envelope,
    pub reason: String,
    pub receives: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub handled: u64,
    pub applied: u64,
    pub duplicates: u64,
    pub ignored: u64,
    pub retried: u64,
    pub crashes: u64,
    pub restarts: u64,
    pub answers_refused: u64,
    /// Saves that lost a version race to a concurrent handler and were re-run.
    pub conflicts: u64,
}

enum Choice {
    Start,
    Poll,
    Advance,
}

enum Action {
    Deliver(Envelope),
    Answer(RequestId, Value),
}

type Handler = Pin<Box<dyn Future<Output = Result<Disposition>> + Send>>;

struct InFlight {
    delivery: Delivery,
    handler: Handler,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct SimReport {
    pub stats: SimStats,
    pub dead_letters: Vec<DeadLetter>,
    pub refused_answers: Vec<String>,
    pub started_at: Timestamp,
    pub ended_at: Timestamp,
}

/// The deterministic driver.
pub struct Simulation {
    /// One runtime per simulated process, all on the same ports.
    runtimes: Vec<Arc<MemoryRuntime>>,
    store: MemoryStore,
    queue: MemoryQueue,
    timers: MemoryTimers,
    inbox: MemoryInbox,
    clock: VirtualClock,
    faults: Faults,
    rng: SplitMix64,
    agenda: BTreeMap<(Timestamp, u64), Action>,
    agenda_seq: u64,
    seen_requests: BTreeSet<RequestId>,
    in_flight: Vec<InFlight>,
    stats: SimStats,
    dead_letters: Vec<DeadLetter>,
    refused_answers: Vec<String>,
    started_at: Timestamp,
    /// Redelivery delay after a failed handler (the SQS visibility timeout).
    pub visibility_timeout: Duration,
    /// Receives before a message goes to the dead letters (the SQS redrive policy).
    pub max_receives: u32,
    /// Handler polls before the run is declared stuck.
    pub max_polls: u64,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("now", &self.clock.now())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// 2026-01-01T00:00:00Z, where virtual time starts.
pub const SIM_EPOCH: Timestamp = Timestamp(1_767_225_600_000);

impl Simulation {
    pub fn new(registry: Registry, seed: u64, faults: Faults) -> Self {
        Self::with_observer(registry, seed, faults, None)
    }

    /// Like [`Simulation::new`], calling `observer` after every saved transition.
    pub fn with_observer(
        registry: Registry,
        seed: u64,
        faults: Faults,
        observer: Option<Observer>,
    ) -> Self {
        Self::with_activities(registry, Activities::default(), seed, faults, observer)
    }

    /// A simulation whose processes can run `activities` (what steps ask for with `ctx.call`).
    pub fn with_activities(
        registry: Registry,
        activities: Activities,
        seed: u64,
        faults: Faults,
        observer: Option<Observer>,
    ) -> Self {
        let yields = YieldPoints::default();
        yields.set(faults.concurrency > 1);
        let clock = VirtualClock::starting_at(SIM_EPOCH);
        let store = MemoryStore::new(yields.clone());
        let queue = MemoryQueue::new(clock.clone(), yields.clone());
        queue.set_faults(
            QueueFaults {
                duplicate: faults.duplicate,
                max_extra_delay: faults.max_extra_delay,
            },
            seed ^ 0x5eed,
        );
        let timers = MemoryTimers::new(yields.clone());
        let inbox = MemoryInbox::new(yields);
        let runtimes = (0..faults.processes.max(1))
            .map(|_| {
                let runtime = Runtime::new(
                    registry.clone(),
                    store.clone(),
                    queue.clone(),
                    timers.clone(),
                    inbox.clone(),
                    clock.clone(),
                )
                .with_activities(activities.clone());
                Arc::new(match &observer {
                    Some(observer) => runtime.with_observer(Arc::clone(observer)),
                    None => runtime,
                })
            })
            .collect();
        Self {
            runtimes,
            store,
            queue,
            timers,
            inbox,
            clock,
            faults,
            rng: SplitMix64::new(seed),
            agenda: BTreeMap::new(),
            agenda_seq: 0,
            seen_requests: BTreeSet::new(),
            in_flight: Vec::new(),
            stats: SimStats::default(),
            dead_letters: Vec::new(),
            refused_answers: Vec::new(),
            started_at: SIM_EPOCH,
            visibility_timeout: Duration::from_secs(30),
            max_receives: 50,
            max_polls: 10_000_000,
        }
    }

    /// The first process's runtime.
    pub fn runtime(&self) -> &MemoryRuntime {
        &self.runtimes[0]
    }
    pub fn store(&self) -> &MemoryStore {
        &self.store
    }
    pub fn queue(&self) -> &MemoryQueue {
        &self.queue
    }
    pub fn timers(&self) -> &MemoryTimers {
        &self.timers
    }
    pub fn inbox(&self) -> &MemoryInbox {
        &self.inbox
    }
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Sends `envelope` from outside after `delay` of virtual time.
    pub fn send_after(&mut self, delay: Duration, envelope: Envelope) {
        let at = self.clock.now().plus(delay);
        self.schedule(at, Action::Deliver(envelope));
    }

    pub fn send(&mut self, envelope: Envelope) {
        self.send_after(Duration::ZERO, envelope);
    }

    fn schedule(&mut self, at: Timestamp, action: Action) {
        self.agenda_seq += 1;
        self.agenda.insert((at, self.agenda_seq), action);
    }

    /// Runs until nothing is left to do: no message, no armed timer, no scripted action. Time
    /// jumps to the next due thing whenever the engine is idle.
    pub fn run(&mut self, user: &mut dyn User) -> Result<SimReport> {
        let mut polls = 0u64;
        loop {
            let now = self.clock.now();
            for (_, envelope) in self.timers.take_due(now) {
                self.queue.enqueue_at(envelope, now);
            }
            self.run_due_actions(now);
            self.discover_requests(user)?;

            let ready = self.queue.ready(now);
            let can_start = ready > 0 && self.in_flight.len() < self.faults.concurrency.max(1);
            let next_event = [
                self.queue.next_visible_at(),
                self.timers.next_due(),
                self.agenda.keys().next().map(|k| k.0),
            ]
            .into_iter()
            .flatten()
            .min();
            // With concurrent handlers, a little time may pass while some are mid-flight, so
            // messages that become visible just after can overlap them, as concurrent Lambda
            // invocations do. (Not much: a handler is not hours long.)
            let may_advance = self.faults.concurrency > 1
                && next_event.is_some_and(|at| at <= now.plus(Duration::from_secs(1)));
            let choice = match (can_start, !self.in_flight.is_empty()) {
                (true, false) => Choice::Start,
                (true, true) => match self.rng.below(3) {
                    0 => Choice::Start,
                    _ => Choice::Poll,
                },
                (false, true) if may_advance && self.rng.chance(0.2) => Choice::Advance,
                (false, true) => Choice::Poll,
                (false, false) => Choice::Advance,
            };
            match choice {
                Choice::Start => {
                    let nth = if self.faults.reorder {
                        self.rng.below(ready as u64) as usize
                    } else {
                        0
                    };
                    if let Some(delivery) = self.queue.receive(now, nth) {
                        self.start_handler(delivery);
                    }
                }
                Choice::Poll => {
                    polls += 1;
                    if polls > self.max_polls {
                        return Err(Error::terminal(format!(
                            "simulation did not settle within {} polls",
                            self.max_polls
                        )));
                    }
                    let i = self.rng.below(self.in_flight.len() as u64) as usize;
                    let mut cx = std::task::Context::from_waker(Waker::noop());
                    if let Poll::Ready(result) = self.in_flight[i].handler.as_mut().poll(&mut cx) {
                        let done = self.in_flight.swap_remove(i);
                        self.settle(done.delivery, result);
                    }
                }
                Choice::Advance => match next_event {
                    Some(at) => self.clock.advance_to(at.max(now)),
                    None => break,
                },
            }
        }
        self.stats.conflicts = self.store.stats().conflicts;
        Ok(SimReport {
            stats: self.stats.clone(),
            dead_letters: self.dead_letters.clone(),
            refused_answers: self.refused_answers.clone(),
            started_at: self.started_at,
            ended_at: self.clock.now(),
        })
    }

    fn start_handler(&mut self, delivery: Delivery) {
        if self.faults.restart > 0.0 && self.rng.chance(self.faults.restart) {
            self.stats.restarts += 1;
            let process = self.rng.below(self.runtimes.len() as u64) as usize;
            self.runtimes[process].forget_process_memory();
        }
        if self.faults.crash_before_send > 0.0 && self.rng.chance(self.faults.crash_before_send) {
            self.stats.crashes += 1;
            self.queue.fail_next_sends(1);
        }
        let process = self.rng.below(self.runtimes.len() as u64) as usize;
        let runtime = Arc::clone(&self.runtimes[process]);
        let envelope = delivery.envelope.clone();
        let handler: Handler = Box::pin(async move { runtime.handle(envelope).await });
        self.in_flight.push(InFlight { delivery, handler });
    }

    fn settle(&mut self, delivery: Delivery, result: Result<Disposition>) {
        self.stats.handled += 1;
        match result {
            Ok(Disposition::Applied { .. }) => self.stats.applied += 1,
            Ok(Disposition::Duplicate) => self.stats.duplicates += 1,
            Ok(Disposition::Ignored { .. }) => self.stats.ignored += 1,
            Err(error)
                if error.kind == ErrorKind::Retryable && delivery.receives < self.max_receives =>
            {
                self.stats.retried += 1;
                let at = self.clock.now().plus(self.visibility_timeout);
                self.queue.requeue(delivery, at);
            }
            Err(error) => self.dead_letters.push(DeadLetter {
                reason: error.to_string(),
                receives: delivery.receives,
                envelope: delivery.envelope,
            }),
        }
    }

    fn run_due_actions(&mut self, now: Timestamp) {
        while let Some(entry) = self.agenda.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Action::Deliver(envelope) => self.queue.enqueue_at(envelope, now),
                Action::Answer(request, answer) => {
                    let answered = block_on(client::answer(
                        &self.inbox,
                        &self.queue,
                        &self.clock,
                        &request,
                        answer.clone(),
                    ));
                    match answered {
                        Ok(()) => {}
                        // A client retries what failed for a passing reason.
                        Err(error) if error.is_retryable() => {
                            self.schedule(
                                now.plus(Duration::from_secs(1)),
                                Action::Answer(request, answer),
                            );
                        }
                        Err(error) => {
                            self.stats.answers_refused += 1;
                            self.refused_answers
                                .push(format!("{request}: {}", error.reason));
                        }
                    }
                }
            }
        }
    }

    fn discover_requests(&mut self, user: &mut dyn User) -> Result<()> {
        let open = block_on(crate::ports::Inbox::list_open(&self.inbox))?;
        let now = self.clock.now();
        for entry in open {
            if self.seen_requests.insert(entry.request.id.clone()) {
                for (delay, answer) in user.on_request(&entry) {
                    self.schedule(
                        now.plus(delay),
                        Action::Answer(entry.request.id.clone(), answer),
                    );
                }
            }
        }
        Ok(())
    }

    /// Every instance, keyed by a name that does not depend on versions: a root's id, then each
    /// child's tag (`root/tag/tag`). Two runs of the same scenario must agree on this.
    pub fn snapshot(&self) -> BTreeMap<String, InstanceSummary> {
        let records = self.store.all();
        let by_id: BTreeMap<_, _> = records.iter().map(|r| (r.id.clone(), r)).collect();
        let name = |record: &InstanceRecord| {
            let mut parts = Vec::new();
            let mut at = record;
            loop {
                match &at.parent {
                    Some(parent) => {
                        parts.push(parent.tag.clone());
                        match by_id.get(&parent.id) {
                            Some(p) => at = p,
                            None => {
                                parts.push(format!("<missing {}>", parent.id));
                                break;
                            }
                        }
                    }
                    None => {
                        parts.push(at.id.to_string());
                        break;
                    }
                }
            }
            parts.reverse();
            parts.join("/")
        };
        records
            .iter()
            .map(|r| {
                (
                    name(r),
                    InstanceSummary {
                        atom: r.atom.clone(),
                        status: r.status,
                        state: r.state.clone(),
                        result: r.result.clone(),
                        error: r.error.clone(),
                        transitions: r.transitions,
                    },
                )
            })
            .collect()
    }
}

/// What an instance ended as, for comparing runs.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceSummary {
    pub atom: String,
    pub status: Status,
    pub state: String,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub transitions: u64,
}

/// Runs a future whose every await completes without outside help (in-memory ports) to the end.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}
