//! Digests: grouping emails by hour, day or week, rendering a group as Markdown, and the
//! `digest.store` activity that puts it somewhere durable (S3 on AWS, a folder locally).

use crate::mail::{EmailHeader, one_line};
use crate::prefs::{Grouping, Style};
use reanimate_core::{
    Activities, Activity, BoxFuture, CallInfo, Error, Payload, Result, Timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

/// Activity: stores one digest. Input [`StoreDigest`], output [`Stored`].
pub const STORE: &str = "digest.store";

/// [`STORE`] with its types.
#[derive(Debug)]
pub struct StoreCall;

impl reanimate_core::CallType for StoreCall {
    const ACTIVITY: &'static str = STORE;
    type Input = StoreDigest;
    type Output = Stored;
}

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
    /// Why this is not a model's summary ("ranked offline: …", "not summarised: …").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The message could not be parsed: the digest lists its headers as "could not be read".
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
}

impl Ranked {
    /// An entry for `header`, to be filled in.
    pub fn of(header: &EmailHeader) -> Self {
        Self {
            id: header.id.clone(),
            from: header.from.clone(),
            subject: header.subject.clone(),
            date: header.date,
            summary: String::new(),
            rank: 1,
            reason: String::new(),
            note: None,
            unreadable: header.unreadable,
        }
    }

    /// The entry of an email that could not be read.
    pub fn unreadable(header: &EmailHeader) -> Self {
        Self {
            unreadable: true,
            rank: 3,
            reason: "it could not be read".into(),
            ..Self::of(header)
        }
    }
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

/// At most this many emails get a paragraph of their own in a short digest.
pub const SHORT_TOP: usize = 10;
/// An email ranked at least this is one that matters.
const MATTERS: u8 = 4;

/// One or more emails shown as one entry: a message, its repeats and its thread.
struct Item<'a> {
    lead: &'a Ranked,
    members: Vec<&'a Ranked>,
}

/// The subject a thread shares: without `Re:`/`Fwd:` prefixes, case and spacing.
fn thread_key(entry: &Ranked) -> String {
    let mut subject = one_line(&entry.subject).to_lowercase();
    loop {
        let trimmed = ["re:", "fwd:", "fw:", "aw:", "tr:"]
            .iter()
            .find_map(|p| subject.strip_prefix(p))
            .map(|rest| rest.trim_start().to_string());
        match trimmed {
            Some(rest) => subject = rest,
            None => break,
        }
    }
    if subject.is_empty() {
        format!("\u{0}{}", entry.id)
    } else {
        subject
    }
}

/// Entries merged by thread (which also merges identical repeats), in digest order.
fn merge(entries: &[Ranked]) -> Vec<Item<'_>> {
    let mut sorted: Vec<&Ranked> = entries.iter().filter(|e| !e.unreadable).collect();
    sorted.sort_by(|a, b| {
        b.rank
            .cmp(&a.rank)
            .then(a.date.cmp(&b.date))
            .then(a.id.cmp(&b.id))
    });
    let mut items: Vec<Item<'_>> = Vec::new();
    let mut by_key: BTreeMap<String, usize> = BTreeMap::new();
    for entry in sorted {
        match by_key.entry(thread_key(entry)) {
            std::collections::btree_map::Entry::Occupied(at) => {
                items[*at.get()].members.push(entry)
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(items.len());
                items.push(Item {
                    lead: entry,
                    members: vec![entry],
                });
            }
        }
    }
    items
}

fn stars(rank: u8) -> String {
    "★".repeat(rank.min(5) as usize) + &"☆".repeat(5 - rank.min(5) as usize)
}

