//! The inbox: a person's link to one request (`/r/{token}`), its form, and their other questions
//! and digests (`/r/{token}/mine`).
//!
//! The token names the request and the person; the page opens only if the request's `person` is
//! that person. A form carries a token signed over a nonce that is also in a `SameSite=Strict`
//! cookie set with the page, so another site can neither read it nor make a browser send both.

use crate::App;
use crate::form::{self, Submitted};
use crate::http::{Request, Response};
use crate::signing::{Purpose, Refusal, Signer, random_token, same};
use reanimate_core::ports::{InboxEntry, RequestStatus};
use reanimate_core::{RequestId, Result, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// What a person's link opens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkClaims {
    /// The request.
    pub r: String,
    /// The person (their email address).
    pub p: String,
}

#[derive(Serialize, Deserialize)]
struct FormClaims {
    /// The nonce in the form cookie.
    n: String,
    r: String,
}

const FORM_COOKIE: &str = "reanimate-form";
/// How long a loaded form can be sent.
const FORM_LIFETIME: Duration = Duration::from_secs(2 * 3600);
/// A link without a deadline to bound it stays valid this long.
pub const LINK_LIFETIME: Duration = Duration::from_secs(14 * 86_400);

/// The link for `person` to `request`: it expires with the request's deadline, or after
/// [`LINK_LIFETIME`].
pub fn link_token(
    links: &crate::signing::Signer,
    request: &RequestId,
    person: &str,
    deadline: Option<Timestamp>,
) -> String {
    let now = Timestamp::now_utc();
    let longest = now.plus(LINK_LIFETIME);
    let expires = deadline.filter(|d| *d < longest).unwrap_or(longest);
    links.sign(
        Purpose::RequestLink,
        &LinkClaims {
            r: request.to_string(),
            p: person.to_string(),
        },
        expires,
    )
}

/// The request a link names, read without checking its signature: for clients that must tell
/// links apart (the demo, tests). The server checks every link it is given.
pub fn request_of_link(link: &str) -> Option<String> {
    use base64::Engine;
    let token = link.rsplit("/r/").next()?.split(['/', '?']).next()?;
    let payload = token.split_once('.')?.0;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.pointer("/c/r")?.as_str().map(str::to_string)
}

fn refused(app: &App, why: Refusal) -> Response {
    match why {
        Refusal::Expired => app.pages.message(
            410,
            "This link has expired",
            "The question it opened is no longer waiting for an answer.",
            "warn",
        ),
        Refusal::Malformed | Refusal::BadSignature => app.pages.message(
            403,
            "This link is not valid",
            "Please open the link exactly as it arrived in your email.",
            "warn",
        ),
    }
}

fn not_yours(app: &App) -> Response {
    app.pages.message(
        403,
        "This link is not valid",
        "Please open the link exactly as it arrived in your email.",
        "warn",
    )
}

pub async fn route(app: &App, request: &Request, token: &str, rest: &[&str]) -> Result<Response> {
    let now = Timestamp::now_utc();
    let claims: LinkClaims = match app.links.verify(Purpose::RequestLink, token, now) {
        Ok(claims) => claims,
        Err(Refusal::Expired) => return expired(app, request, token, rest, now).await,
        Err(why) => return Ok(refused(app, why)),
    };
    let id = match RequestId::new(claims.r.clone()) {
        Ok(id) => id,
        Err(_) => return Ok(not_yours(app)),
    };
    let entry = match app.stack.request(&id).await? {
        Some(entry) if link_opens(&entry, &claims) => entry,
        _ => return Ok(not_yours(app)),
    };
    match (request.method(), rest) {
        ("GET", []) => Ok(show(
            app,
            request,
            token,
            &entry,
            None,
            &Submitted::new(),
            now,
        )),
        ("POST", []) => submit(app, request, token, &entry, now).await,
        ("GET", ["connect", "gmail"]) => crate::gmail::start(app, request, token, &claims, &entry),
        ("GET", ["mine"]) => mine(app, token, &claims, None).await,
        ("GET", ["mine", digest]) => mine(app, token, &claims, Some(digest)).await,
        _ => Ok(app
            .pages
            .message(404, "Not found", "There is no such page.", "warn")),
    }
}

