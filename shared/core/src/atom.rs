//! The atom API: a typed, deterministic state machine with one `step`.

use crate::error::{Error, Result};
use crate::event::AtomEvent;
use crate::ids::{InstanceId, RequestId};
use crate::time::Timestamp;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::any::Any;
use std::collections::HashMap;
use std::fmt;
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
/// `step` must be a pure function of the state, the event and `ctx.now()`: it is re-run when a
/// save conflicts, and anything it wants done in the world goes through `ctx`, which the runtime
/// performs exactly once per applied step. Returning `Err` with a retryable error leaves the
/// instance untouched and the message is redelivered; a terminal error fails the instance.
pub trait Atom: Send + Sync + 'static {
    /// The atom type's name; also selects its queue and Lambda function.
    const TYPE: &'static str;
    type Input: Serialize + DeserializeOwned;
    type State: Serialize + DeserializeOwned + Default + Send;
    type Output: Serialize + DeserializeOwned;

    fn step(
        &self,
        state: &mut Self::State,
        event: AtomEvent<Self::Input>,
        ctx: &mut Context<'_>,
    ) -> Result<Step<Self::Output>>;
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
    /// tagged with `tag`, which should be unique among this instance's children.
    pub fn spawn<A: Atom>(&mut self, tag: impl Into<String>, input: &A::Input) -> InstanceId {
        let input = self.encode("child input", input);
        self.spawn_json(A::TYPE, tag, input)
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

    /// Runs the activity `activity` with `input` in a later invocation. Its outcome is journaled in
    /// the record before it is delivered as `CallCompleted` / `CallFailed` with `tag`, so a retry
    /// never runs it again once recorded. The activity must be registered with the runtime.
    pub fn call(
        &mut self,
        activity: impl Into<String>,
        tag: impl Into<String>,
        input: &impl Serialize,
    ) {
        let input = self.encode("activity input", input);
        self.commands.push(Command::Call {
            activity: activity.into(),
            tag: tag.into(),
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
    /// A new instance: the atom's default state.
    Fresh,
    /// The stored JSON, and the decoded value of that same JSON if this process still has it.
    Stored {
        json: &'a str,
        decoded: Option<TypedState>,
    },
}

/// What a step produced: the new state (JSON for the record, decoded for the cache) and outcome.
pub(crate) struct StepOut {
    pub json: String,
    pub decoded: TypedState,
    pub outcome: Step<Value>,
}

/// An atom with its types erased, as the runtime stores it.
pub(crate) trait DynAtom: Send + Sync {
    fn step_json(
        &self,
        state: StateIn<'_>,
        event: AtomEvent<Value>,
        ctx: &mut Context<'_>,
    ) -> Result<StepOut>;
}

impl<A: Atom> DynAtom for A {
    fn step_json(
        &self,
        state: StateIn<'_>,
        event: AtomEvent<Value>,
        ctx: &mut Context<'_>,
    ) -> Result<StepOut> {
        let (mut typed, previous_len): (Box<A::State>, usize) = match state {
            StateIn::Fresh => (Box::default(), 0),
            StateIn::Stored { json, decoded } => {
                match decoded.and_then(|d| d.downcast::<A::State>().ok()) {
                    Some(typed) => (typed, json.len()),
                    None => {
                        let typed = serde_json::from_str(json).map_err(|e| {
                            Error::terminal(format!(
                                "stored state does not decode as {}'s state: {e}",
                                A::TYPE
                            ))
                        })?;
                        (Box::new(typed), json.len())
                    }
                }
            }
        };
        let event = event.try_map_input(|input| {
            serde_json::from_value::<A::Input>(input).map_err(|e| {
                Error::terminal(format!(
                    "input does not match atom {}'s input type: {e}",
                    A::TYPE
                ))
            })
        })?;
        let outcome = match self.step(&mut typed, event, ctx)? {
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
            decoded: typed,
            outcome,
        })
    }
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
