//! The operator console (`/console`): instances by atom and status, an instance's full history and
//! what it waits for, signal and cancel (each confirmed on a second page), dead letters with
//! their reasons and a redrive.
//!
//! Only operators get in: `/console/login?t=…` takes a short-lived link signed with the operator
//! key (`reanimate console` makes one, reading the key with the operator's AWS credentials) and
//! sets a session cookie signed with the same key. A person's request link is signed with another
//! key for another purpose, so it never opens the console.

use crate::App;
use crate::form::{Submitted, parse_body};
use crate::http::{Request, Response};
use crate::signing::{Purpose, random_token, same};
use reanimate_core::{InstanceId, MessageId, Result, Timestamp};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const SESSION_COOKIE: &str = "reanimate-console";
const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// How long a login link can be used.
pub const LOGIN_LIFETIME: Duration = Duration::from_secs(15 * 60);

#[derive(Serialize, Deserialize)]
struct Session {
    /// A nonce: console forms are signed over it.
    s: String,
}

#[derive(Serialize, Deserialize)]
struct FormClaims {
    s: String,
}

/// A login link's token, for `reanimate console`.
pub fn login_token(operators: &crate::signing::Signer, now: Timestamp) -> String {
    operators.sign(
        Purpose::OperatorLink,
        &serde_json::json!({"op": true}),
        now.plus(LOGIN_LIFETIME),
    )
}

fn denied(app: &App) -> Response {
    app.pages.message(
        403,
        "Operators only",
        "The console opens from a sign-in link made by `reanimate console` with an operator's AWS credentials.",
        "warn",
    )
}

pub async fn route(app: &App, request: &Request, rest: &[&str]) -> Result<Response> {
    let now = Timestamp::now_utc();
    if rest == ["login"] {
        let token = request.query("t").unwrap_or_default();
        return Ok(
            match app
                .operators
                .verify::<serde_json::Value>(Purpose::OperatorLink, &token, now)
            {
                Ok(_) => {
                    let session = app.operators.sign(
                        Purpose::OperatorSession,
                        &Session {
                            s: random_token(24),
                        },
                        now.plus(SESSION_LIFETIME),
                    );
                    Response::redirect("/console").with_cookie(
                        request,
                        SESSION_COOKIE,
                        &session,
                        "/console",
                        SESSION_LIFETIME.as_secs(),
                    )
                }
                Err(_) => denied(app),
            },
        );
    }
    let Some(session) = request.cookie(SESSION_COOKIE).and_then(|c| {
        app.operators
            .verify::<Session>(Purpose::OperatorSession, &c, now)
            .ok()
    }) else {
        return Ok(denied(app));
    };
    let csrf = app.operators.sign(
        Purpose::ConsoleForm,
        &FormClaims {
            s: session.s.clone(),
        },
        now.plus(SESSION_LIFETIME),
    );
    if request.method() == "POST" {
        let form = parse_body(&request.body_bytes());
        let genuine = form
            .get("csrf")
            .and_then(|v| v.first())
            .and_then(|t| {
                app.operators
                    .verify::<FormClaims>(Purpose::ConsoleForm, t, now)
                    .ok()
            })
            .is_some_and(|claims| same(&claims.s, &session.s));
        if !genuine {
            return Ok(app.pages.message(
                403,
                "Not done",
                "The form did not come from this console session. Go back, reload and try again.",
                "warn",
            ));
        }
        return match rest {
            ["i", id, action @ ("signal" | "cancel")] => act(app, id, action, &form, &csrf).await,
            ["dead-letters", "redrive"] => redrive(app, &form).await,
            _ => Ok(app
                .pages
                .message(404, "Not found", "There is no such page.", "warn")),
        };
    }
    match rest {
        [] => instances(app, request).await,
        ["i", id] => instance(app, id, &csrf, notice(request)).await,
        ["dead-letters"] => dead_letters(app, &csrf, notice(request)).await,
        _ => Ok(app
            .pages
            .message(404, "Not found", "There is no such page.", "warn")),
    }
}

/// What the page after an action says: one of a fixed few (`?done=`), so a link cannot put words
/// of its own on an operator's screen.
fn notice(request: &Request) -> Option<&'static str> {
    match request.query("done")?.as_str() {
        "cancel" => {
            Some("Cancel sent: the instance and everything it started are being cancelled.")
        }
        "signal" => Some("Signal sent."),
        "sent" => Some("Sent back to its queue."),
        "gone" => {
            Some("That message is no longer a dead letter (already sent back?): nothing was sent.")
        }
        _ => None,
    }
}