fn count(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn write_item(out: &mut String, n: usize, item: &Item<'_>, detailed: bool) {
    let e = item.lead;
    let _ = write!(
        out,
        "\n## {n}. {} {}\nFrom {} · {}",
        one_line(&e.subject),
        stars(e.rank),
        e.from,
        e.date
    );
    if item.members.len() > 1 {
        let mut senders: Vec<&str> = item.members.iter().map(|m| m.from.as_str()).collect();
        senders.sort_unstable();
        senders.dedup();
        let _ = write!(
            out,
            " · {} from {}",
            count(item.members.len(), "message", "messages"),
            senders.join(", ")
        );
    }
    let _ = writeln!(out, "\n\n{}", one_line(&e.summary));
    if detailed {
        let _ = writeln!(out, "\n_Why: {}_", one_line(&e.reason));
    }
    if let Some(note) = &e.note {
        let _ = writeln!(out, "\n_({})_", one_line(note));
    }
}

/// The Markdown digest of one group. The user's style decides its length:
/// - `short`: the emails that matter (ranked 4 or 5, at most [`SHORT_TOP`]; the top three when
///   none does) with their summaries, then everything else as one line per sender with a count;
/// - `detailed`: every email with its summary and the reason for its rank.
///
/// In both, repeats and the messages of a thread are one entry, and a message that could not be
/// read is listed with its headers.
pub fn render(
    user: &str,
    group: &str,
    grouping: Grouping,
    style: Style,
    entries: &[Ranked],
    folded: &BTreeMap<String, u64>,
) -> String {
    let period = match grouping {
        Grouping::Hour => "Hourly",
        Grouping::Day => "Daily",
        Grouping::Week => "Weekly",
    };
    let items = merge(entries);
    let top = match style {
        Style::Detailed => items.len(),
        Style::Short => match items.iter().take_while(|i| i.lead.rank >= MATTERS).count() {
            0 => items.len().min(3),
            n => n.min(SHORT_TOP),
        },
    };
    let shown: usize = items[..top].iter().map(|i| i.members.len()).sum();
    let unreadable: Vec<&Ranked> = entries.iter().filter(|e| e.unreadable).collect();
    let folded_total: u64 = folded.values().sum();
    let rest = entries.len() - shown - unreadable.len() + folded_total as usize;
    let mut out = format!(
        "# {period} digest for {user}: {group}\n\n{}: {} first",
        count(entries.len() + folded_total as usize, "email", "emails"),
        count(shown, "email", "emails")
    );
    if rest > 0 {
        let _ = write!(out, ", then {} in brief", count(rest, "other", "others"));
    }
    if !unreadable.is_empty() {
        let _ = write!(
            out,
            ", and {} that could not be read",
            count(unreadable.len(), "message", "messages")
        );
    }
    out.push_str(".\n");
    for (n, item) in items[..top].iter().enumerate() {
        write_item(&mut out, n + 1, item, style == Style::Detailed);
    }
    if rest > 0 {
        // One line per sender: how many, and a few of their subjects.
        let mut by_sender: BTreeMap<&str, Vec<&Ranked>> = BTreeMap::new();
        for item in &items[top..] {
            for member in &item.members {
                by_sender
                    .entry(member.from.as_str())
                    .or_default()
                    .push(member);
            }
        }
        for sender in folded.keys() {
            by_sender.entry(sender.as_str()).or_default();
        }
        // How many from each sender: listed entries and, in a very busy period, folded ones.
        let total_of = |sender: &str, mail: &Vec<&Ranked>| {
            mail.len() + folded.get(sender).copied().unwrap_or(0) as usize
        };
        let mut senders: Vec<(&str, Vec<&Ranked>)> = by_sender.into_iter().collect();
        senders.sort_by(|a, b| {
            total_of(b.0, &b.1)
                .cmp(&total_of(a.0, &a.1))
                .then(a.0.cmp(b.0))
        });
        out.push_str("\n## Everything else\n\n");
        for (sender, mail) in senders {
            let n = total_of(sender, &mail);
            let mut subjects: Vec<String> = Vec::new();
            for m in &mail {
                let s = one_line(&m.subject);
                if !subjects.contains(&s) {
                    subjects.push(s);
                }
            }
            let more = subjects.len().saturating_sub(3);
            subjects.truncate(3);
            let who = if sender.is_empty() {
                "(no sender)"
            } else {
                sender
            };
            let mut line = format!("- {who} — {}", count(n, "email", "emails"));
            if !subjects.is_empty() {
                let _ = write!(line, ": {}", subjects.join("; "));
            }
            if more > 0 {
                let _ = write!(line, " (+{more} more)");
            }
            let _ = writeln!(out, "{line}");
        }
    }
    if !unreadable.is_empty() {
        out.push_str("\n## Could not be read\n\n");
        for e in unreadable {
            let subject = match one_line(&e.subject) {
                s if s.is_empty() => "(no subject)".to_string(),
                s => s,
            };
            let from = if e.from.is_empty() {
                "(unknown)"
            } else {
                &e.from
            };
            let _ = writeln!(
                out,
                "- could not be read: from {from} · {subject} · {}",
                e.date
            );
        }
    }
    out
}

/// The digest as HTML for an email, from its Markdown with `pulldown-cmark`. A subject or a
/// summary can carry any text: raw HTML in it is shown as text, never as markup, and Markdown
/// links and images become their text, so the email holds no link or remote image that a sender
/// or a model wrote.
pub fn to_html(markdown: &str) -> String {
    use pulldown_cmark::{Event, Parser, Tag, TagEnd, html};
    let events = Parser::new(markdown).filter_map(|event| match event {
        Event::Html(raw) | Event::InlineHtml(raw) => Some(Event::Text(raw)),
        Event::Start(Tag::Link { .. } | Tag::Image { .. })
        | Event::End(TagEnd::Link | TagEnd::Image) => None,
        other => Some(other),
    });
    let mut body = String::new();
    html::push_html(&mut body, events);
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"></head><body style=\"font-family:sans-serif;max-width:42em\">{body}</body></html>"
    )
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreDigest {
    /// `digests/{user}/{group}.md`.
    pub key: String,
    pub markdown: String,
    /// Also send it by email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliver: Option<Delivery>,
}

/// Where and how a digest is sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub to: String,
    pub subject: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// Where it went (`s3://bucket/key`, a file path).
    pub location: String,
    /// The sent email's message id, when it was delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<String>,
}

