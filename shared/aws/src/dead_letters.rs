//! The stack's dead-letter queues, for operators: what is in them, why, and sending it back.
//!
//! A message lands in its atom's dead-letter queue when the handler refused it (a terminal
//! error; the reason is the `reanimate-error` attribute) or when SQS gave up after the queue's
//! `maxReceiveCount` receives. Redriving sends each message back to its atom's queue and only then
//! deletes it from the dead-letter queue; a message sent back twice (a redrive interrupted and
//! repeated) is applied once, as any duplicate is (see ARCHITECTURE.md), so a redrive is safe to
//! repeat.

use crate::counters::{RequestCounters, Service};
use crate::errors::classify;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use reanimate_core::{Error, Result, Timestamp};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// The attributes a redriven message keeps (the ones the dispatcher sets, for reading a queue
/// without decoding bodies); the dead-letter bookkeeping is left behind.
const KEPT_ATTRIBUTES: [&str; 3] = ["atom", "event", "instance"];

/// One atom's queue and its dead-letter queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AtomQueues {
    pub atom: String,
    pub queue_url: String,
    pub dead_letter_url: String,
}

/// A message in a dead-letter queue.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeadLetter {
    pub atom: String,
    pub message_id: String,
    /// Why the handler refused it, if it did (else SQS moved it after too many receives).
    pub reason: Option<String>,
    /// How many times it was received, here and before (SQS's count).
    pub receive_count: u32,
    pub sent_at: Option<Timestamp>,
    pub body: String,
}

/// What a redrive did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Redriven {
    /// Messages sent back, by atom.
    pub sent: BTreeMap<String, usize>,
}

/// A dead letter's body as it goes back: an envelope starts again with no deferrals (it may have
/// used them all up under contention); anything else goes back as it was.
fn fresh_body(body: &str) -> String {
    match reanimate_core::Envelope::from_json(body) {
        Ok(mut envelope) if envelope.deferrals > 0 => {
            envelope.deferrals = 0;
            envelope.to_json()
        }
        _ => body.to_string(),
    }
}

/// The `atom` of an output prefix: `BulkEmailAnalysis` → `bulk-email-analysis` (the inverse of
/// [`crate::config::output_name`]).
pub fn atom_of(prefix: &str) -> String {
    let mut atom = String::new();
    for (i, c) in prefix.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                atom.push('-');
            }
            atom.push(c.to_ascii_lowercase());
        } else {
            atom.push(c);
        }
    }
    atom
}

/// Every atom's queues, from the stack outputs (`{Name}QueueUrl`, `{Name}DeadLettersUrl`).
pub fn queues(outputs: &HashMap<String, String>) -> Vec<AtomQueues> {
    let mut found: Vec<AtomQueues> = outputs
        .iter()
        .filter_map(|(key, dead_letter_url)| {
            let prefix = key.strip_suffix("DeadLettersUrl")?;
            Some(AtomQueues {
                atom: atom_of(prefix),
                queue_url: outputs.get(&format!("{prefix}QueueUrl"))?.clone(),
                dead_letter_url: dead_letter_url.clone(),
            })
        })
        .collect();
    found.sort_by(|a, b| a.atom.cmp(&b.atom));
    found
}

/// The URL of the dead-letter queue `queue_url`'s redrive policy names, if it has one. The URL is
/// the queue's own with its last segment (the name) replaced: queues of one stack share an
/// endpoint, account and path style.
pub async fn dead_letter_queue_of(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<Option<String>> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .map_err(|e| classify("SQS GetQueueAttributes (redrive policy)", e))?;
    let Some(policy) = out
        .attributes
        .and_then(|mut a| a.remove(&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy))
    else {
        return Ok(None);
    };
    let policy: serde_json::Value = serde_json::from_str(&policy)
        .map_err(|e| Error::terminal(format!("{queue_url}: redrive policy is not JSON: {e}")))?;
    let name = policy
        .get("deadLetterTargetArn")
        .and_then(serde_json::Value::as_str)
        .and_then(|arn| arn.rsplit(':').next());
    Ok(name.and_then(|name| {
        queue_url
            .rsplit_once('/')
            .map(|(base, _)| format!("{base}/{name}"))
    }))
}

