//! The full history of every instance, in its own table keyed by instance and version. Each
//! step's entry leaves in the outbox (written after the step's one conditional write, and again
//! by whoever re-sends an unsent outbox), so the record every step rewrites does not grow with
//! the history and an entry is as durable as the step that made it.
//!
//! An entry costs one write capacity unit (entries are far below 1 KB) in a `BatchWriteItem` of
//! up to 25, once per outbox sent.

use crate::counters::{RequestCounters, Service};
use crate::errors::classify;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use reanimate_core::record::HistoryEntry;
use reanimate_core::{Error, InstanceId, Result, Timestamp};
use std::collections::HashMap;
use std::time::Duration;

type Item = HashMap<String, AttributeValue>;

/// DynamoDB takes at most 25 writes per `BatchWriteItem`.
const BATCH: usize = 25;
/// Unprocessed writes (throttling) are tried again this many times before the outbox is left
/// for the next sender.
const ATTEMPTS: u32 = 5;
/// How long an entry is kept after it was written (DynamoDB's TTL removes it).
pub const HISTORY_RETENTION: Duration = Duration::from_secs(365 * 86_400);

fn item(instance: &InstanceId, entry: &HistoryEntry) -> Item {
    let expires = entry.at.plus(HISTORY_RETENTION).as_millis() / 1000;
    let mut item = Item::from([
        ("instance".into(), AttributeValue::S(instance.to_string())),
        (
            "version".into(),
            AttributeValue::N(entry.version.to_string()),
        ),
        (
            "at".into(),
            AttributeValue::N(entry.at.as_millis().to_string()),
        ),
        ("event".into(), AttributeValue::S(entry.event.clone())),
        (
            "status".into(),
            AttributeValue::S(entry.status.as_str().into()),
        ),
        (
            "effects".into(),
            AttributeValue::N(entry.effects.to_string()),
        ),
        ("expires_at".into(), AttributeValue::N(expires.to_string())),
    ]);
    if !entry.detail.is_empty() {
        item.insert("detail".into(), AttributeValue::S(entry.detail.clone()));
    }
    item
}

fn entry(item: &Item) -> Result<HistoryEntry> {
    let text = |name: &str| match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v.clone()),
        None if name == "detail" => Ok(String::new()),
        _ => Err(Error::terminal(format!(
            "history item has no string attribute {name:?}"
        ))),
    };
    let number = |name: &str| match item.get(name) {
        Some(AttributeValue::N(v)) => v
            .parse::<u64>()
            .map_err(|_| Error::terminal(format!("history attribute {name:?} is not a number"))),
        _ => Err(Error::terminal(format!(
            "history item has no number attribute {name:?}"
        ))),
    };
    Ok(HistoryEntry {
        version: number("version")?,
        at: Timestamp::from_millis(number("at")?),
        event: text("event")?,
        detail: text("detail")?,
        status: crate::dynamo::parse_status(&text("status")?)?,
        effects: u32::try_from(number("effects")?).unwrap_or(u32::MAX),
    })
}

/// Writes `entries` (any instances) to `table`, 25 to a request; writing one twice keeps one.
pub(crate) async fn append(
    client: &Client,
    table: &str,
    counters: &RequestCounters,
    entries: Vec<(InstanceId, HistoryEntry)>,
) -> Result<()> {
    // One request per key in a batch: DynamoDB refuses a batch that writes one key twice.
    let mut unique: HashMap<(String, u64), Item> = HashMap::new();
    for (instance, entry) in &entries {
        unique.insert((instance.to_string(), entry.version), item(instance, entry));
    }
    let units = unique
        .values()
        .map(|i| crate::dynamo::write_units(crate::dynamo::item_size(i)))
        .sum();
    counters.add_units("write units (history)", units);
    let writes: Vec<WriteRequest> = unique
        .into_values()
        .map(|item| {
            PutRequest::builder()
                .set_item(Some(item))
                .build()
                .map(|put| WriteRequest::builder().put_request(put).build())
                .map_err(|e| Error::terminal(format!("history write: {e}")))
        })
        .collect::<Result<_>>()?;
    for chunk in writes.chunks(BATCH) {
        let mut pending = chunk.to_vec();
        for attempt in 1..=ATTEMPTS {
            counters.count(Service::DynamoDb, "BatchWriteItem(history)");
            let out = client
                .batch_write_item()
                .request_items(table, pending)
                .send()
                .await
                .map_err(|e| classify("DynamoDB BatchWriteItem (history)", e))?;
            pending = out
                .unprocessed_items
                .and_then(|mut left| left.remove(table))
                .unwrap_or_default();
            if pending.is_empty() {
                break;
            }
            if attempt == ATTEMPTS {
                return Err(Error::retryable(format!(
                    "DynamoDB left {} history entries unwritten after {ATTEMPTS} attempts",
                    pending.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
    }
    Ok(())
}

/// Every entry of `instance`'s history in `table`, oldest first.
pub(crate) async fn read(
    client: &Client,
    table: &str,
    counters: &RequestCounters,
    instance: &InstanceId,
) -> Result<Vec<HistoryEntry>> {
    let mut entries = Vec::new();
    let mut start = None;
    loop {
        counters.count(Service::DynamoDb, "Query(history)");
        let out = client
            .query()
            .table_name(table)
            .key_condition_expression("instance = :instance")
            .expression_attribute_values(":instance", AttributeValue::S(instance.to_string()))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| classify("DynamoDB Query (history)", e))?;
        for item in out.items() {
            entries.push(entry(item)?);
        }
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reanimate_core::record::Status;

    #[test]
    fn an_entry_round_trips_through_its_item() {
        let id = InstanceId::new("a/b").unwrap_or_else(|e| panic!("{e}"));
        for detail in ["", "fetch"] {
            let original = HistoryEntry {
                version: 7,
                at: Timestamp::from_millis(1_700_000_000_123),
                event: "child_completed".into(),
                detail: detail.into(),
                status: Status::Suspended,
                effects: 3,
            };
            let item = item(&id, &original);
            assert_eq!(item.contains_key("detail"), !detail.is_empty());
            assert_eq!(entry(&item).ok(), Some(original));
        }
    }
}
