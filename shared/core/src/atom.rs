//! The atom API: a typed, deterministic state machine (`start` from its input, `step` per event).

use crate::error::{Error, Result};
use crate::event::{AtomEvent, Failure, RawEvent};
use crate::ids::{InstanceId, RequestId};
use crate::payload::{CallType, Payload, check_tag, decode_tag, tag_text};
use crate::time::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

/// What a step decided.
#[derive(Clone, Debug, PartialEq)]
pub enum Step<O> {
    /// Wait for the next event.
    Suspend,
    /// Finish successfully; the parent (if any) receives the output.
    Complete(O),
    /// Finish as failed (terminal); the parent receives the reason.
    Fail(String),
}

/// An atom: a small deterministic state machine.
///
/// `start` and `step` must be pure functions of their arguments and `ctx.now()`: they are re-run
/// when a save conflicts, and anything they want done in the world goes through `ctx`, which the
/// runtime performs exactly once per applied step. Returning `Err` with a retryable error leaves
/// the instance untouched and the message is redelivered; a terminal error fails the instance.
pub trait Atom: Send + Sync + 'static {
    /// The atom type's name; also selects its queue and Lambda function.
    const TYPE: &'static str;
    /// The shape of `State` that this code writes. Raise it when a stored state of the previous
    /// shape would no longer decode, and teach [`Atom::migrate`] the way up: instances already
    /// running are migrated when they next load, so a deploy never strands them.
    const STATE_VERSION: u32 = 1;
    type Input: Serialize + DeserializeOwned;
    type State: Serialize + DeserializeOwned + Send;
    type Output: Serialize + DeserializeOwned;
    /// How this atom names its children and calls: its own serde enum (see
    /// [`encode_tag`](crate::payload::encode_tag)), or `String`.
    type Tag: Serialize + DeserializeOwned + fmt::Debug;

    /// A new instance: its first state, built from its input, and what it does next (usually
    /// `Step::Suspend`, after spawning, calling, arming timers or asking through `ctx`).
    fn start(
        &self,
        input: Self::Input,
        ctx: &mut Context<'_>,
    ) -> Result<(Self::State, Step<Self::Output>)>;

    /// Every later event but a failure.
    fn step(
        &self,
        state: &mut Self::State,
        event: AtomEvent<Self::Tag>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<Self::Output>>;

    /// A child or a call failed. Unless the atom handles it here, the failure propagates: the
    /// instance fails with the failure's reason (and its parent hears of it).
    fn failed(
        &self,
        state: &mut Self::State,
        failure: Failure<Self::Tag>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<Self::Output>> {
        let _ = (state, ctx);
        Ok(Step::Fail(failure.reason()))
    }

    /// Upgrades a state stored at version `from` to version `from + 1` (as JSON). Called as many
    /// times as it takes to reach [`Atom::STATE_VERSION`]; the result is then decoded as `State`.
    fn migrate(&self, from: u32, state: Value) -> Result<Value> {
        let _ = state;
        Err(Error::terminal(format!(
            "atom {} has no migration from state version {from}",
            Self::TYPE
        )))
    }
}

/// A child started with [`Context::spawn`]: its id, and the type its completion decodes to.
#[derive(Debug)]
pub struct Child<A: Atom> {
    pub id: InstanceId,
    atom: PhantomData<fn() -> A>,
}

impl<A: Atom> Child<A> {
    /// The child's output, from the payload of its `ChildCompleted`.
    pub fn output(payload: Payload) -> Result<A::Output> {
        payload.output_of::<A>()
    }
}

/// A reference to another instance, enough to address a message to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceRef {
    pub id: InstanceId,
    pub atom: String,
}

/// A question for the user.
#[derive(Clone, Debug, PartialEq)]
pub struct Ask {
    /// What sort of question ("auth", "preferences", "approval"), for the inbox and the UI.
    pub kind: String,
    pub prompt: String,
    /// JSON Schema the answer must satisfy; answers that do not are refused.
    pub schema: Value,
    /// When to give up; the atom then receives `RequestExpired`.
    pub deadline: Option<Timestamp>,
    /// Who is asked (an email address): notified with a link to the web inbox, which opens the
    /// request for that person only. `None`: answered through an operator's client.
    pub person: Option<String>,
}

