//! HTTP as a Lambda function URL carries it (payload format 2.0), and the headers every page gets.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A function URL request (payload format version 2.0), the fields this app reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    #[serde(default)]
    pub raw_path: String,
    #[serde(default)]
    pub raw_query_string: String,
    #[serde(default)]
    pub cookies: Option<Vec<String>>,
    #[serde(default)]
    pub headers: HashMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub is_base64_encoded: bool,
    #[serde(default)]
    pub request_context: RequestContext,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RequestContext {
    #[serde(default)]
    pub http: HttpContext,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct HttpContext {
    #[serde(default)]
    pub method: String,
}

impl Request {
    pub fn method(&self) -> &str {
        &self.request_context.http.method
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body's bytes (function URLs base64-encode bodies that are not text).
    pub fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            None => Vec::new(),
            Some(body) if self.is_base64_encoded => STANDARD.decode(body).unwrap_or_default(),
            Some(body) => body.clone().into_bytes(),
        }
    }

    /// A query parameter.
    pub fn query(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.raw_query_string.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// A cookie's value: from `cookies` (AWS) or the `cookie` header (as LocalStack passes it).
    pub fn cookie(&self, name: &str) -> Option<String> {
        let header = self.header("cookie").unwrap_or_default();
        self.cookies
            .iter()
            .flatten()
            .map(String::as_str)
            .chain(header.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    /// Whether the browser reached us over HTTPS (AWS: always; LocalStack: plain HTTP), which
    /// decides whether cookies can be `Secure`.
    pub fn is_https(&self) -> bool {
        self.header("x-forwarded-proto") == Some("https")
    }

    /// The path's segments, percent-decoded.
    pub fn segments(&self) -> Vec<String> {
        self.raw_path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            })
            .collect()
    }
}

/// A function URL response.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub status_code: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
    pub is_base64_encoded: bool,
}

/// What every page allows itself: its own stylesheet, its own forms, nothing else (no script, no
/// frame, no plugin, no base rewrite, no other origin).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

impl Response {
    fn new(status_code: u16, content_type: &str, body: String) -> Self {
        let headers = HashMap::from([
            ("content-type".to_string(), content_type.to_string()),
            (
                "content-security-policy".into(),
                CONTENT_SECURITY_POLICY.into(),
            ),
            ("x-content-type-options".into(), "nosniff".into()),
            // Links carry capabilities: never leak them to another site. (Not `no-referrer`:
            // with it a browser sends `Origin: null` on the site's own forms.)
            ("referrer-policy".into(), "same-origin".into()),
            ("cache-control".into(), "no-store".into()),
            ("x-frame-options".into(), "DENY".into()),
        ]);
        Self {
            status_code,
            headers,
            body,
            is_base64_encoded: false,
        }
    }

    pub fn html(status_code: u16, body: String) -> Self {
        Self::new(status_code, "text/html; charset=utf-8", body)
    }

    pub fn css(body: &str) -> Self {
        let mut response = Self::new(200, "text/css; charset=utf-8", body.to_string());
        response
            .headers
            .insert("cache-control".into(), "public, max-age=3600".into());
        response
    }

    /// A `303 See Other` to `location` (after a form: the browser then GETs it).
    pub fn redirect(location: &str) -> Self {
        let mut response = Self::new(303, "text/plain; charset=utf-8", String::new());
        response.headers.insert("location".into(), location.into());
        response
    }

    /// Sets a cookie only this site's own pages send back (`SameSite=Strict`), unreadable by
    /// scripts; `Secure` when the request came over HTTPS.
    pub fn with_cookie(
        self,
        request: &Request,
        name: &str,
        value: &str,
        path: &str,
        max_age_secs: u64,
    ) -> Self {
        self.with_cookie_same_site(request, name, value, path, max_age_secs, "Strict")
    }

    /// As [`Response::with_cookie`], with another `SameSite` (`Lax` for a cookie that must come
    /// back on a redirect from another site).
    pub fn with_cookie_same_site(
        mut self,
        request: &Request,
        name: &str,
        value: &str,
        path: &str,
        max_age_secs: u64,
        same_site: &str,
    ) -> Self {
        let secure = if request.is_https() { "; Secure" } else { "" };
        self.headers.insert(
            "set-cookie".into(),
            format!(
                "{name}={value}; Path={path}; Max-Age={max_age_secs}; HttpOnly; SameSite={same_site}{secure}"
            ),
        );
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_query_and_path_are_read_as_a_function_url_sends_them() {
        let request: Request = serde_json::from_value(serde_json::json!({
            "version": "2.0",
            "rawPath": "/r/abc%2Edef/x",
            "rawQueryString": "t=a%20b&u=2",
            "cookies": ["form=n1"],
            "headers": {"Cookie": "op=s1; other=2", "x-forwarded-proto": "http"},
            "requestContext": {"http": {"method": "POST"}},
            "body": "YT0x",
            "isBase64Encoded": true
        }))
        .unwrap_or_default();
        assert_eq!(request.method(), "POST");
        assert_eq!(request.segments(), ["r", "abc.def", "x"]);
        assert_eq!(request.query("t").as_deref(), Some("a b"));
        assert_eq!(request.cookie("form").as_deref(), Some("n1"));
        assert_eq!(request.cookie("op").as_deref(), Some("s1"));
        assert_eq!(request.body_bytes(), b"a=1");
        assert!(!request.is_https());
        let page = Response::html(200, String::new()).with_cookie(&request, "form", "n", "/", 60);
        let cookie = &page.headers["set-cookie"];
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(page.headers["content-security-policy"].contains("default-src 'none'"));
    }
}
