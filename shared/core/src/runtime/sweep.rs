//! The sweeper: sends the outboxes that could not be sent when their step was saved.
//!
//! A handler whose sends fail after its save (a throttled or refused send, a missing queue after a
//! redeploy, an outage) marks the record (`InstanceStore::mark_outbox_pending`) and lets its
//! message go: the record, not the message, now holds the work. The sweeper runs on a schedule
//! (every minute on AWS), finds marked records, sends their outboxes and clears the mark. A record
//! that moved on meanwhile needs nothing: whoever saved its successor carried the outbox over.
//! Sending twice is harmless (see [`super::effects`]).

use super::Runtime;
use crate::error::Result;
use crate::ids::InstanceId;
use crate::ports::{Clock, Dispatcher, Inbox, InstanceStore, TimerService};
use crate::time::Timestamp;
use std::time::Duration;

/// How long an outbox the sweeper could not send waits before it is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(300);

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    /// Marked records found.
    pub found: usize,
    /// Outboxes sent and cleared.
    pub flushed: usize,
    /// Records that had moved on (their successor carried the outbox).
    pub moved_on: usize,
    /// Outboxes that still could not be sent, with the reason; they stay marked.
    pub failed: Vec<(InstanceId, String)>,
}

impl<S, D, T, I, C> Runtime<S, D, T, I, C>
where
    S: InstanceStore,
    D: Dispatcher,
    T: TimerService,
    I: Inbox,
    C: Clock,
{
    /// Sends the outboxes marked at least `grace` ago, at most `limit` of them.
    pub async fn sweep(&self, grace: Duration, limit: usize) -> Result<SweepReport> {
        let before = Timestamp::from_millis(
            self.clock
                .now()
                .as_millis()
                .saturating_sub(grace.as_millis() as u64),
        );
        let mut report = SweepReport::default();
        for (id, version) in self.store.pending_outboxes(before, limit).await? {
            report.found += 1;
            let record = match self.store.load(&id).await? {
                Some(record) if record.version == version => record,
                _ => {
                    report.moved_on += 1;
                    continue;
                }
            };
            match self.perform(record.outbox).await {
                Ok(()) => {
                    if self.store.clear_outbox(&id, version).await? {
                        report.flushed += 1;
                    } else {
                        report.moved_on += 1;
                    }
                    tracing::info!(%id, version, "sweeper sent an outbox");
                }
                Err(error) => {
                    // Tried again later, behind the others: an outbox that keeps failing (a
                    // queue gone for good) must not hold up the ones behind it.
                    let later = self.clock.now().plus(RETRY_AFTER);
                    self.store.mark_outbox_pending(&id, version, later).await?;
                    tracing::error!(%id, version, reason = %error.reason, "sweeper could not send an outbox; it stays marked");
                    report.failed.push((id, error.reason));
                }
            }
        }
        Ok(report)
    }
}
