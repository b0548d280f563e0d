//! The step algorithm: exactly-once state transitions over at-least-once delivery.
//!
//! For one message: load the instance → if the message was already applied, drop it (after
//! re-sending an outbox that may not have gone out) → run the atom's step → save the new record,
//! outbox included, conditioned on the version read → send the outbox. A version conflict re-runs
//! the step on the record the store returned, a bounded number of times. See ARCHITECTURE.md.

use crate::atom::{Command, Context, DynAtom, InstanceRef, RESERVED_TIMER_PREFIX, Registry, Step};
use crate::envelope::{Envelope, encoded_len};
use crate::error::{Error, Result};
use crate::event::{AtomEvent, Event, ParentLink};
use crate::ids::{CommandSlot, InstanceId, MessageId, RequestId, TimerId};
use crate::ports::{Clock, Dispatcher, Inbox, InstanceStore, Outgoing, SaveOutcome, TimerService};
use crate::record::{
    Effect, InstanceRecord, MAX_RECORD_BYTES, PendingChild, PendingRequest, PendingTimer,
    RequestOutcome, Status, UserRequest, Waiting,
};
use crate::schema;
use crate::time::Timestamp;
use serde_json::Value;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;

/// How many times a step is re-run on version conflicts before the message is handed back.
pub const MAX_CONFLICT_ATTEMPTS: u32 = 8;

/// What became of a message that was handled without error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// The instance moved to `version`.
    Applied { version: u64, status: Status },
    /// The message had been applied before; nothing changed.
    Duplicate,
    /// The message no longer matters (finished instance, stale timer, answered request, ...).
    Ignored { reason: String },
}

/// One saved transition, for observers (the demo's trace, a history table).
#[derive(Clone, Debug)]
pub struct Transition {
    pub at: Timestamp,
    pub instance: InstanceId,
    pub atom: String,
    pub message: MessageId,
    pub event: &'static str,
    pub version: u64,
    pub status: Status,
    pub effects: Vec<String>,
    pub attempts: u32,
}

/// Called after every saved transition.
pub type Observer = Arc<dyn Fn(&Transition) + Send + Sync>;

/// The runtime: a registry of atoms plus the ports it runs them on.
pub struct Runtime<S, D, T, I, C> {
    registry: Registry,
    store: S,
    dispatcher: D,
    timers: T,
    inbox: I,
    clock: C,
    sent: SentOutboxes,
    observer: Option<Observer>,
}

