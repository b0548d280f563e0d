//! What the email atoms say to people and to models: the questions they ask the user (with the
//! JSON Schema each answer must satisfy), the instructions and the steps a model chooses among,
//! and the facts a decision sees. Kept apart from the atoms' logic, so wording changes are
//! reviewed as wording.

use super::analysis::SUMMARIZE_CAREFULLY;
use super::planner::{ASK_USER, CHOOSE_STEP, PlanInput};
use super::{AUTH, PREFERENCES, SUMMARIZE};
use crate::mail::EmailHeader;
use crate::prefs::Preferences;
use reanimate_core::playbook::{Generation, StepSpec, Tier, Untrusted};
use reanimate_core::{Ask, Timestamp};
use serde_json::{Value, json};

pub fn auth_ask(prompt_prefix: &str, deadline: Timestamp, person: Option<String>) -> Ask {
    Ask {
        kind: AUTH.into(),
        prompt: format!(
            "{prompt_prefix}Which mailbox should I read? A Maildir folder (relative to the mail root), or Gmail: press Connect Gmail in your inbox (or run `reanimate connect gmail --request <this request>`) to sign in with Google (the refresh token is kept as a secret, never in my state)."
        ),
        schema: json!({
            "type": "object",
            "required": ["mailbox"],
            "additionalProperties": false,
            "properties": {"mailbox": {"oneOf": [
                {
                    "type": "object",
                    "required": ["kind", "path"],
                    "additionalProperties": false,
                    "properties": {"kind": {"const": "maildir"}, "path": {"type": "string", "minLength": 1}}
                },
                {
                    "type": "object",
                    "required": ["kind", "refresh_token"],
                    "additionalProperties": false,
                    "properties": {
                        "kind": {"const": "gmail"},
                        // Kept in the secret store by the client that answers; the assistant
                        // only ever sees a reference to it.
                        "refresh_token": {"type": "string", "minLength": 8, "writeOnly": true},
                        "query": {"type": "string"}
                    }
                }
            ]}}
        }),
        deadline: Some(deadline),
        person,
    }
}

pub fn preferences_ask(prompt_prefix: &str, deadline: Timestamp, person: Option<String>) -> Ask {
    Ask {
        kind: PREFERENCES.into(),
        prompt: format!(
            "{prompt_prefix}How would you like your digests? In your own words: how often (hourly, daily, weekly), how long, and whose mail or which topics are urgent."
        ),
        schema: json!({
            "type": "object",
            "required": ["text"],
            "additionalProperties": false,
            "properties": {"text": {"type": "string", "minLength": 3, "maxLength": 2000}}
        }),
        deadline: Some(deadline),
        person,
    }
}

/// Turns the user's own words into [`Preferences`] (the text is untrusted data to the model).
pub fn preferences_generation(text: &str) -> Generation {
    Generation {
        task: "preferences".into(),
        instructions: "Turn the user's description of how they want their email digests into structured preferences: grouping (hour, day or week), the email addresses whose mail is urgent, topics that matter, and the style (short or detailed).".into(),
        facts: Value::Null,
        data: vec![Untrusted::new("the user's answer", text.to_string())],
        output_schema: Preferences::schema(),
        tier: Tier::Standard,
        hint: Value::Null,
    }
}

/// The steps a batch decision may choose from. Nothing else exists. They take no arguments: the
/// batch a decision applies to is the one the decision was asked about (its call's tag), never
/// one a model names.
pub fn batch_steps() -> Vec<StepSpec> {
    let args = json!({"type": "object"});
    vec![
        StepSpec::new(
            SUMMARIZE,
            "Summarise and rank every email of the batch with the standard model.",
            args.clone(),
        ),
        StepSpec::new(
            SUMMARIZE_CAREFULLY,
            "Summarise and rank every email of the batch with the stronger model; worth it when the batch holds mail from urgent senders or about the user's topics.",
            args,
        ),
    ]
}

/// What the application knows about a batch, for a decision: counts it computed itself. No email
/// text is shown to the deciding model, so no email can steer a decision.
pub fn batch_facts(preferences: &Preferences, seq: u64, emails: &[EmailHeader]) -> Value {
    let urgent = emails
        .iter()
        .filter(|e| preferences.is_urgent_sender(&e.from))
        .count();
    let on_topic = emails
        .iter()
        .filter(|e| {
            let subject = e.subject.to_lowercase();
            preferences
                .keywords
                .iter()
                .any(|k| subject.contains(&k.to_lowercase()))
        })
        .count();
    json!({
        "batch": seq,
        "emails": emails.len(),
        "from_urgent_senders": urgent,
        "subjects_on_user_topics": on_topic,
    })
}

/// The step the playbook's own rule takes for a batch.
pub fn suggested_step(facts: &Value) -> &'static str {
    if facts["from_urgent_senders"].as_u64().unwrap_or(0) > 0 {
        SUMMARIZE_CAREFULLY
    } else {
        SUMMARIZE
    }
}

/// The steps the planner's model may choose: the playbook's, and asking the user.
pub fn planner_steps(input: &PlanInput) -> Vec<StepSpec> {
    let mut steps = input.steps.clone();
    steps.push(StepSpec::new(
        ASK_USER,
        "Ask the user to choose among the declared steps, when the choice needs their judgement. The question is written by the application.",
        json!({"type": "object"}),
    ));
    steps
}

/// The planner's goal for its model.
pub fn planner_goal(input: &PlanInput) -> String {
    format!(
        "{} The workflow could not choose its next step automatically (the data says what went wrong). Choose the declared step that best serves the goal, or ask the user.",
        input.goal
    )
}

/// The one question the planner may put to the user: which declared step to take. The
/// application writes it; no model does.
pub fn choose_step_ask(input: &PlanInput, deadline: Timestamp) -> Ask {
    let mut prompt = format!(
        "{} The assistant could not decide how to go on and asks you to choose:",
        input.goal
    );
    for step in &input.steps {
        prompt.push_str(&format!("\n- {}: {}", step.name, step.description));
    }
    let names: Vec<&str> = input.steps.iter().map(|s| s.name.as_str()).collect();
    Ask {
        kind: CHOOSE_STEP.into(),
        prompt,
        schema: json!({
            "type": "object",
            "required": ["step"],
            "additionalProperties": false,
            "properties": {"step": {"enum": names}}
        }),
        deadline: Some(deadline),
        // The planner does not know whom the assistant serves: its question is answered
        // through the operator's client.
        person: None,
    }
}
