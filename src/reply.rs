//! A protocol-free answer: status, headers and body. `Check` turns it into an Envoy denied
//! response, the HTTP listener into an HTTP response, so both speak with one voice. Also the
//! small HTML pages and JSON bodies users see, and `escape_for_log` for request values in logs.
//!
//! Every `Reply` carries exactly one `content-type`; only `set-cookie` may repeat.

use serde_json::json;

/// Where a signed-in user signs out (the HTTP listener's route, on the same host).
pub const SIGN_OUT_PATH: &str = "/oauth2/sign_out";
/// `retry-after` on 503 answers, in seconds.
const RETRY_AFTER_SECS: &str = "5";
/// Longest request value written to a log line (characters); the rest is cut.
pub const MAX_LOG_VALUE: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    fn new(status: u16, content_type: &str, body: String) -> Reply {
        Reply {
            status,
            headers: vec![
                ("content-type".into(), content_type.into()),
                ("cache-control".into(), "no-store".into()),
            ],
            body,
        }
    }

    /// 302 to `location`, setting `cookies`. The body is empty (typed as text, so that every
    /// answer has one content-type).
    pub fn redirect(location: &str, cookies: Vec<String>) -> Reply {
        let mut r = Reply {
            status: 302,
            headers: vec![
                ("location".into(), location.into()),
                ("cache-control".into(), "no-store".into()),
                ("content-type".into(), "text/plain; charset=utf-8".into()),
            ],
            body: String::new(),
        };
        r.add_cookies(cookies);
        r
    }

    /// A plain answer with its own content type (`/metrics`, `/healthz`).
    pub fn text(status: u16, content_type: &str, body: String) -> Reply {
        Reply::new(status, content_type, body)
    }

    /// 200 with a page that moves the browser on to `location` itself (a same-site
    /// navigation, so `SameSite=Strict` cookies are sent), setting `cookies`.
    pub fn continue_to(location: &str, cookies: Vec<String>) -> Reply {
        let href = escape(location);
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={href}\">\
             <title>Signed in</title></head><body><p>Signed in. <a href=\"{href}\">Continue</a></p></body></html>"
        );
        let mut r = Reply::new(200, "text/html; charset=utf-8", body);
        r.add_cookies(cookies);
        r
    }

    pub fn json(status: u16, value: serde_json::Value) -> Reply {
        Reply::new(status, "application/json", value.to_string())
    }

    /// A small readable HTML page, with an optional link (`href`, label).
    pub fn page(status: u16, title: &str, message: &str, link: Option<(&str, &str)>) -> Reply {
        let link = link
            .map(|(href, label)| format!("<p><a href=\"{}\">{}</a></p>", escape(href), escape(label)))
            .unwrap_or_default();
        Reply::html(status, title, &format!("<p>{}</p>{link}", escape(message)))
    }

    /// An HTML page around `inner`, which must already be escaped.
    fn html(status: u16, title: &str, inner: &str) -> Reply {
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
             <style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}}\
             h1{{font-size:1.4rem}}</style></head><body><h1>{t}</h1>{inner}</body></html>",
            t = escape(title),
        );
        Reply::new(status, "text/html; charset=utf-8", body)
    }

    /// 403 for a browser navigation: what happened, who is signed in, and a sign-out link.
    pub fn forbidden_page(
        rule: Option<&str>,
        requirement: &str,
        message: &str,
        signed_in_as: Option<&str>,
    ) -> Reply {
        let mut inner = format!("<p>You do not have access to this page: {}.</p>", escape(message));
        if let Some(who) = signed_in_as {
            inner.push_str(&format!(
                "<p>You are signed in as <strong>{}</strong>.</p>",
                escape(who)
            ));
        }
        let rule = rule
            .map(|r| format!(" (rule <code>{}</code>)", escape(r)))
            .unwrap_or_default();
        inner.push_str(&format!(
            "<p><small>Requirement: <code>{}</code>{rule}</small></p>",
            escape(requirement)
        ));
        if signed_in_as.is_some() {
            inner.push_str(&format!(
                "<p><a href=\"{SIGN_OUT_PATH}\">Sign out</a> to use another account.</p>"
            ));
        }
        Reply::html(403, "Access denied", &inner)
    }

    /// 503 for a browser navigation: what happened and a link to try `retry_url` again.
    pub fn unavailable_page(message: &str, retry_url: &str) -> Reply {
        let inner = format!(
            "<p>Sign-in is temporarily unavailable: {}.</p><p><a href=\"{}\">Try again</a></p>",
            escape(message),
            escape(retry_url)
        );
        let mut r = Reply::html(503, "Temporarily unavailable", &inner);
        r.headers.push(("retry-after".into(), RETRY_AFTER_SECS.into()));
        r
    }

    /// 200 for a sign-out that a browser marked cross-site: nothing changes; the page's button
    /// POSTs the sign-out to `action` (a same-origin path) from this site. The page cannot be
    /// framed, so the button cannot be clicked through another site's page either.
    pub fn sign_out_confirm(action: &str) -> Reply {
        let inner = format!(
            "<p>Do you want to sign out?</p>\
             <form method=\"post\" action=\"{}\"><button type=\"submit\">Sign out</button></form>",
            escape(action)
        );
        let mut r = Reply::html(200, "Sign out", &inner);
        r.headers.push((
            "content-security-policy".into(),
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'".into(),
        ));
        r.headers.push(("x-frame-options".into(), "DENY".into()));
        r
    }

    /// 400 for a request whose `Host` is not a DNS name or IP literal (`why` says how).
    pub fn bad_host(why: &dyn std::fmt::Display) -> Reply {
        Reply::json(
            400,
            json!({
                "error": "bad_request",
                "message": format!("the Host header is not a DNS name or IP literal: {why}"),
            }),
        )
    }

    /// 401 for an API client of `rule`.
    pub fn unauthorized(rule: &str, token_error: Option<&str>) -> Reply {
        let realm = rule.replace('"', "");
        let challenge = match token_error {
            Some(_) => format!("Bearer realm=\"{realm}\", error=\"invalid_token\""),
            None => format!("Bearer realm=\"{realm}\""),
        };
        let mut r = Reply::json(
            401,
            json!({
                "error": "unauthorized",
                "rule": rule,
                "message": token_error.unwrap_or("authentication required: log in, or send a bearer token"),
            }),
        );
        r.headers.push(("www-authenticate".into(), challenge));
        r
    }

    /// 403 naming the failed requirement.
    pub fn forbidden(rule: Option<&str>, requirement: &str, message: &str) -> Reply {
        Reply::json(
            403,
            json!({"error": "forbidden", "rule": rule, "requirement": requirement, "message": message}),
        )
    }

    /// 503 when the IdP is needed and cannot be had.
    pub fn unavailable(rule: &str, message: &str) -> Reply {
        let mut r = Reply::json(
            503,
            json!({"error": "unavailable", "rule": rule, "message": message}),
        );
        r.headers.push(("retry-after".into(), RETRY_AFTER_SECS.into()));
        r
    }

    /// This reply's `content-type`, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.as_str())
    }

    pub fn add_cookies(&mut self, cookies: Vec<String>) {
        self.headers
            .extend(cookies.into_iter().map(|c| ("set-cookie".to_string(), c)));
    }
}

