//! [`StackClient`]: one client for everything outside a Lambda (the CLI, the demos, the figures
//! tools, the tests). It connects from the stack's outputs alone: the `Routes` output says where
//! every atom's queue is, so a client needs no atom registry.

use crate::config::{StackConfig, read_outputs};
use crate::counters::RequestCounters;
use crate::dead_letters::{DeadLetterQueues, queues};
use crate::dynamo::{DynamoInbox, DynamoStore, scan_instances};
use crate::messaging::AwsDispatcher;
use crate::secrets::SecretsManager;
use crate::stack::{AwsRuntime, Clients, TokioClock};
use reanimate_core::ports::{Clock, Inbox, InboxEntry, InstanceStore};
use reanimate_core::{
    Error, InstanceId, InstanceRecord, MessageId, Registry, RequestId, Result, client,
};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often [`StackClient::wait_until`] looks again.
const POLL: Duration = Duration::from_millis(200);

/// A deployed stack, as a client sees it.
#[derive(Clone, Debug)]
pub struct StackClient {
    clients: Clients,
    config: Arc<StackConfig>,
    outputs: HashMap<String, String>,
    counters: RequestCounters,
    store: DynamoStore,
    inbox: DynamoInbox,
    dispatcher: AwsDispatcher,
}

impl StackClient {
    /// The stack whose outputs `infra/deploy.py` wrote to `path`, with SDK clients from the
    /// environment (`AWS_ENDPOINT_URL` for an emulator).
    pub async fn connect(path: &str) -> Result<Self> {
        let outputs = read_outputs(path)?;
        Self::new(
            Clients::from_env().await,
            outputs,
            RequestCounters::default(),
        )
    }

    /// The stack as a function inside it sees it: its `REANIMATE_*` environment (see
    /// [`StackConfig::from_env`]).
    pub async fn from_env() -> Result<Self> {
        let config = StackConfig::from_env()?;
        let mut outputs = HashMap::from([
            ("StackName".to_string(), config.stack.clone()),
            ("InstancesTable".into(), config.instances_table.clone()),
            ("InboxTable".into(), config.inbox_table.clone()),
            ("HistoryTable".into(), config.history_table.clone()),
            ("TimerGroup".into(), config.schedule_group.clone()),
            ("SchedulerRoleArn".into(), config.scheduler_role_arn.clone()),
            ("EventBus".into(), config.event_bus.clone()),
            (
                "Routes".into(),
                std::env::var("REANIMATE_ROUTES").unwrap_or_default(),
            ),
        ]);
        if let Some(url) = &config.notify_queue_url {
            outputs.insert("NotifyQueueUrl".into(), url.clone());
        }
        if let Ok(bucket) = std::env::var("REANIMATE_DIGEST_BUCKET") {
            outputs.insert("DigestBucket".into(), bucket);
        }
        Self::new(
            Clients::from_env().await,
            outputs,
            RequestCounters::default(),
        )
    }

    /// Finds every queue's dead-letter queue from its redrive policy (one `GetQueueAttributes`
    /// per queue), for a function that manages them (the console): the function's environment,
    /// 4 KB at most, has no room to list them.
    pub async fn with_dead_letters_discovered(mut self) -> Result<Self> {
        let mut sources: Vec<(String, String)> = self
            .config
            .routes
            .iter()
            .map(|(atom, route)| (atom.clone(), route.url.clone()))
            .collect();
        if let Some(url) = &self.config.notify_queue_url {
            sources.push(("notify".into(), url.clone()));
        }
        for (atom, queue_url) in sources {
            if let Some(dead_letter_url) =
                crate::dead_letters::dead_letter_queue_of(&self.clients.sqs, &queue_url).await?
            {
                let name = crate::config::output_name(&atom);
                self.outputs.insert(format!("{name}QueueUrl"), queue_url);
                self.outputs
                    .insert(format!("{name}DeadLettersUrl"), dead_letter_url);
            }
        }
        Ok(self)
    }

    /// The stack described by `outputs`, through `clients`; requests are counted in `counters`.
    pub fn new(
        clients: Clients,
        outputs: HashMap<String, String>,
        counters: RequestCounters,
    ) -> Result<Self> {
        let config = Arc::new(StackConfig::from_stack_outputs(&outputs)?);
        let (store, inbox, dispatcher) = crate::stack::adapters(&clients, &config, &counters);
        Ok(Self {
            clients,
            config,
            outputs,
            counters,
            store,
            inbox,
            dispatcher,
        })
    }

