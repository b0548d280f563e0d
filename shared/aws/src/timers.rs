//! Timers: due within `max_queue_delay` (≤ 900 s) → an SQS message with `DelaySeconds`; later →
//! a one-time EventBridge Scheduler schedule `at(...)` that sends the envelope to the atom's queue
//! and deletes itself. Schedules are named after the timer id, so scheduling twice is harmless.

use crate::config::StackConfig;
use crate::counters::{RequestCounters, Service};
use crate::errors::{classify, tolerate};
use crate::messaging::entry;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, Target,
};
use reanimate_core::ids::{FNV_OFFSET_BASIS, fnv1a};
use reanimate_core::ports::Clock;
use reanimate_core::{Envelope, Error, Event, MessageId, Result, TimerId, Timestamp};
use std::sync::Arc;

/// A schedule name for a timer: Scheduler allows 64 characters of `[0-9a-zA-Z-_.]`, timer ids
/// are longer and freer, so the name is a 128-bit hash of the id.
pub fn schedule_name(timer: &TimerId) -> String {
    let bytes = timer.as_str().as_bytes();
    format!(
        "t-{:016x}{:016x}",
        fnv1a(FNV_OFFSET_BASIS, bytes),
        fnv1a(FNV_OFFSET_BASIS.rotate_left(32), bytes)
    )
}

/// Scheduler allows descriptions of 512 characters; a timer id may be longer.
pub const MAX_DESCRIPTION_CHARS: usize = 512;

/// The schedule's description: the timer id, cut to Scheduler's limit.
pub fn schedule_description(timer: &TimerId) -> String {
    format!("reanimate timer {timer}")
        .chars()
        .take(MAX_DESCRIPTION_CHARS)
        .collect()
}

/// `at(yyyy-mm-ddThh:mm:ss)` in UTC, rounded up to the next second.
pub fn at_expression(at: Timestamp) -> String {
    let rounded = Timestamp::from_millis(at.as_millis().div_ceil(1000) * 1000);
    let text = rounded.to_string(); // 2026-11-26T07:00:00.000Z
    format!("at({})", &text[..19])
}

/// Scheduler's context attribute for a firing's scheduled time, replaced in the target input.
pub const SCHEDULED_TIME: &str = "<aws.scheduler.scheduled-time>";

/// `rate(n unit)` for a whole number of minutes, in the largest unit that divides it.
pub fn rate_expression(every: std::time::Duration) -> Result<String> {
    let secs = every.as_secs();
    if secs < 60 || !secs.is_multiple_of(60) {
        return Err(Error::terminal(format!(
            "a recurring period must be whole minutes, got {every:?}"
        )));
    }
    let (n, unit) = if secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else {
        (secs / 60, "minute")
    };
    Ok(format!("rate({n} {unit}{})", if n == 1 { "" } else { "s" }))
}

#[derive(Clone, Debug)]
pub struct AwsTimers<C> {
    sqs: aws_sdk_sqs::Client,
    scheduler: aws_sdk_scheduler::Client,
    config: Arc<StackConfig>,
    counters: RequestCounters,
    clock: C,
}

impl<C: Clock> AwsTimers<C> {
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        scheduler: aws_sdk_scheduler::Client,
        config: Arc<StackConfig>,
        counters: RequestCounters,
        clock: C,
    ) -> Self {
        Self {
            sqs,
            scheduler,
            config,
            counters,
            clock,
        }
    }
}

impl<C: Clock> AwsTimers<C> {
    /// Creates the timer's schedule, sending `envelope` to the atom's queue. A conflict is this
    /// timer's schedule, made by an earlier send of the same outbox.
    async fn create_schedule(
        &self,
        timer: &TimerId,
        queue_arn: &str,
        expression: String,
        envelope: &Envelope,
        after_completion: Option<ActionAfterCompletion>,
    ) -> Result<()> {
        let target = Target::builder()
            .arn(queue_arn)
            .role_arn(&self.config.scheduler_role_arn)
            .input(envelope.to_json())
            .build()
            .map_err(|e| Error::terminal(format!("schedule target: {e}")))?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| Error::terminal(format!("schedule window: {e}")))?;
        self.counters.count(Service::Scheduler, "CreateSchedule");
        let result = self
            .scheduler
            .create_schedule()
            .name(schedule_name(timer))
            .group_name(&self.config.schedule_group)
            .schedule_expression(expression)
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .target(target)
            .set_action_after_completion(after_completion)
            .description(schedule_description(timer))
            .send()
            .await;
        tolerate("Scheduler CreateSchedule", result, |e| {
            e.is_conflict_exception()
        })
        .map(|_| ())
    }
}

