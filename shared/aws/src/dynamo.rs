//! The instance store and the inbox on DynamoDB.
//!
//! An instance is one item: key `id`; `version`, `status`, `atom`, `state`, `updated_at`,
//! `error` as top-level attributes (readable in the console and by the CLI); everything else as
//! one JSON attribute `body`; `expires_at` (the table's TTL attribute) once the instance finished.

use crate::counters::{RequestCounters, Service};
use crate::errors::{classify, tolerate};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use reanimate_core::event::ParentLink;
use reanimate_core::ports::{InboxEntry, RequestStatus, SaveOutcome};
use reanimate_core::record::{
    Effect, HistoryEntry, InstanceRecord, RecentMessages, RequestOutcome, Status, UserRequest,
    Waiting,
};
use reanimate_core::{Error, InstanceId, RequestId, Result, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

type Item = HashMap<String, AttributeValue>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: u64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn get_s<'a>(item: &'a Item, name: &str) -> Result<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        _ => Err(Error::terminal(format!(
            "stored item has no string attribute {name:?}"
        ))),
    }
}

fn get_n(item: &Item, name: &str) -> Result<u64> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().map_err(|_| {
            Error::terminal(format!("stored attribute {name:?} is not an integer: {v}"))
        }),
        _ => Err(Error::terminal(format!(
            "stored item has no number attribute {name:?}"
        ))),
    }
}

fn status_name(status: Status) -> &'static str {
    status.as_str()
}

fn parse_status(name: &str) -> Result<Status> {
    serde_json::from_value(Value::String(name.to_string()))
        .map_err(|_| Error::terminal(format!("stored status {name:?} is unknown")))
}

/// The part of a record kept as one JSON attribute.
#[derive(Serialize)]
struct BodyRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: &'a Option<ParentLink>,
    waiting: &'a Waiting,
    applied: &'a RecentMessages,
    #[serde(skip_serializing_if = "<[Effect]>::is_empty")]
    outbox: &'a [Effect],
    progress_sent: u64,
    transitions: u64,
    #[serde(skip_serializing_if = "VecDeque::is_empty")]
    history: &'a VecDeque<HistoryEntry>,
    created_at: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: &'a Option<Value>,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    parent: Option<ParentLink>,
    #[serde(default)]
    waiting: Waiting,
    #[serde(default)]
    applied: RecentMessages,
    #[serde(default)]
    outbox: Vec<Effect>,
    #[serde(default)]
    progress_sent: u64,
    #[serde(default)]
    transitions: u64,
    #[serde(default)]
    history: VecDeque<HistoryEntry>,
    created_at: Timestamp,
    #[serde(default)]
    result: Option<Value>,
}

/// The item for `record`. Finished instances get `expires_at` = now + `retention` (seconds).
pub fn record_to_item(record: &InstanceRecord, retention: Duration) -> Item {
    let body = BodyRef {
        parent: &record.parent,
        waiting: &record.waiting,
        applied: &record.applied,
        outbox: &record.outbox,
        progress_sent: record.progress_sent,
        transitions: record.transitions,
        history: &record.history,
        created_at: record.created_at,
        result: &record.result,
    };
    let mut item = Item::with_capacity(9);
    item.insert("id".into(), s(record.id.as_str()));
    item.insert("atom".into(), s(&record.atom));
    item.insert("version".into(), n(record.version));
    item.insert("status".into(), s(status_name(record.status)));
    item.insert("state".into(), s(&record.state));
    item.insert("updated_at".into(), n(record.updated_at.as_millis()));
    item.insert(
        "body".into(),
        s(serde_json::to_string(&body).unwrap_or_default()),
    );
    if let Some(error) = &record.error {
        item.insert("error".into(), s(error));
    }
    if record.status.is_finished() {
        let expires = record.updated_at.plus(retention).as_millis() / 1000;
        item.insert("expires_at".into(), n(expires));
    }
    item
}

pub fn item_to_record(item: &Item) -> Result<InstanceRecord> {
    let body: Body = serde_json::from_str(get_s(item, "body")?)
        .map_err(|e| Error::terminal(format!("stored body does not decode: {e}")))?;
    Ok(InstanceRecord {
        id: InstanceId::new(get_s(item, "id")?)?,
        atom: get_s(item, "atom")?.to_string(),
        version: get_n(item, "version")?,
        status: parse_status(get_s(item, "status")?)?,
        state: get_s(item, "state")?.to_string(),
        parent: body.parent,
        waiting: body.waiting,
        applied: body.applied,
        outbox: body.outbox,
        progress_sent: body.progress_sent,
        transitions: body.transitions,
        history: body.history,
        created_at: body.created_at,
        updated_at: Timestamp::from_millis(get_n(item, "updated_at")?),
        result: body.result,
        error: item.get("error").and_then(|e| e.as_s().ok()).cloned(),
    })
}