    /// A stack output by name (`DigestBucket`, `EventBus`, …).
    pub fn output(&self, key: &str) -> Result<&str> {
        self.outputs
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::terminal(format!("the stack has no output {key}")))
    }

    pub fn outputs(&self) -> &HashMap<String, String> {
        &self.outputs
    }

    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    pub fn config(&self) -> &Arc<StackConfig> {
        &self.config
    }

    /// The CloudFormation stack's name (users' secrets are `reanimate/{name}/…`).
    pub fn stack_name(&self) -> &str {
        &self.config.stack
    }

    pub fn counters(&self) -> &RequestCounters {
        &self.counters
    }

    pub fn store(&self) -> &DynamoStore {
        &self.store
    }

    pub fn inbox(&self) -> &DynamoInbox {
        &self.inbox
    }

    pub fn dispatcher(&self) -> &AwsDispatcher {
        &self.dispatcher
    }

    /// The stack's secrets, named under this stack.
    pub fn secrets(&self) -> SecretsManager {
        SecretsManager::new(
            self.clients.secrets.clone(),
            self.counters.clone(),
            self.config.stack.clone(),
        )
    }

    /// The runtime over this stack's resources, for a harness that runs steps in this process
    /// (tests, figures). A client that only sends and reads does not need one.
    pub fn runtime(&self, registry: Registry) -> AwsRuntime {
        crate::stack::runtime(
            registry,
            &self.clients,
            Arc::clone(&self.config),
            &self.counters,
        )
    }

    /// Starts a root instance `id` of `atom` (message `start:{id}`: starting twice starts once).
    pub async fn start(&self, atom: &str, id: &str, input: Value) -> Result<InstanceId> {
        let instance = InstanceId::root(id)?;
        self.config.route(atom)?;
        let message = MessageId::new(format!("start:{id}"))?;
        client::start(&self.dispatcher, message, instance.clone(), atom, input).await?;
        Ok(instance)
    }

    /// Sends the signal `name` to an instance; `message` makes a retry of the same signal apply
    /// once.
    pub async fn signal(
        &self,
        instance: &InstanceId,
        atom: &str,
        name: &str,
        payload: Value,
        message: MessageId,
    ) -> Result<()> {
        client::signal(
            &self.dispatcher,
            message,
            instance.clone(),
            atom,
            name,
            payload,
        )
        .await
    }

    /// Asks an instance (and everything it started) to cancel.
    pub async fn cancel(&self, instance: &InstanceId, atom: &str, reason: &str) -> Result<()> {
        let message = MessageId::new(format!("cancel:{instance}"))?;
        client::cancel(&self.dispatcher, message, instance.clone(), atom, reason).await
    }

    /// Answers a user request as a person would: checked against its schema, decided by the
    /// inbox, `writeOnly` fields kept in Secrets Manager (see `client::answer_with_secrets`).
    pub async fn answer(&self, request: &RequestId, answer: Value) -> Result<()> {
        let secrets = self.secrets();
        client::answer_with_secrets(
            &self.inbox,
            &self.dispatcher,
            &TokioClock,
            Some(&secrets),
            request,
            answer,
        )
        .await
    }

    /// One instance's record, if it exists.
    pub async fn load(&self, id: &InstanceId) -> Result<Option<InstanceRecord>> {
        self.store.load(id).await
    }

    /// Every instance record, sorted by id (a consistent scan: for tools and tests, not for a
    /// hot path).
    pub async fn list(&self) -> Result<Vec<InstanceRecord>> {
        scan_instances(&self.clients.dynamodb, &self.config.instances_table).await
    }

    /// `root` and everything it started, transitively.
    pub async fn family(&self, root: &InstanceId) -> Result<Vec<InstanceRecord>> {
        let all = self.list().await?;
        let mut pending = vec![root.clone()];
        let mut family = Vec::new();
        while let Some(id) = pending.pop() {
            for record in &all {
                if record.id == id {
                    family.push(record.clone());
                }
                if record.parent.as_ref().is_some_and(|p| p.id == id) {
                    pending.push(record.id.clone());
                }
            }
        }
        Ok(family)
    }

    /// The user's open requests, oldest first.
    pub async fn open_requests(&self) -> Result<Vec<InboxEntry>> {
        self.inbox.list_open().await
    }

    pub async fn request(&self, id: &RequestId) -> Result<Option<InboxEntry>> {
        self.inbox.get(id).await
    }

    /// Polls `id` until `done` holds for its record (bounded by `limit`): how clients and tests
    /// wait for a deployed stack, never by sleeping a fixed time.
    pub async fn wait_until(
        &self,
        id: &InstanceId,
        limit: Duration,
        done: impl Fn(&InstanceRecord) -> bool,
    ) -> Result<InstanceRecord> {
        let deadline = Instant::now() + limit;
        loop {
            let record = self.load(id).await?;
            if let Some(record) = record.filter(|r| done(r)) {
                return Ok(record);
            }
            if Instant::now() >= deadline {
                return Err(Error::retryable(format!(
                    "instance {id} did not reach the expected state within {limit:?}"
                )));
            }
            TokioClock.sleep(POLL).await;
        }
    }

    /// Every transition `id` has made, oldest first: the history table's entries, with the
    /// record's own latest entries merged in (an entry whose outbox is not sent yet, and
    /// instances from before the table). Entries older than the record are left out: they are
    /// an earlier instance's that had the same id.
    pub async fn history(
        &self,
        id: &InstanceId,
    ) -> Result<Vec<reanimate_core::record::HistoryEntry>> {
        match self.load(id).await? {
            Some(record) => self.history_of(&record).await,
            None => Ok(Vec::new()),
        }
    }

    /// [`StackClient::history`] of a record already loaded.
    pub async fn history_of(
        &self,
        record: &InstanceRecord,
    ) -> Result<Vec<reanimate_core::record::HistoryEntry>> {
        let mut by_version: std::collections::BTreeMap<u64, _> = self
            .store
            .history(&record.id)
            .await?
            .into_iter()
            .filter(|entry| entry.at >= record.created_at && entry.version <= record.version)
            .map(|entry| (entry.version, entry))
            .collect();
        // Entries not written yet wait in the outbox; records from before the table keep theirs.
        let unsent = record.outbox.iter().filter_map(|effect| match effect {
            reanimate_core::record::Effect::History { entry, .. } => Some(entry),
            _ => None,
        });
        for entry in record.history.iter().chain(unsent) {
            by_version
                .entry(entry.version)
                .or_insert_with(|| entry.clone());
        }
        Ok(by_version.into_values().collect())
    }

    /// The dead-letter queues of every deployed atom.
    pub fn dead_letters(&self) -> DeadLetterQueues {
        DeadLetterQueues::new(
            self.clients.sqs.clone(),
            queues(&self.outputs),
            self.counters.clone(),
        )
    }
}
