//! # reanimate-core
//!
//! The pure runtime of reanimate: durable atoms that suspend and are reanimated by events. No AWS
//! crate is a dependency; the AWS adapters implement [`ports`] in `shared/aws`.
//!
//! - [`atom`]: the [`Atom`] trait, its [`Context`] and the [`Registry`].
//! - [`event`], [`envelope`], [`record`]: the data that moves and the data that is stored.
//! - [`runtime`]: the exactly-once step algorithm.
//! - [`memory`] and [`sim`]: every port in memory, and a seeded driver with virtual time and faults.

pub mod activity;
pub mod atom;
pub mod client;
pub mod envelope;
pub mod error;
pub mod event;
pub mod ids;
pub mod memory;
pub mod payload;
pub mod playbook;
pub mod ports;
pub mod random;
pub mod record;
pub mod runtime;
pub mod schema;
pub mod secrets;
pub mod sim;
pub mod text;
pub mod time;

pub use activity::{Activities, Activity, BoxFuture, CallInfo};
pub use atom::{Ask, Atom, Child, Context, InstanceRef, Registry, Step};
pub use envelope::Envelope;
pub use error::{Error, ErrorKind, Result};
pub use event::{AtomEvent, Event, Failure};
pub use ids::{InstanceId, MessageId, RequestId, TimerId};
pub use payload::{CallType, Payload};
pub use record::{InstanceRecord, Status};
pub use runtime::{Delivery, Disposition, Runtime, SweepReport, Transition};
pub use time::Timestamp;

/// The README's examples, compiled and run as doc tests so they stay true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