/// Commands a step issued, in order. The runtime turns them into effects after the step returns.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Command {
    Spawn {
        atom: String,
        tag: String,
        input: Value,
    },
    SetTimer {
        name: String,
        at: Timestamp,
    },
    SetRecurring {
        name: String,
        every: Duration,
    },
    CancelTimer {
        name: String,
    },
    Ask(Ask),
    Progress(Value),
    Signal {
        target: InstanceRef,
        name: String,
        payload: Value,
    },
    Cancel {
        child: InstanceId,
        reason: String,
    },
    Call {
        activity: String,
        tag: String,
        input: Value,
    },
}

/// Names reserved for the runtime's own timers (request deadlines).
pub(crate) const RESERVED_TIMER_PREFIX: &str = "reanimate:";

/// What a step can ask for. Ids handed back are final: they are derived from the instance, the
/// version this step produces and the command's position, so a re-run step yields the same ones.
#[derive(Debug)]
pub struct Context<'a> {
    instance: &'a InstanceId,
    version: u64,
    now: Timestamp,
    pub(crate) commands: Vec<Command>,
    pub(crate) continuation: Option<Value>,
    /// Index of this step's first command within the version (a message can apply several steps).
    pub(crate) first_index: u32,
    pub(crate) error: Option<Error>,
    /// The tags given to children and calls in this step, encoded and as values, to check that
    /// each comes back as the same tag.
    tags: Vec<(String, Value)>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(
        instance: &'a InstanceId,
        version: u64,
        now: Timestamp,
        first_index: u32,
    ) -> Self {
        Self {
            instance,
            version,
            now,
            commands: Vec::new(),
            continuation: None,
            first_index,
            error: None,
            tags: Vec::new(),
        }
    }

    /// A context for unit-testing an atom's `step` directly, outside any runtime.
    pub fn for_test(instance: &'a InstanceId, now: Timestamp) -> Self {
        Self::new(instance, 1, now, 0)
    }

    pub fn instance(&self) -> &InstanceId {
        self.instance
    }

    /// The time of this step, read once from the runtime's clock.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    fn next_slot(&self) -> crate::ids::CommandSlot<'a> {
        crate::ids::CommandSlot {
            instance: self.instance,
            version: self.version,
            index: self.first_index + self.commands.len() as u32,
        }
    }

    fn encode(&mut self, what: &str, value: &impl Serialize) -> Value {
        serde_json::to_value(value).unwrap_or_else(|e| {
            self.error
                .get_or_insert_with(|| Error::terminal(format!("cannot encode {what}: {e}")));
            Value::Null
        })
    }

    /// Starts a child instance of atom `A`. The child's completion, failure and progress come back
    /// with `tag`, which should be unique among this instance's children.
    pub fn spawn<A: Atom>(&mut self, tag: impl Serialize, input: &A::Input) -> Child<A> {
        let input = self.encode("child input", input);
        let tag = self.encode_tag(&tag);
        Child {
            id: self.spawn_json(A::TYPE, tag, input),
            atom: PhantomData,
        }
    }

    /// Starts a child by atom type name with a JSON input.
    pub fn spawn_json(
        &mut self,
        atom: impl Into<String>,
        tag: impl Into<String>,
        input: Value,
    ) -> InstanceId {
        let child = self.next_slot().child();
        self.commands.push(Command::Spawn {
            atom: atom.into(),
            tag: tag.into(),
            input,
        });
        child
    }

    /// The tag as it goes on the wire, serialised once: its value is kept for the check that it
    /// comes back as itself.
    fn encode_tag(&mut self, tag: &impl Serialize) -> String {
        let value = self.encode("tag", tag);
        let text = tag_text(&value);
        self.tags.push((text.clone(), value));
        text
    }

    /// Arms (or re-arms) the timer `name` to fire at `at`.
    pub fn set_timer_at(&mut self, name: impl Into<String>, at: Timestamp) {
        let name = name.into();
        if name.starts_with(RESERVED_TIMER_PREFIX) {
            self.error.get_or_insert_with(|| {
                Error::terminal(format!(
                    "timer names starting with {RESERVED_TIMER_PREFIX:?} are reserved"
                ))
            });
            return;
        }
        self.commands.push(Command::SetTimer { name, at });
    }

    /// Arms (or re-arms) the timer `name` to fire `after` from now.
    pub fn set_timer_after(&mut self, name: impl Into<String>, after: Duration) {
        let at = self.now.plus(after);
        self.set_timer_at(name, at);
    }

    /// Arms (or re-arms) the timer `name` to fire every `every` (whole minutes, at least one),
    /// first `every` from now, until it is cancelled or the instance finishes. On AWS it is one
    /// EventBridge Scheduler `rate(...)` schedule, not a chain of one-time timers.
    pub fn set_recurring_timer(&mut self, name: impl Into<String>, every: Duration) {
        let name = name.into();
        let secs = every.as_secs();
        if secs < 60 || !secs.is_multiple_of(60) || every.subsec_nanos() != 0 {
            self.error.get_or_insert_with(|| {
                Error::terminal(format!(
                    "recurring timer {name:?}: the period must be whole minutes, at least one (got {every:?})"
                ))
            });
            return;
        }
        if name.starts_with(RESERVED_TIMER_PREFIX) {
            self.error.get_or_insert_with(|| {
                Error::terminal(format!(
                    "timer names starting with {RESERVED_TIMER_PREFIX:?} are reserved"
                ))
            });
            return;
        }
        self.commands.push(Command::SetRecurring { name, every });
    }

    pub fn cancel_timer(&mut self, name: impl Into<String>) {
        self.commands
            .push(Command::CancelTimer { name: name.into() });
    }

    /// Puts a question in the user's inbox. The answer arrives as `UserAnswered`, or
    /// `RequestExpired` if the deadline passes first.
    pub fn ask_user(&mut self, ask: Ask) -> RequestId {
        let id = self.next_slot().request();
        self.commands.push(Command::Ask(ask));
        id
    }

    /// Reports progress to the parent (ignored for a root instance).
    pub fn report_progress(&mut self, payload: &impl Serialize) {
        let payload = self.encode("progress payload", payload);
        self.commands.push(Command::Progress(payload));
    }

    /// Sends a named signal to another instance.
    pub fn signal(
        &mut self,
        target: InstanceRef,
        name: impl Into<String>,
        payload: &impl Serialize,
    ) {
        let payload = self.encode("signal payload", payload);
        self.commands.push(Command::Signal {
            target,
            name: name.into(),
            payload,
        });
    }

    /// Asks a pending child to cancel; it answers with a cancelled `ChildFailed`.
    pub fn cancel_child(&mut self, child: &InstanceId, reason: impl Into<String>) {
        self.commands.push(Command::Cancel {
            child: child.clone(),
            reason: reason.into(),
        });
    }

    /// Runs this instance again at once with `cursor`, as a new invocation: long work proceeds in
    /// bounded steps. Only the last call in a step counts.
    pub fn continue_with(&mut self, cursor: &impl Serialize) {
        let cursor = self.encode("continuation cursor", cursor);
        self.continuation = Some(cursor);
    }

    /// Runs the activity `C` with `input` in a later invocation. Its outcome is journaled in the
    /// record before it is delivered as `CallCompleted` (decode it with
    /// [`Payload::output_of_call`]) or as a failure with `tag`, so a retry never runs it again once
    /// recorded. The activity must be registered with the runtime.
    pub fn call<C: CallType>(&mut self, tag: impl Serialize, input: &C::Input) {
        self.call_json(C::ACTIVITY, tag, input);
    }

    /// Runs the activity named `activity` (untyped: for activities chosen at run time).
    pub fn call_json(
        &mut self,
        activity: impl Into<String>,
        tag: impl Serialize,
        input: &impl Serialize,
    ) {
        let input = self.encode("activity input", input);
        let tag = self.encode_tag(&tag);
        self.commands.push(Command::Call {
            activity: activity.into(),
            tag,
            input,
        });
    }

    /// The commands issued so far, described (for unit tests of a `step`).
    pub fn describe_commands(&self) -> Vec<String> {
        self.commands.iter().map(|c| format!("{c:?}")).collect()
    }

    /// How many commands this step has issued so far (for tests).
    pub fn command_count(&self) -> usize {
        self.commands.len()
    }
}

