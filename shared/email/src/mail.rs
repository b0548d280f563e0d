//! Mail: the email model, a Maildir reader, and the `mail.fetch` / `mail.get` activities that
//! atoms use to read a mailbox (an atom's step never does I/O itself).

use reanimate_core::{Activities, Activity, BoxFuture, CallInfo, Error, Result, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Activity: one page of a mailbox, oldest first. Input [`FetchPage`], output [`Page`].
pub const FETCH: &str = "mail.fetch";
/// Activity: whole emails by id. Input [`GetEmails`], output `Vec<Email>`.
pub const GET: &str = "mail.get";

/// One email, as the atoms see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Email {
    /// Stable within its mailbox (the Maildir file's unique part, a Gmail message id).
    pub id: String,
    pub from: String,
    #[serde(default)]
    pub from_name: String,
    pub subject: String,
    pub date: Timestamp,
    pub body: String,
}

impl Email {
    /// What the parent keeps of an email: enough to group it and to write the digest line.
    pub fn header(&self) -> EmailHeader {
        EmailHeader {
            id: self.id.clone(),
            from: self.from.clone(),
            subject: self.subject.clone(),
            date: self.date,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmailHeader {
    pub id: String,
    pub from: String,
    pub subject: String,
    pub date: Timestamp,
}

/// Which mailbox to read. Credentials are never here: a Gmail token lives in a secret store and
/// this holds only its reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MailboxRef {
    /// A Maildir folder, relative to the mail root the functions are configured with.
    Maildir { path: String },
    /// A Gmail mailbox through the Gmail REST API.
    Gmail {
        /// A secret store reference to the OAuth access token (never the token itself).
        access_token: String,
        /// A Gmail search query narrowing what is read (`label:inbox`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        query: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FetchPage {
    pub mailbox: MailboxRef,
    /// Where the previous page ended; `None` for the first page.
    #[serde(default)]
    pub cursor: Option<String>,
    pub limit: usize,
    /// Only mail after this time, when the source can filter (Gmail's `after:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page {
    pub emails: Vec<Email>,
    /// `None` when this was the last page.
    pub next: Option<String>,
    /// Whether pages come oldest first (a Maildir) or not (Gmail lists newest first); the
    /// analysis can close a digest group early only in the first case.
    #[serde(default = "oldest_first")]
    pub oldest_first: bool,
}

fn oldest_first() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GetEmails {
    pub mailbox: MailboxRef,
    pub ids: Vec<String>,
}

/// A source of mail.
pub trait MailSource: Send + Sync {
    fn page<'a>(&'a self, request: &'a FetchPage) -> BoxFuture<'a, Result<Page>>;
    fn get<'a>(&'a self, request: &'a GetEmails) -> BoxFuture<'a, Result<Vec<Email>>>;
}

/// Maildir folders under one root directory. Emails are ordered by date, then file name; the
/// cursor is the position after the last email of the page.
#[derive(Clone, Debug)]
pub struct MaildirSource {
    root: PathBuf,
}

impl MaildirSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder `path` names, refusing anything that would leave the root.
    fn folder(&self, mailbox: &MailboxRef) -> Result<PathBuf> {
        let MailboxRef::Maildir { path } = mailbox else {
            return Err(Error::terminal("not a Maildir mailbox"));
        };
        let relative = Path::new(path);
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(Error::terminal(format!(
                "maildir path {path:?} must be relative to the mail root, without '..'"
            )));
        }
        Ok(self.root.join(relative))
    }

    /// Every email of the folder, oldest first.
    pub fn read_all(&self, mailbox: &MailboxRef) -> Result<Vec<Email>> {
        let folder = self.folder(mailbox)?;
        let mut emails = Vec::new();
        for sub in ["cur", "new"] {
            let dir = folder.join(sub);
            let entries = std::fs::read_dir(&dir).map_err(|e| {
                Error::terminal(format!("cannot read maildir {}: {e}", dir.display()))
            })?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::retryable(e.to_string()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let text = std::fs::read_to_string(entry.path())
                    .map_err(|e| Error::retryable(format!("reading {name}: {e}")))?;
                let id = name.split(':').next().unwrap_or(&name).to_string();
                emails.push(parse_message(&id, &text).map_err(|e| e.context(&name))?);
            }
        }
        emails.sort_by(|a, b| (a.date, &a.id).cmp(&(b.date, &b.id)));
        Ok(emails)
    }
}

impl MailSource for MaildirSource {
    fn page<'a>(&'a self, request: &'a FetchPage) -> BoxFuture<'a, Result<Page>> {
        Box::pin(async move {
            let all = self.read_all(&request.mailbox)?;
            let start = match &request.cursor {
                None => 0,
                Some(c) => c
                    .parse::<usize>()
                    .map_err(|_| Error::terminal(format!("bad maildir cursor {c:?}")))?,
            };
            let end = (start + request.limit.max(1)).min(all.len());
            let emails = all.get(start..end).unwrap_or_default().to_vec();
            Ok(Page {
                emails,
                next: (end < all.len()).then(|| end.to_string()),
                oldest_first: true,
            })
        })
    }