/// A genuine link past its time: if its question still waits, the person may ask for a fresh
/// link, which goes to the address the request names (so a forged press only emails them).
async fn expired(
    app: &App,
    request: &Request,
    token: &str,
    rest: &[&str],
    now: Timestamp,
) -> Result<Response> {
    let Ok(claims) = app
        .links
        .verify_expired::<LinkClaims>(Purpose::RequestLink, token)
    else {
        return Ok(refused(app, Refusal::Expired));
    };
    let waiting = match RequestId::new(claims.r.clone()) {
        Ok(id) => app.stack.request(&id).await?.filter(|entry| {
            link_opens(entry, &claims)
                && entry.status == RequestStatus::Open
                && entry.request.deadline.is_none_or(|d| d > now)
        }),
        Err(_) => None,
    };
    let Some(entry) = waiting else {
        return Ok(refused(app, Refusal::Expired));
    };
    if request.method() == "POST" && rest == ["renew"] {
        let sent = app.stack.inbox().announce_again(&entry.request.id).await?;
        return Ok(if sent {
            app.pages.message(
                200,
                "A new link is on its way",
                "Check your email: the new link opens the same question.",
                "ok",
            )
        } else {
            refused(app, Refusal::Expired)
        });
    }
    let context = minijinja::context! {
        title => "This link has expired",
        text => "The question is still waiting for your answer. We can email you a new link.",
        tone => "warn",
        form => minijinja::context! { action => format!("/r/{token}/renew"), button => "Email me a new link" },
    };
    Ok(app.pages.render(410, "message.html", context))
}

fn closed_page(app: &App, token: &str, entry: &InboxEntry, now: Timestamp) -> Option<Response> {
    let mine = format!("/r/{token}/mine");
    let link = Some((mine.as_str(), "Your questions and digests"));
    let say =
        |title: &str, text: &str| Some(app.pages.message_with_link(200, title, text, "ok", link));
    match entry.status {
        RequestStatus::Answered => say(
            "Already answered",
            "This question has been answered. Thank you: there is nothing more to do here.",
        ),
        RequestStatus::Expired => say(
            "This question has expired",
            "It waited until its deadline and is closed. If your answer is still needed, you will be asked again.",
        ),
        RequestStatus::Withdrawn => say(
            "This question was withdrawn",
            "It no longer needs an answer.",
        ),
        RequestStatus::Open if entry.request.deadline.is_some_and(|d| d <= now) => say(
            "This question has expired",
            "Its deadline has passed. If your answer is still needed, you will be asked again.",
        ),
        RequestStatus::Open => None,
    }
}

fn title_of(entry: &InboxEntry) -> String {
    match entry.request.kind.as_str() {
        "auth" => "Connect your mailbox".into(),
        "preferences" => "Your digest preferences".into(),
        "approval" => "Your approval is needed".into(),
        other => format!("A question for you ({other})"),
    }
}

fn show(
    app: &App,
    request: &Request,
    token: &str,
    entry: &InboxEntry,
    problems: Option<&BTreeMap<String, Vec<String>>>,
    submitted: &Submitted,
    now: Timestamp,
) -> Response {
    if let Some(page) = closed_page(app, token, entry, now) {
        return page;
    }
    let nonce = random_token(24);
    let csrf = form_token(&app.links, &nonce, &entry.request.id, now);
    let no_problems = BTreeMap::new();
    let problems = problems.unwrap_or(&no_problems);
    let fields = form::fields(&entry.request.schema, submitted, problems);
    let unplaced = form::unplaced(&fields, problems);
    let mut shown_problems = unplaced;
    if shown_problems.is_empty() && !problems.is_empty() {
        shown_problems.push(format!(
            "{} field{} need{} attention.",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            if problems.len() == 1 { "s" } else { "" }
        ));
    }
    let status = if problems.is_empty() { 200 } else { 422 };
    let context = minijinja::context! {
        title => title_of(entry),
        prompt => entry.request.prompt,
        deadline => entry.request.deadline.map(|d| d.to_string()),
        fields,
        problems => shown_problems,
        csrf,
        action => format!("/r/{token}"),
        mine => format!("/r/{token}/mine"),
        connect_gmail => (app.oauth.is_some() && crate::gmail::takes_gmail(&entry.request.schema))
            .then(|| format!("/r/{token}/connect/gmail")),
    };
    app.pages
        .render(status, "request.html", context)
        // One cookie per link: two questions open in two tabs do not replace each other's.
        .with_cookie(
            request,
            FORM_COOKIE,
            &nonce,
            &format!("/r/{token}"),
            FORM_LIFETIME.as_secs(),
        )
}

