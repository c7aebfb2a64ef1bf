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
