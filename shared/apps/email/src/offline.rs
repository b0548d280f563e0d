//! `OfflineHeuristicModel`: a deterministic stand-in for a language model, so the demo and the
//! tests run without a key or a network. It is not a language model and does not pretend to be:
//! it answers the email tasks with fixed rules over the structured request.
//!
//! - `summarize_rank`: an extractive summary (the body's first sentences) and an importance from
//!   the sender, keywords and the user's stated priorities.
//! - `preferences`: grouping, urgent senders (addresses in the text) and known topics.
//! - `decide`: the step the playbook's own rules suggest (`hint.suggested`), if it is declared.
//!
//! Untrusted text is only ever summarised: nothing in it can change a rank rule or a step.

use crate::prefs::{Grouping, Preferences, Style};
use reanimate_core::playbook::{Model, ModelRequest, Untrusted};
use reanimate_core::{BoxFuture, Error, Result};
use serde_json::{Value, json};

/// Topics the heuristics recognise in the user's text and in emails.
pub const KNOWN_TOPICS: &[&str] = &[
    "security",
    "outage",
    "incident",
    "invoice",
    "customer",
    "escalation",
    "escalated",
    "deadline",
    "budget",
    "board",
    "contract",
    "renewal",
    "interview",
    "review",
    "alert",
    "password",
];

/// Words that make an email read as bulk mail.
const BULK_MARKERS: &[&str] = &[
    "unsubscribe",
    "no-reply",
    "noreply",
    "newsletter",
    "offers@",
    "webinar",
    "sale",
];

#[derive(Clone, Debug, Default)]
pub struct OfflineHeuristicModel;

impl Model for OfflineHeuristicModel {
    fn name(&self) -> &str {
        "offline-heuristic"
    }

    fn complete<'a>(&'a self, request: &'a ModelRequest) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let answer = match request.task.as_str() {
                "decide" => decide(request),
                "summarize_rank" => summarize_rank(request),
                "preferences" => preferences(request),
                other => {
                    return Err(Error::terminal(format!(
                        "the offline heuristic model has no rule for task {other:?}; configure a language model"
                    )));
                }
            };
            Ok(answer.to_string())
        })
    }
}

