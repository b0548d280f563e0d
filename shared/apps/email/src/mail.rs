//! Mail: the email model, a Maildir reader, and the `mail.fetch` / `mail.get` activities that
//! atoms use to read a mailbox (an atom's step never does I/O itself).

use reanimate_core::{
    Activities, Activity, BoxFuture, CallInfo, Error, Payload, Result, Timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Activity: one page of a mailbox, oldest first. Input [`FetchPage`], output [`Page`].
pub const FETCH: &str = "mail.fetch";
/// Activity: whole emails by id. Input [`GetEmails`], output `Vec<Email>`.
pub const GET: &str = "mail.get";
/// Activity: forgets a mailbox (deletes its secret). Input [`MailboxRef`].
pub const FORGET: &str = "mail.forget";

/// [`FETCH`] with its types.
#[derive(Debug)]
pub struct FetchCall;

impl reanimate_core::CallType for FetchCall {
    const ACTIVITY: &'static str = FETCH;
    type Input = FetchPage;
    type Output = Page;
}

/// [`FORGET`] with its types.
#[derive(Debug)]
pub struct ForgetCall;

impl reanimate_core::CallType for ForgetCall {
    const ACTIVITY: &'static str = FORGET;
    type Input = MailboxRef;
    type Output = Value;
}

/// The most of an email's text any model, record or message ever sees: the body is cut here (at
/// a character boundary) when it is read. Four thousand bytes hold a long business email whole;
/// what is cut is marked.
pub const BODY_CAP_BYTES: usize = 4_000;
/// The most of a subject kept (a header can be any length).
pub const SUBJECT_CAP_BYTES: usize = 300;
/// The most of a sender's address or name kept.
const ADDRESS_CAP_BYTES: usize = 320;

/// One email, as the atoms see it. Its `body` is already capped at [`BODY_CAP_BYTES`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Email {
    /// Stable within its mailbox (the Maildir file's unique part, a Gmail message id).
    pub id: String,
    pub from: String,
    #[serde(default)]
    pub from_name: String,
    pub subject: String,
    /// When it was sent, as far as it can be trusted (see [`sent_date`]).
    pub date: Timestamp,
    /// When it was delivered (the Maildir name's time, Gmail's `internalDate`): what the
    /// "analysed until" cursor follows, so mail that arrives late is not skipped.
    #[serde(default)]
    pub received: Timestamp,
    pub body: String,
    /// The message could not be parsed: only what its headers gave is known.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
}

impl Email {
    /// What the parent keeps of an email: enough to group it and to write the digest line.
    pub fn header(&self) -> EmailHeader {
        EmailHeader {
            id: self.id.clone(),
            from: self.from.clone(),
            subject: self.subject.clone(),
            date: self.date,
            received: self.received,
            size: self.body.len() as u64,
            unreadable: self.unreadable,
        }
    }
}

/// An email without its body: what listings return and what batches carry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmailHeader {
    pub id: String,
    pub from: String,
    pub subject: String,
    pub date: Timestamp,
    /// See [`Email::received`].
    #[serde(default)]
    pub received: Timestamp,
    /// Bytes of (capped) body text a summary will read: batches are bounded by their sum.
    #[serde(default)]
    pub size: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unreadable: bool,
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
        /// A secret store reference to the OAuth refresh token (never the token itself);
        /// access tokens are minted from it when needed and live only in the process's cache.
        // Records written before refresh tokens name the field `access_token`: such a reference
        // fails to refresh, which asks the user to connect Gmail again.
        #[serde(alias = "access_token")]
        refresh_token: String,
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
    /// Headers only: a listing never carries a body.
    pub emails: Vec<EmailHeader>,
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
    /// Drops what the source keeps for `mailbox` (a Gmail refresh token): its user disconnected.
    fn forget<'a>(&'a self, _mailbox: &'a MailboxRef) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    /// The stack whose secrets this source reads (`reanimate/{namespace}/…`).
    fn secret_namespace(&self) -> &str {
        ""
    }
}