/// Where digests are kept. `put` overwrites: storing the same digest twice is harmless. The read
/// side serves the people who read them (the CLI, the demo).
pub trait DigestStore: Send + Sync {
    fn put<'a>(&'a self, key: &'a str, markdown: &'a str) -> BoxFuture<'a, Result<String>>;

    /// The digest stored under `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>>>;

    /// The keys of the digests under `prefix` (`digests/{user}/`), sorted.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>>;
}

/// Where a user's digests are listed: `digests/{user}/` (every user's with `None`).
pub fn user_prefix(user: Option<&str>) -> String {
    match user {
        Some(user) => format!("digests/{user}/"),
        None => "digests/".into(),
    }
}

/// An email to send: a digest in plain text (its Markdown) and HTML.
#[derive(Clone, Debug, PartialEq)]
pub struct OutgoingMail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Sends digests (Amazon SES on AWS, a folder locally). A send that is retried after a crash can
/// send twice: email has no idempotency key, so delivery is at least once.
pub trait Mailer: Send + Sync {
    /// Sends `mail`; returns the message id.
    fn send<'a>(&'a self, mail: &'a OutgoingMail) -> BoxFuture<'a, Result<String>>;
}

fn checked_key(key: &str) -> Result<&str> {
    if key.split('/').any(|part| part.is_empty() || part == "..") {
        return Err(Error::terminal(format!("bad digest key {key:?}")));
    }
    Ok(key)
}