impl<S, D, T, I, C> fmt::Debug for Runtime<S, D, T, I, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl<S, D, T, I, C> Runtime<S, D, T, I, C>
where
    S: InstanceStore,
    D: Dispatcher,
    T: TimerService,
    I: Inbox,
    C: Clock,
{
    pub fn new(registry: Registry, store: S, dispatcher: D, timers: T, inbox: I, clock: C) -> Self {
        Self {
            registry,
            store,
            dispatcher,
            timers,
            inbox,
            clock,
            sent: SentOutboxes::default(),
            observer: None,
        }
    }

    /// Calls `observer` after every saved transition.
    pub fn with_observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
    pub fn store(&self) -> &S {
        &self.store
    }
    pub fn dispatcher(&self) -> &D {
        &self.dispatcher
    }
    pub fn timers(&self) -> &T {
        &self.timers
    }
    pub fn inbox(&self) -> &I {
        &self.inbox
    }
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Forgets which outboxes this process has sent, as a restarted process would; the next step
    /// of each instance then re-sends its predecessor's outbox (harmless, deduplicated downstream).
    pub fn forget_sent_outboxes(&self) {
        self.sent.clear();
    }

    /// Handles one message. `Err` is retryable (redeliver) or terminal (the message is refused with
    /// the reason and the instance is unchanged).
    pub async fn handle(&self, envelope: Envelope) -> Result<Disposition> {
        let span = tracing::info_span!(
            "step",
            message = %envelope.id,
            instance = %envelope.target,
            atom = %envelope.atom,
            event = envelope.event.kind(),
        );
        self.handle_inner(envelope).instrument(span).await
    }

    async fn handle_inner(&self, envelope: Envelope) -> Result<Disposition> {
        let Some(atom) = self.registry.get(&envelope.atom) else {
            return Err(Error::terminal(format!(
                "unknown atom type {:?}; this runtime runs {}",
                envelope.atom,
                self.registry.names().join(", ")
            )));
        };
        let mut current = self.store.load(&envelope.target).await?;
        for attempt in 1..=MAX_CONFLICT_ATTEMPTS {
            let plan = plan(atom.as_ref(), current.as_ref(), &envelope, self.clock.now());
            if let Some(previous) = &current {
                // Its outbox may not have gone out (a crash after the save): send it before we
                // replace it, or before we drop this message.
                self.flush_previous(previous).await?;
            }
            let next = match plan? {
                Plan::Drop(disposition) => {
                    match &disposition {
                        Disposition::Duplicate => tracing::debug!("duplicate message dropped"),
                        Disposition::Ignored { reason } => {
                            tracing::info!(%reason, "message ignored")
                        }
                        Disposition::Applied { .. } => {}
                    }
                    return Ok(disposition);
                }
                Plan::Save(next) => next,
            };
            let (id, version, status) = (next.id.clone(), next.version, next.status);
            let effects = next.outbox.clone();
            let expected = current.as_ref().map(|r| r.version);
            match self.store.save(*next, expected).await? {
                SaveOutcome::Saved => {
                    self.perform(&effects).await?;
                    self.sent.insert(&id, version);
                    if let Some(observe) = &self.observer {
                        observe(&Transition {
                            at: self.clock.now(),
                            instance: id,
                            atom: envelope.atom.clone(),
                            message: envelope.id.clone(),
                            event: envelope.event.kind(),
                            version,
                            status,
                            effects: describe_effects(&effects),
                            attempts: attempt,
                        });
                    }
                    tracing::debug!(
                        version,
                        status = status.as_str(),
                        effects = effects.len(),
                        "applied"
                    );
                    return Ok(Disposition::Applied { version, status });
                }
                SaveOutcome::Conflict { current: now } => {
                    tracing::debug!(attempt, "version conflict, re-running the step");
                    current = match now {
                        Some(record) => Some(*record),
                        None => self.store.load(&envelope.target).await?,
                    };
                }
            }
        }
        Err(Error::retryable(format!(
            "{} kept changing under us: {MAX_CONFLICT_ATTEMPTS} conflicting saves in a row",
            envelope.target
        )))
    }

    async fn flush_previous(&self, previous: &InstanceRecord) -> Result<()> {
        if previous.outbox.is_empty() || self.sent.contains(&previous.id, previous.version) {
            return Ok(());
        }
        tracing::debug!(
            version = previous.version,
            "re-sending an outbox that may not have gone out"
        );
        self.perform(&previous.outbox).await?;
        self.sent.insert(&previous.id, previous.version);
        Ok(())
    }

    /// Performs effects. Each is idempotent where it lands, so performing them twice is harmless.
    async fn perform(&self, effects: &[Effect]) -> Result<()> {
        let now = self.clock.now();
        let mut batch = Vec::new();
        for effect in effects {
            match effect {
                Effect::OpenRequest { request } => self.inbox.open(request.clone()).await?,
                Effect::ScheduleTimer {
                    timer,
                    at,
                    envelope,
                } => {
                    self.timers.schedule(timer, *at, envelope.clone()).await?;
                }
                Effect::Send { envelope } => batch.push(Outgoing {
                    envelope: envelope.clone(),
                    delay: Duration::ZERO,
                }),
                Effect::CancelTimer { .. } | Effect::CloseRequest { .. } => {}
            }
        }
        if !batch.is_empty() {
            self.dispatcher.send(batch).await?;
        }
        for effect in effects {
            match effect {
                Effect::CancelTimer { timer } => self.timers.cancel(timer).await?,
                Effect::CloseRequest { request, outcome } => {
                    self.inbox.close(request, *outcome, now).await?
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// One line per distinct effect, repeats counted ("3× send child_progress to p").
fn describe_effects(effects: &[Effect]) -> Vec<String> {
    let mut lines: Vec<(String, usize)> = Vec::new();
    for line in effects.iter().map(describe_effect) {
        match lines.last_mut() {
            Some((last, n)) if *last == line => *n += 1,
            _ => lines.push((line, 1)),
        }
    }
    lines
        .into_iter()
        .map(|(line, n)| {
            if n == 1 {
                line
            } else {
                format!("{n}× {line}")
            }
        })
        .collect()
}

fn describe_effect(effect: &Effect) -> String {
    match effect {
        Effect::Send { envelope } => {
            format!("send {} to {}", envelope.event.kind(), envelope.target)
        }
        Effect::ScheduleTimer { envelope, at, .. } => match &envelope.event {
            Event::TimerFired { name, .. } => format!("timer {name} at {at}"),
            other => format!("timer {} at {at}", other.kind()),
        },
        Effect::CancelTimer { timer } => format!("cancel timer {timer}"),
        Effect::OpenRequest { request } => format!("ask user ({}) {}", request.kind, request.id),
        Effect::CloseRequest { request, outcome } => {
            format!("close request {request} ({outcome:?})")
        }
    }
}

/// Which outboxes this process has sent, so the next step need not send them again.
#[derive(Debug, Default)]
struct SentOutboxes {
    /// (instance fingerprint, version): membership, and insertion order for eviction.
    inner: Mutex<(HashSet<OutboxKey>, VecDeque<OutboxKey>)>,
}

type OutboxKey = (u64, u64);

impl SentOutboxes {
    const CAPACITY: usize = 4096;

    fn key(id: &InstanceId, version: u64) -> (u64, u64) {
        let fp = id.as_str().bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        (fp, version)
    }

    fn contains(&self, id: &InstanceId, version: u64) -> bool {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.contains(&Self::key(id, version))
    }

    fn insert(&self, id: &InstanceId, version: u64) {
        let key = Self::key(id, version);
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *guard;
        if set.insert(key) {
            order.push_back(key);
            if order.len() > Self::CAPACITY
                && let Some(old) = order.pop_front()
            {
                set.remove(&old);
            }
        }
    }

    fn clear(&self) {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.clear();
        guard.1.clear();
    }
}

enum Plan {
    Drop(Disposition),
    Save(Box<InstanceRecord>),
}

fn ignored(reason: impl Into<String>) -> Result<Plan> {
    Ok(Plan::Drop(Disposition::Ignored {
        reason: reason.into(),
    }))
}

/// Decides what one message does to one instance. Pure: the same inputs give the same plan.
fn plan(
    atom: &dyn DynAtom,
    current: Option<&InstanceRecord>,
    env: &Envelope,
    now: Timestamp,
) -> Result<Plan> {
    let Some(current) = current else {
        let Event::Started { input, parent } = &env.event else {
            // Possibly a message that overtook its instance's start; redelivery settles it, and a
            // message for an instance that never starts ends in the dead-letter queue.
            return Err(Error::retryable(format!(
                "instance {} does not exist (yet)",
                env.target
            )));
        };
        let fresh = InstanceRecord {
            id: env.target.clone(),
            atom: env.atom.clone(),
            version: 0,
            status: Status::Suspended,
            state: String::new(),
            parent: parent.clone(),
            waiting: Waiting::default(),
            applied: Default::default(),
            outbox: Vec::new(),
            progress_sent: 0,
            transitions: 0,
            created_at: now,
            updated_at: now,
            result: None,
            error: None,
        };
        let mut draft = Draft::new(atom, &fresh, now, Some(&env.id));
        draft.step(AtomEvent::Started(input.clone()))?;
        return draft.into_plan(&fresh);
    };

    if current.applied.contains(&env.id) {
        return Ok(Plan::Drop(Disposition::Duplicate));
    }
    if current.atom != env.atom {
        return Err(Error::terminal(format!(
            "message addressed to atom {:?} but instance {} is a {:?}",
            env.atom, current.id, current.atom
        )));
    }
    if current.status.is_finished() {
        return ignored(format!("instance is already {}", current.status.as_str()));
    }

    let mut draft = Draft::new(atom, current, now, Some(&env.id));
    match &env.event {
        Event::Started { .. } => return ignored("instance already started"),
        Event::ChildCompleted {
            child,
            progress_reports,
            ..
        }
        | Event::ChildFailed {
            child,
            progress_reports,
            ..
        } => {
            let Some(pending) = draft.record.waiting.children.get_mut(child) else {
                return ignored(format!("{child} is not a pending child"));
            };
            if !pending.progress.has_all_below(*progress_reports) {
                // Some progress is still in flight: keep the finish until it has all arrived.
                if pending.early_finish.is_some() {
                    return Ok(Plan::Drop(Disposition::Duplicate));
                }
                pending.early_finish = Some(Box::new(env.event.clone()));
                return draft.into_plan(current);
            }
            draft.finish_child(child, env.event.clone())?;
        }
        Event::ChildProgress {
            child,
            tag,
            seq,
            payload,
        } => {
            let Some(pending) = draft.record.waiting.children.get_mut(child) else {
                return ignored(format!("{child} is not a pending child"));
            };
            if !pending.progress.insert(*seq) {
                return Ok(Plan::Drop(Disposition::Duplicate));
            }
            let ready = match &pending.early_finish {
                Some(finish) => match finish.as_ref() {
                    Event::ChildCompleted {
                        progress_reports, ..
                    }
                    | Event::ChildFailed {
                        progress_reports, ..
                    } => pending.progress.has_all_below(*progress_reports),
                    _ => false,
                },
                None => false,
            };
            let held = if ready {
                pending.early_finish.take()
            } else {
                None
            };
            draft.step(AtomEvent::ChildProgress {
                child: child.clone(),
                tag: tag.clone(),
                seq: *seq,
                payload: payload.clone(),
            })?;
            if let Some(finish) = held {
                draft.finish_child(child, *finish)?;
            }
        }
        Event::TimerFired { name, timer } => {
            match draft.record.waiting.timers.get(name) {
                Some(pending) if pending.id == *timer => {}
                _ => return ignored(format!("timer {name} ({timer}) is no longer pending")),
            }
            let pending = draft
                .record
                .waiting
                .timers
                .remove(name)
                .ok_or_else(|| Error::terminal("timer vanished"))?;
            match pending.deadline_of {
                Some(request) => {
                    let kind = match draft.record.waiting.requests.remove(&request) {
                        Some(r) => r.kind,
                        None => return ignored(format!("request {request} is no longer pending")),
                    };
                    draft.effects.push(Effect::CloseRequest {
                        request: request.clone(),
                        outcome: RequestOutcome::Expired,
                    });
                    draft.step(AtomEvent::RequestExpired { request, kind })?;
                }
                None => draft.step(AtomEvent::TimerFired { name: name.clone() })?,
            }
        }
        Event::UserAnswered { request, answer } => {
            let Some(pending) = draft.record.waiting.requests.get(request) else {
                return ignored(format!("request {request} is no longer pending"));
            };
            // A refused answer leaves the instance as it was: the user can answer again.
            schema::validate_answer(&pending.schema, answer)
                .map_err(|e| e.context(format!("answer to {request} refused")))?;
            let pending = draft
                .record
                .waiting
                .requests
                .remove(request)
                .ok_or_else(|| Error::terminal("request vanished"))?;
            if let Some(deadline) = pending.deadline_timer
                && let Some(timer) = draft.record.waiting.timers.remove(&deadline)
            {
                draft.effects.push(Effect::CancelTimer { timer: timer.id });
            }
            draft.effects.push(Effect::CloseRequest {
                request: request.clone(),
                outcome: RequestOutcome::Answered,
            });
            draft.step(AtomEvent::UserAnswered {
                request: request.clone(),
                kind: pending.kind,
                answer: answer.clone(),
            })?;
        }
        Event::Signal { name, payload } => {
            draft.step(AtomEvent::Signal {
                name: name.clone(),
                payload: payload.clone(),
            })?;
        }
        Event::CancelRequested { reason } => {
            draft.cancelling = true;
            draft.step(AtomEvent::CancelRequested {
                reason: reason.clone(),
            })?;
            let reason = if reason.is_empty() {
                "cancelled".to_string()
            } else {
                reason.clone()
            };
            draft.finish(Status::Cancelled, None, Some(reason));
        }
        Event::Continue { cursor } => {
            if draft.record.waiting.continuation.as_ref() != Some(&env.id) {
                return ignored("continuation is stale");
            }
            draft.record.waiting.continuation = None;
            draft.step(AtomEvent::Continue {
                cursor: cursor.clone(),
            })?;
        }
    }
    draft.into_plan(current)
}

/// The record being built by one message's steps.
struct Draft<'a> {
    atom: &'a dyn DynAtom,
    record: InstanceRecord,
    effects: Vec<Effect>,
    now: Timestamp,
    next_index: u32,
    /// Set while handling a cancel: the step's outcome does not decide the status.
    cancelling: bool,
    finished: bool,
}

impl<'a> Draft<'a> {
    /// Starts the next version of `current`, remembering `message` as applied.
    fn new(
        atom: &'a dyn DynAtom,
        current: &InstanceRecord,
        now: Timestamp,
        message: Option<&MessageId>,
    ) -> Self {
        let mut record = current.clone();
        record.version += 1;
        record.updated_at = now;
        record.outbox.clear();
        if let Some(message) = message {
            record.applied.remember(message);
        }
        Self {
            atom,
            record,
            effects: Vec::new(),
            now,
            next_index: 0,
            cancelling: false,
            finished: false,
        }
    }

    fn slot(&mut self) -> CommandSlot<'_> {
        let index = self.next_index;
        self.next_index += 1;
        CommandSlot {
            instance: &self.record.id,
            version: self.record.version,
            index,
        }
    }

    fn message(&mut self, target: InstanceId, atom: String, event: Event) -> Envelope {
        let id = self.slot().message();
        Envelope::new(id, target, atom, event).from_sender(&self.record.id)
    }

    fn finish_child(&mut self, child: &InstanceId, finish: Event) -> Result<()> {
        self.record.waiting.children.remove(child);
        let event = match finish {
            Event::ChildCompleted {
                child, tag, output, ..
            } => AtomEvent::ChildCompleted { child, tag, output },
            Event::ChildFailed {
                child,
                tag,
                reason,
                cancelled,
                ..
            } => AtomEvent::ChildFailed {
                child,
                tag,
                reason,
                cancelled,
            },
            other => {
                return Err(Error::terminal(format!(
                    "{} is not a child's finish",
                    other.kind()
                )));
            }
        };
        self.step(event)
    }

    /// Runs the atom's step and lowers its commands. A retryable error aborts the whole message; a
    /// terminal one fails the instance.
    fn step(&mut self, event: AtomEvent<Value>) -> Result<()> {
        if self.finished {
            return Ok(());
        }
        let state = if matches!(event, AtomEvent::Started(_)) {
            None
        } else {
            Some(self.record.state.as_str())
        };
        let id = self.record.id.clone();
        let mut ctx = Context::new(&id, self.record.version, self.now, self.next_index);
        let result = self.atom.step_json(state, event, &mut ctx);
        let result = match (result, ctx.error.take()) {
            (Ok(_), Some(error)) => Err(error),
            (result, _) => result,
        };
        let (state, outcome) = match result {
            Ok(ok) => ok,
            Err(error) if error.is_retryable() => return Err(error),
            Err(error) => {
                self.record.transitions += 1;
                self.finish(
                    Status::Failed,
                    None,
                    Some(format!("step failed: {}", error.reason)),
                );
                return Ok(());
            }
        };
        self.record.transitions += 1;
        let commands = std::mem::take(&mut ctx.commands);
        let continuation = ctx.continuation.take();
        drop(ctx);
        if let Err(error) = self.lower(commands, continuation) {
            self.finish(Status::Failed, None, Some(error.reason));
            return Ok(());
        }
        self.record.state = state;
        if self.cancelling {
            return Ok(());
        }
        match outcome {
            Step::Suspend => {
                self.record.status = if self.record.waiting.continuation.is_some() {
                    Status::Running
                } else {
                    Status::Suspended
                };
            }
            Step::Complete(output) => self.finish(Status::Completed, Some(output), None),
            Step::Fail(reason) => self.finish(Status::Failed, None, Some(reason)),
        }
        Ok(())
    }

    /// Turns commands into waiting entries and effects, all or nothing: any invalid command fails
    /// the step before anything is applied.
    fn lower(&mut self, commands: Vec<Command>, continuation: Option<Value>) -> Result<()> {
        let first = self.next_index;
        let id = self.record.id.clone();
        let version = self.record.version;
        let slot = |offset: usize| CommandSlot {
            instance: &id,
            version,
            index: first + offset as u32,
        };
        let mut effects = Vec::with_capacity(commands.len() + 1);
        let mut waiting = Vec::new();
        let mut progress_seq = self.record.progress_sent;
        for (i, command) in commands.iter().enumerate() {
            let slot = slot(i);
            match command {
                Command::Spawn { atom, tag, input } => {
                    let child = slot.child();
                    let parent = ParentLink {
                        id: id.clone(),
                        atom: self.record.atom.clone(),
                        tag: tag.clone(),
                    };
                    let event = Event::Started {
                        input: input.clone(),
                        parent: Some(parent),
                    };
                    let envelope =
                        Envelope::new(slot.message(), child.clone(), atom.clone(), event)
                            .from_sender(&id);
                    envelope.check_size()?;
                    effects.push(Effect::Send { envelope });
                    waiting.push(WaitChange::Child(
                        child,
                        PendingChild {
                            atom: atom.clone(),
                            tag: tag.clone(),
                            progress: Default::default(),
                            early_finish: None,
                            cancelling: false,
                        },
                    ));
                }
                Command::SetTimer { name, at } => {
                    let timer = slot.timer();
                    let envelope = timer_envelope(&id, &self.record.atom, name, &timer);
                    effects.push(Effect::ScheduleTimer {
                        timer: timer.clone(),
                        at: *at,
                        envelope,
                    });
                    waiting.push(WaitChange::Timer(
                        name.clone(),
                        PendingTimer {
                            id: timer,
                            due: *at,
                            deadline_of: None,
                        },
                    ));
                }
                Command::CancelTimer { name } => {
                    waiting.push(WaitChange::CancelTimer(name.clone()))
                }
                Command::Ask(ask) => {
                    schema::check_schema(&ask.schema)?;
                    let request = slot.request();
                    let deadline_timer = ask
                        .deadline
                        .map(|_| format!("{RESERVED_TIMER_PREFIX}deadline:{request}"));
                    effects.push(Effect::OpenRequest {
                        request: UserRequest {
                            id: request.clone(),
                            instance: id.clone(),
                            atom: self.record.atom.clone(),
                            kind: ask.kind.clone(),
                            prompt: ask.prompt.clone(),
                            schema: ask.schema.clone(),
                            deadline: ask.deadline,
                            created_at: self.now,
                        },
                    });
                    if let (Some(at), Some(name)) = (ask.deadline, &deadline_timer) {
                        let timer = slot.timer();
                        let envelope = timer_envelope(&id, &self.record.atom, name, &timer);
                        effects.push(Effect::ScheduleTimer {
                            timer: timer.clone(),
                            at,
                            envelope,
                        });
                        waiting.push(WaitChange::Timer(
                            name.clone(),
                            PendingTimer {
                                id: timer,
                                due: at,
                                deadline_of: Some(request.clone()),
                            },
                        ));
                    }
                    waiting.push(WaitChange::Request(
                        request,
                        PendingRequest {
                            kind: ask.kind.clone(),
                            schema: ask.schema.clone(),
                            deadline_timer,
                        },
                    ));
                }
                Command::Progress(payload) => {
                    let Some(parent) = &self.record.parent else {
                        tracing::debug!("progress reported by a root instance is dropped");
                        continue;
                    };
                    let event = Event::ChildProgress {
                        child: id.clone(),
                        tag: parent.tag.clone(),
                        seq: progress_seq,
                        payload: payload.clone(),
                    };
                    progress_seq += 1;
                    let envelope = Envelope::new(
                        slot.message(),
                        parent.id.clone(),
                        parent.atom.clone(),
                        event,
                    )
                    .from_sender(&id);
                    envelope.check_size()?;
                    effects.push(Effect::Send { envelope });
                }
                Command::Signal {
                    target,
                    name,
                    payload,
                } => {
                    let InstanceRef { id: target, atom } = target;
                    let event = Event::Signal {
                        name: name.clone(),
                        payload: payload.clone(),
                    };
                    let envelope =
                        Envelope::new(slot.message(), target.clone(), atom.clone(), event)
                            .from_sender(&id);
                    envelope.check_size()?;
                    effects.push(Effect::Send { envelope });
                }
                Command::Cancel { child, reason } => {
                    let Some(pending) = self.record.waiting.children.get(child) else {
                        tracing::debug!(%child, "cancel of a child that is not pending is dropped");
                        continue;
                    };
                    if !pending.cancelling {
                        let event = Event::CancelRequested {
                            reason: reason.clone(),
                        };
                        let envelope = Envelope::new(
                            slot.message(),
                            child.clone(),
                            pending.atom.clone(),
                            event,
                        )
                        .from_sender(&id);
                        effects.push(Effect::Send { envelope });
                        waiting.push(WaitChange::Cancelling(child.clone()));
                    }
                }
            }
        }
        let mut next_index = first + commands.len() as u32;
        if let Some(cursor) = continuation {
            let message = CommandSlot {
                instance: &id,
                version,
                index: next_index,
            }
            .message();
            next_index += 1;
            let envelope = Envelope::new(
                message.clone(),
                id.clone(),
                self.record.atom.clone(),
                Event::Continue { cursor },
            )
            .from_sender(&id);
            envelope.check_size()?;
            effects.push(Effect::Send { envelope });
            waiting.push(WaitChange::Continue(message));
        }

        // Everything is valid: apply.
        self.next_index = next_index;
        self.record.progress_sent = progress_seq;
        let w = &mut self.record.waiting;
        for change in waiting {
            match change {
                WaitChange::Child(child, pending) => {
                    w.children.insert(child, pending);
                }
                WaitChange::Timer(name, pending) => {
                    if let Some(old) = w.timers.insert(name, pending) {
                        self.effects.push(Effect::CancelTimer { timer: old.id });
                    }
                }
                WaitChange::CancelTimer(name) => {
                    if let Some(old) = w.timers.remove(&name) {
                        self.effects.push(Effect::CancelTimer { timer: old.id });
                    }
                }
                WaitChange::Request(request, pending) => {
                    w.requests.insert(request, pending);
                }
                WaitChange::Cancelling(child) => {
                    if let Some(pending) = w.children.get_mut(&child) {
                        pending.cancelling = true;
                    }
                }
                WaitChange::Continue(message) => w.continuation = Some(message),
            }
        }
        self.effects.extend(effects);
        Ok(())
    }

    /// Ends the instance: cancels what it was waiting for and tells its parent.
    fn finish(&mut self, status: Status, result: Option<Value>, error: Option<String>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let waiting = std::mem::take(&mut self.record.waiting);
        for (_, timer) in waiting.timers {
            self.effects.push(Effect::CancelTimer { timer: timer.id });
        }
        for (request, _) in waiting.requests {
            self.effects.push(Effect::CloseRequest {
                request,
                outcome: RequestOutcome::Withdrawn,
            });
        }
        for (child, pending) in waiting.children {
            if !pending.cancelling {
                let reason = format!("parent {} {}", self.record.id, status.as_str());
                let envelope = self.message(child, pending.atom, Event::CancelRequested { reason });
                self.effects.push(Effect::Send { envelope });
            }
        }
        if let Some(parent) = self.record.parent.clone() {
            let child = self.record.id.clone();
            let progress_reports = self.record.progress_sent;
            let event = match status {
                Status::Completed => Event::ChildCompleted {
                    child,
                    tag: parent.tag,
                    output: result.clone().unwrap_or(Value::Null),
                    progress_reports,
                },
                _ => Event::ChildFailed {
                    child,
                    tag: parent.tag,
                    reason: error.clone().unwrap_or_default(),
                    cancelled: status == Status::Cancelled,
                    progress_reports,
                },
            };
            let envelope = self.message(parent.id, parent.atom, event);
            self.effects.push(Effect::Send { envelope });
        }
        self.record.status = status;
        self.record.result = result;
        self.record.error = error;
    }

    fn into_plan(mut self, before: &InstanceRecord) -> Result<Plan> {
        self.record.outbox = std::mem::take(&mut self.effects);
        let size = encoded_len(&self.record);
        if size <= MAX_RECORD_BYTES {
            return Ok(Plan::Save(Box::new(self.record)));
        }
        // Too big to store: fail the instance with the state it had, keeping nothing this step did.
        let reason = format!(
            "instance record would be {size} bytes, over the {MAX_RECORD_BYTES}-byte limit (state {} bytes); the step's changes were discarded",
            self.record.state.len()
        );
        tracing::warn!(%reason, "failing instance");
        let mut failed = Draft::new(self.atom, before, self.now, None);
        failed.record.applied = self.record.applied;
        failed.record.transitions = before.transitions + 1;
        if before.version == 0 {
            failed.record.state = "null".into();
        }
        failed.finish(Status::Failed, None, Some(reason));
        failed.record.outbox = std::mem::take(&mut failed.effects);
        Ok(Plan::Save(Box::new(failed.record)))
    }
}

enum WaitChange {
    Child(InstanceId, PendingChild),
    Timer(String, PendingTimer),
    CancelTimer(String),
    Request(RequestId, PendingRequest),
    Cancelling(InstanceId),
    Continue(MessageId),
}

fn timer_envelope(id: &InstanceId, atom: &str, name: &str, timer: &TimerId) -> Envelope {
    let event = Event::TimerFired {
        name: name.to_string(),
        timer: timer.clone(),
    };
    Envelope::new(MessageId::for_timer(timer), id.clone(), atom, event)
}
