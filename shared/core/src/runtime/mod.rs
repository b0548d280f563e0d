//! The step algorithm: exactly-once state transitions over at-least-once delivery.
//!
//! For one message: load the instance → run the atom's step on it → save the new record, outbox
//! included, conditioned on the version read → send the outbox. A version conflict backs off and
//! re-runs the step on the record the store returned; when that keeps failing, the message is put
//! back on its queue with a delay. See ARCHITECTURE.md.
//!
//! This module keeps the handle loop. Each capability has a module of its own, holding its command
//! lowering, its event gating, its `waiting` entry and its clean-up when the instance finishes:
//! [`children`], [`timers`], [`requests`], [`calls`], [`signals`], [`continuation`],
//! [`cancellation`]. [`draft`] is the record being built by one message, [`plan`] routes a message
//! to its capability, [`effects`] sends what a step decided, [`sweep`] sends what could not be sent.

mod calls;
mod cancellation;
mod children;
mod continuation;
mod draft;
mod effects;
mod plan;
mod requests;
mod signals;
mod sweep;
mod timers;
mod warm;

pub use sweep::SweepReport;

use crate::activity::Activities;
use crate::atom::{DynAtom, Registry};
use crate::envelope::Envelope;
use crate::error::{Error, Result};
use crate::ids::{InstanceId, MessageId};
use crate::ports::{Clock, Dispatcher, Inbox, InstanceStore, Outgoing, SaveOutcome, TimerService};
use crate::random::SplitMix64;
use crate::record::{Effect, InstanceRecord, MAX_RECORD_BYTES, Status};
use crate::time::Timestamp;
use plan::Plan;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::Instrument;
use warm::{WarmInstances, WarmRecord, WarmState};

/// How many times a step is re-run on version conflicts (with a jittered backoff between runs)
/// before the message is deferred.
pub const MAX_CONFLICT_ATTEMPTS: u32 = 8;

/// The backoff before the n-th re-run is random in `[0, min(BACKOFF_CAP, BACKOFF_BASE × 2ⁿ⁻¹)]`
/// ("full jitter"): concurrent handlers of one instance spread out instead of colliding again.
pub const BACKOFF_BASE: Duration = Duration::from_millis(10);
pub const BACKOFF_CAP: Duration = Duration::from_millis(640);

/// How many times one message may be deferred (put back on its queue with a delay, without
/// using up one of its receives) before a further deferral is a retryable failure instead.
pub const MAX_DEFERRALS: u32 = 30;

/// The longest a deferral delays a message.
pub const MAX_DEFERRAL_DELAY: Duration = Duration::from_secs(60);

/// What became of a message that was handled without error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// The instance moved to `version`.
    Applied { version: u64, status: Status },
    /// The message had been applied before; nothing changed.
    Duplicate,
    /// The message no longer matters (finished instance, stale timer, answered request, ...).
    Ignored { reason: String },
    /// The message was put back on its queue to be handled after `delay` (its instance was too
    /// contended, or it is a timer that arrived early).
    Deferred { delay: Duration, reason: String },
}

/// How a message reached this handler: which receive of it this is and by when the handler must
/// be done (a Lambda invocation's deadline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// 1 on the first receive (SQS's `ApproximateReceiveCount`).
    pub receive_count: u32,
    pub deadline: Option<Timestamp>,
}

impl Default for Delivery {
    fn default() -> Self {
        Self {
            receive_count: 1,
            deadline: None,
        }
    }
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
    /// Randomness for backoff and deferral delays (seeded, so a simulation replays).
    jitter: Mutex<SplitMix64>,
    /// Whether every transition's history entry is sent to the full history.
    full_history: bool,
}

