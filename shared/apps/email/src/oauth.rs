//! OAuth 2.0 for Gmail, as an installed app (RFC 6749, RFC 7636, RFC 8252):
//! - [`OAuthClient::refresh`]: an access token from a refresh token (`grant_type=refresh_token`);
//! - [`OAuthClient::consent`] and [`Consent::finish`]: the authorization code flow with PKCE
//!   (S256) and a loopback redirect on 127.0.0.1, which yields the refresh token
//!   `reanimate connect gmail` stores.
//!
//! The `oauth2` crate builds and parses the wire formats; requests go through our reqwest client
//! and [`reanimate_llm::send`], so throttling and server errors are classified like every other
//! provider's. No token is ever logged, and no token endpoint body appears in an error.

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use oauth2::basic::{BasicClient, BasicErrorResponse, BasicErrorResponseType, BasicTokenResponse};
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet,
    EndpointSet, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError,
    Scope, TokenResponse as _, TokenUrl,
};
use reanimate_core::{Error, Result};
use reanimate_llm::Attempt;
use std::fmt;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Google's authorization endpoint (the consent screen).
pub const GOOGLE_AUTH_URL: &str = "https://accounts.google.com/o/oauth2/v2/auth";
/// Google's token endpoint.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// Read-only access to the mailbox: all the assistant needs.
pub const GMAIL_READONLY_SCOPE: &str = "https://www.googleapis.com/auth/gmail.readonly";

/// How long a token endpoint request may take.
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one browser connection may take to send its request line: browsers open idle
/// speculative connections, which must not hold up the real redirect.
const BROWSER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most a browser's request head may be.
const BROWSER_REQUEST_LIMIT: usize = 16 * 1024;

/// An OAuth client registration (Google Cloud console, type "Desktop app").
#[derive(Clone, PartialEq, Eq)]
pub struct OAuthClient {
    pub client_id: String,
    /// Google issues installed apps a secret that is not confidential; other servers may issue
    /// none (PKCE protects the code either way).
    pub client_secret: Option<String>,
    pub auth_url: String,
    pub token_url: String,
    pub scope: String,
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "…"))
            .field("auth_url", &self.auth_url)
            .field("token_url", &self.token_url)
            .field("scope", &self.scope)
            .finish()
    }
}

/// What a token endpoint answered.
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    access_token: String,
    expires_in: Option<Duration>,
    refresh_token: Option<String>,
    scopes: Option<Vec<String>>,
}

impl Tokens {
    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    /// The access token's lifetime, if the server said.
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires_in
    }

    /// Present after a code exchange (Google: with `access_type=offline`), rarely after a refresh.
    pub fn refresh_token(&self) -> Option<&str> {
        self.refresh_token.as_deref()
    }

    /// The granted scopes, if the server listed them (they may be fewer than asked for).
    pub fn scopes(&self) -> Option<&[String]> {
        self.scopes.as_deref()
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "…"))
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// Why a token request did not give tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// `invalid_grant`: the refresh token or code is invalid, expired or revoked. Only the user
    /// can fix this, by consenting again.
    InvalidGrant(String),
    /// Any other refusal (a wrong client id or secret, a malformed answer): terminal.
    Refused(String),
    /// A network error, throttling or a server error: worth another try.
    Unavailable {
        reason: String,
        after: Option<Duration>,
    },
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::InvalidGrant(why) => write!(f, "the grant was refused: {why}"),
            TokenError::Refused(why) => write!(f, "{why}"),
            TokenError::Unavailable { reason, .. } => write!(f, "unavailable: {reason}"),
        }
    }
}

impl std::error::Error for TokenError {}

impl From<TokenError> for Error {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Unavailable { .. } => Error::retryable(e),
            _ => Error::terminal(e),
        }
    }
}

type ConfiguredClient =
    BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// A client for token requests: redirects are not followed (the `oauth2` crate's advice against
/// SSRF through a redirecting token endpoint).
pub fn token_http_client(timeout: Duration) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::terminal(format!("cannot build the HTTP client: {e}")))
}

/// Sends one token request for the `oauth2` crate through [`reanimate_llm::send`].
async fn send_token_request(
    http: reqwest::Client,
    request: oauth2::HttpRequest,
) -> std::result::Result<oauth2::HttpResponse, TokenError> {
    let (parts, body) = request.into_parts();
    let builder = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body);
    match reanimate_llm::send(builder).await {
        Attempt::Done(reply) => oauth2::http::Response::builder()
            .status(reply.status)
            .body(reply.text.into_bytes())
            .map_err(|e| TokenError::Refused(format!("unreadable token endpoint answer: {e}"))),
        Attempt::Retry { reason, after } => Err(TokenError::Unavailable { reason, after }),
        Attempt::Fail(error) => Err(TokenError::Refused(error.reason)),
    }
}