/// Bound to one person: a link opens its request only if the request names the link's person.
pub fn link_opens(entry: &InboxEntry, claims: &LinkClaims) -> bool {
    entry.request.id.as_str() == claims.r
        && entry.request.person.as_deref() == Some(claims.p.as_str())
}

/// A form token for request `id`, tied to the nonce in the browser's form cookie.
pub fn form_token(links: &Signer, nonce: &str, id: &RequestId, now: Timestamp) -> String {
    links.sign(
        Purpose::Form,
        &FormClaims {
            n: nonce.to_string(),
            r: id.to_string(),
        },
        now.plus(FORM_LIFETIME),
    )
}

/// The form's CSRF token is valid, for this request and this browser's form cookie.
pub fn form_is_genuine(
    links: &Signer,
    cookie: Option<&str>,
    token: Option<&str>,
    id: &RequestId,
    now: Timestamp,
) -> bool {
    let (Some(cookie), Some(token)) = (cookie, token) else {
        return false;
    };
    match links.verify::<FormClaims>(Purpose::Form, token, now) {
        Ok(claims) => same(&claims.n, cookie) && claims.r == id.as_str(),
        Err(_) => false,
    }
}

async fn submit(
    app: &App,
    request: &Request,
    token: &str,
    entry: &InboxEntry,
    now: Timestamp,
) -> Result<Response> {
    let mut submitted = form::parse_body(&request.body_bytes());
    let cookie = request.cookie(FORM_COOKIE);
    let csrf = submitted.get("csrf").and_then(|v| v.first());
    if !form_is_genuine(
        &app.links,
        cookie.as_deref(),
        csrf.map(String::as_str),
        &entry.request.id,
        now,
    ) {
        return Ok(app.pages.message_with_link(
            403,
            "Your answer was not sent",
            "The form had expired or did not come from this page. Open the question again and resend your answer.",
            "warn",
            Some((&format!("/r/{token}"), "Open the question again")),
        ));
    }
    submitted.remove("csrf");
    if let Some(page) = closed_page(app, token, entry, now) {
        return Ok(page);
    }
    let answer = form::answer(&entry.request.schema, &submitted);
    let problems = form::problems(&entry.request.schema, &answer)?;
    if !problems.is_empty() {
        return Ok(show(
            app,
            request,
            token,
            entry,
            Some(&problems),
            &submitted,
            now,
        ));
    }
    match app.stack.answer(&entry.request.id, answer).await {
        Ok(()) => Ok(app.pages.message_with_link(
            200,
            "Thank you",
            "Your answer was received. Your assistant carries on with it now.",
            "ok",
            Some((&format!("/r/{token}/mine"), "Your questions and digests")),
        )),
        // The inbox decided against this answer (another answer or the deadline came first):
        // show the request as it now stands.
        Err(error) if !error.is_retryable() => {
            tracing::info!(reason = %error.reason, "answer refused");
            let now_entry = app.stack.request(&entry.request.id).await?;
            Ok(now_entry
                .and_then(|e| closed_page(app, token, &e, Timestamp::now_utc()))
                .unwrap_or_else(|| {
                    app.pages.message(
                        409,
                        "Your answer was not accepted",
                        "It could not be taken; open the question again.",
                        "warn",
                    )
                }))
        }
        Err(error) => Err(error),
    }
}

#[derive(Serialize)]
struct MineRequest {
    status: &'static str,
    created: String,
    prompt: String,
}

#[derive(Serialize)]
struct MineDigest {
    name: String,
    href: String,
}

