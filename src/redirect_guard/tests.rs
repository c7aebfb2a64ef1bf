//! Unit tests of the redirect guard: every way an `rd` could point elsewhere is refused.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::config::{Config, DefaultAction};
use crate::rules::RuleSet;

/// One rule, read through the real configuration schema. `overrides` are YAML lines of the rule.
fn rule(overrides: &str) -> Arc<Rule> {
    let mut text =
        String::from("session:\n  secrets: [\"0123456789abcdef0123456789abcdef\"]\nrules:\n  - name: corp\n");
    let overrides: Vec<&str> = overrides
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    for (key, value) in [
        ("issuer", "https://idp.example.com"),
        ("redirect_url", "https://app.example.com/oauth2/callback"),
        ("client_id", "gateway"),
        ("client_secret", "client-secret"),
        ("cookie_domain", ".example.com"),
    ] {
        if !overrides.iter().any(|l| l.starts_with(&format!("{key}:"))) {
            text.push_str(&format!("    {key}: {value}\n"));
        }
    }
    for line in overrides {
        text.push_str(&format!("    {line}\n"));
    }
    let config = Config::parse(&text, "guard.yaml", Path::new("/etc"), &|_| None)
        .unwrap_or_else(|e| panic!("should parse:\n{e}\n--- text:\n{text}"));
    let set = RuleSet::compile(&config.rules, DefaultAction::Allow).expect("rules compile");
    set.all()[0].clone()
}

/// The rule of the DESIGN.md example: cookies on `.example.com`.
fn with_cookie_domain() -> Arc<Rule> {
    rule("")
}

