//! Summarising and ranking a batch: the `email.summarize_rank` activity.
//!
//! The activity reads the batch's bodies itself (capped at [`BODY_CAP_BYTES`]), so no body ever
//! enters a record or a message: only the ranked result is journaled.
//!
//! Model output is checked, not trusted:
//! - each request's schema is built for its emails: their ids as an `enum`, `minItems` =
//!   `maxItems` = their number, and every id exactly once is checked inside the retry loop, with
//!   the problem fed back to the model;
//! - what the model still leaves out is ranked by the offline rules, and marked as such;
//! - each email is asked about in a request of its own ([`EMAILS_PER_REQUEST`]): an email's
//!   text never shares a context with another email, so whatever one email tells the model, it
//!   can change no other email's summary or rank. (Batching several emails per request is
//!   cheaper in tokens, and no schema can stop an obedient model from re-ranking the others.)
//!
//! [`BODY_CAP_BYTES`]: crate::mail::BODY_CAP_BYTES

use crate::digest::Ranked;
use crate::mail::{Email, EmailHeader, GetEmails, MailSource, MailboxRef};
use crate::offline;
use crate::prefs::{Preferences, Style};
use reanimate_core::playbook::{
    Generation, ModelActivities, Tier, Untrusted, parse_json_answer, render_generation,
};
use reanimate_core::schema;
use reanimate_core::{Activities, Activity, BoxFuture, CallInfo, Error, Payload, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Activity: summarises and ranks a batch. Input [`RankRequest`], output `Vec<Ranked>` in the
/// batch's order, every email exactly once.
pub const SUMMARIZE_RANK: &str = "email.summarize_rank";

/// [`SUMMARIZE_RANK`] with its types.
#[derive(Debug)]
pub struct SummarizeRankCall;

impl reanimate_core::CallType for SummarizeRankCall {
    const ACTIVITY: &'static str = SUMMARIZE_RANK;
    type Input = RankRequest;
    type Output = Vec<crate::digest::Ranked>;
}

/// Emails per model request. One: see the module's documentation.
pub const EMAILS_PER_REQUEST: usize = 1;

/// What a summary may hold, in characters (the schema's `maxLength`).
const SUMMARY_MAX: usize = 400;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RankRequest {
    pub mailbox: MailboxRef,
    pub emails: Vec<EmailHeader>,
    pub preferences: Preferences,
    #[serde(default)]
    pub tier: Tier,
}

/// The schema of one item of a ranking.
fn item_schema(ids: &[&str]) -> Value {
    json!({
        "type": "object",
        "required": ["id", "summary", "rank", "reason"],
        "additionalProperties": false,
        "properties": {
            "id": {"enum": ids},
            "summary": {"type": "string", "maxLength": SUMMARY_MAX},
            "rank": {"type": "integer", "minimum": 1, "maximum": 5},
            "reason": {"type": "string", "maxLength": 200}
        }
    })
}

/// What the model must return for `ids`: one item per id, no other id.
pub fn rank_schema(ids: &[&str]) -> Value {
    json!({
        "type": "object",
        "required": ["items"],
        "additionalProperties": false,
        "properties": {"items": {
            "type": "array",
            "minItems": ids.len(),
            "maxItems": ids.len(),
            "items": item_schema(ids)
        }}
    })
}

/// The valid items of an answer, first occurrence of each id; and the problems that make the
/// answer incomplete (a missing id, an id twice).
fn valid_items(ids: &[&str], value: &Value) -> (BTreeMap<String, Value>, Vec<String>) {
    let schema = item_schema(ids);
    let mut items = BTreeMap::new();
    let mut problems = Vec::new();
    for item in value["items"].as_array().into_iter().flatten() {
        if schema::validate_answer(&schema, item).is_err() {
            continue;
        }
        let id = item["id"].as_str().unwrap_or_default().to_string();
        match items.entry(id) {
            std::collections::btree_map::Entry::Occupied(seen) => {
                problems.push(format!("email {} appears more than once", seen.key()));
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(item.clone());
            }
        }
    }
    for id in ids {
        if !items.contains_key(*id) {
            problems.push(format!("email {id} is missing"));
        }
    }
    (items, problems)
}

/// The offline rules' ranking of an email, marked with why it was not the model's.
pub fn offline_ranked(email: &Email, preferences: &Preferences, note: &str) -> Ranked {
    let max = match preferences.style {
        Style::Short => 140,
        Style::Detailed => 280,
    };
    let (rank, reason) = offline::rank(preferences, &email.from, &email.subject, &email.body);
    Ranked {
        summary: offline::extractive_summary(&email.body, max),
        rank,
        reason,
        note: Some(note.to_string()),
        ..Ranked::of(&email.header())
    }
}

const INSTRUCTIONS: &str = "Summarise the email below in one or two sentences (what it says or asks), and rank its importance to the user from 1 (ignore) to 5 (urgent) with a short reason, applying the user's preferences in the facts. Return one item with the email's id.";

struct RankActivity {
    models: ModelActivities,
    mail: Arc<dyn MailSource>,
}

impl RankActivity {
    /// Ranks `emails` (readable ones) with one model request.
    async fn rank_together(
        &self,
        emails: &[&Email],
        preferences: &Preferences,
        tier: Tier,
    ) -> Result<Vec<Ranked>> {
        let ids: Vec<&str> = emails.iter().map(|e| e.id.as_str()).collect();
        let generation = Generation {
            task: "summarize_rank".into(),
            instructions: INSTRUCTIONS.into(),
            facts: json!({ "preferences": preferences }),
            data: emails
                .iter()
                .map(|e| {
                    Untrusted::new(
                        format!("email {}", e.id),
                        format!(
                            "From: {} <{}>\nSubject: {}\n\n{}",
                            e.from_name, e.from, e.subject, e.body
                        ),
                    )
                })
                .collect(),
            output_schema: rank_schema(&ids),
            tier,
            hint: Value::Null,
        };
        // The best answer seen, kept so that what the model gets right survives a refusal.
        let best: Mutex<BTreeMap<String, Value>> = Mutex::default();
        let asked = self
            .models
            .ask(render_generation(&generation), |raw| {
                // Parsed once; checked against the schema and for completeness.
                let (parsed, value) = match parse_json_answer(raw) {
                    Ok(parsed) => {
                        let checked = schema::validate_answer(&generation.output_schema, &parsed)
                            .map_err(|e| e.reason);
                        (parsed, checked)
                    }
                    Err(problem) => (Value::Null, Err(problem)),
                };
                let (items, problems) = valid_items(&ids, &parsed);
                let mut kept = best.lock().unwrap_or_else(|p| p.into_inner());
                if items.len() > kept.len() {
                    *kept = items;
                }
                // Say which emails are missing or doubled, besides what the schema says: that
                // is what the model needs to fix its answer.
                let mut all = problems;
                if let Err(problem) = value {
                    all.insert(0, problem);
                }
                if all.is_empty() {
                    Ok(())
                } else {
                    Err(all.join("; "))
                }
            })
            .await;
        let model_note = match asked {
            Ok((_, _, model)) => format!("ranked by {model}"),
            // A model that answered but never completely: keep what it did answer.
            Err(e) if e.kind == reanimate_core::ErrorKind::Terminal => e.reason,
            Err(e) => return Err(e),
        };
        let items = best.into_inner().unwrap_or_else(|p| p.into_inner());
        Ok(emails
            .iter()
            .map(|email| match items.get(&email.id) {
                Some(item) => Ranked {
                    summary: item["summary"].as_str().unwrap_or_default().to_string(),
                    rank: item["rank"].as_u64().unwrap_or(1).clamp(1, 5) as u8,
                    reason: item["reason"].as_str().unwrap_or_default().to_string(),
                    ..Ranked::of(&email.header())
                },
                None => {
                    tracing::info!(email = %email.id, %model_note, "ranked offline");
                    offline_ranked(email, preferences, "ranked offline: the model left it out")
                }
            })
            .collect())
    }
}

impl Activity for RankActivity {
    fn run<'a>(&'a self, input: Value, call: &'a CallInfo) -> BoxFuture<'a, Result<Value>> {
        Box::pin(async move {
            let request: RankRequest = Payload::new(input).decode()?;
            crate::mail::check_owner(&request.mailbox, self.mail.secret_namespace(), call)?;
            let emails = self
                .mail
                .get(&GetEmails {
                    mailbox: request.mailbox.clone(),
                    ids: request.emails.iter().map(|e| e.id.clone()).collect(),
                })
                .await?;
            let readable: Vec<&Email> = emails.iter().filter(|e| !e.unreadable).collect();
            let ranked = futures_util::future::try_join_all(
                readable
                    .chunks(EMAILS_PER_REQUEST)
                    .map(|chunk| self.rank_together(chunk, &request.preferences, request.tier)),
            )
            .await?;
            let mut by_id: BTreeMap<String, Ranked> = ranked
                .into_iter()
                .flatten()
                .map(|r| (r.id.clone(), r))
                .collect();
            // The batch's order and headers; an email that could not be read keeps the headers
            // the listing gave.
            let out: Vec<Ranked> = request
                .emails
                .iter()
                .map(|header| match by_id.remove(&header.id) {
                    // The listing's headers, so the entry lands in the group that counted it.
                    Some(entry) => Ranked {
                        from: header.from.clone(),
                        subject: header.subject.clone(),
                        date: header.date,
                        ..entry
                    },
                    None => Ranked::unreadable(header),
                })
                .collect();
            serde_json::to_value(out).map_err(|e| Error::terminal(e.to_string()))
        })
    }

    fn time_limit(&self) -> std::time::Duration {
        reanimate_core::playbook::MODEL_CALL_TIME_LIMIT
    }
}

/// The `email.summarize_rank` activity on `models` and a mailbox.
pub fn activities(models: ModelActivities, mail: Arc<dyn MailSource>) -> Activities {
    Activities::new().with(SUMMARIZE_RANK, Arc::new(RankActivity { models, mail }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_names_the_batch_ids_once_each_and_completeness_is_checked() {
        let ids = ["a1", "b2"];
        let schema = rank_schema(&ids);
        assert_eq!(schema["properties"]["items"]["minItems"], 2);
        assert_eq!(schema["properties"]["items"]["maxItems"], 2);
        let item = |id: &str| json!({"id": id, "summary": "s", "rank": 3, "reason": "r"});
        let twice = json!({"items": [item("a1"), item("a1")]});
        assert!(
            schema::validate_answer(&schema, &twice).is_ok(),
            "a schema cannot see it"
        );
        let (items, problems) = valid_items(&ids, &twice);
        assert_eq!(items.len(), 1);
        assert_eq!(
            problems,
            ["email a1 appears more than once", "email b2 is missing"]
        );
        let other = json!({"items": [item("a1"), item("zz")]});
        assert!(schema::validate_answer(&schema, &other).is_err());
        let (items, problems) = valid_items(&ids, &other);
        assert_eq!(items.keys().collect::<Vec<_>>(), ["a1"]);
        assert_eq!(problems, ["email b2 is missing"]);
    }

    /// A model that leaves an email out of its first answer and includes it when told.
    struct ForgetfulOnce(std::sync::atomic::AtomicU32);

    impl reanimate_core::playbook::Model for ForgetfulOnce {
        fn name(&self) -> &str {
            "forgetful-once"
        }
        fn complete<'a>(
            &'a self,
            request: &'a reanimate_core::playbook::ModelRequest,
        ) -> BoxFuture<'a, Result<String>> {
            let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let told = request
                .messages
                .iter()
                .any(|m| m.content.contains("is missing"));
            Box::pin(async move {
                let items = if n == 0 || !told {
                    json!([])
                } else {
                    json!([{"id": "m1", "summary": "The deck is due.", "rank": 4, "reason": "a deadline"}])
                };
                Ok(json!({ "items": items }).to_string())
            })
        }
    }

    struct OneEmail;

    impl MailSource for OneEmail {
        fn page<'a>(
            &'a self,
            _: &'a crate::mail::FetchPage,
        ) -> BoxFuture<'a, Result<crate::mail::Page>> {
            Box::pin(async { Err(Error::terminal("not listed here")) })
        }
        fn get<'a>(&'a self, _: &'a GetEmails) -> BoxFuture<'a, Result<Vec<Email>>> {
            Box::pin(async {
                Ok(vec![crate::mail::parse_message(
                    "m1",
                    b"From: dana@acme.example\nSubject: Deck\n\nThe deck is due at 3pm.",
                    None,
                )])
            })
        }
    }

    fn rank_with(model: Arc<dyn reanimate_core::playbook::Model>) -> Vec<Ranked> {
        let activity = RankActivity {
            models: ModelActivities::new(Arc::clone(&model), model),
            mail: Arc::new(OneEmail),
        };
        let request = RankRequest {
            mailbox: MailboxRef::Maildir { path: "x".into() },
            emails: vec![EmailHeader {
                id: "m1".into(),
                from: "dana@acme.example".into(),
                subject: "Deck".into(),
                date: reanimate_core::Timestamp::EPOCH,
                received: reanimate_core::Timestamp::EPOCH,
                size: 20,
                unreadable: false,
            }],
            preferences: Preferences::default(),
            tier: Tier::Standard,
        };
        let info = CallInfo {
            id: reanimate_core::MessageId::new("assistant-sam/1.0@2.0")
                .unwrap_or_else(|e| panic!("{e}")),
            attempt: 1,
            time_limit: std::time::Duration::from_secs(60),
        };
        let output = reanimate_core::sim::block_on(
            activity.run(serde_json::to_value(request).unwrap_or_default(), &info),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_value(output).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn an_omission_is_fed_back_to_the_model_and_what_it_still_omits_is_ranked_offline() {
        // Told what is missing, the model fixes its answer: its ranking is kept.
        let ranked = rank_with(Arc::new(ForgetfulOnce(Default::default())));
        assert_eq!(ranked.len(), 1);
        assert_eq!((ranked[0].rank, ranked[0].note.as_deref()), (4, None));
        assert_eq!(ranked[0].summary, "The deck is due.");

        // A model that never includes it: the offline rules rank it, and say so.
        struct Never;
        impl reanimate_core::playbook::Model for Never {
            fn name(&self) -> &str {
                "never"
            }
            fn complete<'a>(
                &'a self,
                _: &'a reanimate_core::playbook::ModelRequest,
            ) -> BoxFuture<'a, Result<String>> {
                Box::pin(async { Ok(r#"{"items": []}"#.to_string()) })
            }
        }
        let ranked = rank_with(Arc::new(Never));
        assert_eq!(ranked.len(), 1);
        assert_eq!(
            ranked[0].note.as_deref(),
            Some("ranked offline: the model left it out")
        );
        assert_eq!(ranked[0].summary, "The deck is due at 3pm.");
    }
}