/// Refuses a mailbox whose secret is not the calling instance's user's: a reference in a
/// message is used only if its name says it belongs to the root instance that makes the call
/// (secrets are named after the instance that asked for them, see
/// [`reanimate_core::secrets::redact`]).
pub fn check_owner(mailbox: &MailboxRef, namespace: &str, call: &CallInfo) -> Result<()> {
    let MailboxRef::Gmail { refresh_token, .. } = mailbox else {
        return Ok(());
    };
    let caller = reanimate_core::secrets::caller_root(call.id.as_str());
    let owner = reanimate_core::secrets::secret_owner(refresh_token, namespace);
    match (caller, owner) {
        (Some(caller), Some(owner)) if reanimate_core::secrets::name_segment(caller) == owner => {
            Ok(())
        }
        _ => Err(Error::terminal(format!(
            "the Gmail token {refresh_token:?} does not belong to this assistant's user ({})",
            caller.unwrap_or("unknown")
        ))),
    }
}

/// Maildir folders under one root directory. Emails are ordered by date, then file name; the
/// cursor is the position after the last email of the page.
///
/// A listing parses headers only; a read parses the emails asked for, found by their file names.
/// A delivered Maildir file never changes (its name is unique; flags change the name), so each
/// file's headers are parsed once per process and kept, keyed by its path and size.
#[derive(Clone, Debug)]
pub struct MaildirSource {
    root: PathBuf,
    headers: Arc<std::sync::Mutex<std::collections::HashMap<(PathBuf, u64), EmailHeader>>>,
}

/// A file of a Maildir folder.
struct MaildirFile {
    id: String,
    path: PathBuf,
    len: u64,
    received: Option<Timestamp>,
}

impl MaildirFile {
    fn read(&self) -> Result<Vec<u8>> {
        std::fs::read(&self.path)
            .map_err(|e| Error::retryable(format!("reading {}: {e}", self.path.display())))
    }
}