/// Instance records in a DynamoDB table keyed by `id` (string).
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
    retention: Duration,
    counters: RequestCounters,
}

impl DynamoStore {
    pub fn new(
        client: Client,
        table: impl Into<String>,
        retention: Duration,
        counters: RequestCounters,
    ) -> Self {
        Self {
            client,
            table: table.into(),
            retention,
            counters,
        }
    }
}

/// A strongly consistent read of the item keyed `id` (both tables are keyed by a string `id`).
async fn get_by_id(client: &Client, table: &str, id: &str, what: &str) -> Result<Option<Item>> {
    let out = client
        .get_item()
        .table_name(table)
        .key("id", s(id))
        .consistent_read(true)
        .send()
        .await
        .map_err(|e| classify(what, e))?;
    Ok(out.item)
}

impl reanimate_core::ports::InstanceStore for DynamoStore {
    async fn load(&self, id: &InstanceId) -> Result<Option<InstanceRecord>> {
        self.counters.count(Service::DynamoDb, "GetItem");
        let item = get_by_id(&self.client, &self.table, id.as_str(), "DynamoDB GetItem").await?;
        item.as_ref().map(item_to_record).transpose()
    }

    async fn save(&self, record: InstanceRecord, expected: Option<u64>) -> Result<SaveOutcome> {
        self.counters.count(Service::DynamoDb, "PutItem");
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(record_to_item(&record, self.retention)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        put = match expected {
            None => put.condition_expression("attribute_not_exists(id)"),
            Some(version) => put
                .condition_expression("version = :expected")
                .expression_attribute_values(":expected", n(version)),
        };
        match put.send().await {
            Ok(_) => Ok(SaveOutcome::Saved),
            Err(err) => match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    let current = failed.item().map(item_to_record).transpose()?.map(Box::new);
                    Ok(SaveOutcome::Conflict { current })
                }
                _ => Err(classify("DynamoDB PutItem", err)),
            },
        }
    }
}

/// The user's inbox in a DynamoDB table keyed by `id`, with a `by-status` index (`status`,
/// `created_at`) for listing open requests.
#[derive(Clone, Debug)]
pub struct DynamoInbox {
    client: Client,
    table: String,
    counters: RequestCounters,
}

pub const INBOX_STATUS_INDEX: &str = "by-status";

fn status_str(status: RequestStatus) -> &'static str {
    match status {
        RequestStatus::Open => "open",
        RequestStatus::Answered => "answered",
        RequestStatus::Expired => "expired",
        RequestStatus::Withdrawn => "withdrawn",
    }
}

fn inbox_item(entry: &InboxEntry) -> Item {
    let r = &entry.request;
    let mut item = Item::new();
    item.insert("id".into(), s(r.id.as_str()));
    item.insert("instance".into(), s(r.instance.as_str()));
    item.insert("atom".into(), s(&r.atom));
    item.insert("kind".into(), s(&r.kind));
    item.insert("prompt".into(), s(&r.prompt));
    item.insert("schema".into(), s(r.schema.to_string()));
    item.insert("created_at".into(), n(r.created_at.as_millis()));
    item.insert("updated_at".into(), n(entry.updated_at.as_millis()));
    item.insert("status".into(), s(status_str(entry.status)));
    if let Some(deadline) = r.deadline {
        item.insert("deadline".into(), n(deadline.as_millis()));
    }
    if let Some(answer) = &entry.answer {
        item.insert("answer".into(), s(answer.to_string()));
    }
    item
}

fn json_attr(item: &Item, name: &str) -> Result<Value> {
    serde_json::from_str(get_s(item, name)?)
        .map_err(|e| Error::terminal(format!("stored {name} is not JSON: {e}")))
}

