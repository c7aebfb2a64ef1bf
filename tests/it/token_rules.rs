//! Issue 7, "Close the bypasses", through the running server: logout tokens and `crit` headers
//! never sign in (as a bearer token or as the ID token at the callback), an email only counts
//! when it is verified (or the rule says unverified ones do), a group holding `,` never reaches
//! the header, a short admin token is refused, and the rule API never hands a stored client
//! secret to a new issuer.

use serde_json::{json, Value};

use crate::harness::*;
use crate::support::idp::{IdpOptions, TestIdp, BACKCHANNEL_LOGOUT_EVENT};

async fn stack_with(template: &str) -> Stack {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let s = Stack::start(idp, template).await;
    s.wait_ready().await;
    s
}

fn api(token: &str) -> Req {
    Req::api("GET", "https://api.example.test/v1/items").header("authorization", &format!("Bearer {token}"))
}

/// A header like the IdP's own (RS256, current kid) with `extra` merged in.
fn header(s: &Stack, extra: Value) -> Value {
    let mut h = json!({"alg": "RS256", "typ": "JWT", "kid": s.idp.current_kid()});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        h[k] = v;
    }
    h
}

fn logout_event() -> Value {
    json!({ BACKCHANNEL_LOGOUT_EVENT: {} })
}

// ---------------------------------------------------------------------------------------------
// 1. `crit`, `typ: logout+jwt`, `events`

/// Tokens that are correctly signed by the rule's issuer, for its client, unexpired, with a
/// subject: each would be a valid ID or bearer token but for the one thing named.
fn not_id_tokens(s: &Stack, claims: &Value) -> Vec<(&'static str, String)> {
    let mut with_events = claims.clone();
    with_events["events"] = logout_event();
    vec![
        (
            "crit header",
            s.idp
                .mint_raw(header(s, json!({"crit": ["exp"], "exp": 1})), claims.clone()),
        ),
        (
            "typ logout+jwt",
            s.idp
                .mint_raw(header(s, json!({"typ": "logout+jwt"})), claims.clone()),
        ),
        (
            "typ Logout+JWT",
            s.idp
                .mint_raw(header(s, json!({"typ": "Logout+JWT"})), claims.clone()),
        ),
        (
            "typ application/logout+jwt",
            s.idp.mint_raw(
                header(s, json!({"typ": "application/logout+jwt"})),
                claims.clone(),
            ),
        ),
        ("events claim", s.idp.mint(with_events)),
    ]
}

#[tokio::test]
async fn logout_tokens_and_crit_headers_are_refused_as_bearer_tokens() {
    let s = stack_with(BASIC_CONFIG).await;
    // The same claims with a plain header are a good token.
    let claims = s.idp.default_claims("mallory");
    assert!(s.check(api(&s.idp.mint(claims.clone()))).await.is_allow());

    for (why, token) in not_id_tokens(&s, &claims) {
        let a = s.check(api(&token)).await;
        assert_eq!(a.status(), 401, "{why}: {}", a.body());
        assert_eq!(
            a.denied_header("www-authenticate").as_deref(),
            Some("Bearer realm=\"corp\", error=\"invalid_token\""),
            "{why}"
        );
    }
    // A real back-channel logout token for a user (sub, aud, iss, exp all fine) is no credential.
    let logout = s.idp.mint_logout_token(Some("mallory"), Some("sid-1"));
    let a = s.check(api(&logout)).await;
    assert_eq!(a.status(), 401, "logout token: {}", a.body());
    assert!(a.body().contains("logout token"), "{}", a.body());
    s.stop().await;
}

/// Starts a browser login, makes the IdP answer `id_token` (built from the login's nonce) at
/// the token endpoint, and completes the callback inside Check.
async fn callback_with(s: &Stack, id_token: impl Fn(&str) -> String) -> (Answer, Jar) {
    let mut jar = Jar::default();
    let first = s.check(Req::browser("https://app1.example.test/")).await;
    assert_eq!(first.status(), 302, "{}", first.body());
    jar.apply(&first.set_cookies());
    let nonce = query_param(&first.location(), "nonce").expect("a nonce in the login URL");
    s.idp.set_id_token_override(Some(id_token(&nonce)));
    let callback = idp_approve(&first.location()).await;
    let done = s.check(Req::browser(&callback).cookies(&jar)).await;
    jar.apply(&done.set_cookies());
    s.idp.set_id_token_override(None);
    (done, jar)
}