/// A token endpoint's refusal, without the body (which could hold a token).
fn classify(error: RequestTokenError<TokenError, BasicErrorResponse>) -> TokenError {
    match error {
        RequestTokenError::Request(e) => e,
        RequestTokenError::ServerResponse(refusal) => {
            let mut why = refusal.error().to_string();
            if let Some(description) = refusal.error_description() {
                why += &format!(": {description}");
            }
            match refusal.error() {
                BasicErrorResponseType::InvalidGrant => TokenError::InvalidGrant(why),
                _ => TokenError::Refused(why),
            }
        }
        RequestTokenError::Parse(e, _body) => TokenError::Refused(format!(
            "the token endpoint's answer is not a token response (at {})",
            e.path()
        )),
        RequestTokenError::Other(why) => TokenError::Refused(why),
    }
}

fn tokens(response: BasicTokenResponse) -> Tokens {
    Tokens {
        access_token: response.access_token().secret().clone(),
        expires_in: response.expires_in(),
        refresh_token: response.refresh_token().map(|t| t.secret().clone()),
        scopes: response
            .scopes()
            .map(|scopes| scopes.iter().map(|s| s.to_string()).collect()),
    }
}

impl OAuthClient {
    /// A Google client registration reading Gmail.
    pub fn google(client_id: impl Into<String>, client_secret: Option<String>) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: client_secret.filter(|s| !s.is_empty()),
            auth_url: GOOGLE_AUTH_URL.into(),
            token_url: GOOGLE_TOKEN_URL.into(),
            scope: GMAIL_READONLY_SCOPE.into(),
        }
    }

    fn configured(&self) -> std::result::Result<ConfiguredClient, TokenError> {
        if self.client_id.is_empty() {
            return Err(TokenError::Refused(
                "no OAuth client id is configured (REANIMATE_GMAIL_CLIENT_ID)".into(),
            ));
        }
        let auth_url = AuthUrl::new(self.auth_url.clone())
            .map_err(|e| TokenError::Refused(format!("bad authorization URL: {e}")))?;
        let token_url = TokenUrl::new(self.token_url.clone())
            .map_err(|e| TokenError::Refused(format!("bad token URL: {e}")))?;
        let client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri(auth_url)
            .set_token_uri(token_url)
            // Credentials in the form, as Google documents for installed apps; also works
            // without a secret.
            .set_auth_type(AuthType::RequestBody);
        Ok(match &self.client_secret {
            Some(secret) => client.set_client_secret(ClientSecret::new(secret.clone())),
            None => client,
        })
    }

    /// One refresh request (RFC 6749 §6): a new access token from `refresh_token`. Retries are
    /// the caller's, guided by [`TokenError::Unavailable`].
    pub async fn refresh(
        &self,
        http: &reqwest::Client,
        refresh_token: &str,
    ) -> std::result::Result<Tokens, TokenError> {
        let client = self.configured()?;
        let send = |request: oauth2::HttpRequest| send_token_request(http.clone(), request);
        client
            .exchange_refresh_token(&RefreshToken::new(refresh_token.to_string()))
            .request_async(&send)
            .await
            .map(tokens)
            .map_err(classify)
    }

    /// Starts a consent: listens on a free port of 127.0.0.1 and builds the consent URL with a
    /// fresh `state` and PKCE challenge.
    pub async fn consent(&self) -> Result<Consent> {
        let client = self.configured()?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| Error::retryable(format!("cannot listen on 127.0.0.1: {e}")))?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::retryable(format!("cannot listen on 127.0.0.1: {e}")))?
            .port();
        let redirect_uri = format!("http://127.0.0.1:{port}");
        let redirect = RedirectUrl::new(redirect_uri.clone())
            .map_err(|e| Error::terminal(format!("bad redirect URL: {e}")))?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state) = client
            .set_redirect_uri(redirect)
            .authorize_url(CsrfToken::new_random)
            .add_scope(Scope::new(self.scope.clone()))
            .set_pkce_challenge(challenge)
            // Google: a refresh token is issued only for offline access, and again on a repeated
            // consent only when the consent screen is shown again.
            .add_extra_param("access_type", "offline")
            .add_extra_param("prompt", "consent")
            .url();
        Ok(Consent {
            client: self.clone(),
            url: url.to_string(),
            redirect_uri,
            state,
            verifier,
            listener,
        })
    }

    /// The consent URL for a web app's redirect: `state` (the app's, tying the redirect to the
    /// person's browser) and the PKCE challenge of `verifier` (a random string the app keeps;
    /// 43 to 128 characters of `[A-Za-z0-9-._~]`), coming back to `redirect_uri`.
    pub fn consent_url(&self, redirect_uri: &str, state: &str, verifier: &str) -> Result<String> {
        let client = self.configured()?;
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|e| Error::terminal(format!("bad redirect URL: {e}")))?;
        let challenge =
            PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(verifier.into()));
        let state = state.to_string();
        let (url, _) = client
            .set_redirect_uri(redirect)
            .authorize_url(move || CsrfToken::new(state))
            .add_scope(Scope::new(self.scope.clone()))
            .set_pkce_challenge(challenge)
            .add_extra_param("access_type", "offline")
            .add_extra_param("prompt", "consent")
            .url();
        Ok(url.to_string())
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens, and checks that they
    /// will last: a refresh token came back, with the scope asked for.
    pub async fn redeem(
        &self,
        code: &str,
        verifier: PkceCodeVerifier,
        redirect_uri: &str,
    ) -> Result<Tokens> {
        let tokens = self
            .exchange_code(code, verifier, redirect_uri)
            .await
            .map_err(|e| match e {
                TokenError::Unavailable { .. } => Error::retryable(format!(
                    "the token endpoint could not be reached to exchange the code ({e}); connect again"
                )),
                _ => Error::terminal(format!(
                    "the token endpoint refused the authorization code: {e}"
                )),
            })?;
        if tokens.refresh_token().is_none() {
            return Err(Error::terminal(
                "the token endpoint returned no refresh token, so the connection would end with the access token; connect again",
            ));
        }
        if let Some(granted) = tokens.scopes()
            && !granted.contains(&self.scope)
        {
            return Err(Error::terminal(format!(
                "the consent did not grant {}; connect again and allow reading mail",
                self.scope
            )));
        }
        Ok(tokens)
    }

    async fn exchange_code(
        &self,
        code: &str,
        verifier: PkceCodeVerifier,
        redirect_uri: &str,
    ) -> std::result::Result<Tokens, TokenError> {
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|e| TokenError::Refused(format!("bad redirect URL: {e}")))?;
        let client = self.configured()?.set_redirect_uri(redirect);
        let http =
            token_http_client(TOKEN_REQUEST_TIMEOUT).map_err(|e| TokenError::Refused(e.reason))?;
        let send = |request: oauth2::HttpRequest| send_token_request(http.clone(), request);
        client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .set_pkce_verifier(verifier)
            .request_async(&send)
            .await
            .map(tokens)
            .map_err(classify)
    }
}

