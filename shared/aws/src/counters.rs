//! Counts the AWS requests each adapter makes, per service and operation, so tests and
//! benchmarks can assert requests per step. One set per process, shared by every adapter.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    DynamoDb,
    Sqs,
    Scheduler,
    EventBridge,
    S3,
    SecretsManager,
    Ses,
}

impl Service {
    pub const ALL: [Service; 7] = [
        Service::DynamoDb,
        Service::Sqs,
        Service::Scheduler,
        Service::EventBridge,
        Service::S3,
        Service::SecretsManager,
        Service::Ses,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::DynamoDb => "dynamodb",
            Service::Sqs => "sqs",
            Service::Scheduler => "scheduler",
            Service::EventBridge => "eventbridge",
            Service::S3 => "s3",
            Service::SecretsManager => "secretsmanager",
            Service::Ses => "ses",
        }
    }
}

/// Request counters, cheap to clone (shared), and the DynamoDB capacity units those requests
/// consumed by DynamoDB's sizing rules (see [`crate::dynamo::item_size`]).
#[derive(Clone, Default)]
pub struct RequestCounters(
    Arc<Mutex<BTreeMap<(Service, &'static str), u64>>>,
    Arc<Mutex<BTreeMap<&'static str, u64>>>,
);

impl RequestCounters {
    /// Counts one `operation` request (e.g. "PutItem") to `service`.
    pub fn count(&self, service: Service, operation: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((service, operation))
            .or_default() += 1;
    }

    /// Adds `units` DynamoDB capacity units of `kind` (e.g. "write units (instances)").
    pub fn add_units(&self, kind: &'static str, units: u64) {
        *self
            .1
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default() += units;
    }

    /// Every (kind, capacity units) added so far.
    pub fn units(&self) -> Vec<(&'static str, u64)> {
        self.1
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, n)| (*k, *n))
            .collect()
    }

    pub fn get(&self, service: Service, operation: &'static str) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(service, operation))
            .copied()
            .unwrap_or(0)
    }

    /// All requests to `service`.
    pub fn total(&self, service: Service) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((s, _), _)| *s == service)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every (service, operation, requests) counted so far.
    pub fn snapshot(&self) -> Vec<(Service, &'static str, u64)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|((s, o), n)| (*s, *o, *n))
            .collect()
    }
}

impl fmt::Debug for RequestCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (service, operation, n) in self.snapshot() {
            map.entry(&format!("{}.{operation}", service.name()), &n);
        }
        map.finish()
    }
}
