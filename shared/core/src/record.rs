//! The instance record: everything the runtime persists about one atom instance, written as a
//! whole with a condition on `version`.

use crate::envelope::Envelope;
use crate::event::{Event, ParentLink};
use crate::ids::{InstanceId, MessageId, RequestId, TimerId};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// DynamoDB items may be 400 KB; stay well under so attribute names and encoding overhead fit.
pub const MAX_RECORD_BYTES: usize = 350_000;

/// How many ids of applied messages from outside an instance remembers, at most. Only client
/// signals rely on them: every other event has a guard of its own in the record (see
/// ARCHITECTURE.md), so the flood of a fan-in never pushes a client's signal out.
pub const RECENT_MESSAGES: usize = 1024;

/// How long an instance remembers a client signal's id: the longest SQS keeps a message (its
/// retention, which the template sets to 14 days for the dead-letter queues), after which no copy
/// of it can arrive.
pub const CLIENT_MESSAGE_MEMORY: std::time::Duration = std::time::Duration::from_secs(14 * 86_400);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Has a continuation in flight: it will run again without any outside event.
    Running,
    /// Waiting for an event.
    Suspended,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub fn is_finished(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Suspended => "suspended",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub id: InstanceId,
    pub atom: String,
    /// Incremented by every save; every save is conditioned on the version that was read.
    pub version: u64,
    pub status: Status,
    /// The atom's state, JSON-encoded.
    pub state: String,
    /// The [`Atom::STATE_VERSION`](crate::Atom::STATE_VERSION) `state` was written at (records
    /// from before versions existed are version 1).
    #[serde(default = "first_state_version")]
    pub state_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentLink>,
    #[serde(default)]
    pub waiting: Waiting,
    /// Fingerprints of the latest applied messages from outside without a guard of their own
    /// (client signals).
    #[serde(default)]
    pub applied: RecentMessages,
    /// The sequence number of the next signal to each instance this one signals.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signals_sent: BTreeMap<InstanceId, u64>,
    /// The signals applied from each instance that signalled this one, by sequence number.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub signals_received: BTreeMap<InstanceId, SenderSignals>,
    /// A cancel arrived before the instance existed: this record stands in for it, cancelled, and
    /// a later start is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tombstone: bool,
    /// Effects of the step that produced `version`. They are sent after the save; the next save
    /// drops them once they are known to be sent, and whoever loads the record before that sends
    /// them again (every effect is idempotent downstream).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<Effect>,
    /// Progress reports sent to the parent so far; the next one gets this number.
    #[serde(default)]
    pub progress_sent: u64,
    /// How many events the atom's `step` has applied.
    #[serde(default)]
    pub transitions: u64,
    /// Transitions kept in the record by runtimes before the history table carried them all
    /// (read, never written: the history is not rewritten with the record on every step).
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub history: VecDeque<HistoryEntry>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn first_state_version() -> u32 {
    1
}

impl InstanceRecord {
    /// A record for an instance that has not taken a step yet.
    pub fn fresh(id: InstanceId, atom: String, parent: Option<ParentLink>, now: Timestamp) -> Self {
        Self {
            id,
            atom,
            version: 0,
            status: Status::Suspended,
            state: String::new(),
            state_version: first_state_version(),
            parent,
            waiting: Waiting::default(),
            applied: RecentMessages::default(),
            signals_sent: BTreeMap::new(),
            signals_received: BTreeMap::new(),
            tombstone: false,
            outbox: Vec::new(),
            progress_sent: 0,
            transitions: 0,
            history: VecDeque::new(),
            created_at: now,
            updated_at: now,
            result: None,
            error: None,
        }
    }

    /// An upper bound on the record's stored size (attribute values plus generous overhead for
    /// names and numbers), cheap enough to compute on every save: summed from string lengths,
    /// with the outbox's encoded size given by the caller (who has encoded it anyway).
    pub fn stored_size_bound(&self, outbox_bytes: usize) -> usize {
        const FIELD: usize = 32;
        const ENTRY: usize = 128;
        let ids = |a: &str, b: &str, c: &str| a.len() + b.len() + c.len() + ENTRY;
        let mut size = 16 * FIELD + self.id.as_str().len() + self.atom.len() + self.state.len();
        size += self.applied.len() * 20;
        size += self
            .signals_sent
            .keys()
            .map(|id| id.as_str().len() + 2 * FIELD)
            .sum::<usize>();
        size += self
            .signals_received
            .iter()
            .map(|(id, from)| id.as_str().len() + 3 * FIELD + from.seqs.above.len() * 21)
            .sum::<usize>();
        if let Some(parent) = &self.parent {
            size += ids(parent.id.as_str(), &parent.atom, &parent.tag);
        }
        for (id, child) in &self.waiting.children {
            size += ids(id.as_str(), &child.atom, &child.tag) + child.progress.above.len() * 21;
            size += child
                .early_finish
                .as_ref()
                .map_or(0, crate::envelope::encoded_len);
        }
        for (name, timer) in &self.waiting.timers {
            size += ids(
                name,
                timer.id.as_str(),
                timer.deadline_of.as_ref().map_or("", |r| r.as_str()),
            );
        }
        for (id, request) in &self.waiting.requests {
            size += ids(
                id.as_str(),
                &request.kind,
                request.deadline_timer.as_deref().unwrap_or(""),
            );
            size += crate::envelope::encoded_len(&request.schema);
        }
        size += self
            .waiting
            .continuation
            .as_ref()
            .map_or(0, |m| m.as_str().len() + FIELD);
        for (id, call) in &self.waiting.calls {
            size += ids(id.as_str(), &call.activity, &call.tag);
            size += call
                .outcome
                .as_ref()
                .map_or(0, crate::envelope::encoded_len);
        }
        size += outbox_bytes + self.outbox.len() * FIELD;
        size += self.result.as_ref().map_or(0, crate::envelope::encoded_len);
        size += self.error.as_ref().map_or(0, |e| e.len() + FIELD);
        size
    }
}

/// One saved transition, as `reanimate history` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub version: u64,
    pub at: Timestamp,
    /// The event's kind (`started`, `child_completed`, `call`, ...), or `call_journaled`.
    pub event: String,
    /// Which one: a child's tag, a timer's name, a signal's name, a request id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    pub status: Status,
    /// Effects the transition sent (messages, timers, requests, notices).
    #[serde(default)]
    pub effects: u32,
}