/// HTML-escapes text for the pages above.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A value taken from a request (or derived from one), ready for a log line: quoted, with
/// control characters (newline, carriage return, ESC, …), Unicode line separators and bidi
/// controls written as escapes (`\n`, `\u{1b}`), quotes and backslashes escaped, and cut after
/// `MAX_LOG_VALUE` characters. So a value can neither start a forged line nor colour the
/// terminal. Use it as `tracing::info!(error = %escape_for_log(v), ...)`.
pub fn escape_for_log(value: impl std::fmt::Display) -> String {
    let text = value.to_string();
    let mut chars = text.chars();
    let cut: String = chars.by_ref().take(MAX_LOG_VALUE).collect();
    let rest = if chars.next().is_some() { "…" } else { "" };
    // `str`'s Debug escapes every character that is not printable (Cc, Cf, Zl, Zp, …).
    format!("{cut:?}{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        let r = Reply::page(
            403,
            "No",
            "<script>alert(1)</script>",
            Some(("/x?a=\"b\"", "again")),
        );
        assert!(!r.body.contains("<script>"));
        assert!(r.body.contains("&lt;script&gt;"));
        assert!(r.body.contains("/x?a=&quot;b&quot;"));
    }

    #[test]
    fn unauthorized_names_the_realm_and_the_token_error() {
        let r = Reply::unauthorized("corp", Some("expired"));
        let h = r.headers.iter().find(|(k, _)| k == "www-authenticate").unwrap();
        assert_eq!(h.1, "Bearer realm=\"corp\", error=\"invalid_token\"");
    }

    #[test]
    fn log_values_cannot_forge_lines_or_colour_the_terminal() {
        let forged = "x\n audit: forged\u{1b}[31m\r\u{2028}\u{202e}";
        let out = escape_for_log(forged);
        assert!(!out.chars().any(|c| c.is_control()), "{out:?}");
        assert!(!out.contains('\u{2028}') && !out.contains('\u{202e}'), "{out:?}");
        assert_eq!(out.lines().count(), 1);
        assert!(out.contains("\\n audit: forged\\u{1b}[31m"), "{out}");
        // A quote or backslash cannot close the value or fake an escape.
        assert_eq!(escape_for_log("a\"b\\"), "\"a\\\"b\\\\\"");
        // Long values are cut.
        let long = escape_for_log("a".repeat(10_000));
        assert!(long.len() < MAX_LOG_VALUE + 16, "{}", long.len());
        assert!(long.ends_with('…'));
        // Errors and other Display values go through the same door.
        assert_eq!(
            escape_for_log(format_args!("alg `{}`", "x\ny")),
            "\"alg `x\\ny`\""
        );
    }

    #[test]
    fn browser_pages_for_403_and_503_say_what_happened_escaped() {
        let r = Reply::forbidden_page(
            Some("corp"),
            "allowed.groups",
            "you are in no group",
            Some("<b>al</b>"),
        );
        assert_eq!(r.status, 403);
        assert_eq!(r.content_type(), Some("text/html; charset=utf-8"));
        assert!(r.body.contains("&lt;b&gt;al&lt;/b&gt;") && !r.body.contains("<b>al"));
        assert!(r.body.contains("href=\"/oauth2/sign_out\""));
        assert!(r.body.contains("allowed.groups"));
        let r = Reply::unavailable_page("the IdP is down", "https://a.test/x?q=\"><script>");
        assert_eq!(r.status, 503);
        assert!(r.headers.iter().any(|(k, v)| k == "retry-after" && v == "5"));
        assert!(r.body.contains("https://a.test/x?q=&quot;&gt;&lt;script&gt;"));
        assert!(!r.body.contains("<script>"));
    }

    #[test]
    fn every_reply_has_exactly_one_content_type() {
        for r in [
            Reply::redirect("/x", vec!["a=1".into(), "b=2".into()]),
            Reply::page(400, "t", "m", None),
            Reply::unauthorized("corp", None),
            Reply::forbidden(None, "r", "m"),
            Reply::unavailable("corp", "m"),
            Reply::continue_to("/x", Vec::new()),
            Reply::sign_out_confirm("/oauth2/sign_out"),
        ] {
            let n = r.headers.iter().filter(|(k, _)| k == "content-type").count();
            assert_eq!(n, 1, "{r:?}");
        }
    }
}
