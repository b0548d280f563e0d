//! The dispatcher: envelopes to each atom's SQS queue, lifecycle events to the EventBridge bus.

use crate::config::StackConfig;
use crate::counters::{RequestCounters, Service};
use crate::errors::classify;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};
use reanimate_core::envelope::MAX_MESSAGE_BYTES;
use reanimate_core::ports::Outgoing;
use reanimate_core::record::LifecycleEvent;
use reanimate_core::{Envelope, Error, Result, Status};
use std::sync::Arc;
use std::time::Duration;

/// SQS takes at most 10 messages and 256 KiB per batch.
const BATCH_MESSAGES: usize = 10;
const BATCH_BYTES: usize = 250_000;
/// EventBridge takes at most 10 entries and 256 KiB per PutEvents.
const EVENTS_PER_CALL: usize = 10;
const EVENTS_BYTES: usize = 250_000;
/// SQS's longest message delay.
pub const MAX_QUEUE_DELAY_SECS: u64 = 900;

/// A queue delay in SQS's whole seconds, rounded up: a message never becomes visible before the
/// time it was delayed to (a timer never fires early), at most [`MAX_QUEUE_DELAY_SECS`].
pub fn queue_delay_seconds(delay: Duration) -> i32 {
    let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    millis.div_ceil(1000).min(MAX_QUEUE_DELAY_SECS) as i32
}

#[derive(Clone, Debug)]
pub struct AwsDispatcher {
    sqs: aws_sdk_sqs::Client,
    events: aws_sdk_eventbridge::Client,
    config: Arc<StackConfig>,
    counters: RequestCounters,
}

fn attribute(value: &str) -> Result<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| Error::terminal(format!("message attribute: {e}")))
}

/// A queue entry for `envelope`, with attributes that make a dead letter readable without decoding.
pub(crate) fn entry(
    id: usize,
    envelope: &Envelope,
    delay: Duration,
) -> Result<(SendMessageBatchRequestEntry, usize)> {
    let body = envelope.to_json();
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(Error::terminal(format!(
            "{} message to {} is {} bytes, over the {MAX_MESSAGE_BYTES}-byte limit",
            envelope.event.kind(),
            envelope.target,
            body.len()
        )));
    }
    let len = body.len();
    let entry = SendMessageBatchRequestEntry::builder()
        .id(id.to_string())
        .message_body(body)
        .delay_seconds(queue_delay_seconds(delay))
        .message_attributes("atom", attribute(&envelope.atom)?)
        .message_attributes("event", attribute(envelope.event.kind())?)
        .message_attributes("instance", attribute(envelope.target.as_str())?)
        .build()
        .map_err(|e| Error::terminal(format!("SQS entry: {e}")))?;
    Ok((entry, len))
}

impl AwsDispatcher {
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        events: aws_sdk_eventbridge::Client,
        config: Arc<StackConfig>,
        counters: RequestCounters,
    ) -> Self {
        Self {
            sqs,
            events,
            config,
            counters,
        }
    }

    /// Sends one batch (≤ 10 entries, ≤ 256 KiB) to one queue; entries SQS refuses are retried
    /// once, then the whole send is reported retryable (re-sending is deduplicated downstream).
    async fn send_batch(
        &self,
        url: &str,
        entries: Vec<SendMessageBatchRequestEntry>,
    ) -> Result<()> {
        let mut pending = entries;
        for attempt in 0..2 {
            self.counters.count(Service::Sqs, "SendMessageBatch");
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(url)
                .set_entries(Some(pending.clone()))
                .send()
                .await
                .map_err(|e| classify("SQS SendMessageBatch", e))?;
            let failed = out.failed();
            if failed.is_empty() {
                return Ok(());
            }
            if let Some(fault) = failed.iter().find(|f| f.sender_fault) {
                return Err(Error::terminal(format!(
                    "SQS refused a message: {}: {}",
                    fault.code,
                    fault.message.as_deref().unwrap_or("")
                )));
            }
            if attempt == 1 {
                return Err(Error::retryable(format!(
                    "SQS failed {} of the messages to {url}",
                    failed.len()
                )));
            }
            let ids: Vec<&str> = failed.iter().map(|f| f.id.as_str()).collect();
            pending.retain(|e| ids.contains(&e.id.as_str()));
        }
        Ok(())
    }
}

