//! Helpers shared by the cross-crate tests.

use reanimate_atoms::{registry, scenario};
use reanimate_core::sim::{Faults, InstanceSummary, SimReport, Simulation};
use std::collections::BTreeMap;

/// Runs the sample scenario with `faults` and returns every instance's end plus the report.
pub fn run_scenario(seed: u64, faults: Faults) -> (BTreeMap<String, InstanceSummary>, SimReport) {
    let mut sim = Simulation::new(registry(), seed, faults);
    scenario::load(&mut sim).unwrap_or_else(|e| panic!("seed {seed}: loading the scenario: {e}"));
    let report = sim
        .run(&mut scenario::ScriptedUser::default())
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    (sim.snapshot(), report)
}

/// A name unique to this run, for resources and instances that tests create.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{:x}", nanos % 0xffff_ffff_ffff)
}

/// The JSON body of an envelope, as a client writes it to a queue by hand.
pub fn envelope_body(id: &str, target: &str, atom: &str, event: serde_json::Value) -> String {
    serde_json::json!({"schema": 1, "id": id, "target": target, "atom": atom, "event": event})
        .to_string()
}
