//! The instance store and the inbox on DynamoDB.
//!
//! An instance is one item: key `id`; `version`, `status`, `atom`, `state`, `updated_at`,
//! `error` as top-level attributes (readable in the console and by the CLI); the outbox as the JSON
//! attribute `outbox` (so the sweeper can drop it without rewriting the rest); everything else as
//! one JSON attribute `body`; `expires_at` (the table's TTL attribute) once the instance finished.
//! `state`, `body` and `outbox` are JSON strings, or, from [`DEFLATE_FROM`] bytes on, deflated
//! JSON in a binary (every step rewrites the item, and DynamoDB bills every started kilobyte).
//! A record whose outbox could not be sent carries `outbox_pending` and `outbox_pending_since`,
//! the keys of the sparse index [`OUTBOX_PENDING_INDEX`] the sweeper queries; any save removes
//! them (a save writes the whole item).

use crate::counters::{RequestCounters, Service};
use crate::errors::{classify, tolerate};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use reanimate_core::event::ParentLink;
use reanimate_core::ids::InstanceId as Id;
use reanimate_core::ports::{AnswerRecord, InboxEntry, RequestStatus, SaveOutcome};
use reanimate_core::record::{
    Effect, HistoryEntry, InstanceRecord, RecentMessages, RequestOutcome, SenderSignals, Status,
    UserRequest, Waiting,
};
use reanimate_core::{Error, InstanceId, RequestId, Result, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
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

pub(crate) fn parse_status(name: &str) -> Result<Status> {
    serde_json::from_value(Value::String(name.to_string()))
        .map_err(|_| Error::terminal(format!("stored status {name:?} is unknown")))
}

/// The sparse index of records with an unsent outbox: partition key `outbox_pending` (always
/// [`OUTBOX_PENDING`]), sort key `outbox_pending_since` (milliseconds), projecting `version`.
pub const OUTBOX_PENDING_INDEX: &str = "by-pending-outbox";
const OUTBOX_PENDING: &str = "pending";

/// The part of a record kept as one JSON attribute.
#[derive(Serialize)]
struct BodyRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: &'a Option<ParentLink>,
    /// Written only past version 1, so records stay as they were until an atom versions its state.
    #[serde(skip_serializing_if = "is_first_state_version")]
    state_version: u32,
    waiting: &'a Waiting,
    applied: &'a RecentMessages,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    signals_sent: &'a BTreeMap<Id, u64>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    signals_received: &'a BTreeMap<Id, SenderSignals>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tombstone: bool,
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
    #[serde(default = "first_state_version")]
    state_version: u32,
    #[serde(default)]
    waiting: Waiting,
    #[serde(default)]
    applied: RecentMessages,
    #[serde(default)]
    signals_sent: BTreeMap<Id, u64>,
    #[serde(default)]
    signals_received: BTreeMap<Id, SenderSignals>,
    #[serde(default)]
    tombstone: bool,
    /// Where the outbox was kept before it became an attribute of its own.
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

fn first_state_version() -> u32 {
    1
}

fn is_first_state_version(version: &u32) -> bool {
    *version == 1
}

/// An item's size by DynamoDB's rules: each attribute's name plus its value (strings and binaries
/// by their bytes, numbers by about one byte per two digits plus one, lists and maps 3 bytes plus
/// their elements, one byte more per element). Write units are started kilobytes of it, strongly
/// consistent read units started 4 KB.
pub fn item_size(item: &Item) -> usize {
    fn value_size(value: &AttributeValue) -> usize {
        match value {
            AttributeValue::S(s) => s.len(),
            AttributeValue::N(n) => {
                let digits = n.trim_start_matches('-').replace('.', "").len();
                digits.div_ceil(2) + 1
            }
            AttributeValue::B(b) => b.as_ref().len(),
            AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
            AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
            AttributeValue::L(v) => 3 + v.iter().map(|e| value_size(e) + 1).sum::<usize>(),
            AttributeValue::M(m) => {
                3 + m
                    .iter()
                    .map(|(k, e)| k.len() + value_size(e) + 1)
                    .sum::<usize>()
            }
            _ => 0,
        }
    }
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// DynamoDB write units for an item of `bytes`: one per started kilobyte.
pub fn write_units(bytes: usize) -> u64 {
    bytes.div_ceil(1024).max(1) as u64
}

/// Strongly consistent read units for an item of `bytes` (a miss costs one): one per started 4 KB.
pub fn read_units(bytes: usize) -> u64 {
    bytes.div_ceil(4096).max(1) as u64
}

/// JSON attributes from this many bytes on are stored deflated, when that makes them smaller.
pub const DEFLATE_FROM: usize = 200;

/// The most a deflated attribute may inflate to (an item is at most 400 KB; JSON deflates well,
/// but not a thousandfold).
const INFLATED_LIMIT: usize = 64 << 20;

/// A JSON attribute: the string itself, or deflated (see [`DEFLATE_FROM`]).
fn json_attribute(json: String) -> AttributeValue {
    if json.len() >= DEFLATE_FROM {
        let deflated = miniz_oxide::deflate::compress_to_vec(json.as_bytes(), 6);
        if deflated.len() < json.len() {
            return AttributeValue::B(aws_smithy_types::Blob::new(deflated));
        }
    }
    AttributeValue::S(json)
}

/// The JSON of an attribute written by [`json_attribute`] (a string, or deflated).
fn json_of(item: &Item, name: &str) -> Result<Option<String>> {
    match item.get(name) {
        None => Ok(None),
        Some(AttributeValue::S(json)) => Ok(Some(json.clone())),
        Some(AttributeValue::B(deflated)) => {
            let bytes = miniz_oxide::inflate::decompress_to_vec_with_limit(
                deflated.as_ref(),
                INFLATED_LIMIT,
            )
            .map_err(|e| Error::terminal(format!("stored {name:?} does not inflate: {e:?}")))?;
            String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| Error::terminal(format!("stored {name:?} is not UTF-8")))
        }
        Some(_) => Err(Error::terminal(format!(
            "stored attribute {name:?} is neither a string nor a binary"
        ))),
    }
}

/// The item for `record`. Finished instances get `expires_at` = now + `retention` (seconds).
pub fn record_to_item(record: &InstanceRecord, retention: Duration) -> Item {
    let body = BodyRef {
        parent: &record.parent,
        state_version: record.state_version,
        waiting: &record.waiting,
        applied: &record.applied,
        signals_sent: &record.signals_sent,
        signals_received: &record.signals_received,
        tombstone: record.tombstone,
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
    item.insert("state".into(), json_attribute(record.state.clone()));
    item.insert("updated_at".into(), n(record.updated_at.as_millis()));
    item.insert(
        "body".into(),
        json_attribute(serde_json::to_string(&body).unwrap_or_default()),
    );
    if !record.outbox.is_empty() {
        item.insert(
            "outbox".into(),
            json_attribute(serde_json::to_string(&record.outbox).unwrap_or_default()),
        );
    }
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
    let missing = |name: &str| Error::terminal(format!("stored item has no attribute {name:?}"));
    let body = json_of(item, "body")?.ok_or_else(|| missing("body"))?;
    let body: Body = serde_json::from_str(&body)
        .map_err(|e| Error::terminal(format!("stored body does not decode: {e}")))?;
    let outbox = match json_of(item, "outbox")? {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| Error::terminal(format!("stored outbox does not decode: {e}")))?,
        None => body.outbox,
    };
    let state = json_of(item, "state")?.ok_or_else(|| missing("state"))?;
    Ok(InstanceRecord {
        id: InstanceId::new(get_s(item, "id")?)?,
        atom: get_s(item, "atom")?.to_string(),
        version: get_n(item, "version")?,
        status: parse_status(get_s(item, "status")?)?,
        state,
        state_version: body.state_version,
        parent: body.parent,
        waiting: body.waiting,
        applied: body.applied,
        signals_sent: body.signals_sent,
        signals_received: body.signals_received,
        tombstone: body.tombstone,
        outbox,
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
    history_table: String,
    retention: Duration,
    counters: RequestCounters,
}

impl DynamoStore {
    /// Records in `table`, full histories in `history_table` (see [`crate::history`]).
    pub fn new(
        client: Client,
        table: impl Into<String>,
        history_table: impl Into<String>,
        retention: Duration,
        counters: RequestCounters,
    ) -> Self {
        Self {
            client,
            table: table.into(),
            history_table: history_table.into(),
            retention,
            counters,
        }
    }

    /// Every transition `id` has made, oldest first.
    pub async fn history(&self, id: &InstanceId) -> Result<Vec<HistoryEntry>> {
        crate::history::read(&self.client, &self.history_table, &self.counters, id).await
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
        let bytes = item.as_ref().map_or(0, item_size);
        self.counters
            .add_units("read units (instances)", read_units(bytes));
        item.as_ref().map(item_to_record).transpose()
    }

    async fn save(&self, record: &InstanceRecord, expected: Option<u64>) -> Result<SaveOutcome> {
        self.counters.count(Service::DynamoDb, "PutItem");
        let item = record_to_item(record, self.retention);
        // A PutItem is billed on the larger of the item it replaces and the new one; steps at
        // rest are about the size of the last, so this counts the new one.
        self.counters
            .add_units("write units (instances)", write_units(item_size(&item)));
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
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
                    self.counters.count(Service::DynamoDb, "PutItem(conflict)");
                    let current = failed.item().map(item_to_record).transpose()?.map(Box::new);
                    Ok(SaveOutcome::Conflict { current })
                }
                _ => Err(classify("DynamoDB PutItem", err)),
            },
        }
    }

    async fn mark_outbox_pending(
        &self,
        id: &InstanceId,
        version: u64,
        since: Timestamp,
    ) -> Result<()> {
        self.counters.count(Service::DynamoDb, "UpdateItem(mark)");
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id.as_str()))
            .update_expression("SET outbox_pending = :pending, outbox_pending_since = :since")
            .condition_expression("version = :version")
            .expression_attribute_values(":pending", s(OUTBOX_PENDING))
            .expression_attribute_values(":since", n(since.as_millis()))
            .expression_attribute_values(":version", n(version))
            .send()
            .await;
        // The record moved on: its successor carries the outbox.
        tolerate(
            "DynamoDB UpdateItem (mark outbox)",
            result,
            is_condition_failure,
        )
        .map(|_| ())
    }

    async fn pending_outboxes(
        &self,
        before: Timestamp,
        limit: usize,
    ) -> Result<Vec<(InstanceId, u64)>> {
        let mut found = Vec::new();
        let mut start = None;
        while found.len() < limit {
            self.counters
                .count(Service::DynamoDb, "Query(pending outboxes)");
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(OUTBOX_PENDING_INDEX)
                .key_condition_expression(
                    "outbox_pending = :pending AND outbox_pending_since <= :before",
                )
                .expression_attribute_values(":pending", s(OUTBOX_PENDING))
                .expression_attribute_values(":before", n(before.as_millis()))
                .limit((limit - found.len()).min(1000) as i32)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify("DynamoDB Query (pending outboxes)", e))?;
            for item in page.items() {
                found.push((
                    InstanceId::new(get_s(item, "id")?)?,
                    get_n(item, "version")?,
                ));
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(found)
    }

    async fn append_history(&self, entries: Vec<(InstanceId, HistoryEntry)>) -> Result<()> {
        crate::history::append(&self.client, &self.history_table, &self.counters, entries).await
    }

    async fn clear_outbox(&self, id: &InstanceId, version: u64) -> Result<bool> {
        self.counters
            .count(Service::DynamoDb, "UpdateItem(clear outbox)");
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id.as_str()))
            .update_expression("REMOVE outbox, outbox_pending, outbox_pending_since")
            .condition_expression("version = :version")
            .expression_attribute_values(":version", n(version))
            .send()
            .await;
        tolerate(
            "DynamoDB UpdateItem (clear outbox)",
            result,
            is_condition_failure,
        )
    }
}

