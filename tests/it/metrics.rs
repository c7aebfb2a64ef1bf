//! `/metrics` as DESIGN "Observability" lists it (see docs/metrics.md): every family with HELP and
//! TYPE, `Check`s counted by rule and outcome and timed, IdP calls counted by rule, endpoint and
//! result (an IdP that cannot be reached included), rules by state following a disable and a
//! delete, and the build.

use serde_json::{json, Value};

use crate::harness::*;
use crate::support::idp::{IdpOptions, TestIdp};

const TOKEN: &str = "admin-token-for-metrics-tests";
const APP: &str = "https://app1.example.test/dash";

fn config(store: &std::path::Path) -> String {
    BASIC_CONFIG
        .replace(
            "rules_store: inline",
            &format!("rules_store: file:{}", store.display()),
        )
        .replace("session:", &format!("server:\n  admin_token: {TOKEN}\nsession:"))
        .replace(
            "    domains: [\"*.example.test\"]\n",
            "    domains: [\"*.example.test\"]\n    allowed: { groups: [admins] }\n",
        )
}

async fn metrics(s: &Stack) -> (String, String) {
    let resp = http_client().get(s.http_url("/metrics")).send().await.unwrap();
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    (content_type, resp.text().await.unwrap())
}

/// The value of the sample `series` (name and labels exactly as rendered), 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn check_total(text: &str, rule: &str, outcome: &str) -> f64 {
    value(
        text,
        &format!("oidc_authz_check_total{{rule=\"{rule}\",outcome=\"{outcome}\"}}"),
    )
}

fn idp_total(text: &str, rule: &str, endpoint: &str, result: &str) -> f64 {
    value(
        text,
        &format!(
            "oidc_authz_idp_requests_total{{rule=\"{rule}\",endpoint=\"{endpoint}\",result=\"{result}\"}}"
        ),
    )
}

fn bearer(token: &str) -> Req {
    Req::api("GET", APP).header("authorization", &format!("Bearer {token}"))
}

/// A rule on an issuer nobody listens at.
fn unreachable_rule() -> Value {
    json!({
        "name": "down",
        "type": "oidc",
        "issuer": "http://127.0.0.1:1/realms/nobody",
        "redirect_url": "https://ops.example.org/oauth2/callback",
        "client_id": "gateway",
        "client_secret": "s3cret-s3cret",
        "cookie_domain": ".example.org",
        "scope": "openid;email",
        "domains": ["ops.example.org"],
        "authorization": {"mode": "blacklist", "conditions": [{"path": "/", "match": "prefix"}]}
    })
}

async fn eventually(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if ok().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    panic!("never: {what}");
}