impl MaildirSource {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            headers: Arc::default(),
        }
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

    /// The folder's files (`cur` and `new`), unparsed.
    fn files(&self, mailbox: &MailboxRef) -> Result<Vec<MaildirFile>> {
        let folder = self.folder(mailbox)?;
        let mut files = Vec::new();
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
                let metadata = entry
                    .metadata()
                    .map_err(|e| Error::retryable(format!("reading {name}: {e}")))?;
                let id = name.split(':').next().unwrap_or(&name).to_string();
                let received = maildir_delivery_time(&id).or_else(|| {
                    let modified = metadata.modified().ok()?;
                    let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
                    Some(Timestamp::from_millis(since.as_millis() as u64))
                });
                files.push(MaildirFile {
                    id,
                    path: entry.path(),
                    len: metadata.len(),
                    received,
                });
            }
        }
        Ok(files)
    }

    fn lock_headers(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<(PathBuf, u64), EmailHeader>> {
        self.headers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every email's headers, oldest first.
    pub fn list(&self, mailbox: &MailboxRef) -> Result<Vec<EmailHeader>> {
        let mut headers = Vec::new();
        for file in self.files(mailbox)? {
            let key = (file.path.clone(), file.len);
            let cached = self.lock_headers().get(&key).cloned();
            let header = match cached {
                Some(header) => header,
                None => {
                    let header = parse_headers(&file.id, &file.read()?, file.received, file.len);
                    self.lock_headers().insert(key, header.clone());
                    header
                }
            };
            headers.push(header);
        }
        headers.sort_by(|a, b| (a.date, &a.id).cmp(&(b.date, &b.id)));
        Ok(headers)
    }

    /// Every email of the folder, parsed whole, oldest first.
    pub fn read_all(&self, mailbox: &MailboxRef) -> Result<Vec<Email>> {
        let mut emails = Vec::new();
        for file in self.files(mailbox)? {
            emails.push(parse_message(&file.id, &file.read()?, file.received));
        }
        emails.sort_by(|a, b| (a.date, &a.id).cmp(&(b.date, &b.id)));
        Ok(emails)
    }
}

impl MailSource for MaildirSource {
    fn page<'a>(&'a self, request: &'a FetchPage) -> BoxFuture<'a, Result<Page>> {
        Box::pin(async move {
            let all = self.list(&request.mailbox)?;
            // The cursor is the last email of the previous page (`{millis}/{id}`), not a
            // position: mail delivered or deleted during a run shifts positions, never keys.
            let start = match &request.cursor {
                None => 0,
                Some(c) => {
                    let (millis, id) = c
                        .split_once('/')
                        .and_then(|(m, id)| Some((m.parse::<u64>().ok()?, id)))
                        .ok_or_else(|| Error::terminal(format!("bad maildir cursor {c:?}")))?;
                    let last = (Timestamp::from_millis(millis), id);
                    all.partition_point(|e| (e.date, e.id.as_str()) <= last)
                }
            };
            let end = (start + request.limit.max(1)).min(all.len());
            let emails = all.get(start..end).unwrap_or_default().to_vec();
            let next = emails
                .last()
                .filter(|_| end < all.len())
                .map(|e| format!("{}/{}", e.date.as_millis(), e.id));
            Ok(Page {
                emails,
                next,
                oldest_first: true,
            })
        })
    }

    fn get<'a>(&'a self, request: &'a GetEmails) -> BoxFuture<'a, Result<Vec<Email>>> {
        Box::pin(async move {
            let files = self.files(&request.mailbox)?;
            // An email deleted since it was listed is read as unreadable, not as a failed batch.
            request
                .ids
                .iter()
                .map(|id| match files.iter().find(|f| &f.id == id) {
                    Some(file) => Ok(parse_message(&file.id, &file.read()?, file.received)),
                    None => Ok(gone(id)),
                })
                .collect()
        })
    }
}

/// Every kind of mailbox this process can read, chosen per request by its [`MailboxRef`].
#[derive(Clone, Debug)]
pub struct Mailboxes {
    /// The stack whose users' secrets the Gmail source reads.
    pub secret_namespace: String,
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

    fn forget<'a>(&'a self, mailbox: &'a MailboxRef) -> BoxFuture<'a, Result<()>> {
        match self.pick(mailbox) {
            Ok(source) => source.forget(mailbox),
            Err(e) => Box::pin(async move { Err(e) }),
        }
    }

    fn secret_namespace(&self) -> &str {
        &self.secret_namespace
    }
}

/// The `mail.fetch`, `mail.get` and `mail.forget` activities on a source.
pub fn activities(source: Arc<dyn MailSource>) -> Activities {
    Activities::new()
        .with(FETCH, Arc::new(FetchActivity(Arc::clone(&source))))
        .with(GET, Arc::new(GetActivity(Arc::clone(&source))))
        .with(FORGET, Arc::new(ForgetActivity(source)))
}

struct FetchActivity(Arc<dyn MailSource>);
struct GetActivity(Arc<dyn MailSource>);
struct ForgetActivity(Arc<dyn MailSource>);

impl Activity for ForgetActivity {
    fn run<'a>(&'a self, input: Value, call: &'a CallInfo) -> BoxFuture<'a, Result<Value>> {
        Box::pin(async move {
            let mailbox: MailboxRef = Payload::new(input).decode()?;
            check_owner(&mailbox, self.0.secret_namespace(), call)?;
            self.0.forget(&mailbox).await?;
            Ok(Value::Null)
        })
    }
}

fn encode(value: &impl Serialize) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::terminal(e.to_string()))
}

impl Activity for FetchActivity {
    fn run<'a>(&'a self, input: Value, call: &'a CallInfo) -> BoxFuture<'a, Result<Value>> {
        Box::pin(async move {
            let request: FetchPage = Payload::new(input).decode()?;
            check_owner(&request.mailbox, self.0.secret_namespace(), call)?;
            encode(&self.0.page(&request).await?)
        })
    }
}

impl Activity for GetActivity {
    fn run<'a>(&'a self, input: Value, call: &'a CallInfo) -> BoxFuture<'a, Result<Value>> {
        Box::pin(async move {
            let request: GetEmails = Payload::new(input).decode()?;
            check_owner(&request.mailbox, self.0.secret_namespace(), call)?;
            encode(&self.0.get(&request).await?)
        })
    }
}

/// An email that is no longer in the mailbox.
pub fn gone(id: &str) -> Email {
    Email {
        id: id.to_string(),
        from: String::new(),
        from_name: String::new(),
        subject: String::new(),
        date: Timestamp::EPOCH,
        received: Timestamp::EPOCH,
        body: String::new(),
        unreadable: true,
    }
}