/// The user's inbox in a DynamoDB table keyed by `id`, with a `by-status` index (`status`,
/// `created_at`) for listing open requests.
#[derive(Clone, Debug)]
pub struct DynamoInbox {
    client: Client,
    table: String,
    counters: RequestCounters,
    notify: Option<NotifyQueue>,
}

/// Where a request that names a person is announced, for the notifier to email them a link.
#[derive(Clone, Debug)]
pub struct NotifyQueue {
    pub sqs: aws_sdk_sqs::Client,
    pub url: String,
}

/// The notify queue's message: which request to tell its person about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub request: RequestId,
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
    if let Some(at) = entry.applied_at {
        item.insert("applied_at".into(), n(at.as_millis()));
    }
    if let Some(person) = &r.person {
        item.insert("person".into(), s(person));
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
            person: get_s(item, "person").ok().map(str::to_string),
        },
        status,
        answer: item
            .contains_key("answer")
            .then(|| json_attr(item, "answer"))
            .transpose()?,
        applied_at: get_n(item, "applied_at").ok().map(Timestamp::from_millis),
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
            notify: None,
        }
    }

    /// Announces every request that names a person on `queue` (at least once: again by a later
    /// open of the same request until the notifier marks it notified).
    pub fn notifying(mut self, queue: Option<NotifyQueue>) -> Self {
        self.notify = queue;
        self
    }

    async fn announce(&self, request: &RequestId) -> Result<()> {
        let Some(queue) = &self.notify else {
            return Ok(());
        };
        let body = serde_json::to_string(&Notification {
            request: request.clone(),
        })
        .map_err(|e| Error::terminal(format!("notification: {e}")))?;
        self.counters.count(Service::Sqs, "SendMessage(notify)");
        queue
            .sqs
            .send_message()
            .queue_url(&queue.url)
            .message_body(body)
            .send()
            .await
            .map_err(|e| classify("SQS SendMessage (notify)", e))?;
        Ok(())
    }

    /// Tells the request's person again (a fresh link for an expired one): forgets that they
    /// were told and announces the request, if it is still open.
    pub async fn announce_again(&self, id: &RequestId) -> Result<bool> {
        self.counters.count(Service::DynamoDb, "UpdateItem(inbox)");
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id.as_str()))
            .update_expression("REMOVE notified_at")
            .condition_expression("#status = :open AND attribute_exists(person)")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":open", s("open"))
            .send()
            .await;
        if !tolerate(
            "DynamoDB UpdateItem (notify again)",
            result,
            is_condition_failure,
        )? {
            return Ok(false);
        }
        self.announce(id).await?;
        Ok(self.notify.is_some())
    }

    /// The request, if it is open, names a person, and nobody has told them yet.
    pub async fn awaiting_notification(&self, id: &RequestId) -> Result<Option<InboxEntry>> {
        self.counters.count(Service::DynamoDb, "GetItem(inbox)");
        let item = get_by_id(
            &self.client,
            &self.table,
            id.as_str(),
            "DynamoDB GetItem (inbox)",
        )
        .await?;
        match item {
            Some(item) if !item.contains_key("notified_at") => {
                let entry = inbox_entry(&item)?;
                Ok(
                    (entry.status == RequestStatus::Open && entry.request.person.is_some())
                        .then_some(entry),
                )
            }
            _ => Ok(None),
        }
    }

    /// Every request that names `person`, newest first. A filtered scan: the web inbox's "your
    /// questions" page, read by a person now and then, not a hot path (an index by person would
    /// make it a query when inboxes grow large).
    pub async fn of_person(&self, person: &str) -> Result<Vec<InboxEntry>> {
        let mut entries = Vec::new();
        let mut start = None;
        loop {
            self.counters.count(Service::DynamoDb, "Scan(inbox)");
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("person = :person")
                .expression_attribute_values(":person", s(person))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| classify("DynamoDB Scan (inbox by person)", e))?;
            for item in out.items() {
                entries.push(inbox_entry(item)?);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.request.created_at));
        Ok(entries)
    }

    /// Records that the request's person was told (a later open does not announce it again).
    pub async fn mark_notified(&self, id: &RequestId, at: Timestamp) -> Result<()> {
        self.counters.count(Service::DynamoDb, "UpdateItem(inbox)");
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id.as_str()))
            .update_expression("SET notified_at = :at")
            .condition_expression("attribute_exists(id)")
            .expression_attribute_values(":at", n(at.as_millis()))
            .send()
            .await;
        tolerate(
            "DynamoDB UpdateItem (notified)",
            result,
            is_condition_failure,
        )
        .map(|_| ())
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
            applied_at: None,
            updated_at: at,
        };
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(inbox_item(&entry)))
            .condition_expression("attribute_not_exists(id)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let announce = match result {
            Ok(_) => entry.request.person.is_some(),
            // Already there (any status): left as it is, and announced again if its person has
            // not been told yet (the step that opened it may have stopped before announcing).
            Err(err) => match err.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    failed.item().is_some_and(|item| {
                        !item.contains_key("notified_at")
                            && item.contains_key("person")
                            && get_s(item, "status") == Ok("open")
                    })
                }
                _ => return Err(classify("DynamoDB PutItem (inbox)", err)),
            },
        };
        if announce {
            self.announce(&entry.request.id).await?;
        }
        Ok(())
    }

    async fn record_answer(
        &self,
        id: &RequestId,
        answer: Value,
        at: Timestamp,
    ) -> Result<AnswerRecord> {
        self.counters.count(Service::DynamoDb, "UpdateItem(inbox)");
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id.as_str()))
            .update_expression("SET #status = :answered, answer = :answer, updated_at = :at")
            // The inbox decides the race: only an open request whose deadline has not passed
            // takes an answer, and only the first.
            .condition_expression(
                "#status = :open AND (attribute_not_exists(deadline) OR deadline > :at)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":answered", s("answered"))
            .expression_attribute_values(":open", s("open"))
            .expression_attribute_values(":answer", s(answer.to_string()))
            .expression_attribute_values(":at", n(at.as_millis()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(AnswerRecord::Recorded),
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    match failed.item() {
                        Some(item) => Ok(AnswerRecord::Refused(Box::new(inbox_entry(item)?))),
                        None => Ok(AnswerRecord::Missing),
                    }
                }
                _ => Err(classify("DynamoDB UpdateItem (inbox answer)", err)),
            },
        }
    }

    async fn expire(&self, id: &RequestId, at: Timestamp) -> Result<Option<Value>> {
        self.counters.count(Service::DynamoDb, "UpdateItem(inbox)");
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id.as_str()))
            .update_expression("SET #status = :expired, updated_at = :at")
            .condition_expression("#status = :open")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":expired", s("expired"))
            .expression_attribute_values(":open", s("open"))
            .expression_attribute_values(":at", n(at.as_millis()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(None),
            Err(err) => match err.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
                    // Not open: an answer won the race (apply it), or it was already closed.
                    match failed.item().map(inbox_entry).transpose()? {
                        Some(entry) if entry.status == RequestStatus::Answered => Ok(entry.answer),
                        _ => Ok(None),
                    }
                }
                _ => Err(classify("DynamoDB UpdateItem (inbox expire)", err)),
            },
        }
    }

    async fn close(&self, id: &RequestId, outcome: RequestOutcome, at: Timestamp) -> Result<()> {
        self.counters.count(Service::DynamoDb, "UpdateItem(inbox)");
        let (update, condition) = match outcome {
            // The instance applied the recorded answer.
            RequestOutcome::Answered => (
                "SET #status = :closed, applied_at = :at, updated_at = :at",
                "#status = :open OR (#status = :answered AND attribute_not_exists(applied_at))",
            ),
            // The instance finished first: an answer recorded but never applied stays for display.
            RequestOutcome::Withdrawn => (
                "SET #status = :closed, updated_at = :at",
                "#status = :open OR (#status = :answered AND attribute_not_exists(applied_at))",
            ),
            RequestOutcome::Expired => {
                ("SET #status = :closed, updated_at = :at", "#status = :open")
            }
        };
        let mut call = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("id", s(id.as_str()))
            .update_expression(update)
            .condition_expression(condition)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":closed", s(status_str(outcome.into())))
            .expression_attribute_values(":open", s("open"))
            .expression_attribute_values(":at", n(at.as_millis()));
        if outcome != RequestOutcome::Expired {
            call = call.expression_attribute_values(":answered", s("answered"));
        }
        let result = call.send().await;
        // Already closed: it keeps its outcome.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state_version: u32) -> InstanceRecord {
        let mut record = InstanceRecord::fresh(
            InstanceId::new("t").unwrap_or_else(|e| panic!("{e}")),
            "tally".into(),
            None,
            Timestamp::from_millis(1_000),
        );
        record.state = r#"{"total":16}"#.into();
        record.state_version = state_version;
        record
    }

    #[test]
    fn an_items_state_version_round_trips_and_version_one_is_not_written() {
        let retention = Duration::from_secs(60);
        let v2 = record(2);
        let item = record_to_item(&v2, retention);
        assert!(get_s(&item, "body").is_ok_and(|b| b.contains(r#""state_version":2"#)));
        assert_eq!(item_to_record(&item).map(|r| r.state_version).ok(), Some(2));

        let v1 = record_to_item(&record(1), retention);
        assert!(get_s(&v1, "body").is_ok_and(|b| !b.contains("state_version")));
        assert_eq!(item_to_record(&v1).map(|r| r.state_version).ok(), Some(1));
    }

    #[test]
    fn a_large_state_is_stored_deflated_and_comes_back() {
        let mut large = record(1);
        let entries: Vec<String> = (0..12)
            .map(|i| format!(r#"{{"account":"account-{i:04}-receivables","balance":{i}000,"tags":["ledger","region-{}","monthly-close"]}}"#, i % 3))
            .collect();
        large.state = format!(r#"{{"steps":7,"entries":[{}]}}"#, entries.join(","));
        let item = record_to_item(&large, Duration::ZERO);
        let Some(AttributeValue::B(deflated)) = item.get("state") else {
            panic!("a {}-byte state is deflated", large.state.len());
        };
        assert!(deflated.as_ref().len() * 3 < large.state.len());
        assert!(
            item_size(&item) < 1024,
            "one write unit: {}",
            item_size(&item)
        );
        assert_eq!(item_to_record(&item).ok(), Some(large));
        // A small one stays a readable string; so do items written before deflating.
        let small = record_to_item(&record(1), Duration::ZERO);
        assert!(matches!(small.get("state"), Some(AttributeValue::S(_))));
    }

    #[test]
    fn item_sizes_follow_dynamodbs_rules() {
        let mut item = Item::new();
        item.insert("id".into(), s("abc"));
        assert_eq!(item_size(&item), 5);
        item.insert("version".into(), n(12_345));
        assert_eq!(item_size(&item), 5 + 7 + 4);
        item.insert(
            "z".into(),
            AttributeValue::B(aws_smithy_types::Blob::new(vec![0; 10])),
        );
        assert_eq!(item_size(&item), 16 + 11);
        assert_eq!(
            (write_units(1024), write_units(1025), read_units(4097)),
            (1, 2, 2)
        );
    }
}
