//! The HTTP listener (`/oauth2/start`, `/oauth2/sign_out`, `/oauth2/userinfo`, health and
//! readiness), spoofed identity headers, start-up while the IdP is down, and gRPC health.

use std::time::Duration;

use crate::harness::*;
use crate::support::idp::{IdpOptions, TestIdp};

async fn stack() -> Stack {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let s = Stack::start(idp, BASIC_CONFIG).await;
    s.wait_ready().await;
    s
}

async fn get(s: &Stack, path: &str, host: &str, jar: Option<&Jar>) -> reqwest::Response {
    let mut req = http_client().get(s.http_url(path)).header("host", host);
    if let Some(h) = jar.and_then(Jar::header) {
        req = req.header("cookie", h);
    }
    req.send().await.unwrap()
}

fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn start_refuses_open_redirects() {
    let s = stack().await;
    for rd in [
        "//evil.com/",
        "/\\evil.com",
        "https://evil.com/",
        "https://app1.example.test.evil.com/",
        "javascript:alert(1)",
        "https://user@evil.com/",
        "http://evil.com\t/",
        "data:text/html,hi",
    ] {
        let q: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        let r = get(&s, &format!("/oauth2/start?rd={q}"), "app1.example.test", None).await;
        assert_eq!(r.status().as_u16(), 400, "rd={rd:?} must be refused");
    }
    s.stop().await;
}

#[tokio::test]
async fn start_accepts_relative_paths_and_hosts_the_rule_owns() {
    let s = stack().await;
    for (rd, expect) in [
        ("/after?x=1", "https://app1.example.test/after?x=1"),
        (
            "https://app2.example.test/deep/link",
            "https://app2.example.test/deep/link",
        ),
    ] {
        let q: String = url::form_urlencoded::byte_serialize(rd.as_bytes()).collect();
        let r = get(&s, &format!("/oauth2/start?rd={q}"), "app1.example.test", None).await;
        assert_eq!(r.status().as_u16(), 302, "rd={rd}");
        let mut jar = Jar::default();
        jar.apply(&set_cookies(&r));
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let cb = idp_approve(&loc).await;
        let done = s.check(Req::browser(&cb).cookies(&jar)).await;
        assert_eq!(done.location(), expect);
    }
    s.stop().await;
}

#[tokio::test]
async fn sign_out_clears_the_session_and_visits_the_end_session_endpoint() {
    let s = stack().await;
    let mut jar = Jar::default();
    login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    let r = get(&s, "/oauth2/sign_out", "app1.example.test", Some(&jar)).await;
    assert_eq!(r.status().as_u16(), 302);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert!(
        loc.starts_with(&format!("{}/session/end?", s.idp.issuer())),
        "{loc}"
    );
    assert!(query_param(&loc, "id_token_hint").is_some_and(|t| t.starts_with("ey")));
    assert_eq!(query_param(&loc, "client_id").as_deref(), Some("gateway"));
    assert_eq!(
        query_param(&loc, "post_logout_redirect_uri").as_deref(),
        Some("https://app1.example.test/")
    );
    let cleared = set_cookies(&r);
    assert!(cleared.iter().any(|c| c.starts_with("_oidc_authz=;")
        && c.contains("Max-Age=0")
        && c.contains("Domain=example.test")));
    jar.apply(&cleared);
    assert_eq!(
        s.check(Req::browser("https://app1.example.test/").cookies(&jar))
            .await
            .status(),
        302
    );
    s.stop().await;
}

#[tokio::test]
async fn sign_out_without_end_session_goes_to_a_checked_rd() {
    let idp = TestIdp::start(IdpOptions {
        with_end_session: false,
        ..Default::default()
    })
    .await;
    let s = Stack::start(idp, BASIC_CONFIG).await;
    s.wait_ready().await;
    let r = get(&s, "/oauth2/sign_out?rd=%2Fbye", "app1.example.test", None).await;
    assert_eq!(r.status().as_u16(), 302);
    assert_eq!(r.headers()["location"], "https://app1.example.test/bye");
    let r = get(
        &s,
        "/oauth2/sign_out?rd=https%3A%2F%2Fevil.com%2F",
        "app1.example.test",
        None,
    )
    .await;
    assert_eq!(r.status().as_u16(), 400);
    let r = get(&s, "/oauth2/sign_out", "app1.example.test", None).await;
    assert_eq!(r.headers()["location"], "https://app1.example.test/");
    s.stop().await;
}

#[tokio::test]
async fn userinfo_shows_the_session_or_401() {
    let s = stack().await;
    let r = get(&s, "/oauth2/userinfo", "app1.example.test", None).await;
    assert_eq!(r.status().as_u16(), 401);
    let mut jar = Jar::default();
    login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    let r = get(&s, "/oauth2/userinfo", "app1.example.test", Some(&jar)).await;
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["sub"], "alice");
    assert_eq!(body["email"], "alice@example.com");
    assert!(body.get("id_token").is_none(), "tokens are never shown");
    s.stop().await;
}

#[tokio::test]
async fn bad_input_to_the_listener_never_gives_500() {
    let s = stack().await;
    let huge_cookie = format!("_oidc_authz={}", "A".repeat(30_000));
    for (path, cookie) in [
        ("/oauth2/callback?state=%FF%FE&code=%00", ""),
        ("/oauth2/callback?error=%3Cscript%3E&state=x", ""),
        ("/oauth2/start?rd=%", ""),
        ("/oauth2/userinfo", huge_cookie.as_str()),
        ("/oauth2/sign_out?rd=%%%%", "_oidc_authz_1=x; _oidc_authz_2=y"),
        ("/nope", ""),
    ] {
        let mut req = http_client()
            .get(s.http_url(path))
            .header("host", "app1.example.test");
        if !cookie.is_empty() {
            req = req.header("cookie", cookie);
        }
        let r = req.send().await.unwrap();
        assert!(r.status().as_u16() < 500, "{path} gave {}", r.status());
        let body = r.text().await.unwrap();
        assert!(!body.contains("<script>"), "{path} reflected markup");
    }
    s.stop().await;
}

