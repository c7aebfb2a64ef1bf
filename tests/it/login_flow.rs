//! The browser login through `Check`: the 302, the callback, sessions, SSO, concurrent logins,
//! tampering, rotation, and the callback's failure pages.

use crate::harness::*;
use crate::support::idp::{IdpOptions, TestIdp};

async fn stack() -> Stack {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let s = Stack::start(idp, BASIC_CONFIG).await;
    s.wait_ready().await;
    s
}

#[tokio::test]
async fn browser_without_session_is_sent_to_the_idp_with_state_nonce_and_pkce() {
    let s = stack().await;
    let a = s
        .check(Req::browser("https://app1.example.test/dash?tab=2"))
        .await;
    assert_eq!(a.status(), 302);
    assert_ne!(a.grpc_code(), 0, "a deny carries a non-OK status");
    let loc = a.location();
    assert!(
        loc.starts_with(&format!("{}/authorize?", s.idp.issuer())),
        "{loc}"
    );
    assert_eq!(query_param(&loc, "response_type").as_deref(), Some("code"));
    assert_eq!(query_param(&loc, "client_id").as_deref(), Some("gateway"));
    assert_eq!(
        query_param(&loc, "redirect_uri").as_deref(),
        Some("https://app1.example.test/oauth2/callback")
    );
    assert_eq!(
        query_param(&loc, "scope").as_deref(),
        Some("openid email profile")
    );
    assert_eq!(
        query_param(&loc, "code_challenge_method").as_deref(),
        Some("S256")
    );
    for p in ["state", "nonce", "code_challenge"] {
        assert!(
            query_param(&loc, p).is_some_and(|v| v.len() >= 43),
            "{p} must be long and random"
        );
    }
    assert_eq!(a.denied_header("cache-control").as_deref(), Some("no-store"));
    let cookies = a.set_cookies();
    assert_eq!(cookies.len(), 1);
    let c = &cookies[0];
    assert!(c.starts_with("_oidc_authz_login_"), "{c}");
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Domain=example.test",
        "Path=/",
    ] {
        assert!(c.contains(attr), "login cookie lacks {attr}: {c}");
    }
    // The state is not readable from the cookie (it is sealed).
    assert!(!c.contains(&query_param(&loc, "state").unwrap()));
    s.stop().await;
}

#[tokio::test]
async fn full_code_flow_gives_a_session_and_identity_headers() {
    let s = stack().await;
    let mut jar = Jar::default();
    let done = login_via_check(&s, "https://app1.example.test/dash?tab=2&x=%20y", &mut jar).await;
    assert_eq!(done.status(), 302, "{}", done.body());
    assert_eq!(
        done.location(),
        "https://app1.example.test/dash?tab=2&x=%20y",
        "back to the original URL, query intact"
    );
    assert!(jar.get("_oidc_authz").is_some(), "session cookie set");
    assert!(
        jar.names().iter().all(|n| !n.starts_with("_oidc_authz_login_")),
        "login cookie deleted"
    );
    let session_line = done
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("_oidc_authz="))
        .unwrap();
    for attr in [
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Domain=example.test",
        "Path=/",
    ] {
        assert!(session_line.contains(attr), "session cookie lacks {attr}");
    }

    let allowed = s
        .check(
            Req::browser("https://app1.example.test/dash")
                .cookies(&jar)
                .header("cookie", &format!("theme=dark; {}", jar.header().unwrap())),
        )
        .await;
    assert!(allowed.is_allow(), "{allowed:?}");
    assert_eq!(allowed.upstream("x-auth-request-user").as_deref(), Some("alice"));
    assert_eq!(
        allowed.upstream("x-auth-request-email").as_deref(),
        Some("alice@example.com")
    );
    assert_eq!(allowed.upstream("x-auth-request-rule").as_deref(), Some("corp"));
    assert!(allowed.upstream("x-auth-request-groups").is_some());
    let auth = allowed.upstream("authorization").unwrap();
    assert!(
        auth.starts_with("Bearer ey"),
        "the ID token goes upstream by default"
    );
    assert_eq!(
        allowed.upstream("cookie").as_deref(),
        Some("theme=dark"),
        "the session cookie never reaches the backend"
    );
    assert_eq!(s.idp.token_requests(), 1);
    s.stop().await;
}