/// The person's questions (any status) and, where an email assistant works for them, its digests.
async fn mine(
    app: &App,
    token: &str,
    claims: &LinkClaims,
    digest: Option<&str>,
) -> Result<Response> {
    let entries = app.stack.inbox().of_person(&claims.p).await?;
    let requests: Vec<MineRequest> = entries
        .iter()
        .map(|e| MineRequest {
            status: match e.status {
                RequestStatus::Open => "waiting for you",
                RequestStatus::Answered => "answered",
                RequestStatus::Expired => "expired",
                RequestStatus::Withdrawn => "withdrawn",
            },
            created: e.request.created_at.to_string(),
            prompt: e.request.prompt.clone(),
        })
        .collect();
    // The digests of the users the person's email assistants work for.
    let mut users = Vec::new();
    for entry in entries
        .iter()
        .filter(|e| e.request.atom == "email-assistant")
    {
        if let Some(record) = app.stack.load(&entry.request.instance).await?
            && let Ok(state) = serde_json::from_str::<serde_json::Value>(&record.state)
            && let Some(user) = state.pointer("/hire/user").and_then(|u| u.as_str())
            && !users.contains(&user.to_string())
        {
            users.push(user.to_string());
        }
    }
    let mut digests = Vec::new();
    let mut shown = None;
    if let Ok(store) = reanimate_email::aws::S3Digests::of_stack(&app.stack) {
        use reanimate_email::digest::DigestStore;
        for user in &users {
            let prefix = reanimate_email::digest::user_prefix(Some(user));
            for key in store.list(&prefix).await? {
                let name = key.trim_start_matches("digests/").to_string();
                if digest == Some(name.replace('/', "~").as_str()) {
                    shown = store
                        .get(&key)
                        .await?
                        .map(|md| crate::pages::markdown_html(&md));
                }
                digests.push(MineDigest {
                    href: format!("/r/{token}/mine/{}", name.replace('/', "~")),
                    name,
                });
            }
        }
    }
    let context = minijinja::context! {
        title => "Your questions and digests",
        requests,
        digests,
        digest => shown,
    };
    Ok(app.pages.render(200, "mine.html", context))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reanimate_core::InstanceId;
    use reanimate_core::record::UserRequest;

    fn entry(person: Option<&str>) -> InboxEntry {
        InboxEntry {
            request: UserRequest {
                id: RequestId::new("a@1.0").unwrap_or_else(|e| panic!("{e}")),
                instance: InstanceId::new("a").unwrap_or_else(|e| panic!("{e}")),
                atom: "approval".into(),
                kind: "approval".into(),
                prompt: "?".into(),
                schema: serde_json::json!({}),
                deadline: None,
                created_at: Timestamp::from_millis(0),
                person: person.map(str::to_string),
            },
            status: RequestStatus::Open,
            answer: None,
            applied_at: None,
            updated_at: Timestamp::from_millis(0),
        }
    }

    #[test]
    fn a_link_opens_only_its_request_for_its_person() {
        let claims = |r: &str, p: &str| LinkClaims {
            r: r.into(),
            p: p.into(),
        };
        assert!(link_opens(&entry(Some("ana@x")), &claims("a@1.0", "ana@x")));
        assert!(!link_opens(
            &entry(Some("ana@x")),
            &claims("a@1.0", "bob@x")
        ));
        assert!(!link_opens(
            &entry(Some("ana@x")),
            &claims("b@1.0", "ana@x")
        ));
        assert!(!link_opens(&entry(None), &claims("a@1.0", "ana@x")));
    }

    #[test]
    fn a_form_counts_only_with_its_own_cookie_for_its_own_request() {
        let links = Signer::new("k".repeat(32)).unwrap_or_else(|e| panic!("{e}"));
        let now = Timestamp::from_millis(1_700_000_000_000);
        let id = RequestId::new("a@1.0").unwrap_or_else(|e| panic!("{e}"));
        let other = RequestId::new("b@1.0").unwrap_or_else(|e| panic!("{e}"));
        let token = form_token(&links, "nonce-1", &id, now);
        let genuine = |cookie, token, id, at| form_is_genuine(&links, cookie, token, id, at);
        assert!(genuine(Some("nonce-1"), Some(&token), &id, now));
        assert!(!genuine(None, Some(&token), &id, now), "no cookie");
        assert!(
            !genuine(Some("nonce-2"), Some(&token), &id, now),
            "another browser"
        );
        assert!(!genuine(Some("nonce-1"), None, &id, now), "no token");
        assert!(
            !genuine(Some("nonce-1"), Some(&token), &other, now),
            "another request"
        );
        let late = now.plus(FORM_LIFETIME);
        assert!(
            !genuine(Some("nonce-1"), Some(&token), &id, late),
            "expired"
        );
    }
}
