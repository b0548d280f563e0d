//! # reanimate-aws
//!
//! The AWS side of reanimate: adapters for the core's ports and the Lambda handler.
//!
//! | port | adapter |
//! | --- | --- |
//! | `InstanceStore` | [`DynamoStore`]: consistent `GetItem`; `PutItem` conditioned on the version, `ALL_OLD` on conflict; full histories by `BatchWriteItem` to a history table |
//! | `Inbox` | [`DynamoInbox`]: a table with a `by-status` index |
//! | `Dispatcher` | [`AwsDispatcher`]: SQS `SendMessageBatch` per atom queue; lifecycle events by EventBridge `PutEvents` |
//! | `TimerService` | [`AwsTimers`]: SQS `DelaySeconds` up to `max_queue_delay`, EventBridge Scheduler `at()` beyond |
//!
//! Every adapter counts its requests per service in a shared [`RequestCounters`].

pub mod client;
pub mod config;
pub mod counters;
pub mod dead_letters;
pub mod dynamo;
pub mod errors;
pub mod history;
pub mod lambda;
pub mod messaging;
pub mod secrets;
pub mod stack;
pub mod timers;

pub use client::StackClient;
pub use config::{Route, StackConfig};
pub use counters::{RequestCounters, Service};
pub use dynamo::{DynamoInbox, DynamoStore};
pub use messaging::AwsDispatcher;
pub use stack::{AwsRuntime, Clients};
pub use timers::AwsTimers;