/// The dead-letter queues of a deployed stack.
#[derive(Clone, Debug)]
pub struct DeadLetterQueues {
    sqs: aws_sdk_sqs::Client,
    queues: Vec<AtomQueues>,
    counters: RequestCounters,
}

impl DeadLetterQueues {
    pub fn new(
        sqs: aws_sdk_sqs::Client,
        queues: Vec<AtomQueues>,
        counters: RequestCounters,
    ) -> Self {
        Self {
            sqs,
            queues,
            counters,
        }
    }

    pub fn queues(&self) -> &[AtomQueues] {
        &self.queues
    }

    fn selected<'a>(&'a self, atom: Option<&'a str>) -> impl Iterator<Item = &'a AtomQueues> {
        self.queues
            .iter()
            .filter(move |q| atom.is_none_or(|a| a == q.atom))
    }

    /// How many messages each selected dead-letter queue holds (SQS's approximate count).
    pub async fn counts(&self, atom: Option<&str>) -> Result<BTreeMap<String, u64>> {
        let mut counts = BTreeMap::new();
        for queue in self.selected(atom) {
            self.counters.count(Service::Sqs, "GetQueueAttributes");
            let out = self
                .sqs
                .get_queue_attributes()
                .queue_url(&queue.dead_letter_url)
                .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
                .send()
                .await
                .map_err(|e| classify("SQS GetQueueAttributes", e))?;
            let count = out
                .attributes()
                .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            counts.insert(queue.atom.clone(), count);
        }
        Ok(counts)
    }

    /// Up to `limit` messages of the selected dead-letter queues, without taking them (each is
    /// received with a zero visibility timeout).
    pub async fn peek(&self, atom: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
        let mut found: Vec<DeadLetter> = Vec::new();
        for queue in self.selected(atom) {
            // Long polls sample every SQS server; a few rounds find what a queue holds.
            for _ in 0..5 {
                if found.len() >= limit {
                    return Ok(found);
                }
                let received = self.receive(queue, 0).await?;
                let before = found.len();
                for (letter, _) in received {
                    if !found.iter().any(|f| f.message_id == letter.message_id) {
                        found.push(letter);
                    }
                }
                if found.len() == before {
                    break;
                }
            }
        }
        found.truncate(limit);
        Ok(found)
    }

    /// Sends the selected dead letters (all, or the one with `only` as message id) back to their
    /// atom's queue, deleting each from the dead-letter queue once it is sent. Only what was there
    /// when the redrive began is sent: a message refused again lands back as a new dead letter,
    /// which waits for the next redrive. That is told by SQS's sent time and, since the operator's
    /// clock may be ahead of SQS's, by the body: one body is sent back once per redrive.
    pub async fn redrive(&self, atom: Option<&str>, only: Option<&str>) -> Result<Redriven> {
        let began = Timestamp::now_utc();
        let mut sent_bodies = std::collections::HashSet::new();
        let mut report = Redriven::default();
        for queue in self.selected(atom) {
            let mut empty_rounds = 0;
            while empty_rounds < 2 {
                // Hidden while it is moved, so a concurrent redrive does not move it too.
                let received = self.receive(queue, 60).await?;
                if received.is_empty() {
                    empty_rounds += 1;
                    continue;
                }
                let mut moved = 0;
                for (letter, (receipt, attributes)) in received {
                    let body = fresh_body(&letter.body);
                    let arrived_since =
                        letter.sent_at.is_some_and(|at| at >= began) || sent_bodies.contains(&body);
                    if arrived_since || only.is_some_and(|id| id != letter.message_id) {
                        self.release(queue, &receipt).await?;
                        continue;
                    }
                    self.send_back(queue, &body, attributes).await?;
                    sent_bodies.insert(body);
                    self.counters.count(Service::Sqs, "DeleteMessage");
                    self.sqs
                        .delete_message()
                        .queue_url(&queue.dead_letter_url)
                        .receipt_handle(receipt)
                        .send()
                        .await
                        .map_err(|e| classify("SQS DeleteMessage (dead letter)", e))?;
                    *report.sent.entry(queue.atom.clone()).or_default() += 1;
                    moved += 1;
                }
                if moved == 0 {
                    empty_rounds += 1;
                }
            }
        }
        Ok(report)
    }

