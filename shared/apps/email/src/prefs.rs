//! The user's digest preferences, as the email assistant extracts them from free text.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grouping {
    Hour,
    #[default]
    Day,
    Week,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Style {
    #[default]
    Short,
    Detailed,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    pub grouping: Grouping,
    /// Addresses whose mail is always most important (lower-case).
    #[serde(default)]
    pub urgent_senders: Vec<String>,
    /// Topics that raise an email's importance.
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub style: Style,
}

impl Preferences {
    /// The JSON Schema a model's extraction must satisfy.
    pub fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["grouping", "urgent_senders", "keywords", "style"],
            "additionalProperties": false,
            "properties": {
                "grouping": {"enum": ["hour", "day", "week"]},
                "urgent_senders": {"type": "array", "items": {"type": "string", "pattern": "^[^@\\s]+@[^@\\s]+$"}, "maxItems": 50},
                "keywords": {"type": "array", "items": {"type": "string", "minLength": 2, "maxLength": 40}, "maxItems": 50},
                "style": {"enum": ["short", "detailed"]}
            }
        })
    }

    pub fn is_urgent_sender(&self, address: &str) -> bool {
        self.urgent_senders
            .iter()
            .any(|s| s.eq_ignore_ascii_case(address))
    }
}
