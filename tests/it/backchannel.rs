//! Back-channel logout (OIDC Back-Channel Logout 1.0, DESIGN "HTTP endpoints"): a valid logout
//! token ends the sessions of its `sid` (that one only) or of its `sub` (all of them), answers
//! 200 with `cache-control: no-store`; every bad kind of token answers 400
//! `{"error": "invalid_request"}` and revokes nothing; a `jti` is used once. Also front-channel
//! logout, and the logout counters.

use serde_json::{json, Value};

use crate::harness::*;
use crate::support::idp::{IdpOptions, Mint, TestIdp, BACKCHANNEL_LOGOUT_EVENT};

const APP: &str = "https://app1.example.test/dash";

async fn stack() -> Stack {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let s = Stack::start(idp, BASIC_CONFIG).await;
    s.wait_ready().await;
    s
}

/// A browser signed in as `user`; returns its jar and the IdP session id of its login.
async fn signed_in(s: &Stack, user: &str) -> (Jar, String) {
    s.idp.set_user(user);
    let mut jar = Jar::default();
    login_via_check(s, APP, &mut jar).await;
    let sid = s.idp.last_sid().expect("the IdP gave the login a sid");
    assert!(s.check(Req::api("GET", APP).cookies(&jar)).await.is_allow());
    (jar, sid)
}

async fn works(s: &Stack, jar: &Jar) -> bool {
    s.check(Req::api("GET", APP).cookies(jar)).await.is_allow()
}