impl<S, D, T, I, C> fmt::Debug for Runtime<S, D, T, I, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// What a step may address: atom types (when the deployed set is known) and activities.
#[derive(Clone, Copy)]
pub(crate) struct Known<'a> {
    pub atoms: Option<&'a HashSet<String>>,
    pub activities: &'a Activities,
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
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new().hash_one(0u64);
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
            jitter: Mutex::new(SplitMix64::new(seed)),
            full_history: true,
        }
    }

    /// Whether every transition goes to the full history (the default) or none: then the step's
    /// outbox carries no history entry, and a write unit a step is saved where the history is not
    /// needed (`reanimate history` and the console then show none).
    pub fn with_full_history(mut self, full: bool) -> Self {
        self.full_history = full;
        self
    }

    /// Drops the history entries from an outbox about to be saved, when there is no full history.
    fn keep_history(&self, outbox: &mut Vec<Effect>) {
        if !self.full_history {
            outbox.retain(|effect| !matches!(effect, Effect::History { .. }));
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

    /// Seeds the backoff jitter (a simulation replays its seed exactly).
    pub fn with_jitter_seed(self, seed: u64) -> Self {
        *self.jitter.lock().unwrap_or_else(|p| p.into_inner()) = SplitMix64::new(seed);
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
    /// outboxes it sent (the next step sends its predecessor's again, harmlessly) and the decoded
    /// states (decoded again from the records).
    pub fn forget_process_memory(&self) {
        self.warm.clear();
    }

    /// Handles one message delivered once, with no deadline. See [`Runtime::handle_delivery`].
    pub async fn handle(&self, envelope: Envelope) -> Result<Disposition> {
        self.handle_delivery(envelope, Delivery::default()).await
    }

    /// Handles one message. `Err` is retryable (redeliver) or terminal (the message is refused with
    /// the reason and the instance is unchanged).
    pub async fn handle_delivery(
        &self,
        envelope: Envelope,
        delivery: Delivery,
    ) -> Result<Disposition> {
        let span = tracing::info_span!(
            "step",
            message = %envelope.id,
            instance = %envelope.target,
            atom = %envelope.atom,
            event = envelope.event.kind(),
            receive = delivery.receive_count,
        );
        self.handle_inner(envelope, delivery).instrument(span).await
    }

    fn known(&self) -> Known<'_> {
        Known {
            atoms: self.known_atoms.as_ref(),
            activities: &self.activities,
        }
    }

    async fn handle_inner(
        &self,
        mut envelope: Envelope,
        delivery: Delivery,
    ) -> Result<Disposition> {
        let Some(atom) = self.registry.get(&envelope.atom) else {
            return Err(Error::terminal(format!(
                "unknown atom type {:?}; this runtime runs {}",
                envelope.atom,
                self.registry.names().join(", ")
            )));
        };
        let atom = atom.as_ref();
        // A warm process plans on the record it last saved instead of reading it (see
        // [`WarmState`]); a call message reads, because it may run an activity before it saves.
        let mut kept = match calls::CallMessage::of(&envelope) {
            None => self.warm.take_record(&envelope.target),
            Some(_) => None,
        };
        loop {
            let (current, verified) = match kept.take() {
                Some(record) => (Some(record), false),
                None => (self.store.load(&envelope.target).await?, true),
            };
            match self
                .run_message(atom, &mut envelope, delivery, current, verified)
                .await?
            {
                Attempted::Done(disposition) => return Ok(disposition),
                Attempted::Defer { delay, reason } => {
                    return self.defer(envelope, delay, reason).await;
                }
                Attempted::Unverified => {
                    tracing::debug!("the kept record would not be saved: reading the stored one");
                }
            }
        }
    }

    /// Runs one message on `current` (read from the store when `verified`, else the record this
    /// process last saved, which may be stale): everything but a deferral, which the caller sends.
    async fn run_message(
        &self,
        atom: &dyn DynAtom,
        envelope: &mut Envelope,
        delivery: Delivery,
        mut current: Option<InstanceRecord>,
        mut verified: bool,
    ) -> Result<Attempted> {
        // Work a message needs from the world before its step: an activity's outcome journaled,
        // an answer read from the inbox (or a deadline that lost to one).
        if let Some(call) = calls::CallMessage::of(envelope)
            && let Some(reason) = self.journal_call(call, delivery, &mut current).await?
        {
            return Ok(Attempted::Defer {
                delay: None,
                reason,
            });
        }
        // Only a save checks a kept record against the stored one: anything else decided on it
        // (a drop, a deferral, a refusal, a request expired in the inbox) may come from its
        // staleness, and is decided on a read.
        if !verified && requests::expires_a_request(envelope, current.as_ref()) {
            return Ok(Attempted::Unverified);
        }
        match self.resolve_answer(envelope, current.as_ref()).await {
            Ok(None) => {}
            Ok(Some(_)) | Err(_) if !verified => return Ok(Attempted::Unverified),
            Ok(Some(drop)) => return self.drop_message(current, drop).await.map(Attempted::Done),
            Err(error) => return Err(error),
        }

        // The outbox of a version this message replaces and that this process cannot know went
        // out: the version it loaded first is sent before planning (once per message, as it
        // would have to be if the plan changes nothing); a conflict's winner, whose writer is
        // most likely sending it this very moment, is carried along and sent with this step's own
        // effects after the save, so contention does not send it once per re-run.
        let mut carried: Vec<Effect> = Vec::new();
        let mut flushed_loaded = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let expected = current.as_ref().map(|r| r.version);
            let (mut warm, unsent) = match &mut current {
                Some(record) => self.take_unsent_outbox(record),
                None => (None, Vec::new()),
            };
            if attempt == 1 {
                if !unsent.is_empty() {
                    match self.perform(unsent.clone()).await {
                        Ok(()) => flushed_loaded = true,
                        // Not sent: it rides with this step (or is marked for the sweeper).
                        Err(error) => {
                            tracing::debug!(reason = %error.reason, "could not re-send the loaded outbox");
                            carried = unsent;
                        }
                    }
                }
            } else {
                carried = unsent;
            }
            let decoded = warm.as_mut().and_then(|w| w.decoded.take());
            let now = self.clock.now();
            let planned = plan::plan(atom, self.known(), current.take(), decoded, envelope, now);
            let planned = match planned {
                Ok(planned @ Plan::Save { .. }) => planned,
                Ok(_) | Err(_) if !verified => return Ok(Attempted::Unverified),
                planned => planned?,
            };
            let (mut next, decoded, size) = match planned {
                Plan::Drop {
                    disposition,
                    effects,
                } => {
                    let unsaved = Unsaved {
                        carried,
                        effects,
                        flushed_loaded,
                    };
                    self.settle_unsaved(&envelope.target, expected, warm, unsaved)
                        .await?;
                    log_drop(&disposition);
                    return Ok(Attempted::Done(disposition));
                }
                Plan::Defer { delay, reason } => {
                    let unsaved = Unsaved {
                        carried,
                        effects: Vec::new(),
                        flushed_loaded,
                    };
                    self.settle_unsaved(&envelope.target, expected, warm, unsaved)
                        .await?;
                    return Ok(Attempted::Defer {
                        delay: Some(delay),
                        reason,
                    });
                }
                Plan::Save {
                    next,
                    decoded,
                    size,
                } => (*next, decoded, size),
                Plan::TooLarge { reason } => {
                    // The failed record is built from the stored one again, outbox included.
                    carried.clear();
                    match self
                        .fail_too_large(atom, envelope, expected, now, reason)
                        .await?
                    {
                        Some((failed, size)) => (failed, None, size),
                        None if attempt >= MAX_CONFLICT_ATTEMPTS => {
                            let reason = format!("{} kept changing under us", envelope.target);
                            return Ok(Attempted::Defer {
                                delay: None,
                                reason,
                            });
                        }
                        None => {
                            // The record moved on meanwhile: plan again on what is there now.
                            current = self.store.load(&envelope.target).await?;
                            continue;
                        }
                    }
                }
            };
            if !carried.is_empty() {
                let carried_bytes: usize = carried.iter().map(crate::text::json_len).sum();
                let effects = std::mem::take(&mut carried);
                if size + carried_bytes <= MAX_RECORD_BYTES {
                    next.outbox.splice(0..0, effects);
                } else if !self
                    .send_unsaved(&envelope.target, None, Vec::new(), effects, false)
                    .await?
                {
                    // No room to carry them, and they could not go now: the save would drop them.
                    return Err(Error::retryable(
                        "the previous outbox could not be sent and does not fit beside this step's",
                    ));
                }
            }
            self.keep_history(&mut next.outbox);
            let (id, version, status) = (next.id.clone(), next.version, next.status);
            let effects = next.outbox.clone();
            match self.store.save(&next, expected).await? {
                SaveOutcome::Saved => {
                    let described = self
                        .observer
                        .as_ref()
                        .map(|_| effects::describe_effects(&effects));
                    let count = effects.len();
                    let outbox_sent = self.send_saved(&id, version, effects).await?;
                    self.warm.put(
                        &id,
                        version,
                        WarmState {
                            outbox_sent,
                            decoded,
                            record: Some(WarmRecord {
                                record: next,
                                bytes: size,
                            }),
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
                        attempt,
                        "applied"
                    );
                    return Ok(Attempted::Done(Disposition::Applied { version, status }));
                }
                SaveOutcome::Conflict { current: latest } if !verified => {
                    // The kept record was stale: no one is contending, so no backoff; the
                    // failed condition returned the stored record, which is the read.
                    tracing::debug!("the kept record was stale; re-running on the stored one");
                    current = match latest {
                        Some(record) => Some(*record),
                        None => self.store.load(&envelope.target).await?,
                    };
                    verified = true;
                    attempt -= 1;
                    flushed_loaded = false;
                    // The kept version's effects belong to whoever replaced it (who loaded it and
                    // sent or carried them), not to this step.
                    carried.clear();
                }
                SaveOutcome::Conflict { current: latest } => {
                    if attempt >= MAX_CONFLICT_ATTEMPTS {
                        let reason = format!(
                            "{} kept changing under us: {attempt} conflicting saves in a row",
                            envelope.target
                        );
                        return Ok(Attempted::Defer {
                            delay: None,
                            reason,
                        });
                    }
                    let pause = self.backoff(attempt);
                    tracing::debug!(
                        attempt,
                        backoff_ms = pause.as_millis() as u64,
                        "version conflict, re-running the step"
                    );
                    self.clock.sleep(pause).await;
                    current = match latest {
                        Some(record) => Some(*record),
                        None => self.store.load(&envelope.target).await?,
                    };
                    // The winner replaced what we loaded; its writer owns that version's outbox.
                    flushed_loaded = false;
                }
            }
        }
    }

    /// Takes the outbox out of a loaded record; returns what this process remembers of that
    /// version and the effects it cannot know were sent.
    fn take_unsent_outbox(&self, record: &mut InstanceRecord) -> (Option<WarmState>, Vec<Effect>) {
        let warm = self.warm.take(&record.id, record.version);
        let outbox = std::mem::take(&mut record.outbox);
        let sent = warm.as_ref().is_some_and(|w| w.outbox_sent);
        (warm, if sent { Vec::new() } else { outbox })
    }

    /// Drops a message before planning it (see [`Runtime::resolve_answer`]), sending the loaded
    /// record's outbox if this process cannot know it went out.
    async fn drop_message(
        &self,
        mut current: Option<InstanceRecord>,
        disposition: Disposition,
    ) -> Result<Disposition> {
        if let Some(record) = &mut current {
            let (warm, carried) = self.take_unsent_outbox(record);
            let unsaved = Unsaved {
                carried,
                effects: Vec::new(),
                flushed_loaded: false,
            };
            self.settle_unsaved(&record.id, Some(record.version), warm, unsaved)
                .await?;
        }
        log_drop(&disposition);
        Ok(disposition)
    }

    /// A message that replaces nothing: what must go out for the version read goes out (see
    /// [`Runtime::send_unsaved`]), and what this process knows of that version still holds, but
    /// for the decoded state the plan consumed.
    async fn settle_unsaved(
        &self,
        id: &InstanceId,
        version: Option<u64>,
        warm: Option<WarmState>,
        unsaved: Unsaved,
    ) -> Result<()> {
        let Unsaved {
            carried,
            effects,
            flushed_loaded,
        } = unsaved;
        let sent = self
            .send_unsaved(id, version, carried, effects, flushed_loaded)
            .await?;
        if let (Some(warm), Some(version)) = (warm, version) {
            let warm = WarmState {
                outbox_sent: sent,
                ..warm
            };
            self.warm.put(id, version, warm);
        }
        Ok(())
    }

    /// Sends the outbox of a version that was just saved. On failure the record is marked for the
    /// sweeper, which owns the effects from then on (false: not sent); if even the mark cannot be
    /// written, the error is retryable and the message's redelivery sends them.
    async fn send_saved(
        &self,
        id: &InstanceId,
        version: u64,
        effects: Vec<Effect>,
    ) -> Result<bool> {
        match self.perform(effects).await {
            Ok(()) => Ok(true),
            Err(error) => {
                self.mark_for_sweeper(id, version, &error).await?;
                Ok(false)
            }
        }
    }

    /// Sends what must go out for a version this message does not replace: `stored` effects of
    /// that version this process could not know went out, and `extra` effects (of a dropped
    /// message). When the version's stored outbox has gone out (now, or before planning:
    /// `stored_sent`), it is dropped from the record (a write, on this path only), so processes
    /// that load the record later do not send it again. On failure: as [`Runtime::send_saved`];
    /// with no version to mark (the record does not exist, or is about to be replaced), the error
    /// is retryable. True if everything went out.
    async fn send_unsaved(
        &self,
        id: &InstanceId,
        version: Option<u64>,
        stored: Vec<Effect>,
        extra: Vec<Effect>,
        stored_sent: bool,
    ) -> Result<bool> {
        let clear = stored_sent || !stored.is_empty();
        let has_extra = !extra.is_empty();
        let mut effects = stored;
        effects.extend(extra);
        let result = if effects.is_empty() {
            Ok(())
        } else {
            self.perform(effects).await
        };
        match (result, version) {
            (Ok(()), Some(version)) if clear => {
                if let Err(error) = self.store.clear_outbox(id, version).await {
                    // Harmless: the next process to load it sends it once more.
                    tracing::debug!(reason = %error.reason, "could not drop the sent outbox");
                }
                Ok(true)
            }
            (Ok(()), _) => Ok(true),
            (Err(error), Some(version)) => {
                self.mark_for_sweeper(id, version, &error).await?;
                if has_extra {
                    // The dropped message's own effects are in no record: it must come back.
                    return Err(Error::retryable(error.reason));
                }
                Ok(false)
            }
            (Err(error), None) => Err(Error::retryable(error.reason)),
        }
    }

    async fn mark_for_sweeper(&self, id: &InstanceId, version: u64, error: &Error) -> Result<()> {
        tracing::warn!(
            version,
            reason = %error.reason,
            "could not send the outbox; marking it for the sweeper"
        );
        self.store
            .mark_outbox_pending(id, version, self.clock.now())
            .await
            .map_err(|mark| {
                Error::retryable(format!(
                    "could not send the outbox ({}) nor mark it for the sweeper ({})",
                    error.reason, mark.reason
                ))
            })
    }

    /// Puts the message back on its queue with a delay (the instance is too contended, or a timer
    /// arrived early), without using up one of its receives. Bounded by [`MAX_DEFERRALS`].
    async fn defer(
        &self,
        mut envelope: Envelope,
        delay: Option<Duration>,
        reason: String,
    ) -> Result<Disposition> {
        if envelope.deferrals >= MAX_DEFERRALS {
            return Err(Error::retryable(format!(
                "{reason}; already deferred {MAX_DEFERRALS} times"
            )));
        }
        envelope.deferrals += 1;
        let delay = delay.unwrap_or_else(|| self.deferral_delay(envelope.deferrals));
        tracing::info!(
            deferrals = envelope.deferrals,
            delay_s = delay.as_secs(),
            %reason,
            "deferring the message"
        );
        self.dispatcher
            .send(vec![Outgoing { envelope, delay }])
            .await?;
        Ok(Disposition::Deferred { delay, reason })
    }

    fn random_below(&self, n: u64) -> u64 {
        self.jitter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .below(n)
    }

    /// Full jitter: random in `[0, min(cap, base × 2^(attempt-1))]`.
    fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = BACKOFF_BASE
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(BACKOFF_CAP);
        Duration::from_millis(self.random_below(ceiling.as_millis() as u64 + 1))
    }

    /// Whole seconds (queue delays are in seconds): random in `[1, min(60, 2^deferrals)]`.
    fn deferral_delay(&self, deferrals: u32) -> Duration {
        let ceiling = (1u64 << deferrals.min(6)).min(MAX_DEFERRAL_DELAY.as_secs());
        Duration::from_secs(1 + self.random_below(ceiling))
    }

    /// The failed record that replaces an instance whose next version would not fit: it keeps the
    /// state it had (or, for a child whose first step is too large, exists only to report the
    /// failure to its parent). `None` if the stored record moved on and the plan must run again.
    async fn fail_too_large(
        &self,
        atom: &dyn DynAtom,
        envelope: &Envelope,
        expected: Option<u64>,
        now: Timestamp,
        reason: String,
    ) -> Result<Option<(InstanceRecord, usize)>> {
        let stored = self.store.load(&envelope.target).await?;
        if stored.as_ref().map(|r| r.version) != expected {
            return Ok(None);
        }
        let (base, inherited) = match stored {
            Some(mut record) => {
                let (_, inherited) = self.take_unsent_outbox(&mut record);
                (record, inherited)
            }
            None => {
                let crate::event::Event::Started { parent, .. } = &envelope.event else {
                    return Err(Error::terminal(reason));
                };
                let fresh = InstanceRecord::fresh(
                    envelope.target.clone(),
                    envelope.atom.clone(),
                    parent.clone(),
                    now,
                );
                (fresh, Vec::new())
            }
        };
        let mut failed = draft::fail_too_large(atom, base, &envelope.id, now, reason);
        failed.outbox.splice(0..0, inherited);
        let size = failed.stored_size_bound(failed.outbox.iter().map(crate::text::json_len).sum());
        Ok(Some((failed, size)))
    }
}

/// How one run of a message ended.
enum Attempted {
    Done(Disposition),
    /// Put the message back on its queue (`None`: a delay by the number of deferrals).
    Defer {
        delay: Option<Duration>,
        reason: String,
    },
    /// It was run on a kept record that may be stale and would not save: run it again on a read.
    Unverified,
}

/// What a message that replaces nothing must still send: the stored effects of the version read
/// that this process cannot know went out (`carried`), the message's own (`effects`), and whether
/// the loaded outbox already went out before planning (`flushed_loaded`).
struct Unsaved {
    carried: Vec<Effect>,
    effects: Vec<Effect>,
    flushed_loaded: bool,
}

fn log_drop(disposition: &Disposition) {
    match disposition {
        Disposition::Duplicate => tracing::debug!("duplicate message dropped"),
        Disposition::Ignored { reason } => tracing::info!(%reason, "message ignored"),
        Disposition::Applied { .. } | Disposition::Deferred { .. } => {}
    }
}