/// The instance a path names, or the page that says there is none.
async fn instance_named(
    app: &App,
    id: &str,
) -> Result<std::result::Result<(InstanceId, reanimate_core::InstanceRecord), Response>> {
    let not_found = || {
        app.pages
            .message(404, "Not found", "No such instance.", "warn")
    };
    let Ok(id) = InstanceId::new(id) else {
        return Ok(Err(not_found()));
    };
    Ok(match app.stack.load(&id).await? {
        Some(record) => Ok((id, record)),
        None => Err(not_found()),
    })
}

fn href(id: &InstanceId) -> String {
    let encoded: String = form_urlencoded::byte_serialize(id.as_str().as_bytes()).collect();
    format!("/console/i/{encoded}")
}

#[derive(Serialize)]
struct Row {
    id: String,
    href: String,
    atom: String,
    status: &'static str,
    version: u64,
    updated: String,
}

async fn instances(app: &App, request: &Request) -> Result<Response> {
    let all = app.stack.list().await?;
    let atom = request.query("atom").unwrap_or_default();
    let status = request.query("status").unwrap_or_default();
    let mut atoms: Vec<String> = all.iter().map(|r| r.atom.clone()).collect();
    atoms.sort();
    atoms.dedup();
    let statuses = ["running", "suspended", "completed", "failed", "cancelled"];
    let mut rows: Vec<Row> = all
        .iter()
        .filter(|r| atom.is_empty() || r.atom == atom)
        .filter(|r| status.is_empty() || r.status.as_str() == status)
        .map(|r| Row {
            id: r.id.to_string(),
            href: href(&r.id),
            atom: r.atom.clone(),
            status: r.status.as_str(),
            version: r.version,
            updated: r.updated_at.to_string(),
        })
        .collect();
    rows.sort_by(|a, b| b.updated.cmp(&a.updated));
    let context = minijinja::context! {
        title => "Instances",
        total => all.len(),
        instances => rows,
        atoms, atom, statuses, status,
    };
    Ok(app.pages.render(200, "console.html", context))
}

async fn instance(
    app: &App,
    id: &str,
    csrf: &str,
    notice: Option<&'static str>,
) -> Result<Response> {
    let (id, record) = match instance_named(app, id).await? {
        Ok(found) => found,
        Err(not_found) => return Ok(not_found),
    };
    let history = app.stack.history_of(&record).await?;
    let waiting = &record.waiting;
    let mut waits: Vec<String> = Vec::new();
    for (request, pending) in &waiting.requests {
        waits.push(format!("request {request} ({})", pending.kind));
    }
    for (name, timer) in &waiting.timers {
        waits.push(format!(
            "timer {name}: {}",
            serde_json::to_string(timer).unwrap_or_default()
        ));
    }
    for (child, pending) in &waiting.children {
        waits.push(format!("child {child} ({})", pending.tag));
    }
    for (call, pending) in &waiting.calls {
        waits.push(format!("call {call} ({})", pending.activity));
    }
    let children: Vec<serde_json::Value> = app
        .stack
        .list()
        .await?
        .into_iter()
        .filter(|r| r.parent.as_ref().is_some_and(|p| p.id == id))
        .map(|r| serde_json::json!({"id": r.id.to_string(), "href": href(&r.id), "atom": r.atom, "status": r.status.as_str()}))
        .collect();
    let history: Vec<serde_json::Value> = history
        .iter()
        .map(|h| serde_json::json!({"version": h.version, "at": h.at.to_string(), "event": h.event, "detail": h.detail, "status": h.status.as_str(), "effects": h.effects}))
        .collect();
    let context = minijinja::context! {
        title => format!("Instance {id}"),
        notice,
        r => serde_json::json!({
            "atom": record.atom, "status": record.status.as_str(), "version": record.version,
            "parent": record.parent.as_ref().map(|p| p.id.to_string()),
            "parent_href": record.parent.as_ref().map(|p| href(&p.id)),
            "created": record.created_at.to_string(), "updated": record.updated_at.to_string(),
            "error": record.error,
        }),
        waiting => waits,
        children,
        history,
        finished => record.status.is_finished(),
        act => href(&id),
        csrf,
    };
    Ok(app.pages.render(200, "instance.html", context))
}

fn field<'a>(form: &'a Submitted, name: &str) -> &'a str {
    form.get(name)
        .and_then(|v| v.first())
        .map(String::as_str)
        .unwrap_or_default()
}

