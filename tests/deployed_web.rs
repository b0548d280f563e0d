//! The web inbox and the console on the deployed stack, used as a person and an operator would:
//! headless Chromium (Debian's `chromium`, driven through `chromedriver` by WebDriver) reads the
//! link from the notification email (LocalStack's SES), answers a form wrong then right, and the
//! atom resumes; an operator signs in to the console, reads the instance's full history and
//! redrives a dead letter twice. Plain HTTP checks cover what a browser would never send: tampered,
//! expired and other people's links, forged forms, secrets in pages.
//!
//! Screenshots go to `target/web-screenshots/`. Ignored by plain `cargo test`; `make integ` runs it.

use fantoccini::{Client, ClientBuilder, Locator};
use reanimate_aws::StackClient;
use reanimate_core::{RequestId, Status, Timestamp};
use reanimate_demo::email_live::inbox_link;
use reanimate_tests::{outputs_path, unique};
use reanimate_web::signing::{Purpose, Signer};
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

async fn stack() -> StackClient {
    StackClient::connect(&outputs_path())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Bounded polling: `check` until it gives a value, or panic naming `what`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn inbox_url(stack: &StackClient) -> String {
    stack
        .output("InboxUrl")
        .unwrap_or_else(|e| panic!("{e}"))
        .trim_end_matches('/')
        .to_string()
}

/// The function URL's host (`<id>.lambda-url.<region>.localhost.localstack.cloud`), which this
/// machine cannot resolve: browsers and clients here map it to the emulator's address.
fn host_of(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_start_matches("https://")
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_string()
}

fn http(stack: &StackClient) -> reqwest::Client {
    let url = inbox_url(stack);
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches('/').parse().ok())
        .unwrap_or(4566);
    reqwest::Client::builder()
        .resolve(
            &host_of(&url),
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        )
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn key(stack: &StackClient, output: &str) -> Signer {
    let secret = stack
        .output(output)
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    reanimate_web::read_key(stack, &secret)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Starts an approval for `person` and returns (instance, request, the emailed link).
async fn ask(stack: &StackClient, person: &str) -> (reanimate_core::InstanceId, RequestId, String) {
    let name = unique("web-approval");
    let input = json!({"question": "Ship release 1.4 to everyone?", "timeout_secs": 3600, "person": person});
    let id = stack
        .start("approval", &name, input)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let record = stack
        .wait_until(&id, Duration::from_secs(60), |r| {
            !r.waiting.requests.is_empty()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let request = record
        .waiting
        .requests
        .keys()
        .next()
        .cloned()
        .unwrap_or_else(|| panic!("no request"));
    let link = inbox_link(person, request.as_str(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no notification email reached {person}"));
    (id, request, link)
}

/// Hires an email assistant for a new person and returns (instance, its mailbox request, the
/// link the person was emailed for it). Only the mailbox is ever answered, so the
/// assistant never starts reading (no Gmail is reachable from here).
async fn hire(stack: &StackClient, name: &str) -> (reanimate_core::InstanceId, RequestId, String) {
    let person = format!("{}@example.com", unique(name));
    let user = unique(name);
    let id = stack
        .start(
            "email-assistant",
            &format!("assistant-{user}"),
            json!({"user": user, "email": person, "recurring": false}),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let record = stack
        .wait_until(&id, Duration::from_secs(60), |r| {
            r.waiting.requests.len() == 2
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let auth = record
        .waiting
        .requests
        .iter()
        .find(|(_, pending)| pending.kind == "auth")
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| panic!("no auth request"));
    let link = inbox_link(&person, auth.as_str(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no notification for the auth request"));
    (id, auth, link)
}

/// chromedriver on a free port, stopped on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    /// Ends chromedriver and every browser it started, even when a test panicked before closing
    /// its session: they share the process group chromedriver leads.
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

async fn driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        // Its own process group, which its browsers join: stopped as one on drop.
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("chromedriver (apt-get install chromium-driver): {e}"));
    let url = format!("http://127.0.0.1:{port}");
    let status = format!("{url}/status");
    eventually("chromedriver answers", Duration::from_secs(30), || {
        let status = status.clone();
        async move {
            let text = reqwest::get(&status).await.ok()?.text().await.ok()?;
            let body: Value = serde_json::from_str(&text).ok()?;
            (body["value"]["ready"] == true).then_some(())
        }
    })
    .await;
    Driver { child, url }
}

/// A headless Chromium the size of a phone, mapping the function URL's host to the emulator.
async fn browser(driver: &Driver) -> Client {
    let mut options = json!({"args": [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--window-size=412,915",
        "--host-resolver-rules=MAP *.localhost.localstack.cloud 127.0.0.1",
    ]});
    if std::path::Path::new("/usr/bin/chromium").exists() {
        options["binary"] = json!("/usr/bin/chromium");
    }
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), options);
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("a Chromium session: {e}"))
}

fn screenshots() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")));
    let dir = target.join("web-screenshots");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

async fn shot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(screenshots().join(format!("{name}.png")), png)
        .unwrap_or_else(|e| panic!("{e}"));
}

async fn text(browser: &Client, css: &str) -> String {
    match browser.find(Locator::Css(css)).await {
        Ok(element) => element.text().await.unwrap_or_else(|e| panic!("{e}")),
        Err(e) => {
            let page = browser.source().await.unwrap_or_default();
            panic!("{css}: {e}\n--- the page ---\n{page}")
        }
    }
}

/// Clicks what leads to another page (a form's button, a link) and waits, bounded, until the page
/// it was on is gone: a form's POST and its redirect can outlast the click itself.
async fn follow(browser: &Client, css: &str) {
    let before = browser
        .find(Locator::Css("html"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    click(browser, css).await;
    eventually("the next page loads", Duration::from_secs(30), || async {
        // The old page's root is stale once the new page is in.
        before.tag_name().await.is_err().then_some(())
    })
    .await;
    eventually(
        "the next page is complete",
        Duration::from_secs(30),
        || async {
            let state = browser
                .execute("return document.readyState", vec![])
                .await
                .ok()?;
            (state == "complete").then_some(())
        },
    )
    .await;
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the deployed stack and chromium: make integ"]
async fn a_person_answers_in_the_browser_and_an_operator_follows_it_in_the_console() {
    let stack = stack().await;
    let person = format!("{}@example.com", unique("ana"));
    let (id, request, link) = ask(&stack, &person).await;
    let driver = driver().await;
    let browser = browser(&driver).await;

    // The person opens the link from their email and sees the question.
    browser.goto(&link).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(text(&browser, "h1").await, "Your approval is needed");
    assert!(text(&browser, ".prompt").await.contains("Ship release 1.4"));
    shot(&browser, "01-question").await;

    // Sent without deciding: the form comes back with the problem next to the field.
    follow(&browser, "button[type=submit]").await;
    let error = text(&browser, "#f-approved-error").await;
    assert!(error.contains("required"), "{error}");
    assert!(text(&browser, ".errors").await.contains("not saved"));
    shot(&browser, "02-invalid-answer").await;
    assert_eq!(
        stack
            .request(&request)
            .await
            .ok()
            .flatten()
            .map(|e| e.status),
        Some(reanimate_core::ports::RequestStatus::Open),
        "nothing was recorded"
    );

    // Decided, with a comment typed by keyboard: accepted, and the atom resumes with it.
    click(&browser, "label[for=f-approved-yes]").await;
    browser
        .find(Locator::Css("#f-comment"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .send_keys("Go ahead <b>now</b>")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    follow(&browser, "button[type=submit]").await;
    assert_eq!(text(&browser, "h1").await, "Thank you");
    shot(&browser, "03-answered").await;
    let done = stack
        .wait_until(&id, Duration::from_secs(60), |r| r.status.is_finished())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.status, Status::Completed);
    let result = done.result.clone().unwrap_or_default();
    assert_eq!(result["approved"], true);
    assert_eq!(result["comment"], "Go ahead <b>now</b>");

    // The link now says the question is answered.
    browser.goto(&link).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(text(&browser, "h1").await, "Already answered");

    // The operator, on a desktop: a sign-in link from the CLI's signer, then the instance and its
    // history.
    browser
        .set_window_size(1280, 900)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let operators = key(&stack, "OperatorKeySecret").await;
    let base = inbox_url(&stack);
    // A person's link never opens the console.
    let person_token = link.rsplit("/r/").next().unwrap_or_default();
    browser
        .goto(&format!("{base}/console/login?t={person_token}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(text(&browser, "h1").await, "Operators only");
    let login = reanimate_web::console::login_token(&operators, Timestamp::now_utc());
    browser
        .goto(&format!("{base}/console/login?t={login}"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(text(&browser, "h1").await, "Instances");
    browser
        .goto(&format!("{base}/console?atom=approval&status=completed"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    shot(&browser, "04-console-instances").await;
    follow(&browser, &format!("a[href$='{}']", id.as_str())).await;
    assert_eq!(text(&browser, "h1").await, format!("Instance {id}"));
    let history = text(&browser, "table.history").await;
    assert!(
        history.contains("started")
            && history.contains("user_answered")
            && history.contains("completed"),
        "{history}"
    );
    // The history table is below the instance's facts: in view for the picture.
    browser
        .execute(
            "document.querySelector('table.history').scrollIntoView()",
            vec![],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    shot(&browser, "05-console-history").await;

    // A message the approval queue cannot read is parked with its reason; the operator redrives
    // it, and pressing the button again sends nothing more.
    let queue = stack
        .config()
        .route("approval")
        .unwrap_or_else(|e| panic!("{e}"))
        .url
        .clone();
    let marker = unique("parked");
    stack
        .clients()
        .sqs
        .send_message()
        .queue_url(&queue)
        .message_body(format!(
            "{{\"not\": \"an envelope\", \"marker\": \"{marker}\"}}"
        ))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dead_letters = stack.dead_letters();
    let parked = eventually(
        "the bad message is parked",
        Duration::from_secs(60),
        || async {
            dead_letters
                .peek(Some("approval"), 10)
                .await
                .ok()?
                .into_iter()
                .find(|d| d.body.contains(&marker))
        },
    )
    .await;
    browser
        .goto(&format!("{base}/console/dead-letters"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let table = text(&browser, "table").await;
    assert!(table.contains(&parked.message_id), "{table}");
    shot(&browser, "06-dead-letters").await;
    let button = format!(
        "form:has(input[name=message][value='{}']) button",
        parked.message_id
    );
    follow(&browser, &button).await;
    let notice = text(&browser, ".message").await;
    assert!(notice.contains("Sent back"), "{notice}");
    // Pressed again (the browser goes back to the page with the old button and resubmits it).
    browser.back().await.unwrap_or_else(|e| panic!("{e}"));
    if browser.find(Locator::Css(&button)).await.is_ok() {
        follow(&browser, &button).await;
        let notice = text(&browser, ".message").await;
        assert!(notice.contains("no longer a dead letter"), "{notice}");
    }
    shot(&browser, "07-redriven").await;
    // Sent back once: refused again, it is parked again exactly once.
    let copies = eventually(
        "the redriven message is parked again",
        Duration::from_secs(60),
        || async {
            let found: Vec<_> = dead_letters
                .peek(Some("approval"), 10)
                .await
                .ok()?
                .into_iter()
                .filter(|d| d.body.contains(&marker))
                .collect();
            (!found.is_empty() && found.iter().all(|d| d.message_id != parked.message_id))
                .then_some(found.len())
        },
    )
    .await;
    assert_eq!(copies, 1);
    browser.close().await.unwrap_or_else(|e| panic!("{e}"));
}

/// The csrf field and the form cookie of the request page at `url`.
async fn form_of(client: &reqwest::Client, url: &str) -> (String, String, String) {
    let page = client
        .get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.status(), 200);
    let cookie = page
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .to_string();
    let html = page.text().await.unwrap_or_default();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_string();
    (cookie, csrf, html)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the deployed stack: make integ"]
async fn links_are_bound_to_one_request_one_person_and_a_time_and_forms_to_their_page() {
    let stack = stack().await;
    let client = http(&stack);
    let base = inbox_url(&stack);
    let person = format!("{}@example.com", unique("bo"));
    let (id, request, link) = ask(&stack, &person).await;
    let links = key(&stack, "InboxLinkKeySecret").await;
    let get = |url: String| {
        let client = client.clone();
        async move {
            client
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };

    // The link works, and says what it is on every response: no script, no framing.
    let page = get(link.clone()).await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(page.headers()["referrer-policy"], "same-origin");

    // Tampered: one character of the signature, or the claims, changed.
    let token = link.rsplit("/r/").next().unwrap_or_default().to_string();
    let mut flipped = token.clone();
    let last = flipped.pop().unwrap_or('A');
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(get(format!("{base}/r/{flipped}")).await.status(), 403);
    let (claims, signature) = token.split_once('.').unwrap_or_default();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let forged = String::from_utf8(b64.decode(claims).unwrap_or_default())
        .unwrap_or_default()
        .replace(&person, "mallory@example.com");
    assert_eq!(
        get(format!("{base}/r/{}.{signature}", b64.encode(forged)))
            .await
            .status(),
        403
    );
    // Signed, but for someone else: the request is not theirs.
    let theirs = reanimate_web::inbox::link_token(&links, &request, "mallory@example.com", None);
    let other = get(format!("{base}/r/{theirs}")).await;
    assert_eq!(other.status(), 403);
    assert!(
        !other
            .text()
            .await
            .unwrap_or_default()
            .contains("Ship release")
    );
    // Signed for this person and request, but expired.
    let old = links.sign(
        Purpose::RequestLink,
        &reanimate_web::inbox::LinkClaims {
            r: request.to_string(),
            p: person.clone(),
        },
        Timestamp::from_millis(Timestamp::now_utc().as_millis() - 1_000),
    );
    let expired = get(format!("{base}/r/{old}")).await;
    assert_eq!(expired.status(), 410);
    let page = expired.text().await.unwrap_or_default();
    assert!(
        page.contains("expired") && !page.contains("Ship release"),
        "{page}"
    );
    // The question still waits: the person asks for a fresh link, which their email brings (a
    // second email for the request).
    let links_to_request = || async {
        reanimate_demo::email_live::delivered_to(&person)
            .await
            .unwrap_or_default()
            .into_iter()
            .flat_map(|m| {
                m.text
                    .split_whitespace()
                    .filter(|w| w.contains("/r/"))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter(|l| {
                reanimate_web::inbox::request_of_link(l).as_deref() == Some(request.as_str())
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(links_to_request().await.len(), 1);
    let renewed = client
        .post(format!("{base}/r/{old}/renew"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(renewed.status(), 200);
    let fresh = eventually("a fresh link arrives", Duration::from_secs(60), || async {
        let links = links_to_request().await;
        (links.len() == 2).then(|| links[1].clone())
    })
    .await;
    assert_eq!(
        get(fresh).await.status(),
        200,
        "the fresh link opens the question"
    );
    // A forged link cannot ask for one.
    let forged_renew = client
        .post(format!("{base}/r/{theirs}/renew"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(forged_renew.status(), 403);

    // Forms: without the page's cookie, with another page's token, or with none, nothing is
    // recorded.
    let (cookie, csrf, _) = form_of(&client, &link).await;
    let post = |cookie: Option<String>, body: String| {
        let client = client.clone();
        let link = link.clone();
        async move {
            let mut req = client
                .post(&link)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
            if let Some(cookie) = cookie {
                req = req.header("cookie", cookie);
            }
            req.send().await.unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let yes = |csrf: &str| format!("csrf={}&%2Fapproved=true", form_urlencoded_byte(csrf));
    assert_eq!(post(None, yes(&csrf)).await.status(), 403);
    assert_eq!(
        post(Some(cookie.clone()), "%2Fapproved=true".into())
            .await
            .status(),
        403
    );
    let (_, other_csrf, _) = form_of(&client, &link).await;
    assert_eq!(
        post(Some(cookie.clone()), yes(&other_csrf)).await.status(),
        403
    );
    assert_eq!(
        stack
            .request(&request)
            .await
            .ok()
            .flatten()
            .map(|e| e.status),
        Some(reanimate_core::ports::RequestStatus::Open)
    );
    // The genuine form is accepted.
    let accepted = post(Some(cookie), yes(&csrf)).await;
    assert_eq!(accepted.status(), 200);
    stack
        .wait_until(&id, Duration::from_secs(60), |r| {
            r.status == Status::Completed
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

fn form_urlencoded_byte(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the deployed stack: make integ"]
async fn a_secret_typed_into_the_inbox_goes_to_secrets_manager_and_into_no_page() {
    let stack = stack().await;
    let client = http(&stack);
    let base = inbox_url(&stack);
    let (id, auth, link) = hire(&stack, "cy").await;
    // Letters and digits only, so no escaping in a page could hide it from the search below.
    let secret = format!("rt{}", unique("s3cret").replace('-', ""));
    let (cookie, csrf, html) = form_of(&client, &link).await;
    assert!(
        html.contains("type=\"password\""),
        "the token is asked as a password"
    );
    let body = |csrf: &str, token: &str| {
        format!(
            "csrf={}&%2Fmailbox%23=1&%2Fmailbox%231%2Frefresh_token={}",
            form_urlencoded_byte(csrf),
            form_urlencoded_byte(token)
        )
    };
    let send = |cookie: String, body: String| {
        let client = client.clone();
        let link = link.clone();
        async move {
            client
                .post(&link)
                .header("content-type", "application/x-www-form-urlencoded")
                .header("cookie", cookie)
                .body(body)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let mut pages = Vec::new();
    // Too short: refused, and the page that says so does not hold what was typed.
    let short = format!("x{}", &secret[..3]);
    let refused = send(cookie.clone(), body(&csrf, &short)).await;
    assert_eq!(refused.status(), 422);
    let refused = refused.text().await.unwrap_or_default();
    assert!(
        !refused.contains(&short),
        "a typed secret came back in the page"
    );
    let accepted = send(cookie.clone(), body(&csrf, &secret)).await;
    assert_eq!(accepted.status(), 200);
    pages.push(accepted.text().await.unwrap_or_default());
    // The answer holds a reference; the value is in Secrets Manager.
    let entry = stack
        .request(&auth)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("gone"));
    let stored = entry.answer.clone().unwrap_or_default().to_string();
    assert!(!stored.contains(&secret), "{stored}");
    let reference = entry
        .answer
        .as_ref()
        .and_then(|a| a.pointer("/mailbox/refresh_token"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let value = stack
        .clients()
        .secrets
        .get_secret_value()
        .secret_id(&reference)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{reference}: {e}"));
    assert_eq!(value.secret_string(), Some(secret.as_str()));

    // Every page a person or an operator can reach about it.
    pages.push(
        client
            .get(&link)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default(),
    );
    pages.push(
        client
            .get(format!("{link}/mine"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default(),
    );
    let operators = key(&stack, "OperatorKeySecret").await;
    let login = reanimate_web::console::login_token(&operators, Timestamp::now_utc());
    let signed_in = client
        .get(format!("{base}/console/login?t={login}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let session = signed_in
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .to_string();
    for path in [
        "/console".to_string(),
        format!("/console/i/{}", id.as_str()),
        "/console/dead-letters".to_string(),
    ] {
        let page = client
            .get(format!("{base}{path}"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(page.status(), 200, "{path}");
        pages.push(page.text().await.unwrap_or_default());
    }
    for page in &pages {
        assert!(!page.contains(&secret), "a secret was rendered: {page}");
        assert!(
            !page.contains(&secret[..12]),
            "part of a secret was rendered"
        );
    }
    // Done: the assistant is cancelled through the console, confirmed on a second page.
    let act = format!("{base}/console/i/{}/cancel", id.as_str());
    let console_csrf = pages[pages.len() - 2]
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_default()
        .to_string();
    let confirm = client
        .post(&act)
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={}&reason=test+over",
            form_urlencoded_byte(&console_csrf)
        ))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        confirm
            .text()
            .await
            .unwrap_or_default()
            .contains("Yes, cancel it")
    );
    assert_eq!(
        stack.load(&id).await.ok().flatten().map(|r| r.status),
        Some(Status::Suspended),
        "not before it is confirmed"
    );
    let done = client
        .post(&act)
        .header("cookie", &session)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={}&reason=test+over&confirm=yes",
            form_urlencoded_byte(&console_csrf)
        ))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(done.status(), 303);
    stack
        .wait_until(&id, Duration::from_secs(60), |r| {
            r.status == Status::Cancelled
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// The port of the mock OAuth provider: `tools/integ` deploys the stack with its authorization
/// and token URLs (`GmailAuthorizeUrl`, `GmailTokenUrl`), since the functions read them at start.
fn oauth_port() -> u16 {
    std::env::var("REANIMATE_TEST_OAUTH_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(47913)
}

/// What the mock provider saw.
#[derive(Debug, Default)]
struct ProviderLog {
    /// The `code_challenge` of the consent.
    challenge: Option<String>,
    /// The token request's form.
    token_form: Option<std::collections::HashMap<String, String>>,
}

/// A stand-in for Google's OAuth endpoints, speaking their wire format: `GET /authorize` consents
/// at once (a 302 back to `redirect_uri` with a code and the `state`), `POST /token` exchanges
/// that code for a refresh token.
async fn oauth_provider(
    refresh_token: &'static str,
) -> std::sync::Arc<std::sync::Mutex<ProviderLog>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let log = std::sync::Arc::new(std::sync::Mutex::new(ProviderLog::default()));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", oauth_port()))
        .await
        .unwrap_or_else(|e| panic!("the mock OAuth provider's port {}: {e}", oauth_port()));
    let seen = std::sync::Arc::clone(&log);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head, body) = loop {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break (String::new(), Vec::new());
                }
                buffer.extend_from_slice(&chunk[..n]);
                if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    let mut body = buffer[end + 4..].to_vec();
                    while body.len() < length {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        body.extend_from_slice(&chunk[..n]);
                    }
                    break (head, body);
                }
            };
            let target = head
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let params =
                |text: &[u8]| -> std::collections::HashMap<String, String> { url_params(text) };
            let response = if path == "/authorize" {
                let q = params(query.as_bytes());
                if let Ok(mut log) = seen.lock() {
                    log.challenge = q.get("code_challenge").cloned();
                }
                let location = format!(
                    "{}?code=4%2F0-web-test-code&state={}&scope={}",
                    q.get("redirect_uri").cloned().unwrap_or_default(),
                    q.get("state").cloned().unwrap_or_default(),
                    "https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fgmail.readonly"
                );
                format!(
                    "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            } else if path == "/token" {
                let form = params(&body);
                if let Ok(mut log) = seen.lock() {
                    log.token_form = Some(form);
                }
                let json = format!(
                    "{{\"access_token\":\"ya29.web\",\"expires_in\":3599,\"refresh_token\":\"{refresh_token}\",\"scope\":\"https://www.googleapis.com/auth/gmail.readonly\",\"token_type\":\"Bearer\"}}"
                );
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{json}",
                    json.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    log
}

fn url_params(text: &[u8]) -> std::collections::HashMap<String, String> {
    form_urlencoded::parse(text).into_owned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the deployed stack (with the mock provider's URLs) and chromium: make integ"]
async fn connect_gmail_runs_the_oauth_code_flow_in_the_browser_and_keeps_the_token_secret() {
    const REFRESH: &str = "1//web-connected-refresh-token";
    let stack = stack().await;
    let provider = oauth_provider(REFRESH).await;
    let (id, auth, link) = hire(&stack, "di").await;
    let driver = driver().await;
    let browser = browser(&driver).await;
    browser.goto(&link).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(text(&browser, "h1").await, "Connect your mailbox");
    shot(&browser, "08-connect-gmail").await;
    follow(&browser, "a.button").await;
    assert_eq!(text(&browser, "h1").await, "Gmail is connected");
    shot(&browser, "09-gmail-connected").await;

    // The code was exchanged with the verifier of the challenge the consent carried.
    let (challenge, form) = {
        let log = provider.lock().unwrap_or_else(|e| panic!("{e}"));
        (
            log.challenge.clone().unwrap_or_default(),
            log.token_form.clone().unwrap_or_default(),
        )
    };
    assert_eq!(
        form.get("grant_type").map(String::as_str),
        Some("authorization_code")
    );
    assert_eq!(
        form.get("code").map(String::as_str),
        Some("4/0-web-test-code")
    );
    use base64::Engine;
    use sha2::Digest;
    let verifier = form.get("code_verifier").cloned().unwrap_or_default();
    let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    assert_eq!(challenge, expected, "PKCE S256");

    // The request is answered with a reference; the token is in Secrets Manager.
    let entry = stack
        .request(&auth)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("gone"));
    let answer = entry.answer.clone().unwrap_or_default();
    assert_eq!(answer["mailbox"]["kind"], "gmail");
    let reference = answer["mailbox"]["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_ne!(reference, REFRESH);
    let stored = stack
        .clients()
        .secrets
        .get_secret_value()
        .secret_id(&reference)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{reference}: {e}"));
    assert_eq!(stored.secret_string(), Some(REFRESH));
    // Coming back to the link: answered.
    browser.goto(&link).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(text(&browser, "h1").await, "Already answered");
    assert!(!browser.source().await.unwrap_or_default().contains(REFRESH));
    browser.close().await.unwrap_or_else(|e| panic!("{e}"));
    stack
        .cancel(&id, "email-assistant", "test over")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}