/// POSTs `body` (a form) to the back-channel endpoint, as an IdP would; `host` is the Host
/// header (an IdP may call an in-cluster address no rule serves).
async fn post(s: &Stack, host: &str, body: String) -> (u16, Option<String>, Value) {
    let resp = http_client()
        .post(s.http_url("/oauth2/backchannel_logout"))
        .header("host", host)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let cache = resp
        .headers()
        .get("cache-control")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    (status, cache, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn form(token: &str) -> String {
    format!(
        "logout_token={}",
        url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
    )
}

async fn logout(s: &Stack, token: &str) -> u16 {
    let (status, cache, body) = post(s, "app1.example.test", form(token)).await;
    assert_eq!(cache.as_deref(), Some("no-store"), "{status} {body}");
    if status == 400 {
        assert_eq!(body, json!({"error": "invalid_request"}));
    }
    status
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
async fn a_logout_token_with_a_sid_ends_that_session_only() {
    let s = stack().await;
    let (laptop, laptop_sid) = signed_in(&s, "alice").await;
    let (phone, _) = signed_in(&s, "alice").await;
    let token = s.idp.mint_logout_token(Some("alice"), Some(&laptop_sid));
    assert_eq!(logout(&s, &token).await, 200);
    assert!(!works(&s, &laptop).await, "the laptop's session has ended");
    assert!(
        works(&s, &phone).await,
        "the phone's (another IdP session) has not"
    );
    // A browser holding the ended session is sent to log in again.
    let b = s.check(Req::browser(APP).cookies(&laptop)).await;
    assert_eq!(b.status(), 302);
    assert!(b.location().starts_with(&s.idp.issuer()));
    let m = metrics(&s).await;
    assert_eq!(counter(&m, "oidc_authz_logouts_total{kind=\"backchannel\"}"), 1);
}

#[tokio::test]
async fn a_logout_token_with_only_a_sub_ends_every_session_of_that_user() {
    let s = stack().await;
    let (a1, _) = signed_in(&s, "alice").await;
    let (a2, _) = signed_in(&s, "alice").await;
    let (bob, _) = signed_in(&s, "bob").await;
    let token = s.idp.mint_logout_token(Some("alice"), None);
    assert_eq!(logout(&s, &token).await, 200);
    assert!(!works(&s, &a1).await);
    assert!(!works(&s, &a2).await);
    assert!(works(&s, &bob).await, "another user's session goes on");
    // A login right after the logout (in the same second) is a new session.
    let (again, _) = signed_in(&s, "alice").await;
    assert!(works(&s, &again).await);
}

#[tokio::test]
async fn a_logout_token_with_sid_and_sub_also_ends_the_users_sessions_that_have_no_sid() {
    let s = stack().await;
    let (with_sid, sid) = signed_in(&s, "alice").await;
    let (other_sid, _) = signed_in(&s, "alice").await;
    // An ID token without `sid`: no sid can name this session, only the user can.
    s.idp.set_extra_claims(json!({"sid": null}));
    let (without_sid, _) = signed_in(&s, "alice").await;
    s.idp.set_extra_claims(json!({}));
    let token = s.idp.mint_logout_token(Some("alice"), Some(&sid));
    assert_eq!(logout(&s, &token).await, 200);
    assert!(!works(&s, &with_sid).await);
    assert!(works(&s, &other_sid).await, "another IdP session of hers goes on");
    assert!(!works(&s, &without_sid).await);
}

#[tokio::test]
async fn the_rule_is_found_from_the_token_whatever_host_it_is_posted_to() {
    let s = stack().await;
    let (jar, sid) = signed_in(&s, "alice").await;
    let token = s.idp.mint_logout_token(None, Some(&sid));
    let (status, _, _) = post(&s, "oidc-authz.auth.svc.cluster.local:9002", form(&token)).await;
    assert_eq!(status, 200);
    assert!(!works(&s, &jar).await);
}

#[tokio::test]
async fn a_logout_token_typed_jwt_is_accepted_too() {
    // `typ: logout+jwt` is only recommended (§2.4); Keycloak and others send "JWT" or none.
    let s = stack().await;
    let (jar, sid) = signed_in(&s, "alice").await;
    let claims = s.idp.logout_token_claims(Some("alice"), Some(&sid));
    assert_eq!(logout(&s, &s.idp.mint(claims)).await, 200);
    assert!(!works(&s, &jar).await);
}

#[tokio::test]
async fn a_logout_token_is_used_once() {
    let s = stack().await;
    let (jar, sid) = signed_in(&s, "alice").await;
    let token = s.idp.mint_logout_token(Some("alice"), Some(&sid));
    assert_eq!(logout(&s, &token).await, 200);
    assert_eq!(logout(&s, &token).await, 400, "a replayed jti is refused");
    assert!(!works(&s, &jar).await);
}

#[tokio::test]
async fn every_bad_logout_token_is_refused_and_revokes_nothing() {
    let s = stack().await;
    let (jar, sid) = signed_in(&s, "alice").await;
    let idp = &s.idp;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = || idp.logout_token_claims(Some("alice"), Some(&sid));
    let with = |k: &str, v: Value| {
        let mut c = good();
        c[k] = v;
        c
    };
    let without = |k: &str| {
        let mut c = good();
        c.as_object_mut().unwrap().remove(k);
        c
    };
    let header = |extra: Value| {
        let mut h = json!({"alg": "RS256", "typ": "logout+jwt", "kid": idp.current_kid()});
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        h
    };
    let signed = |claims: Value| idp.mint_raw(header(json!({})), claims);
    let mut neither = good();
    neither.as_object_mut().unwrap().remove("sid");
    neither.as_object_mut().unwrap().remove("sub");

    let cases: Vec<(&str, String)> = vec![
        ("bad signature", idp.mint_with(good(), Mint::BadSignature)),
        ("unknown key", idp.mint_with(good(), Mint::UnknownKid)),
        ("signed by another key", idp.mint_with(good(), Mint::OtherKey)),
        ("alg none", idp.mint_with(good(), Mint::AlgNone)),
        (
            "HS256 with the public key",
            idp.mint_with(good(), Mint::Hs256WithPublicKey),
        ),
        (
            "HS256 with the client secret",
            idp.mint_with(good(), Mint::Hs256WithClientSecret),
        ),
        ("an algorithm not advertised", idp.mint_with(good(), Mint::Rs384)),
        (
            "crit header",
            idp.mint_raw(header(json!({"crit": ["exp"]})), good()),
        ),
        (
            "another issuer",
            signed(with("iss", json!("https://evil.example"))),
        ),
        ("no issuer", signed(without("iss"))),
        ("another audience", signed(with("aud", json!("someone-else")))),
        ("no audience", signed(without("aud"))),
        ("no iat", signed(without("iat"))),
        ("iat in the future", signed(with("iat", json!(now + 3600)))),
        ("iat long ago", signed(with("iat", json!(now - 86_400)))),
        ("expired", signed(with("exp", json!(now - 3600)))),
        ("no events", signed(without("events"))),
        (
            "events without the logout event",
            signed(with("events", json!({"other": {}}))),
        ),
        (
            "the event is not an object",
            signed(with("events", json!({BACKCHANNEL_LOGOUT_EVENT: true}))),
        ),
        (
            "events is a list",
            signed(with("events", json!([BACKCHANNEL_LOGOUT_EVENT]))),
        ),
        ("a nonce", signed(with("nonce", json!("n-1")))),
        ("neither sid nor sub", signed(neither)),
        ("no jti", signed(without("jti"))),
        ("an ID token", idp.mint(idp.default_claims("alice"))),
        ("not a JWT", "not-a-jwt".to_string()),
        ("empty", String::new()),
    ];
    for (what, token) in &cases {
        assert_eq!(logout(&s, token).await, 400, "{what}");
        assert!(works(&s, &jar).await, "{what}: nothing is revoked");
    }

    // Bodies that are not one logout token.
    let good_token = idp.mint_logout_token(Some("alice"), Some(&sid));
    let bodies = [
        ("no logout_token", "token=x".to_string()),
        (
            "two logout_tokens",
            format!("{}&{}", form(&good_token), form(&good_token)),
        ),
        (
            "a body past the limit",
            format!("logout_token={}", "a".repeat(100 * 1024)),
        ),
        ("bytes that are not a form", "\u{0}\u{1}%%%".to_string()),
    ];
    for (what, body) in bodies {
        let (status, cache, json) = post(&s, "app1.example.test", body).await;
        assert_eq!(status, 400, "{what}");
        assert_eq!(json, json!({"error": "invalid_request"}), "{what}");
        assert_eq!(cache.as_deref(), Some("no-store"), "{what}");
        assert!(works(&s, &jar).await, "{what}: nothing is revoked");
    }
    let m = metrics(&s).await;
    assert_eq!(counter(&m, "oidc_authz_logouts_total{kind=\"backchannel\"}"), 0);
    // The good token still works after all that.
    assert_eq!(logout(&s, &good_token).await, 200);
    assert!(!works(&s, &jar).await);
}

#[tokio::test]
async fn a_revoked_session_is_not_refreshed() {
    let s = stack().await;
    s.idp.set_token_ttl(0);
    let (jar, sid) = signed_in(&s, "alice").await;
    s.idp.set_token_ttl(3600);
    s.idp.reset_counters();
    let token = s.idp.mint_logout_token(None, Some(&sid));
    assert_eq!(logout(&s, &token).await, 200);
    assert!(!works(&s, &jar).await);
    assert_eq!(s.idp.refresh_requests(), 0);
}

#[tokio::test]
async fn sign_out_is_counted_as_a_logout() {
    let s = stack().await;
    let (jar, _) = signed_in(&s, "alice").await;
    let resp = http_client()
        .get(s.http_url("/oauth2/sign_out"))
        .header("host", "app1.example.test")
        .header("cookie", jar.header().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    let m = metrics(&s).await;
    assert_eq!(counter(&m, "oidc_authz_logouts_total{kind=\"sign_out\"}"), 1);
    assert_eq!(counter(&m, "oidc_authz_logouts_total{kind=\"backchannel\"}"), 0);
}

#[tokio::test]
async fn front_channel_logout_ends_the_browsers_session_of_that_sid_only() {
    let s = stack().await;
    let (jar, sid) = signed_in(&s, "alice").await;
    let get = |query: String, cookie: Option<String>| {
        let mut req = http_client()
            .get(s.http_url(&format!("/oauth2/frontchannel_logout?{query}")))
            .header("host", "app1.example.test");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send()
    };
    let enc = |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
    let iss = s.idp.issuer();
    // Another sid, another issuer, no cookie, no parameters: 200, and nothing ends.
    for (query, cookie) in [
        (format!("iss={}&sid=other", enc(&iss)), jar.header()),
        (
            format!("iss={}&sid={}", enc("https://evil.example"), enc(&sid)),
            jar.header(),
        ),
        (format!("iss={}&sid={}", enc(&iss), enc(&sid)), None),
        (String::new(), jar.header()),
    ] {
        let resp = get(query.clone(), cookie).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{query}");
        assert!(works(&s, &jar).await, "{query}");
    }
    let resp = get(format!("iss={}&sid={}", enc(&iss), enc(&sid)), jar.header())
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers().get("cache-control").unwrap().to_str().unwrap(),
        "no-store"
    );
    let cleared: Vec<String> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("_oidc_authz=;") && c.contains("Max-Age=0")),
        "{cleared:?}"
    );
    assert!(!works(&s, &jar).await, "a copy of the cookie no longer works");
    let m = metrics(&s).await;
    assert_eq!(counter(&m, "oidc_authz_logouts_total{kind=\"frontchannel\"}"), 1);
}
