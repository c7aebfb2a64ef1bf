//! The rule-management API on the admin listener: every row of DESIGN.md's table, auth, bad
//! input that stores nothing, concurrent edits, restarts, and `Check` following each change.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::*;
use crate::support::idp::{IdpOptions, TestIdp};

const TOKEN: &str = "admin-token-for-tests";

fn store_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oidc-authz-admin-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("rules.yaml")
}

fn config(store: &str) -> String {
    BASIC_CONFIG
        .replace("rules_store: inline", &format!("rules_store: {store}"))
        .replace("session:", &format!("server:\n  admin_token: {TOKEN}\nsession:"))
}

async fn stack_with_store(store: &std::path::Path) -> Stack {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let s = Stack::start(idp, &config(&format!("file:{}", store.display()))).await;
    s.wait_ready().await;
    s
}

fn client() -> reqwest::Client {
    http_client()
}

async fn call(s: &Stack, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    admin_call(s, TOKEN, method, path, body).await
}

fn new_rule(name: &str, issuer: &str) -> Value {
    json!({
        "name": name,
        "type": "oidc",
        "issuer": issuer,
        "redirect_url": "https://ops.example.org/oauth2/callback",
        "client_id": "gateway",
        "client_secret": "s3cret-s3cret",
        "cookie_domain": ".example.org",
        "scope": "openid;email",
        "domains": ["ops.example.org"],
        "authorization": {"mode": "blacklist", "conditions": [{"domain": "ops.example.org", "path": "/admin", "match": "prefix"}]}
    })
}

#[tokio::test]
async fn every_call_in_the_table_behaves_as_written() {
    let store = store_path("table");
    let s = stack_with_store(&store).await;
    let issuer = s.idp.issuer();

    // The config's rules were imported into the empty store.
    let (st, list) = call(&s, "GET", "/api/v1/rules", None).await;
    assert_eq!(st, 200);
    assert_eq!(list["rules"][0]["name"], "corp");
    assert_eq!(
        list["rules"][0]["client_secret"], "******",
        "secrets are redacted"
    );
    assert!(
        std::fs::read_to_string(&store).unwrap().contains("s3cret-s3cret"),
        "the store keeps the secret"
    );

    let (st, rule) = call(&s, "POST", "/api/v1/rules", Some(new_rule("ops", &issuer))).await;
    assert_eq!(st, 201, "{rule}");
    assert_eq!(rule["name"], "ops");
    assert_eq!(rule["client_secret"], "******");
    let (st, _) = call(&s, "POST", "/api/v1/rules", Some(new_rule("ops", &issuer))).await;
    assert_eq!(st, 409, "duplicate name");

    let (st, rule) = call(&s, "GET", "/api/v1/rules/ops", None).await;
    assert_eq!((st, rule["issuer"].as_str()), (200, Some(issuer.as_str())));
    assert_eq!(call(&s, "GET", "/api/v1/rules/nope", None).await.0, 404);

    // PUT replaces the rule; a redacted or omitted secret keeps the stored one.
    let mut edited = new_rule("ops", &issuer);
    edited["client_secret"] = json!("******");
    edited["scope"] = json!("openid profile");
    let (st, rule) = call(&s, "PUT", "/api/v1/rules/ops", Some(edited.clone())).await;
    assert_eq!(st, 200, "{rule}");
    assert_eq!(rule["scope"], "openid profile");
    edited.as_object_mut().unwrap().remove("client_secret");
    assert_eq!(call(&s, "PUT", "/api/v1/rules/ops", Some(edited)).await.0, 200);
    let stored = std::fs::read_to_string(&store).unwrap();
    assert!(!stored.contains("******"), "the redaction marker is never stored");
    assert_eq!(
        stored.matches("s3cret-s3cret").count(),
        2,
        "both rules keep their secret"
    );

    let (st, rule) = call(
        &s,
        "POST",
        "/api/v1/rules/ops/conditions",
        Some(json!({"path": "/debug", "match": "exact"})),
    )
    .await;
    assert_eq!(st, 201);
    assert_eq!(rule["authorization"]["conditions"][1]["path"], "/debug");

    let (st, e) = call(
        &s,
        "GET",
        "/api/v1/explain?url=https%3A%2F%2Fops.example.org%2Fadmin%2Fx&method=GET",
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        e,
        json!({"action": "login", "rule": "ops", "condition": 0, "reason": e["reason"]})
    );
    assert!(e["reason"].as_str().unwrap().contains("blacklist"));

    assert_eq!(
        call(&s, "DELETE", "/api/v1/rules/ops", None).await.0,
        409,
        "enabled rules cannot be deleted"
    );
    let (st, rule) = call(&s, "POST", "/api/v1/rules/ops/disable", None).await;
    assert_eq!((st, &rule["enabled"]), (200, &json!(false)));
    let (st, rule) = call(&s, "POST", "/api/v1/rules/ops/enable", None).await;
    assert_eq!((st, &rule["enabled"]), (200, &json!(true)));
    call(&s, "POST", "/api/v1/rules/ops/disable", None).await;
    assert_eq!(call(&s, "DELETE", "/api/v1/rules/ops", None).await.0, 204);
    assert_eq!(call(&s, "GET", "/api/v1/rules/ops", None).await.0, 404);
    assert_eq!(call(&s, "POST", "/api/v1/rules/ops/enable", None).await.0, 404);
    s.stop().await;
}