fn decide(request: &ModelRequest) -> Value {
    let declared = request.output_schema["properties"]["step"]["enum"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let suggested = &request.hint["suggested"];
    match suggested["step"].as_str() {
        Some(step) if declared.iter().any(|d| d == step) => json!({
            "step": step,
            "args": suggested.get("args").cloned().unwrap_or_else(|| json!({})),
            "why": request.hint.get("why").and_then(Value::as_str).unwrap_or("the playbook's rule for this situation"),
        }),
        // Nothing usable to go on: an answer the playbook will refuse, which sends the decision
        // to the planner, as an undecidable case should.
        _ => json!({"step": "undecided", "args": {}, "why": "no rule applies"}),
    }
}

/// `From: …\nSubject: …\n\n<body>` → (from, subject, body).
fn split_email(item: &Untrusted) -> (&str, &str, &str) {
    let (head, body) = item.text.split_once("\n\n").unwrap_or(("", &item.text));
    let mut from = "";
    let mut subject = "";
    for line in head.lines() {
        if let Some(v) = line.strip_prefix("From: ") {
            from = v.trim();
        } else if let Some(v) = line.strip_prefix("Subject: ") {
            subject = v.trim();
        }
    }
    (from, subject, body)
}

/// The first sentences of the body, greeting and sign-off left out, at most `max` characters.
pub fn extractive_summary(body: &str, max: usize) -> String {
    let mut text = String::new();
    for line in body.lines().map(str::trim) {
        let lower = line.to_ascii_lowercase();
        let greeting =
            (lower.starts_with("hi ") || lower.starts_with("hello") || lower.starts_with("dear"))
                && line.ends_with(',');
        if line.is_empty() || greeting || line.starts_with('>') {
            continue;
        }
        if ["thanks", "best", "cheers", "regards"]
            .iter()
            .any(|s| lower.starts_with(s))
        {
            break;
        }
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(line);
    }
    let mut summary = String::new();
    for sentence in text.split_inclusive(['.', '!', '?']) {
        if !summary.is_empty() && summary.len() + sentence.len() > max {
            break;
        }
        summary.push_str(sentence);
    }
    let summary = summary.trim();
    if summary.chars().count() > max {
        let cut: String = summary.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        summary.to_string()
    }
}

/// (rank 1–5, reason) for one email under the user's preferences.
pub fn rank(prefs: &Preferences, from: &str, subject: &str, body: &str) -> (u8, String) {
    let address = from
        .rsplit_once('<')
        .map_or(from, |(_, a)| a.trim_end_matches('>'))
        .to_ascii_lowercase();
    if prefs.is_urgent_sender(&address) {
        return (5, format!("from {address}, whom you marked urgent"));
    }
    let text = format!("{subject} {body}").to_ascii_lowercase();
    if BULK_MARKERS
        .iter()
        .any(|m| address.contains(m) || text.contains(m))
    {
        return (1, "bulk mail (newsletter or promotion)".into());
    }
    let mentioned: Vec<&String> = prefs
        .keywords
        .iter()
        .filter(|k| text.contains(&k.to_ascii_lowercase()))
        .collect();
    if let Some(topic) = mentioned.first() {
        return (4, format!("about {topic}, a topic you care about"));
    }
    if text.contains("alert") || text.contains("urgent") || text.contains("asap") {
        return (4, "an alert or an urgent request".into());
    }
    let internal = prefs
        .urgent_senders
        .iter()
        .filter_map(|s| s.split_once('@').map(|(_, d)| d))
        .any(|domain| address.ends_with(domain));
    if internal {
        return (3, "from a colleague".into());
    }
    (2, "routine mail".into())
}

fn summarize_rank(request: &ModelRequest) -> Value {
    let prefs: Preferences =
        serde_json::from_value(request.facts["preferences"].clone()).unwrap_or_default();
    let max = match prefs.style {
        Style::Short => 140,
        Style::Detailed => 280,
    };
    let items: Vec<Value> = request
        .data
        .iter()
        .filter_map(|item| {
            let id = item.label.strip_prefix("email ")?;
            let (from, subject, body) = split_email(item);
            let (rank, reason) = rank(&prefs, from, subject, body);
            Some(json!({
                "id": id,
                "summary": extractive_summary(body, max),
                "rank": rank,
                "reason": reason,
            }))
        })
        .collect();
    json!({ "items": items })
}

fn preferences(request: &ModelRequest) -> Value {
    let text: String = request
        .data
        .iter()
        .map(|d| d.text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let lower = text.to_ascii_lowercase();
    let grouping = if lower.contains("hour") {
        Grouping::Hour
    } else if lower.contains("week") {
        Grouping::Week
    } else {
        Grouping::Day
    };
    let urgent_senders: Vec<String> = text
        .split(|c: char| c.is_whitespace() || ",;()<>\"'".contains(c))
        .map(|w| w.trim_end_matches(['.', ':', '!']).to_ascii_lowercase())
        .filter(|w| {
            w.split_once('@')
                .is_some_and(|(a, d)| !a.is_empty() && d.contains('.'))
        })
        .collect();
    let keywords: Vec<String> = KNOWN_TOPICS
        .iter()
        .filter(|t| lower.contains(*t))
        .map(|t| t.to_string())
        .collect();
    let style = if lower.contains("detail") || lower.contains("long") {
        Style::Detailed
    } else {
        Style::Short
    };
    serde_json::to_value(Preferences {
        grouping,
        urgent_senders,
        keywords,
        style,
    })
    .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_extractive_and_ranks_follow_the_rules() {
        let body = "Hi Sam,\n\nI need the final board deck by 3pm today. Please include the forecast. Ping me.\n\nThanks,\nDana";
        assert_eq!(
            extractive_summary(body, 60),
            "I need the final board deck by 3pm today."
        );
        let prefs = Preferences {
            urgent_senders: vec!["dana@acme.example".into()],
            keywords: vec!["security".into()],
            ..Preferences::default()
        };
        assert_eq!(rank(&prefs, "Dana <dana@acme.example>", "x", "y").0, 5);
        assert_eq!(
            rank(
                &prefs,
                "sec@acme.example",
                "Unusual sign-in",
                "security notice"
            )
            .0,
            4
        );
        assert_eq!(
            rank(&prefs, "offers@deals.example", "Sale", "unsubscribe").0,
            1
        );
        assert_eq!(rank(&prefs, "tom@acme.example", "Lunch", "ramen?").0, 3);
    }
}