/// A Maildir unique name starts with the delivery time in seconds (`1767596614.M0000P1.host`).
fn maildir_delivery_time(id: &str) -> Option<Timestamp> {
    let seconds: u64 = id.split('.').next()?.parse().ok()?;
    Some(Timestamp::from_millis(seconds.checked_mul(1000)?))
}

/// How far ahead of its delivery a `Date:` header may be (clocks differ) before it is not believed.
const DATE_SKEW_MILLIS: u64 = 3_600_000;

/// When an email was sent, for grouping and for the "analysed until" cursor: its `Date:` header,
/// unless that is missing, unreadable, or later than the delivery time (plus an hour of clock
/// skew); then the delivery time (the Maildir name's time, the file's time, Gmail's
/// `internalDate`). So a `Date:` in 2099 never moves the cursor past real mail.
pub fn sent_date(header: Option<Timestamp>, received: Option<Timestamp>) -> Timestamp {
    match (header, received) {
        (Some(h), Some(r)) if h.as_millis() <= r.as_millis() + DATE_SKEW_MILLIS => h,
        (_, Some(r)) => r,
        (Some(h), None) => h,
        (None, None) => Timestamp::EPOCH,
    }
}

fn header_date(message: &mail_parser::Message<'_>) -> Option<Timestamp> {
    let date = message.date().filter(|d| d.is_valid())?;
    u64::try_from(date.to_timestamp())
        .ok()
        .and_then(|s| s.checked_mul(1000))
        .map(Timestamp::from_millis)
}