/// A decoded state, kept between steps so a warm process need not decode it again.
pub(crate) type TypedState = Box<dyn Any + Send>;

/// The state a step starts from.
pub(crate) enum StateIn<'a> {
    /// A new instance: its state comes from `start`.
    Fresh,
    /// The stored JSON at the state version it was written with, and the decoded value of that
    /// same JSON if this process still has it.
    Stored {
        json: &'a str,
        version: u32,
        decoded: Option<TypedState>,
    },
}

/// What a step produced: the new state (JSON for the record, decoded for the cache, and the state
/// version it was written at) and outcome.
pub(crate) struct StepOut {
    pub json: String,
    pub version: u32,
    pub decoded: TypedState,
    pub outcome: Step<Value>,
}

/// An atom with its types erased, as the runtime stores it.
pub(crate) trait DynAtom: Send + Sync {
    fn step_json(
        &self,
        state: StateIn<'_>,
        event: RawEvent,
        ctx: &mut Context<'_>,
    ) -> Result<StepOut>;
}

/// Decodes a stored state, migrating it first if an older version of the atom wrote it.
fn load_state<A: Atom>(atom: &A, json: &str, version: u32) -> Result<A::State> {
    let undecodable = |e: serde_json::Error| {
        Error::terminal(format!(
            "stored state (version {version}) does not decode as {}'s state: {e}",
            A::TYPE
        ))
    };
    if version == A::STATE_VERSION {
        return serde_json::from_str(json).map_err(undecodable);
    }
    if version > A::STATE_VERSION {
        // Written by newer code than this process runs (a deploy in progress): another delivery
        // may reach the newer code; this one must not overwrite its state. After a rollback the
        // message is retried until it dead-letters, kept for a redrive once the newer code is back.
        return Err(Error::retryable(format!(
            "{}'s state is at version {version}, newer than this code's {}",
            A::TYPE,
            A::STATE_VERSION
        )));
    }
    let mut value: Value = serde_json::from_str(json).map_err(undecodable)?;
    for from in version..A::STATE_VERSION {
        value = atom.migrate(from, value)?;
    }
    serde_json::from_value(value).map_err(|e| {
        Error::terminal(format!(
            "{}'s state migrated from version {version} does not decode: {e}",
            A::TYPE
        ))
    })
}