/// A consent in progress: the URL to open, and the loopback listener the browser comes back to.
pub struct Consent {
    client: OAuthClient,
    url: String,
    redirect_uri: String,
    state: CsrfToken,
    verifier: PkceCodeVerifier,
    listener: TcpListener,
}

impl fmt::Debug for Consent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consent")
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

/// What the browser's redirect said.
#[derive(Debug, PartialEq, Eq)]
enum Redirect {
    Code(String),
    Refused(String),
    /// Not the redirect (a favicon, a stray visit): answered and ignored.
    Other,
}

impl Consent {
    /// The consent URL for the user's browser.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the browser is sent back to (`http://127.0.0.1:<port>`).
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits for the browser's redirect, then exchanges its code (with the PKCE verifier) for
    /// tokens. Fails if the user denied consent, the `state` does not match, the token endpoint
    /// refuses, or no refresh token or not the asked scope comes back.
    pub async fn finish(self) -> Result<Tokens> {
        let code = self.receive_code().await?;
        self.client
            .redeem(&code, self.verifier, &self.redirect_uri)
            .await
    }

    /// Serves the loopback redirect until it comes (or a refusal does); answers the browser with
    /// a short page.
    async fn receive_code(&self) -> Result<String> {
        let mut reading = FuturesUnordered::new();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (socket, _) = accepted.map_err(|e| {
                        Error::retryable(format!("the loopback listener failed: {e}"))
                    })?;
                    reading.push(read_request_target(socket));
                }
                Some(read) = reading.next(), if !reading.is_empty() => {
                    // A connection that sent nothing usable is dropped: it was not the redirect.
                    let Some((mut socket, target)) = read else { continue };
                    let redirect = self.judge(&target);
                    let (status, page) = match &redirect {
                        Redirect::Code(_) => ("200 OK", "Gmail is connected. You can close this tab and return to the terminal."),
                        Redirect::Refused(_) => ("400 Bad Request", "Gmail was not connected. See the terminal for why."),
                        Redirect::Other => ("404 Not Found", "Not found."),
                    };
                    answer_browser(&mut socket, status, page).await;
                    match redirect {
                        Redirect::Code(code) => return Ok(code),
                        Redirect::Refused(why) => return Err(Error::terminal(why)),
                        Redirect::Other => continue,
                    }
                }
            }
        }
    }

    fn judge(&self, target: &str) -> Redirect {
        let Ok(url) = oauth2::url::Url::parse(&format!("http://127.0.0.1{target}")) else {
            return Redirect::Other;
        };
        if url.path() != "/" {
            return Redirect::Other;
        }
        let param = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let (code, error) = (param("code"), param("error"));
        if code.is_none() && error.is_none() {
            return Redirect::Other;
        }
        // Checked first: a redirect that is not this consent's says nothing about it.
        if param("state").as_deref() != Some(self.state.secret().as_str()) {
            return Redirect::Refused(
                "the redirect's state does not match this consent (a stale browser tab or a forged request); nothing was stored, connect again".into(),
            );
        }
        match (code, error) {
            (_, Some(error)) if error == "access_denied" => Redirect::Refused(
                "consent was denied in the browser (access_denied); nothing was stored".into(),
            ),
            (_, Some(error)) => {
                let description = param("error_description")
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                Redirect::Refused(format!(
                    "the authorization server refused: {error}{description}"
                ))
            }
            (Some(code), None) => Redirect::Code(code),
            (None, None) => Redirect::Other,
        }
    }
}