/// Host-only cookies, and `domains` that own some hosts (and `*`, which owns none).
fn with_domains() -> Arc<Rule> {
    rule(
        "cookie_domain: \"\"
         domains: [\"*.internal.example.net\", shop.example.org, \"*\"]",
    )
}

/// Host-only cookies and no `domains`: only the redirect URL's host is owned.
fn host_only() -> Arc<Rule> {
    rule("cookie_domain: \"\"")
}

fn base() -> Url {
    Url::parse("https://app.example.com/oauth2/start?rd=x").expect("base URL")
}

fn target(rule: &Rule, rd: &str) -> Option<String> {
    checked_target(rule, &base(), rd).map(String::from)
}

fn assert_refused(rule: &Rule, rd: &str) {
    assert_eq!(target(rule, rd), None, "{rd:?} must be refused");
}

#[test]
fn relative_path_goes_to_the_request_host() {
    let rule = with_cookie_domain();
    assert_eq!(
        target(&rule, "/dashboard?tab=1#top").as_deref(),
        Some("https://app.example.com/dashboard?tab=1#top")
    );
    assert_eq!(target(&rule, "/").as_deref(), Some("https://app.example.com/"));
}

#[test]
fn relative_path_keeps_the_request_port() {
    let rule = with_cookie_domain();
    let base = Url::parse("https://app.example.com:8443/oauth2/start").expect("base URL");
    assert_eq!(
        checked_target(&rule, &base, "/x").map(String::from).as_deref(),
        Some("https://app.example.com:8443/x")
    );
}

#[test]
fn tricky_relative_paths_stay_on_the_request_host() {
    let rule = host_only();
    for rd in [
        "/@evil.com",
        "/.//evil.com",
        "/%2F%2Fevil.com",
        "/%5Cevil.com",
        "/..//evil.com",
    ] {
        if let Some(url) = checked_target(&rule, &base(), rd) {
            assert_eq!(url.host_str(), Some("app.example.com"), "{rd} -> {url}");
        }
    }
}

#[test]
fn protocol_relative_url_is_refused() {
    let rule = with_cookie_domain();
    for rd in [
        "//evil.com",
        "//evil.com/path",
        "///evil.com",
        "//app.example.com/x",
    ] {
        assert_refused(&rule, rd);
    }
}

#[test]
fn backslash_tricks_are_refused() {
    let rule = with_cookie_domain();
    for rd in [
        "/\\evil.com",
        "\\\\evil.com",
        "/\\/evil.com",
        "\\/evil.com",
        "https://app.example.com\\@evil.com",
        "https:\\\\evil.com",
    ] {
        assert_refused(&rule, rd);
    }
}

#[test]
fn script_and_other_schemes_are_refused() {
    let rule = with_cookie_domain();
    for rd in [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        " javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "ftp://app.example.com/file",
        "file:///etc/passwd",
    ] {
        assert_refused(&rule, rd);
    }
}

#[test]
fn other_hosts_are_refused() {
    let rule = with_cookie_domain();
    for rd in [
        "https://evil.com",
        "http://evil.com/",
        "https://example.com.evil.com",
        "https://app.example.com.evil.com/x",
        "https://evilexample.com/",
        "https:evil.com",
        "https:/evil.com",
        " https://evil.com",
        "https://example.com%2eevil.com/",
    ] {
        assert_refused(&rule, rd);
    }
}

#[test]
fn credentials_in_the_url_are_refused() {
    let rule = with_cookie_domain();
    for rd in [
        "https://user@evil.com",
        "https://user:password@evil.com/",
        "https://app.example.com@evil.com",
        "https://user@app.example.com/",
        "https://:password@app.example.com/",
    ] {
        assert_refused(&rule, rd);
    }
}

#[test]
fn control_characters_are_refused() {
    let rule = with_cookie_domain();
    for rd in [
        "/a\r\nSet-Cookie: stolen=1",
        "/\tx",
        "\t//evil.com",
        "https://app.example.com/\n",
        "/\u{0}",
        "/path\u{7f}",
        "/path\u{85}",
    ] {
        assert_refused(&rule, rd);
    }
}

#[test]
fn empty_and_oversized_targets_are_refused() {
    let rule = with_cookie_domain();
    assert_refused(&rule, "");
    let longest = format!("/{}", "a".repeat(4095));
    assert!(target(&rule, &longest).is_some());
    let too_long = format!("/{}", "a".repeat(4096));
    assert_refused(&rule, &too_long);
}

#[test]
fn host_under_the_cookie_domain_is_allowed() {
    let rule = with_cookie_domain();
    for rd in [
        "https://docs.example.com/guide",
        "https://example.com/",
        "https://a.b.example.com:8443/x?y=1",
        "http://docs.example.com/",
        "https://DOCS.Example.com/",
    ] {
        assert!(target(&rule, rd).is_some(), "{rd} must be allowed");
    }
}

#[test]
fn absolute_target_is_returned_as_given() {
    let rule = with_cookie_domain();
    assert_eq!(
        target(&rule, "https://docs.example.com/guide?x=1#part").as_deref(),
        Some("https://docs.example.com/guide?x=1#part")
    );
}

#[test]
fn host_matching_a_domains_pattern_other_than_star_is_allowed() {
    let rule = with_domains();
    for rd in [
        "https://a.internal.example.net/x",
        "https://a.b.internal.example.net/",
        "https://shop.example.org/cart",
    ] {
        assert!(target(&rule, rd).is_some(), "{rd} must be allowed");
    }
}

#[test]
fn host_matched_only_by_star_is_refused() {
    let rule = with_domains();
    for rd in [
        "https://evil.com/",
        "https://internal.example.net/",
        "https://docs.example.com/",
        "https://shop.example.org.evil.com/",
    ] {
        assert_refused(&rule, rd);
    }
}

#[test]
fn redirect_url_host_is_allowed() {
    let rule = host_only();
    for rd in [
        "https://app.example.com/after-login",
        "http://app.example.com/",
        "https://APP.example.com/x",
        "https://app.example.com:8443/x",
    ] {
        assert!(target(&rule, rd).is_some(), "{rd} must be allowed");
    }
}

#[test]
fn without_cookie_domain_sibling_hosts_are_refused() {
    let rule = host_only();
    assert_refused(&rule, "https://docs.example.com/");
    assert_refused(&rule, "https://example.com/");
}