impl<A: Atom> DynAtom for A {
    fn step_json(
        &self,
        state: StateIn<'_>,
        event: RawEvent,
        ctx: &mut Context<'_>,
    ) -> Result<StepOut> {
        let (typed, outcome, previous_len): (Box<A::State>, Step<A::Output>, usize) =
            match (state, event) {
                (StateIn::Fresh, RawEvent::Started(input)) => {
                    let input = serde_json::from_value::<A::Input>(input).map_err(|e| {
                        Error::terminal(format!(
                            "input does not match atom {}'s input type: {e}",
                            A::TYPE
                        ))
                    })?;
                    let (state, outcome) = self.start(input, ctx)?;
                    (Box::new(state), outcome, 0)
                }
                (StateIn::Fresh, _) => {
                    return Err(Error::terminal("an instance's first event must start it"));
                }
                (
                    StateIn::Stored {
                        json,
                        version,
                        decoded,
                    },
                    event,
                ) => {
                    let mut typed = match decoded.and_then(|d| d.downcast::<A::State>().ok()) {
                        Some(typed) => typed,
                        None => Box::new(load_state(self, json, version)?),
                    };
                    let outcome = match typed_event::<A::Tag>(event)? {
                        Ok(event) => self.step(&mut typed, event, ctx)?,
                        Err(failure) => self.failed(&mut typed, failure, ctx)?,
                    };
                    (typed, outcome, json.len())
                }
            };
        // A step that already failed to encode something fails with that reason instead.
        let tags = std::mem::take(&mut ctx.tags);
        if ctx.error.is_none() {
            for (text, value) in tags {
                check_tag::<A::Tag>(&text, &value)?;
            }
        }
        let outcome = match outcome {
            Step::Suspend => Step::Suspend,
            Step::Fail(reason) => Step::Fail(reason),
            Step::Complete(output) => Step::Complete(
                serde_json::to_value(&output)
                    .map_err(|e| Error::terminal(format!("cannot encode output: {e}")))?,
            ),
        };
        let mut json = Vec::with_capacity(previous_len + 64);
        serde_json::to_writer(&mut json, &*typed)
            .map_err(|e| Error::terminal(format!("cannot encode {}'s state: {e}", A::TYPE)))?;
        // serde_json writes valid UTF-8.
        let json = String::from_utf8(json).map_err(|e| Error::terminal(e.to_string()))?;
        Ok(StepOut {
            json,
            version: A::STATE_VERSION,
            decoded: typed,
            outcome,
        })
    }
}

