//! API clients with `Authorization: Bearer <JWT>`: the good token, and every kind of bad one.
//! Also the JWKS cache: one fetch for a stampede, rate-limited refetches on unknown `kid`s.

use crate::harness::*;
use crate::support::idp::{IdpOptions, Mint, TestIdp};
use serde_json::json;

async fn stack() -> Stack {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let s = Stack::start(idp, BASIC_CONFIG).await;
    s.wait_ready().await;
    s
}

fn api(token: &str) -> Req {
    Req::api("GET", "https://api.example.test/v1/items").header("authorization", &format!("Bearer {token}"))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn a_good_bearer_token_is_allowed_and_passed_through() {
    let s = stack().await;
    let token = s.idp.mint(s.idp.default_claims("bob"));
    let a = s.check(api(&token)).await;
    assert!(a.is_allow(), "{a:?}");
    assert_eq!(a.upstream("x-auth-request-user").as_deref(), Some("bob"));
    assert_eq!(
        a.upstream("authorization"),
        None,
        "the client's own token passes through untouched"
    );
    s.stop().await;
}

#[tokio::test]
async fn no_token_gets_401_with_a_bearer_challenge() {
    let s = stack().await;
    let a = s
        .check(Req::api("GET", "https://api.example.test/v1/items"))
        .await;
    assert_eq!(a.status(), 401);
    assert_eq!(a.grpc_code(), 16);
    assert_eq!(
        a.denied_header("www-authenticate").as_deref(),
        Some("Bearer realm=\"corp\"")
    );
    let body: serde_json::Value = serde_json::from_str(&a.body()).unwrap();
    assert_eq!(body["error"], "unauthorized");
    s.stop().await;
}

#[tokio::test]
async fn xhr_from_a_page_gets_401_not_a_redirect() {
    let s = stack().await;
    let a = s
        .check(Req::browser("https://app1.example.test/api").header("x-requested-with", "XMLHttpRequest"))
        .await;
    assert_eq!(a.status(), 401);
    let mut r = Req::browser("https://app1.example.test/form");
    r.method = "POST".into();
    assert_eq!(s.check(r).await.status(), 401, "a POST is not a navigation");
    s.stop().await;
}

async fn assert_rejected(s: &Stack, token: &str, why: &str) {
    let a = s.check(api(token)).await;
    assert_eq!(a.status(), 401, "{why}: {}", a.body());
    assert_eq!(
        a.denied_header("www-authenticate").as_deref(),
        Some("Bearer realm=\"corp\", error=\"invalid_token\""),
        "{why}"
    );
}

#[tokio::test]
async fn every_forged_token_is_rejected() {
    let s = stack().await;
    for how in Mint::MUST_REJECT {
        let token = s.idp.mint_with(s.idp.default_claims("mallory"), how);
        assert_rejected(&s, &token, &format!("{how:?}")).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn wrong_claims_are_rejected() {
    let s = stack().await;
    let base = s.idp.default_claims("eve");
    let t = now();
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("wrong iss", json!({"iss": "http://127.0.0.1:1/other"})),
        (
            "iss with a trailing slash",
            json!({"iss": format!("{}/", s.idp.issuer())}),
        ),
        ("wrong aud", json!({"aud": ["someone-else"]})),
        (
            "several aud, azp of another client",
            json!({"aud": ["gateway", "other"], "azp": "other"}),
        ),
        (
            "several aud, no azp",
            json!({"aud": ["gateway", "other"], "azp": null}),
        ),
        ("expired", json!({"exp": t - 120, "iat": t - 3600})),
        ("nbf in the future", json!({"nbf": t + 300})),
        ("iat in the future", json!({"iat": t + 300})),
        ("no exp", json!({"exp": null})),
        ("no sub", json!({"sub": null})),
    ];
    for (why, patch) in cases {
        let mut claims = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        assert_rejected(&s, &s.idp.mint(claims), why).await;
    }
    s.stop().await;
}

#[tokio::test]
async fn garbage_authorization_headers_get_401_not_500() {
    let s = stack().await;
    for h in [
        "Bearer",
        "Bearer ",
        "Bearer a.b.c",
        "Bearer ....",
        "Bearer eyJ.eyJ.x",
        "Basic Zm9vOmJhcg==",
        &"x".repeat(20_000),
    ] {
        let a = s
            .check(Req::api("GET", "https://api.example.test/").header("authorization", h))
            .await;
        assert_eq!(a.status(), 401, "{h:.40}");
    }
    s.stop().await;
}

#[tokio::test]
async fn extra_audiences_are_accepted_on_bearer_tokens() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let cfg = BASIC_CONFIG.replace(
        "    domains: [\"*.example.test\"]",
        "    domains: [\"*.example.test\"]\n    audiences: [orders-api]",
    );
    let s = Stack::start(idp, &cfg).await;
    s.wait_ready().await;
    let mut claims = s.idp.default_claims("svc");
    claims["aud"] = json!("orders-api");
    claims.as_object_mut().unwrap().remove("azp");
    assert!(s.check(api(&s.idp.mint(claims))).await.is_allow());
    s.stop().await;
}

#[tokio::test]
async fn a_token_without_kid_is_accepted_only_when_the_jwks_has_one_key() {
    let s = stack().await;
    let token = s.idp.mint_with(s.idp.default_claims("k"), Mint::NoKid);
    assert!(s.check(api(&token)).await.is_allow(), "one key: no kid is fine");
    s.idp.add_key();
    // Wait out the refetch interval is not needed: a new kid triggers a fetch.
    let new_token = s.idp.mint(s.idp.default_claims("k2"));
    assert!(s.check(api(&new_token)).await.is_allow());
    let token = s.idp.mint_with(s.idp.default_claims("k3"), Mint::NoKid);
    assert_rejected(&s, &token, "two keys and no kid").await;
    s.stop().await;
}

#[tokio::test]
async fn a_stampede_on_a_new_kid_causes_one_jwks_fetch() {
    let s = stack().await;
    let before = s.idp.jwks_fetches();
    s.idp.add_key();
    let token = s.idp.mint(s.idp.default_claims("crowd"));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = s.client.clone();
        // Distinct tokens, so the verified-token cache cannot short-circuit.
        let mut claims = s.idp.default_claims("crowd");
        claims["jti"] = json!(format!("j{i}"));
        let t = if i == 0 { token.clone() } else { s.idp.mint(claims) };
        tasks.push(tokio::spawn(async move {
            let mut c = client;
            let r = c.check(api(&t).into_check()).await.unwrap().into_inner();
            r.status.map_or(-1, |st| st.code)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 0, "every check is allowed");
    }
    assert_eq!(
        s.idp.jwks_fetches() - before,
        1,
        "200 waiting checks, one JWKS fetch"
    );
    s.stop().await;
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_ten_seconds() {
    let s = stack().await;
    let before = s.idp.jwks_fetches();
    for i in 0..20 {
        let mut claims = s.idp.default_claims("x");
        claims["jti"] = json!(i);
        let token = s.idp.mint_with(claims, Mint::UnknownKid);
        assert_rejected(&s, &token, "unknown kid").await;
    }
    assert!(
        s.idp.jwks_fetches() - before <= 1,
        "fetched {} times",
        s.idp.jwks_fetches() - before
    );
    s.stop().await;
}

#[tokio::test]
async fn keys_unavailable_gives_503_never_allow() {
    let idp = TestIdp::start(IdpOptions {
        start_down: true,
        ..Default::default()
    })
    .await;
    let s = Stack::start(idp, BASIC_CONFIG).await;
    let token = s.idp.mint(s.idp.default_claims("bob"));
    let a = s.check(api(&token)).await;
    assert_eq!(a.status(), 503, "{}", a.body());
    assert!(a.denied_header("retry-after").is_some());
    s.stop().await;
}

#[tokio::test]
async fn verified_tokens_keep_working_while_the_idp_is_down() {
    let s = stack().await;
    let token = s.idp.mint(s.idp.default_claims("bob"));
    assert!(s.check(api(&token)).await.is_allow());
    s.idp.set_down(true);
    assert!(
        s.check(api(&token)).await.is_allow(),
        "cached keys and tokens outlive an outage"
    );
    let fresh = s.idp.mint(s.idp.default_claims("carol"));
    assert!(
        s.check(api(&fresh)).await.is_allow(),
        "stale keys are kept while the IdP is down"
    );
    s.stop().await;
}