impl InstanceRecord {
    /// Puts the transition's entry in the outbox for the full history (kept outside the record,
    /// written after the save like every other effect, so the step's one conditional write does
    /// not grow with it). Until it is written, the outbox is where readers find it. Call it after
    /// the outbox is set.
    pub fn remember_transition(&mut self, event: &str, detail: &str, effects: usize) {
        // Entries an older runtime kept in the record move to the full history, once.
        for entry in std::mem::take(&mut self.history) {
            self.outbox.push(Effect::History {
                instance: self.id.clone(),
                entry,
            });
        }
        let entry = HistoryEntry {
            version: self.version,
            at: self.updated_at,
            event: event.to_string(),
            detail: detail.to_string(),
            status: self.status,
            effects: effects as u32,
        };
        self.outbox.push(Effect::History {
            instance: self.id.clone(),
            entry,
        });
    }
}

/// What a suspended instance is waiting for. Events that match nothing here are stale and ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub children: BTreeMap<InstanceId, PendingChild>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timers: BTreeMap<String, PendingTimer>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<RequestId, PendingRequest>,
    /// The continuation message the instance expects next, if it asked to continue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation: Option<MessageId>,
    /// Activities asked for, by the id of the message that runs them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub calls: BTreeMap<MessageId, PendingCall>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// An activity asked for and not yet delivered to the step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingCall {
    pub activity: String,
    pub tag: String,
    /// Fingerprint of the call's input: a call message is run only if it asks for this activity
    /// with this input (0: not recorded, by an older runtime).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub input_hash: u64,
    /// Journaled as soon as the activity finishes, before the step that consumes it runs, so it
    /// runs at most once per recorded outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<CallOutcome>,
}