impl reanimate_core::ports::Dispatcher for AwsDispatcher {
    async fn send(&self, batch: Vec<Outgoing>) -> Result<()> {
        // Group by queue, then cut each group into SQS batches.
        let mut by_queue: Vec<(String, Vec<(SendMessageBatchRequestEntry, usize)>)> = Vec::new();
        for (i, Outgoing { envelope, delay }) in batch.iter().enumerate() {
            let url = &self.config.route(&envelope.atom)?.url;
            let entry = entry(i, envelope, *delay)?;
            match by_queue.iter_mut().find(|(u, _)| u == url) {
                Some((_, entries)) => entries.push(entry),
                None => by_queue.push((url.clone(), vec![entry])),
            }
        }
        for (url, entries) in by_queue {
            let mut chunk = Vec::new();
            let mut bytes = 0;
            for (entry, len) in entries {
                if chunk.len() == BATCH_MESSAGES || (bytes + len > BATCH_BYTES && !chunk.is_empty())
                {
                    self.send_batch(&url, std::mem::take(&mut chunk)).await?;
                    bytes = 0;
                }
                bytes += len;
                chunk.push(entry);
            }
            if !chunk.is_empty() {
                self.send_batch(&url, chunk).await?;
            }
        }
        Ok(())
    }

    async fn publish(&self, events: Vec<LifecycleEvent>) -> Result<()> {
        let entries: Vec<(PutEventsRequestEntry, usize)> = events
            .iter()
            .map(|event| {
                let detail_type = match event.status {
                    Status::Completed => "Instance Completed",
                    Status::Failed => "Instance Failed",
                    Status::Cancelled => "Instance Cancelled",
                    _ => "Instance Changed",
                };
                let detail = serde_json::to_string(event).unwrap_or_default();
                // EventBridge sizes an entry by its detail, type, source and resources.
                let size = detail.len() + detail_type.len() + 64 + event.instance.as_str().len();
                let entry = PutEventsRequestEntry::builder()
                    .event_bus_name(&self.config.event_bus)
                    .source("reanimate")
                    .detail_type(detail_type)
                    .resources(event.instance.as_str())
                    .detail(detail)
                    .build();
                (entry, size)
            })
            .collect();
        let mut chunk = Vec::new();
        let mut bytes = 0;
        let mut entries = entries.into_iter().peekable();
        while let Some((entry, size)) = entries.next() {
            bytes += size;
            chunk.push(entry);
            let full = chunk.len() == EVENTS_PER_CALL
                || entries
                    .peek()
                    .is_some_and(|(_, next)| bytes + next > EVENTS_BYTES);
            if full || entries.peek().is_none() {
                self.put_events(std::mem::take(&mut chunk)).await?;
                bytes = 0;
            }
        }
        Ok(())
    }
}

impl AwsDispatcher {
    async fn put_events(&self, entries: Vec<PutEventsRequestEntry>) -> Result<()> {
        let count = entries.len();
        self.counters.count(Service::EventBridge, "PutEvents");
        let out = self
            .events
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| classify("EventBridge PutEvents", e))?;
        if out.failed_entry_count > 0 {
            return Err(Error::retryable(format!(
                "EventBridge failed {} of {count} lifecycle events",
                out.failed_entry_count
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_delays_round_up_to_whole_seconds() {
        let secs = |ms| queue_delay_seconds(Duration::from_millis(ms));
        assert_eq!(secs(0), 0);
        assert_eq!(secs(1), 1, "a millisecond's delay is a second, never none");
        assert_eq!(secs(1_500), 2);
        assert_eq!(secs(2_000), 2);
        assert_eq!(secs(10_000_000), 900, "SQS's maximum");
    }
}
