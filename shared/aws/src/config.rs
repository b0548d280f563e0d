//! The stack's configuration, read from the environment the infrastructure template sets.

use reanimate_core::{Error, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::time::Duration;

/// Where messages for one atom type go.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Route {
    /// The atom's queue URL (for SQS calls).
    pub url: String,
    /// The atom's queue ARN (as an EventBridge Scheduler target).
    pub arn: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct StackConfig {
    /// The CloudFormation stack's name: users' secrets are named `reanimate/{stack}/…`.
    pub stack: String,
    pub instances_table: String,
    pub inbox_table: String,
    /// Every instance's full history (see `crate::history`).
    pub history_table: String,
    /// Where requests that name a person are announced (the notifier emails them a link); none:
    /// nobody is told.
    pub notify_queue_url: Option<String>,
    /// atom type → its queue.
    pub routes: HashMap<String, Route>,
    pub schedule_group: String,
    /// The role EventBridge Scheduler assumes to send to the queues.
    pub scheduler_role_arn: String,
    pub event_bus: String,
    /// Timers due within this are SQS delays (SQS allows up to 900 s); later ones are schedules.
    pub max_queue_delay: Duration,
    /// How long finished instances are kept before DynamoDB's TTL removes them.
    pub retention: Duration,
    /// Whether every transition is written to the history table (`REANIMATE_HISTORY=full`, the
    /// default) or none (`off`: a write unit a step less; see BENCHMARKS.md, "Cost per step").
    pub full_history: bool,
}

/// The stack outputs `infra/deploy.py` wrote to `path` (name → value), for clients that need
/// more than the routes (the digest bucket, which atoms are deployed).
pub fn read_outputs(path: &str) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::terminal(format!("{path}: {e} (deploy the stack first: make deploy)"))
    })?;
    serde_json::from_str(&text).map_err(|e| Error::terminal(format!("{path}: {e}")))
}

/// The template's resource prefix for an atom: `fan-out` → `FanOut`.
pub fn output_name(atom: &str) -> String {
    atom.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn var(name: &str) -> Result<String> {
    std::env::var(name)
        .map_err(|_| Error::terminal(format!("environment variable {name} is not set")))
}

/// The template's routes (atom type → its queue), as one JSON object: the functions get it as
/// `REANIMATE_ROUTES`, clients as the `Routes` output.
fn parse_routes(what: &str, json: &str) -> Result<HashMap<String, Route>> {
    serde_json::from_str(json).map_err(|e| {
        Error::terminal(format!(
            "{what} is not a JSON object of atom → {{url, arn}}: {e}"
        ))
    })
}

impl StackConfig {
    /// Reads `REANIMATE_*` variables; a missing or malformed one is an error naming it.
    pub fn from_env() -> Result<Self> {
        let routes = parse_routes("REANIMATE_ROUTES", &var("REANIMATE_ROUTES")?)?;
        let seconds = |name: &str, default: u64| -> Result<Duration> {
            match std::env::var(name) {
                Err(_) => Ok(Duration::from_secs(default)),
                Ok(v) => v.parse().map(Duration::from_secs).map_err(|_| {
                    Error::terminal(format!("{name}={v:?} is not a number of seconds"))
                }),
            }
        };
        let max_queue_delay = seconds("REANIMATE_MAX_QUEUE_DELAY_SECS", 900)?;
        if max_queue_delay > Duration::from_secs(900) {
            return Err(Error::terminal(
                "REANIMATE_MAX_QUEUE_DELAY_SECS cannot exceed SQS's 900-second maximum delay",
            ));
        }
        Ok(Self {
            stack: var("REANIMATE_STACK_NAME")?,
            instances_table: var("REANIMATE_INSTANCES_TABLE")?,
            inbox_table: var("REANIMATE_INBOX_TABLE")?,
            history_table: var("REANIMATE_HISTORY_TABLE")?,
            notify_queue_url: std::env::var("REANIMATE_NOTIFY_QUEUE_URL")
                .ok()
                .filter(|url| !url.is_empty()),
            routes,
            schedule_group: var("REANIMATE_SCHEDULE_GROUP")?,
            scheduler_role_arn: var("REANIMATE_SCHEDULER_ROLE_ARN")?,
            event_bus: var("REANIMATE_EVENT_BUS")?,
            max_queue_delay,
            retention: seconds("REANIMATE_RETENTION_SECS", 30 * 24 * 3600)?,
            full_history: match std::env::var("REANIMATE_HISTORY").as_deref() {
                Err(_) | Ok("" | "full") => true,
                Ok("off") => false,
                Ok(other) => {
                    return Err(Error::terminal(format!(
                        "REANIMATE_HISTORY is {other:?}; it is full or off"
                    )));
                }
            },
        })
    }

    /// The configuration of a deployed `infra/template.yaml`, from its stack outputs (written by
    /// `infra/deploy.py`), for clients outside the functions: tests, the demo, the CLI. Every
    /// deployed atom's queue comes from the `Routes` output: no atom list is needed.
    pub fn from_stack_outputs(outputs: &HashMap<String, String>) -> Result<Self> {
        let out = |key: &str| {
            outputs.get(key).cloned().ok_or_else(|| {
                Error::terminal(format!(
                    "the stack has no output {key} (deployed from an older template? run make deploy)"
                ))
            })
        };
        Ok(Self {
            stack: out("StackName")?,
            instances_table: out("InstancesTable")?,
            inbox_table: out("InboxTable")?,
            history_table: out("HistoryTable")?,
            notify_queue_url: outputs.get("NotifyQueueUrl").cloned(),
            routes: parse_routes("the Routes output", &out("Routes")?)?,
            schedule_group: out("TimerGroup")?,
            scheduler_role_arn: out("SchedulerRoleArn")?,
            event_bus: out("EventBus")?,
            max_queue_delay: Duration::from_secs(900),
            retention: Duration::from_secs(30 * 24 * 3600),
            full_history: outputs.get("History").is_none_or(|h| h != "off"),
        })
    }

    /// Reads the outputs file `infra/deploy.py` wrote.
    pub fn from_outputs_file(path: &str) -> Result<Self> {
        Self::from_stack_outputs(&read_outputs(path)?)
    }

    pub fn route(&self, atom: &str) -> Result<&Route> {
        self.routes.get(atom).ok_or_else(|| {
            let mut known: Vec<_> = self.routes.keys().map(String::as_str).collect();
            known.sort_unstable();
            Error::terminal(format!(
                "no queue is configured for atom type {atom:?} (configured: {})",
                known.join(", ")
            ))
        })
    }
}