async fn act(app: &App, id: &str, action: &str, form: &Submitted, csrf: &str) -> Result<Response> {
    let (id, record) = match instance_named(app, id).await? {
        Ok(found) => found,
        Err(not_found) => return Ok(not_found),
    };
    let back = href(&id);
    let confirmed = field(form, "confirm") == "yes";
    let done = match action {
        "cancel" => {
            let reason = field(form, "reason");
            if !confirmed {
                let context = minijinja::context! {
                    title => "Cancel this instance?",
                    text => format!("{id} ({}) and everything it started will be cancelled with the reason “{reason}”. This cannot be undone.", record.atom),
                    action => format!("{back}/cancel"), csrf, back => back.clone(), button => "Yes, cancel it",
                    hidden => vec![serde_json::json!({"name": "reason", "value": reason})],
                };
                return Ok(app.pages.render(200, "confirm.html", context));
            }
            app.stack.cancel(&id, &record.atom, reason).await?;
            "cancel"
        }
        _ => {
            let name = field(form, "name");
            let payload_text = field(form, "payload");
            let payload: serde_json::Value =
                match serde_json::from_str(if payload_text.trim().is_empty() {
                    "null"
                } else {
                    payload_text
                }) {
                    Ok(p) => p,
                    Err(e) => {
                        return Ok(app.pages.message_with_link(
                            422,
                            "Not sent",
                            &format!("The payload is not JSON: {e}"),
                            "warn",
                            Some((&back, "Back to the instance")),
                        ));
                    }
                };
            if name.is_empty() {
                return Ok(app.pages.message_with_link(
                    422,
                    "Not sent",
                    "A signal needs a name.",
                    "warn",
                    Some((&back, "Back to the instance")),
                ));
            }
            // One id per confirmation page: pressing the confirm button twice sends one signal.
            let message = match field(form, "message") {
                "" => format!("console:{}", random_token(12)),
                given => given.to_string(),
            };
            if !confirmed {
                let context = minijinja::context! {
                    title => "Send this signal?",
                    text => format!("{id} ({}) will receive the signal “{name}” with payload {payload}.", record.atom),
                    action => format!("{back}/signal"), csrf, back => back.clone(), button => "Yes, send it",
                    hidden => vec![
                        serde_json::json!({"name": "name", "value": name}),
                        serde_json::json!({"name": "payload", "value": payload.to_string()}),
                        serde_json::json!({"name": "message", "value": message}),
                    ],
                };
                return Ok(app.pages.render(200, "confirm.html", context));
            }
            app.stack
                .signal(&id, &record.atom, name, payload, MessageId::new(message)?)
                .await?;
            "signal"
        }
    };
    Ok(Response::redirect(&format!("{back}?done={done}")))
}

async fn dead_letters(app: &App, csrf: &str, notice: Option<&'static str>) -> Result<Response> {
    let queues = app.stack.dead_letters();
    let counts: Vec<serde_json::Value> = queues
        .counts(None)
        .await?
        .into_iter()
        .map(|(atom, count)| serde_json::json!({"atom": atom, "count": count}))
        .collect();
    let letters: Vec<serde_json::Value> = queues
        .peek(None, 50)
        .await?
        .into_iter()
        .map(|d| serde_json::json!({
            "atom": d.atom, "message_id": d.message_id,
            "reason": d.reason.unwrap_or_else(|| "moved by SQS after too many receives".into()),
            "receive_count": d.receive_count, "body": reanimate_core::text::truncate_at_char(&d.body, 400),
        }))
        .collect();
    let context = minijinja::context! { title => "Dead letters", counts, letters, csrf, notice };
    Ok(app.pages.render(200, "dead_letters.html", context))
}

/// Sends one dead letter back to its queue. Safe to press twice: the second finds it gone (and a
/// message sent back twice is applied once, by its id).
async fn redrive(app: &App, form: &Submitted) -> Result<Response> {
    let atom = field(form, "atom");
    let message = field(form, "message");
    if atom.is_empty() || message.is_empty() {
        return Ok(app.pages.message(422, "Not sent", "Which message?", "warn"));
    }
    let sent = app
        .stack
        .dead_letters()
        .redrive(Some(atom), Some(message))
        .await?;
    let n: usize = sent.sent.values().sum();
    let done = if n == 0 { "gone" } else { "sent" };
    Ok(Response::redirect(&format!(
        "/console/dead-letters?done={done}"
    )))
}
