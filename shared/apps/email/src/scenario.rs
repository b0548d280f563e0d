//! A scripted user for the email assistant: answers each kind of question from an answer file
//! (`fixtures/demo-answers.json`), a fixed delay after it appears.

use reanimate_core::ports::InboxEntry;
use reanimate_core::sim::User;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Clone, Debug, Default)]
pub struct AnswerFile {
    /// Answers by request kind ("auth", "preferences", "plan").
    pub answers: BTreeMap<String, Value>,
    pub delay: Duration,
}

impl AnswerFile {
    /// Reads `{"auth": {...}, "preferences": {...}}`.
    pub fn parse(json: &str, delay: Duration) -> Result<Self, String> {
        let answers: BTreeMap<String, Value> =
            serde_json::from_str(json).map_err(|e| format!("answer file: {e}"))?;
        Ok(Self { answers, delay })
    }

    pub fn answer(&self, kind: &str) -> Option<&Value> {
        self.answers.get(kind)
    }
}

impl User for AnswerFile {
    fn on_request(&mut self, entry: &InboxEntry) -> Vec<(Duration, Value)> {
        self.answer(&entry.request.kind)
            .map(|a| vec![(self.delay, a.clone())])
            .unwrap_or_default()
    }
}