/// What an activity produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CallOutcome {
    Completed { output: Value },
    Failed { reason: String },
}

impl Waiting {
    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.timers.is_empty()
            && self.requests.is_empty()
            && self.continuation.is_none()
            && self.calls.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingChild {
    pub atom: String,
    pub tag: String,
    #[serde(default)]
    pub progress: SeqSet,
    /// A completion or failure that overtook some of the child's progress reports; applied once
    /// they have all arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_finish: Option<Box<Event>>,
    /// A cancel was sent; the child will answer with a cancelled failure.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelling: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingTimer {
    pub id: TimerId,
    /// The next firing (for a recurring timer, as of when it was armed).
    pub due: Timestamp,
    /// Set for a recurring timer: its period in seconds. It stays pending after it fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_secs: Option<u64>,
    /// Set when this timer is a request's deadline rather than one the atom named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_of: Option<RequestId>,
    /// For a recurring timer: the scheduled time of the last firing applied. A firing for the same
    /// time or earlier (a duplicate, a redrive) is not applied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingRequest {
    pub kind: String,
    /// JSON Schema the answer must satisfy.
    pub schema: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_timer: Option<String>,
}

/// A set of sequence numbers stored as "everything below `below`" plus the stragglers above it,
/// so in-order arrivals keep it constant-size.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqSet {
    #[serde(default)]
    pub below: u64,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub above: BTreeSet<u64>,
}

impl SeqSet {
    pub fn contains(&self, seq: u64) -> bool {
        seq < self.below || self.above.contains(&seq)
    }

    /// Adds `seq`; false if it was already there.
    pub fn insert(&mut self, seq: u64) -> bool {
        if self.contains(seq) {
            return false;
        }
        self.above.insert(seq);
        while self.above.remove(&self.below) {
            self.below += 1;
        }
        true
    }

    /// True when every number below `count` has been seen.
    pub fn has_all_below(&self, count: u64) -> bool {
        self.below >= count
    }
}

/// The ids of the client signals an instance applied, as fingerprints with the time they were
/// applied: each for [`CLIENT_MESSAGE_MEMORY`], and at most [`RECENT_MESSAGES`] of them.
///
/// Stored compactly, because every step rewrites it: one base64 string of 12 bytes per id (the
/// 8-byte fingerprint and the second it was applied, big-endian), 16 characters where the JSON
/// pair took about 35. Records written as JSON pairs (or bare fingerprints) still load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecentMessages(VecDeque<Remembered>);

/// The packed time of an id remembered without one (by a runtime before times were kept).
const BARE: u32 = u32::MAX;

impl Serialize for RecentMessages {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        let mut bytes = Vec::with_capacity(self.0.len() * 12);
        for remembered in &self.0 {
            let (fingerprint, seconds) = match *remembered {
                // Rounded up: an id is never forgotten before its time.
                Remembered::Timed(f, at) => (f, at.as_millis().div_ceil(1000) as u32),
                // No time known: kept until pushed out by number, as before.
                Remembered::Bare(f) => (f, BARE),
            };
            bytes.extend_from_slice(&fingerprint.to_be_bytes());
            bytes.extend_from_slice(&seconds.to_be_bytes());
        }
        serializer.serialize_str(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes))
    }
}