#[tokio::test]
async fn callback_on_the_http_listener_completes_the_login_too() {
    let s = stack().await;
    let mut jar = Jar::default();
    let first = s.check(Req::browser("https://app1.example.test/reports")).await;
    jar.apply(&first.set_cookies());
    let callback = idp_approve(&first.location()).await;
    let path = &callback[callback.find("/oauth2/").unwrap()..];
    let resp = http_client()
        .get(s.http_url(path))
        .header("host", "app1.example.test")
        .header("cookie", jar.header().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    assert_eq!(resp.headers()["location"], "https://app1.example.test/reports");
    let set: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    jar.apply(&set);
    let allowed = s
        .check(Req::browser("https://app1.example.test/reports").cookies(&jar))
        .await;
    assert!(allowed.is_allow());
    s.stop().await;
}

#[tokio::test]
async fn one_login_gives_single_sign_on_across_hosts_under_the_cookie_domain() {
    let s = stack().await;
    let mut jar = Jar::default();
    login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    let other = s
        .check(Req::browser("https://app2.example.test/home").cookies(&jar))
        .await;
    assert!(other.is_allow(), "app2 is served without another login");
    assert_eq!(other.upstream("x-auth-request-user").as_deref(), Some("alice"));
    assert_eq!(s.idp.token_requests(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_login_started_on_another_host_completes_on_the_redirect_host() {
    let s = stack().await;
    let mut jar = Jar::default();
    let done = login_via_check(&s, "https://app2.example.test/x", &mut jar).await;
    assert_eq!(done.location(), "https://app2.example.test/x");
    s.stop().await;
}

#[tokio::test]
async fn two_tabs_logging_in_at_once_both_succeed() {
    let s = stack().await;
    // Both tabs start before either finishes: neither sees the other's cookie.
    let (a, b) = tokio::join!(
        s.check(Req::browser("https://app1.example.test/tab-a")),
        s.check(Req::browser("https://app2.example.test/tab-b"))
    );
    let mut jar = Jar::default();
    jar.apply(&a.set_cookies());
    jar.apply(&b.set_cookies());
    let (loc_a, loc_b) = (a.location(), b.location());
    let (cb_a, cb_b) = tokio::join!(idp_approve(&loc_a), idp_approve(&loc_b));
    // Finish B first, then A, with the jar as the browser holds it.
    let done_b = s.check(Req::browser(&cb_b).cookies(&jar)).await;
    assert_eq!(done_b.status(), 302, "{}", done_b.body());
    assert_eq!(done_b.location(), "https://app2.example.test/tab-b");
    jar.apply(&done_b.set_cookies());
    let done_a = s.check(Req::browser(&cb_a).cookies(&jar)).await;
    assert_eq!(done_a.status(), 302, "{}", done_a.body());
    assert_eq!(done_a.location(), "https://app1.example.test/tab-a");
    s.stop().await;
}

#[tokio::test]
async fn pending_logins_are_bounded_and_the_oldest_is_dropped() {
    let s = stack().await;
    let mut jar = Jar::default();
    let mut locations = Vec::new();
    for i in 0..7 {
        let a = s
            .check(Req::browser(&format!("https://app1.example.test/t{i}")).cookies(&jar))
            .await;
        assert_eq!(a.status(), 302);
        jar.apply(&a.set_cookies());
        locations.push(a.location());
    }
    let pending = jar
        .names()
        .iter()
        .filter(|n| n.starts_with("_oidc_authz_login_"))
        .count();
    assert!(pending <= 5, "at most 5 pending logins, found {pending}");
    // The newest one still completes.
    let cb = idp_approve(locations.last().unwrap()).await;
    let done = s.check(Req::browser(&cb).cookies(&jar)).await;
    assert_eq!(done.status(), 302);
    s.stop().await;
}

#[tokio::test]
async fn a_tampered_session_cookie_leads_to_a_fresh_login() {
    let s = stack().await;
    let mut jar = Jar::default();
    login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    let value = jar.get("_oidc_authz").unwrap().to_string();
    let mut bytes = value.into_bytes();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let mut bad = Jar::default();
    bad.cookies
        .push(("_oidc_authz".into(), String::from_utf8(bytes).unwrap()));
    let a = s
        .check(Req::browser("https://app1.example.test/").cookies(&bad))
        .await;
    assert_eq!(a.status(), 302, "tampered cookie → login, not an error");
    let api = s
        .check(Req::api("GET", "https://app1.example.test/api").cookies(&bad))
        .await;
    assert_eq!(api.status(), 401);
    s.stop().await;
}

#[tokio::test]
async fn sessions_survive_secret_rotation_and_die_when_the_secret_is_removed() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let s = Stack::start(idp.clone(), BASIC_CONFIG).await;
    s.wait_ready().await;
    let mut jar = Jar::default();
    login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    s.stop().await;

    // Rotated: the new secret first, the old one still accepted.
    let rotated = BASIC_CONFIG.replace("[\"{secret}\"]", &format!("[\"{OTHER_SECRET}\", \"{SECRET}\"]"));
    let s2 = Stack::start(idp.clone(), &rotated).await;
    s2.wait_ready().await;
    assert!(s2
        .check(Req::browser("https://app1.example.test/").cookies(&jar))
        .await
        .is_allow());
    s2.stop().await;

    // The old secret removed: its cookies no longer open.
    let only_new = BASIC_CONFIG.replace("[\"{secret}\"]", &format!("[\"{OTHER_SECRET}\"]"));
    let s3 = Stack::start(idp, &only_new).await;
    s3.wait_ready().await;
    assert_eq!(
        s3.check(Req::browser("https://app1.example.test/").cookies(&jar))
            .await
            .status(),
        302
    );
    s3.stop().await;
}

#[tokio::test]
async fn a_replayed_state_gets_the_sign_in_again_page() {
    let s = stack().await;
    let mut jar = Jar::default();
    let first = s.check(Req::browser("https://app1.example.test/")).await;
    jar.apply(&first.set_cookies());
    let callback = idp_approve(&first.location()).await;
    let before = jar.clone();
    let ok = s.check(Req::browser(&callback).cookies(&jar)).await;
    assert_eq!(ok.status(), 302);
    jar.apply(&ok.set_cookies());
    // Replay with the jar after the login: the login cookie is gone.
    let replay = s.check(Req::browser(&callback).cookies(&jar)).await;
    assert_eq!(replay.status(), 400);
    assert!(replay.body().contains("Sign in again"));
    // Replay with the old jar (login cookie still present): the code is spent at the IdP.
    let replay2 = s.check(Req::browser(&callback).cookies(&before)).await;
    assert!(
        replay2.status() == 502 || replay2.status() == 403,
        "{}",
        replay2.status()
    );
    s.stop().await;
}

#[tokio::test]
async fn missing_or_foreign_state_gets_400_not_500() {
    let s = stack().await;
    let mut jar = Jar::default();
    let first = s.check(Req::browser("https://app1.example.test/")).await;
    jar.apply(&first.set_cookies());
    for q in [
        "",
        "?code=abc",
        "?state=&code=x",
        "?state=nope&code=x",
        "?state=%ZZ&code=%",
        "?state=aaaaaaaaaaaaaaaaaaaaaaaa&code=x",
    ] {
        let a = s
            .check(Req::browser(&format!("https://app1.example.test/oauth2/callback{q}")).cookies(&jar))
            .await;
        assert_eq!(a.status(), 400, "query {q:?}");
        assert!(a.body().contains("<html"), "a readable page");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_nonce_mismatch_is_refused_with_403_and_no_session() {
    let s = stack().await;
    s.idp.set_wrong_nonce(true);
    let mut jar = Jar::default();
    let done = login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    assert_eq!(done.status(), 403);
    assert!(done.body().contains("nonce"));
    assert!(jar.get("_oidc_authz").is_none(), "no session");
    s.stop().await;
}

#[tokio::test]
async fn an_idp_error_is_a_403_page() {
    let s = stack().await;
    s.idp.set_deny_next(true);
    let mut jar = Jar::default();
    let done = login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    assert_eq!(done.status(), 403);
    assert!(done.body().contains("access_denied"));
    assert!(jar.get("_oidc_authz").is_none());
    s.stop().await;
}

#[tokio::test]
async fn a_failing_token_endpoint_is_a_502_page() {
    let s = stack().await;
    s.idp.set_token_endpoint_status(Some(500));
    let mut jar = Jar::default();
    let done = login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    assert_eq!(done.status(), 502);
    assert!(jar.get("_oidc_authz").is_none());
    s.stop().await;
}

#[tokio::test]
async fn client_secret_post_is_used_when_it_is_all_the_idp_offers() {
    let idp = TestIdp::start(IdpOptions {
        auth_methods: vec!["client_secret_post".into()],
        ..Default::default()
    })
    .await;
    let s = Stack::start(idp, BASIC_CONFIG).await;
    s.wait_ready().await;
    let mut jar = Jar::default();
    let done = login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    assert_eq!(done.status(), 302, "{}", done.body());
    assert_eq!(
        s.idp.last_token_request_auth().as_deref(),
        Some("client_secret_post")
    );
    s.stop().await;
}

#[tokio::test]
async fn client_secret_basic_is_the_default() {
    let s = stack().await;
    let mut jar = Jar::default();
    login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    assert_eq!(
        s.idp.last_token_request_auth().as_deref(),
        Some("client_secret_basic")
    );
    s.stop().await;
}

#[tokio::test]
async fn allowed_claims_are_checked_on_every_request() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let cfg = BASIC_CONFIG.replace(
        "    domains: [\"*.example.test\"]",
        "    domains: [\"*.example.test\"]\n    allowed: { groups: [admins] }",
    );
    let s = Stack::start(idp, &cfg).await;
    s.wait_ready().await;
    let mut jar = Jar::default();
    login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    let a = s
        .check(Req::browser("https://app1.example.test/").cookies(&jar))
        .await;
    assert_eq!(a.status(), 403);
    assert!(a.body().contains("allowed.groups"));
    s.stop().await;
}

#[tokio::test]
async fn a_large_session_is_chunked_and_still_works() {
    let s = stack().await;
    let groups: Vec<String> = (0..300)
        .map(|i| format!("group-with-a-long-name-{i:04}"))
        .collect();
    s.idp.set_extra_claims(serde_json::json!({ "groups": groups }));
    let mut jar = Jar::default();
    let done = login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    assert_eq!(done.status(), 302, "{}", done.body());
    assert!(jar.get("_oidc_authz").is_none(), "too big for one cookie");
    assert!(jar.get("_oidc_authz_1").is_some() && jar.get("_oidc_authz_2").is_some());
    for line in done.set_cookies() {
        let value = line.split(';').next().unwrap();
        assert!(value.len() <= 4100, "each chunk stays under the browser limit");
    }
    let a = s
        .check(Req::browser("https://app1.example.test/").cookies(&jar))
        .await;
    assert!(a.is_allow());
    let groups = a.upstream("x-auth-request-groups").unwrap();
    assert!(
        groups.contains("group-with-a-long-name-0255"),
        "groups up to the cap of 256 are passed"
    );
    assert!(!groups.contains("group-with-a-long-name-0256"), "and no more");
    assert_eq!(a.upstream("cookie"), None, "chunks are stripped too");
    assert!(a.removed().contains(&"cookie".to_string()));
    s.stop().await;
}

#[tokio::test]
async fn with_same_site_strict_the_callback_continues_with_a_same_site_navigation() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let cfg = BASIC_CONFIG.replace("  secure: true", "  secure: true\n  same_site: strict");
    let s = Stack::start(idp, &cfg).await;
    s.wait_ready().await;
    let mut jar = Jar::default();
    let done = login_via_check(&s, "https://app1.example.test/deep?x=1", &mut jar).await;
    assert_eq!(
        done.status(),
        200,
        "a page, not a cross-site 302 that would drop the cookie"
    );
    assert!(
        done.body().contains("url=https://app1.example.test/deep?x=1"),
        "{}",
        done.body()
    );
    assert!(done
        .set_cookies()
        .iter()
        .any(|c| c.starts_with("_oidc_authz=") && c.contains("SameSite=Strict")));
    assert!(s
        .check(Req::browser("https://app1.example.test/deep").cookies(&jar))
        .await
        .is_allow());
    s.stop().await;
}
