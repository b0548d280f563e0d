//! The exactly-once property under faults. For each seed the sample scenario runs with every fault
//! injected at production limits (five receives, the real conflict budget and backoff):
//! duplicates, reordering, delays, processes stopped mid-flight at any port call (losing their
//! memory), failing and ambiguous port calls, restarts, late copies of handled messages (late
//! duplicates, dead-letter redrives), concurrent handlers racing on one instance. It must end
//! exactly as the fault-free run: the same instances with the same states, outputs and number of
//! applied transitions; the same inbox; one lifecycle event per finished instance; no timer armed
//! and no outbox unsent; every activity call run; and nothing in a dead-letter queue.
//!
//! `SIM_SEEDS=N` runs N seeds (default 1,000); `SIM_SEED=S` replays one seed.

use reanimate_core::record::Status;
use reanimate_core::sim::{EndState, Faults};
use reanimate_tests::{ScenarioRun, run_scenario};

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

/// The child whose cancel races its start: cancelled either way, but what it did before (nothing,
/// as a tombstone, or its first step) depends on which arrived first. Only its end is compared.
const RACED: &str = "cancel-race/w0000";

fn comparable(mut end: EndState) -> EndState {
    if let Some(raced) = end.instances.get_mut(RACED) {
        raced.state = String::new();
        raced.transitions = 0;
    }
    if let Some(published) = end.published.get_mut(RACED) {
        published.result = None;
    }
    end
}

#[test]
fn fault_free_run_ends_as_designed() {
    let ScenarioRun {
        end,
        report,
        activity_runs,
    } = run_scenario(0, Faults::none());
    assert!(report.dead_letters.is_empty(), "{:?}", report.dead_letters);
    let instances = &end.instances;
    assert_eq!(
        instances.len(),
        221,
        "{:#?}",
        instances.keys().collect::<Vec<_>>()
    );
    let incomplete: Vec<&String> = instances
        .iter()
        .filter(|(_, i)| !i.history_complete)
        .map(|(name, _)| name)
        .collect();
    assert!(
        incomplete.is_empty(),
        "transitions missing from the full history: {incomplete:?}"
    );
    let status = |name: &str| {
        instances
            .get(name)
            .map(|s| s.status)
            .unwrap_or_else(|| panic!("no instance {name}"))
    };
    let result = |name: &str| {
        instances[name]
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
    let fan_in = result("fan-in-200");
    assert_eq!(
        (
            &fan_in["completed"],
            &fan_in["pings"],
            &fan_in["nudges"],
            &fan_in["beats"]
        ),
        (&200.into(), &1.into(), &5.into(), &72.into()),
        "{fan_in}"
    );
    assert_eq!(fan_in["progress_reports"], 200);
    assert_eq!(result("cancel-race")["completed"], 2);
    assert_eq!(result("cancel-race")["failed"], 1);
    assert_eq!(status(RACED), Status::Cancelled);
    assert_eq!(activity_runs.len(), 200, "one checksum per worker");
    assert!(activity_runs.values().all(|runs| *runs == 1));
    assert_eq!(
        report.refused_answers.len(),
        2,
        "{:?}",
        report.refused_answers
    );
    assert!(end.armed.is_empty(), "{:?}", end.armed);
    assert!(end.unsent.is_empty());
    let finished = instances
        .values()
        .filter(|i| i.status.is_finished())
        .count();
    assert_eq!(end.published.len(), finished, "one lifecycle event each");
    assert!(end.published.values().all(|p| p.ids.len() == 1));
    assert_eq!(end.inbox.len(), 3);
    assert_eq!(
        report.ended_at.as_millis() - report.started_at.as_millis(),
        8 * 24 * 3_600_000
    );
}

/// Checks one seed against the fault-free run; returns its fault counts.
fn check_seed(seed: u64, expected: &ScenarioRun, want: &EndState) -> reanimate_core::sim::SimStats {
    let run = run_scenario(seed, Faults::chaos());
    let replay =
        format!("replay with: SIM_SEED={seed} cargo test -p reanimate-tests --test simulation");
    assert!(
        run.report.dead_letters.is_empty(),
        "seed {seed}: dead letters {:?}\n{replay}",
        run.report.dead_letters
    );
    assert!(
        run.end.armed.is_empty() && run.end.unsent.is_empty(),
        "seed {seed}: timers still armed {:?}, outboxes unsent {:?}\n{replay}",
        run.end.armed,
        run.end.unsent
    );
    let got = comparable(run.end);
    if got != *want {
        report_divergence(seed, want, &got);
        panic!("seed {seed} diverged from the fault-free run\n{replay}");
    }
    // At least once each (the activity's side effect); the outcome the step saw is the same.
    assert_eq!(
        run.activity_runs.keys().collect::<Vec<_>>(),
        expected.activity_runs.keys().collect::<Vec<_>>(),
        "seed {seed}: the same calls ran\n{replay}"
    );
    run.report.stats
}

#[test]
fn every_seed_under_faults_ends_as_the_fault_free_run() {
    let expected = run_scenario(0, Faults::none());
    let want = comparable(expected.end.clone());
    let seeds = seeds();
    // Seeds are independent: one thread per core.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let stats: Vec<reanimate_core::sim::SimStats> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (seeds, expected, want) = (&seeds, &expected, &want);
                scope.spawn(move || {
                    seeds
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|&seed| check_seed(seed, expected, want))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut f = reanimate_core::sim::SimStats::default();
    for s in &stats {
        f += s;
    }
    eprintln!(
        "{} seeds agree with the fault-free run; faults exercised: {f:?}",
        seeds.len()
    );
    if seeds.len() >= 100 {
        // The faults must really have happened, or the property above proves nothing.
        assert!(f.duplicates > 0 && f.crashes > 0 && f.restarts > 0 && f.late_copies > 0);
        assert!(f.retried > 0 && f.conflicts > 0 && f.ignored > 0 && f.deferred > 0);
        assert!(f.port_failures > 0 && f.ambiguous_saves > 0 && f.swept > 0);
    }
}

fn report_divergence(seed: u64, want: &EndState, got: &EndState) {
    for (name, w) in &want.instances {
        match got.instances.get(name) {
            Some(g) if g == w => {}
            g => eprintln!("seed {seed}: {name}\n  expected {w:?}\n  got      {g:?}"),
        }
    }
    for name in got
        .instances
        .keys()
        .filter(|n| !want.instances.contains_key(*n))
    {
        eprintln!("seed {seed}: unexpected instance {name}");
    }
    if got.inbox != want.inbox {
        eprintln!(
            "seed {seed}: inbox\n  expected {:?}\n  got      {:?}",
            want.inbox, got.inbox
        );
    }
    for (name, w) in &want.published {
        if got.published.get(name) != Some(w) {
            eprintln!(
                "seed {seed}: published for {name}\n  expected {w:?}\n  got      {:?}",
                got.published.get(name)
            );
        }
    }
}
