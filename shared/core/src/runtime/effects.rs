//! Sending what a step decided. Every effect is idempotent where it lands (messages carry
//! deterministic ids and every event kind has a guard in its receiver; timers, requests and
//! closings are keyed by their ids), so sending an outbox twice is harmless.

use super::Runtime;
use crate::error::Result;
use crate::event::Event;
use crate::ports::{Clock, Dispatcher, Inbox, InstanceStore, Outgoing, TimerService};
use crate::record::Effect;
use std::time::Duration;

impl<S, D, T, I, C> Runtime<S, D, T, I, C>
where
    S: InstanceStore,
    D: Dispatcher,
    T: TimerService,
    I: Inbox,
    C: Clock,
{
    /// Performs effects. Each is idempotent where it lands, so performing them twice is harmless.
    pub(super) async fn perform(&self, effects: Vec<Effect>) -> Result<()> {
        let now = self.clock.now();
        let mut batch = Vec::new();
        let mut afterwards = Vec::new();
        let mut history = Vec::new();
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
                Effect::History { instance, entry } => history.push((instance, entry)),
                Effect::Unknown => {
                    tracing::warn!("an effect this runtime does not know was not sent")
                }
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
        // Last: nothing waits on the history, so it never delays a message or a timer.
        if !history.is_empty() {
            self.store.append_history(history).await?;
        }
        Ok(())
    }
}

/// One line per distinct effect, repeats counted ("3× send child_progress to p").
pub(super) fn describe_effects(effects: &[Effect]) -> Vec<String> {
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
        Effect::History { entry, .. } => format!("history v{}", entry.version),
        Effect::Unknown => "an unknown effect".into(),
    }
}
