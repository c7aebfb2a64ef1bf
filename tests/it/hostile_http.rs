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
