//! Issue 7's path and host bypasses, through the gRPC `Check` as Envoy calls it: paths a backend
//! reads in more than one way are never public, blacklists see every reading, and hosts that are
//! not host names are answered 400 before any rule is looked at.

use crate::harness::{Req, Stack};
use crate::support::idp::{IdpOptions, TestIdp};

/// A whitelist rule for every host of example.test with a public prefix, and a blacklist rule
/// (exact and prefix) scoped to admin.example.test, under `default_action: allow`.
const CONFIG: &str = r#"
session:
  secrets: ["{secret}"]
rules_store: inline
default_action: allow
rules:
  - name: admin
    issuer: {issuer}
    redirect_url: https://admin.example.test/oauth2/callback
    client_id: {client_id}
    client_secret: {client_secret}
    domains: [admin.example.test]
    authorization:
      mode: blacklist
      conditions:
        - { path: /admin, match: prefix }
        - { path: /secret, match: exact }
  - name: corp
    issuer: {issuer}
    redirect_url: https://app1.example.test/oauth2/callback
    client_id: {client_id}
    client_secret: {client_secret}
    domains: ["app1.example.test"]
    authorization:
      mode: whitelist
      conditions:
        - { path: /public, match: prefix }
"#;

async fn stack() -> Stack {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let stack = Stack::start(idp, CONFIG).await;
    stack.wait_ready().await;
    stack
}

fn api(host: &str, path: &str) -> Req {
    let mut req = Req::api("GET", "https://placeholder.example.test/");
    req.host = host.to_string();
    req.path = path.to_string();
    req
}

#[tokio::test]
async fn segment_parameters_and_double_encoding_never_reach_a_whitelisted_backend_unauthenticated() {
    let stack = stack().await;
    assert!(stack
        .check(api("app1.example.test", "/public/logo.png"))
        .await
        .is_allow());
    for path in [
        "/public/%2e%2e;/admin",
        "/public/..;/admin",
        "/public/..;x/admin",
        "/public/..%3B/admin",
        "/public/..%252fadmin",
        "/public/%252e%252e/admin",
    ] {
        let answer = stack.check(api("app1.example.test", path)).await;
        assert!(!answer.is_allow(), "{path} was allowed");
        assert_eq!(answer.status(), 401, "{path}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn blacklist_conditions_cannot_be_stepped_around() {
    let stack = stack().await;
    assert!(stack
        .check(api("admin.example.test", "/elsewhere"))
        .await
        .is_allow());
    for path in [
        "/admin",
        "/x/%2e%2e;/admin",
        "/x/..;/admin",
        "/admin;x",
        "/;x/admin",
        "/x/..%252fadmin",
        "/secret",
        "/secret/",
        "/secret;x",
        "/;x/secret",
    ] {
        let answer = stack.check(api("admin.example.test", path)).await;
        assert!(!answer.is_allow(), "{path} was allowed");
        assert_eq!(answer.status(), 401, "{path}");
    }
    stack.stop().await;
}

#[tokio::test]
async fn hosts_that_are_not_host_names_are_answered_400_never_allowed() {
    let stack = stack().await;
    for host in [
        "x@admin.example.test",
        "admin.example.test..",
        "admin.example.test:443:1",
        "admin%2eexample.test",
        "admin example.test",
        "admin..example.test",
        "admin.example.test:https",
        "",
    ] {
        let answer = stack.check(api(host, "/admin")).await;
        assert!(!answer.is_allow(), "{host:?} was allowed");
        assert_eq!(answer.status(), 400, "{host:?}");
        let body: serde_json::Value = serde_json::from_str(&answer.body()).expect("a JSON body");
        assert_eq!(body["error"], "bad_request", "{host:?}");
        let content_types = answer.denied_header("content-type");
        assert_eq!(content_types.as_deref(), Some("application/json"), "{host:?}");
    }
    // One trailing dot is the same host; a port is fine.
    for host in ["admin.example.test.", "ADMIN.example.test:8443"] {
        assert_eq!(stack.check(api(host, "/admin")).await.status(), 401, "{host:?}");
    }
    let metrics = crate::harness::http_client()
        .get(stack.http_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    assert!(
        metrics.contains("oidc_authz_check_total{rule=\"\",outcome=\"bad_request\"} 8"),
        "{metrics}"
    );
    stack.stop().await;
}

#[tokio::test]
async fn oauth2_endpoints_refuse_hosts_that_are_not_host_names() {
    let stack = stack().await;
    let client = crate::harness::http_client();
    for host in [
        "x@app1.example.test",
        "app1.example.test..",
        "app1.example.test:443:1",
    ] {
        for path in [
            "/oauth2/start?rd=/",
            "/oauth2/userinfo",
            "/oauth2/callback?code=a&state=b",
        ] {
            let response = client
                .get(stack.http_url(path))
                .header("host", host)
                .send()
                .await
                .expect("an answer");
            assert_eq!(response.status().as_u16(), 400, "{host} {path}");
            let body: serde_json::Value = response.json().await.expect("a JSON body");
            assert_eq!(body["error"], "bad_request", "{host} {path}");
        }
    }
    let health = client
        .get(stack.http_url("/healthz"))
        .send()
        .await
        .expect("an answer");
    assert_eq!(health.status().as_u16(), 200);
    stack.stop().await;
}
