//! Connect Gmail from the inbox: the OAuth 2.0 authorization code flow with PKCE, through the web
//! app. `/r/{link}/connect/gmail` sends the person's browser to the provider's consent page;
//! `/oauth/callback` takes the code back, exchanges it (with the PKCE verifier) for a refresh
//! token, and answers the mailbox request with it, so it goes to Secrets Manager exactly as a
//! typed one would.
//!
//! Between the two, the browser holds a cookie signed by the link key with the verifier, the
//! request and the person; the `state` sent to the provider is a nonce that must match the
//! cookie's. The cookie is `SameSite=Lax`: the provider's redirect back is a top-level navigation
//! from another site, on which a `Strict` cookie would not be sent.

use crate::App;
use crate::http::{Request, Response};
use crate::inbox::LinkClaims;
use crate::signing::{Purpose, random_token, same};
use oauth2::PkceCodeVerifier;
use reanimate_core::ports::{InboxEntry, RequestStatus};
use reanimate_core::{RequestId, Result, Timestamp};
use reanimate_email::oauth::OAuthClient;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::time::Duration;

const COOKIE: &str = "reanimate-oauth";
/// How long a person has to consent.
const CONSENT_LIFETIME: Duration = Duration::from_secs(600);

#[derive(Serialize, Deserialize)]
struct Pending {
    /// The PKCE verifier.
    v: String,
    /// The `state` sent to the provider.
    n: String,
    /// The link the person came from (to go back to it).
    l: String,
    r: String,
    p: String,
}

/// The provider this stack connects to, if one is configured (`REANIMATE_GMAIL_CLIENT_ID`).
pub fn client_from_env() -> Option<OAuthClient> {
    let id = std::env::var("REANIMATE_GMAIL_CLIENT_ID")
        .ok()
        .filter(|id| !id.is_empty())?;
    let mut client = OAuthClient::google(id, std::env::var("REANIMATE_GMAIL_CLIENT_SECRET").ok());
    if let Ok(url) = std::env::var("REANIMATE_OAUTH_AUTHORIZE_URL").map(|u| u.trim().to_string())
        && !url.is_empty()
    {
        client.auth_url = url;
    }
    if let Ok(url) = std::env::var("REANIMATE_GMAIL_TOKEN_URL").map(|u| u.trim().to_string())
        && !url.is_empty()
    {
        client.token_url = url;
    }
    Some(client)
}

/// Whether a request takes a Gmail mailbox (a `oneOf` option whose `kind` is `gmail`).
pub fn takes_gmail(schema: &Value) -> bool {
    schema
        .pointer("/properties/mailbox/oneOf")
        .and_then(Value::as_array)
        .is_some_and(|options| {
            options
                .iter()
                .any(|o| o.pointer("/properties/kind/const") == Some(&json!("gmail")))
        })
}

fn callback_url(request: &Request) -> String {
    let scheme = if request.is_https() { "https" } else { "http" };
    format!(
        "{scheme}://{}/oauth/callback",
        request.header("host").unwrap_or_default()
    )
}

/// Sends the person to the provider's consent page.
pub fn start(
    app: &App,
    request: &Request,
    link: &str,
    claims: &LinkClaims,
    entry: &InboxEntry,
) -> Result<Response> {
    let Some(client) = &app.oauth else {
        return Ok(app.pages.message(
            404,
            "Not available",
            "This assistant cannot connect Gmail here.",
            "warn",
        ));
    };
    if entry.status != RequestStatus::Open || !takes_gmail(&entry.request.schema) {
        return Ok(Response::redirect(&format!("/r/{link}")));
    }
    let pending = Pending {
        v: random_token(48),
        n: random_token(24),
        l: link.to_string(),
        r: claims.r.clone(),
        p: claims.p.clone(),
    };
    let url = client.consent_url(&callback_url(request), &pending.n, &pending.v)?;
    let cookie = app.links.sign(
        Purpose::OAuthState,
        &pending,
        Timestamp::now_utc().plus(CONSENT_LIFETIME),
    );
    Ok(Response::redirect(&url).with_cookie_same_site(
        request,
        COOKIE,
        &cookie,
        "/oauth",
        CONSENT_LIFETIME.as_secs(),
        "Lax",
    ))
}

fn not_connected(app: &App, why: &str, back: Option<&str>) -> Response {
    let back = back.map(|l| format!("/r/{l}"));
    app.pages.message_with_link(
        400,
        "Gmail was not connected",
        why,
        "warn",
        back.as_deref().map(|b| (b, "Back to the question")),
    )
}

/// The provider's redirect back: the code becomes the request's answer.
pub async fn callback(app: &App, request: &Request) -> Result<Response> {
    let now = Timestamp::now_utc();
    let (Some(client), Some(pending)) = (
        &app.oauth,
        request.cookie(COOKIE).and_then(|c| {
            app.links
                .verify::<Pending>(Purpose::OAuthState, &c, now)
                .ok()
        }),
    ) else {
        return Ok(not_connected(
            app,
            "The sign-in took too long or did not start here. Open your link again and press Connect Gmail.",
            None,
        ));
    };
    let state = request.query("state").unwrap_or_default();
    if !same(&state, &pending.n) {
        return Ok(not_connected(
            app,
            "The answer from Google did not belong to this sign-in.",
            Some(&pending.l),
        ));
    }
    if let Some(error) = request.query("error") {
        let why = if error == "access_denied" {
            "You did not allow reading your mail, so nothing was connected.".to_string()
        } else {
            format!("Google said: {error}.")
        };
        return Ok(not_connected(app, &why, Some(&pending.l)));
    }
    let Some(code) = request.query("code").filter(|c| !c.is_empty()) else {
        return Ok(not_connected(
            app,
            "Google sent no authorization.",
            Some(&pending.l),
        ));
    };
    let id = RequestId::new(pending.r.clone())?;
    let open = app
        .stack
        .request(&id)
        .await?
        .filter(|e| e.request.person.as_deref() == Some(pending.p.as_str()))
        .is_some_and(|e| e.status == RequestStatus::Open);
    if !open {
        return Ok(Response::redirect(&format!("/r/{}", pending.l)));
    }
    let tokens = match client
        .redeem(
            &code,
            PkceCodeVerifier::new(pending.v.clone()),
            &callback_url(request),
        )
        .await
    {
        Ok(tokens) => tokens,
        Err(error) => {
            tracing::warn!(reason = %error.reason, "Gmail code exchange failed");
            return Ok(not_connected(
                app,
                "Google did not confirm the sign-in. Please try again.",
                Some(&pending.l),
            ));
        }
    };
    let Some(refresh_token) = tokens.refresh_token() else {
        return Ok(not_connected(
            app,
            "Google gave no lasting access. Please try again.",
            Some(&pending.l),
        ));
    };
    let answer = json!({"mailbox": {"kind": "gmail", "refresh_token": refresh_token}});
    app.stack.answer(&id, answer).await?;
    let mine = format!("/r/{}/mine", pending.l);
    Ok(app
        .pages
        .message_with_link(
            200,
            "Gmail is connected",
            "Your assistant can now read your mail. Your password never reached us, and the access Google gave is kept in a secret store.",
            "ok",
            Some((&mine, "Your questions and digests")),
        )
        .with_cookie_same_site(request, COOKIE, "", "/oauth", 0, "Lax"))
}
