//! What the email tests read back from a simulation's end state.

use reanimate_core::Status;
use reanimate_core::sim::InstanceSummary;
use reanimate_email::atoms::AnalysisReport;
use reanimate_email::digest::Ranked;
use serde_json::Value;
use std::collections::BTreeMap;

/// Every email's ranked entry, from the summarize-rank instances' results; an email ranked twice
/// fails the test.
pub fn ranked_emails(snapshot: &BTreeMap<String, InstanceSummary>) -> BTreeMap<String, Ranked> {
    let mut ranked = BTreeMap::new();
    for s in snapshot.values().filter(|s| s.atom == "summarize-rank") {
        let list: Vec<Ranked> = serde_json::from_value(s.result.clone().unwrap_or(Value::Null))
            .unwrap_or_else(|e| panic!("{e}"));
        for entry in list {
            let id = entry.id.clone();
            assert!(
                ranked.insert(id.clone(), entry).is_none(),
                "email {id} ranked twice"
            );
        }
    }
    ranked
}

/// The report of the (one) analysis, which must have completed.
pub fn analysis_report(snapshot: &BTreeMap<String, InstanceSummary>) -> AnalysisReport {
    let analysis = snapshot
        .values()
        .find(|s| s.atom == "bulk-email-analysis")
        .unwrap_or_else(|| panic!("no analysis ran"));
    assert_eq!(analysis.status, Status::Completed, "{:?}", analysis.error);
    serde_json::from_value(analysis.result.clone().unwrap_or(Value::Null))
        .unwrap_or_else(|e| panic!("{e}"))
}