fn write_file(path: &std::path::Path, contents: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::retryable(e.to_string()))?;
    }
    std::fs::write(path, contents).map_err(|e| Error::retryable(e.to_string()))
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
            let path = self.root.join(checked_key(key)?);
            write_file(&path, markdown)?;
            Ok(path.display().to_string())
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            match std::fs::read_to_string(self.root.join(checked_key(key)?)) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::retryable(format!("reading digest {key}: {e}"))),
            }
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            let mut keys = Vec::new();
            let mut folders = vec![self.root.clone()];
            while let Some(folder) = folders.pop() {
                let entries = match std::fs::read_dir(&folder) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::retryable(format!("{}: {e}", folder.display()))),
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        folders.push(path);
                    } else if let Ok(relative) = path.strip_prefix(&self.root) {
                        let key = relative.to_string_lossy().replace('\\', "/");
                        if key.starts_with(prefix) {
                            keys.push(key);
                        }
                    }
                }
            }
            keys.sort();
            Ok(keys)
        })
    }
}

/// Sent mail as files (`{root}/{to}/{n}.txt` and `.html`), for the offline demo and tests.
#[derive(Clone, Debug)]
pub struct FolderMailer {
    root: PathBuf,
    sent: Arc<std::sync::atomic::AtomicU64>,
}

impl FolderMailer {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            sent: Arc::default(),
        }
    }
}

impl Mailer for FolderMailer {
    fn send<'a>(&'a self, mail: &'a OutgoingMail) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let n = self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let dir = self.root.join(checked_key(&mail.to)?);
            let text = format!(
                "To: {}\nSubject: {}\n\n{}",
                mail.to, mail.subject, mail.text
            );
            write_file(&dir.join(format!("{n:05}.txt")), &text)?;
            write_file(&dir.join(format!("{n:05}.html")), &mail.html)?;
            Ok(format!("folder-{n}"))
        })
    }
}

/// The `digest.store` activity on a store, and the mailer for digests to deliver (`None`: this
/// deployment sends no email, and digests are only stored).
pub fn activities(store: Arc<dyn DigestStore>, mailer: Option<Arc<dyn Mailer>>) -> Activities {
    Activities::new().with(STORE, Arc::new(StoreActivity { store, mailer }))
}

struct StoreActivity {
    store: Arc<dyn DigestStore>,
    mailer: Option<Arc<dyn Mailer>>,
}

