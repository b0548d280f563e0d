//! Warm memory: what one process knows between messages about the instances it stepped.

use crate::atom::TypedState;
use crate::ids::InstanceId;
use crate::record::InstanceRecord;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;

/// What this process knows about the latest version of an instance it handled: whether that
/// version's outbox went out, its state already decoded, and the record as this process wrote it.
/// A version is written once (every save is conditional), so this stays true of version `v` for
/// as long as it is kept. Losing it (eviction, a restart) only costs a read, a re-send
/// (deduplicated downstream) and a decode.
///
/// The record is what lets a warm step skip its read: the step is planned on it and saved on the
/// condition that `v` is still the stored version. It may be stale (another process wrote since);
/// then the save fails and returns the stored item, which is the read. A plan that would not save
/// (a drop, a deferral) is never trusted to a record that may be stale: it is read first.
#[derive(Default)]
pub(super) struct WarmState {
    pub outbox_sent: bool,
    pub decoded: Option<TypedState>,
    pub record: Option<WarmRecord>,
}

/// A record this process saved, with its stored size (what it costs to keep it in memory).
pub(super) struct WarmRecord {
    pub record: InstanceRecord,
    pub bytes: usize,
}

/// Bounded per-process memory of [`WarmState`], one entry per instance. The decoded state is taken
/// out while its instance is being stepped and put back, for the new version, afterwards.
#[derive(Default)]
pub(super) struct WarmInstances {
    inner: Mutex<WarmInner>,
}

#[derive(Default)]
struct WarmInner {
    /// id → (version, what is known, insertion number).
    entries: HashMap<InstanceId, (u64, WarmState, u64)>,
    /// Insertion order; an element is live only while its number matches the entry's.
    order: VecDeque<(u64, InstanceId)>,
    inserted: u64,
    /// The stored sizes of the records kept, summed (bounded by [`WarmInstances::RECORD_BYTES`]).
    record_bytes: usize,
}

impl WarmInner {
    fn remove(&mut self, id: &InstanceId) {
        if let Some((_, warm, _)) = self.entries.remove(id) {
            self.record_bytes -= warm.record.map_or(0, |r| r.bytes);
        }
    }
}

impl fmt::Debug for WarmInstances {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WarmInstances").finish_non_exhaustive()
    }
}

impl WarmInstances {
    const CAPACITY: usize = 4096;
    /// At most this many bytes of records are kept, by their stored size (a step function has
    /// 256 MB in all); the oldest entries go first.
    const RECORD_BYTES: usize = 32 << 20;

    fn lock(&self) -> std::sync::MutexGuard<'_, WarmInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What this process knows of version `version` of `id`. The decoded state is taken (one
    /// handler at a time may use it); whether the outbox went out stays known to the others, so
    /// concurrent handlers of one instance in this process do not send it again.
    pub fn take(&self, id: &InstanceId, version: u64) -> Option<WarmState> {
        match self.lock().entries.get_mut(id) {
            Some((v, warm, _)) if *v == version => Some(WarmState {
                outbox_sent: warm.outbox_sent,
                decoded: warm.decoded.take(),
                record: None,
            }),
            _ => None,
        }
    }

    /// Takes the record this process last saved for `id`, if it kept it: the rest of what it knows
    /// of that version stays, for [`WarmInstances::take`].
    pub fn take_record(&self, id: &InstanceId) -> Option<InstanceRecord> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let kept = inner.entries.get_mut(id)?.1.record.take()?;
        inner.record_bytes -= kept.bytes;
        Some(kept.record)
    }

    pub fn put(&self, id: &InstanceId, version: u64, mut warm: WarmState) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.inserted += 1;
        let number = inner.inserted;
        // A concurrent handler may already have put a newer version: keep the newer.
        if inner.entries.get(id).is_some_and(|(v, _, _)| *v > version) {
            return;
        }
        if warm
            .record
            .as_ref()
            .is_some_and(|r| r.bytes > Self::RECORD_BYTES / 8)
        {
            warm.record = None;
        }
        inner.remove(id);
        inner.record_bytes += warm.record.as_ref().map_or(0, |r| r.bytes);
        inner.entries.insert(id.clone(), (version, warm, number));
        inner.order.push_back((number, id.clone()));
        while inner.entries.len() > Self::CAPACITY || inner.record_bytes > Self::RECORD_BYTES {
            let Some((number, old)) = inner.order.pop_front() else {
                break;
            };
            if inner.entries.get(&old).is_some_and(|e| e.2 == number) {
                inner.remove(&old);
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

    pub fn clear(&self) {
        let mut guard = self.lock();
        guard.entries.clear();
        guard.order.clear();
        guard.record_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn kept(n: usize, bytes: usize) -> (InstanceId, WarmState) {
        let id = InstanceId::new(format!("i{n}")).unwrap_or_else(|e| panic!("{e}"));
        let record = InstanceRecord::fresh(id.clone(), "a".into(), None, Timestamp(0));
        let warm = WarmState {
            record: Some(WarmRecord { record, bytes }),
            ..WarmState::default()
        };
        (id, warm)
    }

    #[test]
    fn kept_records_stay_within_their_byte_budget_oldest_out_first() {
        let warm = WarmInstances::default();
        let size = WarmInstances::RECORD_BYTES / 10;
        for n in 0..25 {
            let (id, state) = kept(n, size);
            warm.put(&id, 1, state);
        }
        assert!(warm.lock().record_bytes <= WarmInstances::RECORD_BYTES);
        assert!(
            warm.take_record(&kept(0, 0).0).is_none(),
            "the oldest went first"
        );
        assert!(warm.take_record(&kept(24, 0).0).is_some());
        assert!(warm.take_record(&kept(24, 0).0).is_none(), "taken once");
        // One record larger than an eighth of the budget is not kept at all.
        let (id, state) = kept(99, WarmInstances::RECORD_BYTES / 4);
        warm.put(&id, 1, state);
        assert!(warm.take_record(&id).is_none());
    }
}
