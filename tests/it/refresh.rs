//! Refresh, sentence by sentence (DESIGN "Sessions", Refresh): what triggers it, the grant and
//! its client authentication, the new cookie on the allow, one refresh at a time per session,
//! the previous cookie within 60 s, `invalid_grant`, an IdP that is down, hung or answering
//! 5xx (`refresh_grace`), a session without a refresh token, `max_lifetime`, and the counters.
//!
//! The test IdP issues tokens with a lifetime the test sets: `set_token_ttl(0)` makes a login
//! whose ID token expires the second it is issued (the callback accepts it within the 60 s
//! skew), so a refresh is due at once, with no waiting.

use std::time::Duration;

use oidc_authz::session::Session;

use crate::harness::*;
use crate::support::idp::{Availability, IdpOptions, Mint, TestIdp};

const APP: &str = "https://app1.example.test/dash";

fn config(extra_session: &str, rule_extra: &str) -> String {
    BASIC_CONFIG
        .replace("  secure: true\n", &format!("  secure: true\n{extra_session}"))
        .replace(
            "    domains: [\"*.example.test\"]\n",
            &format!("    domains: [\"*.example.test\"]\n{rule_extra}"),
        )
}

async fn stack_with(opts: IdpOptions, extra_session: &str, rule_extra: &str) -> Stack {
    let idp = TestIdp::start(opts).await;
    let s = Stack::start(idp, &config(extra_session, rule_extra)).await;
    s.wait_ready().await;
    s
}

async fn stack() -> Stack {
    stack_with(IdpOptions::default(), "", "").await
}

