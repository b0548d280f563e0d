//! The step algorithm: exactly-once state transitions over at-least-once delivery.
//!
//! For one message: load the instance → if the message was already applied, drop it (after
//! re-sending an outbox that may not have gone out) → run the atom's step → save the new record,
//! outbox included, conditioned on the version read → send the outbox. A version conflict re-runs
//! the step on the record the store returned, a bounded number of times. See ARCHITECTURE.md.

use crate::activity::Activities;
use crate::atom::{
    Command, Context, DynAtom, InstanceRef, RESERVED_TIMER_PREFIX, Registry, StateIn, Step,
    StepOut, TypedState,
};
use crate::envelope::{Envelope, MAX_MESSAGE_BYTES};
use crate::error::{Error, Result};
use crate::event::{AtomEvent, Event, ParentLink};
use crate::ids::{CommandSlot, InstanceId, MessageId, RequestId, TimerId};
use crate::ports::{Clock, Dispatcher, Inbox, InstanceStore, Outgoing, SaveOutcome, TimerService};
use crate::record::{
    CallOutcome, Effect, InstanceRecord, LifecycleEvent, MAX_RECORD_BYTES, PendingCall,
    PendingChild, PendingRequest, PendingTimer, RequestOutcome, Status, UserRequest, Waiting,
};
use crate::schema;
use crate::time::Timestamp;
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
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
    warm: WarmInstances,
    observer: Option<Observer>,
    /// Atom types messages can be sent to, when known (the deployed routes).
    known_atoms: Option<HashSet<String>>,
    activities: Activities,
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
            warm: WarmInstances::default(),
            observer: None,
            known_atoms: None,
            activities: Activities::default(),
        }
    }

    /// The activities steps of this runtime may call (`ctx.call`). A call to any other fails the
    /// step's instance with the reason.
    pub fn with_activities(mut self, activities: Activities) -> Self {
        self.activities = activities;
        self
    }

    /// Limits spawns and signals to these atom types: a step that addresses any other fails its
    /// instance with the reason, instead of saving an outbox that can never be sent.
    pub fn with_known_atoms(mut self, atoms: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.known_atoms = Some(atoms.into_iter().map(Into::into).collect());
        self
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

    /// Forgets what this process remembers between messages, as a restarted process would: which
    /// outboxes it sent (the next step re-sends its predecessor's, deduplicated downstream) and
    /// the decoded states (decoded again from the records).
    pub fn forget_process_memory(&self) {
        self.warm.clear();
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
        if let Event::Call {
            activity, input, ..
        } = &envelope.event
        {
            self.journal_call(&envelope.id, activity, input, &mut current)
                .await?;
        }
        for attempt in 1..=MAX_CONFLICT_ATTEMPTS {
            let expected = current.as_ref().map(|r| r.version);
            let mut warm = None;
            if let Some(previous) = &mut current {
                warm = self.flush_previous_outbox(previous).await?;
            }
            let now = self.clock.now();
            let decoded = warm.as_mut().and_then(|w| w.decoded.take());
            let version_read = expected.unwrap_or(0);
            let (next, decoded) = match plan(
                atom.as_ref(),
                Known {
                    atoms: self.known_atoms.as_ref(),
                    activities: &self.activities,
                },
                current.take(),
                decoded,
                &envelope,
                now,
            )? {
                Plan::Drop(disposition) => {
                    match &disposition {
                        Disposition::Duplicate => tracing::debug!("duplicate message dropped"),
                        Disposition::Ignored { reason } => {
                            tracing::info!(%reason, "message ignored")
                        }
                        Disposition::Applied { .. } => {}
                    }
                    if let Some(warm) = warm {
                        // Nothing changed: what this process knows of that version still holds
                        // (except the decoded state, which the plan consumed).
                        self.warm.put(&envelope.target, version_read, warm);
                    }
                    return Ok(disposition);
                }
                Plan::Save(next, decoded) => (next, decoded),
                Plan::TooLarge { reason } => {
                    // Rare: rebuild from the stored record, failing it with what it had.
                    let Some(stored) = self.store.load(&envelope.target).await? else {
                        return Err(Error::terminal(reason));
                    };
                    if Some(stored.version) != expected {
                        current = Some(stored);
                        continue;
                    }
                    (
                        fail_too_large(atom.as_ref(), stored, &envelope.id, now, reason),
                        None,
                    )
                }
            };
            let (id, version, status) = (next.id.clone(), next.version, next.status);
            let effects = next.outbox.clone();
            match self.store.save(*next, expected).await? {
                SaveOutcome::Saved => {
                    let described = self.observer.as_ref().map(|_| describe_effects(&effects));
                    let count = effects.len();
                    self.perform(effects).await?;
                    self.warm.put(
                        &id,
                        version,
                        WarmState {
                            outbox_sent: true,
                            decoded,
                        },
                    );
                    if let (Some(observe), Some(effects)) = (&self.observer, described) {
                        observe(&Transition {
                            at: now,
                            instance: id,
                            atom: envelope.atom.clone(),
                            message: envelope.id.clone(),
                            event: envelope.event.kind(),
                            version,
                            status,
                            effects,
                            attempts: attempt,
                        });
                    }
                    tracing::debug!(
                        version,
                        status = status.as_str(),
                        effects = count,
                        "applied"
                    );
                    return Ok(Disposition::Applied { version, status });
                }
                SaveOutcome::Conflict { current: latest } => {
                    tracing::debug!(attempt, "version conflict, re-running the step");
                    current = match latest {
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

    /// Takes the outbox of the record just loaded and sends it unless this process knows it went
    /// out: a crash after the save may have kept it from being sent, and it must go before the
    /// record is replaced or the message dropped. The next version starts with an empty outbox.
    /// Returns what this process remembers of the record's version.
    async fn flush_previous_outbox(
        &self,
        record: &mut InstanceRecord,
    ) -> Result<Option<WarmState>> {
        let mut warm = self.warm.take(&record.id, record.version);
        let outbox = std::mem::take(&mut record.outbox);
        let sent = warm.as_ref().is_some_and(|w| w.outbox_sent);
        if !outbox.is_empty() && !sent {
            tracing::debug!(
                version = record.version,
                "re-sending an outbox that may not have gone out"
            );
            self.perform(outbox).await?;
            warm.get_or_insert_with(WarmState::default).outbox_sent = true;
        }
        Ok(warm)
    }

    /// Runs the activity of a pending call and journals its outcome in the record (a conditional
    /// write of its own) before any step consumes it. Does nothing when the call is not pending or
    /// its outcome is already journaled: that is how a redelivered message avoids running it twice.
    async fn journal_call(
        &self,
        call: &MessageId,
        activity: &str,
        input: &Value,
        current: &mut Option<InstanceRecord>,
    ) -> Result<()> {
        let mut outcome = None;
        for _ in 0..MAX_CONFLICT_ATTEMPTS {
            let Some(record) = current.as_mut() else {
                return Ok(());
            };
            let unjournaled = !record.status.is_finished()
                && record
                    .waiting
                    .calls
                    .get(call)
                    .is_some_and(|pending| pending.outcome.is_none());
            if !unjournaled {
                return Ok(());
            }
            let result = match outcome.take() {
                Some(known) => known,
                None => self.run_activity(activity, input.clone()).await?,
            };
            let mut warm = self.flush_previous_outbox(record).await?;
            let mut next = record.clone();
            next.version += 1;
            next.updated_at = self.clock.now();
            let journal = |next: &mut InstanceRecord, outcome: CallOutcome| {
                if let Some(pending) = next.waiting.calls.get_mut(call) {
                    pending.outcome = Some(outcome);
                }
            };
            journal(&mut next, result.clone());
            if next.stored_size_bound(0) > MAX_RECORD_BYTES {
                let reason = format!(
                    "{activity} output is about {} bytes, too large to journal in the instance record",
                    crate::envelope::encoded_len(&result)
                );
                journal(&mut next, CallOutcome::Failed { reason });
            }
            next.remember_transition("call_journaled", activity, 0);
            let version_read = record.version;
            match self.store.save(next.clone(), Some(version_read)).await? {
                SaveOutcome::Saved => {
                    let decoded = warm.as_mut().and_then(|w| w.decoded.take());
                    self.warm.put(
                        &next.id,
                        next.version,
                        WarmState {
                            outbox_sent: true,
                            decoded,
                        },
                    );
                    *current = Some(next);
                    return Ok(());
                }
                SaveOutcome::Conflict { current: latest } => {
                    outcome = Some(result);
                    *current = match latest {
                        Some(record) => Some(*record),
                        None => self.store.load(&next.id).await?,
                    };
                }
            }
        }
        Err(Error::retryable(format!(
            "{call}: {MAX_CONFLICT_ATTEMPTS} conflicting saves while journaling its outcome"
        )))
    }

    /// Runs one activity. A retryable error is passed up (the message will be redelivered); a
    /// terminal one becomes the call's outcome.
    async fn run_activity(&self, activity: &str, input: Value) -> Result<CallOutcome> {
        let Some(runner) = self.activities.get(activity) else {
            return Ok(CallOutcome::Failed {
                reason: format!(
                    "no activity {activity:?} in this runtime (it has: {})",
                    self.activities.names().join(", ")
                ),
            });
        };
        match runner.run(input).await {
            Ok(output) => Ok(CallOutcome::Completed { output }),
            Err(error) if error.is_retryable() => {
                Err(error.context(format!("activity {activity}")))
            }
            Err(error) => Ok(CallOutcome::Failed {
                reason: error.reason,
            }),
        }
    }

    /// Performs effects. Each is idempotent where it lands, so performing them twice is harmless.
    async fn perform(&self, effects: Vec<Effect>) -> Result<()> {
        let now = self.clock.now();
        let mut batch = Vec::new();
        let mut afterwards = Vec::new();
        for effect in effects {
            match effect {
                Effect::OpenRequest { request } => self.inbox.open(request).await?,
                Effect::ScheduleTimer {
                    timer,
                    at,
                    envelope,
                } => self.timers.schedule(&timer, at, envelope).await?,
                Effect::ScheduleRecurring {
                    timer,
                    first,
                    every_secs,
                    envelope,
                } => {
                    self.timers
                        .schedule_recurring(
                            &timer,
                            first,
                            Duration::from_secs(every_secs),
                            envelope,
                        )
                        .await?
                }
                Effect::Send { envelope } => batch.push(Outgoing {
                    envelope,
                    delay: Duration::ZERO,
                }),
                // Cancellations, closings and notices go last, after what this step started.
                later @ (Effect::CancelTimer { .. }
                | Effect::CloseRequest { .. }
                | Effect::Publish { .. }) => afterwards.push(later),
            }
        }
        if !batch.is_empty() {
            self.dispatcher.send(batch).await?;
        }
        let mut notices = Vec::new();
        for effect in afterwards {
            match effect {
                Effect::CancelTimer { timer } => self.timers.cancel(&timer).await?,
                Effect::CloseRequest { request, outcome } => {
                    self.inbox.close(&request, outcome, now).await?
                }
                Effect::Publish { event } => notices.push(event),
                _ => {}
            }
        }
        if !notices.is_empty() {
            self.dispatcher.publish(notices).await?;
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
        Effect::ScheduleRecurring {
            envelope,
            every_secs,
            ..
        } => match &envelope.event {
            Event::TimerFired { name, .. } => format!("timer {name} every {every_secs} s"),
            other => format!("timer {} every {every_secs} s", other.kind()),
        },
        Effect::CancelTimer { timer } => format!("cancel timer {timer}"),
        Effect::OpenRequest { request } => format!("ask user ({}) {}", request.kind, request.id),
        Effect::CloseRequest { request, outcome } => {
            format!("close request {request} ({outcome:?})")
        }
        Effect::Publish { event } => format!("publish {}", event.status.as_str()),
    }
}

/// What this process knows about the latest version of an instance it handled: whether that
/// version's outbox went out, and its state already decoded. A version is written once (every
/// save is conditional), so this stays true of version `v` for as long as it is kept. Losing it
/// (eviction, a restart) only costs a re-send, deduplicated downstream, and a decode.
#[derive(Default)]
struct WarmState {
    outbox_sent: bool,
    decoded: Option<TypedState>,
}

/// Bounded per-process memory of [`WarmState`], one entry per instance. An entry is taken out
/// while its instance is being stepped and put back, for the new version, afterwards.
#[derive(Default)]
struct WarmInstances {
    inner: Mutex<WarmInner>,
}

#[derive(Default)]
struct WarmInner {
    /// id → (version, what is known, insertion number).
    entries: HashMap<InstanceId, (u64, WarmState, u64)>,
    /// Insertion order; an element is live only while its number matches the entry's.
    order: VecDeque<(u64, InstanceId)>,
    inserted: u64,
}

impl fmt::Debug for WarmInstances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WarmInstances").finish_non_exhaustive()
    }
}

impl WarmInstances {
    const CAPACITY: usize = 4096;

    fn lock(&self) -> std::sync::MutexGuard<'_, WarmInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, id: &InstanceId, version: u64) -> Option<WarmState> {
        match self.lock().entries.remove(id) {
            Some((v, warm, _)) if v == version => Some(warm),
            _ => None,
        }
    }

    fn put(&self, id: &InstanceId, version: u64, warm: WarmState) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.inserted += 1;
        let number = inner.inserted;
        // A concurrent handler may already have put a newer version: keep the newer.
        if inner.entries.get(id).is_some_and(|(v, _, _)| *v > version) {
            return;
        }
        inner.entries.insert(id.clone(), (version, warm, number));
        inner.order.push_back((number, id.clone()));
        while inner.entries.len() > Self::CAPACITY {
            let Some((number, old)) = inner.order.pop_front() else {
                break;
            };
            if inner.entries.get(&old).is_some_and(|e| e.2 == number) {
                inner.entries.remove(&old);
            }
        }
        // Drop order elements whose entries were taken or replaced, so it stays bounded.
        if inner.order.len() > 2 * Self::CAPACITY {
            let entries = &inner.entries;
            inner
                .order
                .retain(|(number, id)| entries.get(id).is_some_and(|e| e.2 == *number));
        }
    }

    fn clear(&self) {
        let mut guard = self.lock();
        guard.entries.clear();
        guard.order.clear();
    }
}

enum Plan {
    Drop(Disposition),
    /// The next record, and its state decoded (for the state cache).
    Save(Box<InstanceRecord>, Option<TypedState>),
    /// The new record would not fit in the store; the instance must fail instead.
    TooLarge {
        reason: String,
    },
}

fn ignored(reason: impl Into<String>) -> Result<Plan> {
    Ok(Plan::Drop(Disposition::Ignored {
        reason: reason.into(),
    }))
}

/// What a step may address: atom types (when the deployed set is known) and activities.
#[derive(Clone, Copy)]
struct Known<'a> {
    atoms: Option<&'a HashSet<String>>,
    activities: &'a Activities,
}

/// Decides what one message does to one instance. Pure: the same inputs give the same plan.
fn plan(
    atom: &dyn DynAtom,
    known: Known<'_>,
    current: Option<InstanceRecord>,
    cached: Option<TypedState>,
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
            history: Default::default(),
            created_at: now,
            updated_at: now,
            result: None,
            error: None,
        };
        let mut draft = Draft::new(atom, fresh, now, Some(&env.id));
        draft.known = Some(known);
        draft.event = Some((env.event.kind(), env.event.detail()));
        draft.step(AtomEvent::Started(input.clone()))?;
        return Ok(draft.into_plan());
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
    draft.known = Some(known);
    draft.event = Some((env.event.kind(), env.event.detail()));
    draft.decoded = cached;
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
                return Ok(draft.into_plan());
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
            match draft.record.waiting.timers.get_mut(name) {
                Some(pending) if pending.id == *timer => {
                    if let Some(every) = pending.every_secs {
                        // A recurring timer stays armed; each firing is its own message.
                        pending.due = now.plus(Duration::from_secs(every));
                        draft.step(AtomEvent::TimerFired { name: name.clone() })?;
                        return Ok(draft.into_plan());
                    }
                }
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
        Event::Call { .. } => {
            let Some(pending) = draft.record.waiting.calls.get(&env.id) else {
                return ignored(format!("call {} is not pending", env.id));
            };
            let Some(outcome) = pending.outcome.clone() else {
                return Err(Error::retryable(format!(
                    "call {} has no journaled outcome yet",
                    env.id
                )));
            };
            let tag = pending.tag.clone();
            draft.record.waiting.calls.remove(&env.id);
            draft.step(match outcome {
                CallOutcome::Completed { output } => AtomEvent::CallCompleted { tag, output },
                CallOutcome::Failed { reason } => AtomEvent::CallFailed { tag, reason },
            })?;
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
    Ok(draft.into_plan())
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
    /// `record.state` decoded, when known.
    decoded: Option<TypedState>,
    known: Option<Known<'a>>,
    /// The event's kind and detail, for the history.
    event: Option<(&'static str, String)>,
}

impl<'a> Draft<'a> {
    /// Starts the next version of `current`, remembering `message` as applied.
    fn new(
        atom: &'a dyn DynAtom,
        current: InstanceRecord,
        now: Timestamp,
        message: Option<&MessageId>,
    ) -> Self {
        let mut record = current;
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
            decoded: None,
            known: None,
            event: None,
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
        // Taken, not borrowed: a step that fails leaves the decoded state dirty, so it is dropped.
        let decoded = self.decoded.take();
        let state = if matches!(event, AtomEvent::Started(_)) {
            StateIn::Fresh
        } else {
            StateIn::Stored {
                json: self.record.state.as_str(),
                decoded,
            }
        };
        let mut ctx = Context::new(
            &self.record.id,
            self.record.version,
            self.now,
            self.next_index,
        );
        let result = self.atom.step_json(state, event, &mut ctx);
        let (commands, continuation) = (std::mem::take(&mut ctx.commands), ctx.continuation.take());
        let result = match (result, ctx.error.take()) {
            (Ok(_), Some(error)) => Err(error),
            (result, _) => result,
        };
        drop(ctx);
        let StepOut {
            json,
            decoded,
            outcome,
        } = match result {
            Ok(out) => out,
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
        if let Err(error) = self.lower(commands, continuation) {
            self.finish(Status::Failed, None, Some(error.reason));
            return Ok(());
        }
        self.record.state = json;
        self.decoded = Some(decoded);
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
        let id = &self.record.id;
        let version = self.record.version;
        let slot = |offset: usize| CommandSlot {
            instance: id,
            version,
            index: first + offset as u32,
        };
        let mut effects = Vec::with_capacity(commands.len() + 1);
        let mut waiting = Vec::new();
        let mut progress_seq = self.record.progress_sent;
        for (i, command) in commands.iter().enumerate() {
            let slot = slot(i);
            let addressed = match command {
                Command::Spawn { atom, .. } => Some(atom),
                Command::Signal { target, .. } => Some(&target.atom),
                _ => None,
            };
            if let Some(Known {
                activities,
                atoms: _,
            }) = self.known
                && let Command::Call { activity, .. } = command
                && !activities.contains(activity)
            {
                return Err(Error::terminal(format!(
                    "no activity {activity:?} in this runtime (it has: {})",
                    activities.names().join(", ")
                )));
            }
            if let (Some(known), Some(atom)) = (self.known.and_then(|k| k.atoms), addressed)
                && !known.contains(atom)
            {
                let mut names: Vec<&str> = known.iter().map(String::as_str).collect();
                names.sort_unstable();
                return Err(Error::terminal(format!(
                    "no atom type {atom:?} is deployed (deployed: {})",
                    names.join(", ")
                )));
            }
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
                            .from_sender(id);
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
                    let envelope = timer_envelope(id, &self.record.atom, name, &timer);
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
                            every_secs: None,
                            deadline_of: None,
                        },
                    ));
                }
                Command::SetRecurring { name, every } => {
                    let timer = slot.timer();
                    let envelope = timer_envelope(id, &self.record.atom, name, &timer);
                    let first = self.now.plus(*every);
                    effects.push(Effect::ScheduleRecurring {
                        timer: timer.clone(),
                        first,
                        every_secs: every.as_secs(),
                        envelope,
                    });
                    waiting.push(WaitChange::Timer(
                        name.clone(),
                        PendingTimer {
                            id: timer,
                            due: first,
                            every_secs: Some(every.as_secs()),
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
                        let envelope = timer_envelope(id, &self.record.atom, name, &timer);
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
                                every_secs: None,
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
                    .from_sender(id);
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
                            .from_sender(id);
                    effects.push(Effect::Send { envelope });
                }
                Command::Call {
                    activity,
                    tag,
                    input,
                } => {
                    let message = slot.message();
                    let event = Event::Call {
                        activity: activity.clone(),
                        tag: tag.clone(),
                        input: input.clone(),
                    };
                    let envelope =
                        Envelope::new(message.clone(), id.clone(), self.record.atom.clone(), event)
                            .from_sender(id);
                    effects.push(Effect::Send { envelope });
                    waiting.push(WaitChange::Call(
                        message,
                        PendingCall {
                            activity: activity.clone(),
                            tag: tag.clone(),
                            outcome: None,
                        },
                    ));
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
                        .from_sender(id);
                        effects.push(Effect::Send { envelope });
                        waiting.push(WaitChange::Cancelling(child.clone()));
                    }
                }
            }
        }
        let mut next_index = first + commands.len() as u32;
        if let Some(cursor) = continuation {
            let message = CommandSlot {
                instance: id,
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
            .from_sender(id);
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
                WaitChange::Call(message, pending) => {
                    w.calls.insert(message, pending);
                }
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
        let (mut status, mut result, mut error) = (status, result, error);
        if let Some(parent) = self.record.parent.clone() {
            let child = self.record.id.clone();
            let progress_reports = self.record.progress_sent;
            let cancelled = status == Status::Cancelled;
            let failed = |reason: String| Event::ChildFailed {
                child: child.clone(),
                tag: parent.tag.clone(),
                reason,
                cancelled,
                progress_reports,
            };
            let event = match status {
                Status::Completed => Event::ChildCompleted {
                    child: child.clone(),
                    tag: parent.tag.clone(),
                    output: result.clone().unwrap_or(Value::Null),
                    progress_reports,
                },
                _ => failed(error.clone().unwrap_or_default()),
            };
            let mut envelope = self.message(parent.id.clone(), parent.atom.clone(), event);
            if let Err(too_big) = envelope.check_size() {
                // An output the parent cannot receive is a failure of this instance.
                let reason = format!("output too large for the parent: {}", too_big.reason);
                (status, result, error) = (Status::Failed, None, Some(reason.clone()));
                envelope.event = failed(reason);
            }
            self.effects.push(Effect::Send { envelope });
        }
        self.effects.push(Effect::Publish {
            event: LifecycleEvent {
                id: format!("{}@{}", self.record.id, self.record.version),
                instance: self.record.id.clone(),
                atom: self.record.atom.clone(),
                status,
                parent: self.record.parent.as_ref().map(|p| p.id.clone()),
                result: result.clone(),
                error: error.clone(),
                at: self.now,
            },
        });
        self.record.status = status;
        self.record.result = result;
        self.record.error = error;
    }

    fn into_plan(mut self) -> Plan {
        if let Some((event, detail)) = self.event.take() {
            self.record
                .remember_transition(event, &detail, self.effects.len());
        }
        self.record.outbox = std::mem::take(&mut self.effects);
        // Each effect is encoded once here: to check the messages against the queue's limit and
        // to bound the record's size.
        let mut outbox_bytes = 0;
        for effect in &self.record.outbox {
            let len = crate::envelope::encoded_len(effect);
            if let Effect::Send { envelope } = effect
                && len > MAX_MESSAGE_BYTES
            {
                let reason = format!(
                    "{} message to {} would be about {len} bytes, over the {MAX_MESSAGE_BYTES}-byte message limit; the step's changes were discarded",
                    envelope.event.kind(),
                    envelope.target
                );
                return Plan::TooLarge { reason };
            }
            outbox_bytes += len;
        }
        let size = self.record.stored_size_bound(outbox_bytes);
        if size <= MAX_RECORD_BYTES {
            return Plan::Save(Box::new(self.record), self.decoded);
        }
        let reason = format!(
            "instance record would be about {size} bytes, over the {MAX_RECORD_BYTES}-byte limit (state {} bytes); the step's changes were discarded",
            self.record.state.len()
        );
        Plan::TooLarge { reason }
    }
}

/// Fails `stored` because its next version would not fit: it keeps the state it had, and what it
/// was waiting for is cancelled as for any failure.
fn fail_too_large(
    atom: &dyn DynAtom,
    mut stored: InstanceRecord,
    message: &MessageId,
    now: Timestamp,
    reason: String,
) -> Box<InstanceRecord> {
    tracing::warn!(%reason, "failing instance");
    stored.outbox.clear();
    let mut failed = Draft::new(atom, stored, now, Some(message));
    failed.record.transitions += 1;
    if failed.record.state.is_empty() {
        failed.record.state = "null".into();
    }
    failed.finish(Status::Failed, None, Some(reason));
    failed.record.outbox = std::mem::take(&mut failed.effects);
    Box::new(failed.record)
}

enum WaitChange {
    Child(InstanceId, PendingChild),
    Timer(String, PendingTimer),
    CancelTimer(String),
    Request(RequestId, PendingRequest),
    Cancelling(InstanceId),
    Continue(MessageId),
    Call(MessageId, PendingCall),
}

fn timer_envelope(id: &InstanceId, atom: &str, name: &str, timer: &TimerId) -> Envelope {
    let event = Event::TimerFired {
        name: name.to_string(),
        timer: timer.clone(),
    };
    Envelope::new(MessageId::for_timer(timer), id.clone(), atom, event)
}
