//! Issue 7, the HTTP side: what hostile or careless input must not achieve at the HTTP
//! listener and in `Check`. One section per finding.

use crate::harness::*;
use crate::support::idp::{IdpOptions, TestIdp};

async fn stack_with(config: &str) -> Stack {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let s = Stack::start(idp, config).await;
    s.wait_ready().await;
    s
}

async fn stack() -> Stack {
    stack_with(BASIC_CONFIG).await
}

fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn content_types(resp: &reqwest::Response) -> usize {
    resp.headers().get_all("content-type").iter().count()
}

/// A sign-out on the HTTP listener, as the browser holding `jar` sends it.
async fn sign_out(
    s: &Stack,
    method: &str,
    path: &str,
    jar: &Jar,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let client = http_client();
    let mut req = match method {
        "POST" => client.post(s.http_url(path)),
        _ => client.get(s.http_url(path)),
    }
    .header("host", "app1.example.test");
    if let Some(h) = jar.header() {
        req = req.header("cookie", h);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

async fn userinfo_status(s: &Stack, jar: &Jar) -> u16 {
    let mut req = http_client()
        .get(s.http_url("/oauth2/userinfo"))
        .header("host", "app1.example.test");
    if let Some(h) = jar.header() {
        req = req.header("cookie", h);
    }
    req.send().await.unwrap().status().as_u16()
}

// -- 1. sign-out revokes -----------------------------------------------------------------------

#[tokio::test]
async fn sign_out_revokes_the_session_so_a_saved_copy_of_the_cookie_stops_working() {
    let s = stack().await;
    let mut jar = Jar::default();
    login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    let saved = jar.clone();
    assert!(s
        .check(Req::browser("https://app1.example.test/").cookies(&saved))
        .await
        .is_allow());

    let r = sign_out(&s, "GET", "/oauth2/sign_out", &jar, &[]).await;
    assert_eq!(r.status().as_u16(), 302);

    // The browser drops its cookie; an attacker (or a second tab) kept a copy.
    let browser = s
        .check(Req::browser("https://app2.example.test/").cookies(&saved))
        .await;
    assert_eq!(
        browser.status(),
        302,
        "a revoked session is no session: log in again"
    );
    let api = s
        .check(Req::api("GET", "https://app1.example.test/api").cookies(&saved))
        .await;
    assert_eq!(api.status(), 401);
    assert_eq!(userinfo_status(&s, &saved).await, 401);

    // A new login works again.
    let mut fresh = Jar::default();
    login_via_check(&s, "https://app1.example.test/", &mut fresh).await;
    assert!(s
        .check(Req::browser("https://app1.example.test/").cookies(&fresh))
        .await
        .is_allow());
    s.stop().await;
}

#[tokio::test]
async fn every_session_has_its_own_random_id_and_keeps_the_idps_sid() {
    let s = stack().await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut jar = Jar::default();
        login_via_check(&s, "https://app1.example.test/", &mut jar).await;
        let session = s
            .app
            .sessions
            .read_session(&jar.header().unwrap(), oidc_authz::app::now())
            .expect("the session opens");
        let json = serde_json::to_value(&session).unwrap();
        let id = json["id"].as_str().expect("a session id").to_string();
        assert!(id.len() >= 22, "at least 128 bits: {id}");
        assert_eq!(
            json["identity"]["sid"].as_str(),
            s.idp.last_sid().as_deref(),
            "the IdP's sid is kept"
        );
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
    s.stop().await;
}

// -- 2. sign-out CSRF --------------------------------------------------------------------------

#[tokio::test]
async fn a_cross_site_sign_out_changes_nothing_and_offers_a_same_site_button() {
    let s = stack().await;
    let mut jar = Jar::default();
    login_via_check(&s, "https://app1.example.test/", &mut jar).await;

    let rd = "/bye\"><script>alert(1)</script>";
    let q: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
    let path = format!("/oauth2/sign_out?rd={q}");
    for (method, headers) in [
        ("GET", vec![("sec-fetch-site", "cross-site")]),
        (
            "POST",
            vec![
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example"),
            ],
        ),
        ("POST", vec![("origin", "https://evil.example")]),
        ("POST", vec![("origin", "null")]),
        ("POST", vec![("origin", "https://app1.example.test.evil.example")]),
        ("GET", vec![("sec-fetch-site", "bogus")]),
    ] {
        let r = sign_out(&s, method, &path, &jar, &headers).await;
        assert_eq!(r.status().as_u16(), 200, "{method} {headers:?}");
        assert!(set_cookies(&r).is_empty(), "no Set-Cookie: {headers:?}");
        assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
        assert_eq!(r.headers()["x-frame-options"], "DENY");
        let body = r.text().await.unwrap();
        assert!(
            body.contains(&format!(
                "<form method=\"post\" action=\"/oauth2/sign_out?rd={q}\">"
            )),
            "{body}"
        );
        assert!(!body.contains("<script>"), "{body}");
        // Nothing was revoked: the session still works.
        assert!(
            s.check(Req::browser("https://app1.example.test/").cookies(&jar))
                .await
                .is_allow(),
            "{method} {headers:?} must not revoke"
        );
    }

    // The page's button: a same-origin POST signs out.
    let saved = jar.clone();
    let r = sign_out(
        &s,
        "POST",
        &path,
        &jar,
        &[
            ("sec-fetch-site", "same-origin"),
            ("origin", "https://app1.example.test"),
        ],
    )
    .await;
    assert_eq!(r.status().as_u16(), 302);
    assert!(set_cookies(&r).iter().any(|c| c.starts_with("_oidc_authz=;")));
    assert_eq!(
        s.check(Req::browser("https://app1.example.test/").cookies(&saved))
            .await
            .status(),
        302
    );
    s.stop().await;
}

#[tokio::test]
async fn a_sign_out_from_the_same_site_proceeds() {
    let s = stack().await;
    for headers in [
        vec![("sec-fetch-site", "same-site")],
        vec![("sec-fetch-site", "none")],
        // No Sec-Fetch-Site: an Origin under the cookie domain is the same site.
        vec![("origin", "https://app2.example.test")],
        vec![("origin", "https://app1.example.test")],
        vec![],
    ] {
        let mut jar = Jar::default();
        login_via_check(&s, "https://app1.example.test/", &mut jar).await;
        let saved = jar.clone();
        let r = sign_out(&s, "POST", "/oauth2/sign_out", &jar, &headers).await;
        assert_eq!(r.status().as_u16(), 302, "{headers:?}");
        assert_eq!(
            s.check(Req::browser("https://app1.example.test/").cookies(&saved))
                .await
                .status(),
            302,
            "{headers:?}: revoked"
        );
    }
    s.stop().await;
}

// -- 3. one content-type -----------------------------------------------------------------------

#[tokio::test]
async fn every_answer_has_exactly_one_content_type() {
    let s = stack().await;
    let client = http_client();
    for (method, path) in [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/nope"),
        ("GET", "/oauth2/userinfo"),
        ("GET", "/oauth2/start?rd=%2F"),
        ("GET", "/oauth2/start?rd=https%3A%2F%2Fevil.com%2F"),
        ("GET", "/oauth2/sign_out"),
        ("GET", "/oauth2/callback?state=x&code=y"),
        ("POST", "/oauth2/callback"),
        ("POST", "/oauth2/backchannel_logout"),
    ] {
        let req = match method {
            "POST" => client.post(s.http_url(path)),
            _ => client.get(s.http_url(path)),
        };
        let r = req.header("host", "app1.example.test").send().await.unwrap();
        assert_eq!(content_types(&r), 1, "{method} {path} ({})", r.status());
    }
    let r = sign_out(
        &s,
        "GET",
        "/oauth2/sign_out",
        &Jar::default(),
        &[("sec-fetch-site", "cross-site")],
    )
    .await;
    assert_eq!(content_types(&r), 1, "the confirmation page");

    // Check's denials: the login 302, a 401, the callback's 302.
    let mut jar = Jar::default();
    let redirect = s.check(Req::browser("https://app1.example.test/")).await;
    assert_eq!(redirect.status(), 302);
    assert_eq!(redirect.denied_header_all("content-type").len(), 1, "302");
    let unauthorized = s.check(Req::api("GET", "https://app1.example.test/")).await;
    assert_eq!(unauthorized.denied_header_all("content-type").len(), 1, "401");
    let done = login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    assert_eq!(done.denied_header_all("content-type").len(), 1, "callback 302");
    s.stop().await;
}

// -- 4. pages for browsers ---------------------------------------------------------------------

#[tokio::test]
async fn a_browser_gets_a_403_page_saying_who_is_signed_in_and_an_api_client_gets_json() {
    let cfg = BASIC_CONFIG.replace(
        "    domains: [\"*.example.test\"]",
        "    domains: [\"*.example.test\"]\n    allowed: { groups: [admins] }",
    );
    let s = stack_with(&cfg).await;
    s.idp
        .set_extra_claims(serde_json::json!({"preferred_username": "al<i>ce</i>"}));
    let mut jar = Jar::default();
    login_via_check(&s, "https://app1.example.test/", &mut jar).await;

    let page = s
        .check(Req::browser("https://app1.example.test/admin").cookies(&jar))
        .await;
    assert_eq!(page.status(), 403);
    assert_eq!(
        page.denied_header_all("content-type"),
        vec!["text/html; charset=utf-8".to_string()]
    );
    let body = page.body();
    assert!(
        body.contains("al&lt;i&gt;ce&lt;/i&gt;"),
        "who is signed in, escaped: {body}"
    );
    assert!(!body.contains("<i>"), "{body}");
    assert!(body.contains("href=\"/oauth2/sign_out\""), "{body}");
    assert!(body.contains("allowed.groups"), "{body}");

    let api = s
        .check(Req::api("GET", "https://app1.example.test/admin").cookies(&jar))
        .await;
    assert_eq!(api.status(), 403);
    assert_eq!(
        api.denied_header_all("content-type"),
        vec!["application/json".to_string()]
    );
    let json: serde_json::Value = serde_json::from_str(&api.body()).unwrap();
    assert_eq!(json["requirement"], "allowed.groups");

    // An XHR is not a navigation, even when it accepts HTML.
    let xhr = s
        .check(
            Req::browser("https://app1.example.test/admin")
                .cookies(&jar)
                .header("x-requested-with", "XMLHttpRequest"),
        )
        .await;
    assert!(serde_json::from_str::<serde_json::Value>(&xhr.body()).is_ok());
    s.stop().await;
}

#[tokio::test]
async fn default_action_deny_is_a_page_for_browsers() {
    let cfg = BASIC_CONFIG.replace("default_action: allow", "default_action: deny");
    let s = stack_with(&cfg).await;
    let page = s.check(Req::browser("https://other.example.org/")).await;
    assert_eq!(page.status(), 403);
    assert!(page.body().starts_with("<!doctype html>"), "{}", page.body());
    assert!(page.body().contains("default_action"));
    let api = s.check(Req::api("GET", "https://other.example.org/")).await;
    let json: serde_json::Value = serde_json::from_str(&api.body()).unwrap();
    assert_eq!(json["requirement"], "default_action");
    s.stop().await;
}

#[tokio::test]
async fn a_browser_gets_a_503_page_with_a_retry_link_while_the_idp_is_down() {
    let idp = TestIdp::start(IdpOptions {
        start_down: true,
        ..Default::default()
    })
    .await;
    let s = Stack::start(idp, BASIC_CONFIG).await;
    let page = s
        .check(Req::browser("https://app1.example.test/x?a=1&b=\"2\""))
        .await;
    assert_eq!(page.status(), 503);
    assert_eq!(
        page.denied_header_all("content-type"),
        vec!["text/html; charset=utf-8".to_string()]
    );
    assert!(page.denied_header("retry-after").is_some());
    let body = page.body();
    assert!(
        body.contains("href=\"https://app1.example.test/x?a=1&amp;b=&quot;2&quot;\""),
        "a retry link to the original URL: {body}"
    );

    // An API client with a bearer token still gets JSON.
    let token = s.idp.mint(s.idp.default_claims("bob"));
    let api = s
        .check(
            Req::api("GET", "https://app1.example.test/x")
                .header("authorization", &format!("Bearer {token}")),
        )
        .await;
    assert_eq!(api.status(), 503);
    assert!(api.denied_header("retry-after").is_some());
    let json: serde_json::Value = serde_json::from_str(&api.body()).unwrap();
    assert_eq!(json["error"], "unavailable");
    s.stop().await;
}

// -- 5. the client's own authorization header --------------------------------------------------

#[tokio::test]
async fn a_session_allow_never_passes_the_clients_own_authorization_header() {
    let cfg = BASIC_CONFIG.replace(
        "    domains: [\"*.example.test\"]",
        "    domains: [\"*.example.test\"]\n    upstream_token: none",
    );
    let s = stack_with(&cfg).await;
    let mut jar = Jar::default();
    login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    let a = s
        .check(
            Req::browser("https://app1.example.test/")
                .cookies(&jar)
                .header("authorization", "Basic YWRtaW46YWRtaW4="),
        )
        .await;
    assert!(a.is_allow());
    assert_eq!(a.upstream("x-auth-request-user").as_deref(), Some("alice"));
    assert_eq!(a.upstream("authorization"), None);
    assert!(
        a.removed().contains(&"authorization".to_string()),
        "{:?}",
        a.removed()
    );

    // A bearer token that authenticated the request itself passes through.
    let token = s.idp.mint(s.idp.default_claims("bob"));
    let b = s
        .check(
            Req::api("GET", "https://app1.example.test/api")
                .header("authorization", &format!("Bearer {token}")),
        )
        .await;
    assert!(b.is_allow());
    assert!(!b.removed().contains(&"authorization".to_string()));
    s.stop().await;
}

// -- 6. other cookies byte for byte ------------------------------------------------------------

#[tokio::test]
async fn other_cookies_reach_the_backend_byte_for_byte() {
    let s = stack().await;
    let mut jar = Jar::default();
    login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    let ours = jar.header().unwrap();
    let header = format!("prefs=\"a=1,b=2\"; {ours}; list=x,y; q=\"a, b\"");
    let a = s
        .check(Req::browser("https://app1.example.test/").header("cookie", &header))
        .await;
    assert!(a.is_allow(), "{a:?}");
    assert_eq!(
        a.upstream("cookie").as_deref(),
        Some("prefs=\"a=1,b=2\"; list=x,y; q=\"a, b\"")
    );
    s.stop().await;
}

// -- 7. request values in logs -----------------------------------------------------------------

#[tokio::test]
async fn the_callbacks_error_is_logged_escaped_without_forged_lines() {
    let (logs, _guard) = capture_logs();
    let s = stack().await;
    let mut jar = Jar::default();
    let first = s.check(Req::browser("https://app1.example.test/")).await;
    jar.apply(&first.set_cookies());
    let state = query_param(&first.location(), "state").unwrap();
    let forged = "x\n audit: forged\u{1b}[31m";
    let q: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("state", &state)
        .append_pair("error", forged)
        .append_pair("error_description", "y\r\naudit: forged too")
        .finish();
    let r = http_client()
        .get(s.http_url(&format!("/oauth2/callback?{q}")))
        .header("host", "app1.example.test")
        .header("cookie", jar.header().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    s.stop().await;

    let text = logs.text();
    assert!(
        text.contains("identity provider refused the login"),
        "the refusal is logged: {text}"
    );
    for line in text.lines() {
        assert!(
            !line.trim_start().starts_with("audit:"),
            "a forged line: {line:?}\n{text}"
        );
    }
    assert!(!text.contains('\u{1b}'), "raw ESC in the log: {text:?}");
    assert!(!text.contains('\r'), "raw CR in the log: {text:?}");
    assert!(text.contains("x\\n audit: forged"), "{text}");
}

// -- 8. extreme expiry -------------------------------------------------------------------------

#[tokio::test]
async fn a_session_expiring_at_the_end_of_time_does_not_overflow() {
    let s = stack().await;
    let now = oidc_authz::app::now();
    let session: oidc_authz::session::Session = serde_json::from_value(serde_json::json!({
        "id": "AAAAAAAAAAAAAAAAAAAAAA",
        "iss": s.idp.issuer(),
        "client_id": s.idp.client_id(),
        "identity": {"sub": "alice"},
        "id_token": "eyJ.e30.x",
        "created_at": now,
        "expires_at": u64::MAX,
    }))
    .unwrap();
    let mut jar = Jar::default();
    jar.apply(
        &s.app
            .sessions
            .write_session(&session, Some(".example.test"), std::iter::empty(), now),
    );
    let r = http_client()
        .get(s.http_url("/oauth2/userinfo"))
        .header("host", "app1.example.test")
        .header("cookie", jar.header().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "a live session, not an overflow");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["sub"], "alice");
    assert_eq!(body["expires_at"].as_u64(), Some(u64::MAX));
    assert!(s
        .check(Req::browser("https://app1.example.test/").cookies(&jar))
        .await
        .is_allow());
    s.stop().await;
}