#[tokio::test]
async fn the_api_needs_the_admin_token() {
    let store = store_path("auth");
    let s = stack_with_store(&store).await;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic YWRtaW4="),
        Some(&format!("Bearer {TOKEN}x")[..]),
    ] {
        let mut req = client().get(s.admin_url("/api/v1/rules"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        assert_eq!(req.send().await.unwrap().status().as_u16(), 401, "{auth:?}");
    }
    // The console page itself loads without the token (it asks for it).
    let page = client().get(s.admin_url("/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    s.stop().await;
}

#[tokio::test]
async fn bad_input_gets_4xx_and_stores_nothing() {
    let store = store_path("fuzz");
    let s = stack_with_store(&store).await;
    let issuer = s.idp.issuer();
    let before = std::fs::read(&store).unwrap();
    let mut bad_regex = new_rule("x1", &issuer);
    bad_regex["authorization"]["conditions"][0] = json!({"path": "(", "match": "regex"});
    let mut bad_redirect = new_rule("x2", &issuer);
    bad_redirect["redirect_url"] = json!("https://ops.example.org/callback");
    let mut unknown = new_rule("x3", &issuer);
    unknown["colour"] = json!("blue");
    let mut wrong_type = new_rule("x4", &issuer);
    wrong_type["enabled"] = json!("yes");
    let mut bad_name = new_rule("Bad_Name", &issuer);
    bad_name["name"] = json!("Bad_Name");
    let mut no_secret = new_rule("x5", &issuer);
    no_secret.as_object_mut().unwrap().remove("client_secret");
    let cases: Vec<(Value, &str)> = vec![
        (bad_regex, "authorization.conditions[0].path"),
        (bad_redirect, "redirect_url"),
        (unknown, "colour"),
        (wrong_type, "enabled"),
        (bad_name, "name"),
        (no_secret, "client_secret"),
    ];
    for (body, field) in cases {
        let (st, e) = call(&s, "POST", "/api/v1/rules", Some(body)).await;
        assert_eq!(st, 400, "{e}");
        assert_eq!(e["field"], field, "{e}");
        assert!(e["error"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (st, e) = call(
        &s,
        "POST",
        "/api/v1/rules/corp/conditions",
        Some(json!({"path": "x", "match": "exact"})),
    )
    .await;
    assert_eq!(
        (st, e["field"].as_str()),
        (400, Some("authorization.conditions[1].path"))
    );

    // Malformed JSON, wrong top-level types, and a huge body.
    for raw in ["{", "[]", "null", "\"x\"", "{\"name\": 5}", "\u{0}"] {
        let r = client()
            .post(s.admin_url("/api/v1/rules"))
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{raw:?}");
    }
    let huge = format!("{{\"name\": \"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let r = client()
        .post(s.admin_url("/api/v1/rules"))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(std::fs::read(&store).unwrap(), before, "nothing was stored");
    s.stop().await;
}

#[tokio::test]
async fn an_inline_store_is_read_only() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let s = Stack::start(idp, &config("inline")).await;
    let (st, list) = call(&s, "GET", "/api/v1/rules", None).await;
    assert_eq!((st, list["rules"].as_array().map(Vec::len)), (200, Some(1)));
    let (st, e) = call(&s, "POST", "/api/v1/rules/corp/disable", None).await;
    assert_eq!(st, 409);
    assert!(e["error"].as_str().unwrap().contains("read-only"));
    s.stop().await;
}

#[tokio::test]
async fn concurrent_edits_from_two_clients_lose_nothing() {
    let store = store_path("concurrent");
    let s = stack_with_store(&store).await;
    let add = |who: &'static str| {
        let url = s.admin_url("/api/v1/rules/corp/conditions");
        async move {
            for i in 0..15 {
                let r = client()
                    .post(&url)
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .json(&json!({"path": format!("/{who}/{i}"), "match": "exact"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 201);
            }
        }
    };
    tokio::join!(add("a"), add("b"));
    let (_, rule) = call(&s, "GET", "/api/v1/rules/corp", None).await;
    assert_eq!(
        rule["authorization"]["conditions"].as_array().unwrap().len(),
        1 + 30
    );
    s.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_every_acknowledged_change() {
    let store = store_path("restart");
    let s = stack_with_store(&store).await;
    let issuer = s.idp.issuer();
    assert_eq!(
        call(&s, "POST", "/api/v1/rules", Some(new_rule("ops", &issuer)))
            .await
            .0,
        201
    );
    assert_eq!(call(&s, "POST", "/api/v1/rules/corp/disable", None).await.0, 200);
    let (_, before) = call(&s, "GET", "/api/v1/rules", None).await;
    let idp = s.idp.clone();
    s.stop().await;

    // The config still lists only `corp`, enabled: the store wins.
    let s2 = Stack::start(idp, &config(&format!("file:{}", store.display()))).await;
    let (_, after) = call(&s2, "GET", "/api/v1/rules", None).await;
    assert_eq!(before, after);
    assert_eq!(after["rules"][0]["enabled"], false);
    s2.stop().await;
}

#[tokio::test]
async fn check_follows_every_change_at_once() {
    let store = store_path("follow");
    let s = stack_with_store(&store).await;
    let url = "https://app1.example.test/reports";
    assert_eq!(
        s.check(Req::browser(url)).await.status(),
        302,
        "corp protects app1"
    );

    assert_eq!(call(&s, "POST", "/api/v1/rules/corp/disable", None).await.0, 200);
    assert!(
        s.check(Req::browser(url)).await.is_allow(),
        "disabled: default_action allow"
    );

    assert_eq!(call(&s, "POST", "/api/v1/rules/corp/enable", None).await.0, 200);
    assert_eq!(
        s.check(Req::browser(url)).await.status(),
        302,
        "enabled again: login"
    );

    let (st, _) = call(
        &s,
        "POST",
        "/api/v1/rules/corp/conditions",
        Some(json!({"path": "/reports", "match": "prefix"})),
    )
    .await;
    assert_eq!(st, 201);
    assert!(
        s.check(Req::browser(url)).await.is_allow(),
        "the new whitelist condition makes it public"
    );
    s.stop().await;
}

#[tokio::test]
async fn an_external_edit_of_the_store_is_reloaded() {
    let store = store_path("external");
    let s = stack_with_store(&store).await;
    let url = "https://app1.example.test/x";
    assert_eq!(s.check(Req::browser(url)).await.status(), 302);
    let text = std::fs::read_to_string(&store).unwrap();
    // Ensure a different mtime even on coarse clocks.
    tokio::time::sleep(Duration::from_millis(20)).await;
    std::fs::write(
        &store,
        text.replacen("\"enabled\": true", "\"enabled\": false", 1),
    )
    .unwrap();
    let mut followed = false;
    for _ in 0..60 {
        if s.check(Req::browser(url)).await.is_allow() {
            followed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(followed, "the edit is picked up within seconds");
    // A broken edit is refused and the running rules are kept.
    std::fs::write(&store, "rules: [ {name: BAD} ]").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(s.check(Req::browser(url)).await.is_allow());
    s.stop().await;
}

#[tokio::test]
async fn the_grpc_admin_service_offers_the_same_operations() {
    use oidc_authz::admin_api::v1::rule_service_client::RuleServiceClient;
    use oidc_authz::admin_api::v1::{ExplainRequest, ListRulesRequest, RuleName};

    let store = store_path("grpc");
    let s = stack_with_store(&store).await;
    let channel = tonic::transport::Channel::from_shared(s.admin_url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = RuleServiceClient::new(channel);
    let with_token = |msg| {
        let mut r = tonic::Request::new(msg);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
        r
    };
    let denied = c
        .list_rules(tonic::Request::new(ListRulesRequest {}))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);
    let list = c
        .list_rules(with_token(ListRulesRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.rules[0].name, "corp");
    assert_eq!(list.rules[0].client_secret, "******");
    let mut c2 = c.clone();
    let r = c2
        .disable_rule(with_token_name(&format!("Bearer {TOKEN}"), "corp"))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.enabled);
    let e = c
        .explain({
            let mut r = tonic::Request::new(ExplainRequest {
                url: "https://app1.example.test/".into(),
                method: "GET".into(),
            });
            r.metadata_mut()
                .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
            r
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(e.action, "allow", "corp is disabled now");
    let err = c
        .delete_rule(with_token_name(&format!("Bearer {TOKEN}"), "nope"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    s.stop().await;

    fn with_token_name(token: &str, name: &str) -> tonic::Request<RuleName> {
        let mut r = tonic::Request::new(RuleName { name: name.into() });
        r.metadata_mut().insert("authorization", token.parse().unwrap());
        r
    }
}

#[tokio::test]
async fn every_error_is_json_and_unknown_paths_are_404() {
    let store = store_path("errors");
    let s = stack_with_store(&store).await;
    let auth = format!("Bearer {TOKEN}");
    let big = vec![b' '; 70 * 1024];
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (
            client()
                .post(s.admin_url("/api/v1/rules"))
                .header("authorization", &auth)
                .body(big),
            413,
        ),
        (
            client()
                .patch(s.admin_url("/api/v1/rules"))
                .header("authorization", &auth),
            405,
        ),
        (
            client()
                .get(s.admin_url("/api/v1/nothing"))
                .header("authorization", &auth),
            404,
        ),
        (client().get(s.admin_url("/foo")), 404),
        (
            client()
                .post(s.admin_url("/api/v1/rules"))
                .header("authorization", &auth)
                .body("{\"name\": \"x\"}"),
            400,
        ),
        (
            client()
                .post(s.admin_url("/api/v1/rules"))
                .header("authorization", &auth)
                .body("{} trailing"),
            400,
        ),
    ];
    for (req, status) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status);
        let body: Value = r.json().await.expect("a JSON error body");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
    }
    let (_, e) = call(&s, "POST", "/api/v1/rules", Some(json!({"name": "x"}))).await;
    assert_eq!(e["field"], "issuer", "a missing field is named");
    let mut renamed = new_rule("corp2", &s.idp.issuer());
    renamed["name"] = json!("corp2");
    let (st, e) = call(&s, "PUT", "/api/v1/rules/corp", Some(renamed)).await;
    assert_eq!(
        (st, e["field"].as_str()),
        (400, Some("name")),
        "no silent renames"
    );
    let page = client().get(s.admin_url("/")).send().await.unwrap();
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    s.stop().await;
}
