//! Unit tests of sign-out and userinfo without HTTP: the cross-site decision, the base URL, the confirmation link.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::config::{Config, DefaultAction};
use crate::rules::RuleSet;

/// The example rule (`redirect_url` on `https://app.example.com`, cookies on `.example.com`),
/// with `overrides` (YAML) applied.
fn rule(overrides: &str) -> Arc<Rule> {
    let text = format!(
        "session:\n  secrets: [\"0123456789abcdef0123456789abcdef\"]\nrules:\n{}",
        crate::test_yaml::rule("corp", overrides)
    );
    let config = Config::parse(&text, "endpoints.yaml", Path::new("/etc"), &|_| None)
        .unwrap_or_else(|e| panic!("should parse:\n{e}\n--- text:\n{text}"));
    let set = RuleSet::compile(&config.rules, DefaultAction::Allow).expect("rules compile");
    set.all()[0].clone()
}

fn request<'a>(authority: &'a str) -> EndpointRequest<'a> {
    EndpointRequest {
        authority: Some(authority),
        ..EndpointRequest::default()
    }
}

#[test]
fn sec_fetch_site_decides_when_present() {
    let rule = rule("");
    for (site, cross) in [
        ("same-origin", false),
        ("same-site", false),
        ("none", false),
        (" Same-Site ", false),
        ("cross-site", true),
        ("", true),
    ] {
        let r = EndpointRequest {
            sec_fetch_site: Some(site),
            // Sec-Fetch-Site wins over a same-site Origin.
            origin: Some("https://app.example.com"),
            ..request("app.example.com")
        };
        assert_eq!(is_cross_site(&rule, &r), cross, "Sec-Fetch-Site: {site:?}");
    }
}

#[test]
fn origin_counts_as_same_site_only_on_the_host_or_under_the_cookie_domain() {
    let rule = rule("");
    for (origin, cross) in [
        ("https://app.example.com", false),
        ("https://other.example.com", false),
        ("https://example.com", false),
        ("http://app.example.com", true),
        ("https://evil.com", true),
        ("https://notexample.com", true),
        ("null", true),
        ("", true),
    ] {
        let r = EndpointRequest {
            origin: Some(origin),
            ..request("app.example.com")
        };
        assert_eq!(is_cross_site(&rule, &r), cross, "Origin: {origin:?}");
    }
    // Neither header: a non-browser client proceeds.
    assert!(!is_cross_site(&rule, &request("app.example.com")));
}

#[test]
fn host_only_cookies_make_only_the_request_host_same_site() {
    let rule = rule("cookie_domain: \"\"");
    let on = |origin| EndpointRequest {
        origin: Some(origin),
        forwarded_proto: Some("https"),
        ..request("shop.example.com")
    };
    assert!(!is_cross_site(&rule, &on("https://shop.example.com")));
    assert!(is_cross_site(&rule, &on("https://app.example.com")));
}

#[test]
fn request_base_takes_the_scheme_from_the_redirect_url_on_its_host() {
    let rule = rule("");
    let base = |authority, proto| request_base(&rule, Some(authority), proto).map(String::from);
    assert_eq!(
        base("app.example.com", Some("http")).as_deref(),
        Some("https://app.example.com/")
    );
    assert_eq!(
        base("x.example.com", Some("HTTP")).as_deref(),
        Some("http://x.example.com/")
    );
    assert_eq!(
        base("x.example.com", None).as_deref(),
        Some("https://x.example.com/")
    );
    assert_eq!(request_base(&rule, None, None), None);
}

#[test]
fn the_confirmation_keeps_rd_encoded() {
    assert_eq!(sign_out_action(None), "/oauth2/sign_out");
    assert_eq!(
        sign_out_action(Some("https://app.example.com/a?b=c&d")),
        "/oauth2/sign_out?rd=https%3A%2F%2Fapp.example.com%2Fa%3Fb%3Dc%26d"
    );
}