/// Cuts `text` to at most `cap` bytes at a character boundary, marking the cut.
pub fn cap_text(text: &str, cap: usize) -> String {
    if text.len() <= cap {
        return text.to_string();
    }
    const MARK: &str = " […]";
    let mut end = cap.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// Parses one RFC 5322 message with `mail-parser`: MIME parts, base64 and quoted-printable,
/// RFC 2047 encoded words, every charset the crate knows, HTML-only bodies reduced to text, CRLF
/// or LF line ends, bytes that are not UTF-8. Never fails: what cannot be parsed comes back
/// `unreadable`, with whatever headers could be read, so one email never fails more than itself.
pub fn parse_message(id: &str, raw: &[u8], received: Option<Timestamp>) -> Email {
    let parser = mail_parser::MessageParser::default();
    let parsed = parser.parse(raw).filter(|m| {
        // A message without a single known header is not a message (a binary file, a truncated
        // download): mail-parser would read it as a body of text.
        m.from().is_some() || m.subject().is_some() || m.date().is_some()
    });
    let Some(message) = parsed else {
        return unreadable(id, raw, received);
    };
    let (from_name, from) = sender(message.from());
    let body = message
        .body_text(0)
        .map(|text| cap_text(text.trim(), BODY_CAP_BYTES))
        .unwrap_or_default();
    let date = sent_date(header_date(&message), received);
    Email {
        id: id.to_string(),
        from,
        from_name,
        subject: subject_of(message.subject()),
        date,
        received: received.unwrap_or(date),
        body,
        unreadable: false,
    }
}

fn subject_of(subject: Option<&str>) -> String {
    cap_text(&one_line(subject.unwrap_or_default()), SUBJECT_CAP_BYTES)
}

/// The headers of one message (what a listing needs), without decoding its body; `size` is the
/// file's size, capped like a body.
pub fn parse_headers(id: &str, raw: &[u8], received: Option<Timestamp>, size: u64) -> EmailHeader {
    let parser = mail_parser::MessageParser::default();
    let parsed = parser
        .parse_headers(raw)
        .filter(|m| m.from().is_some() || m.subject().is_some() || m.date().is_some());
    let Some(message) = parsed else {
        return EmailHeader {
            size: 0,
            ..unreadable(id, raw, received).header()
        };
    };
    let (_, from) = sender(message.from());
    let date = sent_date(header_date(&message), received);
    EmailHeader {
        id: id.to_string(),
        from,
        subject: subject_of(message.subject()),
        date,
        received: received.unwrap_or(date),
        size: size.min(BODY_CAP_BYTES as u64),
        unreadable: false,
    }
}

/// The headers of a message that did not parse, read as far as they go.
fn unreadable(id: &str, raw: &[u8], received: Option<Timestamp>) -> Email {
    let parser = mail_parser::MessageParser::default();
    let headers = parser.parse_headers(raw);
    let (from_name, from) = sender(headers.as_ref().and_then(|m| m.from()));
    let date = sent_date(headers.as_ref().and_then(header_date), received);
    Email {
        id: id.to_string(),
        from,
        from_name,
        subject: subject_of(headers.as_ref().and_then(|m| m.subject())),
        date,
        received: received.unwrap_or(date),
        body: String::new(),
        unreadable: true,
    }
}

/// The headers of a listing (Gmail's `format=metadata`) as an [`EmailHeader`]: the raw header
/// values go through the same parser, so encoded words and dates are read the same way.
pub fn header_from_fields(
    id: &str,
    from: &str,
    subject: &str,
    date: &str,
    received: Option<Timestamp>,
    size: u64,
) -> EmailHeader {
    let clean = |v: &str| v.replace(['\r', '\n'], " ");
    let raw = format!(
        "From: {}\r\nSubject: {}\r\nDate: {}\r\n\r\n",
        clean(from),
        clean(subject),
        clean(date)
    );
    let email = parse_message(id, raw.as_bytes(), received);
    EmailHeader {
        size: size.min(BODY_CAP_BYTES as u64),
        ..email.header()
    }
}

/// (display name, lower-cased address) of a From header.
fn sender(from: Option<&mail_parser::Address<'_>>) -> (String, String) {
    let Some(first) = from.and_then(|f| f.first()) else {
        return (String::new(), String::new());
    };
    (
        cap_text(
            &one_line(first.name().unwrap_or_default()),
            ADDRESS_CAP_BYTES,
        ),
        cap_text(
            &first
                .address()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase(),
            ADDRESS_CAP_BYTES,
        ),
    )
}

/// `text` on one line, runs of white space as one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8]) -> Email {
        // Delivered 2026-01-05T09:00:00Z.
        parse_message("m1", text, Some(Timestamp::from_millis(1_767_603_600_000)))
    }

    #[test]
    fn parses_a_message_and_its_date() {
        let email = parse(b"From: Dana Whitfield <Dana@Acme.example>\nSubject: Board deck\nDate: Mon, 05 Jan 2026 09:30:00 +0100\n\nHi Sam,\n\nBody.\n");
        assert_eq!(email.from, "dana@acme.example");
        assert_eq!(email.from_name, "Dana Whitfield");
        assert_eq!(email.date.to_string(), "2026-01-05T08:30:00.000Z");
        assert_eq!(email.body, "Hi Sam,\n\nBody.");
        assert!(!email.unreadable);
    }

    #[test]
    fn mime_encodings_charsets_and_html_are_decoded() {
        let raw = b"From: =?ISO-8859-1?Q?Andr=E9?= <andre@example.org>\r\n\
Subject: =?UTF-8?B?UsOpc3Vtw6kgZHUgbW9pcw==?=\r\n\
Date: Mon, 05 Jan 2026 08:00:00 +0000\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=\"b1\"\r\n\
\r\n\
--b1\r\n\
Content-Type: text/html; charset=windows-1252\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
<html><body><p>Caf=E9 at 10=2E <b>Bring</b> the =93deck=94.</p></body></html>\r\n\
--b1--\r\n";
        let email = parse(raw);
        assert_eq!(email.from_name, "Andr\u{e9}");
        assert_eq!(email.subject, "R\u{e9}sum\u{e9} du mois");
        assert!(
            email
                .body
                .contains("Caf\u{e9} at 10. Bring the \u{201c}deck\u{201d}."),
            "{}",
            email.body
        );
        assert!(!email.body.contains('<'), "{}", email.body);
        let latin1 = parse(b"From: a@b.example\nSubject: x\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: base64\n\nR3L832U=\n");
        assert_eq!(latin1.body, "Gr\u{fc}\u{df}e");
    }

    #[test]
    fn a_missing_or_future_date_falls_back_to_the_delivery_time() {
        let delivered = "2026-01-05T09:00:00.000Z";
        let future =
            parse(b"From: a@b.example\nSubject: x\nDate: Thu, 01 Jan 2099 00:00:00 +0000\n\nhi");
        assert_eq!(future.date.to_string(), delivered);
        let missing = parse(b"From: a@b.example\nSubject: x\n\nhi");
        assert_eq!(missing.date.to_string(), delivered);
        let garbage = parse(b"From: a@b.example\nSubject: x\nDate: yesterday-ish\n\nhi");
        assert_eq!(garbage.date.to_string(), delivered);
        // A few minutes of clock skew is believed.
        let skewed =
            parse(b"From: a@b.example\nSubject: x\nDate: Mon, 05 Jan 2026 09:10:00 +0000\n\nhi");
        assert_eq!(skewed.date.to_string(), "2026-01-05T09:10:00.000Z");
    }

    #[test]
    fn what_cannot_be_parsed_is_unreadable_and_bodies_are_capped() {
        let binary = parse(&[0xff, 0xfe, 0x00, 0x01, 0x9c, 0x80]);
        assert!(binary.unreadable);
        assert_eq!(binary.date.to_string(), "2026-01-05T09:00:00.000Z");
        let not_utf8 = parse(b"From: a@b.example\nSubject: caf\xe9\n\nna\xefve \xff bytes");
        assert!(!not_utf8.unreadable);
        assert!(not_utf8.body.starts_with("na"), "{}", not_utf8.body);
        let long = format!(
            "From: a@b.example\nSubject: long\n\n{}",
            "\u{e9}".repeat(10_000)
        );
        let email = parse(long.as_bytes());
        assert!(email.body.len() <= BODY_CAP_BYTES, "{}", email.body.len());
        assert!(email.body.ends_with("[…]"));
    }

    #[test]
    fn headers_of_any_length_are_cut() {
        let long = format!(
            "From: {}@x.example\nSubject: {}\n\nhi",
            "a".repeat(5_000),
            "s".repeat(300_000)
        );
        let email = parse(long.as_bytes());
        assert!(
            email.subject.len() <= SUBJECT_CAP_BYTES,
            "{}",
            email.subject.len()
        );
        assert!(
            email.from.len() <= ADDRESS_CAP_BYTES,
            "{}",
            email.from.len()
        );
        let header = parse_headers("m1", long.as_bytes(), None, 1);
        assert!(header.subject.len() <= SUBJECT_CAP_BYTES);
    }

    #[test]
    fn a_maildir_page_continues_after_its_last_email_whatever_arrives_meanwhile() {
        let root = std::env::temp_dir().join(format!("reanimate-maildir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for sub in ["box/cur", "box/new"] {
            std::fs::create_dir_all(root.join(sub)).unwrap_or_else(|e| panic!("{e}"));
        }
        let deliver = |at: u64, n: u32| {
            let raw = format!("From: a@b.example\nSubject: n{n}\n\nhi");
            std::fs::write(root.join(format!("box/cur/{at}.M{n}P1.t:2,S")), raw)
                .unwrap_or_else(|e| panic!("{e}"));
        };
        for n in 0..4 {
            deliver(1_767_600_000 + u64::from(n) * 60, n);
        }
        let source = MaildirSource::new(&root);
        let mailbox = MailboxRef::Maildir { path: "box".into() };
        let page = |cursor: Option<String>| {
            reanimate_core::sim::block_on(source.page(&FetchPage {
                mailbox: mailbox.clone(),
                cursor,
                limit: 2,
                since: None,
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let first = page(None);
        let subjects = |p: &Page| {
            p.emails
                .iter()
                .map(|e| e.subject.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(subjects(&first), ["n0", "n1"]);
        // An email sorting before the cursor arrives between the pages: no repeat, no skip.
        deliver(1_767_590_000, 9);
        let second = page(first.next.clone());
        assert_eq!(subjects(&second), ["n2", "n3"]);
        assert_eq!(second.next, None);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn listing_headers_are_decoded_like_messages() {
        let header = header_from_fields(
            "g1",
            "\"Lee, Ana\" <ANA@x.example>",
            "=?UTF-8?Q?Caf=C3=A9?=",
            "Tue, 06 Jan 2026 10:00:00 +0000",
            Some(Timestamp::from_millis(1_767_700_000_000)),
            1_000_000,
        );
        assert_eq!(header.from, "ana@x.example");
        assert_eq!(header.subject, "Caf\u{e9}");
        assert_eq!(header.size, BODY_CAP_BYTES as u64);
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
