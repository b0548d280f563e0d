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