#[tokio::test]
async fn logout_tokens_and_crit_headers_are_refused_as_id_tokens_at_the_callback() {
    let s = stack_with(BASIC_CONFIG).await;
    let claims_for = |nonce: &str| {
        let mut c = s.idp.default_claims("alice");
        c["nonce"] = json!(nonce);
        c
    };
    // A plain header with the same claims completes the login.
    let (done, jar) = callback_with(&s, |n| s.idp.mint(claims_for(n))).await;
    assert_eq!(done.status(), 302, "{}", done.body());
    assert!(jar.get("_oidc_authz").is_some());

    let kinds = [
        "crit header",
        "typ logout+jwt",
        "typ Logout+JWT",
        "typ application/logout+jwt",
        "events claim",
    ];
    for (i, why) in kinds.into_iter().enumerate() {
        let (done, jar) = callback_with(&s, |n| not_id_tokens(&s, &claims_for(n)).remove(i).1).await;
        assert_eq!(done.status(), 403, "{why}: {}", done.body());
        assert!(
            done.denied_header("content-type")
                .is_some_and(|c| c.starts_with("text/html")),
            "{why}: a page"
        );
        assert!(done.body().contains("rejected"), "{why}: {}", done.body());
        assert!(jar.get("_oidc_authz").is_none(), "{why}: no session");
        assert!(
            !done.set_cookies().iter().any(|c| c.starts_with("_oidc_authz=")),
            "{why}: no session cookie"
        );
    }
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. `email_verified: false` and `allow_unverified_email`

/// BASIC_CONFIG with extra keys on the `corp` rule (YAML at the rule's indentation).
fn with_rule_keys(keys: &str) -> String {
    BASIC_CONFIG.replace(
        "    domains: [\"*.example.test\"]",
        &format!("    domains: [\"*.example.test\"]\n{keys}"),
    )
}

fn unverified(s: &Stack, sub: &str, verified: Value) -> String {
    let mut c = s.idp.default_claims(sub);
    c["email_verified"] = verified;
    s.idp.mint(c)
}

#[tokio::test]
async fn an_unverified_email_does_not_satisfy_allowed_email_domains_or_emails() {
    let s = stack_with(&with_rule_keys("    allowed: { email_domains: [example.com] }")).await;
    assert!(
        s.check(api(&unverified(&s, "bob", json!(true)))).await.is_allow(),
        "a verified email of the domain is allowed"
    );
    for verified in [json!(false), json!("false")] {
        let a = s.check(api(&unverified(&s, "bob", verified.clone()))).await;
        assert_eq!(a.status(), 403, "email_verified {verified}: {}", a.body());
        assert!(a.body().contains("allowed.email_domains"), "{}", a.body());
    }
    s.stop().await;

    let s = stack_with(&with_rule_keys("    allowed: { emails: [bob@example.com] }")).await;
    let a = s.check(api(&unverified(&s, "bob", json!(false)))).await;
    assert_eq!(a.status(), 403, "{}", a.body());
    assert!(a.body().contains("allowed.emails"), "{}", a.body());
    s.stop().await;
}

#[tokio::test]
async fn allow_unverified_email_lets_an_unverified_email_count() {
    let s = stack_with(&with_rule_keys(
        "    allowed: { email_domains: [example.com] }\n    allow_unverified_email: true",
    ))
    .await;
    let a = s.check(api(&unverified(&s, "bob", json!(false)))).await;
    assert!(a.is_allow(), "{a:?}");
    assert_eq!(
        a.upstream("x-auth-request-email").as_deref(),
        Some("bob@example.com")
    );
    s.stop().await;
}

#[tokio::test]
async fn an_unverified_email_is_not_sent_upstream_nor_shown_by_userinfo() {
    let s = stack_with(BASIC_CONFIG).await;
    // Bearer token.
    for verified in [json!(false), json!("false")] {
        let a = s
            .check(
                api(&unverified(&s, "bob", verified.clone()))
                    .header("x-auth-request-email", "ceo@example.com"),
            )
            .await;
        assert!(a.is_allow(), "{a:?}");
        assert_eq!(a.upstream("x-auth-request-user").as_deref(), Some("bob"));
        assert_eq!(
            a.upstream("x-auth-request-email"),
            None,
            "email_verified {verified}: no email header"
        );
        assert!(
            a.removed().iter().any(|h| h == "x-auth-request-email"),
            "the client's own email header is removed"
        );
    }
    let a = s.check(api(&unverified(&s, "bob", json!(true)))).await;
    assert_eq!(
        a.upstream("x-auth-request-email").as_deref(),
        Some("bob@example.com")
    );

    // Session from a browser login whose ID token says email_verified: false.
    s.idp.set_extra_claims(json!({"email_verified": false}));
    let mut jar = Jar::default();
    let done = login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    assert_eq!(done.status(), 302, "{}", done.body());
    let a = s
        .check(Req::browser("https://app1.example.test/").cookies(&jar))
        .await;
    assert!(a.is_allow(), "{a:?}");
    assert_eq!(a.upstream("x-auth-request-user").as_deref(), Some("alice"));
    assert_eq!(a.upstream("x-auth-request-email"), None);
    let info: Value = http_client()
        .get(s.http_url("/oauth2/userinfo"))
        .header("host", "app1.example.test")
        .header("cookie", jar.header().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["sub"], "alice");
    assert_eq!(info["email"], Value::Null, "{info}");
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. groups

#[tokio::test]
async fn a_string_groups_claim_holding_a_comma_never_reaches_the_header() {
    let s = stack_with(BASIC_CONFIG).await;
    let mut c = s.idp.default_claims("bob");
    c["groups"] = json!("admins,ops");
    let a = s
        .check(api(&s.idp.mint(c.clone())).header("x-auth-request-groups", "admins"))
        .await;
    assert!(a.is_allow(), "{a:?}");
    assert_eq!(
        a.upstream("x-auth-request-groups"),
        None,
        "one group `admins,ops` would read as two"
    );
    assert!(a.removed().iter().any(|h| h == "x-auth-request-groups"));

    c["groups"] = json!("admins");
    let a = s.check(api(&s.idp.mint(c.clone()))).await;
    assert_eq!(a.upstream("x-auth-request-groups").as_deref(), Some("admins"));

    c["groups"] = json!(["ops", "admins,ops", "dev"]);
    let a = s.check(api(&s.idp.mint(c))).await;
    assert_eq!(a.upstream("x-auth-request-groups").as_deref(), Some("ops,dev"));
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. admin token length (the CLI, as CI runs it)

#[test]
fn a_short_admin_token_is_refused_by_validate_naming_file_and_field() {
    let path = "tests/configs/invalid/short-admin-token.yaml";
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oidc-authz"))
        .args(["validate", "--config", path])
        .env("OIDC_AUTHZ_ADMIN_TOKEN", "ci-admin-token-ci-admin-token-0000")
        .env(
            "OIDC_AUTHZ_SESSION_SECRET",
            "ci-session-secret-0123456789abcdef0123456789abcdef",
        )
        .env("CORP_CLIENT_SECRET", "ci-client-secret")
        .output()
        .expect("binary runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(path), "{err}");
    assert!(err.contains("field \"server.admin_token\""), "{err}");
    assert!(err.contains("16 characters"), "{err}");
    assert!(!err.contains("`admin-token`"), "never the token: {err}");
}

// ---------------------------------------------------------------------------------------------
// 6. the rule API keeps a stored secret only for the same issuer, discovery URL and client

const ADMIN_TOKEN: &str = "token-rules-admin-token";

fn store_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("oidc-authz-token-rules-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("rules.yaml")
}

async fn admin_stack(store: &std::path::Path) -> Stack {
    let cfg = BASIC_CONFIG
        .replace(
            "rules_store: inline",
            &format!("rules_store: file:{}", store.display()),
        )
        .replace(
            "session:",
            &format!("server:\n  admin_token: {ADMIN_TOKEN}\nsession:"),
        );
    stack_with(&cfg).await
}

async fn call(s: &Stack, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    admin_call(s, ADMIN_TOKEN, method, path, body).await
}

#[tokio::test]
async fn moving_a_rule_to_another_issuer_or_client_needs_the_secret_again() {
    let store = store_path("rest");
    let s = admin_stack(&store).await;
    let secret = s.idp.client_secret();
    let (st, corp) = call(&s, "GET", "/api/v1/rules/corp", None).await;
    assert_eq!(st, 200);
    assert_eq!(corp["client_secret"], "******");
    let before = std::fs::read_to_string(&store).unwrap();
    assert!(before.contains(&secret));

    let changes = [
        ("issuer", json!("http://127.0.0.66:9")),
        (
            "discovery_url",
            json!("http://127.0.0.66:9/.well-known/openid-configuration"),
        ),
        ("client_id", json!("someone-else")),
    ];
    for (field, value) in &changes {
        for secret_sent in [None, Some("******"), Some("")] {
            let mut edited = corp.clone();
            edited[*field] = value.clone();
            match secret_sent {
                Some(v) => edited["client_secret"] = json!(v),
                None => {
                    edited.as_object_mut().unwrap().remove("client_secret");
                }
            }
            let (st, e) = call(&s, "PUT", "/api/v1/rules/corp", Some(edited)).await;
            assert_eq!(st, 400, "{field} changed, secret {secret_sent:?}: {e}");
            assert_eq!(e["field"], "client_secret", "{e}");
            assert!(e["error"].as_str().unwrap().contains(field), "{e}");
            assert_eq!(
                std::fs::read_to_string(&store).unwrap(),
                before,
                "nothing is stored"
            );
            let (_, now) = call(&s, "GET", "/api/v1/rules/corp", None).await;
            assert_eq!(now, corp, "the rule is unchanged");
        }
    }

    // A blank client_id or issuer is reported as such (it is not a move to another client).
    for field in ["client_id", "issuer"] {
        let mut edited = corp.clone();
        edited[field] = json!("");
        let (st, e) = call(&s, "PUT", "/api/v1/rules/corp", Some(edited)).await;
        assert_eq!(st, 400, "{e}");
        assert_eq!(e["field"], field, "{e}");
        assert_eq!(
            std::fs::read_to_string(&store).unwrap(),
            before,
            "nothing is stored"
        );
    }

    // The same edits with a new secret are accepted and store that secret.
    let (field, value) = &changes[0];
    let mut edited = corp.clone();
    edited[*field] = value.clone();
    edited["client_secret"] = json!("a-brand-new-secret");
    let (st, rule) = call(&s, "PUT", "/api/v1/rules/corp", Some(edited)).await;
    assert_eq!(st, 200, "{rule}");
    assert_eq!(rule["issuer"], "http://127.0.0.66:9");
    let stored = std::fs::read_to_string(&store).unwrap();
    assert!(stored.contains("a-brand-new-secret"));
    assert!(!stored.contains(&secret), "the old secret is gone");

    // Other edits still keep the stored secret.
    let (_, corp) = call(&s, "GET", "/api/v1/rules/corp", None).await;
    let mut edited = corp.clone();
    edited["scope"] = json!("openid profile");
    let (st, rule) = call(&s, "PUT", "/api/v1/rules/corp", Some(edited)).await;
    assert_eq!(st, 200, "{rule}");
    assert!(std::fs::read_to_string(&store)
        .unwrap()
        .contains("a-brand-new-secret"));
    s.stop().await;
}

fn authed<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {ADMIN_TOKEN}").parse().unwrap());
    r
}

#[tokio::test]
async fn the_grpc_update_refuses_a_new_issuer_without_the_secret_too() {
    use oidc_authz::admin_api::v1::rule_service_client::RuleServiceClient;
    use oidc_authz::admin_api::v1::{GetRuleRequest, UpdateRuleRequest};

    let store = store_path("grpc");
    let s = admin_stack(&store).await;
    let before = std::fs::read_to_string(&store).unwrap();
    let channel = tonic::transport::Channel::from_shared(s.admin_url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = RuleServiceClient::new(channel);
    let mut rule = c
        .get_rule(authed(GetRuleRequest { name: "corp".into() }))
        .await
        .unwrap()
        .into_inner();
    rule.issuer = "http://127.0.0.66:9".into();
    let err = c
        .update_rule(authed(UpdateRuleRequest {
            name: "corp".into(),
            rule: Some(rule.clone()),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("client_secret:"), "{err:?}");
    assert_eq!(
        std::fs::read_to_string(&store).unwrap(),
        before,
        "nothing is stored"
    );
    // allow_unverified_email goes through the gRPC API as well.
    rule.client_secret = "a-brand-new-secret".into();
    rule.allow_unverified_email = true;
    let saved = c
        .update_rule(authed(UpdateRuleRequest {
            name: "corp".into(),
            rule: Some(rule),
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(saved.allow_unverified_email);
    assert_eq!(saved.client_secret, "******");
    s.stop().await;
}

#[tokio::test]
async fn allow_unverified_email_is_a_rule_field_of_the_rest_api() {
    let store = store_path("field");
    let s = admin_stack(&store).await;
    let (_, mut corp) = call(&s, "GET", "/api/v1/rules/corp", None).await;
    assert_eq!(corp["allow_unverified_email"], false);
    corp["allow_unverified_email"] = json!(true);
    corp["allowed"] = json!({"email_domains": ["example.com"]});
    let (st, rule) = call(&s, "PUT", "/api/v1/rules/corp", Some(corp)).await;
    assert_eq!(st, 200, "{rule}");
    assert_eq!(rule["allow_unverified_email"], true);
    // Check follows at once.
    let a = s.check(api(&unverified(&s, "bob", json!(false)))).await;
    assert!(a.is_allow(), "{a:?}");
    s.stop().await;
}

/// Two rules of one issuer and client: `corp` trusts unverified emails, `strict` does not.
const SHARED_SESSION_CONFIG: &str = r#"
session:
  secrets: ["{secret}"]
rules_store: inline
default_action: allow
rules:
  - name: strict
    issuer: {issuer}
    redirect_url: https://strict.example.test/oauth2/callback
    client_id: {client_id}
    client_secret: {client_secret}
    cookie_domain: .example.test
    domains: [strict.example.test]
    authorization: { mode: whitelist, conditions: [] }
  - name: corp
    issuer: {issuer}
    redirect_url: https://app1.example.test/oauth2/callback
    client_id: {client_id}
    client_secret: {client_secret}
    cookie_domain: .example.test
    domains: ["*.example.test"]
    allow_unverified_email: true
    authorization: { mode: whitelist, conditions: [] }
"#;

#[tokio::test]
async fn a_session_trusted_by_one_rule_sends_no_unverified_email_under_another() {
    let s = stack_with(SHARED_SESSION_CONFIG).await;
    s.idp.set_extra_claims(json!({"email_verified": false}));
    let mut jar = Jar::default();
    let done = login_via_check(&s, "https://app1.example.test/", &mut jar).await;
    assert_eq!(done.status(), 302, "{}", done.body());
    let a = s
        .check(Req::browser("https://app1.example.test/").cookies(&jar))
        .await;
    assert!(a.is_allow(), "{a:?}");
    assert_eq!(
        a.upstream("x-auth-request-email").as_deref(),
        Some("alice@example.com"),
        "corp trusts the unverified email"
    );
    let a = s
        .check(Req::browser("https://strict.example.test/").cookies(&jar))
        .await;
    assert!(a.is_allow(), "{a:?}");
    assert_eq!(a.upstream("x-auth-request-rule").as_deref(), Some("strict"));
    assert_eq!(
        a.upstream("x-auth-request-email"),
        None,
        "strict does not trust an unverified email, even from a session corp made"
    );
    s.stop().await;
}
