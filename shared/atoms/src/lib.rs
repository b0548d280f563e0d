//! Sample atoms for reanimate. Together they exercise every event kind: started, child completed,
//! child failed, child progress, timer fired, user answered, request expired, signal, cancel
//! requested and continue. `make demo` runs them; the simulation test checks them under faults.

pub mod approval;
pub mod countdown;
pub mod fan_out;
pub mod scenario;

pub use approval::Approval;
pub use countdown::Countdown;
pub use fan_out::{FanOut, Worker};

use reanimate_core::Registry;

/// Every sample atom.
pub fn registry() -> Registry {
    Registry::new()
        .with(Countdown)
        .with(FanOut)
        .with(Worker)
        .with(Approval)
}