#[tokio::test]
async fn spoofed_identity_headers_never_reach_the_backend() {
    let s = stack().await;
    // Public path: every client-sent x-auth-request-* header is removed.
    let a = s
        .check(
            Req::browser("https://app1.example.test/public/logo.png")
                .header("x-auth-request-user", "admin")
                .header("X-Auth-Request-Email", "root@example.test"),
        )
        .await;
    assert!(a.is_allow());
    let removed = a.removed();
    assert!(removed.contains(&"x-auth-request-user".to_string()));
    assert!(removed.contains(&"x-auth-request-email".to_string()));

    // Authenticated: ours overwrite theirs; theirs that we do not set are removed.
    s.idp
        .set_extra_claims(serde_json::json!({"preferred_username": null}));
    let mut claims = s.idp.default_claims("bob");
    claims.as_object_mut().unwrap().remove("preferred_username");
    let token = s.idp.mint(claims);
    let a = s
        .check(
            Req::api("GET", "https://api.example.test/x")
                .header("authorization", &format!("Bearer {token}"))
                .header("x-auth-request-user", "admin")
                .header("x-auth-request-preferred-username", "admin")
                .header("x-auth-request-anything", "1"),
        )
        .await;
    assert!(a.is_allow());
    assert_eq!(a.upstream("x-auth-request-user").as_deref(), Some("bob"));
    assert!(a
        .removed()
        .contains(&"x-auth-request-preferred-username".to_string()));
    assert!(a.removed().contains(&"x-auth-request-anything".to_string()));
    s.stop().await;
}

#[tokio::test]
async fn the_server_starts_while_the_idp_is_down_and_recovers_when_it_comes_up() {
    let idp = TestIdp::start(IdpOptions {
        start_down: true,
        ..Default::default()
    })
    .await;
    let s = Stack::start(idp, BASIC_CONFIG).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = get(&s, "/readyz", "x", None).await;
    assert_eq!(r.status().as_u16(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["not_ready"]["corp"].is_string(), "{body}");
    assert_eq!(get(&s, "/healthz", "x", None).await.status().as_u16(), 200);

    let a = s.check(Req::browser("https://app1.example.test/")).await;
    assert_eq!(a.status(), 503, "never allow, never hang");
    assert!(a.denied_header("retry-after").is_some());

    s.idp.set_down(false);
    s.wait_ready().await;
    assert_eq!(get(&s, "/readyz", "x", None).await.status().as_u16(), 200);
    assert_eq!(
        s.check(Req::browser("https://app1.example.test/")).await.status(),
        302
    );
    s.stop().await;
}

#[tokio::test]
async fn valid_sessions_keep_working_while_the_idp_is_down() {
    let s = stack().await;
    let mut jar = Jar::default();
    login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    s.idp.set_down(true);
    assert!(s
        .check(Req::browser("https://app1.example.test/").cookies(&jar))
        .await
        .is_allow());
    s.stop().await;
}

#[tokio::test]
async fn default_action_deny_answers_403_and_public_paths_need_no_login() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let cfg = BASIC_CONFIG.replace("default_action: allow", "default_action: deny");
    let s = Stack::start(idp, &cfg).await;
    s.wait_ready().await;
    // An API client gets JSON (a browser navigation gets a page: see hostile_http).
    let a = s.check(Req::api("GET", "https://other.example.org/")).await;
    assert_eq!(a.status(), 403);
    let body: serde_json::Value = serde_json::from_str(&a.body()).unwrap();
    assert_eq!(body["requirement"], "default_action");
    assert!(s
        .check(Req::browser("https://app1.example.test/public/x"))
        .await
        .is_allow());
    // Normalisation: these are not public.
    for p in ["/public/../admin", "/%70ublic/../admin", "/x/..//admin"] {
        assert_eq!(
            s.check(Req::browser(&format!("https://app1.example.test{p}")))
                .await
                .status(),
            302,
            "{p}"
        );
    }
    assert_eq!(
        s.check(Req::browser("https://app1.example.test/public%2F..%2Fadmin"))
            .await
            .status(),
        302
    );
    assert!(s
        .check(Req::browser("https://APP1.example.test:8443/%70ublic/x"))
        .await
        .is_allow());
    s.stop().await;
}

#[tokio::test]
async fn grpc_health_is_serving() {
    let s = stack().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", s.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "envoy.service.auth.v3.Authorization"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn metrics_count_decisions() {
    let s = stack().await;
    s.check(Req::browser("https://app1.example.test/public/a")).await;
    let body = get(&s, "/metrics", "x", None).await.text().await.unwrap();
    assert!(
        body.contains("oidc_authz_check_total{rule=\"corp\",outcome=\"allow_public\"} 1"),
        "{body}"
    );
    s.stop().await;
}

#[tokio::test]
async fn identity_headers_spelled_with_underscores_are_removed_too() {
    let s = stack().await;
    let a = s
        .check(
            Req::browser("https://app1.example.test/public/x")
                .header("x_auth_request_user", "mallory")
                .header("x-auth_request-groups", "admins"),
        )
        .await;
    assert!(a.is_allow());
    assert!(a.removed().contains(&"x_auth_request_user".to_string()));
    assert!(a.removed().contains(&"x-auth_request-groups".to_string()));
    s.stop().await;
}