#[tokio::test]
async fn every_family_counts_what_it_says() {
    let dir = std::env::temp_dir().join(format!("oidc-authz-metrics-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("rules.yaml");
    let idp = TestIdp::start(IdpOptions::default()).await;
    idp.set_extra_claims(json!({"groups": ["admins"]}));
    let s = Stack::start(idp, &config(&store)).await;
    s.wait_ready().await;
    let mut checks = 0;

    // A public path, a login redirect, a login (its callback inside Check) whose tokens expire
    // at once, so the next request refreshes them: a session allow.
    assert!(s
        .check(Req::browser("https://app1.example.test/public/a"))
        .await
        .is_allow());
    assert_eq!(s.check(Req::browser(APP)).await.status(), 302);
    s.idp.set_token_ttl(0);
    let mut jar = Jar::default();
    assert_eq!(login_via_check(&s, APP, &mut jar).await.status(), 302);
    s.idp.set_token_ttl(3600);
    let a = s.check(Req::browser(APP).cookies(&jar)).await;
    assert!(a.is_allow(), "{}", a.body());
    checks += 5;
    // Bearer tokens: one in the group, one not; an API call without credentials; a host no rule
    // governs (default_action: allow); a host that is no host name.
    let mut admin = s.idp.default_claims("ann");
    admin["groups"] = json!(["admins"]);
    assert!(s.check(bearer(&s.idp.mint(admin))).await.is_allow());
    let a = s.check(bearer(&s.idp.mint(s.idp.default_claims("bob")))).await;
    assert_eq!(a.status(), 403, "{}", a.body());
    assert_eq!(s.check(Req::api("GET", APP)).await.status(), 401);
    assert!(s.check(Req::browser("https://elsewhere.test/")).await.is_allow());
    let mut bad_host = Req::api("GET", APP);
    bad_host.host = "bad host".into();
    assert_eq!(s.check(bad_host).await.status(), 400);
    checks += 5;

    let (content_type, m) = metrics(&s).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    for (family, kind) in [
        ("oidc_authz_check_total", "counter"),
        ("oidc_authz_check_duration_seconds", "histogram"),
        ("oidc_authz_idp_requests_total", "counter"),
        ("oidc_authz_idp_request_duration_seconds", "histogram"),
        ("oidc_authz_sessions_refreshed_total", "counter"),
        ("oidc_authz_logouts_total", "counter"),
        ("oidc_authz_rules", "gauge"),
        ("oidc_authz_build_info", "gauge"),
    ] {
        let help = format!("# HELP {family} ");
        assert!(m.lines().any(|l| l.starts_with(&help)), "HELP of {family}:\n{m}");
        let type_line = format!("# TYPE {family} {kind}");
        assert!(m.lines().any(|l| l == type_line), "TYPE of {family}:\n{m}");
    }
    assert!(
        m.contains("\noidc_authz_redis_up 0\n"),
        "no Redis configured: redis_up is 0:\n{m}"
    );
    for (outcome, n) in [
        ("allow_public", 1.0),
        ("login_redirect", 2.0),
        ("callback", 1.0),
        ("allow_session", 1.0),
        ("allow_bearer", 1.0),
        ("forbidden", 1.0),
        ("unauthorized", 1.0),
    ] {
        assert_eq!(check_total(&m, "corp", outcome), n, "corp {outcome}:\n{m}");
    }
    assert_eq!(check_total(&m, "", "allow_default"), 1.0, "{m}");
    assert_eq!(check_total(&m, "", "bad_request"), 1.0, "{m}");
    assert_eq!(
        value(&m, "oidc_authz_check_duration_seconds_count"),
        f64::from(checks),
        "{m}"
    );
    assert_eq!(
        value(&m, "oidc_authz_check_duration_seconds_bucket{le=\"+Inf\"}"),
        f64::from(checks)
    );
    assert!(value(&m, "oidc_authz_check_duration_seconds_sum") > 0.0);
    assert!(
        m.contains("oidc_authz_check_duration_seconds_bucket{le=\"5e-05\"} "),
        "a 50 µs bucket:\n{m}"
    );

    for endpoint in ["discovery", "jwks", "token", "refresh"] {
        assert!(idp_total(&m, "corp", endpoint, "ok") >= 1.0, "{endpoint}:\n{m}");
        assert!(
            value(
                &m,
                &format!("oidc_authz_idp_request_duration_seconds_count{{endpoint=\"{endpoint}\"}}")
            ) >= 1.0,
            "{endpoint} timed:\n{m}"
        );
    }
    assert_eq!(
        value(&m, "oidc_authz_sessions_refreshed_total{result=\"success\"}"),
        1.0
    );
    assert_eq!(value(&m, "oidc_authz_logouts_total{kind=\"sign_out\"}"), 0.0);
    assert!(
        m.contains("oidc_authz_logouts_total{kind=\"backchannel\"} 0\n"),
        "{m}"
    );
    assert_eq!(
        value(
            &m,
            &format!(
                "oidc_authz_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0,
        "{m}"
    );
    assert_eq!(value(&m, "oidc_authz_rules{state=\"enabled\"}"), 1.0, "{m}");
    assert_eq!(value(&m, "oidc_authz_rules{state=\"not_ready\"}"), 0.0, "{m}");
    assert!(m.contains("oidc_authz_rules{state=\"disabled\"} 0\n"), "{m}");

    // A rule whose IdP cannot be reached: its discovery fails (error), and it is not ready.
    let (st, body) = admin_call(&s, TOKEN, "POST", "/api/v1/rules", Some(unreachable_rule())).await;
    assert_eq!(st, 201, "{body}");
    eventually("discovery of `down` counted as an error", async || {
        idp_total(&metrics(&s).await.1, "down", "discovery", "error") >= 1.0
    })
    .await;
    let m = metrics(&s).await.1;
    assert_eq!(value(&m, "oidc_authz_rules{state=\"not_ready\"}"), 1.0, "{m}");
    assert_eq!(value(&m, "oidc_authz_rules{state=\"enabled\"}"), 1.0, "{m}");
    assert!(
        value(
            &m,
            "oidc_authz_idp_request_duration_seconds_count{endpoint=\"discovery\"}"
        ) >= 2.0
    );

    // Disabled, it is counted as such; deleted, its series go.
    let (st, body) = admin_call(&s, TOKEN, "POST", "/api/v1/rules/down/disable", None).await;
    assert_eq!(st, 200, "{body}");
    let m = metrics(&s).await.1;
    assert_eq!(value(&m, "oidc_authz_rules{state=\"disabled\"}"), 1.0, "{m}");
    assert_eq!(value(&m, "oidc_authz_rules{state=\"not_ready\"}"), 0.0, "{m}");
    let (st, body) = admin_call(&s, TOKEN, "DELETE", "/api/v1/rules/down", None).await;
    assert!(st == 200 || st == 204, "{st} {body}");
    let m = metrics(&s).await.1;
    assert!(
        !m.contains("rule=\"down\""),
        "the deleted rule's series are gone:\n{m}"
    );
    assert_eq!(value(&m, "oidc_authz_rules{state=\"disabled\"}"), 0.0, "{m}");
    s.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn token_endpoint_failures_are_counted_by_status() {
    let idp = TestIdp::start(IdpOptions::default()).await;
    let s = Stack::start(idp, BASIC_CONFIG).await;
    s.wait_ready().await;
    for (status, result) in [(500, "http_5xx"), (400, "http_4xx")] {
        s.idp.set_token_endpoint_status(Some(status));
        let mut jar = Jar::default();
        let done = login_via_check(&s, APP, &mut jar).await;
        assert_ne!(done.status(), 302, "the exchange failed: {}", done.body());
        let m = metrics(&s).await.1;
        assert!(idp_total(&m, "corp", "token", result) >= 1.0, "{result}:\n{m}");
    }
    s.stop().await;
}
