//! Helpers shared by the cross-crate tests.

use reanimate_atoms::{registry, scenario};
use reanimate_core::sim::{EndState, Faults, SimReport, Simulation};
use std::collections::BTreeMap;

/// How a run of the sample scenario ended.
#[derive(Debug)]
pub struct ScenarioRun {
    pub end: EndState,
    pub report: SimReport,
    /// How many times the activity ran for each calling instance (by name).
    pub activity_runs: BTreeMap<String, u32>,
}

/// Runs the sample scenario with `faults`.
pub fn run_scenario(seed: u64, faults: Faults) -> ScenarioRun {
    let (activities, checksum) = reanimate_atoms::activities();
    let mut sim = Simulation::with_activities(registry(), activities, seed, faults, None);
    scenario::load(&mut sim).unwrap_or_else(|e| panic!("seed {seed}: loading the scenario: {e}"));
    let report = sim
        .run(&mut scenario::ScriptedUser::default())
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let names = sim.instance_names();
    let mut activity_runs = BTreeMap::new();
    for (call, runs) in checksum.runs() {
        // A call's id is `{instance}@{version}.{index}`.
        let instance = call.rsplit_once('@').map_or(call.as_str(), |(i, _)| i);
        let name = names
            .iter()
            .find(|(id, _)| id.as_str() == instance)
            .map_or_else(|| instance.to_string(), |(_, name)| name.clone());
        *activity_runs.entry(name).or_default() += runs;
    }
    ScenarioRun {
        end: sim.end_state(),
        report,
        activity_runs,
    }
}

/// A name unique to this run, for resources and instances that tests create.
pub fn unique(prefix: &str) -> String {
    // The clock alone is not enough: tests on two threads can read the same instant.
    static TAKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = TAKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{:x}{:02x}", nanos % 0xffff_ffff_ffff, n % 0x100)
}

/// The JSON body of an envelope, as a client writes it to a queue by hand.
pub fn envelope_body(id: &str, target: &str, atom: &str, event: serde_json::Value) -> String {
    serde_json::json!({"schema": 1, "id": id, "target": target, "atom": atom, "event": event})
        .to_string()
}

/// The outputs file of the deployed stack the `deployed_*` tests run against
/// (`REANIMATE_STACK_OUTPUTS`, else the one `infra/deploy.py` writes).
pub fn outputs_path() -> String {
    std::env::var("REANIMATE_STACK_OUTPUTS").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../.localstack/stack-outputs.json"
        )
        .to_string()
    })
}