/// The atom's view of a later event: its tags decoded, failures apart.
fn typed_event<T: DeserializeOwned>(event: RawEvent) -> Result<Result<AtomEvent<T>, Failure<T>>> {
    Ok(Ok(match event {
        RawEvent::Started(_) => {
            return Err(Error::terminal("a started instance cannot start again"));
        }
        RawEvent::ChildCompleted { child, tag, output } => AtomEvent::ChildCompleted {
            child,
            tag: decode_tag(&tag)?,
            output: output.into(),
        },
        RawEvent::ChildFailed {
            child,
            tag,
            reason,
            cancelled,
        } => {
            return Ok(Err(Failure::Child {
                child,
                tag: decode_tag(&tag)?,
                reason,
                cancelled,
            }));
        }
        RawEvent::ChildProgress {
            child,
            tag,
            seq,
            payload,
        } => AtomEvent::ChildProgress {
            child,
            tag: decode_tag(&tag)?,
            seq,
            payload: payload.into(),
        },
        RawEvent::TimerFired { name } => AtomEvent::TimerFired { name },
        RawEvent::UserAnswered {
            request,
            kind,
            answer,
        } => AtomEvent::UserAnswered {
            request,
            kind,
            answer: answer.into(),
        },
        RawEvent::RequestExpired { request, kind } => AtomEvent::RequestExpired { request, kind },
        RawEvent::Signal { name, payload } => AtomEvent::Signal {
            name,
            payload: payload.into(),
        },
        RawEvent::CancelRequested { reason } => AtomEvent::CancelRequested { reason },
        RawEvent::Continue { cursor } => AtomEvent::Continue {
            cursor: cursor.into(),
        },
        RawEvent::CallCompleted { tag, output } => AtomEvent::CallCompleted {
            tag: decode_tag(&tag)?,
            output: output.into(),
        },
        RawEvent::CallFailed { tag, reason } => {
            return Ok(Err(Failure::Call {
                tag: decode_tag(&tag)?,
                reason,
            }));
        }
    }))
}

/// The atom types a runtime can run, by name.
#[derive(Clone, Default)]
pub struct Registry {
    atoms: HashMap<&'static str, Arc<dyn DynAtom>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.atoms.keys().collect();
        names.sort();
        f.debug_struct("Registry").field("atoms", &names).finish()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an atom type; registering the same name twice replaces the earlier one.
    pub fn with<A: Atom>(mut self, atom: A) -> Self {
        self.atoms.insert(A::TYPE, Arc::new(atom));
        self
    }

    pub fn contains(&self, atom: &str) -> bool {
        self.atoms.contains_key(atom)
    }

    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.atoms.keys().copied().collect();
        names.sort_unstable();
        names
    }

    pub(crate) fn get(&self, atom: &str) -> Option<&Arc<dyn DynAtom>> {
        self.atoms.get(atom)
    }
}