fn inbox_entry(item: &Item) -> Result<InboxEntry> {
    let status = match get_s(item, "status")? {
        "open" => RequestStatus::Open,
        "answered" => RequestStatus::Answered,
        "expired" => RequestStatus::Expired,
        "withdrawn" => RequestStatus::Withdrawn,
        other => {
            return Err(Error::terminal(format!(
                "stored request status {other:?} is unknown"
            )));
        }
    };
    Ok(InboxEntry {
        request: UserRequest {
            id: RequestId::new(get_s(item, "id")?)?,
            instance: InstanceId::new(get_s(item, "instance")?)?,
            atom: get_s(item, "atom")?.to_string(),
            kind: get_s(item, "kind")?.to_string(),
            prompt: get_s(item, "prompt")?.to_string(),
            schema: json_attr(item, "schema")?,
            deadline: get_n(item, "deadline").ok().map(Timestamp::from_millis),
            created_at: Timestamp::from_millis(get_n(item, "created_at")?),
        },
        status,
        answer: item
            .contains_key("answer")
            .then(|| json_attr(item, "answer"))
            .transpose()?,
        updated_at: Timestamp::from_millis(get_n(item, "updated_at")?),
    })
}

fn is_condition_failure<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(err: &E) -> bool {
    err.code() == Some("ConditionalCheckFailedException")
}

impl DynamoInbox {
    pub fn new(client: Client, table: impl Into<String>, counters: RequestCounters) -> Self {
        Self {
            client,
            table: table.into(),
            counters,
        }
    }
}

impl reanimate_core::ports::Inbox for DynamoInbox {
    async fn open(&self, request: UserRequest) -> Result<()> {
        self.counters.count(Service::DynamoDb, "PutItem(inbox)");
        let at = request.created_at;
        let entry = InboxEntry {
            request,
            status: RequestStatus::Open,
            answer: None,
            updated_at: at,
        };
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(inbox_item(&entry)))
            .condition_expression("attribute_not_exists(id)")
            .send()
            .await;
        // Already there (any status): left as it is.
        tolerate("DynamoDB PutItem (inbox)", result, is_condition_failure).map(|_| ())
    }

    async fn record_answer(&self, id: &RequestId, answer: Value, at: Timestamp) -> Result<bool> {
        self.counters.count(Service::DynamoDb, "UpdateItem(inbox)");
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id.as_str()))
            .update_expression("SET #status = :answered, answer = :answer, updated_at = :at")
            // The runtime may already have closed it as answered: the answer is still recorded.
            .condition_expression(
                "attribute_exists(id) AND (#status = :open OR (#status = :answered AND attribute_not_exists(answer)))",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":answered", s("answered"))
            .expression_attribute_values(":open", s("open"))
            .expression_attribute_values(":answer", s(answer.to_string()))
            .expression_attribute_values(":at", n(at.as_millis()))
            .send()
            .await;
        tolerate(
            "DynamoDB UpdateItem (inbox answer)",
            result,
            is_condition_failure,
        )
    }

    async fn close(&self, id: &RequestId, outcome: RequestOutcome, at: Timestamp) -> Result<()> {
        self.counters.count(Service::DynamoDb, "UpdateItem(inbox)");
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id.as_str()))
            .update_expression("SET #status = :closed, updated_at = :at")
            .condition_expression("#status = :open")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":closed", s(status_str(outcome.into())))
            .expression_attribute_values(":open", s("open"))
            .expression_attribute_values(":at", n(at.as_millis()))
            .send()
            .await;
        // Already closed: it keeps its first outcome.
        tolerate(
            "DynamoDB UpdateItem (inbox close)",
            result,
            is_condition_failure,
        )
        .map(|_| ())
    }

    async fn get(&self, id: &RequestId) -> Result<Option<InboxEntry>> {
        self.counters.count(Service::DynamoDb, "GetItem(inbox)");
        let item = get_by_id(
            &self.client,
            &self.table,
            id.as_str(),
            "DynamoDB GetItem (inbox)",
        )
        .await?;
        item.as_ref().map(inbox_entry).transpose()
    }

    async fn list_open(&self) -> Result<Vec<InboxEntry>> {
        let mut entries = Vec::new();
        let mut start = None;
        loop {
            self.counters.count(Service::DynamoDb, "Query(inbox)");
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(INBOX_STATUS_INDEX)
                .key_condition_expression("#status = :open")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":open", s("open"))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify("DynamoDB Query (inbox)", e))?;
            for item in out.items() {
                entries.push(inbox_entry(item)?);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        entries.sort_by(|a, b| {
            (a.request.created_at, &a.request.id).cmp(&(b.request.created_at, &b.request.id))
        });
        Ok(entries)
    }
}

/// Every instance record in `table` (a consistent scan, for demos and tests; not for the hot
/// path), sorted by id.
pub async fn scan_instances(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<Vec<InstanceRecord>> {
    let mut records = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| crate::errors::classify("DynamoDB Scan", e))?;
        for item in page.items() {
            records.push(item_to_record(item)?);
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => break,
        }
    }
    records.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(records)
}
