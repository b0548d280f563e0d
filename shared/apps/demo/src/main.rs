//! `make demo`: the sample scenario on the in-memory engine with virtual time. Prints every
//! transition as it is saved, then how each instance ended, the inbox, and the engine's counters.

use reanimate_atoms::{registry, scenario};
use reanimate_core::sim::{Faults, SIM_EPOCH, Simulation};
use reanimate_core::{Result, Transition};
use std::sync::Arc;
use std::time::Instant;

fn main() -> Result<()> {
    let faults = if std::env::var("DEMO_FAULTS").is_ok_and(|v| v == "1") {
        Faults::chaos()
    } else {
        Faults::none()
    };
    let seed = std::env::var("DEMO_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!(
        "reanimate demo: sample atoms on the in-memory engine (virtual time from {SIM_EPOCH})"
    );
    println!(
        "faults: {}\n",
        if faults.concurrency > 1 {
            format!("chaos, seed {seed}")
        } else {
            "none".into()
        }
    );

    let print = |t: &Transition| {
        let elapsed = SIM_EPOCH.until(t.at).as_secs();
        let clock = format!(
            "+{}d{:02}h{:02}m{:02}s",
            elapsed / 86_400,
            elapsed / 3600 % 24,
            elapsed / 60 % 60,
            elapsed % 60
        );
        let effects = if t.effects.is_empty() {
            String::new()
        } else {
            format!("  → {}", t.effects.join("; "))
        };
        println!(
            "{clock:>14}  {:<34} {:<16} v{:<3} {:<10}{effects}",
            t.instance.as_str(),
            t.event,
            t.version,
            t.status.as_str()
        );
    };
    let mut sim = Simulation::with_observer(registry(), seed, faults, Some(Arc::new(print)));
    scenario::load(&mut sim)?;
    let wall = Instant::now();
    let report = sim.run(&mut scenario::ScriptedUser::default())?;
    let wall = wall.elapsed();

    println!("\nhow each instance ended:");
    for record in sim.store().all() {
        let outcome = match (&record.result, &record.error) {
            (Some(result), _) => result.to_string(),
            (None, Some(error)) => error.clone(),
            _ => String::new(),
        };
        println!(
            "  {:<34} {:<10} {:<10} {outcome}",
            record.id.as_str(),
            record.atom,
            record.status.as_str()
        );
    }
    println!("\ninbox:");
    for entry in sim.inbox().all() {
        let answer = entry.answer.map(|a| a.to_string()).unwrap_or_default();
        println!(
            "  {:<28} {:<9} {:?} {:?} {answer}",
            entry.request.id.as_str(),
            entry.request.kind,
            entry.status,
            entry.request.prompt
        );
    }
    for refused in &report.refused_answers {
        println!("  refused answer: {refused}");
    }
    let store = sim.store().stats();
    let (sends, messages) = sim.queue().stats();
    let (scheduled, cancelled) = sim.timers().stats();
    let s = &report.stats;
    println!(
        "\nmessages handled {} (applied {}, duplicates {}, ignored {}, retried {}), dead letters {}",
        s.handled,
        s.applied,
        s.duplicates,
        s.ignored,
        s.retried,
        report.dead_letters.len()
    );
    println!(
        "store: {} loads, {} saves, {} conflicts; queue: {sends} sends of {messages} messages; timers: {scheduled} armed, {cancelled} cancelled",
        store.loads, store.saves, store.conflicts
    );
    println!(
        "virtual time {:.1} days in {:.1} ms of wall time",
        report.started_at.until(report.ended_at).as_secs_f64() / 86_400.0,
        wall.as_secs_f64() * 1e3
    );
    Ok(())
}