impl<C: Clock> reanimate_core::ports::TimerService for AwsTimers<C> {
    async fn schedule(&self, timer: &TimerId, at: Timestamp, envelope: Envelope) -> Result<()> {
        let route = self.config.route(&envelope.atom)?;
        let delay = self.clock.now().until(at);
        // Compared in the whole seconds a queue delay is rounded up to.
        let rounded = std::time::Duration::from_secs(delay.as_millis().div_ceil(1000) as u64);
        if rounded <= self.config.max_queue_delay {
            let (entry, _) = entry(0, &envelope, delay)?;
            self.counters.count(Service::Sqs, "SendMessage");
            self.sqs
                .send_message()
                .queue_url(&route.url)
                .message_body(entry.message_body)
                .delay_seconds(entry.delay_seconds.unwrap_or(0))
                .set_message_attributes(entry.message_attributes)
                .send()
                .await
                .map_err(|e| classify("SQS SendMessage (timer)", e))?;
            return Ok(());
        }
        // A one-time schedule that deletes itself once it has fired.
        self.create_schedule(
            timer,
            &route.arn,
            at_expression(at),
            &envelope,
            Some(ActionAfterCompletion::Delete),
        )
        .await
    }

    async fn schedule_recurring(
        &self,
        timer: &TimerId,
        _first: Timestamp,
        every: std::time::Duration,
        mut envelope: Envelope,
    ) -> Result<()> {
        let route = self.config.route(&envelope.atom)?;
        // Scheduler fills in each firing's time, so every firing is a message of its own, and
        // the runtime applies a firing only if it is later than the last one.
        envelope.id = MessageId::for_recurring_firing(timer, SCHEDULED_TIME);
        if let Event::TimerFired { fired_for, .. } = &mut envelope.event {
            *fired_for = Some(SCHEDULED_TIME.to_string());
        }
        // A rate schedule's first firing is one period after its creation: `first`, give or
        // take the time the outbox took to go out.
        self.create_schedule(timer, &route.arn, rate_expression(every)?, &envelope, None)
            .await
    }

    async fn cancel(&self, timer: &TimerId) -> Result<()> {
        // A queue-delayed timer cannot be withdrawn; its late firing is ignored by the runtime.
        // Deleting a schedule that does not exist is the common, harmless case.
        self.counters.count(Service::Scheduler, "DeleteSchedule");
        let result = self
            .scheduler
            .delete_schedule()
            .name(schedule_name(timer))
            .group_name(&self.config.schedule_group)
            .send()
            .await;
        tolerate("Scheduler DeleteSchedule", result, |e| {
            e.is_resource_not_found_exception()
        })
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_names_fit_schedulers_rules() {
        let timer = TimerId::new("email-assistant/3.1@7.2 with spaces and ünïcode".repeat(5))
            .unwrap_or_else(|e| panic!("{e}"));
        let name = schedule_name(&timer);
        assert!(name.len() <= 64);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{name}"
        );
        let other = TimerId::new("email-assistant/3.1@7.3").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(name, schedule_name(&other));
    }

    #[test]
    fn descriptions_fit_schedulers_limit_for_the_longest_ids() {
        let long = TimerId::new("é".repeat(reanimate_core::ids::MAX_ID_BYTES / 2))
            .unwrap_or_else(|e| panic!("{e}"));
        let description = schedule_description(&long);
        assert_eq!(description.chars().count(), MAX_DESCRIPTION_CHARS);
        let short = TimerId::new("t@1.0").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(schedule_description(&short), "reanimate timer t@1.0");
    }

    #[test]
    fn rate_expressions_use_the_largest_whole_unit() {
        let rate = |secs| rate_expression(std::time::Duration::from_secs(secs));
        assert_eq!(rate(60).ok().as_deref(), Some("rate(1 minute)"));
        assert_eq!(rate(90 * 60).ok().as_deref(), Some("rate(90 minutes)"));
        assert_eq!(rate(3600).ok().as_deref(), Some("rate(1 hour)"));
        assert_eq!(rate(7 * 86_400).ok().as_deref(), Some("rate(7 days)"));
        assert!(rate(30).is_err() && rate(61).is_err());
    }

    #[test]
    fn at_expressions_are_utc_seconds_rounded_up() {
        assert_eq!(
            at_expression(Timestamp::from_millis(1_795_676_400_000)),
            "at(2026-11-26T07:00:00)"
        );
        assert_eq!(
            at_expression(Timestamp::from_millis(1_795_676_400_001)),
            "at(2026-11-26T07:00:01)"
        );
    }
}
