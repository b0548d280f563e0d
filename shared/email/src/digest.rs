//! Digests: grouping emails by hour, day or week, rendering a group as Markdown, and the
//! `digest.store` activity that puts it somewhere durable (S3 on AWS, a folder locally).

use crate::prefs::Grouping;
use reanimate_core::{Activities, Activity, BoxFuture, CallInfo, Error, Result, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

/// Activity: stores one digest. Input [`StoreDigest`], output [`Stored`].
pub const STORE: &str = "digest.store";

/// One summarised, ranked email: a line of a digest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    pub id: String,
    pub from: String,
    pub subject: String,
    pub date: Timestamp,
    pub summary: String,
    /// 1 (ignore) to 5 (urgent).
    pub rank: u8,
    pub reason: String,
}

/// The group an email belongs to: `2026-01-05T09` (hour), `2026-01-05` (day), `2026-W02` (ISO
/// week). Keys sort in time order, which is how the analysis knows a group is closed.
pub fn group_key(date: Timestamp, grouping: Grouping) -> String {
    let iso = date.to_string(); // 2026-01-05T09:30:00.000Z
    match grouping {
        Grouping::Hour => iso[..13].to_string(),
        Grouping::Day => iso[..10].to_string(),
        Grouping::Week => {
            let days = (date.as_millis() / 86_400_000) as i64;
            // 1970-01-01 was a Thursday; ISO weeks start on Monday and belong to the year of
            // their Thursday.
            let weekday = (days + 3).rem_euclid(7); // 0 = Monday
            let thursday = days - weekday + 3;
            let thursday_iso = Timestamp::from_millis((thursday as u64) * 86_400_000).to_string();
            let year = &thursday_iso[..4];
            let jan1 = days_from_year(year.parse().unwrap_or(1970));
            let week = (thursday - jan1) / 7 + 1;
            format!("{year}-W{week:02}")
        }
    }
}

fn days_from_year(year: i64) -> i64 {
    let y = year - 1;
    365 * (year - 1970) + (y / 4 - y / 100 + y / 400) - (1969 / 4 - 1969 / 100 + 1969 / 400)
}

/// Orders a group's entries for its digest: most important first, then oldest first.
pub fn sort_for_digest(entries: &mut [Ranked]) {
    entries.sort_by(|a, b| {
        b.rank
            .cmp(&a.rank)
            .then(a.date.cmp(&b.date))
            .then(a.id.cmp(&b.id))
    });
}

/// The Markdown digest of one group (entries already sorted).
pub fn render(user: &str, group: &str, grouping: Grouping, entries: &[Ranked]) -> String {
    let period = match grouping {
        Grouping::Hour => "Hourly",
        Grouping::Day => "Daily",
        Grouping::Week => "Weekly",
    };
    let mut out = format!(
        "# {period} digest for {user}: {group}\n\n{} emails, most important first.\n",
        entries.len()
    );
    for (i, e) in entries.iter().enumerate() {
        let stars = "★".repeat(e.rank as usize) + &"☆".repeat(5 - e.rank.min(5) as usize);
        let _ = write!(
            out,
            "\n## {}. {} {stars}\nFrom {} · {}\n\n{}\n\n_Why: {}_\n",
            i + 1,
            one_line(&e.subject),
            e.from,
            e.date,
            one_line(&e.summary),
            one_line(&e.reason)
        );
    }
    out
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreDigest {
    /// `digests/{user}/{group}.md`.
    pub key: String,
    pub markdown: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// Where it went (`s3://bucket/key`, a file path).
    pub location: String,
}

/// Where digests are kept. `put` overwrites: storing the same digest twice is harmless.
pub trait DigestStore: Send + Sync {
    fn put<'a>(&'a self, key: &'a str, markdown: &'a str) -> BoxFuture<'a, Result<String>>;
}

/// Digests as files under a folder (the in-memory demo and tests).
#[derive(Clone, Debug)]
pub struct FolderDigests {
    root: PathBuf,
}

impl FolderDigests {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
}

impl DigestStore for FolderDigests {
    fn put<'a>(&'a self, key: &'a str, markdown: &'a str) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            if key.split('/').any(|part| part.is_empty() || part == "..") {
                return Err(Error::terminal(format!("bad digest key {key:?}")));
            }
            let path = self.root.join(key);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::retryable(e.to_string()))?;
            }
            std::fs::write(&path, markdown).map_err(|e| Error::retryable(e.to_string()))?;
            Ok(path.display().to_string())
        })
    }
}

/// The `digest.store` activity on a store.
pub fn activities(store: Arc<dyn DigestStore>) -> Activities {
    Activities::new().with(STORE, Arc::new(StoreActivity(store)))
}

struct StoreActivity(Arc<dyn DigestStore>);

impl Activity for StoreActivity {
    fn run<'a>(&'a self, input: Value, _: &'a CallInfo) -> BoxFuture<'a, Result<Value>> {
        Box::pin(async move {
            let request: StoreDigest = serde_json::from_value(input)
                .map_err(|e| Error::terminal(format!("bad digest request: {e}")))?;
            let location = self.0.put(&request.key, &request.markdown).await?;
            serde_json::to_value(Stored { location }).map_err(|e| Error::terminal(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_keys_follow_the_grouping_and_sort_in_time_order() {
        // 2026-01-05T09:30:00Z, a Monday in ISO week 2.
        let t = Timestamp::from_millis(1_767_605_400_000);
        assert_eq!(group_key(t, Grouping::Hour), "2026-01-05T09");
        assert_eq!(group_key(t, Grouping::Day), "2026-01-05");
        assert_eq!(group_key(t, Grouping::Week), "2026-W02");
        // 2026-01-01 (Thursday) is in 2026-W01; 2025-12-29 (Monday) too.
        assert_eq!(
            group_key(Timestamp::from_millis(1_767_225_600_000), Grouping::Week),
            "2026-W01"
        );
        assert_eq!(
            group_key(Timestamp::from_millis(1_766_966_400_000), Grouping::Week),
            "2026-W01"
        );
        // 2025-12-28 (Sunday) is in 2025-W52.
        assert_eq!(
            group_key(Timestamp::from_millis(1_766_880_000_000), Grouping::Week),
            "2025-W52"
        );
    }
}