impl<'de> Deserialize<'de> for RecentMessages {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use base64::Engine;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Stored {
            Packed(String),
            Pairs(VecDeque<Remembered>),
        }
        match Stored::deserialize(deserializer)? {
            Stored::Pairs(pairs) => Ok(Self(pairs)),
            Stored::Packed(text) => {
                let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(text.as_bytes())
                    .map_err(serde::de::Error::custom)?;
                if bytes.len() % 12 != 0 {
                    return Err(serde::de::Error::custom(
                        "applied ids are not 12 bytes each",
                    ));
                }
                Ok(Self(
                    bytes
                        .chunks_exact(12)
                        .map(|chunk| {
                            let mut f = [0u8; 8];
                            let mut s = [0u8; 4];
                            f.copy_from_slice(&chunk[..8]);
                            s.copy_from_slice(&chunk[8..]);
                            match u32::from_be_bytes(s) {
                                BARE => Remembered::Bare(u64::from_be_bytes(f)),
                                seconds => Remembered::Timed(
                                    u64::from_be_bytes(f),
                                    Timestamp::from_millis(u64::from(seconds) * 1000),
                                ),
                            }
                        })
                        .collect(),
                ))
            }
        }
    }
}

/// One remembered id: `[fingerprint, applied at]` (a bare fingerprint from an older runtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
enum Remembered {
    Timed(u64, Timestamp),
    Bare(u64),
}

impl Remembered {
    fn fingerprint(self) -> u64 {
        match self {
            Remembered::Timed(fingerprint, _) | Remembered::Bare(fingerprint) => fingerprint,
        }
    }
}

impl RecentMessages {
    pub fn contains(&self, id: &MessageId) -> bool {
        let fingerprint = id.fingerprint();
        self.0.iter().any(|r| r.fingerprint() == fingerprint)
    }

    /// Remembers `id`, applied at `now`, forgetting what is older than [`CLIENT_MESSAGE_MEMORY`]
    /// and, past [`RECENT_MESSAGES`] ids, the oldest.
    pub fn remember(&mut self, id: &MessageId, now: Timestamp) {
        let horizon = now
            .as_millis()
            .saturating_sub(CLIENT_MESSAGE_MEMORY.as_millis() as u64);
        self.0.retain(|r| match r {
            Remembered::Timed(_, at) => at.as_millis() >= horizon,
            Remembered::Bare(_) => true,
        });
        if self.0.len() >= RECENT_MESSAGES {
            self.0.pop_front();
        }
        self.0.push_back(Remembered::Timed(id.fingerprint(), now));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The signals applied from one sender, by sequence number, for one life of that sender's id
/// (`epoch`: its creation time; an id reused after its record expired starts a new life).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderSignals {
    pub epoch: u64,
    #[serde(flatten)]
    pub seqs: SeqSet,
}

/// A side effect a step decided on, kept in the outbox until it is sent. Each is idempotent where
/// it lands: messages carry deterministic ids, timers and requests are keyed by their ids.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    Send {
        envelope: Envelope,
    },
    ScheduleTimer {
        timer: TimerId,
        at: Timestamp,
        envelope: Envelope,
    },
    /// A timer that fires every `every_secs` from `first` on, until cancelled. Each firing's
    /// message id is the envelope's with the scheduled time appended.
    ScheduleRecurring {
        timer: TimerId,
        first: Timestamp,
        every_secs: u64,
        envelope: Envelope,
    },
    CancelTimer {
        timer: TimerId,
    },
    OpenRequest {
        request: UserRequest,
    },
    CloseRequest {
        request: RequestId,
        outcome: RequestOutcome,
    },
    /// Tells the world an instance finished (an event bus on AWS).
    Publish {
        event: LifecycleEvent,
    },
    /// Appends a transition to the instance's full history (keyed by instance and version).
    History {
        instance: InstanceId,
        entry: HistoryEntry,
    },
    /// An effect a newer runtime wrote (read by an older one after a rollback): not performed,
    /// rather than the record failing to load.
    #[serde(other)]
    Unknown,
}