    fn get<'a>(&'a self, request: &'a GetEmails) -> BoxFuture<'a, Result<Vec<Email>>> {
        Box::pin(async move {
            let all = self.read_all(&request.mailbox)?;
            request
                .ids
                .iter()
                .map(|id| {
                    all.iter()
                        .find(|e| &e.id == id)
                        .cloned()
                        .ok_or_else(|| Error::terminal(format!("no email {id} in the mailbox")))
                })
                .collect()
        })
    }
}

/// Every kind of mailbox this process can read, chosen per request by its [`MailboxRef`].
#[derive(Clone, Debug)]
pub struct Mailboxes {
    pub maildir: Option<MaildirSource>,
    pub gmail: Option<crate::gmail::GmailSource>,
}

impl Mailboxes {
    fn pick(&self, mailbox: &MailboxRef) -> Result<&dyn MailSource> {
        let missing =
            |what: &str| Error::terminal(format!("this deployment reads no {what} mailboxes"));
        match mailbox {
            MailboxRef::Maildir { .. } => self
                .maildir
                .as_ref()
                .map(|m| m as &dyn MailSource)
                .ok_or_else(|| missing("Maildir")),
            MailboxRef::Gmail { .. } => self
                .gmail
                .as_ref()
                .map(|g| g as &dyn MailSource)
                .ok_or_else(|| missing("Gmail")),
        }
    }
}

impl MailSource for Mailboxes {
    fn page<'a>(&'a self, request: &'a FetchPage) -> BoxFuture<'a, Result<Page>> {
        match self.pick(&request.mailbox) {
            Ok(source) => source.page(request),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn get<'a>(&'a self, request: &'a GetEmails) -> BoxFuture<'a, Result<Vec<Email>>> {
        match self.pick(&request.mailbox) {
            Ok(source) => source.get(request),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }
}

/// The `mail.fetch` and `mail.get` activities on a source.
pub fn activities(source: Arc<dyn MailSource>) -> Activities {
    Activities::new()
        .with(FETCH, Arc::new(FetchActivity(Arc::clone(&source))))
        .with(GET, Arc::new(GetActivity(source)))
}

struct FetchActivity(Arc<dyn MailSource>);
struct GetActivity(Arc<dyn MailSource>);

fn decode<T: serde::de::DeserializeOwned>(input: Value) -> Result<T> {
    serde_json::from_value(input).map_err(|e| Error::terminal(format!("bad mail request: {e}")))
}

fn encode(value: &impl Serialize) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::terminal(e.to_string()))
}

impl Activity for FetchActivity {
    fn run<'a>(&'a self, input: Value, _: &'a CallInfo) -> BoxFuture<'a, Result<Value>> {
        Box::pin(async move {
            let request: FetchPage = decode(input)?;
            encode(&self.0.page(&request).await?)
        })
    }
}

impl Activity for GetActivity {
    fn run<'a>(&'a self, input: Value, _: &'a CallInfo) -> BoxFuture<'a, Result<Value>> {
        Box::pin(async move {
            let request: GetEmails = decode(input)?;
            encode(&self.0.get(&request).await?)
        })
    }
}

/// Parses a plain-text RFC 5322 message (headers, a blank line, the body).
pub fn parse_message(id: &str, text: &str) -> Result<Email> {
    let (head, body) = text
        .split_once("\n\n")
        .ok_or_else(|| Error::terminal("message has no header/body separator"))?;
    let mut from = None;
    let mut subject = String::new();
    let mut date = None;
    // Unfold continuation lines first.
    let mut headers: Vec<String> = Vec::new();
    for line in head.lines() {
        match (line.starts_with([' ', '\t']), headers.last_mut()) {
            (true, Some(last)) => last.push_str(line),
            _ => headers.push(line.to_string()),
        }
    }
    for header in &headers {
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "from" => from = Some(parse_address(value)),
            "subject" => subject = value.to_string(),
            "date" => date = Some(parse_rfc2822_date(value)?),
            _ => {}
        }
    }
    let (from_name, from) = from.ok_or_else(|| Error::terminal("message has no From header"))?;
    Ok(Email {
        id: id.to_string(),
        from,
        from_name,
        subject,
        date: date.ok_or_else(|| Error::terminal("message has no Date header"))?,
        body: body.trim().to_string(),
    })
}

/// `Name <addr>` or a bare address → (name, lower-cased address).
fn parse_address(value: &str) -> (String, String) {
    match (value.find('<'), value.rfind('>')) {
        (Some(open), Some(close)) if open < close => (
            value[..open].trim().trim_matches('"').to_string(),
            value[open + 1..close].trim().to_ascii_lowercase(),
        ),
        _ => (String::new(), value.trim().to_ascii_lowercase()),
    }
}

/// `Mon, 05 Jan 2026 07:03:34 +0000` (the day name is optional).
pub fn parse_rfc2822_date(value: &str) -> Result<Timestamp> {
    let bad = || Error::terminal(format!("unreadable Date header {value:?}"));
    let rest = value.split_once(',').map_or(value, |(_, r)| r).trim();
    let parts: Vec<&str> = rest.split_whitespace().collect();
    let [day, month, year, time, zone, ..] = parts.as_slice() else {
        return Err(bad());
    };
    let day: u32 = day.parse().map_err(|_| bad())?;
    let month = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ]
    .iter()
    .position(|m| month.to_ascii_lowercase().starts_with(m))
    .ok_or_else(bad)? as u32
        + 1;
    let year: i64 = year.parse().map_err(|_| bad())?;
    let hms: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    let (h, m, s) = match hms.as_slice() {
        [h, m] => (*h, *m, 0),
        [h, m, s] => (*h, *m, *s),
        _ => return Err(bad()),
    };
    let offset_minutes = match zone.as_bytes() {
        [sign @ (b'+' | b'-'), digits @ ..] if digits.len() == 4 => {
            let n: i64 = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok())
                .ok_or_else(bad)?;
            let minutes = (n / 100) * 60 + n % 100;
            if *sign == b'-' { -minutes } else { minutes }
        }
        _ => 0,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + h * 3600 + m * 60 + s - offset_minutes * 60;
    u64::try_from(secs)
        .map(|s| Timestamp::from_millis(s * 1000))
        .map_err(|_| bad())
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_message_and_its_date() {
        let text = "From: Dana Whitfield <Dana@Acme.example>\nSubject: Board deck\nDate: Mon, 05 Jan 2026 09:30:00 +0100\n\nHi Sam,\n\nBody.\n";
        let email = parse_message("m1", text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(email.from, "dana@acme.example");
        assert_eq!(email.from_name, "Dana Whitfield");
        assert_eq!(email.date.to_string(), "2026-01-05T08:30:00.000Z");
        assert!(parse_message("m2", "no separator").is_err());
    }

    #[test]
    fn a_maildir_path_cannot_leave_the_root() {
        let source = MaildirSource::new("/tmp");
        let outside = MailboxRef::Maildir {
            path: "../etc".into(),
        };
        assert!(source.read_all(&outside).is_err());
    }
}