/// The request target (`/?code=…`) of a browser's GET, or `None` for a connection that sends
/// nothing usable in time.
async fn read_request_target(mut socket: TcpStream) -> Option<(TcpStream, String)> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 2048];
    let read = tokio::time::timeout(BROWSER_REQUEST_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < BROWSER_REQUEST_LIMIT {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return None;
    }
    let head = String::from_utf8_lossy(&head);
    let mut request_line = head.lines().next()?.split_whitespace();
    let (method, target) = (request_line.next()?, request_line.next()?);
    (method == "GET").then(|| (socket, target.to_string()))
}

async fn answer_browser(socket: &mut TcpStream, status: &str, message: &str) {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>reanimate</title></head><body><p>{message}</p></body></html>"
    );
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // The browser's page is a courtesy: the outcome is reported in the terminal either way.
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> OAuthClient {
        OAuthClient {
            auth_url: "https://auth.example/authorize".into(),
            token_url: "https://auth.example/token".into(),
            ..OAuthClient::google("client-1", Some("not-so-secret".into()))
        }
    }

    #[test]
    fn the_s256_challenge_is_the_one_rfc_7636_specifies() {
        // RFC 7636, appendix B.
        let verifier =
            PkceCodeVerifier::new("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".to_string());
        let challenge = PkceCodeChallenge::from_code_verifier_sha256(&verifier);
        assert_eq!(
            challenge.as_str(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(challenge.method().as_str(), "S256");
    }

    #[tokio::test]
    async fn the_consent_url_asks_for_offline_read_only_access_with_pkce_and_a_loopback_redirect() {
        let consent = client().consent().await.unwrap_or_else(|e| panic!("{e}"));
        let url = oauth2::url::Url::parse(consent.url()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(url.host_str(), Some("auth.example"));
        let params: std::collections::HashMap<String, String> =
            url.query_pairs().into_owned().collect();
        assert_eq!(params["response_type"], "code");
        assert_eq!(params["client_id"], "client-1");
        assert_eq!(params["scope"], GMAIL_READONLY_SCOPE);
        assert_eq!(params["code_challenge_method"], "S256");
        assert_eq!(params["access_type"], "offline");
        assert_eq!(params["redirect_uri"], consent.redirect_uri());
        assert!(consent.redirect_uri().starts_with("http://127.0.0.1:"));
        assert!(params["state"].len() >= 16);
        assert!(!consent.url().contains("not-so-secret"));
    }

    #[tokio::test]
    async fn the_redirect_is_judged_by_its_state_first() {
        let consent = client().consent().await.unwrap_or_else(|e| panic!("{e}"));
        let state = consent.state.secret().clone();
        assert_eq!(
            consent.judge(&format!("/?state={state}&code=4%2F0Ab-c")),
            Redirect::Code("4/0Ab-c".into())
        );
        assert!(matches!(
            consent.judge("/?state=forged&code=abc"),
            Redirect::Refused(why) if why.contains("state does not match")
        ));
        assert!(matches!(
            consent.judge(&format!("/?error=access_denied&state={state}")),
            Redirect::Refused(why) if why.contains("denied")
        ));
        assert_eq!(consent.judge("/favicon.ico"), Redirect::Other);
        assert_eq!(consent.judge("/"), Redirect::Other);
    }

    #[test]
    fn tokens_and_secrets_are_not_in_debug_output() {
        let tokens = Tokens {
            access_token: "ya29.secret-access".into(),
            expires_in: Some(Duration::from_secs(3599)),
            refresh_token: Some("1//secret-refresh".into()),
            scopes: None,
        };
        let shown = format!("{tokens:?} {:?}", client());
        assert!(!shown.contains("secret-access") && !shown.contains("secret-refresh"));
        assert!(!shown.contains("not-so-secret"));
    }
}