/// An instance finished. Published at least once; `id` is the same on every copy, so consumers
/// can deduplicate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    /// `{instance}@{version}`.
    pub id: String,
    pub instance: InstanceId,
    pub atom: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<InstanceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The result was left out because the event would not fit on the bus; the instance record
    /// has it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub result_omitted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub at: Timestamp,
}

/// A question to the user, as the inbox stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserRequest {
    pub id: RequestId,
    pub instance: InstanceId,
    pub atom: String,
    pub kind: String,
    pub prompt: String,
    pub schema: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    pub created_at: Timestamp,
    /// Who is asked (an email address): told when the request opens, and the only person whose
    /// link opens it in the web inbox. Without one, only an operator's client answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub person: Option<String>,
}

/// Why a request left the inbox's open list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestOutcome {
    Answered,
    Expired,
    /// The instance finished or was cancelled before the request was answered.
    Withdrawn,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_effect_from_a_newer_runtime_loads_as_unknown() {
        let effect: Effect = serde_json::from_str(r#"{"effect": "teleport", "to": "mars"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(effect, Effect::Unknown);
    }

    #[test]
    fn seq_set_compacts_and_dedupes() {
        let mut s = SeqSet::default();
        assert!(s.insert(2));
        assert!(s.insert(0));
        assert!(!s.insert(2));
        assert!(!s.has_all_below(3));
        assert!(s.insert(1));
        assert_eq!((s.below, s.above.len()), (3, 0));
        assert!(s.has_all_below(3) && s.contains(1) && !s.contains(3));
    }

    #[test]
    fn recent_messages_are_bounded_in_number_and_time() {
        let mut r = RecentMessages::default();
        let ids: Vec<MessageId> = (0..=RECENT_MESSAGES)
            .map(|i| MessageId::new(format!("m{i}")).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let now = Timestamp(1_000_000_000_000);
        for id in &ids {
            r.remember(id, now);
        }
        assert_eq!(r.len(), RECENT_MESSAGES);
        assert!(
            !r.contains(&ids[0]),
            "past the number, the oldest id is forgotten"
        );
        assert!(r.contains(&ids[RECENT_MESSAGES]));
        let later = now
            .plus(CLIENT_MESSAGE_MEMORY)
            .plus(std::time::Duration::from_millis(1));
        let fresh = MessageId::new("fresh").unwrap_or_else(|e| panic!("{e}"));
        r.remember(&fresh, later);
        assert_eq!(r.len(), 1, "what SQS can no longer deliver is forgotten");
        // Records written by an older runtime hold bare fingerprints.
        let old: RecentMessages = serde_json::from_str("[1, [2, 3]]").unwrap_or_default();
        assert_eq!(old.len(), 2);
    }

    #[test]
    fn applied_ids_are_stored_packed_and_come_back() {
        let mut r = RecentMessages::default();
        let now = Timestamp(1_000_000_000_000);
        let ids: Vec<MessageId> = (0..100)
            .map(|i| MessageId::new(format!("client:signal:{i}")).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        for id in &ids {
            r.remember(id, now);
        }
        let stored = serde_json::to_string(&r).unwrap_or_default();
        assert_eq!(stored.len(), 2 + 1600, "16 characters an id: {stored}");
        let back: RecentMessages = serde_json::from_str(&stored).unwrap_or_default();
        assert_eq!(back, r);
        assert!(ids.iter().all(|id| back.contains(id)));
        // Pairs written before still load, and are forgotten on time.
        let pairs: RecentMessages = serde_json::from_str(&format!(
            "[[{}, {}]]",
            ids[0].fingerprint(),
            now.as_millis()
        ))
        .unwrap_or_default();
        assert!(pairs.contains(&ids[0]));
        // A bare fingerprint stays bare once packed: never forgotten by time.
        let bare: RecentMessages = serde_json::from_str("[7]").unwrap_or_default();
        let packed = serde_json::to_string(&bare).unwrap_or_default();
        assert_eq!(
            serde_json::from_str::<RecentMessages>(&packed).ok(),
            Some(bare)
        );
    }
}