impl Activity for StoreActivity {
    fn run<'a>(&'a self, input: Value, _: &'a CallInfo) -> BoxFuture<'a, Result<Value>> {
        Box::pin(async move {
            let request: StoreDigest = Payload::new(input).decode()?;
            let location = self.store.put(&request.key, &request.markdown).await?;
            let delivered = match (&request.deliver, &self.mailer) {
                (Some(delivery), Some(mailer)) => Some(
                    mailer
                        .send(&OutgoingMail {
                            to: delivery.to.clone(),
                            subject: delivery.subject.clone(),
                            text: request.markdown.clone(),
                            html: to_html(&request.markdown),
                        })
                        .await?,
                ),
                (Some(_), None) => {
                    tracing::warn!(key = %request.key, "no mailer configured: the digest is only stored");
                    None
                }
                (None, _) => None,
            };
            serde_json::to_value(Stored {
                location,
                delivered,
            })
            .map_err(|e| Error::terminal(e.to_string()))
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

    fn entry(id: &str, from: &str, subject: &str, rank: u8) -> Ranked {
        Ranked {
            summary: format!("summary of {id}"),
            rank,
            reason: "r".into(),
            ..Ranked::of(&EmailHeader {
                id: id.into(),
                from: from.into(),
                subject: subject.into(),
                date: Timestamp::from_millis(1_767_605_400_000),
                received: Timestamp::default(),
                size: 0,
                unreadable: false,
            })
        }
    }

    #[test]
    fn a_short_digest_shows_what_matters_and_one_line_per_sender_for_the_rest() {
        let mut entries = vec![
            entry("a", "dana@acme.example", "Board deck", 5),
            entry("b", "tom@acme.example", "Re: Board deck", 4),
            entry("c", "sec@acme.example", "Unusual sign-in", 4),
        ];
        for i in 0..20 {
            entries.push(entry(&format!("n{i}"), "offers@deals.example", "Sale", 1));
        }
        entries.push(entry("x", "bob@x.example", "Lunch?", 2));
        entries.push(Ranked::unreadable(&EmailHeader {
            id: "u".into(),
            from: "who@x.example".into(),
            subject: "<b>broken</b>".into(),
            date: Timestamp::from_millis(1_767_605_400_000),
            received: Timestamp::default(),
            size: 0,
            unreadable: true,
        }));
        let md = render(
            "sam",
            "2026-01-05",
            Grouping::Day,
            Style::Short,
            &entries,
            &BTreeMap::new(),
        );
        assert!(md.starts_with("# Daily digest for sam: 2026-01-05\n\n25 emails: 3 emails first, then 21 others in brief, and 1 message that could not be read.\n"), "{md}");
        assert_eq!(
            md.matches("\n## 1. ").count() + md.matches("\n## 2. ").count(),
            2,
            "{md}"
        );
        assert!(
            md.contains("2 messages from dana@acme.example, tom@acme.example"),
            "the thread is one entry: {md}"
        );
        assert!(
            md.contains("- offers@deals.example — 20 emails: Sale\n"),
            "repeats are one line: {md}"
        );
        assert!(md.contains("- bob@x.example — 1 email: Lunch?\n"), "{md}");
        assert!(
            md.contains("- could not be read: from who@x.example · <b>broken</b> ·"),
            "{md}"
        );
        assert!(md.lines().count() < 30, "{md}");
        let detailed = render(
            "sam",
            "2026-01-05",
            Grouping::Day,
            Style::Detailed,
            &entries,
            &BTreeMap::new(),
        );
        let folded = BTreeMap::from([
            ("bulk@x.example".to_string(), 40),
            ("bob@x.example".to_string(), 2),
        ]);
        let busy = render(
            "sam",
            "2026-01-05",
            Grouping::Day,
            Style::Short,
            &entries,
            &folded,
        );
        assert!(
            busy.contains("\n\n67 emails: 3 emails first, then 63 others in brief"),
            "{busy}"
        );
        assert!(busy.contains("- bulk@x.example — 40 emails\n"), "{busy}");
        assert!(
            busy.contains("- bob@x.example — 3 emails: Lunch?\n"),
            "{busy}"
        );
        assert!(detailed.contains("## 3. Lunch?"), "{detailed}");
        assert!(detailed.contains("## 4. Sale ★☆☆☆☆\nFrom offers@deals.example · 2026-01-05T09:30:00.000Z · 20 messages"), "{detailed}");
        let html = to_html(&md);
        assert!(html.contains("&lt;b&gt;broken&lt;/b&gt;"), "{html}");
        assert!(!html.contains("<b>broken"), "{html}");
        let links = to_html(
            "Reset it [here](https://evil.example/x) or <https://evil.example/y> ![p](https://evil.example/p.png)",
        );
        assert!(
            !links.contains("href") && !links.contains("<img"),
            "{links}"
        );
        assert!(links.contains("Reset it here or"), "{links}");
    }

    #[test]
    fn a_digest_folder_reads_back_by_key_and_lists_by_user() {
        let root = std::env::temp_dir().join(format!("digests-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let store = FolderDigests::new(&root);
        let run = |f: BoxFuture<'_, Result<Vec<String>>>| reanimate_core::sim::block_on(f);
        for key in ["digests/sam/a.md", "digests/sam/b.md", "digests/ada/a.md"] {
            reanimate_core::sim::block_on(store.put(key, key)).unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(
            run(store.list(&user_prefix(Some("sam")))).ok(),
            Some(vec![
                "digests/sam/a.md".to_string(),
                "digests/sam/b.md".to_string()
            ])
        );
        let got = reanimate_core::sim::block_on(store.get("digests/ada/a.md"));
        assert_eq!(got.ok().flatten().as_deref(), Some("digests/ada/a.md"));
        let missing = reanimate_core::sim::block_on(store.get("digests/ada/z.md"));
        assert_eq!(missing.ok(), Some(None));
        assert!(reanimate_core::sim::block_on(store.get("../etc/passwd")).is_err());
        let _ = std::fs::remove_dir_all(&root);
    }
}