    async fn send_back(
        &self,
        queue: &AtomQueues,
        body: &str,
        attributes: HashMap<String, MessageAttributeValue>,
    ) -> Result<()> {
        let kept = attributes
            .into_iter()
            .filter(|(name, _)| KEPT_ATTRIBUTES.contains(&name.as_str()))
            .collect();
        self.counters.count(Service::Sqs, "SendMessage");
        self.sqs
            .send_message()
            .queue_url(&queue.queue_url)
            .message_body(body)
            .set_message_attributes(Some(kept))
            .send()
            .await
            .map_err(|e| classify("SQS SendMessage (redrive)", e))?;
        Ok(())
    }

    async fn release(&self, queue: &AtomQueues, receipt: &str) -> Result<()> {
        self.counters.count(Service::Sqs, "ChangeMessageVisibility");
        self.sqs
            .change_message_visibility()
            .queue_url(&queue.dead_letter_url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
            .map_err(|e| classify("SQS ChangeMessageVisibility", e))?;
        Ok(())
    }

    /// One receive of up to 10 messages, hidden for `visibility` seconds: each as a dead letter,
    /// with its receipt handle and message attributes.
    async fn receive(
        &self,
        queue: &AtomQueues,
        visibility: i32,
    ) -> Result<Vec<(DeadLetter, (String, HashMap<String, MessageAttributeValue>))>> {
        self.counters.count(Service::Sqs, "ReceiveMessage");
        let out = self
            .sqs
            .receive_message()
            .queue_url(&queue.dead_letter_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .visibility_timeout(visibility)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| classify("SQS ReceiveMessage (dead letters)", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let system = m.attributes.clone().unwrap_or_default();
                let number = |name: MessageSystemAttributeName| {
                    system.get(&name).and_then(|v| v.parse::<u64>().ok())
                };
                let attributes = m.message_attributes.clone().unwrap_or_default();
                let letter = DeadLetter {
                    atom: queue.atom.clone(),
                    message_id: m.message_id.clone().unwrap_or_default(),
                    reason: attributes
                        .get("reanimate-error")
                        .and_then(|v| v.string_value.clone()),
                    receive_count: number(MessageSystemAttributeName::ApproximateReceiveCount)
                        .unwrap_or(0) as u32,
                    sent_at: number(MessageSystemAttributeName::SentTimestamp)
                        .map(Timestamp::from_millis),
                    body: m.body.clone().unwrap_or_default(),
                };
                (letter, (m.receipt_handle.unwrap_or_default(), attributes))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redriven_envelope_starts_again_with_no_deferrals() {
        let body = r#"{"schema":1,"id":"m","target":"t","atom":"a","event":{"kind":"signal","name":"n"},"deferrals":30}"#;
        let fresh = fresh_body(body);
        assert!(!fresh.contains("deferrals"), "{fresh}");
        assert_eq!(fresh_body("not json"), "not json");
    }

    #[test]
    fn atoms_are_found_from_the_stack_outputs() {
        assert_eq!(atom_of("BulkEmailAnalysis"), "bulk-email-analysis");
        assert_eq!(atom_of("Countdown"), "countdown");
        for atom in ["fan-out", "email-assistant", "write-digest"] {
            assert_eq!(atom_of(&crate::config::output_name(atom)), atom);
        }
        let outputs: HashMap<String, String> = [
            ("FanOutQueueUrl", "q1"),
            ("FanOutDeadLettersUrl", "d1"),
            ("WorkerQueueUrl", "q2"),
            ("WorkerDeadLettersUrl", "d2"),
            ("InstancesTable", "t"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let found = queues(&outputs);
        assert_eq!(
            found.iter().map(|q| q.atom.as_str()).collect::<Vec<_>>(),
            ["fan-out", "worker"]
        );
        assert_eq!(found[0].dead_letter_url, "d1");
    }
}
