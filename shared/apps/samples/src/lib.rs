//! Sample atoms for reanimate. Together they exercise every event kind: started, child completed,
//! child failed, child progress, timer fired, user answered, request expired, signal, cancel
//! requested and continue. `make demo` runs them; the simulation test checks them under faults.

pub mod approval;
pub mod countdown;
pub mod fan_out;
pub mod scenario;

pub use approval::Approval;
pub use countdown::Countdown;
pub use fan_out::{Checksum, FanOut, Worker};

use reanimate_core::{Activities, Registry};
use std::sync::Arc;

/// Every sample atom.
pub fn registry() -> Registry {
    Registry::new()
        .with(Countdown)
        .with(FanOut)
        .with(Worker)
        .with(Approval)
}

/// The activities the sample atoms may call (`sample.checksum`), and a handle on it that counts
/// its runs per call id.
pub fn activities() -> (Activities, Checksum) {
    let checksum = Checksum::default();
    let activities = Activities::new().with(fan_out::CHECKSUM, Arc::new(checksum.clone()));
    (activities, checksum)
}