/// A browser signed in with tokens that expire at once (the IdP then goes back to an hour).
async fn expired_login(s: &Stack) -> Jar {
    s.idp.set_token_ttl(0);
    let mut jar = Jar::default();
    let done = login_via_check(s, APP, &mut jar).await;
    assert_eq!(done.status(), 302, "the login completes: {}", done.body());
    s.idp.set_token_ttl(3600);
    s.idp.reset_counters();
    jar
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The session in `jar`, as the server reads it.
fn session_in(s: &Stack, jar: &Jar) -> Session {
    s.app
        .sessions
        .read_session(&jar.header().expect("a cookie"), now())
        .expect("the jar holds a session")
}

/// The bearer token sent upstream on an allow.
fn upstream_token(a: &Answer) -> String {
    a.upstream("authorization")
        .and_then(|v| v.strip_prefix("Bearer ").map(str::to_string))
        .expect("an upstream token")
}

async fn metrics(s: &Stack) -> String {
    http_client()
        .get(s.http_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test]
async fn an_expired_id_token_is_refreshed_and_the_allow_carries_the_new_cookie() {
    let s = stack().await;
    let mut jar = expired_login(&s).await;
    let before = session_in(&s, &jar);
    assert!(before.expires_at <= now(), "the ID token has expired");

    let a = s.check(Req::browser(APP).cookies(&jar)).await;
    assert!(a.is_allow(), "{}", a.body());
    assert_eq!(s.idp.refresh_requests(), 1);
    let cookies = a.set_cookies();
    assert!(
        cookies.iter().any(|c| c.starts_with("_oidc_authz=")),
        "the refreshed session goes back to the browser: {cookies:?}"
    );
    // Set-Cookie on an allow goes to the browser (response_headers_to_add), appended.
    let crate::harness::Answer(resp) = &a;
    let Some(envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse::OkResponse(ok)) =
        &resp.http_response
    else {
        panic!("an allow")
    };
    assert!(ok
        .response_headers_to_add
        .iter()
        .all(|h| h.append_action == 0 && h.header.as_ref().unwrap().key == "set-cookie"));
    let token = upstream_token(&a);
    assert_ne!(token, before.id_token, "the backend gets the new ID token");

    jar.apply(&cookies);
    let after = session_in(&s, &jar);
    assert_eq!(after.id, before.id, "a refresh keeps the session id");
    assert_eq!(
        after.created_at, before.created_at,
        "and its start (max_lifetime)"
    );
    assert_eq!(after.id_token, token);
    assert!(after.expires_at > now() + 3000);
    assert_ne!(
        after.refresh_token, before.refresh_token,
        "the rotated refresh token is kept"
    );

    // The new cookie is current: no second refresh, no cookie.
    let b = s.check(Req::browser(APP).cookies(&jar)).await;
    assert!(b.is_allow());
    assert!(b.set_cookies().is_empty(), "{:?}", b.set_cookies());
    assert_eq!(upstream_token(&b), token);
    assert_eq!(s.idp.refresh_requests(), 1);

    let m = metrics(&s).await;
    assert_eq!(
        counter(&m, "oidc_authz_sessions_refreshed_total{result=\"success\"}"),
        1
    );
    assert_eq!(
        counter(
            &m,
            "oidc_authz_check_total{rule=\"corp\",outcome=\"allow_session\"}"
        ),
        2
    );
}

#[tokio::test]
async fn the_refresh_authenticates_the_client_as_the_code_exchange_did() {
    for (methods, expect_basic) in [
        (
            vec![
                "client_secret_basic".to_string(),
                "client_secret_post".to_string(),
            ],
            true,
        ),
        (vec!["client_secret_post".to_string()], false),
    ] {
        let opts = IdpOptions {
            auth_methods: methods,
            ..IdpOptions::default()
        };
        let s = stack_with(opts, "", "").await;
        let jar = expired_login(&s).await;
        let a = s.check(Req::api("GET", APP).cookies(&jar)).await;
        assert!(a.is_allow(), "{}", a.body());
        assert_eq!(s.idp.refresh_requests(), 1);
        let auth = s.idp.last_token_request_auth().unwrap_or_default();
        assert_eq!(auth.starts_with("client_secret_basic"), expect_basic, "{auth}");
    }
}

#[tokio::test]
async fn the_access_tokens_expiry_triggers_a_refresh_only_when_the_backend_gets_it() {
    for (upstream, refreshes) in [("access_token", 1), ("id_token", 0), ("none", 0)] {
        let s = stack_with(
            IdpOptions::default(),
            "",
            &format!("    upstream_token: {upstream}\n"),
        )
        .await;
        // The access token expires at once (expires_in 0); the ID token lives an hour.
        s.idp.set_token_ttl(0);
        s.idp.set_extra_claims(serde_json::json!({"exp": now() + 3600}));
        let mut jar = Jar::default();
        login_via_check(&s, APP, &mut jar).await;
        s.idp.set_token_ttl(3600);
        s.idp.set_extra_claims(serde_json::json!({}));
        s.idp.reset_counters();
        let old = session_in(&s, &jar);

        let a = s.check(Req::api("GET", APP).cookies(&jar)).await;
        assert!(a.is_allow(), "{upstream}: {}", a.body());
        assert_eq!(s.idp.refresh_requests(), refreshes, "{upstream}");
        if upstream == "access_token" {
            let token = upstream_token(&a);
            assert_ne!(Some(token.clone()), old.access_token, "a fresh access token");
            jar.apply(&a.set_cookies());
            let new = session_in(&s, &jar);
            assert_eq!(new.access_token, Some(token));
            assert!(new.access_expires_at.unwrap() > now() + 3000);
        }
    }
}

#[tokio::test]
async fn twenty_concurrent_checks_on_one_expired_session_cause_exactly_one_refresh() {
    let s = stack().await;
    let jar = expired_login(&s).await;
    // A slow token endpoint: every request arrives while the refresh is in flight.
    s.idp.set_token_delay(Some(Duration::from_millis(300)));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let mut client = s.client.clone();
        let req = Req::api("GET", APP).cookies(&jar).into_check();
        set.spawn(async move { Answer(client.check(req).await.expect("Check answers").into_inner()) });
    }
    let answers = set.join_all().await;
    let tokens: Vec<String> = answers
        .iter()
        .map(|a| {
            assert!(a.is_allow(), "{}", a.body());
            assert!(
                !a.set_cookies().is_empty(),
                "each gets the refreshed session's cookie"
            );
            upstream_token(a)
        })
        .collect();
    assert_eq!(s.idp.refresh_requests(), 1, "one refresh for 20 requests");
    assert!(tokens.iter().all(|t| t == &tokens[0]), "all use its result");
}

#[tokio::test]
async fn the_previous_cookie_within_60_s_gets_the_refreshed_session_not_a_second_refresh() {
    let s = stack().await;
    let old = expired_login(&s).await;
    let first = s.check(Req::browser(APP).cookies(&old)).await;
    assert!(first.is_allow());
    let token = upstream_token(&first);
    // The browser had not stored the new cookie yet (a request already in flight, another
    // tab): the old cookie again. The IdP rotates refresh tokens, so a second refresh with the
    // old one would be refused and end the session.
    for _ in 0..5 {
        let again = s.check(Req::browser(APP).cookies(&old)).await;
        assert!(again.is_allow(), "{}", again.body());
        assert_eq!(upstream_token(&again), token, "the refreshed session");
        assert!(
            again.set_cookies().iter().any(|c| c.starts_with("_oidc_authz=")),
            "and its cookie, again"
        );
    }
    assert_eq!(s.idp.refresh_requests(), 1);
}

#[tokio::test]
async fn refresh_grants_per_1000_requests_on_an_expired_session_is_one() {
    let s = stack().await;
    let old = expired_login(&s).await;
    let mut allowed = 0;
    for _ in 0..1000 {
        if s.check(Req::api("GET", APP).cookies(&old)).await.is_allow() {
            allowed += 1;
        }
    }
    let grants = s.idp.refresh_requests();
    println!("refresh grants per 1000 requests on an expired session: {grants}");
    assert_eq!(allowed, 1000);
    assert_eq!(grants, 1);
}

#[tokio::test]
async fn a_refresh_token_that_is_not_returned_is_kept() {
    let s = stack().await;
    s.idp.set_refresh_rotation(false);
    let mut jar = expired_login(&s).await;
    let before = session_in(&s, &jar);
    let a = s.check(Req::api("GET", APP).cookies(&jar)).await;
    assert!(a.is_allow(), "{}", a.body());
    assert_eq!(s.idp.refresh_requests(), 1);
    jar.apply(&a.set_cookies());
    let after = session_in(&s, &jar);
    assert!(after.refresh_token.is_some());
    assert_eq!(after.refresh_token, before.refresh_token);
    assert_ne!(after.id_token, before.id_token);
}

#[tokio::test]
async fn a_refresh_without_an_id_token_ends_the_session_when_the_backend_is_sent_id_tokens() {
    let s = stack().await;
    s.idp.set_refresh_id_token(false);
    let jar = expired_login(&s).await;
    let a = s.check(Req::api("GET", APP).cookies(&jar)).await;
    assert_eq!(
        a.status(),
        401,
        "an expired ID token is never sent upstream: {}",
        a.body()
    );
    assert_eq!(s.idp.refresh_requests(), 1);
}

#[tokio::test]
async fn a_refresh_without_an_id_token_keeps_the_identity_for_the_access_tokens_lifetime() {
    for upstream in ["access_token", "none"] {
        let s = stack_with(
            IdpOptions::default(),
            "",
            &format!("    upstream_token: {upstream}\n"),
        )
        .await;
        s.idp.set_refresh_id_token(false);
        let mut jar = expired_login(&s).await;
        let before = session_in(&s, &jar);
        let a = s.check(Req::api("GET", APP).cookies(&jar)).await;
        assert!(a.is_allow(), "{upstream}: {}", a.body());
        assert_eq!(a.upstream("x-auth-request-user").as_deref(), Some("alice"));
        if upstream == "access_token" {
            assert_ne!(
                Some(upstream_token(&a)),
                before.access_token,
                "the new access token"
            );
        } else {
            assert_eq!(a.upstream("authorization"), None);
        }
        jar.apply(&a.set_cookies());
        let after = session_in(&s, &jar);
        assert_eq!(after.identity, before.identity);
        assert!(
            after.expires_at > now() + 3000,
            "lives as long as the new access token"
        );
    }
}

#[tokio::test]
async fn each_expiry_gets_its_own_refresh_even_when_the_idp_keeps_the_refresh_token() {
    // Tokens that expire at once and a refresh token that never changes: every cookie is a new
    // state of the session, and each is refreshed (the memory is per state, not per token).
    let s = stack().await;
    s.idp.set_refresh_rotation(false);
    let mut jar = expired_login(&s).await;
    s.idp.set_token_ttl(0);
    let mut seen = vec![session_in(&s, &jar).id_token];
    for round in 1..=3 {
        let a = s.check(Req::api("GET", APP).cookies(&jar)).await;
        assert!(a.is_allow(), "round {round}: {}", a.body());
        let token = upstream_token(&a);
        assert!(
            !seen.contains(&token),
            "round {round}: a fresh ID token each time"
        );
        seen.push(token);
        jar.apply(&a.set_cookies());
        assert_eq!(s.idp.refresh_requests(), round, "one grant per request");
    }
}

#[tokio::test]
async fn a_403_after_a_refresh_still_gives_the_browser_the_refreshed_session() {
    // The rule refuses alice, but the refresh already spent her old refresh token: the new
    // cookie must reach the browser, or her session (good for other rules) is lost.
    let s = stack_with(IdpOptions::default(), "", "    allowed: { groups: [admins] }\n").await;
    s.idp.set_token_ttl(0);
    let mut jar = Jar::default();
    let first = s.check(Req::browser(APP).cookies(&jar)).await;
    jar.apply(&first.set_cookies());
    let callback = idp_approve(&first.location()).await;
    let done = s.check(Req::browser(&callback).cookies(&jar)).await;
    jar.apply(&done.set_cookies());
    s.idp.set_token_ttl(3600);
    s.idp.reset_counters();
    let before = session_in(&s, &jar);

    let a = s.check(Req::api("GET", APP).cookies(&jar)).await;
    assert_eq!(a.status(), 403, "{}", a.body());
    assert_eq!(s.idp.refresh_requests(), 1);
    let cookies = a.set_cookies();
    assert!(
        cookies.iter().any(|c| c.starts_with("_oidc_authz=")),
        "{cookies:?}"
    );
    jar.apply(&cookies);
    let after = session_in(&s, &jar);
    assert_eq!(after.id, before.id);
    assert_ne!(after.refresh_token, before.refresh_token);
    assert!(after.expires_at > now() + 3000);
}

#[tokio::test]
async fn invalid_grant_ends_the_session() {
    let s = stack().await;
    let jar = expired_login(&s).await;
    s.idp.revoke_refresh_tokens();
    // An API client: 401. A browser: sent to log in.
    let a = s.check(Req::api("GET", APP).cookies(&jar)).await;
    assert_eq!(a.status(), 401, "{}", a.body());
    let b = s.check(Req::browser(APP).cookies(&jar)).await;
    assert_eq!(b.status(), 302);
    assert!(b.location().starts_with(&s.idp.issuer()), "{}", b.location());
    assert_eq!(
        s.idp.refresh_requests(),
        1,
        "the refusal is remembered, not retried"
    );
    let m = metrics(&s).await;
    assert_eq!(
        counter(
            &m,
            "oidc_authz_sessions_refreshed_total{result=\"invalid_grant\"}"
        ),
        1
    );
}

#[tokio::test]
async fn a_refreshed_token_for_another_subject_or_that_fails_validation_ends_the_session() {
    for case in ["other sub", "bad signature", "other audience"] {
        let s = stack().await;
        let jar = expired_login(&s).await;
        match case {
            "other sub" => s.idp.set_extra_claims(serde_json::json!({"sub": "mallory"})),
            "bad signature" => s.idp.set_id_token_mint(Mint::BadSignature),
            _ => s
                .idp
                .set_extra_claims(serde_json::json!({"aud": "someone-else", "azp": null})),
        }
        let a = s.check(Req::api("GET", APP).cookies(&jar)).await;
        assert_eq!(a.status(), 401, "{case}: {}", a.body());
        assert_eq!(s.idp.refresh_requests(), 1, "{case}");
        let m = metrics(&s).await;
        assert_eq!(
            counter(&m, "oidc_authz_sessions_refreshed_total{result=\"rejected\"}"),
            1,
            "{case}"
        );
    }
}

#[tokio::test]
async fn an_idp_that_is_down_or_answers_5xx_is_bridged_by_refresh_grace_then_not() {
    for failure in ["503", "500", "429", "refused"] {
        let s = stack_with(IdpOptions::default(), "  refresh_grace: 3s\n", "").await;
        let jar = expired_login(&s).await;
        let expired_at = session_in(&s, &jar).expires_at;
        match failure {
            "503" => s.idp.set_availability(Availability::Down503),
            "500" => s.idp.set_token_endpoint_status(Some(500)),
            "429" => s.idp.set_token_endpoint_status(Some(429)),
            _ => s.idp.set_availability(Availability::Refuse),
        }
        // Within the grace: allowed, with the session as it is (no new cookie).
        for _ in 0..3 {
            let a = s.check(Req::api("GET", APP).cookies(&jar)).await;
            assert!(a.is_allow(), "{failure}: {}", a.body());
            assert!(a.set_cookies().is_empty(), "{failure}");
        }
        // (Counted by the IdP before it fails the request; a refused connection counts nothing.)
        let asked = s.idp.token_requests();
        assert!(
            asked <= 1,
            "{failure}: an unreachable IdP is not asked on every request ({asked})"
        );
        // Past expiry + grace: no session any more.
        let wait = (expired_at + 3 + 1).saturating_sub(now());
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let a = s.check(Req::api("GET", APP).cookies(&jar)).await;
        assert_eq!(a.status(), 401, "{failure}: {}", a.body());
        let b = s.check(Req::browser(APP).cookies(&jar)).await;
        assert_eq!(b.status(), 302, "{failure}");
        if failure == "500" {
            let m = metrics(&s).await;
            assert!(counter(&m, "oidc_authz_sessions_refreshed_total{result=\"unavailable\"}") >= 1);
        }
    }
}

#[tokio::test]
async fn refresh_grace_0s_ends_the_session_as_soon_as_the_idp_fails_and_5m_is_the_default() {
    let s = stack_with(IdpOptions::default(), "  refresh_grace: 0s\n", "").await;
    let jar = expired_login(&s).await;
    s.idp.set_availability(Availability::Down503);
    let a = s.check(Req::api("GET", APP).cookies(&jar)).await;
    assert_eq!(a.status(), 401, "{}", a.body());

    // Without the key: five minutes.
    let s = stack().await;
    assert_eq!(s.app.refresh_grace_secs, 300);
    let jar = expired_login(&s).await;
    s.idp.set_availability(Availability::Down503);
    let a = s.check(Req::api("GET", APP).cookies(&jar)).await;
    assert!(a.is_allow(), "{}", a.body());
}

#[tokio::test]
async fn a_hung_token_endpoint_is_bridged_by_refresh_grace_after_the_refresh_timeout() {
    let s = stack().await;
    let jar = expired_login(&s).await;
    // Longer than the refresh timeout: without one, the Check would wait and then refresh.
    s.idp.set_token_delay(Some(Duration::from_secs(30)));
    // Envoy gives up on ext_authz after 5 s (envoy/envoy.yaml): the answer must come first.
    let a = tokio::time::timeout(
        Duration::from_secs(5),
        s.check(Req::api("GET", APP).cookies(&jar)),
    )
    .await
    .expect("Check answers within Envoy's ext_authz timeout");
    assert!(a.is_allow(), "{}", a.body());
    assert!(a.set_cookies().is_empty(), "served from the grace, not refreshed");
}

#[tokio::test]
async fn a_refreshed_id_token_signed_by_a_key_not_yet_in_the_jwks_is_bridged_by_the_grace() {
    // A key rotation the JWKS cache has not caught up with says nothing against the session.
    let s = stack().await;
    let jar = expired_login(&s).await;
    s.idp.set_id_token_mint(Mint::UnknownKid);
    let a = s.check(Req::api("GET", APP).cookies(&jar)).await;
    assert!(a.is_allow(), "{}", a.body());
    assert!(a.set_cookies().is_empty());
    let m = metrics(&s).await;
    assert_eq!(
        counter(&m, "oidc_authz_sessions_refreshed_total{result=\"unavailable\"}"),
        1
    );
}

#[tokio::test]
async fn a_session_without_a_refresh_token_ends_when_its_id_token_expires() {
    let s = stack().await;
    let mut jar = Jar::default();
    login_via_check(&s, APP, &mut jar).await;
    let mut session = session_in(&s, &jar);
    session.refresh_token = None;
    let t = now();
    for (expires_at, allowed) in [(t + 60, true), (t, false), (t - 30, false)] {
        session.expires_at = expires_at;
        let lines = s
            .app
            .sessions
            .write_session(&session, None, std::iter::empty(), t);
        let mut jar = Jar::default();
        jar.apply(&lines);
        let a = s.check(Req::api("GET", APP).cookies(&jar)).await;
        assert_eq!(
            a.is_allow(),
            allowed,
            "expires_at {expires_at} at {t}: {}",
            a.body()
        );
    }
    assert_eq!(s.idp.refresh_requests(), 0);
}

#[tokio::test]
async fn max_lifetime_caps_everything_refreshes_included() {
    let s = stack_with(IdpOptions::default(), "  max_lifetime: 1h\n", "").await;
    let mut jar = expired_login(&s).await;
    let mut session = session_in(&s, &jar);
    let t = now();
    // Made 59 minutes ago: a refresh keeps its start, so its cookie has a minute left at most.
    session.created_at = t - 59 * 60;
    let lines = s
        .app
        .sessions
        .write_session(&session, None, std::iter::empty(), t);
    jar = Jar::default();
    jar.apply(&lines);
    let a = s.check(Req::api("GET", APP).cookies(&jar)).await;
    assert!(a.is_allow(), "{}", a.body());
    let cookie = a
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("_oidc_authz="))
        .expect("the refreshed cookie");
    let max_age: u64 = cookie
        .split(';')
        .find_map(|p| p.trim().strip_prefix("Max-Age="))
        .and_then(|v| v.parse().ok())
        .expect("Max-Age");
    assert!(max_age <= 60, "{cookie}");
    // Past max_lifetime: no refresh at all.
    session.created_at = t - 3600;
    let lines = s
        .app
        .sessions
        .write_session(&session, None, std::iter::empty(), t - 1);
    let mut late = Jar::default();
    late.apply(&lines);
    s.idp.reset_counters();
    let b = s.check(Req::api("GET", APP).cookies(&late)).await;
    assert_eq!(b.status(), 401);
    assert_eq!(s.idp.refresh_requests(), 0);
}

#[tokio::test]
async fn userinfo_refreshes_an_expired_session_too() {
    let s = stack().await;
    let jar = expired_login(&s).await;
    let resp = http_client()
        .get(s.http_url("/oauth2/userinfo"))
        .header("host", "app1.example.test")
        .header("cookie", jar.header().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().starts_with("_oidc_authz=")));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["sub"], "alice");
    assert!(body["expires_at"].as_u64().unwrap() > now() + 3000);
    assert_eq!(s.idp.refresh_requests(), 1);
}
