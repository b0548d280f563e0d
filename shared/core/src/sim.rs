//! A deterministic driver for the in-memory engine: virtual time, a scripted user, and injected
//! faults (duplicate delivery, reordering, delays, crashes between save and send, process restarts,
//! concurrent handlers racing on one instance). Everything random comes from one seed, so a failing
//! run is replayed by its seed.

use crate::activity::Activities;
use crate::atom::Registry;
use crate::client;
use crate::envelope::Envelope;
use crate::error::{Error, ErrorKind, Result};
use crate::ids::{InstanceId, RequestId};
use crate::memory::{
    Delivery, Hazards, MemoryInbox, MemoryQueue, MemoryStore, MemoryTimers, QueueFaults,
    VirtualClock,
};
use crate::ports::{Clock, InboxEntry, RequestStatus};
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

pub use crate::random::SplitMix64;

/// Which faults to inject.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Probability that a sent message is delivered twice.
    pub duplicate: f64,
    /// Receive any visible message rather than the oldest.
    pub reorder: bool,
    /// Extra random delay per message.
    pub max_extra_delay: Duration,
    /// Probability, per poll of an unfinished handler, that its process stops there (at a port
    /// call, before or after its effect): every handler of that process is dropped mid-flight, as
    /// a Lambda stopped mid-batch, their messages come back after the visibility timeout, and the
    /// process's warm memory is lost.
    pub crash: f64,
    /// Probability per port call (store, queue, timers, inbox, bus) that it fails before its
    /// effect with a retryable error.
    pub port_failure: f64,
    /// Probability per save that it takes effect but reports a failure (the reply was lost).
    pub ambiguous_save: f64,
    /// Probability, per handled message, that the process restarts and forgets what it sent.
    pub restart: f64,
    /// Probability, per handled message, that a copy of it arrives much later (an hour to three
    /// days): a late duplicate, or a redrive from a dead-letter queue.
    pub late_copy: f64,
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

    /// Every fault at once, at rates that keep a run's length reasonable and leave each message
    /// a chance of a few percent to fail a delivery: with five receives, as deployed, none should
    /// reach a dead-letter queue in tens of thousands of runs.
    pub fn chaos() -> Self {
        Self {
            duplicate: 0.2,
            reorder: true,
            max_extra_delay: Duration::from_secs(3),
            crash: 0.0005,
            port_failure: 0.001,
            ambiguous_save: 0.002,
            restart: 0.05,
            late_copy: 0.02,
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
    /// Messages put back with a delay (contention, an early timer).
    pub deferred: u64,
    /// Processes stopped mid-flight.
    pub crashes: u64,
    pub restarts: u64,
    pub late_copies: u64,
    pub answers_refused: u64,
    /// Saves that lost a version race to a concurrent handler and were re-run.
    pub conflicts: u64,
    /// Port calls that failed, and saves whose reply was lost.
    pub port_failures: u64,
    pub ambiguous_saves: u64,
    /// Outboxes the sweeper sent.
    pub swept: u64,
}

impl std::ops::AddAssign<&SimStats> for SimStats {
    fn add_assign(&mut self, other: &SimStats) {
        self.handled += other.handled;
        self.applied += other.applied;
        self.duplicates += other.duplicates;
        self.ignored += other.ignored;
        self.retried += other.retried;
        self.deferred += other.deferred;
        self.crashes += other.crashes;
        self.restarts += other.restarts;
        self.late_copies += other.late_copies;
        self.answers_refused += other.answers_refused;
        self.conflicts += other.conflicts;
        self.port_failures += other.port_failures;
        self.ambiguous_saves += other.ambiguous_saves;
        self.swept += other.swept;
    }
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
    process: usize,
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
    hazards: Hazards,
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
    next_sweep: Timestamp,
    /// Redelivery delay after a failed handler (the SQS visibility timeout).
    pub visibility_timeout: Duration,
    /// Receives before a message goes to the dead letters (the SQS redrive policy).
    pub max_receives: u32,
    /// How often the sweeper runs (the deployed stack's schedule).
    pub sweep_every: Duration,
    /// Virtual time after which the run stops even if timers are still armed (a timer that
    /// never stops would otherwise run it forever; the end state shows it).
    pub horizon: Duration,
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
        let hazards = Hazards::default();
        hazards.set_yields(faults.concurrency > 1 || faults.crash > 0.0);
        hazards.set_faults(seed ^ 0xfa17, faults.port_failure, faults.ambiguous_save);
        let clock = VirtualClock::starting_at(SIM_EPOCH);
        let store = MemoryStore::new(hazards.clone());
        let queue = MemoryQueue::new(clock.clone(), hazards.clone());
        queue.set_faults(
            QueueFaults {
                duplicate: faults.duplicate,
                max_extra_delay: faults.max_extra_delay,
            },
            seed ^ 0x5eed,
        );
        let timers = MemoryTimers::new(clock.clone(), hazards.clone());
        let inbox = MemoryInbox::new(hazards.clone());
        let runtimes = (0..faults.processes.max(1))
            .map(|process| {
                let runtime = Runtime::new(
                    registry.clone(),
                    store.clone(),
                    queue.clone(),
                    timers.clone(),
                    inbox.clone(),
                    clock.clone(),
                )
                .with_activities(activities.clone())
                .with_jitter_seed(seed.wrapping_mul(31).wrapping_add(process as u64));
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
            hazards,
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
            next_sweep: SIM_EPOCH,
            visibility_timeout: Duration::from_secs(30),
            max_receives: 5,
            sweep_every: Duration::from_secs(60),
            horizon: Duration::from_secs(90 * 24 * 3600),
            max_polls: 50_000_000,
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

    /// Moves virtual time on (for tests that drive the runtime by hand).
    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub fn clock(&self) -> &VirtualClock {
        &self.clock
    }

    /// The runtime of process `n` (each has its own warm memory), for tests that drive several.
    pub fn process(&self, n: usize) -> &MemoryRuntime {
        &self.runtimes[n % self.runtimes.len()]
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

    /// Runs until nothing is left to do (no message, no armed timer, no scripted action, no
    /// unsent outbox) or the horizon passes. Time jumps to the next due thing whenever the engine
    /// is idle.
    pub fn run(&mut self, user: &mut dyn User) -> Result<SimReport> {
        let mut polls = 0u64;
        let end = self.started_at.plus(self.horizon);
        loop {
            let now = self.clock.now();
            for (_, envelope) in self.timers.take_due(now) {
                self.queue.enqueue_at(envelope, now);
            }
            self.run_due_actions(now);
            self.discover_requests(user)?;
            self.sweep_if_due(now);

            let ready = self.queue.ready(now);
            let can_start = ready > 0 && self.in_flight.len() < self.faults.concurrency.max(1);
            let (asleep, wake) = self.clock.sleepers();
            // Every handler waits on a sleep that has not ended: only time can move them on.
            let all_asleep = !self.in_flight.is_empty()
                && asleep >= self.in_flight.len()
                && wake.is_some_and(|at| at > now);
            let sweep = (!self.store.marked().is_empty()).then_some(self.next_sweep);
            let next_event = [
                self.queue.next_visible_at(),
                self.timers.next_due(),
                self.agenda.keys().next().map(|k| k.0),
                wake,
                sweep,
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
                (false, true) if all_asleep => Choice::Advance,
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
                    match self.in_flight[i].handler.as_mut().poll(&mut cx) {
                        Poll::Ready(result) => {
                            let done = self.in_flight.swap_remove(i);
                            self.settle(done.delivery, result);
                        }
                        Poll::Pending if self.rng.chance(self.faults.crash) => {
                            let process = self.in_flight[i].process;
                            self.crash(process);
                        }
                        Poll::Pending => {}
                    }
                }
                Choice::Advance => match next_event {
                    Some(at) if at <= end => self.clock.advance_to(at.max(now)),
                    _ => break,
                },
            }
        }
        // Handlers still asleep at the horizon are abandoned, as a stopped process's would be.
        self.in_flight.clear();
        let hazards = self.hazards.stats();
        self.stats.conflicts = self.store.stats().conflicts;
        self.stats.port_failures = hazards.failures;
        self.stats.ambiguous_saves = hazards.ambiguous_saves;
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
        let process = self.rng.below(self.runtimes.len() as u64) as usize;
        let runtime = Arc::clone(&self.runtimes[process]);
        let envelope = delivery.envelope.clone();
        let how = crate::runtime::Delivery {
            receive_count: delivery.receives,
            deadline: None,
        };
        let handler: Handler =
            Box::pin(async move { runtime.handle_delivery(envelope, how).await });
        self.in_flight.push(InFlight {
            delivery,
            process,
            handler,
        });
    }

    /// Stops `process` mid-flight: its handlers are dropped where they stand and their messages
    /// come back after the visibility timeout; it forgets everything it remembered.
    fn crash(&mut self, process: usize) {
        self.stats.crashes += 1;
        self.runtimes[process].forget_process_memory();
        let (stopped, running): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
            .into_iter()
            .partition(|h| h.process == process);
        self.in_flight = running;
        for handler in stopped {
            self.redeliver_or_dead_letter(handler.delivery, "the process stopped mid-flight");
        }
    }

    fn redeliver_or_dead_letter(&mut self, delivery: Delivery, reason: &str) {
        if delivery.receives < self.max_receives {
            self.stats.retried += 1;
            let at = self.clock.now().plus(self.visibility_timeout);
            self.queue.requeue(delivery, at);
        } else {
            self.dead_letters.push(DeadLetter {
                reason: reason.to_string(),
                receives: delivery.receives,
                envelope: delivery.envelope,
            });
        }
    }

    fn settle(&mut self, delivery: Delivery, result: Result<Disposition>) {
        self.stats.handled += 1;
        match result {
            Ok(disposition) => {
                match disposition {
                    Disposition::Applied { .. } => self.stats.applied += 1,
                    Disposition::Duplicate => self.stats.duplicates += 1,
                    Disposition::Ignored { reason } => {
                        self.stats.ignored += 1;
                        if std::env::var("SIM_DEBUG").is_ok() {
                            let short: String = reason
                                .chars()
                                .filter(|c| !c.is_ascii_digit())
                                .take(60)
                                .collect();
                            eprintln!("IGN {} {short}", delivery.envelope.event.kind());
                        }
                    }
                    Disposition::Deferred { .. } => self.stats.deferred += 1,
                }
                if self.faults.late_copy > 0.0 && self.rng.chance(self.faults.late_copy) {
                    self.stats.late_copies += 1;
                    let later = Duration::from_secs(3600 + self.rng.below(3 * 24 * 3600));
                    let at = self.clock.now().plus(later);
                    self.schedule(at, Action::Deliver(delivery.envelope));
                }
            }
            Err(error) if error.kind == ErrorKind::Retryable => {
                self.redeliver_or_dead_letter(delivery, &error.to_string());
            }
            Err(error) => self.dead_letters.push(DeadLetter {
                reason: error.to_string(),
                receives: delivery.receives,
                envelope: delivery.envelope,
            }),
        }
    }

    /// Runs the sweeper, on its schedule, while some outbox waits for it.
    fn sweep_if_due(&mut self, now: Timestamp) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now.plus(self.sweep_every);
        if self.store.marked().is_empty() {
            return;
        }
        // A sweep that fails (an injected port failure) is simply tried at the next one.
        if let Ok(report) = block_on(self.runtimes[0].sweep(Duration::ZERO, 100)) {
            self.stats.swept += report.flushed as u64;
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
        let open = match block_on(crate::ports::Inbox::list_open(&self.inbox)) {
            Ok(open) => open,
            // The user looks again on the next turn.
            Err(error) if error.is_retryable() => return Ok(()),
            Err(error) => return Err(error),
        };
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

    /// Every instance's name that does not depend on versions: a root's id, then each child's
    /// tag (`root/tag/tag`). Two runs of the same scenario agree on these names.
    pub fn instance_names(&self) -> BTreeMap<InstanceId, String> {
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
        records.iter().map(|r| (r.id.clone(), name(r))).collect()
    }

    /// Every instance, keyed by its name (see [`Simulation::instance_names`]).
    pub fn snapshot(&self) -> BTreeMap<String, InstanceSummary> {
        let names = self.instance_names();
        self.store
            .all()
            .into_iter()
            .map(|r| {
                let name = names
                    .get(&r.id)
                    .cloned()
                    .unwrap_or_else(|| r.id.to_string());
                // Every saved version has its entry in the full history, the latest one once
                // its outbox has gone out.
                let written: std::collections::BTreeSet<u64> = self
                    .store
                    .history(&r.id)
                    .iter()
                    .map(|e| e.version)
                    .collect();
                let history_complete = (1..=r.version)
                    .all(|v| written.contains(&v) || (v == r.version && !r.outbox.is_empty()));
                (
                    name,
                    InstanceSummary {
                        atom: r.atom,
                        status: r.status,
                        state: r.state,
                        result: r.result,
                        error: r.error,
                        transitions: r.transitions,
                        history_complete,
                    },
                )
            })
            .collect()
    }

    /// Everything a run leaves behind, keyed by names that do not depend on versions: the
    /// instances, the inbox, the lifecycle events published, the timers still armed and the
    /// outboxes still unsent. Two runs of the same scenario must agree on it.
    pub fn end_state(&self) -> EndState {
        let names = self.instance_names();
        let name_of = |id: &InstanceId| names.get(id).cloned().unwrap_or_else(|| id.to_string());
        let mut inbox: BTreeMap<String, InboxSummary> = BTreeMap::new();
        let mut entries = self.inbox.all();
        entries.sort_by(|a, b| {
            (a.request.created_at, &a.request.id).cmp(&(b.request.created_at, &b.request.id))
        });
        for entry in entries {
            let owner = name_of(&entry.request.instance);
            let ordinal = inbox
                .keys()
                .filter(|k| k.starts_with(&format!("{owner}?")))
                .count();
            inbox.insert(
                format!("{owner}?{ordinal}"),
                InboxSummary {
                    kind: entry.request.kind,
                    prompt: entry.request.prompt,
                    status: entry.status,
                    answer: entry.answer,
                    applied: entry.applied_at.is_some(),
                },
            );
        }
        let mut published: BTreeMap<String, PublishedSummary> = BTreeMap::new();
        for event in self.queue.published() {
            let summary = published
                .entry(name_of(&event.instance))
                .or_insert_with(|| PublishedSummary {
                    status: event.status,
                    result: event.result.clone(),
                    error: event.error.clone(),
                    ids: BTreeSet::new(),
                });
            summary.ids.insert(event.id.clone());
        }
        let published = published
            .into_iter()
            .map(|(name, mut summary)| {
                // The ids differ between runs (they carry the version); their number must not.
                let distinct = summary.ids.len();
                summary.ids = (0..distinct).map(|i| i.to_string()).collect();
                (name, summary)
            })
            .collect();
        let mut armed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (_, instance, timer) in self.timers.armed_timers() {
            armed.entry(name_of(&instance)).or_default().push(timer);
        }
        for timers in armed.values_mut() {
            timers.sort();
        }
        EndState {
            instances: self.snapshot(),
            inbox,
            published,
            armed,
            unsent: self.store.marked().iter().map(name_of).collect(),
        }
    }
}

/// What a run left behind (see [`Simulation::end_state`]).
#[derive(Clone, Debug, PartialEq)]
pub struct EndState {
    pub instances: BTreeMap<String, InstanceSummary>,
    /// Requests by `{instance}?{n}` (the n-th request of that instance).
    pub inbox: BTreeMap<String, InboxSummary>,
    /// Lifecycle events by instance.
    pub published: BTreeMap<String, PublishedSummary>,
    /// Timers still armed, by instance.
    pub armed: BTreeMap<String, Vec<String>>,
    /// Instances whose outbox is still marked unsent.
    pub unsent: Vec<String>,
}

/// A request as the inbox ended it.
#[derive(Clone, Debug, PartialEq)]
pub struct InboxSummary {
    pub kind: String,
    pub prompt: String,
    pub status: RequestStatus,
    pub answer: Option<Value>,
    pub applied: bool,
}

/// The lifecycle events published for one instance: copies share an id, so `ids` counts the
/// distinct events (one per finished instance).
#[derive(Clone, Debug, PartialEq)]
pub struct PublishedSummary {
    pub status: Status,
    pub result: Option<Value>,
    pub error: Option<String>,
    pub ids: BTreeSet<String>,
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
    /// The full history holds every transition the record remembers (see [`MemoryStore::history`]).
    pub history_complete: bool,
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
