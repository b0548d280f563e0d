//! The templates (HTML auto-escaped by minijinja: every value a page shows is escaped unless it
//! is sanitised HTML marked `safe`), and the Markdown of digests as sanitised HTML.

use crate::http::Response;
use minijinja::Environment;
use serde::Serialize;

/// The stylesheet every page links to (`/static/app.css`): the CSP allows no inline style.
pub const STYLESHEET: &str = include_str!("../templates/app.css");

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../templates/base.html")),
    ("message.html", include_str!("../templates/message.html")),
    ("field.html", include_str!("../templates/field.html")),
    ("request.html", include_str!("../templates/request.html")),
    ("mine.html", include_str!("../templates/mine.html")),
    (
        "console_base.html",
        include_str!("../templates/console_base.html"),
    ),
    ("console.html", include_str!("../templates/console.html")),
    ("instance.html", include_str!("../templates/instance.html")),
    ("confirm.html", include_str!("../templates/confirm.html")),
    (
        "dead_letters.html",
        include_str!("../templates/dead_letters.html"),
    ),
];

/// The compiled templates.
#[derive(Debug)]
pub struct Pages {
    env: Environment<'static>,
}

impl Default for Pages {
    fn default() -> Self {
        let mut env = Environment::new();
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("template {name}: {e:#}"));
        }
        Self { env }
    }
}

#[derive(Serialize)]
struct Link<'a> {
    href: &'a str,
    text: &'a str,
}

impl Pages {
    /// `template` rendered with `context` as an HTML response.
    pub fn render(&self, status: u16, template: &str, context: impl Serialize) -> Response {
        match self
            .env
            .get_template(template)
            .and_then(|t| t.render(context))
        {
            Ok(body) => Response::html(status, body),
            Err(error) => {
                tracing::error!(template, error = %format!("{error:#}"), "a page failed to render");
                self.message(
                    500,
                    "Something went wrong",
                    "The page could not be shown; please try again later.",
                    "warn",
                )
            }
        }
    }

    /// A page that says one thing.
    pub fn message(&self, status: u16, title: &str, text: &str, tone: &str) -> Response {
        self.message_with_link(status, title, text, tone, None)
    }

    pub fn message_with_link(
        &self,
        status: u16,
        title: &str,
        text: &str,
        tone: &str,
        link: Option<(&str, &str)>,
    ) -> Response {
        let link = link.map(|(href, text)| Link { href, text });
        let context = minijinja::context! { title, text, tone, link };
        match self
            .env
            .get_template("message.html")
            .and_then(|t| t.render(context))
        {
            Ok(body) => Response::html(status, body),
            Err(_) => Response::html(status, String::from("error")),
        }
    }
}

/// A digest's Markdown as HTML fit to show: rendered by pulldown-cmark, then cleaned by ammonia's
/// allow-list (no script, no event handler, no style, links only to http(s) and mailto, each with
/// `rel="noopener noreferrer"`), whatever a sender or a model wrote into the Markdown.
pub fn markdown_html(markdown: &str) -> String {
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, pulldown_cmark::Parser::new(markdown));
    ammonia::clean(&html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles_and_digests_lose_what_could_run() {
        let pages = Pages::default();
        let page = pages.message(200, "<b>Hi</b>", "a & b", "ok");
        assert!(
            page.body.contains("&lt;b&gt;Hi&lt;&#x2f;b&gt;") && page.body.contains("a &amp; b"),
            "{}",
            page.body
        );
        let html = markdown_html(
            "# Digest\n<script>alert(1)</script>\n[x](javascript:alert(1)) <img src=x onerror=alert(1)>",
        );
        assert!(html.contains("<h1>Digest</h1>"), "{html}");
        assert!(
            !html.contains("<script") && !html.contains("javascript:") && !html.contains("onerror"),
            "{html}"
        );
    }
}
