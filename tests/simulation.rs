//! The exactly-once property under faults. For each seed the sample scenario runs with every fault
//! injected (duplicates, reordering, delays, crashes between save and send, restarts, concurrent
//! handlers racing on one instance) and must end exactly as the fault-free run: same instances,
//! same states, same outputs, same number of applied transitions. None lost, none applied twice.
//!
//! `SIM_SEEDS=N` runs N seeds (default 1,000); `SIM_SEED=S` replays one seed.

use reanimate_core::record::Status;
use reanimate_core::sim::Faults;
use reanimate_tests::run_scenario;

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return vec![seed];
    }
    let n: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000);
    (1..=n).collect()
}

#[test]
fn fault_free_run_ends_as_designed() {
    let (end, report) = run_scenario(0, Faults::none());
    assert!(report.dead_letters.is_empty(), "{:?}", report.dead_letters);
    assert_eq!(end.len(), 15, "{:#?}", end.keys().collect::<Vec<_>>());
    let status = |name: &str| {
        end.get(name)
            .map(|s| s.status)
            .unwrap_or_else(|| panic!("no instance {name}"))
    };
    let result = |name: &str| {
        end[name]
            .result
            .clone()
            .unwrap_or_else(|| panic!("{name} has no result"))
    };

    assert_eq!(
        result("countdown-week")["ticks"],
        8,
        "7 daily ticks plus the 1-tick extension"
    );
    assert_eq!(result("fan-out")["completed"], 3);
    assert_eq!(result("fan-out")["failed"], 1);
    assert_eq!(
        result("fan-out")["progress_reports"],
        3 * 6 + 3,
        "every item of the 3 healthy workers, 3 of the failing one"
    );
    assert_eq!(result("approval-answered")["outcome"], "answered");
    assert_eq!(result("approval-answered")["reminders"], 1);
    assert_eq!(result("approval-silent")["outcome"], "timed_out");
    assert_eq!(result("approval-withdrawn")["outcome"], "withdrawn");
    assert_eq!(status("fan-out-cancelled"), Status::Cancelled);
    for child in ["w0000", "w0001", "w0002"] {
        assert_eq!(
            status(&format!("fan-out-cancelled/{child}")),
            Status::Cancelled
        );
    }
    assert_eq!(
        report.refused_answers.len(),
        2,
        "{:?}",
        report.refused_answers
    );
    assert_eq!(
        report.ended_at.as_millis() - report.started_at.as_millis(),
        8 * 24 * 3_600_000
    );
}

#[test]
fn every_seed_under_faults_ends_as_the_fault_free_run() {
    let (expected, _) = run_scenario(0, Faults::none());
    let seeds = seeds();
    let mut faults_seen = reanimate_core::sim::SimStats::default();
    for &seed in &seeds {
        let (end, report) = run_scenario(seed, Faults::chaos());
        let replay =
            format!("replay with: SIM_SEED={seed} cargo test -p reanimate-tests --test simulation");
        assert!(
            report.dead_letters.is_empty(),
            "seed {seed}: dead letters {:?}\n{replay}",
            report.dead_letters
        );
        if end != expected {
            for (name, want) in &expected {
                match end.get(name) {
                    Some(got) if got == want => {}
                    got => {
                        eprintln!("seed {seed}: {name}\n  expected {want:?}\n  got      {got:?}")
                    }
                }
            }
            for name in end.keys().filter(|n| !expected.contains_key(*n)) {
                eprintln!("seed {seed}: unexpected instance {name}");
            }
            panic!("seed {seed} diverged from the fault-free run\n{replay}");
        }
        faults_seen.duplicates += report.stats.duplicates;
        faults_seen.crashes += report.stats.crashes;
        faults_seen.restarts += report.stats.restarts;
        faults_seen.retried += report.stats.retried;
        faults_seen.ignored += report.stats.ignored;
        faults_seen.conflicts += report.stats.conflicts;
    }
    eprintln!(
        "{} seeds agree with the fault-free run; faults exercised: {faults_seen:?}",
        seeds.len()
    );
    if seeds.len() >= 100 {
        // The faults must really have happened, or the property above proves nothing.
        assert!(faults_seen.duplicates > 0 && faults_seen.crashes > 0 && faults_seen.restarts > 0);
        assert!(faults_seen.retried > 0 && faults_seen.conflicts > 0 && faults_seen.ignored > 0);
    }
}
